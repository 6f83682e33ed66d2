"""Benchmark: the Fashion-MNIST autoencoder (vae_fmnist, dab_binary, bpp 0.1), images/s of this
suite's trainer against a plain loop, in one run; prints ``speedup_vs_plain=X.XX`` last.

- ours: the whole training set a uint8 tensor on the device, batches indexed and converted
  there, the trainer's step (model + task loss + DAB loss in one function, optionally compiled);
- plain: a torchvision ``FashionMNIST(transform=ToTensor())`` through a shuffled ``DataLoader``
  (per-sample PIL -> tensor in worker processes, pinned memory, copy per batch), the same model,
  losses and optimizer, and ``loss.item()`` every step as such loops log it.

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

from dab.suite.benchmarking import endless, throughput  # noqa: E402
from dab.suite.config import Config, LatentConfig  # noqa: E402
from dab.suite.experiment import hardware_name, resolve_device  # noqa: E402
from dab.suite.families import autoencoding as ae  # noqa: E402
from dab.suite.image_data import data_root, unpack_local_fashion_mnist  # noqa: E402
from dab.suite.trainer import compile_forward_loss, make_autocast, make_forward_loss, make_optimizer, train_step  # noqa: E402


def fmnist_config(batch_size: int, compile_: bool) -> Config:
    """vae_fmnist's settings (conf/experiment/vae_fmnist.yaml, conf/model/conv_unet.yaml) as a dataclass."""
    cfg = Config(task="autoencode", latent=LatentConfig(name="dab_binary"))
    cfg.dataset.name, cfg.dataset.batch_size = "fmnist", batch_size
    cfg.model.name, cfg.model.widths, cfg.model.hidden, cfg.model.activation, cfg.model.bpp = \
        "conv_unet", [32, 64, 128], 512, "elu", 0.1
    cfg.optimizer.lr, cfg.dab.gamma, cfg.dab.hidden, cfg.dab.depth = 1e-3, 10.0, 128, 3
    cfg.trainer.compile = compile_
    return cfg


def ours(cfg: Config, device: torch.device, seconds: float) -> float:
    task, model = ae.build(cfg, device)
    model.to(device).train()
    opt = make_optimizer("adam", model.parameters(), cfg.optimizer.lr, 0.0)
    forward_loss = make_forward_loss(model, task, make_autocast(device, "fp32"))
    if cfg.trainer.compile:
        forward_loss = compile_forward_loss(forward_loss, device)
    params, state = list(model.parameters()), {"step": 0}

    def step():
        batch = task.train_batch(state["step"])
        state["step"] += 1
        return train_step(forward_loss, params, opt, batch, None)[0]

    return throughput(step, cfg.dataset.batch_size, seconds, device)


def plain(cfg: Config, device: torch.device, seconds: float, workers: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from dab.bridge import pop_dab_loss

    root = data_root(cfg.dataset.root)
    unpack_local_fashion_mnist(root)  # a local gzipped copy (no download) serves the plain loop too
    ds = datasets.FashionMNIST(str(root), train=True, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=cfg.dataset.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model, _, _ = ae.make_autoencoder(cfg, (1, 28, 28))
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    batches = endless(loader)

    def step():
        x, _ = next(batches)
        x = x.to(device, non_blocking=True)
        logits, _, _ = model(x)
        loss = ae.reconstruction_nll(logits, x).mean() + pop_dab_loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return throughput(step, cfg.dataset.batch_size, seconds, device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=4, help="the plain loop's DataLoader workers")
    p.add_argument("--compile", action="store_true", help="also time ours with torch.compile of the step")
    p.add_argument("--out", type=Path, default=None, help="write bench_autoencoder_<stamp>.json here")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    result = {"benchmark": "fmnist autoencoder (vae_fmnist, dab_binary, bpp 0.1)", "device": hardware_name(device),
              "batch_size": args.batch_size, "seconds": args.seconds, "plain_workers": args.workers,
              "torch": torch.__version__}
    result["plain_images_per_s"] = plain(fmnist_config(args.batch_size, False), device, args.seconds, args.workers)
    print(f"plain (DataLoader + ToTensor, {args.workers} workers): {result['plain_images_per_s']:.0f} images/s", flush=True)
    result["ours_images_per_s"] = ours(fmnist_config(args.batch_size, False), device, args.seconds)
    print(f"ours (device tensors, eager): {result['ours_images_per_s']:.0f} images/s", flush=True)
    best = result["ours_images_per_s"]
    if args.compile:
        result["ours_compiled_images_per_s"] = ours(fmnist_config(args.batch_size, True), device, args.seconds)
        print(f"ours (device tensors, compiled step): {result['ours_compiled_images_per_s']:.0f} images/s", flush=True)
        best = max(best, result["ours_compiled_images_per_s"])
    result["speedup_vs_plain"] = best / result["plain_images_per_s"]
    print(f"device: {result['device']}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"bench_autoencoder_{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=1))
    print(f"speedup_vs_plain={result['speedup_vs_plain']:.2f}")


if __name__ == "__main__":
    main()
