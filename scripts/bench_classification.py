"""Benchmark: ResNet18 classifier training throughput (images/s), this suite vs a plain loop.

Ours, for hard_fn identity (no bridge) and sort_rows_cols (DAB, conv approximator) after stage 4:
the trainer's own step (``make_forward_loss`` + ``train_step``) on batches indexed from device
tensors with on-device crop+flip, channels-last and bf16 autocast on CUDA (fp32 on a CPU), optionally
``torch.compile`` (--compile). Plain: the identity model in fp32, eager, contiguous layout, fed by a
torchvision DataLoader (PIL images, RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor per sample,
worker processes, pinned memory), with the usual ``loss.item()`` per step. Data are synthetic
(throughput does not depend on pixel values). Prints images/s for each and the ratios

    identity_vs_plain = ours identity / plain          (GPU target: >= 2)
    sort_step_overhead = sort step time / identity - 1  (GPU target: <= 0.25)

    python scripts/bench_classification.py                           # width 64, 20 s each
    python scripts/bench_classification.py --width 8 --seconds 10 --workers 1   # a CPU
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dab.suite.benchmarking import endless, throughput  # noqa: E402
from dab.suite.config import Config, DabConfig, DatasetConfig, HardFnConfig, ModelConfig  # noqa: E402
from dab.suite.experiment import hardware_name, resolve_device  # noqa: E402
from dab.suite.families.classification import ClassificationTask, make_classifier  # noqa: E402
from dab.suite.image_data import ImageSplit  # noqa: E402
from dab.suite.trainer import compile_forward_loss, make_autocast, make_forward_loss, make_optimizer, train_step  # noqa: E402


def bench_ours(hard_fn: str, args, device: torch.device, precision: str, channels_last: bool) -> float:
    cfg = Config(task="classify", dataset=DatasetConfig(name="cifar10", batch_size=args.batch),
                 model=ModelConfig(name="resnet18", width=args.width, activation="elu", channels_last=channels_last),
                 hard_fn=HardFnConfig(name=hard_fn), dab=DabConfig(approximator="conv", hidden=128, depth=3))
    torch.manual_seed(0)
    n = max(4 * args.batch, args.images)
    gen = torch.Generator().manual_seed(0)
    split = ImageSplit(torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8).to(device),
                       torch.randint(0, 10, (n,), generator=gen).to(device))
    task = ClassificationTask(split, split, args.batch, 0, crop_pad=4, flip=True, channels_last=channels_last)
    model = make_classifier(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer("adam", model.parameters(), 1e-4, 0.0)
    forward_loss = make_forward_loss(model, task, make_autocast(device, precision))
    if args.compile:
        forward_loss = compile_forward_loss(forward_loss, device)
    params, state = list(model.parameters()), {"step": 0}

    def step():
        train_step(forward_loss, params, optimizer, task.train_batch(state["step"]), None)
        state["step"] += 1

    return throughput(step, args.batch, args.seconds, device, args.warmup)


def bench_plain(args, device: torch.device) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.25,) * 3)])
    data = datasets.FakeData(size=max(4 * args.batch, args.images), image_size=(3, 32, 32), num_classes=10,
                             transform=tf)
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(name="resnet18", width=args.width, activation="elu"),
                 hard_fn=HardFnConfig(name="identity"))
    model = make_classifier(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches, running = endless(loader), {"loss": 0.0}

    def step():
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running["loss"] += loss.item()

    return throughput(step, args.batch, args.seconds, device, args.warmup)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per variant")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation, cuDNN autotune)")
    p.add_argument("--images", type=int, default=50_000, help="synthetic training images (CIFAR-10 size)")
    p.add_argument("--workers", type=int, default=8, help="plain loop's DataLoader workers")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", help="auto = bf16 on CUDA, fp32 on a CPU; or fp32, bf16")
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"], help="auto = on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile our training step")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    precision = ("bf16" if device.type == "cuda" else "fp32") if args.precision == "auto" else args.precision
    channels_last = device.type == "cuda" if args.channels_last == "auto" else args.channels_last == "true"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = dict(width=args.width, batch=args.batch, precision=precision, channels_last=channels_last,
                    compile=args.compile, seconds=args.seconds, device=hardware_name(device))
    print("settings:", json.dumps(settings))
    result = {"settings": settings}
    for name in ("identity", "sort_rows_cols"):
        result[f"ours_{name}"] = bench_ours(name, args, device, precision, channels_last)
        print(f"ours  {name:15s} {result[f'ours_{name}']:10.1f} images/s", flush=True)
    result["plain_identity"] = bench_plain(args, device)
    print(f"plain {'identity':15s} {result['plain_identity']:10.1f} images/s (fp32 eager, DataLoader)")
    result["identity_vs_plain"] = result["ours_identity"] / result["plain_identity"]
    result["sort_step_overhead"] = result["ours_identity"] / result["ours_sort_rows_cols"] - 1
    print(f"identity_vs_plain={result['identity_vs_plain']:.2f} sort_step_overhead={result['sort_step_overhead']:.2f}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
