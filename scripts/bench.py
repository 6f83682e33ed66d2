"""Benchmark: sort_t10 Signum-Dense training, this suite's trainer vs a plain eager loop.

The plain loop is the same model written the way the paper's appendix code runs: batches built
on the host (NumPy) and copied over, a ``torch.autograd.Function`` whose backward calls
``torch.autograd.grad(soft_y, x, grad_out, retain_graph=True)``, and a ``.item()`` every step.
Ours: device-side batches, a single autograd graph (no nested backward), host syncs only when
logging; measured in the default (fp32, eager) and the fast (``trainer.compile=true``, still fp32)
settings. bf16 is not used: it cannot tell apart inputs closer than ~0.4% and slows learning. Prints samples/s for each, then time-to-94.2% for the fast
setting, and last ``speedup_vs_plain=X.XX`` (fast over plain).

    python scripts/bench.py --seconds 20 --tta-minutes 5 --out results/bench
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dab.config import Config
from dab.experiment import hardware_name, resolve_device
from dab.hard_fns import signum_with_margin
from dab.models.sorting import DenseSorter
from dab.tasks import SortingTask, make_sorting_model
from dab.trainer import evaluate, make_autocast, make_forward_loss, make_optimizer, train_step

TARGET = 0.942  # paper Table 1, Signum-Dense T=10


class _PaperSignum(torch.autograd.Function):
    """Paper appendix 7.1: forward = hard signum, backward = autograd.grad through soft_y."""

    @staticmethod
    def forward(ctx, x, soft_y, eps):
        ctx.save_for_backward(x, soft_y)
        sig = torch.zeros_like(x)
        sig[x < -eps] = -1
        sig[x > eps] = 1
        return sig

    @staticmethod
    def backward(ctx, grad_out):
        x, soft_y = ctx.saved_tensors
        with torch.enable_grad():
            grad = torch.autograd.grad(outputs=soft_y, inputs=x, grad_outputs=grad_out, retain_graph=True)
        return grad[0], None, None


class _PaperBridge(nn.Module):
    def __init__(self, hidden: int, gamma: float, eps: float):
        super().__init__()
        self.approximator = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, hidden))
        self.gamma, self.eps, self.dab_loss = gamma, eps, None

    def forward(self, x):
        soft_y = self.approximator(x)
        hard = _PaperSignum.apply(x, soft_y, self.eps)
        self.dab_loss = self.gamma * (soft_y - hard.detach()).pow(2).sum(1).mean()
        return hard


def plain_samples_per_s(cfg: Config, device: torch.device, seconds: float) -> float:
    """The plain loop's steady-state throughput (after a short warm-up)."""
    torch.manual_seed(cfg.seed)
    bridge = _PaperBridge(cfg.model.hidden, cfg.dab.gamma, cfg.hard_fn.eps)
    T, B = cfg.dataset.length, cfg.dataset.batch_size
    model = DenseSorter(T, cfg.model.hidden, "tanh", cfg.model.layers_before, cfg.model.layers_after, bridge).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    rng = np.random.default_rng(cfg.seed)

    def step():
        x_np = rng.uniform(size=(B, T)).astype(np.float32)
        x = torch.from_numpy(x_np).to(device)
        y = torch.from_numpy(np.argsort(x_np, axis=1)).to(device)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, T), y.reshape(-1)) + bridge.dab_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return _throughput(step, B, seconds, device)


def ours(cfg: Config, device: torch.device):
    torch.manual_seed(cfg.seed)
    task = SortingTask(cfg.dataset.length, cfg.dataset.batch_size, cfg.dataset.test_size, cfg.dataset.test_seed,
                       cfg.seed, device)
    model = make_sorting_model(cfg).to(device)
    opt = make_optimizer(cfg.optimizer.name, model.parameters(), cfg.optimizer.lr, cfg.optimizer.weight_decay)
    autocast = make_autocast(device, cfg.trainer.precision)
    forward_loss = make_forward_loss(model, task, autocast)
    if cfg.trainer.compile:
        forward_loss = torch.compile(forward_loss)
    return task, model, forward_loss, opt, autocast


def ours_samples_per_s(cfg: Config, device: torch.device, seconds: float) -> float:
    task, model, forward_loss, opt, _ = ours(cfg, device)
    params = list(model.parameters())
    counter = iter(range(10**9))

    def step():
        return train_step(forward_loss, params, opt, task.train_batch(next(counter)), None)[0]

    return _throughput(step, cfg.dataset.batch_size, seconds, device)


def _throughput(step, batch: int, seconds: float, device: torch.device) -> float:
    for _ in range(10):  # warm-up (and compilation, when enabled)
        out = step()
    float(out)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        out = step()
        n += 1
    float(out)  # wait for queued device work before reading the clock
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - t0)


def time_to_target(cfg: Config, device: torch.device, minutes: float, eval_every: int) -> dict:
    """Train the given setting until test all-or-none >= TARGET or ``minutes`` run out."""
    task, model, forward_loss, opt, autocast = ours(cfg, device)
    params = list(model.parameters())
    best, step, t0 = 0.0, 0, time.perf_counter()
    while time.perf_counter() - t0 < 60 * minutes:
        train_step(forward_loss, params, opt, task.train_batch(step), None)
        step += 1
        if step % eval_every == 0:
            acc = evaluate(model, task, autocast)["test/all_or_none"]
            best = max(best, acc)
            if acc >= TARGET:
                return {"reached": True, "seconds": round(time.perf_counter() - t0, 1), "steps": step, "best": acc}
    return {"reached": False, "seconds": round(time.perf_counter() - t0, 1), "steps": step, "best": best}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per throughput measurement")
    p.add_argument("--tta-minutes", type=float, default=5.0, help="time-to-94.2%% budget (0 skips)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--out", type=Path, default=None, help="write bench.json + bench.txt here")
    args = p.parse_args()

    device = resolve_device(args.device)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    base = Config()
    base.dataset.batch_size = args.batch_size
    fast = Config()
    fast.dataset.batch_size = args.batch_size
    fast.trainer.compile = True
    say(f"device: {hardware_name(device)} | torch {torch.__version__} | sort_t10 signum-dense, "
        f"batch {args.batch_size}, {args.seconds:.0f} s per measurement")
    plain = plain_samples_per_s(base, device, args.seconds)
    say(f"plain eager loop (paper appendix style, fp32): {plain:12,.0f} samples/s  {plain / args.batch_size:8.1f} steps/s")
    eager = ours_samples_per_s(base, device, args.seconds)
    say(f"dab trainer, fp32 eager (default):             {eager:12,.0f} samples/s  {eager / args.batch_size:8.1f} steps/s")
    quick = ours_samples_per_s(fast, device, args.seconds)
    say(f"dab trainer, fp32 + torch.compile (fast):      {quick:12,.0f} samples/s  {quick / args.batch_size:8.1f} steps/s")
    result = {"device": hardware_name(device), "torch": torch.__version__, "batch_size": args.batch_size,
              "plain_samples_per_s": plain, "ours_fp32_eager_samples_per_s": eager,
              "ours_fast_samples_per_s": quick, "speedup_vs_plain": quick / plain,
              "speedup_fp32_eager_vs_plain": eager / plain}
    if args.tta_minutes > 0:
        tta = time_to_target(fast, device, args.tta_minutes, args.eval_every)
        result["time_to_94.2"] = tta
        if tta["reached"]:
            say(f"fast setting reached {TARGET:.1%} test all-or-none in {tta['seconds']} s ({tta['steps']} steps)")
        else:
            say(f"fast setting did not reach {TARGET:.1%} within {args.tta_minutes} min "
                f"({tta['steps']} steps, best {tta['best']:.2%})")
    say(f"speedup_vs_plain={quick / plain:.2f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        tag = "gpu" if device.type == "cuda" else "cpu"
        (args.out / f"bench_{tag}_{stamp}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"bench_{tag}_{stamp}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
