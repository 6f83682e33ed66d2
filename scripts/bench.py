"""Benchmark: Signum-Dense sorting training, this suite's trainer vs a plain reference-style loop.

The plain loop is the same model trained the way the authors' reference code (apple/ml-dab,
``main.py`` + ``models/dab.py``) trains it: batches built on the host (NumPy) and copied over, a
``torch.autograd.Function`` whose backward calls ``torch.autograd.grad(soft, x, grad_out,
retain_graph=True)``, the DAB loss taken against that function's (non-detached) output, the
cross-entropy summed over positions, and a ``.item()`` every step. Both loops train the same
maths (reference semantics). Ours: device-side batches, one autograd graph, host syncs only when
logging, in the default setting (fp32 eager) and the fast one (``torch.compile``; on CUDA with
``mode="reduce-overhead"``, i.e. CUDA graphs).

Then time-to-accuracy: the fast setting on ``--tta-experiment`` (+recipe=fast, cosine horizon
``--tta-steps``) until test all-or-none >= ``--tta-target``, and the plain loop (paper recipe:
constant Adam 1e-4) for the same training seconds, with its accuracy then. The last line is
``speedup_vs_plain=X.XX`` (fast setting over plain loop, samples/s).

    python scripts/bench.py --seconds 20 --out results/bench                       # CPU
    python scripts/bench.py --tta-experiment sort_t10 --tta-target 0.942 --tta-minutes 2 \
        --tta-steps 200000 --out results/bench                                     # GPU
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dab.suite.benchmarking import throughput
from dab.suite.experiment import hardware_name, make_lr_factor, resolve_device
from dab.suite.families.sorting import SortingTask, make_sorting_model
from dab.hard_fns import signum_with_margin
from dab.suite.trainer import (compile_forward_loss, evaluate, make_autocast, make_forward_loss, make_optimizer,
                         train_step)

REPO = Path(__file__).resolve().parent.parent


def compose(experiment: str, *overrides: str):
    """The real Hydra config for ``+experiment=<experiment>`` plus overrides."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from dab.suite.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[f"+experiment={experiment}", *overrides])


class _ReferenceSignum(torch.autograd.Function):
    """Reference models/dab.py: forward = hard signum; backward = the approximator's VJP, computed
    with a nested ``autograd.grad`` on the saved soft output."""

    @staticmethod
    def forward(ctx, x, soft, eps):
        ctx.save_for_backward(x, soft)
        return signum_with_margin(x, eps)

    @staticmethod
    def backward(ctx, grad_out):
        x, soft = ctx.saved_tensors
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(soft, x, grad_out, retain_graph=True)
        return grad, None, None


class _ReferenceBridge(nn.Module):
    def __init__(self, approximator: nn.Module, eps: float):
        super().__init__()
        self.approximator, self.eps = approximator, eps

    def forward(self, x):
        self.soft = self.approximator(x)
        self.hard = _ReferenceSignum.apply(x, self.soft, self.eps)
        return self.hard


class PlainLoop:
    """The reference training loop for one sorting config (signum-dense)."""

    def __init__(self, cfg, device: torch.device):
        torch.manual_seed(cfg.seed)
        ours = make_sorting_model(cfg)  # same layers and init; swap in the reference bridge
        (idx,) = [i for i, m in enumerate(ours.net) if hasattr(m, "approximator")]
        self.bridge = _ReferenceBridge(ours.net[idx].approximator, cfg.hard_fn.eps)
        ours.net[idx] = self.bridge
        self.model = ours.to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)  # the paper's recipe
        self.rng = np.random.default_rng(cfg.seed)
        self.T, self.B, self.gamma, self.device = cfg.dataset.length, cfg.dataset.batch_size, cfg.dab.gamma, device

    def step(self) -> float:
        x_np = self.rng.uniform(size=(self.B, self.T)).astype(np.float32)
        x = torch.from_numpy(x_np).to(self.device)
        y = torch.from_numpy(np.argsort(x_np, axis=1)).to(self.device)
        logits = self.model(x)
        ce = nn.functional.cross_entropy(logits.reshape(-1, self.T), y.reshape(-1), reduction="none")
        dab = (self.bridge.soft - self.bridge.hard).pow(2).sum(1)
        loss = (ce.view(-1, self.T).sum(1) + self.gamma * dab).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


class OurLoop:
    """This suite's training step (dab.suite.trainer.train_step) for one config."""

    def __init__(self, cfg, device: torch.device):
        torch.manual_seed(cfg.seed)
        self.task = SortingTask(cfg.dataset.length, cfg.dataset.batch_size, cfg.dataset.test_size,
                                cfg.dataset.test_seed, cfg.seed, device)
        self.model = make_sorting_model(cfg).to(device)
        self.opt = make_optimizer(cfg.optimizer.name, self.model.parameters(), cfg.optimizer.lr,
                                  cfg.optimizer.weight_decay)
        self.autocast = make_autocast(device, cfg.trainer.precision)
        forward_loss = make_forward_loss(self.model, self.task, self.autocast)
        if cfg.trainer.compile:
            forward_loss = compile_forward_loss(forward_loss, device)
        self.forward_loss, self.params = forward_loss, list(self.model.parameters())
        self.lr_factor = make_lr_factor(cfg)
        self.base_lr, self.n = cfg.optimizer.lr, 0

    def step(self) -> torch.Tensor:
        if self.lr_factor is not None:
            for g in self.opt.param_groups:
                g["lr"] = self.base_lr * self.lr_factor(self.n)
        out = train_step(self.forward_loss, self.params, self.opt, self.task.train_batch(self.n), None)[0]
        self.n += 1
        return out


def score(model: nn.Module, task: SortingTask) -> float:
    return evaluate(model, task, make_autocast(task.device, "fp32"))["test/all_or_none"]


def time_to_target(cfg, device: torch.device, target: float, minutes: float, eval_every: int) -> dict:
    """Train the fast setting until test all-or-none >= target; seconds count training only."""
    loop = OurLoop(cfg, device)
    best, train_s = 0.0, 0.0
    while train_s < 60 * minutes and loop.n < cfg.trainer.max_steps:
        t0 = time.perf_counter()
        for _ in range(eval_every):
            out = loop.step()
        float(out)
        train_s += time.perf_counter() - t0
        acc = score(loop.model, loop.task)
        best = max(best, acc)
        if acc >= target:
            return {"reached": True, "seconds": round(train_s, 1), "steps": loop.n, "accuracy": acc}
    return {"reached": False, "seconds": round(train_s, 1), "steps": loop.n, "accuracy": best}


def plain_for(cfg, device: torch.device, seconds: float) -> dict:
    """The plain loop (paper recipe) for ``seconds`` of training, then its test accuracy."""
    loop, steps, t0 = PlainLoop(cfg, device), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loop.step()
        steps += 1
    task = SortingTask(cfg.dataset.length, cfg.dataset.batch_size, cfg.dataset.test_size, cfg.dataset.test_seed,
                       cfg.seed, device)
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": steps, "accuracy": score(loop.model, task)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="sort_t10", help="throughput preset (signum-dense)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per throughput measurement")
    p.add_argument("--tta-experiment", default="sort_t5")
    p.add_argument("--tta-target", type=float, default=0.95)
    p.add_argument("--tta-steps", type=int, default=8000, help="the fast recipe's schedule horizon")
    p.add_argument("--tta-minutes", type=float, default=5.0, help="time-to-accuracy budget (0 skips)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--no-plain-tta", action="store_true", help="skip the plain loop's same-time accuracy")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="write bench_<device>_<time>.json/.txt here")
    args = p.parse_args()

    device = resolve_device(args.device)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    base = compose(args.experiment, f"trainer.device={device.type}")
    fast = compose(args.experiment, f"trainer.device={device.type}", "trainer.compile=true")
    B = base.dataset.batch_size
    fast_name = "torch.compile" + (" reduce-overhead (CUDA graphs)" if device.type == "cuda" else "")
    say(f"device: {hardware_name(device)} | torch {torch.__version__} | {args.experiment} signum-dense, "
        f"batch {B}, {args.seconds:.0f} s per measurement")
    plain = throughput(PlainLoop(base, device).step, B, args.seconds, device)
    say(f"plain reference-style loop (fp32):  {plain:12,.0f} samples/s  {plain / B:8.1f} steps/s")
    eager = throughput(OurLoop(base, device).step, B, args.seconds, device)
    say(f"dab trainer, fp32 eager (default):  {eager:12,.0f} samples/s  {eager / B:8.1f} steps/s  "
        f"({eager / plain:.2f}x plain)")
    quick = throughput(OurLoop(fast, device).step, B, args.seconds, device)
    say(f"dab trainer, fp32 {fast_name}: {quick:12,.0f} samples/s  {quick / B:8.1f} steps/s  "
        f"({quick / plain:.2f}x plain)")
    result = {"device": hardware_name(device), "torch": torch.__version__, "experiment": args.experiment,
              "batch_size": B, "seconds_per_measurement": args.seconds, "plain_samples_per_s": plain,
              "ours_eager_samples_per_s": eager, "ours_fast_samples_per_s": quick,
              "fast_steps_per_s": quick / B, "speedup_eager_vs_plain": eager / plain, "speedup_vs_plain": quick / plain}
    if args.tta_minutes > 0:
        cfg = compose(args.tta_experiment, "+recipe=fast", f"trainer.device={device.type}", "trainer.compile=true",
                      f"trainer.max_steps={args.tta_steps}")
        tta = time_to_target(cfg, device, args.tta_target, args.tta_minutes, args.eval_every)
        result["time_to_accuracy"] = {"experiment": args.tta_experiment, "target": args.tta_target,
                                      "recipe": "fast", "schedule_steps": args.tta_steps, "ours": tta}
        verdict = (f"reached {args.tta_target:.1%} in {tta['seconds']} s ({tta['steps']} steps)" if tta["reached"]
                   else f"did not reach {args.tta_target:.1%} in {tta['seconds']} s ({tta['steps']} steps, "
                        f"best {tta['accuracy']:.2%})")
        say(f"time to accuracy, {args.tta_experiment} +recipe=fast (fast setting): {verdict}")
        if not args.no_plain_tta:
            plain_tta = plain_for(compose(args.tta_experiment, f"trainer.device={device.type}"), device, tta["seconds"])
            result["time_to_accuracy"]["plain_same_seconds"] = plain_tta
            say(f"plain loop (paper recipe) after the same {plain_tta['seconds']} s: {plain_tta['steps']} steps, "
                f"test all-or-none {plain_tta['accuracy']:.2%}")
    say(f"speedup_vs_plain={quick / plain:.2f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        tag = "gpu" if device.type == "cuda" else "cpu"
        (args.out / f"bench_{tag}_{stamp}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"bench_{tag}_{stamp}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
