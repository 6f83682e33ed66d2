"""Benchmark: ResNet18 classifier training throughput (images/s), this suite vs a plain loop.

Ours: the real presets ``classify_identity`` (no bridge) and ``classify_sort`` (sort_rows_cols
after stage 4, conv approximator), composed with Hydra (``model.width``, batch, precision and
layout as given), built by ``dab.suite.step.build_run`` and timed through the trainer's own step
``run.step(i)``: batches indexed from device tensors with on-device crop+flip, channels-last
where the model allows it, bf16 autocast on CUDA (fp32 on a CPU), ``torch.compile`` with
--compile. Plain: the identity preset's model (same initial weights) in fp32, eager, contiguous
layout, fed by a torchvision DataLoader over the same images (PIL images, RandomCrop(32, 4) +
RandomHorizontalFlip + ToTensor per sample, worker processes, pinned memory), with the usual
``loss.item()`` per step. Prints images/s for each and the ratios

    identity_vs_plain = ours identity / plain          (GPU target: >= 2)
    sort_step_overhead = sort step time / identity - 1  (GPU target: <= 0.25)

Data (--data auto): CIFAR-10 where ``<root>/cifar-10-batches-py`` exists, else the Fashion-MNIST-32
stand-in (``dataset=fmnist32``) where ``<root>/FashionMNIST/raw`` exists, else synthetic images
written in Fashion-MNIST's file format to a temporary root and read as fmnist32 (throughput does
not depend on pixel values). ``<root>`` is $DAB_DATA_ROOT or the presets' ``dataset.root``.

    python scripts/bench_classification.py                           # width 64, 20 s each
    python scripts/bench_classification.py --width 8 --seconds 10 --workers 1   # a CPU
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dab/

from dab.suite.benchmarking import endless, throughput  # noqa: E402
from dab.suite.compose import compose_config  # noqa: E402
from dab.suite.experiment import hardware_name, resolve_device  # noqa: E402
from dab.suite.families import parse  # noqa: E402
from dab.suite.families.classification import make_classifier  # noqa: E402
from dab.suite.image_data import data_root  # noqa: E402
from dab.suite.step import build_run  # noqa: E402

PRESETS = {"identity": "classify_identity", "sort_rows_cols": "classify_sort"}


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array as an IDX file (the MNIST / Fashion-MNIST format torchvision reads)."""
    path.write_bytes(struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape) + array.tobytes())


def write_synthetic_fashion_mnist(root: Path, train_images: int, test_images: int = 256) -> None:
    """Random 28x28 grey images and labels as ``root/FashionMNIST/raw``."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", train_images), ("t10k", test_images)):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))


def choose_data(choice: str, root: Path) -> str:
    """The data set --data names (auto: what is on disk under ``root``): cifar10, fmnist32 or synthetic."""
    if choice != "auto":
        return choice
    if (root / "cifar-10-batches-py").is_dir():
        return "cifar10"
    return "fmnist32" if (root / "FashionMNIST" / "raw").is_dir() else "synthetic"


def bench_plain(cfg, args, device: torch.device) -> float:
    """Images/s of a DataLoader loop training ``cfg``'s model (fp32, eager, contiguous)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    root, d = str(data_root(cfg.dataset.root)), cfg.dataset
    tf = [transforms.RandomCrop(32, padding=d.crop_pad), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
          transforms.Normalize((0.5,) * 3, (0.25,) * 3)]
    if d.name == "cifar10":
        data = datasets.CIFAR10(root, train=True, transform=transforms.Compose(tf))
    else:  # fmnist32: padded to 32x32, grey repeated to 3 channels
        data = datasets.FashionMNIST(root, train=True,
                                     transform=transforms.Compose([transforms.Pad(2), transforms.Grayscale(3), *tf]))
    loader = DataLoader(data, batch_size=d.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    torch.manual_seed(cfg.seed)  # as build_run seeds: the same initial weights as ours
    model = make_classifier(parse(cfg)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    batches, running = endless(loader), {"loss": 0.0}

    def step(_index: int) -> None:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running["loss"] += loss.item()

    return throughput(step, d.batch_size, args.seconds, device, args.warmup)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=None, help="default: the presets' (128)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per variant")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation, cuDNN autotune)")
    p.add_argument("--data", default="auto", choices=["auto", "cifar10", "fmnist32", "synthetic"])
    p.add_argument("--images", type=int, default=50_000, help="synthetic training images (CIFAR-10's count)")
    p.add_argument("--workers", type=int, default=8, help="plain loop's DataLoader workers")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", help="auto = bf16 on CUDA, fp32 on a CPU; or fp32, bf16")
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"],
                   help="ours' model.channels_last (auto: where the model allows it)")
    p.add_argument("--compile", action="store_true",
                   help="also time ours with the compiled whole step (trainer.compile=true), beside eager")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    precision = ("bf16" if device.type == "cuda" else "fp32") if args.precision == "auto" else args.precision
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = choose_data(args.data, data_root(compose_config([f"+experiment={PRESETS['identity']}"]).dataset.root))
    overrides = [f"trainer.device={device.type}", f"model.width={args.width}",
                 f"dataset={'cifar10' if data == 'cifar10' else 'fmnist32'}",
                 *([] if args.batch is None else [f"dataset.batch_size={args.batch}"])]
    ours = [f"trainer.precision={precision}", f"model.channels_last={args.channels_last}"]
    modes = {"": ["trainer.compile=false"], **({"_compiled": ["trainer.compile=true"]} if args.compile else {})}
    with tempfile.TemporaryDirectory(prefix="bench_classification_") as tmp, \
            mock.patch.dict(os.environ, {"DAB_DATA_ROOT": tmp} if data == "synthetic" else {}):
        if data == "synthetic":  # read through the real loader, from the root every loader reads
            write_synthetic_fashion_mnist(Path(tmp), max(4 * (args.batch or 128), args.images))
        runs = {name + mode: build_run(compose_config([f"+experiment={preset}", *overrides, *ours, *flag]), device)
                for mode, flag in modes.items() for name, preset in PRESETS.items()}
        plain_cfg = compose_config([f"+experiment={PRESETS['identity']}", *overrides])
        batch = plain_cfg.dataset.batch_size
        settings = dict(width=args.width, batch=batch, data=data, precision=precision,
                        channels_last=runs["identity"].task.memory_format == torch.channels_last,
                        compile=args.compile, seconds=args.seconds, device=hardware_name(device))
        print("settings:", json.dumps(settings), flush=True)
        result = {"settings": settings}
        for name, run in runs.items():
            result[f"ours_{name}"] = throughput(run.step, batch, args.seconds, device, args.warmup)
            print(f"ours  {name:24s} {result[f'ours_{name}']:10.1f} images/s", flush=True)
        result["plain_identity"] = bench_plain(plain_cfg, args, device)
    print(f"plain {'identity':24s} {result['plain_identity']:10.1f} images/s (fp32 eager, DataLoader)")
    result["identity_vs_plain"] = result["ours_identity"] / result["plain_identity"]
    result["sort_step_overhead"] = result["ours_identity"] / result["ours_sort_rows_cols"] - 1
    if args.compile:
        result["compiled_vs_eager"] = result["ours_sort_rows_cols_compiled"] / result["ours_sort_rows_cols"]
        print(f"compiled whole step vs eager (sort): {result['compiled_vs_eager']:.2f}x")
    print(f"identity_vs_plain={result['identity_vs_plain']:.2f} sort_step_overhead={result['sort_step_overhead']:.2f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
