"""Write results/REPORT.md: one page over every paper artifact in experiments/*.yaml and every
hardware tier under results/ (the folder itself and each folder below it that holds an
<artifact>_runs.csv: results/gpu, results/cpu, ...), readable in a minute: an overview with one
short verdict per artifact, then per artifact each tier's runs, verdict and numbers beside the
paper's.

Numbers come from the tiers' <artifact>_runs.csv and <artifact>_history.csv (scripts/aggregate.py)
and nothing else, so the report needs no run directories. A renderer (renderers/<render>.py) may
offer, for the report:
- ``report_rows(spec, rows) -> list[ReportRow]``: the side-by-side lines, in the paper's unit
  (accuracies in %); otherwise the report shows the spec's metric per cell;
- ``superseded(spec, rows) -> str | None``: why these runs come from a superseded set-up ('flatten
  head: ...'); such a tier is left out of the overview's verdict and marked superseded below;
- ``ranked_blocks(spec, rows) -> list[Ranking]``: the rankings of its history, from which the
  report states per block whether it settled (renderers/settle.py).

The verdict, per tier: a spec's hand-written ``verdicts`` entry is shown only when that tier's runs
are the ones it was written about (its ``about``: hardware, step budget, number of finished runs and
the overrides beyond the spec all match). Otherwise the report computes one from the numbers
beside it, labelled as computed (per cell: ours minus the paper, and whether that gap exceeds our
seed std plus the paper's), or says that it has no verdict for these runs. Computed, whatever the
verdict: a cell whose runs stopped before their step budget (steps < max_steps: a max_minutes cap)
is not compared with the paper, only said to have stopped; a ranking is called settled only where
the settle rule says so. The overview shows a verdict's headline: its ``short`` where the entry has
one, else its text up to the first ':', ' (' or ';'.

A user's own runs live in results/local (the Makefile's RESULTS): ``--results results`` leaves them
out; ``--results results/local`` writes results/local/REPORT.md with them beside the committed tiers
of results/, labelled as not committed.

    scripts/make_report.py [--experiments experiments] [--results results]
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from renderers.common import (LOCAL_TIER, ReportRow, claim_outcomes, compare, coverage, distinct, finished, fmt_paper,  # noqa: E402
                              hydra_value, load_rows, planned_seeds, read_history, report_row, row_cell, same_value,
                              setting_overrides, span, stopped_early, stopped_text, tier_dirs)
from renderers.settle import Verdict, block_verdicts, order_text  # noqa: E402

ABOUT_KEYS = ("hardware", "max_steps", "runs", "overrides")
ENTRY_KEYS = ("about", "text", "short")
SPREAD_RULE = "a gap exceeds the seed spread when it is larger than our sample std plus the paper's std"
SETTLE_RULE = ("the order of the means over seeds, ties within the pooled seed spread, the same at every evaluation "
               "over at least the last 30% of the run; scripts/renderers/settle.py")


class SpecError(ValueError):
    pass


def headline(text: str) -> str:
    """A verdict's opening words: up to the first ':', ' (' or ';' ('differs, and not settled')."""
    return re.split(r":|\s\(|;", text, maxsplit=1)[0].strip()


def counts(spec: dict, rows: list[dict]) -> str:
    """'finished / failed / missing of planned' over the spec's cells."""
    c = count_totals(spec, rows)
    return f"{c['finished']} / {c['failed']} / {c['missing']} of {c['planned']}"


def count_totals(spec: dict, rows: list[dict]) -> dict[str, int]:
    cells = coverage(spec, rows)
    return {k: sum(cell[k] for cell in cells) for k in ("finished", "failed", "missing", "planned")}


def spec_steps(spec: dict) -> str | None:
    """The spec's trainer.max_steps, as Hydra spells it; None where its budget sets none."""
    steps = (spec.get("budget") or {}).get("trainer.max_steps")
    return None if steps is None else hydra_value(steps)


def budget_text(spec: dict, rows: list[dict]) -> str:
    """The budget the runs set (with the spec's where it differs) and what they used."""
    text = f"max_steps {distinct(rows, 'max_steps')}, max_minutes {distinct(rows, 'max_minutes')}"
    planned = {k.split(".")[-1]: hydra_value(v) for k, v in (spec.get("budget") or {}).items()
               if k in ("trainer.max_steps", "trainer.max_minutes")}
    differs = [k for k, v in planned.items() if distinct(rows, k) != v]
    if differs:
        text += f" (spec: {', '.join(f'{k} {planned[k]}' for k in differs)})"
    minutes = [r["wall_seconds"] / 60 for r in rows if r.get("wall_seconds") is not None]
    return text + f"; ran {span([r['steps'] for r in rows])} steps, {span(minutes, '{:.1f}')} min per run"


def steps_text(spec: dict, rows: list[dict]) -> str:
    """'300 steps (spec 39000)': the steps the trained runs reached (a training-free run has 0)."""
    trained = [r for r in rows if r.get("steps")] or rows
    reached, budget = span([r["steps"] for r in trained]), distinct(trained, "max_steps")
    text = f"{reached} steps" if reached == budget or stopped_text(trained) is None else f"{reached} of {budget} steps"
    planned = spec_steps(spec)
    return text + (f" (spec {planned})" if planned is not None and budget != planned else "")


def paper_short(spec: dict) -> str:
    """'Table 1', 'Figure 6 left', 'not in the paper': where in the paper, in a few words."""
    source = spec["source"].split(";")[0]
    return source.rsplit(", ", 1)[-1] if source.startswith("dab-paper") else source


# ---- which runs a verdict is about ----

def hand_verdicts(spec: dict) -> list[dict]:
    """The spec's ``verdicts`` after checking that each says which runs it is about."""
    if "verdict" in spec:
        raise SpecError("`verdict:` is replaced by `verdicts:`, a list of {about: {hardware, max_steps, runs, "
                        "overrides}, text: ...} (experiments/README.md)")
    entries = spec.get("verdicts") or []
    for i, entry in enumerate(entries):
        about = entry.get("about") if isinstance(entry, dict) else None
        if not isinstance(about, dict) or not isinstance(entry.get("text"), str):
            raise SpecError(f"verdicts[{i}]: needs `about:` (the runs it describes) and `text:`")
        extra = [k for k in entry if k not in ENTRY_KEYS]
        if extra:
            raise SpecError(f"verdicts[{i}]: unknown {', '.join(extra)}; valid keys: {', '.join(ENTRY_KEYS)}")
        missing = [k for k in ABOUT_KEYS if k not in about]
        unknown = [k for k in about if k not in ABOUT_KEYS]
        if missing or unknown:
            raise SpecError(f"verdicts[{i}].about: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else []) +
                ([f"unknown {', '.join(unknown)}"] if unknown else [])) + f"; valid keys: {', '.join(ABOUT_KEYS)}")
    return entries


def run_facts(spec: dict, rows: list[dict]) -> dict:
    """What a verdict must match, over the finished runs: their devices, max_steps values, count,
    and the non-budget overrides beyond the spec (None when a command was not recorded)."""
    done = finished(rows)
    return {"hardware": sorted({str(r.get("device")) for r in done}),
            "max_steps": sorted({r.get("max_steps") for r in done}, key=str),
            "runs": len(done),
            "overrides": setting_overrides(spec, done)}


def matches(about: dict, facts: dict) -> bool:
    """Whether the runs are those a verdict was written about: every device names ``hardware``
    (case-insensitive), the max_steps values, the run count and the overrides are all equal."""
    steps = about["max_steps"] if isinstance(about["max_steps"], list) else [about["max_steps"]]
    return (bool(facts["hardware"]) and all(str(about["hardware"]).lower() in d.lower() for d in facts["hardware"])
            and sorted(map(str, set(steps))) == sorted(map(str, facts["max_steps"]))
            and about["runs"] == facts["runs"]
            and facts["overrides"] is not None and sorted(about["overrides"] or []) == facts["overrides"])


def facts_text(facts: dict) -> str:
    """Which runs, in words: a verdict's ``about`` or the facts of the aggregated runs."""
    hardware = facts["hardware"] if isinstance(facts["hardware"], list) else [facts["hardware"]]
    steps = facts["max_steps"] if isinstance(facts["max_steps"], list) else [facts["max_steps"]]
    overrides = "unknown" if facts["overrides"] is None else ", ".join(facts["overrides"]) or "none"
    return (f"hardware {'; '.join(map(str, hardware))}, max_steps {', '.join(map(str, steps))}, "
            f"{facts['runs']} finished runs, overrides {overrides}")


# ---- the verdict computed from the numbers ----

def setting_mismatch(spec: dict, rows: list[dict]) -> list[str]:
    """'dataset fmnist32 (paper: cifar10)' for each ``paper.setting`` column the runs do not share."""
    setting = (spec.get("paper") or {}).get("setting") or {}
    return [f"{key} {distinct(rows, key)} (paper: {value})" for key, value in setting.items()
            if any(not same_value(hydra_value(r.get(key)), hydra_value(value)) for r in rows)]


def computed_verdict(spec: dict, rows: list[dict], lines: list[ReportRow]) -> tuple[str, str]:
    """(headline, full text) of a verdict from the numbers beside it, labelled as computed; or why
    there is none. Cells whose runs stopped before their step budget are counted apart, never as
    differing."""
    mismatch = setting_mismatch(spec, finished(rows))
    if mismatch:
        return ("not in the paper's setting, not compared",
                "no verdict for these runs: they are not in the paper's setting (" + "; ".join(mismatch)
                + "), so the paper's numbers do not apply")
    outcomes = Counter(compare(line)[1] for line in lines)
    judged = outcomes["exceeds"] + outcomes["within"] + outcomes["one run"]
    if not judged and not outcomes["stopped"]:
        return ("no verdict (no paper numbers to compare with)",
                "no verdict for these runs (the paper gives no numbers to compare them with)")
    if not judged:
        stopped = stopped_text(rows)
        return (f"{stopped}: not compared with the paper",
                f"computed from these runs, not hand-written: every cell with a paper number has runs that {stopped}, "
                "before their step budget, so none is compared with the paper (per cell below)")
    parts = [f"{outcomes['exceeds']} differ from the paper by more than the seed spread",
             f"{outcomes['within']} are within it"]
    if outcomes["one run"]:
        parts.append(f"{outcomes['one run']} have one run (no spread to judge by)")
    short = f"{outcomes['exceeds']} of {judged} cells differ from the paper beyond the seed spread"
    if outcomes["stopped"]:
        parts.append(f"{outcomes['stopped']} stopped before their step budget (not compared)")
        short += f"; {outcomes['stopped']} stopped early, not compared"  # which runs: in the tier's bullets
    return short, (f"computed from these runs, not hand-written: of {judged + outcomes['stopped']} cells with runs and "
                   "a paper number, " + ", ".join(parts) + f" ({SPREAD_RULE}; per cell below)")


def side_by_side(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """The renderer's report_rows, else the spec's metric per cell with runs (as stored, no paper
    number), in the sweep's order."""
    renderer = renderer_of(spec)
    if renderer is not None and hasattr(renderer, "report_rows"):
        return renderer.report_rows(spec, rows)
    metric, cells = spec["metric"], [row_cell(spec, r) for r in rows]
    return [report_row(f"{c['cell']}: `{metric}`", [r for r, cell in zip(rows, cells) if cell == c["cell"]], metric,
                       planned_seeds(spec), c["failed"], scale=1.0, digits=4)
            for c in coverage(spec, rows) if c["finished"] or c["failed"]]


def renderer_of(spec: dict):
    return importlib.import_module(f"renderers.{spec['render']}") if spec.get("render") else None


def settle_of(spec: dict, rows: list[dict], folder: Path) -> dict[str, Verdict]:
    """{block label: settle verdict} of every ranking the renderer reads from the tier's history;
    {} where it ranks nothing or the tier keeps no history."""
    renderer = renderer_of(spec)
    history = read_history(folder, spec["artifact"])
    if renderer is None or not hasattr(renderer, "ranked_blocks") or not history:
        return {}
    rankings = [r for r in renderer.ranked_blocks(spec, rows) if any(h.get(r.metric) is not None for h in history)]
    out = {}
    for r in rankings:
        for block, v in block_verdicts(history, r.metric, r.group_of, r.block_of).items():
            label = ", ".join(x for x in ((str(block) if block != "all" else ""),
                                          (r.metric if len(rankings) > 1 or block == "all" else "")) if x)
            out[label] = v
    return out


def trend_check(spec: dict, rows: list[dict], folder: Path) -> tuple[str, str] | None:
    """(headline, text) of a claim about a trend over training (Figure 6 middle's falling EMD),
    computed by the renderer's ``trend_check`` from the tier's history; None where it has none."""
    renderer = renderer_of(spec)
    history = read_history(folder, spec["artifact"])
    if renderer is None or not hasattr(renderer, "trend_check") or not history:
        return None
    return renderer.trend_check(spec, rows, history)


def claim_check(spec: dict, rows: list[dict], folder: Path) -> tuple[str, str] | None:
    """(headline, text) of the paper's ranking claim checked on the tier's history (claim_outcomes:
    per set of groups compared, ranking and block), where the spec states it as
    ``paper.claim_leaders`` among ``paper.claim_among``; a block counts as met only where its
    outcome settled; the headline counts the last set's blocks. None where the spec states no such
    claim or the tier has no history to rank."""
    paper = spec.get("paper") or {}
    variants = set((spec.get("sweep") or {}).get("variants") or {})
    named = set(paper.get("claim_leaders") or ()).union(*map(set, (paper.get("claim_among") or {}).values()))
    if variants and (unknown := sorted(named - variants)):
        raise SpecError(f"experiments/{spec['artifact']}.yaml: paper.claim_leaders/claim_among name "
                        f"{', '.join(unknown)}, not a variant of the sweep; valid choices: {', '.join(sorted(variants))}")
    renderer = renderer_of(spec)
    history = read_history(folder, spec["artifact"])
    if renderer is None or not hasattr(renderer, "ranked_blocks") or not history:
        return None
    outcomes = claim_outcomes(paper, renderer.ranked_blocks(spec, rows), history)
    if not outcomes:
        return None
    texts = []
    for name, among in paper["claim_among"].items():
        parts = [f"{o.block}, {o.metric}: {'met' if o.met else 'not met'} at the last evaluation (step {o.last}; top: "
                 f"{' ~ '.join(o.top)}), at {len(o.held)} of {o.evaluations} evaluations; "
                 + (f"outcome settled at step {o.outcome.step} of {o.last}" if o.outcome.settled else "outcome not settled")
                 + (", whole order too" if o.whole.settled else ", whole order not settled")
                 for o in outcomes if o.among == name]
        if parts:
            texts.append(f"{name[:1].upper()}{name[1:]} ({', '.join(among)}): " + "; ".join(parts))
    last = [o for o in outcomes if o.among == outcomes[-1].among]
    unsettled, never = sum(not o.outcome.settled for o in last), sum(not o.held for o in last)
    met = sum(o.met and o.outcome.settled for o in last)
    notes = [f"{unsettled} unsettled"] * bool(unsettled) + [f"{never} never met"] * bool(never) + [outcomes[-1].among]
    short = f"claim met in {met} of {len(last)} blocks ({'; '.join(notes)})"
    text = (f"computed from these runs, not hand-written: the paper's claim ({paper.get('claim')}), met in a block where "
            f"the top tier of its ranking holds {' or '.join(sorted(paper['claim_leaders']))} alone (ties: the settle "
            "rule's, within the pooled seed std of the groups compared); the settle rule applied to that outcome (met or "
            "not the same from some step to the last evaluation, over at least the last 30% of the run) says whether it "
            "settled, and a block counts as met only where it did. " + ". ".join(texts))
    return short, text


def settle_short(verdicts: dict[str, Verdict]) -> str | None:
    """'ranking settled at step 200 of 300', 'ranking not settled in 7 of 8 blocks', or None."""
    if not verdicts:
        return None
    unsettled = [v for v in verdicts.values() if not v.settled]
    if len(verdicts) == 1:
        (v,) = verdicts.values()
        return f"ranking settled at step {v.step} of {v.last}" if v.settled else "ranking not settled"
    if unsettled:
        return f"ranking not settled in {len(unsettled)} of {len(verdicts)} blocks"
    return f"ranking settled in all {len(verdicts)} blocks (from step {span([v.step for v in verdicts.values()])})"


def merged_order(lists: list[list[str]]) -> list[str]:
    """The union of several ordered lists, each list's order kept (an item new to the union goes
    right after its predecessor in its own list)."""
    order: list[str] = []
    for items in lists:
        at = 0
        for item in items:
            if item in order:
                at = order.index(item) + 1
            else:
                order.insert(at, item)
                at += 1
    return order


def tier_name(folder: Path, results: Path) -> str:
    """A tier as the report labels it: its folder, from the results root on ('results/gpu'); a
    user's own tier says so."""
    name = folder.relative_to(results.parent).as_posix()
    return f"{name} (your runs, not committed)" if folder.name == LOCAL_TIER else name


def tier_plan(spec: dict, folder: Path) -> dict:
    """The spec as far as this tier plans it: the CPU tier (``results/cpu``) runs only the presets
    of its ``cpu.only`` (Table 1's dense cells, say), so its runs are counted against those."""
    only = (spec.get("cpu") or {}).get("only")
    if folder.name != "cpu" or not only:
        return spec
    sweep = spec["sweep"]
    narrow = lambda g: {**g, "presets": [p for p in g["presets"] if p in only]}  # noqa: E731
    return {**spec, "sweep": {**sweep, "groups": [narrow(g) for g in sweep["groups"]]} if sweep.get("groups")
            else narrow(sweep)}


class Tier:
    """One artifact's runs in one hardware tier (a folder of results/), and what the report says
    about them."""

    def __init__(self, spec: dict, folder: Path, root: Path, report_dir: Path):
        self.folder = folder
        self.label = tier_name(folder, root)
        self.name = self.label.split(" (")[0]
        self.rows = load_rows(folder / f"{spec['artifact']}_runs.csv")
        done = finished(self.rows)
        shown = done or self.rows  # the facts of the runs whose numbers are shown
        self.hardware = distinct(shown, "device")
        self.budget = budget_text(spec, shown)
        self.steps = steps_text(spec, shown)
        self.seeds = ", ".join(map(str, sorted({r["seed"] for r in shown})))
        planned = tier_plan(spec, folder)
        self.counts = counts(planned, self.rows)
        totals = count_totals(planned, self.rows)
        self.runs = f"{totals['finished']} of {totals['planned']} runs"
        self.lines = side_by_side(spec, self.rows)
        self.comparable = not setting_mismatch(spec, done)
        renderer = renderer_of(spec)
        self.superseded = renderer.superseded(spec, self.rows) if hasattr(renderer, "superseded") else None
        self.stopped = stopped_text(done)
        self.all_stopped = bool(self.stopped) and len(stopped_early(done)) == sum(1 for r in done if r.get("steps"))
        self.settle = settle_of(spec, self.rows, folder)
        self.hand, self.verdict, self.notes = self.judge(spec, done)
        self.short = self.overview_verdict()
        self.outputs = [Path(os.path.relpath(f, report_dir)).as_posix()
                        for f in sorted(folder.glob(f"{spec['artifact']}.*")) if f.suffix in (".md", ".png")]

    def judge(self, spec: dict, done: list[dict]) -> tuple[str | None, str, list[str]]:
        """(the hand-written entry's headline or None, the full verdict, notes on hand-written
        verdicts about other runs)."""
        if not done:
            return None, "no verdict: every run failed", []
        facts = run_facts(spec, self.rows)
        entries = hand_verdicts(spec)
        for entry in entries:
            if matches(entry["about"], facts):
                return entry.get("short") or headline(entry["text"]), entry["text"], []
        notes = [f"The spec's hand-written verdict(s) describe other runs ("
                 f"{'; '.join(facts_text(e['about']) for e in entries)}); these runs: {facts_text(facts)}. Not shown."
                 ] if entries else []
        self.computed_short, text = computed_verdict(spec, self.rows, self.lines)
        if self.computed_short.startswith("no verdict (no paper numbers") and (
                claim := claim_check(spec, self.rows, self.folder) or trend_check(spec, done, self.folder)) is not None:
            self.computed_short, text = claim
        return None, text, notes

    def overview_verdict(self) -> str:
        """The overview's one line: the verdict's headline, then the computed clauses (runs stopped
        early, whether the ranking settled)."""
        if self.hand is None and not finished(self.rows):
            return self.verdict
        if self.hand is not None:
            base = f"{self.stopped} (hand-written verdict below)" if self.all_stopped else f"{self.hand} (hand-written)"
        else:
            base = f"{self.computed_short} (computed)"
        clauses = [base]
        if self.stopped and not self.all_stopped and "stopped" not in base:
            clauses.append(self.stopped)
        if self.settle:
            clauses.append(f"{settle_short(self.settle)} (computed)")
        return "; ".join(clauses)

    def gap(self, line: ReportRow | None) -> str:
        """Ours minus the paper for one line (computed), or why there is none."""
        if line is None or not line.values:
            return "—"
        if self.superseded and line.paper is not None:
            return "not compared: superseded set-up"
        return compare(line)[0] if self.comparable or line.paper is None else "not computed: not the paper's setting"

    def detail(self) -> list[str]:
        """The tier's bullets in the artifact's section."""
        rendered = ", ".join(f"[{Path(o).name}]({o})" for o in self.outputs) or "none"
        head = f"- **{self.label}**" + (" (**superseded**)" if self.superseded else "")
        lines = [f"{head}: {self.hardware}; budget {self.budget}; seeds {self.seeds}; finished / failed / missing "
                 f"{self.counts}; rendered: {rendered}"]
        if self.superseded:
            lines.append(f"  - Superseded, {self.superseded}. Kept for the record; the overview's verdict does not "
                         "rest on these runs")
        label = "hand-written for these runs" if self.hand is not None else "computed"
        lines.append(f"  - Verdict ({label}): {self.verdict}")
        if self.stopped and not (self.all_stopped and self.hand is None):
            lines.append(f"  - Stopped before their step budget (computed): {self.stopped}; their numbers are those "
                         "of an unfinished schedule, never compared with the paper's")
        if self.settle:
            lines.append("  - Ranking by the settle rule (computed from the history): "
                         + "; ".join(f"{block}: {v.text()}" + (f" ({order_text(v.order)})" if v.settled else "")
                                     for block, v in self.settle.items()))
        return lines + [f"  - {n}" for n in self.notes]


def paper_text(spec: dict, line: ReportRow, said: bool) -> str:
    """The paper's number for a line, or its claim (said once, then '(same)')."""
    if line.paper_text is not None:
        return line.paper_text
    if line.paper:
        return fmt_paper(line.paper)
    claim = (spec.get("paper") or {}).get("claim")
    return "(same)" if said else f"no numbers published; claim: {claim}" if claim else f"see {spec['source']}"


def table_lines(spec: dict, tiers: list[Tier]) -> list[str]:
    """One row per line any tier has: the paper's number, then each tier's numbers (and, where the
    paper gives numbers, the computed gap) side by side; superseded tiers' columns say so."""
    per_tier = [{line.what: line for line in tier.lines} for tier in tiers]
    whats = merged_order([list(lines) for lines in per_tier])
    with_gap = any(line.paper and line.paper.get("mean") is not None for t in tiers for line in t.lines)
    header = ["what", "paper"]
    for tier in tiers:
        name = tier.name + (" (superseded)" if tier.superseded else "")
        header += [f"ours: {name}"] + ([f"ours − paper: {name}" + ("" if tier.superseded else " (computed)")]
                                       if with_gap else [])
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    said = False
    for what in whats:
        first = next(lines[what] for lines in per_tier if what in lines)
        cells = [what, paper_text(spec, first, said)]
        said = said or (first.paper_text is None and not first.paper)
        for tier, lines in zip(tiers, per_tier):
            line = lines.get(what)
            cells.append(line.ours() if line else "not run")
            if with_gap:
                cells.append(tier.gap(line))
        out.append("| " + " | ".join(cells) + " |")
    return out


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def section(spec: dict, folders: list[Path], root: Path, report_dir: Path) -> tuple[str, list[str]]:
    """(the overview row, the detail lines) of one artifact over every tier."""
    artifact = spec["artifact"]
    hand_verdicts(spec)
    tiers = [Tier(spec, f, root, report_dir) for f in folders if (f / f"{artifact}_runs.csv").exists()]
    tiers = [t for t in tiers if t.rows]
    tiers = [t for t in tiers if not t.superseded] + [t for t in tiers if t.superseded]
    detail = [f"## {spec['title']}", "", f"Spec `experiments/{artifact}.yaml`; paper: {spec['source']}.", ""]
    if not tiers:
        where = ", ".join(tier_name(f, root).split(" (")[0] for f in folders) or tier_name(root, root)
        row = (f"| {artifact} | {paper_short(spec)} | not run in any tier (no {artifact}_runs.csv in {where}) "
               f"| — | — |")
        return row, detail + [f"No runs in any tier: `make {artifact}` (or scripts/run_artifact.py) runs the sweep.", ""]
    current = [t for t in tiers if not t.superseded]
    old = [t for t in tiers if t.superseded]
    if not current:
        verdict = "no current runs: every tier's runs come from a superseded set-up"
    elif len(current) == 1:
        verdict = current[0].short
    else:
        verdict = "; ".join(f"{t.name}: {t.short}" for t in current)
    runs = "; ".join(f"{t.label}: {t.hardware}, {t.steps}, {t.runs}" for t in current) or "—"
    gone = "; ".join(f"{t.name}: {headline(t.superseded)}" for t in old) or "—"
    row = f"| {artifact} | {paper_short(spec)} | {cell(verdict)} | {cell(runs)} | {cell(gone)} |"
    for t in tiers:
        detail += t.detail()
    return row, detail + ["", *table_lines(spec, tiers), ""]


def report_tiers(results: Path) -> tuple[list[Path], Path]:
    """(the tier folders a report over ``results`` covers, the root their names start from): the
    tiers of ``results``; for a user's own tier (results/local), it and then the committed tiers of
    its parent."""
    results = Path(results)
    if results.name == LOCAL_TIER:
        return ([results] if any(results.glob("*_runs.csv")) else []) + tier_dirs(results.parent), results.parent
    return tier_dirs(results), results


def write_report(experiments: Path, results: Path) -> Path:
    specs = [yaml.safe_load(p.read_text()) for p in sorted(experiments.glob("*.yaml"))]
    results = Path(results)
    folders, root = report_tiers(results)
    tiers = []
    for folder in folders:
        rows = [r for p in sorted(folder.glob("*_runs.csv")) for r in load_rows(p)]
        artifacts = sorted(p.name.removesuffix("_runs.csv") for p in folder.glob("*_runs.csv"))
        tiers.append(f"- `{tier_name(folder, root)}`: {distinct(rows, 'device')}; {', '.join(artifacts)}")
    local = results.name == LOCAL_TIER
    lines = ["# Reproduction report", "",
             "One line per paper artifact (`experiments/*.yaml`), then a section per artifact with every tier's runs "
             "and numbers beside the paper's. Written by `scripts/make_report.py` from the tiers' CSVs alone "
             + ("(`make report`: your runs in results/local beside the committed tiers). " if local else
                "(`make report RESULTS=results`; your own runs, `make <artifact>`, go to results/local and its own "
                "REPORT.md, not into this file). ")
             + "The tiers, with their hardware and artifacts:", "",
             *(tiers or ["- none: no folder of results/ holds an <artifact>_runs.csv"]), "",
             "How to read a verdict: it is hand-written for exactly the runs it rests on (the spec records their "
             "hardware, step budget, count and overrides) or computed from them, and says which. Computed in every "
             "case: runs stopped before their step budget (a `trainer.max_minutes` cap) are said to have stopped "
             "and are not compared with the paper; a ranking is a result only where the settle rule finds it "
             f"settled ({SETTLE_RULE}). Runs from superseded set-ups (the flatten classifier head; the VAE "
             "baselines before the fair temperature and posterior probe) are left out of the verdicts and marked "
             "superseded below. Units: accuracies in %, MS-SSIM an index in [0, 1], EMD in positions moved.", "",
             "| artifact | paper | verdict (details in its section) | runs it rests on: tier, hardware, steps, "
             "finished of planned | superseded runs, not in the verdict |", "|---|---|---|---|---|"]
    details = []
    for spec in specs:
        try:
            row, detail = section(spec, folders, root, results)
        except SpecError as err:
            raise SpecError(f"experiments/{spec['artifact']}.yaml: {err}") from None
        lines.append(row)
        details += detail
    out = results / "REPORT.md"
    results.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + [""] + details))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="reads every tier's <artifact>_runs.csv, writes REPORT.md (results/local: your runs "
                             "beside the committed tiers)")
    args = parser.parse_args()
    try:
        print(f"report: {write_report(args.experiments, args.results)}")
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
