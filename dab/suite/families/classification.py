"""Image classification with a hard function inside a ResNet18 (paper Sec. 5.3, Table 2, Figure 6):
data as device tensors, the model, cross-entropy and the test metrics (accuracy, EMD)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import wasserstein_distance
from torch import nn

from dab.bridge import Bridge
from dab.errors import ConfigError
from dab.registry import Registry
from dab.suite import image_data
from dab.suite.config import (BridgedGroups, RunArgs, check_choice, check_min, make_bridge_for,
                              read_bridged_groups)
from dab.suite.memory_layout import CHANNELS_LAST_CHOICES, use_channels_last
from dab.suite.models.resnet import ResNet18Classifier, stage_output_shape
from dab.suite.models.sorting import ACTIVATIONS
from dab.suite.rng import EpochOrder, step_generator

CLASSES = 10
EVAL_CHUNK = 1000
DATASETS_HERE = ("cifar10", "fmnist32")  # 32x32 RGB images, 10 classes
MODELS = Registry("model for task classify")  # the classifiers


@dataclass
class ResNetArgs:
    width: int = 64  # channels of the first stage (stages: w, 2w, 4w, 8w); 64 = standard
    hard_fn_after: int = 4  # the residual stage (1..4) whose output goes through the bridge
    head: str = "pool"  # pool (global average pool, the paper's) | flatten (ours; dab/suite/models/resnet.py)
    activation: str = "elu"
    channels_last: Any = "auto"  # NHWC layout: auto | true | false (dab/suite/memory_layout.py)


@MODELS.register("resnet18", schema=ResNetArgs)
def _resnet18(args: ResNetArgs, bridge: Bridge | None) -> ResNet18Classifier:
    in_shape = stage_output_shape(args.hard_fn_after, args.width)
    out_shape = None if bridge is None else bridge.hard_fn.out_shape(in_shape)
    return ResNet18Classifier(args.width, args.hard_fn_after, bridge, out_shape, CLASSES,
                              activation=ACTIVATIONS[args.activation], head=args.head)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units of uint8 images [N, C, H, W] -> ([C], [C])."""
    total = images.new_zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].double().div_(255.0)
        total += x.sum((0, 2, 3))
        total_sq += x.pow(2).sum((0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    return mean.float(), (total_sq / n - mean.pow(2)).clamp_min(1e-12).sqrt().float()


def position_mass(z: torch.Tensor) -> torch.Tensor:
    """Each row of z [B, N] as a distribution over its positions 0..N-1 [B, N] (float64, rows sum
    to 1): the row minus its own minimum, divided by its total; a constant row spreads evenly.
    Depends on the row's shape only: a·z + b with a > 0 gives the same masses."""
    z = z.detach().double()
    mass = z - z.min(1, keepdim=True).values
    total = mass.sum(1, keepdim=True)
    flat = total <= 0  # a constant row: no shape to read, so no position is preferred
    return torch.where(flat, torch.full_like(mass, 1.0 / z.shape[1]), mass / torch.where(flat, 1.0, total))


def positional_emd(z_in: torch.Tensor, z_out: torch.Tensor) -> float:
    """Mean over samples of the 1-D earth mover's distance between the input's and the output's
    position masses (``position_mass``), in positions moved. z_in, z_out: [B, N], aligned position
    by position.

    Why positions rather than values: the value distributions of x and sort(x) are identical, so
    their EMD is 0 whatever the network does; read as mass over positions, the distance measures
    how far the input's values must travel to lie in the output's order, which shrinks as the layer
    before learns to emit already-ordered maps (the paper's Figure 6 middle). An input already in
    the output's order gives 0.

    Invariance: each vector is reduced to its own minimum and total, so x -> a·x + b (a > 0) on
    the input, the output or both (e.g. a uniform shift or rescaling of the activations as training
    goes on) leaves the distance unchanged, and an output that is a positive affine image of its
    input (nothing reordered) gives 0. For a sort the output is a permutation of the input, so its
    own min and total equal the input's, and this is the same as normalizing both jointly. Not
    covered: order-preserving but non-affine maps (exp(x) vs x gives a positive distance); only
    ranks would be blind to those, and ranks discard how much mass moves and break under the
    ties of signum and k-means outputs. On the grid 0..N-1 the distance is the L1 gap between the
    two cumulative masses: sum over i < N-1 of |F_in(i) - F_out(i)|.
    """
    if z_in.shape != z_out.shape or z_in.dim() != 2:
        raise ValueError(f"positional_emd needs two [B, N] tensors of one shape, got {tuple(z_in.shape)} "
                         f"and {tuple(z_out.shape)}")
    gap = position_mass(z_in).cumsum(1) - position_mass(z_out).cumsum(1)  # [B, N]
    return float(gap[:, :-1].abs().sum(1).mean())


def value_emd(z_in: torch.Tensor, z_out: torch.Tensor) -> float:
    """EMD between the pooled value distributions of input and output (0 for any permutation)."""
    return float(wasserstein_distance(z_in.double().flatten().cpu().numpy(), z_out.double().flatten().cpu().numpy()))


def align_for_emd(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The bridge input laid out like its output: as is for same-shape functions, repeated along
    channels for sort-rows+cols ([C, H, W] -> [2C, H, W]). x: [B, *in] -> [B, N_out]."""
    if out.shape == x.shape:
        return x.flatten(1)
    if out.dim() == 4 and out.shape[1] % x.shape[1] == 0 and out.shape[2:] == x.shape[2:]:
        return x.repeat(1, out.shape[1] // x.shape[1], 1, 1).flatten(1)
    raise ConfigError(f"test/emd compares the hard function's input and output position by position; "
                      f"a {tuple(x.shape[1:])} -> {tuple(out.shape[1:])} function has no such alignment "
                      "(valid for signum, kmeans, sort1d, sort_rows_cols); set dataset.emd_batch=0")


class ClassificationTask:
    """Batches drawn from device tensors (an epoch = one permutation, a function of (seed, epoch);
    crop+flip from (seed, step)), cross-entropy on 10 classes, test accuracy as a fraction."""

    objective = "test/accuracy"
    percent_metrics = ("test/accuracy",)  # fractions, shown in percent in the run summary

    def __init__(self, train: image_data.ImageSplit, test: image_data.ImageSplit, batch_size: int, seed: int,
                 crop_pad: int, flip: bool, channels_last: bool, emd_batch: int = 0):
        if len(train) < batch_size:
            raise ConfigError(f"dataset.batch_size={batch_size} exceeds the {len(train)} training images")
        self.train, self.test, self.batch_size, self.seed = train, test, batch_size, seed
        self.crop_pad, self.flip = crop_pad, flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean, self.std = (t.view(1, -1, 1, 1).to(train.images.device) for t in channel_stats(train.images))
        # salt 2**40: the crop/flip draws use step_generator(seed, step) (see EpochOrder)
        self.order = EpochOrder(len(train), batch_size, seed, train.images.device, salt=2**40)
        self.emd_x = None if emd_batch == 0 else self.prepare(test.images[:emd_batch])

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> normalized float [B, C, H, W] in the model's memory format."""
        x = (image_data.to_float(images) - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order.indices(step)
        images = self.train.images[idx]
        if self.crop_pad > 0 or self.flip:
            images = image_data.random_crop_flip(images, step_generator(self.seed, step, images.device),
                                                 self.crop_pad, self.flip)
        return self.prepare(images), self.train.labels[idx]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x, y = batch
        logits = model(x).float()
        return nn.functional.cross_entropy(logits, y), {"train/accuracy": (logits.detach().argmax(1) == y).float().mean()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        hits = torch.zeros((), device=self.test.labels.device)
        for i in range(0, len(self.test), EVAL_CHUNK):
            logits = model(self.prepare(self.test.images[i:i + EVAL_CHUNK]))
            hits += (logits.argmax(1) == self.test.labels[i:i + EVAL_CHUNK]).sum()
        metrics = {"test/accuracy": float(hits) / len(self.test)}
        if self.emd_x is not None:
            metrics.update(self.bridge_emd(model))
        return metrics

    def bridge_emd(self, model: nn.Module) -> dict[str, float]:
        """test/emd (positional) and test/emd_values between the bridge's input and output on the
        fixed test batch ``emd_x``."""
        seen = {}
        bridge = next(m for m in model.modules() if isinstance(m, Bridge))
        handle = bridge.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], out=out))
        try:
            model(self.emd_x)
        finally:
            handle.remove()
        x, out = seen["x"].float(), seen["out"].float()
        return {"test/emd": positional_emd(align_for_emd(x, out), out.flatten(1)), "test/emd_values": value_emd(x, out)}


def parse(values: dict) -> BridgedGroups:
    """A 32x32 RGB data set, the ResNet18 and a hard function with their settings, read once (the
    stage and the head are checked by ``stage_output_shape`` and ``ResNet18Classifier``)."""
    groups = read_bridged_groups(values, "classify", DATASETS_HERE, MODELS)
    d, m = groups.data.args, groups.model.args
    check_min(m.width, 1, "model.width")
    check_choice(m.activation, tuple(ACTIVATIONS), "model.activation")
    if str(m.channels_last).lower() not in CHANNELS_LAST_CHOICES:
        raise ConfigError(f"unknown model.channels_last '{m.channels_last}'; valid choices: "
                          + ", ".join(CHANNELS_LAST_CHOICES))
    check_min(d.crop_pad, 0, "dataset.crop_pad")
    check_min(d.emd_batch, 0, "dataset.emd_batch")
    if d.emd_batch > 0 and groups.hard_fn.name == "identity":
        raise ConfigError("test/emd measures a hard function; hard_fn=identity builds no bridge. "
                          "Set dataset.emd_batch=0 or choose signum, kmeans, sort1d, sort_rows_cols")
    return groups


def make_classifier(args: RunArgs) -> ResNet18Classifier:
    """ResNet18 with the hard function's bridge after stage ``model.hard_fn_after`` and the
    classifier head ``model.head`` (pool | flatten)."""
    g = args.family
    m = g.model.args
    return MODELS[g.model.name](m, make_bridge_for(g.hard_fn, args.dab, stage_output_shape(m.hard_fn_after, m.width)))


def build(args: RunArgs, device: torch.device) -> tuple[ClassificationTask, nn.Module]:
    g = args.family
    d, m = g.data.args, g.model.args
    model = make_classifier(args)  # shape and layout errors before any data is loaded
    channels_last = use_channels_last(m.channels_last, model, device)
    if d.emd_batch > 0:
        probe = stage_output_shape(m.hard_fn_after, m.width)
        align_for_emd(torch.zeros(1, *probe), model.bridge.hard_fn(torch.zeros(1, *probe)))
    train = image_data.load_image_split(g.data.name, d.root, True, device)
    if d.validation > 0:  # score held-out training images (val/*), never the test set
        train, test = train.hold_out(d.validation)
    else:
        test = image_data.load_image_split(g.data.name, d.root, False, device)
    test = image_data.ImageSplit(test.images[:d.test_size], test.labels[:d.test_size])
    task = ClassificationTask(train, test, d.batch_size, args.seed, d.crop_pad, d.flip, channels_last, d.emd_batch)
    task.eval_split = "val" if d.validation > 0 else "test"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return task, model
