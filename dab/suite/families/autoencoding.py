"""Discrete-latent autoencoders (paper Sec. 5.2, Figures 4 and 5): data, model building, bits per
pixel, loss and evaluation (MS-SSIM, linear probes, bits, reconstruction loss, KL, temperature).

Bits per pixel: a code of ``units`` units carrying ``b`` bits each (1 binary, log2(3) ternary
signum, log2(K) per K-way categorical variable) costs ``units * b / (C * H * W)``. Given a target
``model.bpp`` the latent gets the most units that fit, ``floor(bpp * C*H*W / b)``; metrics report
the bpp actually used. The threshold baseline keeps a C x s x s binary image, s = floor(sqrt(bits / C)).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dab.errors import ConfigError
from dab.suite.image_data import image_shape, imagenet_loader, load_image_split, to_float
from dab.suite.image_metrics import linear_probe_accuracy, ms_ssim_upsampled
from dab.suite.models.autoencoders import Autoencoder, make_encoder_decoder, threshold_autoencoder
from dab.suite.models.latents import (LATENT_VARIANTS, RelaxedLatent, ThresholdLatent, bits_per_unit,
                                make_bridged_latent, make_schedule)
from dab.suite.sorting_data import step_generator

THRESHOLD_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))  # tau candidates for `threshold`
EVAL_CHUNK = 500


def latent_size(bpp: float, shape: tuple[int, int, int], variant: str, categories: int = 2) -> tuple[int, float]:
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
        raise ConfigError(f"model.bpp={bpp} leaves no latent unit for latent={variant} on {shape[0]}x{shape[1]}x"
                          f"{shape[2]} images; the smallest valid value is {math.ceil(least * 1e6) / 1e6:g}")
    return units, units * unit_bits


class DeviceImages:
    """A small-image split held on the device (uint8); float batches in [0, 1] indexed there.
    Training order: a fresh permutation per epoch drawn from (seed, epoch), so a batch is a
    function of (seed, step) and a resumed run sees the same batches."""

    def __init__(self, split, batch_size: int, seed: int):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.per_epoch = max(1, len(split) // batch_size)
        self._epoch, self._perm = -1, None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = step_generator(self.seed, epoch, self.split.images.device)
            self._perm = torch.randperm(len(self.split), generator=gen, device=self.split.images.device)
            self._epoch = epoch
        idx = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
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
        from torch.utils.data import DataLoader, Subset

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
                 shape: tuple[int, int, int], test_size: int, probe_size: int, latent_cfg: Any):
        self.model, self.train, self.test = model, train, test
        self.units, self.bits, self.shape = units, bits, shape
        self.test_size, self.probe_size, self.latent_cfg = test_size, probe_size, latent_cfg

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lat = self.model.latent
        if isinstance(lat, RelaxedLatent):
            lat.anneal(step)
        return self.train.batch(step)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        x, _ = batch
        logits, _, kl = model(x)
        recon = reconstruction_nll(logits, x).mean()
        if kl is None:
            return recon, {"train/recon_loss": recon.detach()}
        kl = kl.mean()
        # tau: a copy, since the buffer changes in place before the trainer sums the window's logs
        return recon + kl, {"train/recon_loss": recon.detach(), "train/kl": kl.detach(),
                            "train/tau": model.latent.tau.detach().clone()}

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
        from torchvision.utils import make_grid, save_image

        x, _ = next(self.test.chunks(count))
        grid = make_grid(torch.cat([x, torch.sigmoid(model(x)[0].float())]).cpu(), nrow=x.shape[0], pad_value=1.0)
        writer.add_image("test/reconstructions", grid, step)
        save_image(grid, Path(writer.log_dir).parent / "reconstructions.png")


def reconstruction_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL per image in nats: logits, x: [B, C, H, W] (x in [0, 1]) -> [B]."""
    return F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").flatten(1).sum(1)


def make_autoencoder(cfg: Any, shape: tuple[int, int, int]) -> tuple[Autoencoder, int, float]:
    """The model for ``cfg.model`` and ``cfg.latent`` on images ``shape``; returns (model, units, bits)."""
    m, lat = cfg.model, cfg.latent
    units, bits = latent_size(m.bpp, shape, lat.name, lat.categories)
    variant = LATENT_VARIANTS[lat.name]
    if lat.name == "threshold":
        side = math.isqrt(units // shape[0])
        return threshold_autoencoder(shape, side, ThresholdLatent(shape[0], side)), units, bits
    if variant.relaxed is not None:
        latent = RelaxedLatent("bernoulli" if variant.relaxed == "bernoulli" else "categorical", units, lat.categories,
                               schedule=make_schedule(lat, cfg.trainer.max_steps))
    else:
        latent = make_bridged_latent(lat.name, units, cfg.dab, cfg.hard_fn.eps, cfg.seed)
    encoder, decoder = make_encoder_decoder(m.name, shape, m.widths, m.hidden, m.activation,
                                            latent.in_features, latent.code_features)
    return Autoencoder(encoder, latent, decoder), units, bits


def build(cfg: Any, device: torch.device) -> tuple[AutoencodingTask, Autoencoder]:
    d = cfg.dataset
    shape = image_shape(d.name, d.image_size)
    latent_size(cfg.model.bpp, shape, cfg.latent.name, cfg.latent.categories)  # a too-small bpp fails first
    if d.name == "imagenet":
        train = LoaderImages(imagenet_loader(d.root, d.image_size, d.batch_size, True, d.workers), device)
        test = LoaderImages(imagenet_loader(d.root, d.image_size, d.batch_size, False, d.workers), device)
    else:
        train = DeviceImages(load_image_split(d.name, d.root, True, device), d.batch_size, cfg.seed)
        test = DeviceImages(load_image_split(d.name, d.root, False, device), d.batch_size, cfg.seed)
    model, units, bits = make_autoencoder(cfg, shape)
    task = AutoencodingTask(model, train, test, units, bits, shape, d.test_size, d.probe_size, cfg.latent)
    return task, model
