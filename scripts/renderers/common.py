"""Helpers every renderer and the report share: the one place that loads CSVs (runs and history)
and finds the hardware tiers under results/, the one formatter of numbers (mean ± std, n of the
planned seeds, fractions shown in %), seed coverage ("n=2 of 3"), the provenance every rendered
file states (hardware, budget, seeds, n per cell, overrides beyond the spec, the commands that
produced the runs and re-render the file), and the rows of REPORT.md."""
from __future__ import annotations

import csv
import itertools
import shlex
import statistics
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from renderers.settle import Verdict, order_text, orders_by_step, settle

REPO = Path(__file__).resolve().parents[2]
METRIC_NAMES = {"all_or_none": "final test all-or-none accuracy",
                "all_or_none_best": "maximum test all-or-none accuracy over training"}
# Overrides every launched run carries that say nothing about what was trained.
LAUNCH_KEYS = ("+experiment", "experiment", "seed", "runs_root", "trainer.resume")


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
    """CSV rows (a runs or a history CSV) with numbers parsed; empty cells become None."""
    with open(path, newline="") as f:
        return [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_history(results_dir: Path, artifact: str) -> list[dict]:
    """results/<artifact>_history.csv rows (one per evaluation of a run); [] when the spec keeps no
    history."""
    path = Path(results_dir) / f"{artifact}_history.csv"
    return load_rows(path) if path.exists() else []


LOCAL_TIER = "local"  # results/local: a user's own runs (the Makefile's RESULTS), never committed


def tier_dirs(results: Path) -> list[Path]:
    """The hardware tiers under ``results``: the folder itself and each folder directly below it
    that holds an ``<artifact>_runs.csv`` (results/gpu, results/cpu; results/bench holds none).
    ``results/local``, a user's own runs, is a tier only of itself: rendering or reporting the
    committed tiers (``results``) never reads or rewrites it."""
    results = Path(results)
    candidates = [results, *sorted(p for p in results.iterdir() if p.is_dir() and p.name != LOCAL_TIER)
                  ] if results.is_dir() else []
    return [d for d in candidates if any(d.glob("*_runs.csv"))]


def finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "finished"]


def stopped_early(rows: list[dict]) -> list[dict]:
    """The finished runs that stopped before their step budget: 0 < steps < max_steps (a
    ``trainer.max_minutes`` cap or a stop signal ended them; a training-free run has 0 steps)."""
    return [r for r in finished(rows) if isinstance(r.get("steps"), int) and isinstance(r.get("max_steps"), int)
            and 0 < r["steps"] < r["max_steps"]]


def stopped_text(rows: list[dict]) -> str | None:
    """'stopped at 7512 of 30000 steps (max_minutes cap)', with 'k of n runs' where only some of
    the finished runs stopped early; None when none did."""
    stopped = stopped_early(rows)
    if not stopped:
        return None
    trained = [r for r in finished(rows) if r.get("steps")]
    who = "" if len(stopped) == len(trained) else f"{len(stopped)} of {len(trained)} runs "
    capped = all(r.get("max_minutes") and (r.get("wall_seconds") or 0) >= 0.95 * 60 * r["max_minutes"] for r in stopped)
    return (f"{who}stopped at {span([r['steps'] for r in stopped])} of {span([r['max_steps'] for r in stopped])} steps"
            + (" (max_minutes cap)" if capped else ""))


def summary(values: list[float], scale: float = 100.0) -> tuple[float, float | None, int]:
    """Mean and sample std (None for one value) of ``scale * values``, and n."""
    scaled = [scale * v for v in values]
    return statistics.mean(scaled), (statistics.stdev(scaled) if len(scaled) > 1 else None), len(scaled)


def count_text(n: int, planned: int | None) -> str:
    """'n=3', or 'n=2 of 3' when fewer seeds finished than the spec plans."""
    return f"n={n}" if planned is None or n >= planned else f"n={n} of {planned}"


def fmt_mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± std' of ``scale * values`` (scale 100: a fraction shown in %); one value alone."""
    mean, std, _ = summary(values, scale)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def fmt_ours(values: list[float], planned: int | None = None, failed: int = 0, scale: float = 100.0,
             digits: int = 2) -> str:
    """A table cell: 'mean ± std (n=...)', 'failed' when every run failed, 'not run' when none ran."""
    if not values:
        return "failed" if failed else "not run"
    extra = f", {failed} failed" if failed else ""
    return f"{fmt_mean_std(values, scale, digits)} ({count_text(len(values), planned)}{extra})"


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
    """A value as Hydra's command line spells it: None -> null, True -> true, and the same for the
    'None' / 'True' / 'False' that Python wrote into recorded commands."""
    if value is None or value == "None":
        return "null"
    if isinstance(value, bool) or value in ("True", "False"):
        return str(value).lower()
    return str(value)


def same_value(a: str, b: str) -> bool:
    """Two Hydra values are the same setting ('20' and '20.0' are)."""
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def display_path(path: Path) -> str:
    """A path relative to the repository where it lies inside it (results/cpu), else as given."""
    path = Path(path)
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


# ---- cells: a preset with one variant and one combination of swept values ----

def tuned_settings(spec: dict) -> dict[str, dict]:
    """The spec's ``tuned`` file (experiments/<file>, written by scripts/tune_estimators.py): label ->
    the overrides tuning chose for that variant; {} where the spec names none or it is not there yet."""
    path = REPO / "experiments" / spec["tuned"] if spec.get("tuned") else None
    return (yaml.safe_load(path.read_text()) or {}) if path is not None and path.is_file() else {}


def sweep_groups(spec: dict, tuned: bool = True) -> list[dict]:
    """The spec's sweep as groups, each ``{presets, variants, overrides, budget}``: ``sweep.groups``
    where the spec has them (a group's budget over the spec's), else the sweep itself. ``variants``:
    label -> overrides set together, one cell per label, with the tuned settings laid over them
    (``tuned=False``: as the spec writes them); ``overrides``: key -> values, swept."""
    sweep, budget = spec["sweep"], spec.get("budget") or {}
    chosen = tuned_settings(spec) if tuned else {}
    return [{"presets": list(g["presets"]),
             "variants": {label: {**(o or {}), **chosen.get(label, {})} for label, o in (g.get("variants") or {}).items()},
             "overrides": dict(g.get("overrides") or {}), "budget": {**budget, **(g.get("budget") or {})}}
            for g in sweep.get("groups") or [sweep]]


def spec_presets(spec: dict) -> list[str]:
    """Every preset the spec runs, in sweep order."""
    return [p for g in sweep_groups(spec) for p in g["presets"]]


def group_of(spec: dict, experiment: str | None) -> dict | None:
    """The sweep group that runs ``experiment`` (a preset is in one group at most)."""
    return next((g for g in sweep_groups(spec) if experiment in g["presets"]), None)


def group_keys(group: dict) -> list[str]:
    """What a cell of ``group`` names beyond its preset: ``variant`` (its label), then the swept keys."""
    return (["variant"] if group["variants"] else []) + list(group["overrides"])


def swept_keys(spec: dict) -> list[str]:
    keys: list[str] = []
    for group in sweep_groups(spec):
        keys += [k for k in group_keys(group) if k not in keys]
    return keys


def variant_keys(spec: dict) -> set[str]:
    """Every key a variant of the spec sets."""
    return {k for g in sweep_groups(spec) for overrides in g["variants"].values() for k in overrides or {}}


def cell_name(experiment: str, swept: dict) -> str:
    """'sort_lstm_t5 model.ponder_steps=5', 'vae_fmnist variant=dab_binary latent.bpp=0.1': a preset
    plus its variant and swept values, the unit seeds repeat."""
    return " ".join([experiment, *(f"{k}={hydra_value(v)}" for k, v in swept.items())])


def planned_cells(spec: dict) -> list[str]:
    """Every cell the spec's sweep plans, in sweep order."""
    cells = []
    for g in sweep_groups(spec):
        combos = list(itertools.product(*g["overrides"].values()))
        for p in g["presets"]:
            for label in g["variants"] or [None]:
                cells += [cell_name(p, ({} if label is None else {"variant": label}) | dict(zip(g["overrides"], c)))
                          for c in combos]
    return cells


def variant_of(group: dict, given: dict[str, str]) -> str | None:
    """The label of the group's variant whose overrides are exactly what ``given`` (key -> Hydra
    value: a run's recorded overrides) sets of the keys the group's variants set; None when none is."""
    keys = {k for overrides in group["variants"].values() for k in overrides or {}}
    mine = {k: v for k, v in given.items() if k in keys}
    return next((label for label, overrides in group["variants"].items()
                 if mine.keys() == (overrides or {}).keys()
                 and all(same_value(mine[k], hydra_value(v)) for k, v in (overrides or {}).items())), None)


def run_overrides(command: str | None) -> list[str]:
    """The Hydra overrides of a recorded ``python train.py ...`` command."""
    if not command:
        return []
    words = shlex.split(command)
    start = next((i + 1 for i, w in enumerate(words) if w.endswith("train.py")), 0)
    return [w for w in words[start:] if not w.startswith("-")]


def command_overrides(command: str | None) -> dict[str, str]:
    """key -> value (as Hydra spells it) of a recorded ``python train.py ...`` command."""
    pairs = (item.partition("=") for item in run_overrides(command))
    return {key: hydra_value(value) for key, _, value in pairs}


def swept_from_command(spec: dict, experiment: str | None, command: str | None,
                       variant: str | None = None) -> dict | None:
    """The cell values of a run of ``experiment`` that a recorded command set: its variant's label
    (``variant`` where the run's row records it, else the variant whose overrides the command sets)
    and the swept values (``dab=ste``: the option's name, where the config holds only the group's
    contents); None when the command names no variant or not every swept key of the preset's group."""
    group = group_of(spec, experiment)
    if group is None or not command:
        return None
    given = command_overrides(command)
    if group["variants"]:
        given["variant"] = variant or variant_of(group, given)
        if given["variant"] not in group["variants"]:
            return None
    keys = group_keys(group)
    return {k: given[k] for k in keys} if all(k in given for k in keys) else None


def row_cell(spec: dict, row: dict) -> str | None:
    """A row's cell: from its recorded command (and ``variant`` column) where those name every
    cell value, else the CSV's ``cell`` column (aggregate.py's, from the run's config)."""
    swept = swept_from_command(spec, row.get("experiment"), row.get("command"), row.get("variant"))
    return cell_name(row["experiment"], swept) if swept is not None else row.get("cell")


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


def planned_seeds(spec: dict) -> int:
    return len(spec["sweep"]["seeds"])


def failed_seeds(rows: list[dict], **match) -> int:
    """Distinct seeds whose runs matching ``match`` (column=value) failed and never finished."""
    mine = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    done = {r["seed"] for r in finished(mine)}
    return len({r["seed"] for r in mine if r.get("status") == "failed"} - done)


def cell_values(rows: list[dict], metric: str, scale: float = 100.0, **match) -> tuple[list[float], int]:
    """``scale * metric`` of the finished rows matching ``match`` (column=value), and how many
    seeds of those rows only failed."""
    values = [scale * r[metric] for r in finished(rows) if all(r.get(k) == v for k, v in match.items())]
    return values, failed_seeds(rows, **match)


def cell_summary(spec: dict, rows: list[dict], metric: str, **match) -> str:
    """fmt_ours of ``metric`` over the finished rows matching ``match`` (column=value), with n of
    the planned seeds and the seeds that only failed."""
    values, failed = cell_values(rows, metric, 1.0, **match)
    return fmt_ours(values, planned_seeds(spec), failed)


# ---- what the runs set beyond their spec ----

def extra_overrides(spec: dict, row: dict) -> dict[str, str]:
    """What one run set beyond its spec: the recorded overrides other than the preset, seed, swept
    keys, the variants' keys, runs_root, trainer.resume and hydra.* whose value differs from the
    budget of the run's sweep group (the spec's), plus trainer budget keys the run left at a
    different default (read from the CSV column of that name)."""
    group = group_of(spec, row.get("experiment"))
    budget = {k: hydra_value(v) for k, v in (group["budget"] if group else spec.get("budget") or {}).items()}
    fixed = {*LAUNCH_KEYS, *swept_keys(spec), *variant_keys(spec)}
    given = command_overrides(row.get("command"))
    extra = {k: v for k, v in given.items()
             if k not in fixed and not k.startswith("hydra.") and not same_value(budget.get(k, ""), v)}
    for key, value in budget.items():
        column = key.split(".")[-1]
        if (key.startswith("trainer.") and key not in given and column in row
                and not same_value(hydra_value(row[column]), value)):
            extra[key] = hydra_value(row[column])
    return extra


def setting_overrides(spec: dict, rows: list[dict]) -> list[str] | None:
    """The overrides beyond the spec that are not budget (not ``trainer.*``), as sorted distinct
    'key=value' over ``rows``; None when a run's command was not recorded (they are unknown)."""
    if any(not r.get("command") for r in rows):
        return None
    return sorted({f"{k}={v}" for r in rows for k, v in extra_overrides(spec, r).items()
                   if not k.startswith("trainer.")})


def regenerate_commands(spec: dict, rows: list[dict]) -> list[tuple[str, int]]:
    """The run_artifact.py command(s) that reproduce these runs: the spec plus whatever the
    recorded run commands override beyond its budget (as --set; --fast where the spec's ``speed``
    overrides are all set), restricted to the presets and seeds present. Runs with different extra
    overrides give one (command, run count) each."""
    speed = {k: hydra_value(v) for k, v in (spec.get("speed") or {}).items()}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("command"):
            groups.setdefault(tuple(sorted(extra_overrides(spec, r).items())), []).append(r)
    commands = []
    for extra, members in groups.items():
        args = [f"experiments/{spec['artifact']}.yaml"]
        presets = [p for p in spec_presets(spec) if any(m["experiment"] == p for m in members)]
        if presets != spec_presets(spec):
            args.append("--only " + ",".join(presets))
        seeds = sorted({m["seed"] for m in members})
        if seeds != sorted(int(s) for s in spec["sweep"]["seeds"]):
            args.append("--seeds " + ",".join(map(str, seeds)))
        sets = dict(extra)
        if speed and all(same_value(sets.get(k, ""), v) for k, v in speed.items()):
            args.append("--fast")
            sets = {k: v for k, v in sets.items() if k not in speed}
        args += [shlex.quote(f"--set={k}={v}") for k, v in sets.items()]
        commands.append(("scripts/run_artifact.py " + " ".join(args), len(members)))
    return commands


# ---- provenance: the same facts in every .md header and under every figure ----

def cells_text(spec: dict, rows: list[dict]) -> str:
    """'n=1–3 finished of 3 planned seeds, in 4 of 9 planned cells' over the cells with runs."""
    cells = coverage(spec, rows)
    counts = [c["finished"] for c in cells if c["finished"]]
    planned = len(planned_cells(spec))
    with_runs = sum(1 for c in cells[:planned] if c["finished"])
    extra = len(counts) - with_runs
    return (f"n={span(counts)} finished of {planned_seeds(spec)} planned seeds per cell, "
            f"in {with_runs} of {planned} planned cells" + (f" and {extra} unplanned" if extra else ""))


def provenance_lines(spec: dict, rows: list[dict], results_dir: Path, extra: list[str] = (),
                     compared=lambda r: None) -> list[str]:
    """Markdown bullets for a rendered file's header: hardware, budget set and used, seeds, n per
    cell, software, overrides beyond the spec, ``extra`` bullets, the command(s) that produced the
    runs, how to re-render the file, and a warning when budgets are mixed within one comparison
    (``compared(row)`` names a row's comparison; by default all rows are one). ``rows`` are all the
    artifact's runs (failed ones too)."""
    results = display_path(results_dir)
    rerender = (f"- Regenerate: `scripts/aggregate.py --results {results}` (the CSV, from the runs under "
                f"`runs/{spec['artifact']}/`), then `scripts/make_figures.py --results {results}` (this file)")
    done = finished(rows)
    lines = [f"- Runs: {len(done)} finished, {len(rows) - len(done)} failed "
             f"(from {spec['artifact']}_runs.csv); {cells_text(spec, rows)}"]
    if done:
        devices = Counter(r["device"] for r in done)
        overrides = setting_overrides(spec, done)
        lines += [
            "- Hardware: " + "; ".join(f"{d} ({n} runs)" for d, n in devices.most_common()),
            f"- Budget set: trainer.max_steps={distinct(done, 'max_steps')}, "
            f"trainer.max_minutes={distinct(done, 'max_minutes')}, trainer.eval_every={distinct(done, 'eval_every')}",
            f"- Budget used: {span([r['steps'] for r in done])} steps, "
            f"{span([r['wall_seconds'] / 60 for r in done if r.get('wall_seconds') is not None], '{:.1f}')} min per run",
            *([f"- Stopped before their step budget: {stopped_text(done)}; their numbers are those of a shorter, "
               "unfinished schedule"] if stopped_early(done) else []),
            f"- Seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in done}))}",
            f"- Software: torch {distinct(done, 'torch')}, precision {distinct(done, 'precision')}, "
            f"compile {distinct(done, 'compile')}",
            "- Overrides beyond the spec (not budget): "
            + ("unknown (commands not recorded)" if overrides is None
               else ", ".join(f"`{o}`" for o in overrides) or "none"),
        ]
    lines += list(extra)
    lines += [f"- Produced by: `{c}` ({n} run(s))" for c, n in regenerate_commands(spec, rows)]
    unrecorded = sum(1 for r in rows if not r.get("command"))
    if unrecorded:
        lines.append(f"- Command not recorded for {unrecorded} run(s) (made before runs recorded their "
                     "command); their budget is listed above and each run's config.yaml has the rest")
    lines.append(rerender)
    per: dict = {}
    for r in done:
        if r.get("steps") == 0:  # a training-free baseline (threshold): evaluated once, its budget unused
            continue
        per.setdefault(compared(r), set()).add(" ".join(f"{k}={show(r.get(k))}" for k in (
            "max_steps", "max_minutes", "eval_every", "precision", "compile")))
    budgets = set().union(*per.values()) if per else set()
    if any(len(b) > 1 for b in per.values()):
        lines.append("- **Warning: runs with different budgets are mixed here:** "
                     + "; ".join(f"`{b}`" for b in sorted(budgets)))
    return lines


def n_note(counts: dict[str, int], planned: int, unit: str = "point", limit: int = 4) -> str:
    """n per plotted point (or curve, bar, picture: ``unit``) of a figure: 'n=3 of 3 seeds per
    point', or the most common n and the points with another n ('n=2 of 3 seeds per point; n=3:
    a, b'), at most ``limit`` names each."""
    if not counts:
        return "no runs"
    by_n: dict[int, list[str]] = {}
    for label, n in counts.items():
        by_n.setdefault(n, []).append(label)
    common = max(by_n, key=lambda n: (len(by_n[n]), n))
    text = f"n={common} of {planned} seeds per {unit}"
    for n in sorted(k for k in by_n if k != common):
        names = by_n[n]
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        text += f"; n={n}: {', '.join(names[:limit])}{more}"
    return text


def caption(spec: dict, rows: list[dict], counts: dict[str, int], unit: str = "point") -> str:
    """The provenance a figure carries under its plots: n per point (``counts``: label -> runs),
    seeds, hardware, budget, overrides beyond the spec and the command(s) that produced the runs."""
    done = finished(rows)
    if not done:
        return "No finished runs."
    overrides = setting_overrides(spec, done)
    commands = regenerate_commands(spec, rows)
    seeds = ", ".join(str(s) for s in sorted({r["seed"] for r in done}))
    lines = [f"{n_note(counts, planned_seeds(spec), unit)}; seeds {seeds}; hardware: {distinct(done, 'device')}",
             f"budget: max_steps {distinct(done, 'max_steps')}, max_minutes {distinct(done, 'max_minutes')} "
             f"(steps reached {span([r['steps'] for r in done])}), precision {distinct(done, 'precision')}; "
             "overrides beyond the spec: "
             + ("unknown" if overrides is None else ", ".join(overrides) or "none")]
    if commands:
        more = f" (and {len(commands) - 1} more command(s), in the .md)" if len(commands) > 1 else ""
        lines.append(f"runs: {commands[0][0]}{more}")
    return "\n".join(lines)


def add_caption(fig, text: str, fontsize: float = 6.5) -> float:
    """Write ``text`` under a figure's plots, wrapped to its width; the figure grows to make room.
    Returns the fraction of the new height the text takes (for ``tight_layout(rect=(0, f, 1, 1))``)."""
    chars = max(40, int(fig.get_figwidth() * 72 / (0.62 * fontsize)))
    wrapped = "\n".join(textwrap.fill(line, chars, subsequent_indent="  ") for line in text.splitlines())
    height = (wrapped.count("\n") + 1) * fontsize * 1.3 / 72 + 0.15
    fig.set_figheight(fig.get_figheight() + height)
    fig.text(0.01, 0.01, wrapped, fontsize=fontsize, ha="left", va="bottom")
    return height / fig.get_figheight()


# ---- REPORT.md rows ----

@dataclass
class ReportRow:
    """One line of REPORT.md's side-by-side table: ours (``values``, already in the unit shown:
    accuracies in %) beside the paper's cell in the same unit (``paper``: mean, std, n), or
    ``paper_text`` where the paper has no number for it (None: the report says what the paper
    claims). ``stopped``: stopped_text of the runs behind ``values`` (None: none stopped early)."""
    what: str
    values: list[float]
    planned: int
    failed: int = 0
    paper: dict | None = None
    paper_text: str | None = None
    digits: int = 2
    stopped: str | None = None

    def ours(self) -> str:
        text = fmt_ours(self.values, self.planned, self.failed, scale=1.0, digits=self.digits)
        return f"{text}, {self.stopped}" if self.stopped and self.values else text


def report_row(what: str, runs: list[dict], metric: str, planned: int, failed: int = 0, scale: float = 100.0,
               **fields) -> ReportRow:
    """A ReportRow of ``scale * metric`` over the finished ``runs`` of one cell (scale 100: an
    accuracy in %), with whether they stopped early."""
    done = finished(runs)
    return ReportRow(what, [scale * r[metric] for r in done if r.get(metric) is not None], planned, failed,
                     stopped=stopped_text(done), **fields)


def compare(row: ReportRow) -> tuple[str, str | None]:
    """Ours against the paper for one row: (text, outcome). The gap is ours' mean minus the
    paper's; it *exceeds the seed spread* when larger in size than our sample std plus the paper's
    std. Outcome: 'exceeds', 'within', 'one run' (no std of ours to judge by), 'stopped' (a run
    stopped before its step budget: not compared, whatever the gap) or None (nothing to compare:
    no runs or no paper number)."""
    if not row.values or row.paper is None or row.paper.get("mean") is None:
        return "—", None
    if row.stopped:
        return "not compared: stopped before its step budget", "stopped"
    mean, std, _ = summary(row.values, 1.0)
    gap = mean - row.paper["mean"]
    d = row.digits
    if std is None:
        return f"{gap:+.{d}f} (one run: no seed spread to judge by)", "one run"
    spread = std + (row.paper.get("std") or 0.0)
    outcome = "exceeds" if abs(gap) > spread else "within"
    return f"{gap:+.{d}f}, {outcome} the seed spread ({spread:.{d}f})", outcome


@dataclass(frozen=True)
class Ranking:
    """One ranking a renderer reads from an artifact's history: ``metric`` (a history column,
    higher is better), the group (the ranked thing: a variant, a function; None: the row is not
    ranked) and the comparison block (a bpp level; one block: "all") of a history row."""
    metric: str
    group_of: Callable[[dict], str | None]
    block_of: Callable[[dict], object]


def by_run(rows: list[dict], key: Callable[[dict], object]) -> Callable[[dict], object]:
    """A history row's ``key(run)`` of its run (``rows``, by run_dir); None for a run not in ``rows``."""
    table = {r["run_dir"]: key(r) for r in rows if r.get("run_dir") is not None}
    return lambda h: table.get(h.get("run_dir"))


def block_order(block: object) -> tuple:
    """Blocks in reading order: "T=5" before "T=10" (a number after the last '=' sorts as a number)."""
    head, _, tail = str(block).rpartition("=")
    try:
        return (head, 0, float(tail), "")
    except ValueError:
        return (head, 1, 0.0, tail)


def ranking_lines(history: list[dict], metric: str, group_of: Callable[[dict], str | None],
                  block_of: Callable[[dict], str]) -> list[str]:
    """Markdown: per block (e.g. one bpp level), the weak order of the groups (best mean ``metric``
    over seeds first; '~' joins groups within the pooled seed spread) at every evaluation, whether it
    is the final order, and each block's verdict by the settle rule (renderers/settle.py)."""
    table = orders_by_step(history, metric, group_of, block_of)
    lines = [f"Ranking by evaluation step ({metric}, mean over seeds, best first; '~': within the pooled seed "
             "spread):", "", "| block | step | order | same as final |", "|---|---|---|---|"]
    verdicts = []
    for block in sorted(table, key=block_order):
        orders = table[block]
        if not orders:
            continue
        final = orders[max(orders)]
        lines += [f"| {block} | {step} | {order_text(order)} | {'yes' if order == final else 'no'} |"
                  for step, order in orders.items()]
        one = sum(len(tied) for tied in final) == 1
        verdicts.append(f"{block}: {'one group, nothing ranked' if one else settle(orders).text()}")
    lines += ["", "Settle rule (the order unchanged from that step to the end, over at least the last 30% of the "
              "run): " + "; ".join(verdicts) + "."]
    return lines


def ranking_by_T(rows: list[dict], history: list[dict], label: Callable[[dict], str],
                 metric: str = "test/all_or_none") -> list[str]:
    """The sorting tables' ranking by step: one block per sequence length T, the groups by
    ``label(run)`` (a model, an estimator); [] when the history holds no ``metric``."""
    if not any(h.get(metric) is not None for h in history):
        return []
    return ["", *ranking_lines(history, metric, by_run(rows, label), by_run(rows, lambda r: f"T={r['T']}"))]


@dataclass(frozen=True)
class ClaimOutcome:
    """The paper's ranking claim in one block, over one set of groups: ``held`` the evaluation steps
    at which its top tier held leaders only, ``outcome`` the settle rule on met-or-not step by step,
    ``whole`` the settle rule on the whole order (of that set's groups)."""
    among: str
    block: object
    metric: str
    top: tuple[str, ...]
    last: int
    held: tuple[int, ...]
    evaluations: int
    outcome: Verdict
    whole: Verdict

    @property
    def met(self) -> bool:
        return self.last in self.held


def claim_outcomes(paper: dict, rankings: list[Ranking], history: list[dict]) -> list[ClaimOutcome]:
    """The claim a spec states as ``paper.claim_leaders`` (the groups that should rank alone on
    top) among each set of ``paper.claim_among`` ({name: groups}), checked per ranking and block on
    the history: the weak order (the settle rule's ties) is taken over that set's groups alone."""
    leaders, sets = set(paper.get("claim_leaders") or ()), paper.get("claim_among") or {}
    out = []
    for name, among in sets.items() if leaders else ():
        for r in rankings:
            mine = (lambda h, g=r.group_of, among=set(among): (x if (x := g(h)) in among else None))
            for block, orders in sorted(orders_by_step(history, r.metric, mine, r.block_of).items(), key=lambda bo: str(bo[0])):
                if not orders:
                    continue
                held = tuple(step for step, order in orders.items() if set(order[0]) <= leaders)
                last = max(orders)
                out.append(ClaimOutcome(name, block, r.metric, orders[last][0], last, held, len(orders),
                                        settle({step: ((str(step in held),),) for step in orders}), settle(orders)))
    return out


def claim_lines(paper: dict, outcomes: list[ClaimOutcome]) -> list[str]:
    """Markdown: the claim check, one row per set, block and metric."""
    if not outcomes:
        return []
    lines = ["", f"The paper's claim ({paper.get('claim')}), checked per block: met where the top tier holds "
             f"{' or '.join(sorted(paper['claim_leaders']))} alone (ties as in the rankings below, over the groups "
             "compared); 'outcome' is the settle rule on met-or-not step by step, 'whole order' on the ranking:", "",
             "| compared | block | metric | at the last evaluation | met at | outcome | whole order |",
             "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.among} | {o.block} | {o.metric} | {'met' if o.met else 'not met'} (step {o.last}; top: "
                     f"{' ~ '.join(o.top)}) | {len(o.held)} of {o.evaluations} evaluations | "
                     f"{f'settled at step {o.outcome.step}' if o.outcome.settled else 'not settled'} | "
                     f"{f'settled at step {o.whole.step}' if o.whole.settled else 'not settled'} |")
    return lines
