"""Typed config schema (one dataclass per config group) and its validation.

The dataclasses double as Hydra structured-config schemas (:func:`register_configs`), so a
typo'd key in a preset fails at composition; :func:`validate` checks values and names and raises
:class:`ConfigError` naming the valid choices. Nothing here needs Hydra except the registration.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, List, Optional

from dab.approximators import APPROXIMATOR_NAMES
from dab.bridge import ESTIMATORS
from dab.errors import ConfigError
from dab.hard_fns import HARD_FN_NAMES
from dab.suite.families import FAMILIES
from dab.suite.image_data import IMAGE_DATASETS
from dab.losses import DAB_LOSSES
from dab.suite.memory_layout import CHANNELS_LAST_CHOICES
from dab.suite.models.autoencoders import AUTOENCODER_MODELS
from dab.suite.models.latents import LATENT_NAMES
from dab.suite.models.sorting import ACTIVATIONS, NORMS
from dab.suite.schedules import SCHEDULES

DATASETS = ("sort",) + IMAGE_DATASETS
MODELS = ("dense", "lstm", "resnet18") + AUTOENCODER_MODELS
CLASSIFY_DATASETS = ("cifar10", "fmnist32")  # task classify: 32x32 RGB images, 10 classes
OPTIMIZERS = ("adam", "rmsprop", "sgd")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
NAN_POLICIES = ("stop", "skip")


@dataclass
class DatasetConfig:
    name: str = "sort"
    length: int = 10  # T, the sequence length
    batch_size: int = 1024
    test_size: int = 10000
    test_seed: int = 1234  # fixed: every run is scored on the same test sequences
    root: str = "data"  # image data sets: folder holding them ($DAB_DATA_ROOT wins when set)
    crop_pad: int = 4  # classify: on-device random crop after zero-padding by this much; 0 = off
    flip: bool = True  # classify: on-device random horizontal flip
    emd_batch: int = 0  # classify: test images on which test/emd is measured at each evaluation; 0 = off
    # autoencode: test_size = test images scored (a fixed subsample when smaller than the split)
    probe_size: int = 10000  # autoencode: training images (a fixed subsample) the linear probe is fitted on
    image_size: int = 512  # imagenet: resize + center-crop side (the paper: 512)
    workers: int = 8  # imagenet: DataLoader worker processes


@dataclass
class ModelConfig:
    name: str = "dense"
    widths: List[int] = field(default_factory=lambda: [128, 128, 256])  # sorting: dense layers before the bridge
    hidden: int = 256  # sorting lstm: the LSTM's size
    activation: str = "tanh"
    ponder_steps: int = 0  # lstm only
    norm: str = "batchnorm"  # lstm only: batchnorm | layernorm | none (keeps the bridge input alive)
    width: int = 64  # resnet18: channels of the first stage (stages: w, 2w, 4w, 8w); 64 = standard
    hard_fn_after: int = 4  # resnet18: residual stage (1..4) whose output goes through the bridge
    channels_last: Any = "auto"  # resnet18: NHWC layout; auto | true | false (dab/suite/memory_layout.py)
    head: str = "pool"  # resnet18: pool (global average pool, the paper's) | flatten (ours; dab/suite/models/resnet.py)
    # autoencode: widths = conv channels per encoder stage (mirrored by conv_unet's decoder),
    # hidden = the dense decoder's width, bpp = the latent's bit budget per pixel (C*H*W values)
    bpp: float = 0.1


@dataclass
class LatentConfig:
    """autoencode: the discrete latent variant (dab/suite/models/latents.py); it also fixes the hard
    function and estimator, so hard_fn.name and dab.estimator are not read (hard_fn.eps is)."""
    name: str = "dab_binary"
    categories: int = 8  # discrete: K of each Gumbel-softmax variable (log2 K bits)
    # bernoulli/discrete: the temperature schedule (dab/suite/models/latents.py TemperatureSchedule), tau0 = 1.
    # exp_every: tau = max(tau_min, exp(-anneal_rate * step)), set every anneal_every steps.
    # cosine_per_step: before every step but the first, tau <- tau_min + (tau - tau_min) * (1 + cos(pi/E)) / 2,
    # E = anneal_epochs; null: E = pi * sqrt(trainer.max_steps / 12) (the gap to tau_min shrinks by ~e^-3).
    anneal: str = "exp_every"
    tau_min: float = 0.5  # in (0, 1)
    anneal_rate: float = 3e-6
    anneal_every: int = 10
    anneal_epochs: Optional[float] = None  # >= 1, or null


@dataclass
class HardFnConfig:
    name: str = "signum"
    eps: float = 0.5  # signum margin (Eq. 11)
    k: int = 10  # top-k's k and k-means' k
    kmeans_iters: int = 10


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
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hard_fn: HardFnConfig = field(default_factory=HardFnConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    dab: DabConfig = field(default_factory=DabConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    run_name: str = "default"  # groups run dirs: runs_root/run_name/<timestamp>
    runs_root: str = "runs"
    paper: PaperConfig = field(default_factory=PaperConfig)


def _choice(value: str, choices, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} '{value}'; valid choices: {', '.join(choices)}")


def _at_least(value, low, key: str) -> None:
    if value is None or value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def _check_keys(node: Any, schema: type, prefix: str) -> None:
    """Reject keys the schema does not know (e.g. a CLI `+model.hiden=3` that Hydra lets through)."""
    if is_dataclass(node):
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
    """Check a composed config (dataclass, DictConfig or namespace); raise ConfigError if bad."""
    _check_keys(cfg, Config, "")
    _choice(cfg.task, tuple(FAMILIES), "task")
    _choice(cfg.optimizer.schedule, tuple(SCHEDULES), "optimizer.schedule")
    _at_least(cfg.optimizer.warmup_steps, 0, "optimizer.warmup_steps")
    if not 0 <= cfg.optimizer.warmup_fraction < 1:
        raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1), got {cfg.optimizer.warmup_fraction}")
    if not 0 <= cfg.optimizer.final_lr_ratio <= 1:
        raise ConfigError(f"optimizer.final_lr_ratio must be in [0, 1], got {cfg.optimizer.final_lr_ratio}")
    _choice(cfg.dataset.name, DATASETS, "dataset")
    _choice(cfg.model.name, MODELS, "model")
    if cfg.task == "classify":
        _validate_classify(cfg)
    _choice(cfg.model.activation, tuple(ACTIVATIONS), "model.activation")
    _choice(cfg.model.norm, tuple(NORMS), "model.norm")
    _choice(cfg.hard_fn.name, HARD_FN_NAMES, "hard_fn")
    _choice(cfg.optimizer.name, OPTIMIZERS, "optimizer")
    _choice(cfg.dab.estimator, ESTIMATORS, "dab.estimator")
    _choice(cfg.dab.approximator, APPROXIMATOR_NAMES, "dab.approximator")
    _choice(cfg.dab.loss, tuple(DAB_LOSSES), "dab.loss")
    _choice(cfg.trainer.device, DEVICES, "trainer.device")
    _choice(cfg.trainer.precision, PRECISIONS, "trainer.precision")
    _choice(cfg.trainer.nan_policy, NAN_POLICIES, "trainer.nan_policy")
    if not (isinstance(cfg.trainer.resume, bool) or cfg.trainer.resume == "auto"):
        raise ConfigError(f"unknown trainer.resume '{cfg.trainer.resume}'; valid choices: false, true, auto")
    _at_least(cfg.dataset.length, 2, "dataset.length (T)")
    for key in ("batch_size", "test_size"):
        _at_least(getattr(cfg.dataset, key), 1, f"dataset.{key}")
    _at_least(cfg.dab.gamma, 0, "dab.gamma")
    _at_least(cfg.model.hidden, 1, "model.hidden")
    if len(cfg.model.widths) < 1 or min(cfg.model.widths) < 1:
        raise ConfigError(f"model.widths needs at least one width >= 1, got {list(cfg.model.widths)}")
    _at_least(cfg.model.ponder_steps, 0, "model.ponder_steps")
    if cfg.model.name != "lstm" and cfg.model.ponder_steps != 0:
        raise ConfigError("model.ponder_steps applies to model=lstm only; valid choices for model: lstm")
    _at_least(cfg.optimizer.lr, 0, "optimizer.lr")
    if cfg.optimizer.grad_clip is not None:
        _at_least(cfg.optimizer.grad_clip, 0, "optimizer.grad_clip")
    for key in ("max_steps", "eval_every", "log_every", "ckpt_every"):
        _at_least(getattr(cfg.trainer, key), 1, f"trainer.{key}")
    if cfg.trainer.stop_grace_seconds <= 0:
        raise ConfigError(f"trainer.stop_grace_seconds must be > 0, got {cfg.trainer.stop_grace_seconds}")
    if cfg.trainer.max_minutes is not None and cfg.trainer.max_minutes <= 0:
        raise ConfigError(f"trainer.max_minutes must be > 0 or null, got {cfg.trainer.max_minutes}")
    if cfg.task == "autoencode":
        _validate_autoencode(cfg)


def _validate_autoencode(cfg: Any) -> None:
    _choice(cfg.dataset.name, IMAGE_DATASETS, "dataset for task autoencode")
    _choice(cfg.model.name, AUTOENCODER_MODELS, "model for task autoencode")
    _choice(cfg.latent.name, LATENT_NAMES, "latent")
    if cfg.dab.estimator != "dab":
        raise ConfigError("for task autoencode the latent variant picks the estimator (dab.estimator is not read); "
                          "for the straight-through estimator use latent=ste_binary or latent=ste_signum")
    if cfg.model.bpp is None or cfg.model.bpp <= 0:
        raise ConfigError(f"model.bpp must be > 0, got {cfg.model.bpp}")
    _at_least(cfg.latent.categories, 2, "latent.categories")
    from dab.suite.models.latents import ANNEAL_SCHEDULES

    _choice(cfg.latent.anneal, ANNEAL_SCHEDULES, "latent.anneal")
    if cfg.latent.tau_min is None or not 0 < cfg.latent.tau_min < 1:
        raise ConfigError(f"latent.tau_min must be > 0 and < 1 (tau starts at 1), got {cfg.latent.tau_min}")
    if cfg.latent.anneal_epochs is not None and cfg.latent.anneal_epochs < 1:
        raise ConfigError(f"latent.anneal_epochs must be >= 1, or null to fit E to trainer.max_steps; "
                          f"got {cfg.latent.anneal_epochs}")
    _at_least(cfg.latent.anneal_rate, 0, "latent.anneal_rate")
    _at_least(cfg.latent.anneal_every, 1, "latent.anneal_every")
    _at_least(cfg.dataset.probe_size, 10, "dataset.probe_size")
    _at_least(cfg.dataset.image_size, 32, "dataset.image_size")
    _at_least(cfg.dataset.workers, 0, "dataset.workers")


def _validate_classify(cfg: Any) -> None:
    """Checks only task=classify reads (image data set, ResNet shape and head, augmentation, EMD probe)."""
    from dab.suite.models.resnet import HEADS as RESNET_HEADS
    _choice(cfg.dataset.name, CLASSIFY_DATASETS, "dataset for task classify")
    _choice(cfg.model.name, ("resnet18",), "model for task classify")
    _at_least(cfg.model.width, 1, "model.width")
    _choice(cfg.model.head, RESNET_HEADS, "model.head")
    if str(cfg.model.channels_last).lower() not in CHANNELS_LAST_CHOICES:
        raise ConfigError(f"unknown model.channels_last '{cfg.model.channels_last}'; valid choices: "
                          + ", ".join(CHANNELS_LAST_CHOICES))
    if cfg.model.hard_fn_after not in (1, 2, 3, 4):
        raise ConfigError(f"model.hard_fn_after must be a residual stage; valid choices: 1, 2, 3, 4 "
                          f"(got {cfg.model.hard_fn_after})")
    _at_least(cfg.dataset.crop_pad, 0, "dataset.crop_pad")
    _at_least(cfg.dataset.emd_batch, 0, "dataset.emd_batch")


def register_configs() -> None:
    """Register :class:`Config` as Hydra's ``base_config`` schema (imports Hydra lazily)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)
