"""Benchmark: Signum-Dense sorting training, this suite's trainer vs a plain reference-style loop.

Both loops start from the real preset (``--experiment``, composed with Hydra) built by
``dab.suite.step.build_run``: same layers, same initial weights. Ours times ``run.step(i)``, the
trainer's own step. The plain loop is the same model trained the way the authors' reference code (apple/ml-dab,
``main.py`` + ``models/dab.py``) trains it: batches built on the host (NumPy) and copied over, a
``torch.autograd.Function`` whose backward calls ``torch.autograd.grad(soft, x, grad_out,
retain_graph=True)``, the DAB loss taken against that function's (non-detached) output, the
cross-entropy summed over positions, and a ``.item()`` every step. Both loops train the same
maths (reference semantics). Ours: device-side batches, one autograd graph, no host sync, in the
preset's setting (fp32 eager) and with ``trainer.compile=true`` (on CUDA ``mode="reduce-overhead"``,
i.e. CUDA graphs).

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
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dab/

from dab.bridge import Bridge  # noqa: E402
from dab.hard_fns import signum_with_margin  # noqa: E402
from dab.suite.benchmarking import throughput  # noqa: E402
from dab.suite.compose import compose_config  # noqa: E402
from dab.suite.experiment import hardware_name, resolve_device  # noqa: E402
from dab.suite.step import Run, build_run  # noqa: E402
from dab.suite.trainer import evaluate, train  # noqa: E402


def compose(experiment: str, device: torch.device, *overrides: str):
    """The real config of ``+experiment=<experiment>`` on ``device``, plus overrides."""
    return compose_config([f"+experiment={experiment}", f"trainer.device={device.type}", *overrides])


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
    """The reference training loop for one signum-dense sorting config: the run's own model (same
    layers and initial weights as ours) with the reference bridge swapped in."""

    def __init__(self, cfg, device: torch.device):
        if cfg.hard_fn.name != "signum" or cfg.model.name != "dense":
            raise SystemExit(f"the plain loop re-implements signum-dense only, not {cfg.hard_fn.name}-{cfg.model.name}")
        run = build_run(cfg, device)
        self.model, self.task = run.model, run.task  # the task only scores: the loop makes its own batches
        (idx,) = [i for i, m in enumerate(self.model.net) if isinstance(m, Bridge)]
        self.bridge = _ReferenceBridge(self.model.net[idx].approximator, cfg.hard_fn.eps)
        self.model.net[idx] = self.bridge
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optimizer.lr)  # constant, as the reference
        self.rng = np.random.default_rng(cfg.seed)
        self.T, self.B, self.gamma, self.device = cfg.dataset.length, cfg.dataset.batch_size, cfg.dab.gamma, device

    def step(self, _index: int) -> float:
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


def loop_throughput(cfg, device: torch.device, seconds: float) -> float:
    """Samples per second of the trainer's own loop (``dab.suite.trainer.train``: the step, the
    loss bookkeeping, the progress bar, logging every ``trainer.log_every`` steps) over about
    ``seconds`` of training, its one evaluation and checkpoint at the end not counted."""
    run = build_run(cfg, device)
    for i in range(15):  # warm-up, as throughput() does
        run.step(i)
    t = cfg.trainer
    budget = type("Budget", (), dict(max_steps=10**9, max_minutes=seconds / 60, eval_every=10**9,
                                       log_every=t.log_every, ckpt_every=10**9, progress=False))
    with tempfile.TemporaryDirectory() as out:
        state = train(run.step, budget, Path(out), {"run_name": "bench"})
    return state.step * cfg.dataset.batch_size / (state.train_seconds - state.eval_seconds)


def score(model: nn.Module, task) -> float:
    """Test all-or-none accuracy (fp32)."""
    return evaluate(model, task, contextlib.nullcontext)["test/all_or_none"]


def time_to_target(cfg, device: torch.device, target: float, minutes: float, eval_every: int) -> dict:
    """Train ``cfg`` (ours) until test all-or-none >= target; seconds count the training steps,
    the first one's compilation included, and not the evaluations."""
    run: Run = build_run(cfg, device)
    step, best, train_s = 0, 0.0, 0.0
    while train_s < 60 * minutes and step < cfg.trainer.max_steps:
        t0 = time.perf_counter()
        for _ in range(min(eval_every, cfg.trainer.max_steps - step)):
            out = run.step(step)
            step += 1
        float(out.task_loss)  # wait for the device before reading the clock
        train_s += time.perf_counter() - t0
        acc = score(run.model, run.task)
        best = max(best, acc)
        if acc >= target:
            return {"reached": True, "seconds": round(train_s, 1), "steps": step, "accuracy": acc}
    return {"reached": False, "seconds": round(train_s, 1), "steps": step, "accuracy": best}


def plain_for(cfg, device: torch.device, seconds: float) -> dict:
    """The plain loop (``cfg``'s recipe) for ``seconds`` of training, then its test accuracy."""
    loop, steps, t0 = PlainLoop(cfg, device), 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loop.step(steps)
        steps += 1
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": steps, "accuracy": score(loop.model, loop.task)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default="sort_t10", help="throughput preset (signum-dense)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per throughput measurement")
    p.add_argument("--repeats", type=int, default=5, help="rounds of alternating plain/ours measurements; medians reported")
    p.add_argument("--tta-experiment", default="sort_t5")
    p.add_argument("--tta-target", type=float, default=0.95)
    p.add_argument("--tta-steps", type=int, default=8000, help="the fast recipe's schedule horizon")
    p.add_argument("--tta-minutes", type=float, default=5.0, help="time-to-accuracy budget (0 skips)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--no-plain-tta", action="store_true", help="skip the plain loop's same-time accuracy")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="write bench_<device>_<time>.json/.txt here")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    base = compose(args.experiment, device)
    fast = compose(args.experiment, device, "trainer.compile=true")
    B = base.dataset.batch_size
    fast_name = "torch.compile" + (" reduce-overhead (CUDA graphs)" if device.type == "cuda" else "")
    say(f"device: {hardware_name(device)} | torch {torch.__version__} | {args.experiment} signum-dense, "
        f"batch {B}, {args.seconds:.0f} s per measurement")
    # alternating, so that a drift of the machine (clock, another process) hits every variant alike
    plain_loop, ours = PlainLoop(base, device), build_run(base, device)
    rates = {"plain": [], "step": [], "loop": []}
    for _ in range(args.repeats):
        rates["plain"].append(throughput(plain_loop.step, B, args.seconds, device))
        rates["step"].append(throughput(ours.step, B, args.seconds, device))
        rates["loop"].append(loop_throughput(base, device, args.seconds))
    plain, eager, loop = (statistics.median(rates[k]) for k in ("plain", "step", "loop"))
    # the ratio of each round's neighbouring measurements, then their median: a drift of the machine
    # between rounds cancels out of each ratio
    ratio = {k: statistics.median(o / p for o, p in zip(rates[k], rates["plain"])) for k in ("step", "loop")}
    each = {k: ", ".join(f"{v / B:.1f}" for v in vs) for k, vs in rates.items()}
    say(f"plain reference-style loop (fp32):  {plain:12,.0f} samples/s  {plain / B:8.1f} steps/s  "
        f"(median of {args.repeats}: {each['plain']})")
    say(f"dab trainer step, fp32 eager:       {eager:12,.0f} samples/s  {eager / B:8.1f} steps/s  "
        f"({ratio['step']:.2f}x plain, median of the rounds' ratios; {each['step']})")
    say(f"dab trainer loop, fp32 eager:       {loop:12,.0f} samples/s  {loop / B:8.1f} steps/s  "
        f"({ratio['loop']:.2f}x plain, median of the rounds' ratios; {each['loop']})")
    quick = throughput(build_run(fast, device).step, B, args.seconds, device)
    say(f"dab trainer, fp32 {fast_name}: {quick:12,.0f} samples/s  {quick / B:8.1f} steps/s  "
        f"({quick / plain:.2f}x plain)")
    result = {"device": hardware_name(device), "torch": torch.__version__, "experiment": args.experiment,
              "batch_size": B, "seconds_per_measurement": args.seconds, "plain_samples_per_s": plain,
              "ours_eager_samples_per_s": eager, "ours_loop_samples_per_s": loop, "ours_fast_samples_per_s": quick,
              "repeats": args.repeats, "samples_per_s_each": rates, "speedup_loop_vs_plain": ratio["loop"],
              "fast_steps_per_s": quick / B, "speedup_eager_vs_plain": ratio["step"], "speedup_vs_plain": quick / plain}
    if args.tta_minutes > 0:
        cfg = compose(args.tta_experiment, device, "+recipe=fast", "trainer.compile=true",
                      f"trainer.max_steps={args.tta_steps}")
        tta = time_to_target(cfg, device, args.tta_target, args.tta_minutes, args.eval_every)
        result["time_to_accuracy"] = {"experiment": args.tta_experiment, "target": args.tta_target,
                                      "recipe": "fast", "schedule_steps": args.tta_steps, "ours": tta}
        verdict = (f"reached {args.tta_target:.1%} in {tta['seconds']} s ({tta['steps']} steps)" if tta["reached"]
                   else f"did not reach {args.tta_target:.1%} in {tta['seconds']} s ({tta['steps']} steps, "
                        f"best {tta['accuracy']:.2%})")
        say(f"time to accuracy, {args.tta_experiment} +recipe=fast (fast setting): {verdict}")
        if not args.no_plain_tta:
            plain_tta = plain_for(compose(args.tta_experiment, device), device, tta["seconds"])
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
    return result


if __name__ == "__main__":
    main()
