"""The CPU tier of every comparative artifact, run until each block's ranking settles, in pieces
that can be stopped and continued.

Each spec with a ``cpu:`` block takes part, in the order of ``cpu.priority``::

    cpu:
      priority: 1                      # lower runs first
      only: [vae_fmnist]               # optional: these presets of the spec
      set: {model.widths: "[16,32,32]", dataset.test_size: 2000}   # what makes it affordable
      budget: 1000                     # the first trainer.max_steps; `spec`: each sweep group's
                                       # own trainer budget from the spec, not extended
      cap: 8000                        # the largest
      factor: 2                        # an unsettled block's runs go on to budget x factor, by resume
      eval_every: 250                  # evaluations at the same steps whatever the budget
      blocks: [latent.bpp]             # the keys whose values make a comparison block: a swept key,
                                       # or a config key that the presets set (dataset.length: one
                                       # block per T), read from the run's composed config;
                                       # `column`: the variant label's part before its first '/'
                                       # (the estimator table's columns: one task each)
      metric: [test/ms_ssim, test/linear_acc]   # the rankings the settle rule reads (higher is
                                       # better); a block settles when each of them has
      faster: [trainer.precision=bf16] # optional: used only where scripts/check_settings.py has
                                       # passed it on a full block of this spec (settings_check.csv)
                                       # and the machine can (bf16 needs a CPU with bf16)
      check: all                       # optional: the block on which the campaign itself runs that
                                       # check, before the spec's runs, for each `faster` setting
                                       # with no recorded check (its fp32 side is the block's first
                                       # budget, so it costs only the setting's side)
      checked_on: table2               # optional: use that spec's check instead (the same model
                                       # family and the same `set`; the campaign refuses others)

A block compares the spec's variants (or presets) over seeds; the settle rule is
scripts/renderers/settle.py. The runs of a block go to ``budget``; while the block is not settled,
every run of it continues to ``budget x factor`` by resume (``trainer.resume=auto`` in its own run
directory: bit-identical to an uninterrupted run), up to ``cap``. A group whose steps depend on
``trainer.max_steps`` (a cosine lr, a temperature fitted to the budget, as the authors' VAE code
fits it to its epoch count) is never resumed to a new budget, which would change its maths
mid-run: it is run afresh at each larger budget, in a sibling directory ``seed<N>-steps<budget>``.

After each block: aggregate the spec's runs into ``--results`` (results/cpu), render, record each block's
verdict in ``<results>/campaign.md``, and commit those files (``--commit``), so a stop loses at
most the block in progress. Run directories live under ``--runs-root`` (outside the work tree by
default). A worker that would idle at the end of a round takes a later block's first-round run
expected to end before the round does (``jobs.run_jobs``'s ``fill``). Ctrl-C stops the running jobs
at a step boundary with a checkpoint; the same command continues where it stopped, and first prints
what remains. A spec whose tier ``campaign.md`` records as finished (every block settled, capped, or
run at the spec's budgets) and none of whose runs is under ``--runs-root`` (the campaign continued on
a new machine) is skipped with a line saying so; ``--redo <spec>`` runs it again from the start.
Within a spec that goes on, a block recorded as finished whose runs are all gone from the run root
but present as finished rows in the committed ``<artifact>_runs.csv`` is kept as recorded
(``carried_blocks``: verdict, order, CPU time, CSV rows) and not run again.

    python scripts/campaign.py --dry-run          # the plan and its projected time
    python scripts/campaign.py --commit           # make campaign
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
from argparse import Namespace
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import aggregate  # noqa: E402
import run_artifact  # noqa: E402
from jobs import Job, run_jobs  # noqa: E402
from renderers.common import block_order, hydra_value  # noqa: E402
from renderers.settle import Verdict, orders_by_step, settle  # noqa: E402

from dab.estimators import missing_requirement  # noqa: E402
from dab.suite.checkpoint import comparable  # noqa: E402
from dab.suite.compose import compose_config  # noqa: E402
from dab.suite.families import budget_dependence, parse  # noqa: E402


@dataclass
class Run:
    """One run of a spec's CPU tier: its group in the ranking, its block, and how to launch it."""

    group: str
    block: str
    overrides: list[str]  # without the budget
    run_dir: Path
    trainer: dict  # the spec's own trainer budget for this run (used with ``budget: spec``)


def spec_runs(spec: dict, runs_root: Path) -> list[Run]:
    """Every run of the spec's CPU tier: presets x variants x swept values x seeds, each in a run
    directory named by what it is (stable across budgets and restarts)."""
    cpu = spec["cpu"]
    args = Namespace(only=",".join(cpu["only"]) if cpu.get("only") else None, variants=None, seeds=None, sweep=[],
                     fast=False, set=[f"{k}={hydra_value(v)}" for k, v in (cpu.get("set") or {}).items()])
    seeds, multiruns = run_artifact.plan(spec, args)
    block_keys = list(cpu.get("blocks") or [])
    composed: dict = {}  # the configs block keys are read from, composed once per call
    runs = []
    for m in multiruns:
        keys = list(m.swept)
        for preset, values, seed in itertools.product(m.presets, itertools.product(*m.swept.values()), seeds):
            swept = dict(zip(keys, values))
            others = [f"{k}={v}" for k, v in swept.items() if k not in block_keys]
            group = " ".join([m.variant or preset, *others])
            budget = {k: v for k, v in m.budget.items() if not k.startswith("trainer.")}  # the campaign sets those
            overrides = [f"+experiment={preset}", *(f"{k}={v}" for k, v in m.overrides.items()),
                         *(f"{k}={v}" for k, v in swept.items()), *(f"{k}={v}" for k, v in budget.items()),
                         f"seed={seed}", f"runs_root={runs_root}"]
            block = " ".join(f"column={(m.variant or preset).split('/')[0]}" if k == "column" else
                             f"{k}={swept[k]}" if k in swept else f"{k}={config_value(overrides[:-2], k, composed)}"
                             for k in block_keys) or "all"
            name = [preset, *([m.variant] if m.variant else []), *(f"{k}={v}" for k, v in swept.items())]
            own = {k: v for k, v in m.budget.items() if k.startswith("trainer.")}
            runs.append(Run(group, block, overrides, runs_root / spec["artifact"] / Path(*name) / f"seed{seed}", own))
    return runs


_MISSING = object()


def config_value(overrides: list[str], key: str, composed: dict) -> object:
    """``key`` in the config these overrides compose (a block key that a preset sets, not swept);
    ``composed`` caches the configs by overrides."""
    cfg = composed.get(tuple(overrides))
    if cfg is None:
        cfg = composed[tuple(overrides)] = compose_config(list(overrides))
    value = OmegaConf.select(cfg, key, default=_MISSING)
    if value is _MISSING:
        raise SystemExit(f"campaign: cpu.blocks: {key!r} is neither a swept key nor in the config of "
                         f"{' '.join(overrides)}")
    return value


def faster_settings(spec_name: str, spec: dict, results: Path, say) -> list[str]:
    """The overrides of ``cpu.faster`` this campaign may use: checked on a full block
    (scripts/check_settings.py) and possible here; each other one is said and left out."""
    from check_settings import passed_settings  # noqa: PLC0415 (it imports this module)

    from dab.suite.step import cpu_supports_bf16  # noqa: PLC0415

    source = spec["cpu"].get("checked_on") or spec_name
    checked, out = passed_settings(results, source), []
    for setting in spec["cpu"].get("faster") or []:
        if setting not in checked:
            say(f"{spec_name}: fp32 eager, not {setting}: no passing check of it"
                + (f" on {source}" if source != spec_name else "") + f" in {results / 'settings_check.csv'}")
        elif "bf16" in setting and not cpu_supports_bf16():
            say(f"{spec_name}: fp32 eager, not {setting}: this CPU has no bf16 support")
        else:
            say(f"{spec_name}: {setting} ({'' if source == spec_name else source + ' '}{checked[setting]})")
            out.append(setting)
    return out


def started_settings(run_dir: Path) -> list[str] | None:
    """The precision and compile flag a started run (its config.yaml saved) runs with, else None."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    t = yaml.safe_load(saved.read_text())["trainer"]
    return [f"trainer.precision={t['precision']}", f"trainer.compile={str(bool(t['compile'])).lower()}"]


def with_settings(runs: list[Run], settings: list[str]) -> list[Run]:
    """The runs with ``settings`` added, except that a run already started keeps the precision and
    compile flag it started with (a resume never changes the arithmetic mid-run), and a run not
    started yet in a block where one has takes that run's: a block is ranked in one setting."""
    started = {r.run_dir: started_settings(r.run_dir) for r in runs}
    block_has = {}
    for r in runs:
        if started[r.run_dir] is not None:
            block_has.setdefault(r.block, started[r.run_dir])
    return [dataclasses.replace(r, overrides=[*r.overrides, *(started[r.run_dir] or block_has.get(r.block) or settings)])
            for r in runs]


def jobs_at(spec: dict, runs: list[Run], steps: int | None) -> list[Job]:
    """The runs' jobs at ``steps`` (evaluating every ``cpu.eval_every``, else at the run's own
    evaluation interval), or, with ``steps`` None (``budget: spec``), each at its own trainer budget
    from the spec."""
    cpu, jobs = spec["cpu"], []
    for r in runs:
        if steps is None:
            budget = [*(f"{k}={v}" for k, v in r.trainer.items()), "trainer.max_minutes=null"]
            at = int(r.trainer["trainer.max_steps"])
        else:  # every cpu.eval_every, or (an extended spec budget) every eval_every of the run's own
            every = cpu.get("eval_every") or r.trainer["trainer.eval_every"]
            budget = [f"trainer.max_steps={steps}", f"trainer.eval_every={every}",
                      f"trainer.ckpt_every={every}", "trainer.max_minutes=null", "trainer.log_every=50"]
            at = steps
        jobs.append(Job(f"{r.group} | {r.block} | {r.run_dir.name}", [*r.overrides, *budget], r.run_dir, at))
    return jobs


VOLATILE = ("runs_root=", "trainer.progress=", "trainer.resume=", "hydra.")  # change nothing a run computes
COPIED = "copied_from.txt"  # in a run directory copied from an identical run of another spec


def identity(overrides: list[str]) -> frozenset[str]:
    """A run's train.py overrides less those that change nothing in its numbers and less the
    precision and compile flag (a resumed run names them, a fresh one takes them from the config):
    an index of candidates, which ``same_run`` then compares config by config."""
    return frozenset(o for o in overrides if not o.startswith((*VOLATILE, "trainer.precision=", "trainer.compile=")))


NUMBER_KEYS = ("max_steps", "eval_every", "precision", "compile", "threads", "nan_policy")  # trainer keys that matter


def same_run(source: Path, job: Job, threads: int, cpu: str) -> bool:
    """Whether the finished run in ``source`` is the run ``job`` would train: the same config (the
    resume check's comparison, ``comparable``), the same trainer keys that change its numbers
    (budget, evaluations, precision, compile flag, threads), finished at the job's budget on this
    CPU (``cpu``: its model name)."""
    try:
        m = json.loads((source / "metrics.json").read_text())
        saved = yaml.safe_load((source / "config.yaml").read_text()) or {}
    except (OSError, ValueError):
        return False
    if (m.get("status") != "finished" or m.get("train/steps") != job.max_steps
            or m.get("device") != f"{cpu} ({threads} threads)"):
        return False
    mine = parse(compose_config([*(o for o in job.overrides if not o.startswith(("runs_root=", "hydra."))),
                                 f"trainer.threads={threads}"])).config
    return (comparable(saved) == comparable(mine)
            and all(saved.get("trainer", {}).get(k) == mine["trainer"].get(k) for k in NUMBER_KEYS))


def copy_identical(jobs: list[Job], runs_root: Path, threads: int, say) -> int:
    """Copy, rather than train again, each job not started whose identical run (``same_run``: the
    same numbers on this machine) finished under another spec of this run root (Table 1's
    Signum-Dense rows are the estimator ablation's DAB rows). The copy is made under
    ``<runs_root>/.copying`` and renamed into place, so a stop mid-copy leaves no half run; it names
    its source in ``copied_from.txt``. Returns how many it copied."""
    todo = [j for j in jobs if not j.run_dir.exists()]
    staging = runs_root / ".copying"
    shutil.rmtree(staging, ignore_errors=True)  # what a stop mid-copy left
    if not todo:
        return 0
    from dab.suite.experiment import hardware_name  # noqa: PLC0415 (imports torch)

    cpu = hardware_name(torch_cpu()).rsplit(" (", 1)[0]
    donors: dict[frozenset[str], list[Path]] = {}
    for path in sorted(runs_root.glob("*/**/.hydra/overrides.yaml")):
        run_dir = path.parent.parent
        if not (run_dir / COPIED).exists():  # the original, not a copy of it
            donors.setdefault(identity(yaml.safe_load(path.read_text()) or []), []).append(run_dir)
    copied = 0
    for job in todo:
        candidates = donors.get(identity([*job.overrides, f"trainer.threads={threads}"]), [])
        source = next((d for d in candidates if same_run(d, job, threads, cpu)), None)
        if source is None:
            continue
        staging.mkdir(parents=True, exist_ok=True)
        part = staging / job.run_dir.relative_to(runs_root).as_posix().replace("/", "__")
        shutil.copytree(source, part)
        (part / COPIED).write_text(f"{source}\n")
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        part.rename(job.run_dir)
        say(f"  copied {job.label} from {source} (an identical finished run)")
        copied += 1
    shutil.rmtree(staging, ignore_errors=True)
    return copied


def torch_cpu():
    import torch  # noqa: PLC0415 (the campaign itself needs torch only here)

    return torch.device("cpu")


def metrics_of(spec: dict) -> list[str]:
    metric = spec["cpu"]["metric"]
    return [metric] if isinstance(metric, str) else list(metric)


def verdicts(spec: dict, runs: list[Run], upto: int | None = None) -> dict[str, Verdict]:
    """The settle rule per block and metric (key ``block`` for one metric, ``block | metric`` for
    several), on the finished runs' histories up to step ``upto`` (a run an earlier campaign took
    further is read as it stood at this budget); blocks with no finished run are left out."""
    metrics = metrics_of(spec)
    history = []
    for r in runs:
        path = r.run_dir / "metrics.json"
        if path.is_file():
            history += [{**h, "group": r.group, "block": r.block} for h in json.loads(path.read_text())["history"]
                        if upto is None or h["step"] <= upto]
    out = {}
    for metric in metrics:
        orders = orders_by_step(history, metric, lambda h: h["group"], lambda h: h["block"])
        out.update({block if len(metrics) == 1 else f"{block} | {metric}": settle(o) for block, o in orders.items() if o})
    return out


def budget_dependent(runs: list[Run]) -> dict[str, str]:
    """The groups whose steps depend on ``trainer.max_steps``, with the reason; one check per group,
    the seeds and blocks of a group differ in nothing that matters here."""
    out = {}
    for group in dict.fromkeys(r.group for r in runs):
        run = next(r for r in runs if r.group == group)
        cfg = compose_config([o for o in run.overrides if not o.startswith(("runs_root=", "seed="))])
        reason = budget_dependence(parse(cfg))
        if reason is not None:
            out[group] = reason
    return out


def fresh_dir(run_dir: Path, steps: int) -> Path:
    """Where a budget-dependent run is run afresh at ``steps`` beyond the first budget."""
    return run_dir.with_name(f"{run_dir.name}-steps{steps}")


def at_budget(runs: list[Run], steps: int | None, first: int | None, dependent: dict[str, str]) -> list[Run]:
    """The runs as they stand at ``steps``: a budget-dependent group beyond the first budget in its
    own fresh directory (never a resume to the new budget), every other run in its own directory."""
    if steps is None or steps == first:
        return runs
    return [dataclasses.replace(r, run_dir=fresh_dir(r.run_dir, steps)) if r.group in dependent else r for r in runs]


def budgets(first: int, cap: int, factor: float) -> list[int]:
    """The budgets a block goes through: ``first``, x ``factor`` each time, up to ``cap``."""
    out = [first]
    while out[-1] < cap:
        out.append(min(cap, int(out[-1] * factor)))
    return out


def ladder_of(spec: dict, runs: list[Run]) -> list[int] | None:
    """A block's budgets: ``cpu.budget`` steps, x ``cpu.factor`` up to ``cpu.cap``; with ``budget:
    spec``, the block's own spec budget (one for all its runs), x factor up to ``cpu.extend`` times
    it; None for a spec budget not extended."""
    cpu = spec["cpu"]
    factor = float(cpu.get("factor", 2))
    if factor <= 1:
        raise SystemExit(f"campaign: {spec['artifact']}: cpu.factor must be > 1, got {factor}")
    if cpu["budget"] != "spec":
        return budgets(int(cpu["budget"]), int(cpu["cap"]), factor)
    if not cpu.get("extend"):
        return None
    own = sorted({int(r.trainer["trainer.max_steps"]) for r in runs})
    if len(own) != 1:
        raise SystemExit(f"campaign: {spec['artifact']}: cpu.extend needs one spec budget per block, "
                         f"{runs[0].block} has {own}; valid choices: blocks of runs with one trainer.max_steps")
    try:
        extend = float(cpu["extend"])
    except (TypeError, ValueError):
        extend = 0.0
    if extend < 1:
        raise SystemExit(f"campaign: {spec['artifact']}: cpu.extend must be a number >= 1 (how many times the "
                         f"spec's own budget a block may reach), got {cpu['extend']!r}")
    return budgets(own[0], int(own[0] * extend), factor)


def resumed_to(runs: list[Run], dependent: dict[str, str], ladder: list[int]) -> int:
    """The largest budget of ``ladder`` that every resumable run has reached (an earlier campaign
    extended them): a continued campaign ranks the block there, not at the first budget with
    histories that run further; the budget-dependent groups are then read at that budget too."""
    reached = []
    for r in runs:
        if r.group in dependent:
            continue
        path = r.run_dir / "metrics.json"
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        if metrics.get("train/trainable") is False:  # training-free (threshold): done at any budget
            continue
        reached.append(metrics.get("train/steps") or 0)
    if not reached:
        return ladder[0]
    return max([b for b in ladder if b <= min(reached)], default=ladder[0])


def campaign_spec(spec: dict, runs_root: Path, workers: int, threads: int, say, settings: list[str] = (),
                  on_block=None, carried: dict | None = None) -> dict:
    """Run one spec's CPU tier block by block, each to settled or capped (runs not started yet with
    ``settings``), calling ``on_block(status)`` after each block (publish and commit: a stop loses at
    most the block in progress); returns the status per block (and metric). ``carried``: status
    entries of blocks finished on another machine (``carried_blocks``), kept as recorded, not run."""
    cpu = spec["cpu"]
    runs = with_settings(spec_runs(spec, runs_root), list(settings))
    status: dict[str, dict] = dict(carried or {})
    done_elsewhere = {key.split(" | ")[0] for key in status}
    for block in sorted(done_elsewhere):
        say(f"{spec['artifact']} {block}: finished on an earlier machine (results/cpu/campaign.md); its runs' rows "
            "are kept from the committed CSVs, not run again")
    runs = [r for r in runs if r.block not in done_elsewhere]
    blocks = list(dict.fromkeys(r.block for r in runs))
    ladders = {block: ladder_of(spec, [r for r in runs if r.block == block]) for block in blocks}
    dependent: dict[str, str] = {}
    if all(ladder is None for ladder in ladders.values()):  # each group at the spec's own budget, once
        say(f"{spec['artifact']}: not extended beyond the spec's own budgets")
    else:
        dependent = budget_dependent(runs)
    factor = float(cpu.get("factor", 2))
    for group, reason in dependent.items():
        say(f"{spec['artifact']}: {group} is run afresh at each larger budget, not resumed: {reason}")
    worked: set[str] = set()  # blocks some of whose runs ran in this campaign while filling in
    failed_fill: set[Path] = set()  # filled-in runs that failed: left to their own block's turn
    for i, block in enumerate(blocks):
        base = [r for r in runs if r.block == block]
        ladder = ladders[block]
        first, cap = (None, None) if ladder is None else (ladder[0], ladder[-1])
        ran = int(block in worked)
        steps = None if ladder is None else resumed_to(base, dependent, ladder)
        while True:
            mine = at_budget(base, steps, first, dependent)
            say(f"{spec['artifact']} {block}: {len(mine)} runs to {steps or 'the spec budgets of'} steps")
            measured = group_rates(runs)  # this round's own runs: timed only by runs of their group here
            jobs = with_expected(longest_first(jobs_at(spec, mine, steps), mine, measured), mine, measured)
            rates = {**spec_rates(spec), **measured}
            fill = [(later, job) for later in blocks[i + 1:]
                    for job in next_round(spec, runs, later, ladders[later], dependent, rates)
                    if job.run_dir not in failed_fill]
            copy_identical([*jobs, *(job for _, job in fill)], runs_root, threads, say)
            counts = run_jobs(jobs, workers, threads, say=say, fill=[job for _, job in fill]) or {}
            worked |= {later for later, job in fill if job.done()}
            failed_fill |= {job.run_dir for _, job in fill if job.failed}
            ran += counts.get("ran", 0) + counts.get("failed", 0)
            unfinished = sum(not j.done() for j in jobs)
            found = verdicts(spec, mine, steps)
            if not found:
                say(f"  {block}: no finished run to rank")
                break
            if not (all(v.settled for v in found.values()) or steps is None or steps >= cap or unfinished):
                steps = min(cap, int(steps * factor))  # the block goes on, all its metrics with it
                continue
            # the steps the block's runs reached (more than ``steps`` where an earlier campaign extended them)
            reached = max((m["train/steps"] for m in (j.metrics() for j in jobs) if m), default=steps)
            steps = None if steps is None else max(steps, reached)
            for key, v in sorted(found.items()):
                if unfinished:
                    text = f"stopped with {unfinished} unfinished run(s) at {steps or 'the spec budgets'}: {v.text()}"
                elif v.settled:
                    text = v.text()
                elif steps is None:
                    text = f"at the spec's budgets, not extended: {v.text()}"
                else:
                    text = f"capped unsettled at {steps} steps: {v.text()}"
                status[key] = {"verdict": text, "settled": v.settled, "step": v.step, "budget": steps, "order": v.order,
                               "runs": [str(r.run_dir) for r in mine]}  # what publish() aggregates
                say(f"  {key}: {text}")
            break
        # a block a continued campaign found finished was published then: publishing it again alone
        # would commit the tier without the blocks after it, until those are read in turn
        if on_block is not None and (ran or block == blocks[-1]):
            on_block(status)
    if on_block is not None and not blocks and status:  # every block carried: publish them here
        on_block(status)
    return status


def status_sections(path: Path) -> dict[str, str]:
    """``campaign.md``'s sections by spec name ({} when there is no such file)."""
    if not path.is_file():
        return {}
    return {part.split("\n", 1)[0].strip(): "## " + part.rstrip() for part in path.read_text().split("\n## ")[1:]}


def published(results: Path, name: str, spec: dict, runs: list[Run]) -> list[str] | None:
    """The verdicts ``<results>/campaign.md`` records for the spec's blocks when its tier ran to its
    end under the present plan, on this machine or another: the section names the plan's number of
    runs, has a row for every block of it (a block is published as it ends: a section may hold
    the first blocks alone), and every verdict is final (settled, capped, or run at the spec's
    budgets; not "stopped with unfinished runs"). None otherwise."""
    section = status_sections(results / "campaign.md").get(name)
    if section is None or f"; {len(runs)} runs, " not in section:
        return None
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in section.splitlines() if line.startswith("| ")][1:]  # past the header row
    if any(len(c) < 2 for c in cells):
        return None
    suffixes = tuple(f", {m}" for m in metrics_of(spec))
    recorded = {c[0][:-len(next(x for x in suffixes if c[0].endswith(x)))] if c[0].endswith(suffixes) else c[0]
                for c in cells}
    found = [c[1] for c in cells]
    planned = {r.block.replace(" | ", ", ") for r in runs}
    if recorded != planned or any(v.startswith("stopped with") for v in found):
        return None
    return found


HOURS = re.compile(r"^(?:([0-9.]+)(?: \(\+(\d+) copied\))?|counted with (.+))$")  # campaign.md's CPU-hours cell


def carried_blocks(results: Path, name: str, spec: dict, runs: list[Run], runs_root: Path) -> dict[str, dict]:
    """The blocks of the spec that ``<results>/campaign.md`` records as finished (settled, capped,
    or run at the spec's budgets) under the block's present plan, none of whose runs is under this
    run root: the campaign went on on a new machine after those blocks were published. The block's
    plan is the same when the groups of its recorded order are its planned groups and the finished
    rows of the committed ``<artifact>_runs.csv`` in its runs' folders are its planned runs, one
    each (a seed added or dropped, a variant added or dropped: not carried). Other blocks may have
    been added to the spec since. Their status entries as recorded (verdict, order), with
    ``carried`` (the rows' run directories, relative to the run root) and ``hours``/``copied`` (the
    recorded CPU time; where the record predates per-block times, the section's total, when every
    block it records is carried). {} when nothing can be carried."""
    section = status_sections(results / "campaign.md").get(name)
    if section is None:
        return {}
    header = section.split("\n| ", 1)[0]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in section.splitlines() if line.startswith("| ")][1:]
    metrics = metrics_of(spec)
    rows_csv, _ = aggregate.read_csv(results / f"{spec['artifact']}_runs.csv")
    finished = {r["run_dir"] for r in rows_csv if r.get("status") == "finished"}
    out: dict[str, dict] = {}
    for c in cells:
        if len(c) < 3 or c[1].startswith("stopped with"):
            continue
        block, metric = c[0], None
        for m in metrics:
            if len(metrics) > 1 and c[0].endswith(f", {m}"):
                block, metric = c[0][:-len(f", {m}")], m
        block = next((b for b in dict.fromkeys(r.block for r in runs) if b.replace(" | ", ", ") == block), None)
        mine = [r for r in runs if r.block == block]
        order = [tuple(t.split(" ~ ")) for t in c[2].split(" > ")] if c[2] else []
        if block is None or started(mine) or {g for t in order for g in t} != {r.group for r in mine}:
            continue
        planned = [r.run_dir.relative_to(runs_root).as_posix() for r in mine]
        folders = {str(PurePosixPath(rel).parent) for rel in planned}
        there = [d for d in finished if str(PurePosixPath(d).parent) in folders]  # these runs' rows and any others
        dirs = [[d for d in there if d == rel or d.startswith(f"{rel}-steps")] for rel in planned]
        if any(len(d) != 1 for d in dirs) or len(there) != len(planned):
            continue
        dirs = [d[0] for d in dirs]
        hours = HOURS.match(c[3]) if len(c) > 3 else None
        out[block if metric is None else f"{block} | {metric}"] = {
            "verdict": c[1], "settled": c[1].startswith("settled"), "order": order, "runs": [], "carried": dirs,
            "hours": None if not hours else 0.0 if hours.group(3) else float(hours.group(1)),
            "copied": int(hours.group(2) or 0) if hours else 0, "with": hours.group(3) if hours else None}
    total = re.search(r" runs, ([0-9.]+) CPU-hours of training", header)
    if out and len(out) == len(cells) and total and all(len(c) == 3 for c in cells):
        # a record from before per-block times, every block of which is carried: the section's total
        # (which counted these blocks' runs) goes with the first block, the others say so
        copied = re.search(r"; (\d+) runs copied", header)
        first = next(iter(out)).split(" | ")[0]
        for key, e in out.items():
            own = key.split(" | ")[0] == first
            e["hours"], e["with"] = (float(total.group(1)), None) if own else (0.0, first)
            e["copied"] = int(copied.group(1)) if copied and own else 0
    return out


def started(runs: list[Run]) -> bool:
    """Whether any run of the spec has a run directory under this run root (fresh reruns included)."""
    return any(r.run_dir.exists() or any(r.run_dir.parent.glob(f"{r.run_dir.name}-steps*")) for r in runs)


def write_status(results: Path, name: str, spec: dict, status: dict, runs: list[Run]) -> Path:
    """``<results>/campaign.md``: one section per spec, its blocks' verdicts, budgets and CPU time."""
    path = results / "campaign.md"
    sections = status_sections(path)

    def spent(mine: list[Run]) -> tuple[float, int]:
        """Training seconds of these runs here (fresh reruns at larger budgets included; a copy of
        another spec's run not counted) and how many were copies."""
        dirs = [d for r in mine for d in (r.run_dir, *r.run_dir.parent.glob(f"{r.run_dir.name}-steps*"))]
        return (sum(json.loads((d / "metrics.json").read_text())["wall_seconds"]
                    for d in dirs if (d / "metrics.json").is_file() and not (d / COPIED).exists()),
                sum((d / COPIED).exists() for d in dirs))

    elsewhere = {key.split(" | ")[0]: s for key, s in status.items() if "carried" in s}  # one entry per block
    seconds, copied = spent([r for r in runs if r.block not in elsewhere])
    before = [s["hours"] for s in elsewhere.values()]
    seconds += 3600 * sum(h for h in before if h is not None)
    copied += sum(s["copied"] for s in elsewhere.values())
    carried_runs = sum(len(s["carried"]) for s in elsewhere.values())

    def hours_cell(key: str, s: dict) -> str:
        if "carried" in s:
            h, n = s["hours"], s["copied"]
            return (f"counted with {s['with']}" if s.get("with") else "n/a" if h is None else
                    f"{h:.2f}" + (f" (+{n} copied)" if n else ""))
        t, n = spent([r for r in runs if r.block == key.split(" | ")[0]])
        return f"{t / 3600:.2f}" + (f" (+{n} copied)" if n else "")
    cpu = spec["cpu"]
    plan = (f"budget {cpu['budget']} steps, extended by x{cpu.get('factor', 2)} up to {cpu['cap']} while a block is unsettled"
            if cpu["budget"] != "spec" else "the spec's own step budgets, not extended" if not cpu.get("extend") else
            f"the spec's own step budgets, extended by x{cpu.get('factor', 2)} up to {cpu['extend']} times them while a "
            "block is unsettled")
    lines = [f"## {name}", "", f"{plan[0].upper()}{plan[1:]}; metric {cpu['metric']}; overrides: "
             + (", ".join(f"{k}={hydra_value(v)}" for k, v in (cpu.get("set") or {}).items()) or "none")
             + f"; {len(runs)} runs, {seconds / 3600:.2f} CPU-hours of training (wall_seconds summed"
             + (f"; {copied} runs copied from identical runs of another spec, not counted" if copied else "")
             + (f"; {carried_runs} runs of {len(elsewhere)} block(s) finished on an earlier machine, their rows kept from "
                f"{spec['artifact']}_runs.csv" + (", their CPU time as recorded then" if None not in before else
                                                  ", part of their CPU time not recorded") if elsewhere else "") + ").", "",
             "| block | verdict | order at the last evaluation (best first, ~ tied) | CPU-hours |", "|---|---|---|---|"]
    for block, s in sorted(status.items(), key=lambda kv: (block_order(kv[0].split(" | ")[0]), kv[0])):  # T=5 first
        order = " > ".join(" ~ ".join(t) for t in s["order"])
        lines.append(f"| {block.replace(' | ', ', ')} | {s['verdict']} | {order} | {hours_cell(block, s)} |")
    sections[name] = "\n".join(lines)
    path.write_text("# CPU campaign: where each comparison block settled\n\nWritten by scripts/campaign.py; the "
                    "settle rule is scripts/renderers/settle.py.\n\n" + "\n\n".join(sections.values()) + "\n")
    return path


def publish(spec: dict, runs_root: Path, results: Path, commit: bool, say, status: dict | None = None) -> None:
    """Aggregate, render and (with ``commit``) commit the spec's results: with ``status``, the runs of
    its finished blocks alone, each at the budget it finished at (a block still running, or runs
    being extended to a larger budget, stay out of the committed tables until their block ends)."""
    only = None if status is None else {d for s in status.values() for d in s.get("runs", ())}
    carry = {d for s in (status or {}).values() for d in s.get("carried", ())}
    if spec.get("fidelity"):  # e.g. the estimator table: each run's gradient fidelity first
        subprocess.run([sys.executable, str(REPO / "scripts" / "gradient_fidelity.py"), str(runs_root / spec["artifact"]),
                        "--spec", str(REPO / "experiments" / f"{spec['artifact']}.yaml")], cwd=REPO, check=True)
    aggregate.aggregate(spec, runs_root, results, only=only, carry=carry)
    for script in ("make_figures.py", "make_report.py"):
        subprocess.run([sys.executable, str(REPO / "scripts" / script), "--results", str(results.parent)],
                       cwd=REPO, check=True, capture_output=True)
    if commit:
        paths = [str(results), str(REPO / "results" / "REPORT.md")]
        subprocess.run(["git", "add", "--", *paths], cwd=REPO, check=True)
        # these paths alone: whatever else is staged in the work tree stays out of the campaign's commit
        done = subprocess.run(["git", "commit", "-q", "-m", f"CPU campaign: {spec['artifact']} aggregated and rendered "
                               "(scripts/campaign.py; verdicts in results/cpu/campaign.md)", "--", *paths], cwd=REPO)
        say("committed" if done.returncode == 0 else "nothing new to commit")


def group_rates(runs: list[Run]) -> dict[str, float]:
    """{group: seconds per training step} over the group's finished runs (evaluations included),
    at every budget they ran at (a budget-dependent group's fresh reruns too)."""
    seconds, steps = Counter(), Counter()
    for r in runs:
        for d in (r.run_dir, *r.run_dir.parent.glob(f"{r.run_dir.name}-steps*")):
            m = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
            if m.get("train/steps") and m.get("wall_seconds"):
                seconds[r.group] += m["wall_seconds"]
                steps[r.group] += m["train/steps"]
    return {g: seconds[g] / steps[g] for g in steps}


def longest_first(jobs: list[Job], runs: list[Run], rates: dict[str, float]) -> list[Job]:
    """The jobs (one per run, in the runs' order) with the longest expected time left first, at
    their group's step rate (an unknown group at the mean rate; none known: as given): a slow row
    started last would run on alone while the other worker idles."""
    if not rates:
        return jobs
    pooled = sum(rates.values()) / len(rates)

    def left(pair: tuple[Job, Run]) -> float:
        job, run = pair
        steps = ((m := job.metrics()) and m.get("train/steps")) or 0
        return -max(0, job.max_steps - steps) * rates.get(run.group, pooled)

    return [job for job, _ in sorted(zip(jobs, runs), key=left)]


def spec_rates(spec: dict) -> dict[str, float]:
    """{group: seconds per step} from the spec's CPU ``measured_speed`` entries, the slowest per
    group: a cautious guess of how long a run with no finished run of its group takes."""
    out: dict[str, float] = {}
    for entry in spec.get("measured_speed") or ():
        if any(word in str(entry.get("where", "")) for word in ("GPU", "NVIDIA")):
            continue
        for group, speed in (entry.get("steps_per_second") or {}).items():
            if speed:
                out[group] = max(out.get(group, 0.0), 1.0 / float(speed))
    return out


def with_expected(jobs: list[Job], runs: list[Run], rates: dict[str, float]) -> list[Job]:
    """The jobs (one per run, in the runs' order) with the seconds each should take from where it
    stands, at its group's rate (None for a group of unknown rate)."""
    by_dir = {r.run_dir: r for r in runs}
    out = []
    for job in jobs:
        rate = rates.get(by_dir[job.run_dir].group)
        steps = ((m := job.metrics()) and m.get("train/steps")) or 0
        out.append(dataclasses.replace(job, expected=None if rate is None else max(0, job.max_steps - steps) * rate))
    return out


def next_round(spec: dict, runs: list[Run], block: str, ladder: list[int] | None, dependent: dict[str, str],
               rates: dict[str, float]) -> list[Job]:
    """The jobs a block's turn starts with (its first budget, or where an earlier campaign took it),
    not done yet, with their expected times: what may fill a worker idle at the end of an earlier
    block's round."""
    base = [r for r in runs if r.block == block]
    steps = None if ladder is None else resumed_to(base, dependent, ladder)
    mine = at_budget(base, steps, None if ladder is None else ladder[0], dependent)
    return [j for j in with_expected(longest_first(jobs_at(spec, mine, steps), mine, rates), mine, rates) if not j.done()]


def remaining(spec: dict, runs: list[Run], workers: int) -> str:
    """What is left of the spec at its first budget, and how long that takes at the speed of each
    group's finished runs (seconds per step, evaluations included; a group with none at the speed
    of all finished runs), ``workers`` at a time; for an extended tier also the most it can take:
    every block to its cap, a budget-dependent group run afresh at every budget of the ladder."""
    cpu = spec["cpu"]
    budget = None if cpu["budget"] == "spec" else int(cpu["budget"])
    jobs = jobs_at(spec, runs, budget)
    left = Counter()
    for r, j in zip(runs, jobs):
        if not j.done():
            left[r.group] += j.max_steps - ((m := j.metrics()) and m.get("train/steps") or 0)
    text = f"{sum(not j.done() for j in jobs)} not yet at " + (
        f"the first budget of {budget} steps (cap {cpu['cap']})" if budget is not None else "the spec's budgets"
        + (f" (cap {cpu['extend']} times them)" if cpu.get("extend") else ""))
    worst = steps_to_cap(spec, runs, by_group=True) if budget is not None or cpu.get("extend") else Counter()
    if not sum(left.values()) and not sum(worst.values()):
        return text
    rates = group_rates(runs)
    if not rates:
        return text + "; no finished run yet to time them by"
    pooled = sum(rates.values()) / len(rates)
    hours = lambda steps: sum(n * rates.get(g, pooled) for g, n in steps.items()) / workers / 3600  # noqa: E731
    fast, slow = min(rates, key=rates.get), max(rates, key=rates.get)
    speed = (f"{1 / rates[fast]:.1f} steps/s per run" if fast == slow else
             f"{1 / rates[slow]:.1f} ({slow}) to {1 / rates[fast]:.1f} ({fast}) steps/s per run")
    text += f"; about {hours(left):.1f} h at {speed}, {workers} at once"
    return text + (f"; at most {hours(worst):.1f} h more if every block runs to its cap" if sum(worst.values()) else "")


def steps_to_cap(spec: dict, runs: list[Run], by_group: bool = False) -> int | Counter:
    """The training steps left if every block of an extended tier ran to its cap (with
    ``by_group``, per group); none for a block already settled at a budget all its runs finished."""
    ladders = {b: ladder_of(spec, [r for r in runs if r.block == b]) for b in dict.fromkeys(r.block for r in runs)}
    dependent = budget_dependent(runs)
    for block, ladder in ladders.items():
        base = [r for r in runs if r.block == block]
        for b in ladder or ():
            mine = at_budget(base, b, ladder[0], dependent)
            if not all(j.done() for j in jobs_at(spec, mine, b)):
                break
            found = verdicts(spec, mine, b)
            if found and all(v.settled for v in found.values()):
                ladders[block] = None  # the campaign stops this block here
                break

    def reached(run_dir: Path) -> tuple[int, bool]:
        path = run_dir / "metrics.json"
        m = json.loads(path.read_text()) if path.is_file() else {}
        return m.get("train/steps") or 0, m.get("train/trainable") is not False

    left = Counter()
    for r in runs:
        steps, trainable = reached(r.run_dir)
        ladder = ladders[r.block]
        if not trainable or ladder is None:
            continue
        if r.group not in dependent:
            left[r.group] += max(0, ladder[-1] - steps)
            continue
        for b in ladder:  # afresh at each budget, each in its own directory
            left[r.group] += max(0, b - reached(at_budget([r], b, ladder[0], dependent)[0].run_dir)[0])
    return left if by_group else sum(left.values())


CPU_KEYS = ("priority", "only", "set", "budget", "cap", "extend", "factor", "eval_every", "blocks", "metric",
            "faster", "check", "checked_on")


def specs(experiments: Path, only: list[str] | None) -> list[tuple[str, dict]]:
    found = [(p.stem, yaml.safe_load(p.read_text())) for p in sorted(experiments.glob("*.yaml"))]
    found = [(n, s) for n, s in found if isinstance(s, dict) and s.get("cpu")]
    if only and (unknown := sorted(set(only) - {n for n, _ in found})):
        raise SystemExit(f"campaign: no spec with a cpu: block named {', '.join(unknown)}; valid choices: "
                         + ", ".join(n for n, _ in found))
    for name, spec in found:
        if bad := sorted(set(spec["cpu"]) - set(CPU_KEYS)):
            raise SystemExit(f"campaign: experiments/{name}.yaml: unknown cpu: key(s) {', '.join(bad)}; valid "
                             f"choices: {', '.join(CPU_KEYS)}")
    names = {n: s for n, s in found}
    for name, spec in found:
        source = spec["cpu"].get("checked_on")
        if source is None:
            continue
        if source not in names or not names[source]["cpu"].get("check"):
            raise SystemExit(f"campaign: experiments/{name}.yaml: cpu.checked_on: {source!r} is no spec whose cpu: "
                             "block has a check; valid choices: "
                             + (", ".join(n for n, s in found if s["cpu"].get("check")) or "none"))
        if (spec["cpu"].get("set") or {}) != (names[source]["cpu"].get("set") or {}):
            raise SystemExit(f"campaign: experiments/{name}.yaml: cpu.checked_on: {source} checks another set-up "
                             f"(cpu.set {names[source]['cpu'].get('set')} vs {spec['cpu'].get('set')})")
    found = [(n, s) for n, s in found if not only or n in only]
    return sorted(found, key=lambda ns: ns[1]["cpu"].get("priority", 99))


def missing_requirements(runs: list[Run]) -> list[str]:
    """What the runs' estimators need beyond the default install and this environment lacks (the
    estimator's own install hint, once per estimator): found before any run starts, not when a
    block's runs fail hours into the campaign."""
    names = sorted({o.split("=", 1)[1] for r in runs for o in r.overrides if o.startswith("dab.estimator=")})
    return [hint for name in names if (hint := missing_requirement(name))]


def pending_checks(name: str, spec: dict, results: Path) -> list[str]:
    """The ``faster`` settings the campaign still has to check on the spec's ``cpu.check`` block:
    those with no recorded check of this spec (passed or failed) that this CPU can run."""
    from check_settings import recorded_settings  # noqa: PLC0415 (it imports this module)

    from dab.suite.step import cpu_supports_bf16  # noqa: PLC0415

    if not spec["cpu"].get("check"):
        return []
    done = recorded_settings(results, name)
    return [s for s in spec["cpu"].get("faster") or [] if s not in done and ("bf16" not in s or cpu_supports_bf16())]


def run_checks(name: str, spec: dict, a: Namespace, runs_root: Path, results: Path, say) -> None:
    """Check each pending ``faster`` setting on the spec's ``cpu.check`` block (scripts/check_settings.py:
    the fp32 side runs in the campaign's own run directories, at the first budget)."""
    import check_settings  # noqa: PLC0415

    for setting in pending_checks(name, spec, results):
        say(f"{name}: checking {setting} on block {spec['cpu']['check']} before the spec's runs")
        code = check_settings.main([name, "--block", spec["cpu"]["check"], "--setting", setting,
                                    "--experiments", str(a.experiments), "--runs-root", str(runs_root),
                                    "--results", str(results), "--workers", str(a.workers), "--threads", str(a.threads)])
        if code == 130:
            raise KeyboardInterrupt
        if code:
            say(f"{name}: the check of {setting} recorded nothing (exit {code}); the next campaign tries it again")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", type=Path, default=REPO / "experiments")
    p.add_argument("--runs-root", type=Path, default=REPO.parent / "dab_runs" / "campaign")
    p.add_argument("--results", type=Path, default=REPO / "results" / "cpu")
    p.add_argument("--only", default=None, help="comma-separated spec names")
    p.add_argument("--workers", type=int, default=2, help="runs at once (make bench's concurrency line: 2 x 1 thread)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--commit", action="store_true", help="git-commit each spec's aggregated results")
    p.add_argument("--no-publish", action="store_true", help="write campaign.md only: no aggregate, render or commit")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--redo", default=None,
                   help="comma-separated spec names to run again although campaign.md records their tier (or some "
                        "of its blocks) as finished and none of their runs is under --runs-root (a new machine, say)")
    a = p.parse_args(argv)
    # Ctrl-C and a kill stop the campaign (even where it was started with SIGINT ignored, as a
    # background job of a non-interactive shell is)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    runs_root, results = a.runs_root.resolve(), a.results.resolve()
    todo = specs(a.experiments, a.only.split(",") if a.only else None)
    redo = a.redo.split(",") if a.redo else []
    if unknown := sorted(set(redo) - {n for n, _ in todo}):
        if a.only and (left_out := [n for n, _ in specs(a.experiments, None) if n in unknown]):
            raise SystemExit(f"campaign: --redo {', '.join(left_out)}: left out by --only {a.only}; name it in --only "
                             f"too, or redo one of: {', '.join(n for n, _ in todo)}")
        raise SystemExit(f"campaign: --redo: unknown spec(s) {', '.join(unknown)}; valid choices: "
                         f"{', '.join(n for n, _ in todo)}")
    kept = []
    for name, spec in todo:
        runs = spec_runs(spec, runs_root)
        done = published(results, name, spec, runs)
        if done and name not in redo and not started(runs):
            print(f"{name}: finished already: {results / 'campaign.md'} records every one of its {len(done)} block "
                  f"verdict(s) as settled or capped, and none of its runs is under {runs_root}; not run again (--redo {name} runs "
                  "it again from the start)")
        else:
            kept.append((name, spec))
    todo = kept
    carried: dict[str, dict] = {}  # spec name -> the status entries of blocks finished on an earlier machine
    for name, spec in todo:
        runs = spec_runs(spec, runs_root)
        blocks = list(dict.fromkeys(r.block for r in runs))
        if spec["cpu"].get("check") and spec["cpu"]["check"] not in blocks:
            raise SystemExit(f"campaign: experiments/{name}.yaml: cpu.check: no block {spec['cpu']['check']!r}; valid "
                             f"choices: {', '.join(blocks)}")
        checks = pending_checks(name, spec, results)
        carried[name] = {} if name in redo else carried_blocks(results, name, spec, runs, runs_root)
        gone = {key.split(" | ")[0] for key in carried[name]}
        print(f"{name}: {len(runs)} runs in {len(blocks)} block(s); "
              + (f"{len(gone)} block(s) finished on an earlier machine, kept from {results / 'campaign.md'}, not run "
                 f"again ({', '.join(sorted(gone))}); " if gone else "")
              + remaining(spec, [r for r in runs if r.block not in gone], a.workers)
              + "".join(f"; first checks {s} on block {spec['cpu']['check']} ("
                        f"{sum(r.block == spec['cpu']['check'] for r in runs)} runs more at the first budget)"
                        for s in checks))
    missing: dict[str, str] = {}  # install hint -> the first spec that needs it
    for name, spec in todo:
        for hint in missing_requirements(spec_runs(spec, runs_root)):
            missing.setdefault(hint, name)
    if missing:
        others = [n for n, _ in todo if n not in missing.values()]
        print("campaign: cannot start, nothing was run: "
              + "; ".join(f"experiments/{n}.yaml: {hint}" for hint, n in missing.items())
              + (f". Or leave it out: --only {','.join(others)}" if others else ""), file=sys.stderr)
        return 2
    if a.dry_run:
        return 0
    try:
        for name, spec in todo:
            run_checks(name, spec, a, runs_root, results, print)
            settings = faster_settings(name, spec, results, print)

            def after_block(status: dict, name: str = name, spec: dict = spec) -> None:
                results.mkdir(parents=True, exist_ok=True)
                write_status(results, name, spec, status, spec_runs(spec, runs_root))
                if not a.no_publish:
                    publish(spec, runs_root, results, a.commit, print, status)

            campaign_spec(spec, runs_root, a.workers, a.threads, print, settings, on_block=after_block,
                          carried=carried[name])
    except KeyboardInterrupt:
        print("campaign stopped: every run saved a checkpoint; run the same command to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
