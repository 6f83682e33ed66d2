"""Write results/REPORT.md: every paper artifact in experiments/*.yaml on one page: ours beside
the paper's, the budget, hardware and seeds the runs used, how many planned runs finished, failed
or are missing, and a verdict about exactly those runs.

Numbers come from results/<artifact>_runs.csv (scripts/aggregate.py). A renderer may offer
``report_rows(spec, rows) -> list[ReportRow]`` (renderers/common.py) for the side-by-side lines;
otherwise the report shows the spec's metric per cell.

The verdict: a spec's hand-written ``verdicts`` entry is shown only when the aggregated runs are
the ones it was written about (its ``about``: hardware, step budget, number of finished runs and
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

from renderers.common import (ReportRow, compare, coverage, distinct, finished, fmt_paper,  # noqa: E402
                              hydra_value, load_rows, planned_seeds, row_cell, same_value, setting_overrides)

ABOUT_KEYS = ("hardware", "max_steps", "runs", "overrides")
SPREAD_RULE = "a gap exceeds the seed spread when it is larger than our sample std plus the paper's std"


class SpecError(ValueError):
    pass


def counts(spec: dict, rows: list[dict]) -> dict:
    cells = coverage(spec, rows)
    return {k: sum(c[k] for c in cells) for k in ("finished", "failed", "missing", "planned")}


def budget_note(spec: dict, rows: list[dict]) -> str:
    """The budget the runs used, and how it compares with the spec's."""
    used = f"max_steps {distinct(rows, 'max_steps')}, max_minutes {distinct(rows, 'max_minutes')}"
    planned = {k.split(".")[-1]: hydra_value(v) for k, v in (spec.get("budget") or {}).items()
               if k in ("trainer.max_steps", "trainer.max_minutes")}
    differs = [k for k, v in planned.items() if distinct(rows, k) != v]
    return used + (f" (spec: {', '.join(f'{k} {planned[k]}' for k in differs)})" if differs else "")


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
    """The renderer's report_rows, else the spec's metric per cell (as stored, no paper number)."""
    renderer = importlib.import_module(f"renderers.{spec['render']}") if spec.get("render") else None
    if renderer is not None and hasattr(renderer, "report_rows"):
        return renderer.report_rows(spec, rows)
    metric, planned = spec["metric"], planned_seeds(spec)
    out = []
    for cell in dict.fromkeys(row_cell(spec, r) for r in rows):
        mine = [r for r in rows if row_cell(spec, r) == cell]
        failed = len({r["seed"] for r in mine if r["status"] == "failed"} - {r["seed"] for r in finished(mine)})
        out.append(ReportRow(f"{cell}: `{metric}`", [r[metric] for r in finished(mine)], planned, failed, digits=4))
    return out


def table_lines(spec: dict, lines: list[ReportRow], comparable: bool) -> list[str]:
    """The detail table: what, ours, the paper's, and the computed gap (none where the runs are
    not in the paper's setting)."""
    claim = (spec.get("paper") or {}).get("claim")
    said = False
    out = ["| what | ours | paper | ours − paper (computed) |", "|---|---|---|---|"]
    for line in lines:
        paper = line.paper_text if line.paper_text is not None else fmt_paper(line.paper) if line.paper else None
        if paper is None:  # the paper's claim, said once
            paper = "(same)" if said else f"no numbers published; claim: {claim}" if claim else f"see {spec['source']}"
            said = True
        gap = compare(line)[0] if comparable or line.paper is None else "not computed: not the paper's setting"
        out.append(f"| {line.what} | {line.ours()} | {paper} | {gap} |")
    return out


def section(spec: dict, results: Path) -> tuple[str, list[str]]:
    """(summary table line, detail lines) for one artifact."""
    artifact = spec["artifact"]
    csv_path = results / f"{artifact}_runs.csv"
    rows = load_rows(csv_path) if csv_path.exists() else []
    done = finished(rows)
    detail = [f"## {spec['title']}", "", f"Spec `experiments/{artifact}.yaml`; paper: {spec['source']}.", ""]
    if done:
        lines = side_by_side(spec, rows)
        text, notes = verdict(spec, rows, lines)
    else:
        hand_verdicts(spec)
        text = "not run here (" + ("every run failed" if rows else f"no runs aggregated into {csv_path.name}") + ")"
        lines, notes = [], []
    c = counts(spec, rows)
    line = (f"| {artifact} | {spec['source']} | {c['finished']} / {c['failed']} / {c['missing']} of "
            f"{c['planned']} | {budget_note(spec, done) if done else '—'} | "
            f"{distinct(done, 'device') if done else '—'} | "
            f"{', '.join(map(str, sorted({r['seed'] for r in done}))) or '—'} | {text} |")
    outputs = [p.name for p in sorted(results.glob(f"{artifact}.*")) if p.suffix in (".md", ".png")]
    if outputs:
        detail += ["Rendered: " + ", ".join(f"[{n}]({n})" for n in outputs), ""]
    if done:
        detail += [f"Verdict: {text}", "", *notes, *([""] if notes else []), *table_lines(spec, lines, not setting_mismatch(spec, done))]
    else:
        detail.append(f"No finished runs: `make {artifact}` (or scripts/run_artifact.py) runs the sweep.")
    return line, detail + [""]


def write_report(experiments: Path, results: Path) -> Path:
    specs = [yaml.safe_load(p.read_text()) for p in sorted(experiments.glob("*.yaml"))]
    lines = ["# Reproduction report", "",
             "Every paper artifact this repository has a spec for (`experiments/`), from the aggregated runs in "
             "`results/` (`make report` rewrites this file). Counts are runs finished / failed / missing of the "
             "runs the spec plans (presets × swept values × seeds); a budget in parentheses is the spec's when "
             "the runs used a different one. A verdict is either hand-written for exactly these runs (the spec "
             "records their hardware, step budget, count and overrides) or computed from the numbers beside it, "
             "and says which.", "",
             "| artifact | paper | finished / failed / missing | budget used | hardware | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    details = []
    for spec in specs:
        try:
            line, detail = section(spec, results)
        except SpecError as err:
            raise SpecError(f"experiments/{spec['artifact']}.yaml: {err}") from None
        lines.append(line)
        details += detail
    out = results / "REPORT.md"
    results.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + [""] + details))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=Path, default=Path("experiments"), help="artifact specs (*.yaml)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="reads <artifact>_runs.csv, writes REPORT.md")
    args = parser.parse_args()
    try:
        print(f"report: {write_report(args.experiments, args.results)}")
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
