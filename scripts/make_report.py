"""Write results/REPORT.md: one page over every paper artifact in experiments/*.yaml and every
hardware tier under results/ (the folder itself and each folder below it that holds an
<artifact>_runs.csv: results/gpu, results/cpu, ...). Per artifact and tier: ours beside the
paper's, the hardware, budget and seeds of the runs, how many planned runs finished, failed or are
missing, and a verdict about exactly those runs; an artifact no tier has runs for gets one line.

Numbers come from the tiers' <artifact>_runs.csv (scripts/aggregate.py) and nothing else, so the
report needs no run directories. A renderer may offer ``report_rows(spec, rows) -> list[ReportRow]``
(renderers/common.py) for the side-by-side lines; otherwise the report shows the spec's metric per
cell.

The verdict, per tier: a spec's hand-written ``verdicts`` entry is shown only when that tier's runs
are the ones it was written about (its ``about``: hardware, step budget, number of finished runs and
the overrides beyond the spec all match). Otherwise the report computes one from the numbers
beside it, labelled as computed (per cell: ours minus the paper, and whether that gap exceeds our
seed std plus the paper's), or says that it has no verdict for these runs.

    scripts/make_report.py [--experiments experiments] [--results results]
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from renderers.common import (ReportRow, compare, coverage, distinct, finished, fmt_paper, hydra_value,  # noqa: E402
                              load_rows, planned_seeds, row_cell, same_value, setting_overrides, span, tier_dirs)

ABOUT_KEYS = ("hardware", "max_steps", "runs", "overrides")
SPREAD_RULE = "a gap exceeds the seed spread when it is larger than our sample std plus the paper's std"


class SpecError(ValueError):
    pass


def counts(spec: dict, rows: list[dict]) -> str:
    """'finished / failed / missing of planned' over the spec's cells."""
    cells = coverage(spec, rows)
    c = {k: sum(cell[k] for cell in cells) for k in ("finished", "failed", "missing", "planned")}
    return f"{c['finished']} / {c['failed']} / {c['missing']} of {c['planned']}"


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


# ---- the verdict shown beside the runs ----

def setting_mismatch(spec: dict, rows: list[dict]) -> list[str]:
    """'dataset fmnist32 (paper: cifar10)' for each ``paper.setting`` column the runs do not share."""
    setting = (spec.get("paper") or {}).get("setting") or {}
    return [f"{key} {distinct(rows, key)} (paper: {value})" for key, value in setting.items()
            if any(not same_value(hydra_value(r.get(key)), hydra_value(value)) for r in rows)]


def computed_verdict(spec: dict, rows: list[dict], lines: list[ReportRow]) -> str:
    """A verdict from the numbers beside it, labelled as computed; or why there is none."""
    mismatch = setting_mismatch(spec, finished(rows))
    if mismatch:
        return ("no verdict for these runs: they are not in the paper's setting (" + "; ".join(mismatch)
                + "), so the paper's numbers do not apply")
    outcomes = Counter(compare(line)[1] for line in lines)
    judged = outcomes["exceeds"] + outcomes["within"] + outcomes["one run"]
    if not judged:
        return "no verdict for these runs (the paper gives no numbers to compare them with)"
    parts = [f"{outcomes['exceeds']} differ from the paper by more than the seed spread",
             f"{outcomes['within']} are within it"]
    if outcomes["one run"]:
        parts.append(f"{outcomes['one run']} have one run (no spread to judge by)")
    return (f"computed from these runs, not hand-written: of {judged} cells with runs and a paper number, "
            + ", ".join(parts) + f" ({SPREAD_RULE}; per cell below)")


def verdict(spec: dict, rows: list[dict], lines: list[ReportRow]) -> tuple[str, list[str]]:
    """(the summary table's verdict, detail lines about the hand-written verdicts not shown)."""
    facts = run_facts(spec, rows)
    entries = hand_verdicts(spec)
    for entry in entries:
        if matches(entry["about"], facts):
            return f"{entry['text']} (hand-written for these runs)", []
    notes = [f"The spec's hand-written verdict(s) describe other runs ({'; '.join(facts_text(e['about']) for e in entries)}); "
             f"these runs: {facts_text(facts)}. Not shown."] if entries else []
    return computed_verdict(spec, rows, lines), notes


def side_by_side(spec: dict, rows: list[dict]) -> list[ReportRow]:
    """The renderer's report_rows, else the spec's metric per cell with runs (as stored, no paper
    number), in the sweep's order."""
    renderer = importlib.import_module(f"renderers.{spec['render']}") if spec.get("render") else None
    if renderer is not None and hasattr(renderer, "report_rows"):
        return renderer.report_rows(spec, rows)
    metric, cells = spec["metric"], [row_cell(spec, r) for r in rows]
    return [ReportRow(f"{c['cell']}: `{metric}`", [r[metric] for r, cell in zip(rows, cells)
                                                   if cell == c["cell"] and r["status"] == "finished"],
                      planned_seeds(spec), c["failed"], digits=4)
            for c in coverage(spec, rows) if c["finished"] or c["failed"]]


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
    """A tier as the report labels it: its folder, from results/ on ('results/gpu')."""
    return folder.relative_to(results.parent).as_posix()


class Tier:
    """One artifact's runs in one hardware tier (a folder of results/), and what the report says
    about them."""

    def __init__(self, spec: dict, folder: Path, results: Path):
        self.name = tier_name(folder, results)
        self.rows = load_rows(folder / f"{spec['artifact']}_runs.csv")
        done = finished(self.rows)
        shown = done or self.rows  # the facts of the runs whose numbers are shown
        self.hardware = distinct(shown, "device")
        self.budget = budget_text(spec, shown)
        self.seeds = ", ".join(map(str, sorted({r["seed"] for r in shown})))
        self.counts = counts(spec, self.rows)
        self.lines = side_by_side(spec, self.rows)
        self.comparable = not setting_mismatch(spec, done)
        self.verdict, self.notes = (verdict(spec, self.rows, self.lines) if done
                                    else ("no verdict: every run failed", []))
        self.outputs = [f.relative_to(results).as_posix() for f in sorted(folder.glob(f"{spec['artifact']}.*"))
                        if f.suffix in (".md", ".png")]

    def gap(self, line: ReportRow | None) -> str:
        """Ours minus the paper for one line (computed), or why there is none."""
        if line is None or not line.values:
            return "—"
        return compare(line)[0] if self.comparable or line.paper is None else "not computed: not the paper's setting"


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
    paper gives numbers, the computed gap) side by side."""
    per_tier = [{line.what: line for line in tier.lines} for tier in tiers]
    whats = merged_order([list(lines) for lines in per_tier])
    with_gap = any(line.paper and line.paper.get("mean") is not None for t in tiers for line in t.lines)
    header = ["what", "paper"]
    for tier in tiers:
        header += [f"ours: {tier.name}"] + ([f"ours − paper: {tier.name} (computed)"] if with_gap else [])
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


def section(spec: dict, results: Path, folders: list[Path]) -> tuple[list[str], list[str]]:
    """(overview rows, detail lines) for one artifact over every tier."""
    artifact = spec["artifact"]
    hand_verdicts(spec)
    tiers = [Tier(spec, f, results) for f in folders if (f / f"{artifact}_runs.csv").exists()]
    tiers = [t for t in tiers if t.rows]
    detail = [f"## {spec['title']}", "", f"Spec `experiments/{artifact}.yaml`; paper: {spec['source']}.", ""]
    if not tiers:
        where = ", ".join(tier_name(f, results) for f in folders) or tier_name(results, results)
        line = (f"| {artifact} | {spec['source']} | — | — | — | — | {counts(spec, [])} | "
                f"not run in any tier (no {artifact}_runs.csv in {where}) |")
        return [line], detail + [f"No runs in any tier: `make {artifact}` (or scripts/run_artifact.py) runs the "
                                 "sweep.", ""]
    overview = [f"| {artifact} | {spec['source']} | {t.name} | {t.hardware} | {t.budget} | {t.seeds} | {t.counts} | "
                f"{t.verdict} |" for t in tiers]
    for t in tiers:
        rendered = ", ".join(f"[{Path(o).name}]({o})" for o in t.outputs) or "none"
        detail += [f"- **{t.name}**: {t.hardware}; budget {t.budget}; seeds {t.seeds}; finished / failed / missing "
                   f"{t.counts}; rendered: {rendered}", f"  - Verdict: {t.verdict}", *(f"  - {n}" for n in t.notes)]
    return overview, detail + ["", *table_lines(spec, tiers), ""]


def write_report(experiments: Path, results: Path) -> Path:
    specs = [yaml.safe_load(p.read_text()) for p in sorted(experiments.glob("*.yaml"))]
    folders = tier_dirs(results)
    tiers = []
    for folder in folders:
        rows = [r for p in sorted(folder.glob("*_runs.csv")) for r in load_rows(p)]
        artifacts = sorted(p.name.removesuffix("_runs.csv") for p in folder.glob("*_runs.csv"))
        tiers.append(f"- `{tier_name(folder, results)}`: {distinct(rows, 'device')}; "
                     f"{', '.join(artifacts)}")
    lines = ["# Reproduction report", "",
             "Every paper artifact this repository has a spec for (`experiments/`), from the aggregated runs of "
             "every hardware tier in `results/` (`make report` rewrites this file from the committed CSVs; no run "
             "directories needed). The tiers found, with their hardware and artifacts:", "",
             *(tiers or ["- none: no folder of results/ holds an <artifact>_runs.csv"]), "",
             "The overview has one row per artifact and tier with runs, and one row for an artifact no tier has "
             "runs for. Counts are runs finished / failed / missing of the runs the spec plans (presets × swept "
             "values × seeds); a budget in parentheses is the spec's where the runs set another, then the steps "
             "and minutes the runs took. A verdict is either hand-written for exactly that tier's runs (the spec "
             "records their hardware, step budget, count and overrides) or computed from the numbers beside it, "
             "and says which. Each artifact's section then puts every tier's numbers side by side with the "
             "paper's.", "",
             "| artifact | paper | tier | hardware | budget: steps, minutes | seeds | finished / failed / missing | "
             "verdict |", "|---|---|---|---|---|---|---|---|"]
    details = []
    for spec in specs:
        try:
            overview, detail = section(spec, results, folders)
        except SpecError as err:
            raise SpecError(f"experiments/{spec['artifact']}.yaml: {err}") from None
        lines += overview
        details += detail
    out = results / "REPORT.md"
    results.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + [""] + details))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="reads every tier's <artifact>_runs.csv, writes REPORT.md")
    args = parser.parse_args()
    try:
        print(f"report: {write_report(args.experiments, args.results)}")
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
