"""Benchmark: the Fashion-MNIST autoencoder (vae_fmnist, dab_binary, bpp 0.1), images/s of this
suite's trainer against a plain loop, in one run; prints ``speedup_vs_plain=X.XX`` last.

Both build their model from the real preset (``+experiment=vae_fmnist``, composed with Hydra):

- ours: ``dab.suite.step.build_run`` and the trainer's own step, ``run.step(i)``: the whole
  training set a uint8 tensor on the device, batches indexed and converted there, model + task
  loss + DAB loss in one function (compiled with ``--compile``);
- plain: a torchvision ``FashionMNIST(transform=ToTensor())`` through a shuffled ``DataLoader``
  (per-sample PIL -> tensor in worker processes, pinned memory, copy per batch), the same model
  (same initial weights), losses and optimizer, and ``loss.item()`` every step as such loops log it.

Needs Fashion-MNIST under ``dataset.root`` (``make data``) or a download.

    python scripts/bench_autoencoder.py --seconds 20 --out results/bench
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dab/

from dab.bridge import pop_dab_loss  # noqa: E402
from dab.suite.benchmarking import endless, throughput  # noqa: E402
from dab.suite.compose import compose_config  # noqa: E402
from dab.suite.experiment import hardware_name, resolve_device  # noqa: E402
from dab.suite.families import autoencoding as ae  # noqa: E402
from dab.suite.families import parse  # noqa: E402
from dab.suite.image_data import data_root, image_shape, unpack_local_fashion_mnist  # noqa: E402
from dab.suite.step import build_run  # noqa: E402

PRESET = "vae_fmnist"


def ours(cfg, device: torch.device, seconds: float) -> float:
    """Images/s of the trainer's step on ``cfg``."""
    return throughput(build_run(cfg, device).step, cfg.dataset.batch_size, seconds, device)


def plain(cfg, device: torch.device, seconds: float, workers: int) -> float:
    """Images/s of a DataLoader loop training ``cfg``'s model with ``cfg``'s learning rate."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    root = data_root(cfg.dataset.root)
    unpack_local_fashion_mnist(root)  # a local gzipped copy (no download) serves the plain loop too
    ds = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor(), download=True)
    loader = DataLoader(ds, batch_size=cfg.dataset.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    torch.manual_seed(cfg.seed)  # as build_run seeds: the same initial weights as ours
    model, _, _ = ae.make_autoencoder(parse(cfg), image_shape(cfg.dataset.name))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    batches = endless(loader)

    def step(_index: int) -> float:
        x, _ = next(batches)
        x = x.to(device, non_blocking=True)
        logits, _, _ = model(x)
        loss = ae.reconstruction_nll(logits, x).mean() + pop_dab_loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return throughput(step, cfg.dataset.batch_size, seconds, device)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's (128)")
    p.add_argument("--workers", type=int, default=4, help="the plain loop's DataLoader workers")
    p.add_argument("--compile", action="store_true", help="also time ours with trainer.compile=true")
    p.add_argument("--out", type=Path, default=None, help="write bench_autoencoder_<stamp>.json here")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    overrides = [f"+experiment={PRESET}", f"trainer.device={device.type}"]
    if args.batch_size is not None:
        overrides.append(f"dataset.batch_size={args.batch_size}")
    cfg = compose_config(overrides)
    result = {"benchmark": f"fmnist autoencoder ({PRESET}, {cfg.latent.name}, bpp {cfg.latent.bpp})",
              "device": hardware_name(device), "batch_size": cfg.dataset.batch_size, "seconds": args.seconds,
              "plain_workers": args.workers, "torch": torch.__version__}
    print(f"device: {result['device']} | {result['benchmark']}, batch {cfg.dataset.batch_size}", flush=True)
    result["plain_images_per_s"] = plain(cfg, device, args.seconds, args.workers)
    print(f"plain (DataLoader + ToTensor, {args.workers} workers): {result['plain_images_per_s']:.0f} images/s", flush=True)
    result["ours_images_per_s"] = ours(cfg, device, args.seconds)
    print(f"ours (device tensors, eager): {result['ours_images_per_s']:.0f} images/s", flush=True)
    best = result["ours_images_per_s"]
    if args.compile:
        result["ours_compiled_images_per_s"] = ours(compose_config([*overrides, "trainer.compile=true"]), device,
                                                    args.seconds)
        print(f"ours (device tensors, compiled step): {result['ours_compiled_images_per_s']:.0f} images/s", flush=True)
        best = max(best, result["ours_compiled_images_per_s"])
    result["speedup_vs_plain"] = best / result["plain_images_per_s"]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"bench_autoencoder_{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=1))
    print(f"speedup_vs_plain={result['speedup_vs_plain']:.2f}")
    return result


if __name__ == "__main__":
    main()
