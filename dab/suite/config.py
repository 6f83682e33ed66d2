"""The shared config schema (what every family has: task, seed, trainer, optimizer, dab, paper),
the shared checks, and the typed result of parsing a config once: :class:`RunArgs`.

The family-owned groups (``dataset``, ``model``, ``hard_fn``, ``latent``) are free-form here: each
option's schema is registered with the option (``dab.registry``): hard functions in
``dab/hard_fns.py``, data sets in ``dab/suite/datasets.py``, latents in
``dab/suite/models/latents.py``, models in their family's module. A family's ``parse(values)``
reads each of its groups once through :func:`read_group`, which refuses a key the selected option
does not have and names the valid ones. The dataclasses double as Hydra's structured-config schema
(``train.py`` registers :class:`Config`), so a typo'd shared key fails at composition.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from dab.approximators import APPROXIMATORS
from dab.bridge import make_bridge
from dab.errors import ConfigError
from dab.estimators import ESTIMATORS, make_estimator
from dab.estimators import settings_of as estimator_settings
from dab.hard_fns import HARD_FNS
from dab.losses import DAB_LOSSES
from dab.registry import Registry, check_keys
from dab.suite.datasets import DATASETS
from dab.suite.optim import OPTIMIZERS
from dab.suite.schedules import SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
NAN_POLICIES = ("stop", "skip")
FAMILY_GROUPS = ("dataset", "model", "hard_fn", "latent")  # free-form here; schemas come with each option


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-4  # > 0: a zero lr never moves the weights
    weight_decay: float = 0.0
    grad_clip: Optional[float] = None  # max global grad norm; None = off
    schedule: str = "constant"  # learning-rate schedule over trainer.max_steps (dab/suite/schedules.py)
    warmup_steps: int = 0  # linear warm-up from 0 (cosine, constant)
    warmup_fraction: float = 0.0  # or this fraction of trainer.max_steps, whichever is longer
    final_lr_ratio: float = 0.0  # cosine: the last step's lr as a fraction of lr


@dataclass
class DabConfig:
    gamma: float = 10.0
    estimator: str = "dab"
    approximator: str = "dense"
    hidden: int = 256
    depth: int = 2
    loss: str = "l2"
    loss_to_input: bool = False  # False: the DAB loss trains only the approximator (the reference)
    # the estimator's own settings (dab/estimators.py); null: its default. A key the selected
    # estimator does not have is an error naming the ones it has.
    tau: Optional[float] = None  # gumbel, gumbel_st, reinmax: temperature; softsort: regularization strength
    lam: Optional[float] = None  # blackbox: interpolation scale lambda
    sigma: Optional[float] = None  # perturbed: noise scale
    samples: Optional[int] = None  # perturbed: noise draws per forward; reinforce: draws per input
    tau_relative: Optional[bool] = None  # softsort: tau in units of each row's mean gap
    # log the bridge's gradient fidelity (dab/suite/fidelity.py) to TensorBoard every N steps, at the
    # evaluations that fall on a multiple of N, in every family (dab/suite/trainer.py); null: never
    fidelity_every: Optional[int] = None


@dataclass
class TrainerConfig:
    max_steps: int = 100_000
    max_minutes: Optional[float] = None  # wall-clock training budget; None = steps only
    eval_every: int = 1000
    log_every: int = 100
    ckpt_every: int = 1000
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    # true: continue the newest matching checkpoint under runs_root (into a new dir);
    # auto: continue this run dir's own checkpoint if it has one (requeued jobs), else start fresh
    resume: Any = False
    nan_policy: str = "stop"  # non-finite loss: stop (keep the last good checkpoint) | skip the step
    resume_from: Optional[str] = None  # or this run dir's checkpoint
    progress: bool = True
    stop_grace_seconds: float = 20.0  # after SIGTERM/Ctrl-C: end the process even mid-step after this long
    # CPU threads; null: the cores divided among the training runs live on this machine
    # (dab/suite/threads.py), or OMP_NUM_THREADS where the environment sets it
    threads: Optional[int] = None


@dataclass
class PaperConfig:
    """The paper's result for the cell a preset reproduces (mean and std, in percent for accuracies),
    shown beside ours in the end-of-run summary; empty for presets that name no single number."""
    cell: Optional[str] = None  # e.g. "Table 1, Signum-Dense, T=10"
    value: Optional[float] = None
    std: Optional[float] = None


@dataclass
class Config:
    task: str = "sort"  # the experiment family (dab/suite/families)
    # family-owned groups: {name: <option>, <the option's own settings>}, checked by the family
    dataset: Any = field(default_factory=lambda: {"name": "sort"})
    model: Any = field(default_factory=lambda: {"name": "dense"})
    hard_fn: Any = field(default_factory=lambda: {"name": "signum"})  # sort, classify; autoencoders: the latent's
    latent: Any = None  # autoencode only
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    dab: DabConfig = field(default_factory=DabConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    run_name: str = "default"  # groups run dirs: runs_root/run_name/<timestamp>
    runs_root: str = "runs"
    paper: PaperConfig = field(default_factory=PaperConfig)


def check_choice(value: str, choices, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} '{value}'; valid choices: {', '.join(choices)}")


def check_min(value, low, key: str) -> None:
    if value is None or value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def plain(node: Any) -> Any:
    """A config node (DictConfig, dict, dataclass or None) as plain, resolved Python values."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if is_dataclass(node):
        return asdict(node)
    return {} if node is None else node


@dataclass(frozen=True)
class Choice:
    """One option of a family-owned group: its name and its settings (the option's schema, filled)."""

    name: str
    args: Any = None


def read_group(values: dict, key: str, registry: Registry, allowed: tuple[str, ...] | None = None,
               task: str | None = None) -> Choice:
    """The option selected in ``values[key]`` with its settings: the name must be registered (and
    among ``allowed`` where given), every other key must be one of the option's settings, of the
    declared type. Each family calls it once per group."""
    items = dict(values.get(key) or {})
    if "name" not in items:
        raise ConfigError(f"{key} is not set{f' (task {task} needs one)' if task else ''}; valid choices: "
                          + ", ".join(allowed or registry.names()))
    option = registry.check(items["name"], allowed, f"{key} for task {task}" if allowed is not None else None)
    return Choice(option.name, option.args(items, where=key))


@dataclass(frozen=True)
class BridgedGroups:
    """The groups of a family whose model holds one bridge (sort, classify)."""

    data: Choice
    model: Choice
    hard_fn: Choice


def read_bridged_groups(values: dict, task: str, datasets: tuple[str, ...], models: Registry) -> BridgedGroups:
    """The shared reading of a family whose model holds one bridge (sort, classify): the data set
    (among ``datasets``), the model and the hard function with their settings, no latent, and a
    positive batch and test size."""
    data = read_group(values, "dataset", DATASETS, datasets, task)
    model = read_group(values, "model", models, task=task)
    hard_fn = read_group(values, "hard_fn", HARD_FNS, task=task)
    if values.get("latent") is not None:
        raise ConfigError(f"latent applies to task autoencode only; task {task} reads hard_fn and dab")
    check_min(data.args.batch_size, 1, "dataset.batch_size")
    check_min(data.args.test_size, 1, "dataset.test_size")
    return BridgedGroups(data, model, hard_fn)


def make_bridge_for(hard_fn: Choice, dab: DabConfig, in_shape: tuple[int, ...]):
    """The bridge around ``hard_fn`` that the ``dab`` settings ask for, on inputs of per-sample
    shape ``in_shape``; None for ``hard_fn=identity``, the plain-network baseline."""
    if hard_fn.name == "identity":
        return None
    return make_bridge(hard_fn.name, tuple(in_shape), gamma=dab.gamma, estimator=dab.estimator,
                       approximator=dab.approximator, hidden=dab.hidden, depth=dab.depth, loss=dab.loss,
                       loss_to_input=dab.loss_to_input, estimator_args=estimator_settings(dab),
                       **({} if hard_fn.args is None else asdict(hard_fn.args)))


@dataclass
class RunArgs:
    """A config parsed once: the shared settings, typed, the family's own parsed groups
    (``family``: the family's ``Args``) and the resolved config as written to ``config.yaml``."""

    task: str
    seed: int
    run_name: str
    runs_root: str
    trainer: TrainerConfig
    optimizer: OptimizerConfig
    dab: DabConfig
    paper: PaperConfig
    family: Any
    config: dict

    @property
    def batch_size(self) -> int:
        return self.family.data.args.batch_size


def check_shared(values: dict) -> tuple[TrainerConfig, OptimizerConfig, DabConfig, PaperConfig]:
    """Every shared key known (one line naming the valid ones otherwise) and every shared value
    valid; returns the typed trainer, optimizer, dab and paper settings."""
    check_keys(values, Config, "")
    for key, schema in (("trainer", TrainerConfig), ("optimizer", OptimizerConfig), ("dab", DabConfig),
                        ("paper", PaperConfig)):
        check_keys(values.get(key) or {}, schema, f"{key}.")
    t, o, d, p = (TrainerConfig(**(values.get("trainer") or {})), OptimizerConfig(**(values.get("optimizer") or {})),
                  DabConfig(**(values.get("dab") or {})), PaperConfig(**(values.get("paper") or {})))
    OPTIMIZERS.check(o.name, what="optimizer")
    check_choice(o.schedule, SCHEDULES, "optimizer.schedule")
    check_min(o.warmup_steps, 0, "optimizer.warmup_steps")
    if not 0 <= o.warmup_fraction < 1:
        raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
    if not 0 <= o.final_lr_ratio <= 1:
        raise ConfigError(f"optimizer.final_lr_ratio must be in [0, 1], got {o.final_lr_ratio}")
    if o.lr is None or not o.lr > 0:
        raise ConfigError(f"optimizer.lr must be > 0 (a zero lr never moves the weights), got {o.lr}")
    if o.grad_clip is not None:
        check_min(o.grad_clip, 0, "optimizer.grad_clip")
    ESTIMATORS.check(d.estimator, what="dab.estimator")
    make_estimator(d.estimator, estimator_settings(d))  # its settings: known keys, valid values
    APPROXIMATORS.check(d.approximator, what="dab.approximator")
    DAB_LOSSES.check(d.loss, what="dab.loss")
    check_min(d.gamma, 0, "dab.gamma")
    if d.fidelity_every is not None:
        check_min(d.fidelity_every, 1, "dab.fidelity_every")
    check_choice(t.device, DEVICES, "trainer.device")
    check_choice(t.precision, PRECISIONS, "trainer.precision")
    check_choice(t.nan_policy, NAN_POLICIES, "trainer.nan_policy")
    if not (isinstance(t.resume, bool) or t.resume == "auto"):
        raise ConfigError(f"unknown trainer.resume '{t.resume}'; valid choices: false, true, auto")
    for key in ("max_steps", "eval_every", "log_every", "ckpt_every"):
        check_min(getattr(t, key), 1, f"trainer.{key}")
    if t.stop_grace_seconds <= 0:
        raise ConfigError(f"trainer.stop_grace_seconds must be > 0, got {t.stop_grace_seconds}")
    if t.threads is not None:
        check_min(t.threads, 1, "trainer.threads")
    if t.max_minutes is not None and t.max_minutes <= 0:
        raise ConfigError(f"trainer.max_minutes must be > 0 or null, got {t.max_minutes}")
    return t, o, d, p
