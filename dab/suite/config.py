"""The shared config schema (what every family has: task, seed, trainer, optimizer, dab, paper)
and validation.

The family-owned groups (``dataset``, ``model``, ``hard_fn``, ``latent``) are free-form here: each
option's schema is registered with the option (``dab.registry``): hard functions in
``dab/hard_fns.py``, data sets in ``dab/suite/datasets.py``, latents in
``dab/suite/models/latents.py``, models in their family's module. A family's ``validate(cfg)``
reads its groups through :func:`option_args`, which refuses a key the selected option does not
have and names the valid ones. The dataclasses double as Hydra's structured-config schema
(:func:`register_configs`), so a typo'd shared key fails at composition; nothing here needs Hydra
except the registration.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any, Optional

from dab.approximators import APPROXIMATORS
from dab.errors import ConfigError
from dab.estimators import ESTIMATORS, make_estimator
from dab.estimators import settings_of as estimator_settings
from dab.losses import DAB_LOSSES
from dab.bridge import make_bridge
from dab.hard_fns import HARD_FNS
from dab.registry import Option, Registry
from dab.suite.datasets import DATASETS
from dab.suite.families import FAMILIES
from dab.suite.schedules import SCHEDULES
from dab.suite.step import OPTIMIZERS

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
NAN_POLICIES = ("stop", "skip")
FAMILY_GROUPS = ("dataset", "model", "hard_fn", "latent")  # free-form here; schemas come with each option


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-4
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
    samples: Optional[int] = None  # perturbed: noise draws per forward
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


def bridge_from_config(cfg: Any, in_shape: tuple[int, ...]):
    """The bridge ``cfg.hard_fn`` (with its settings) and ``cfg.dab`` ask for on inputs of
    per-sample shape ``in_shape``; None for ``hard_fn=identity``, the plain-network baseline."""
    option, args = option_args(cfg, "hard_fn", HARD_FNS)
    if option.name == "identity":
        return None
    d = cfg.dab
    return make_bridge(option.name, tuple(in_shape), gamma=d.gamma, estimator=d.estimator,
                       approximator=d.approximator, hidden=d.hidden, depth=d.depth, loss=d.loss,
                       loss_to_input=d.loss_to_input, estimator_args=estimator_settings(d),
                       **({} if args is None else asdict(args)))


def node_items(node: Any) -> dict:
    """A config node (DictConfig, dict, dataclass, namespace or None) as a plain dict, resolved."""
    if node is None:
        return {}
    if is_dataclass(node):
        return asdict(node)
    if isinstance(node, dict):
        return dict(node)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:
        pass
    return dict(vars(node))


def option_args(cfg: Any, key: str, registry: Registry, allowed: tuple[str, ...] | None = None,
                task: str | None = None) -> tuple[Option, Any]:
    """The option selected in ``cfg.<key>`` and its settings (the option's schema, filled): the name
    must be registered (and among ``allowed`` where given), every other key must be one of the
    option's settings, of the declared type."""
    items = node_items(getattr(cfg, key, None))
    if "name" not in items:
        raise ConfigError(f"{key} is not set{f' (task {task} needs one)' if task else ''}; valid choices: "
                          + ", ".join(allowed or registry.names()))
    option = registry.check(items["name"], allowed, f"{key} for task {task}" if allowed is not None else None)
    return option, option.args(items, where=key)


def bridged_family_args(cfg: Any, task: str, datasets: tuple[str, ...], models: Registry) -> tuple[Any, Any]:
    """The shared checks of a family whose model holds one bridge (sort, classify): the data set
    (among ``datasets``), the model and the hard function with their settings, no latent, and a
    positive batch and test size. Returns the data set's and the model's settings."""
    _, d = option_args(cfg, "dataset", DATASETS, datasets, task)
    _, m = option_args(cfg, "model", models, task=task)
    option_args(cfg, "hard_fn", HARD_FNS, task=task)
    if getattr(cfg, "latent", None) is not None:
        raise ConfigError(f"latent applies to task autoencode only; task {task} reads hard_fn and dab")
    check_min(d.batch_size, 1, "dataset.batch_size")
    check_min(d.test_size, 1, "dataset.test_size")
    return d, m


def _check_keys(node: Any, schema: type, prefix: str) -> None:
    """Reject keys the schema does not know (e.g. a CLI `+trainer.max_stpes=3` that Hydra lets through)."""
    if is_dataclass(node) or node is None:
        return
    known = {f.name: f for f in fields(schema)}
    keys = node.keys() if hasattr(node, "keys") else vars(node).keys()
    for key in keys:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}{key}'; valid keys: {', '.join(known)}")
        factory = known[key].default_factory
        if factory is not MISSING and is_dataclass(factory):
            _check_keys(getattr(node, key), factory, f"{prefix}{key}.")


def validate(cfg: Any) -> None:
    """Check a composed config (DictConfig, dataclass or namespace); raise ConfigError if bad.
    Shared settings here, the family-owned groups by the family (``FAMILIES[cfg.task]``)."""
    _check_keys(cfg, Config, "")
    family = FAMILIES[cfg.task]
    o = cfg.optimizer
    OPTIMIZERS[o.name]
    check_choice(o.schedule, SCHEDULES, "optimizer.schedule")
    check_min(o.warmup_steps, 0, "optimizer.warmup_steps")
    if not 0 <= o.warmup_fraction < 1:
        raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
    if not 0 <= o.final_lr_ratio <= 1:
        raise ConfigError(f"optimizer.final_lr_ratio must be in [0, 1], got {o.final_lr_ratio}")
    check_min(o.lr, 0, "optimizer.lr")
    if o.grad_clip is not None:
        check_min(o.grad_clip, 0, "optimizer.grad_clip")
    d = cfg.dab
    ESTIMATORS.check(d.estimator, what="dab.estimator")
    make_estimator(d.estimator, estimator_settings(d))  # its settings: known keys, valid values
    APPROXIMATORS.check(d.approximator, what="dab.approximator")
    DAB_LOSSES.check(d.loss, what="dab.loss")
    check_min(d.gamma, 0, "dab.gamma")
    if getattr(d, "fidelity_every", None) is not None:
        check_min(d.fidelity_every, 1, "dab.fidelity_every")
    t = cfg.trainer
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
    family.build.validate(cfg)


def register_configs() -> None:
    """Register :class:`Config` as Hydra's ``base_config`` schema (imports Hydra lazily)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)
