"""Discrete-latent autoencoders (paper Sec. 5.2, Figures 4 and 5): data, model building, bits per
pixel, loss and evaluation (MS-SSIM, linear probes, bits, reconstruction loss, KL, temperature).

Bits per pixel: a code of ``units`` units carrying ``b`` bits each (1 binary, log2(3) ternary
signum, log2(K) per K-way categorical variable) costs ``units * b / (C * H * W)``. Given a target
``latent.bpp`` the latent gets the most units that fit, ``floor(bpp * C*H*W / b)``; metrics report
the bpp actually used. The threshold baseline keeps a C x s x s binary image, s = floor(sqrt(bits / C)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.utils import make_grid, save_image

from dab.errors import ConfigError
from dab.registry import Registry
from dab.suite.config import Choice, RunArgs, check_choice, check_min, read_group
from dab.suite.datasets import DATASETS
from dab.suite.image_data import image_datasets, image_shape, imagenet_loader, load_image_split, to_float
from dab.suite.image_metrics import linear_probe_accuracy, ms_ssim_upsampled
from dab.suite.models.autoencoders import (Autoencoder, ConvDecoder, conv_encoder, dense_decoder, resnet18_encoder,
                                           threshold_autoencoder)
from dab.bridge import draws_per_input, score_function_loss
from dab.suite.models.latents import (ANNEAL_SCHEDULES, LATENTS, BridgedCategoricalArgs, RelaxedArgs, RelaxedLatent,
                                      SignumLatentArgs, ThresholdLatent, bits_per_unit, make_bridged_latent,
                                      make_schedule)

from dab.suite.rng import EpochOrder

MODELS = Registry("model for task autoencode")  # the autoencoders: name -> builder(args, shape, in_features, code_features)


@dataclass
class ConvArgs:
    """Conv encoders: channels per encoder stage; dense decoders: ``hidden`` units per layer."""
    widths: List[int] = field(default_factory=lambda: [32, 64, 128])
    hidden: int = 512
    activation: str = "elu"


@MODELS.register("conv_unet", schema=ConvArgs)
def _conv_unet(a: ConvArgs, shape, in_features: int, code_features: int):
    return conv_encoder(shape, a.widths, a.activation, in_features), ConvDecoder(code_features, shape, a.widths, a.activation)


@MODELS.register("coordconv_dense", schema=ConvArgs)
def _coordconv_dense(a: ConvArgs, shape, in_features: int, code_features: int):
    return (conv_encoder(shape, a.widths, a.activation, in_features, coord=True),
            dense_decoder(code_features, shape, a.hidden, a.activation))


@MODELS.register("resnet18_dense", schema=ConvArgs)
def _resnet18_dense(a: ConvArgs, shape, in_features: int, code_features: int):
    return resnet18_encoder(shape, in_features), dense_decoder(code_features, shape, a.hidden, a.activation)

THRESHOLD_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))  # tau candidates for `threshold`
EVAL_CHUNK = 500


def latent_size(bpp: float, shape: tuple[int, int, int], variant: str, categories: int = 8) -> tuple[int, float]:
    """(units, bits) of the largest code within ``bpp`` bits per pixel for images ``shape``
    (threshold: units = C*s*s pixels of its downsampled image). Too small a ``bpp`` is a
    ConfigError naming the smallest valid value."""
    pixels = math.prod(shape)
    budget = bpp * pixels
    if variant == "threshold":
        side = math.isqrt(int(budget + 1e-9) // shape[0])
        units, unit_bits = shape[0] * side * side, 1.0
    else:
        unit_bits = bits_per_unit(variant, categories)
        units = int(budget / unit_bits + 1e-9)
    if units < 1:
        least = (shape[0] if variant == "threshold" else unit_bits) / pixels
        raise ConfigError(f"latent.bpp={bpp} leaves no latent unit for latent={variant} on {shape[0]}x{shape[1]}x"
                          f"{shape[2]} images; the smallest valid value is {math.ceil(least * 1e6) / 1e6:g}")
    return units, units * unit_bits


class DeviceImages:
    """A small-image split held on the device (uint8); float batches in [0, 1] indexed there.
    Training order: a fresh permutation per epoch drawn from (seed, epoch), so a batch is a
    function of (seed, step) and a resumed run sees the same batches."""

    def __init__(self, split, batch_size: int, seed: int):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.order = EpochOrder(len(split), batch_size, seed, split.images.device)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order.indices(step)
        return to_float(self.split.images[idx]), self.split.labels[idx]

    def chunks(self, n: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed random subsample of n images (the whole split if n >= its size), in chunks."""
        device = self.split.images.device
        idx = torch.randperm(len(self.split), generator=torch.Generator().manual_seed(seed))[:n].to(device)
        for j in range(0, idx.numel(), EVAL_CHUNK):
            sel = idx[j:j + EVAL_CHUNK]
            yield to_float(self.split.images[sel]), self.split.labels[sel]


class LoaderImages:
    """A DataLoader-backed split (ImageNet: too large for the device): training batches cycle
    through the shuffled loader; evaluation uses a fixed random subset of its data set."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device, self._it = loader, device, None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            x, y = next(self._it)
        except StopIteration:  # next epoch
            self._it = iter(self.loader)
            x, y = next(self._it)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def chunks(self, n: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.loader.dataset
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        for x, y in DataLoader(Subset(ds, idx), batch_size=self.loader.batch_size, num_workers=self.loader.num_workers):
            yield x.to(self.device), y.to(self.device)


class AutoencodingTask:
    """Loss per image: Bernoulli reconstruction NLL (BCE with logits, summed over pixels), plus the
    KL for the relaxed VAEs (the ELBO); the bridges' DAB losses are added by the trainer.

    The relaxed VAEs' temperature follows the latent's schedule (set before each training step),
    is logged as ``train/tau`` (mean over each log window) and reported as ``train/tau_final``."""

    objective = "test/ms_ssim"
    # fractions, shown in percent in the run summary
    percent_metrics = ("test/linear_acc", "test/linear_acc_posterior")

    def __init__(self, model: Autoencoder, train: Any, test: Any, units: int, bits: float,
                 shape: tuple[int, int, int], test_size: int, probe_size: int):
        self.model, self.train, self.test = model, train, test
        self.units, self.bits, self.shape = units, bits, shape
        self.test_size, self.probe_size = test_size, probe_size

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lat = self.model.latent
        if isinstance(lat, RelaxedLatent):
            lat.anneal(step)
        return self.train.batch(step)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x, _ = batch
        draws = draws_per_input(model)
        if draws > 1:  # reinforce with S draws per image: S consecutive copies, a baseline among them
            x = x.repeat_interleave(draws, 0)
        logits, _, kl = model(x)
        per_image = reconstruction_nll(logits, x)
        recon = per_image.mean()
        if kl is None:
            # a reinforce latent: its score-function term, from each image's loss (zero-valued)
            score = score_function_loss(model, per_image, none_if_empty=True)
            return recon if score is None else recon + score, {"train/recon_loss": recon.detach()}
        kl = kl.mean()
        # tau: a copy, since the buffer changes in place before the trainer sums the window's logs
        return recon + kl, {"train/recon_loss": recon.detach(), "train/kl": kl.detach(),
                            "train/tau": model.latent.tau.detach().clone()}

    def per_sample_loss(self, model: Autoencoder, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Each image's loss [B] (reconstruction NLL, plus the KL for the relaxed VAEs): the terms
        whose batch mean :meth:`loss` minimizes, for the gradient-fidelity diagnostics."""
        x, _ = batch
        logits, _, kl = model(x)
        per_image = reconstruction_nll(logits, x)
        return per_image if kl is None else per_image + kl

    def final_train_metrics(self, model: Autoencoder) -> dict[str, float]:
        """``train/tau_final``: the temperature the last training step used (relaxed VAEs only)."""
        lat = model.latent
        return {"train/tau_final": float(lat.tau)} if isinstance(lat, RelaxedLatent) else {}

    @torch.no_grad()
    def _codes(self, model: Autoencoder, source: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        codes, labels = zip(*((model.encode(x)[0].float(), y) for x, y in source.chunks(n)))
        return torch.cat(codes), torch.cat(labels)

    @torch.no_grad()
    def _codes_and_posteriors(self, model: Autoencoder, source: Any,
                              n: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Hard codes [n, code_features], the posterior's probabilities [n, in_features] (None for
        a deterministic code, see the latents' ``posterior``) and labels [n] of ``n`` images."""
        codes, posts, labels = [], [], []
        for x, y in source.chunks(n):
            h = model.encoder(x)
            codes.append(model.latent(h)[0].float())
            posts.append(model.latent.posterior(h))
            labels.append(y)
        post = None if posts[0] is None else torch.cat([p.float() for p in posts])
        return torch.cat(codes), post, torch.cat(labels)

    @torch.no_grad()
    def choose_threshold(self, model: Autoencoder) -> float:
        """The threshold baseline's tau: the grid value whose codes a linear probe separates best,
        fitted on 80% of the probe subsample and scored on the other 20% (never the test set)."""
        best = (-1.0, THRESHOLD_GRID[0])
        for tau in THRESHOLD_GRID:
            model.latent.tau.fill_(tau)
            codes, labels = self._codes(model, self.train, self.probe_size)
            cut = int(0.8 * len(labels))
            acc = linear_probe_accuracy(codes[:cut], labels[:cut], codes[cut:], labels[cut:])
            best = max(best, (acc, tau))
        model.latent.tau.fill_(best[1])
        return best[1]

    @torch.no_grad()
    def evaluate(self, model: Autoencoder) -> dict[str, float]:
        metrics = {}
        if isinstance(model.latent, ThresholdLatent):
            metrics["test/threshold_tau"] = self.choose_threshold(model)
        n = nll = kl_sum = ssim = 0.0
        codes, posts, labels = [], [], []
        for x, y in self.test.chunks(self.test_size):
            h = model.encoder(x)  # Autoencoder.forward in its parts, to keep h for the posterior
            code, kl = model.latent(h)
            logits = model.decoder(code)
            nll += float(reconstruction_nll(logits, x).sum())
            ssim += float(ms_ssim_upsampled(torch.sigmoid(logits.float()), x).sum())
            kl_sum += 0.0 if kl is None else float(kl.sum())
            codes.append(code.float())
            posts.append(model.latent.posterior(h))
            labels.append(y)
            n += x.shape[0]
        probe_x, probe_post, probe_y = self._codes_and_posteriors(model, self.train, self.probe_size)
        test_y = torch.cat(labels)
        metrics.update({
            "test/ms_ssim": ssim / n,
            "test/linear_acc": linear_probe_accuracy(probe_x, probe_y, torch.cat(codes), test_y),
            "test/recon_loss": nll / n,
            "test/bits": self.bits,
            "test/bpp": self.bits / math.prod(self.shape),
            "test/latent_units": float(self.units),
        })
        if probe_post is not None:  # stochastic codes: also probe the posterior's probabilities
            test_post = torch.cat([p.float() for p in posts])
            metrics["test/linear_acc_posterior"] = linear_probe_accuracy(probe_post, probe_y, test_post, test_y)
        if isinstance(model.latent, RelaxedLatent):
            metrics["test/kl"] = kl_sum / n
            metrics["test/tau"] = float(model.latent.tau)
        return metrics

    @torch.no_grad()
    def log_media(self, model: Autoencoder, writer: Any, step: int, count: int = 8) -> None:
        """Originals (top row) above their reconstructions (bottom row), to TensorBoard and, the
        latest, to ``reconstructions.png`` in the run directory."""
        x, _ = next(self.test.chunks(count))
        grid = make_grid(torch.cat([x, torch.sigmoid(model(x)[0].float())]).cpu(), nrow=x.shape[0], pad_value=1.0)
        writer.add_image("test/reconstructions", grid, step)
        save_image(grid, Path(writer.log_dir).parent / "reconstructions.png")


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL per image in nats: logits, x: [B, C, H, W] (x in [0, 1]) -> [B]."""
    return F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1)


@dataclass(frozen=True)
class AutoencodingGroups:
    data: Choice
    model: Choice
    latent: Choice


def parse(values: dict) -> AutoencodingGroups:
    """An image data set, an autoencoder and a latent with their settings, read once."""
    data = read_group(values, "dataset", DATASETS, image_datasets(), "autoencode")
    model = read_group(values, "model", MODELS, task="autoencode")
    latent = read_group(values, "latent", LATENTS, task="autoencode")
    d, m, lat = data.args, model.args, latent.args
    estimator = (values.get("dab") or {}).get("estimator", "dab")
    if LATENTS[latent.name].build.hard_fn is None and estimator != "dab":
        raise ConfigError(f"latent={latent.name} has no bridge, so dab.estimator is not read; for dab.estimator to "
                          "choose the estimator use latent=bridged_binary, bridged_signum, bridged_bernoulli or "
                          "bridged_categorical")
    check_min(d.batch_size, 1, "dataset.batch_size")
    check_min(d.test_size, 1, "dataset.test_size")
    check_min(d.probe_size, 10, "dataset.probe_size")
    for key in ("image_size", "workers"):
        if hasattr(d, key):
            check_min(getattr(d, key), 32 if key == "image_size" else 0, f"dataset.{key}")
    check_min(m.hidden, 1, "model.hidden")
    if lat.bpp is None or lat.bpp <= 0:
        raise ConfigError(f"latent.bpp must be > 0, got {lat.bpp}")
    if isinstance(lat, SignumLatentArgs) and lat.eps < 0:
        raise ConfigError(f"latent.eps (the signum margin) must be >= 0, got {lat.eps}")
    if hasattr(lat, "categories"):
        check_min(lat.categories, 2, "latent.categories")
    if isinstance(lat, RelaxedArgs):
        check_choice(lat.anneal, ANNEAL_SCHEDULES, "latent.anneal")
        if lat.tau_min is None or not 0 < lat.tau_min < 1:
            raise ConfigError(f"latent.tau_min must be > 0 and < 1 (tau starts at 1), got {lat.tau_min}")
        if lat.anneal_epochs is not None and lat.anneal_epochs < 1:
            raise ConfigError(f"latent.anneal_epochs must be >= 1, or null to fit E to trainer.max_steps; "
                              f"got {lat.anneal_epochs}")
        check_min(lat.anneal_rate, 0, "latent.anneal_rate")
        check_min(lat.anneal_every, 1, "latent.anneal_every")
    shape = image_shape(data.name, getattr(d, "image_size", 512))
    latent_size(lat.bpp, shape, latent.name, getattr(lat, "categories", 8))  # a too-small bpp fails here
    return AutoencodingGroups(data, model, latent)


def budget_dependence(groups: AutoencodingGroups) -> str | None:
    """Why the latent's temperature at a step depends on ``trainer.max_steps`` (None if not)."""
    lat = groups.latent.args
    if isinstance(lat, RelaxedArgs) and lat.anneal == "cosine_per_step" and lat.anneal_epochs is None:
        return "latent.anneal=cosine_per_step with latent.anneal_epochs=null fits its schedule to trainer.max_steps"
    return None


def make_autoencoder(args: RunArgs, shape: tuple[int, int, int]) -> tuple[Autoencoder, int, float]:
    """The model for the parsed ``model`` and ``latent`` on images ``shape``; returns (model, units, bits)."""
    g = args.family
    lat = g.latent.args
    categories = getattr(lat, "categories", 8)
    units, bits = latent_size(lat.bpp, shape, g.latent.name, categories)
    variant = LATENTS[g.latent.name].build
    if g.latent.name == "threshold":
        side = math.isqrt(units // shape[0])
        return threshold_autoencoder(shape, side, ThresholdLatent(shape[0], side)), units, bits
    if variant.relaxed is not None:
        latent = RelaxedLatent("bernoulli" if variant.relaxed == "bernoulli" else "categorical", units, categories,
                               schedule=make_schedule(lat, args.trainer.max_steps))
    else:
        hard_args = ({"eps": lat.eps} if isinstance(lat, SignumLatentArgs) else
                     {"categories": lat.categories} if isinstance(lat, BridgedCategoricalArgs) else {})
        latent = make_bridged_latent(g.latent.name, units, args.dab, **hard_args)
    encoder, decoder = MODELS[g.model.name](g.model.args, shape, latent.in_features, latent.code_features)
    return Autoencoder(encoder, latent, decoder), units, bits


def build(args: RunArgs, device: torch.device) -> tuple[AutoencodingTask, Autoencoder]:
    g = args.family
    d = g.data.args
    shape = image_shape(g.data.name, getattr(d, "image_size", 512))
    if g.data.name == "imagenet":
        if d.validation > 0:
            raise ConfigError("dataset.validation holds out device-held images; imagenet reads a DataLoader: "
                              "use dataset.validation=0 there")
        train = LoaderImages(imagenet_loader(d.root, d.image_size, d.batch_size, True, d.workers), device)
        test = LoaderImages(imagenet_loader(d.root, d.image_size, d.batch_size, False, d.workers), device)
    else:
        train_split = load_image_split(g.data.name, d.root, True, device)
        if d.validation > 0:  # score held-out training images (val/*), never the test set
            train_split, test_split = train_split.hold_out(d.validation)
        else:
            test_split = load_image_split(g.data.name, d.root, False, device)
        train = DeviceImages(train_split, d.batch_size, args.seed)
        test = DeviceImages(test_split, d.batch_size, args.seed)
    model, units, bits = make_autoencoder(args, shape)
    task = AutoencodingTask(model, train, test, units, bits, shape, d.test_size, d.probe_size)
    task.eval_split = "val" if d.validation > 0 else "test"
    return task, model
