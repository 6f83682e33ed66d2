"""Helpers every renderer shares: CSV loading, mean ± std cells, seed coverage ("n=2 of 3"),
and the markdown header (hardware, budget, seeds, software, the command that produced the runs)."""
from __future__ import annotations

import csv
import shlex
import statistics
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METRIC_NAMES = {"all_or_none": "final test all-or-none accuracy",
                "all_or_none_best": "maximum test all-or-none accuracy over training"}


def parse_value(text: str | None):
    """A CSV cell as a number or bool where it is one; '' and 'None' become None, other text stays."""
    if text is None or text in ("", "None"):
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_rows(path: Path) -> list[dict]:
    """CSV rows with numbers parsed; empty cells become None. A CSV written before runs had a
    ``status`` column holds finished runs only."""
    with open(path, newline="") as f:
        rows = [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row.setdefault("status", "finished")
    return rows


def finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") in (None, "finished")]


def summary(values: list[float], scale: float = 100.0) -> tuple[float, float | None, int]:
    """Mean and sample std (None for one value) of ``scale * values``, and n."""
    scaled = [scale * v for v in values]
    return statistics.mean(scaled), (statistics.stdev(scaled) if len(scaled) > 1 else None), len(scaled)


def count_text(n: int, planned: int | None) -> str:
    """'n=3', or 'n=2 of 3' when fewer seeds finished than the spec plans."""
    return f"n={n}" if planned is None or n >= planned else f"n={n} of {planned}"


def fmt_ours(values: list[float], planned: int | None = None, failed: int = 0, scale: float = 100.0,
             digits: int = 2) -> str:
    """A table cell: 'mean ± std (n=...)', 'failed' when every run failed, 'not run' when none ran."""
    if not values:
        return "failed" if failed else "not run"
    mean, std, n = summary(values, scale)
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"
    extra = f", {failed} failed" if failed else ""
    return f"{text} ({count_text(n, planned)}{extra})"


def fmt_paper(cell: dict | None) -> str:
    if cell is None:
        return "—"
    text = f"{cell['mean']:g}"
    if cell.get("std") is not None:
        text += f" ± {cell['std']:g}"
    return text + (f" (x{cell['n']})" if cell.get("n") else "")


def span(values: list, fmt: str = "{}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "?"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def show(value) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def distinct(rows: list[dict], key: str) -> str:
    """The values of `key` over rows: one value as is, several as {a, b}."""
    values = sorted({show(r.get(key)) for r in rows}, key=lambda v: (len(v), v))
    return ", ".join(values) if len(values) < 2 else "{" + ", ".join(values) + "}"


def hydra_value(value) -> str:
    """A YAML value as Hydra's command line spells it (None -> null, True -> true)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def swept_keys(spec: dict) -> list[str]:
    return list((spec["sweep"].get("overrides") or {}).keys())


def cell_name(experiment: str, swept: dict) -> str:
    """'sort_lstm_t5 model.ponder_steps=5': a preset plus its swept values, the unit seeds repeat."""
    return " ".join([experiment, *(f"{k}={hydra_value(v)}" for k, v in swept.items())])


def planned_cells(spec: dict) -> list[str]:
    """Every cell the spec's sweep plans, in sweep order."""
    import itertools

    sweep = spec["sweep"]
    keys = swept_keys(spec)
    combos = list(itertools.product(*[(sweep.get("overrides") or {})[k] for k in keys]))
    return [cell_name(p, dict(zip(keys, combo))) for p in sweep["presets"] for combo in combos]


def row_cell(spec: dict, row: dict) -> str:
    """A row's cell; CSVs written before the ``cell`` column name swept keys by their last part."""
    if row.get("cell"):
        return row["cell"]
    return cell_name(row["experiment"], {k: row.get(k.split(".")[-1]) for k in swept_keys(spec)})


def coverage(spec: dict, rows: list[dict]) -> list[dict]:
    """Per cell: planned seeds, finished / failed / missing counts. Cells outside the plan (e.g. an
    extra ``--sweep`` value) are listed after the planned ones."""
    seeds = [int(s) for s in spec["sweep"]["seeds"]]
    rows = [{**r, "cell": row_cell(spec, r)} for r in rows]
    names = planned_cells(spec)
    names += sorted({r["cell"] for r in rows if r.get("cell") and r["cell"] not in names})
    out = []
    for name in names:
        mine = [r for r in rows if r.get("cell") == name]
        done = {r["seed"] for r in finished(mine)}
        failed = {r["seed"] for r in mine if r.get("status") == "failed"} - done
        out.append({"cell": name, "planned": len(seeds), "finished": len(done), "failed": len(failed),
                    "missing": len([s for s in seeds if s not in done | failed])})
    return out


def coverage_lines(spec: dict, rows: list[dict]) -> list[str]:
    """Markdown table of the coverage, one line per cell."""
    lines = ["| cell | finished | failed | missing (of planned seeds) |", "|---|---|---|---|"]
    for c in coverage(spec, rows):
        lines.append(f"| {c['cell']} | {c['finished']} | {c['failed']} | {c['missing']} of {c['planned']} |")
    return lines


def run_overrides(command: str | None) -> list[str]:
    """The Hydra overrides of a recorded ``python train.py ...`` command."""
    if not command:
        return []
    words = shlex.split(command)
    start = next((i + 1 for i, w in enumerate(words) if w.endswith("train.py")), 0)
    return [w for w in words[start:] if not w.startswith("-")]


def regenerate_commands(spec: dict, rows: list[dict]) -> list[tuple[str, int]]:
    """The run_artifact.py command(s) that reproduce these runs: the spec plus whatever the
    recorded run commands override beyond its budget (as --set), restricted to the presets and
    seeds present. Runs with different extra overrides give one (command, run count) each."""
    budget = {k: hydra_value(v) for k, v in (spec.get("budget") or {}).items()}
    speed = {k: hydra_value(v) for k, v in (spec.get("speed") or {}).items()}
    fixed = {"+experiment", "experiment", "seed", "runs_root", *swept_keys(spec)}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("command"):
            continue
        given = dict(item.partition("=")[::2] for item in run_overrides(r["command"]))
        extra = [(k, v) for k, v in given.items() if k not in fixed and budget.get(k) != v]
        for key, value in budget.items():  # a budget key the run did not set: it ran at its default
            column = key.split(".")[-1]
            if key not in given and column in r and hydra_value(r[column]) != value:
                extra.append((key, hydra_value(r[column])))
        groups.setdefault(tuple(sorted(extra)), []).append(r)
    commands = []
    for extra, members in groups.items():
        args = [f"experiments/{spec['artifact']}.yaml"]
        presets = [p for p in spec["sweep"]["presets"] if any(m["experiment"] == p for m in members)]
        if presets != list(spec["sweep"]["presets"]):
            args.append("--only " + ",".join(presets))
        seeds = sorted({m["seed"] for m in members})
        if seeds != sorted(int(s) for s in spec["sweep"]["seeds"]):
            args.append("--seeds " + ",".join(map(str, seeds)))
        sets = dict(extra)
        if speed and all(sets.get(k) == v for k, v in speed.items()):
            args.append("--fast")
            sets = {k: v for k, v in sets.items() if k not in speed}
        args += [shlex.quote(f"--set={k}={v}") for k, v in sets.items()]
        commands.append(("scripts/run_artifact.py " + " ".join(args), len(members)))
    return commands


def describe(rows: list[dict], csv_path: Path, extra: list[str] = ()) -> list[str]:
    """Markdown bullets: hardware, budget, seeds, software, then ``extra`` bullets; warns when
    budgets are mixed."""
    devices = Counter(r["device"] for r in rows)
    keys = ("max_steps", "max_minutes", "eval_every", "precision", "compile")
    budgets = {" ".join(f"{k}={show(r.get(k))}" for k in keys) for r in rows}
    lines = [
        "- Hardware: " + "; ".join(f"{d} ({n} runs)" for d, n in devices.most_common()),
        f"- Budget set: trainer.max_steps={distinct(rows, 'max_steps')}, "
        f"trainer.max_minutes={distinct(rows, 'max_minutes')}, trainer.eval_every={distinct(rows, 'eval_every')}",
        f"- Budget used: {span([r['steps'] for r in rows])} steps, "
        f"{span([r['wall_seconds'] / 60 for r in rows if r.get('wall_seconds') is not None], '{:.1f}')} min per run",
        f"- Seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}",
        f"- Software: torch {distinct(rows, 'torch')}, precision {distinct(rows, 'precision')}, "
        f"compile {distinct(rows, 'compile')}",
        f"- Runs: {len(rows)} (from {csv_path.name})",
    ]
    lines += list(extra)
    if len(budgets) > 1:
        lines.append("- **Warning: runs with different budgets are mixed here:** "
                     + "; ".join(f"`{b}`" for b in sorted(budgets)))
    return lines


def provenance(spec: dict, rows: list[dict]) -> list[str]:
    """Markdown bullets: the command(s) that produced these runs, or that they were not recorded."""
    commands = regenerate_commands(spec, rows)
    unrecorded = sum(1 for r in rows if not r.get("command"))
    lines = [f"- Produced by: `{c}` ({n} run(s))" for c, n in commands]
    if unrecorded:
        lines.append(f"- Command not recorded for {unrecorded} run(s) (made before runs recorded their "
                     "command); their budget is listed above and each run's config.yaml has the rest")
    return lines


def planned_seeds(spec: dict) -> int:
    return len(spec["sweep"]["seeds"])


def failed_seeds(rows: list[dict], **match) -> int:
    """Distinct seeds whose runs matching ``match`` (column=value) failed and never finished."""
    mine = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    done = {r["seed"] for r in finished(mine)}
    return len({r["seed"] for r in mine if r.get("status") == "failed"} - done)


def cell_summary(spec: dict, rows: list[dict], metric: str, **match) -> str:
    """fmt_ours of ``metric`` over the finished rows matching ``match`` (column=value), with n of
    the planned seeds and the seeds that only failed."""
    values = [r[metric] for r in finished(rows) if all(r.get(k) == v for k, v in match.items())]
    return fmt_ours(values, planned_seeds(spec), failed_seeds(rows, **match))
