"""Provenance of every rendered artifact and the pipeline's own messages: each .md and each figure
of every renderer states n, seeds, the step budget, the hardware, the command that produced the
runs and the overrides beyond the spec; cells come from the recorded command (dab=ste, not the
group's contents); aggregate.py sums up empty cells in one line; run_artifact.py's time estimate
follows max_steps at a measured speed; experiments/README.md describes the specs as they are.
(The report over every tier, and where its verdicts show: tests/test_report.py.)"""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import aggregate  # noqa: E402
import run_artifact  # noqa: E402
from renderers import ablation_estimators, classification, common, figure3, figure4, table1  # noqa: E402

OVERRIDE = "dataset.test_size=2000"


def spec_of(name: str) -> dict:
    return yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())


def run(experiment: str, seed: int, swept: str = "", status: str = "finished", **cols) -> dict:
    """One CSV row as aggregate.py writes it: 300-step budget on 'test CPU', a recorded command
    with the swept values and one non-budget override."""
    command = (f"python train.py +experiment={experiment} seed={seed} {swept} trainer.max_steps=300 "
               f"{OVERRIDE} trainer.device=cpu runs_root=runs/x trainer.resume=auto")
    return {"artifact": "x", "experiment": experiment, "cell": None, "seed": seed, "status": status, "steps": 300,
            "wall_seconds": 30.0, "device": "test CPU", "torch": "2.x", "precision": "fp32", "compile": False,
            "max_steps": 300, "max_minutes": 10, "eval_every": 100, "command": command,
            "run_dir": f"runs/x/{experiment}/{swept}/{seed}", **cols}


def sort_rows(presets, metric="all_or_none", **extra):
    """Signum-Dense style rows, seeds 0 and 1, for the sorting renderers."""
    out = []
    for preset in presets:
        T = int(preset.rsplit("_t", 1)[1].split("_")[0])
        for seed in (0, 1):
            out.append(run(preset, seed, T=T, model_name="dense", hard_fn="identity" if "elu" in preset else "signum",
                           activation="elu" if "elu" in preset else "tanh", ponder_steps=0, estimator="dab",
                           loss_to_input=False, **{metric: 0.9 + 0.01 * seed, "per_element": 0.95}, **extra))
    return out


def vae_rows():
    return [run("vae_fmnist", seed, f"latent={v} latent.bpp=0.1", dataset="fmnist", variant=v, bpp_target=0.1,
                bpp=0.1, ms_ssim=0.7, linear_acc=0.6) for v in ("dab_binary", "bernoulli") for seed in (0, 1)]


def cls_rows(experiment, swept="", **cols):
    return [run(experiment, seed, swept, dataset="fmnist32", width=8, accuracy=0.7, emd=1.2, estimator="dab",
                hard_fn="signum", hard_fn_after=4, **cols) for seed in (0, 1)]


def write_history(results, artifact, rows, metric):
    with open(results / f"{artifact}_history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["run_dir", "seed", "step", metric])
        w.writeheader()
        w.writerows({"run_dir": r["run_dir"], "seed": r["seed"], "step": 100, metric: 0.5} for r in rows)


CASES = {
    "table1": (table1, lambda: sort_rows(["sort_t5", "sort_t10"])),
    "ablation_estimators": (ablation_estimators, lambda: sort_rows(["sort_t5", "sort_elu_t5"])),
    "figure3": (figure3, lambda: [{**r, "command": r["command"].replace("seed=", "model.ponder_steps=0 seed=")}
                                  for r in sort_rows(["sort_lstm_t5"], "all_or_none_best")]),
    "figure4": (figure4, vae_rows),
    "table2": (classification, lambda: cls_rows("classify_signum")),
    "figure6_left": (classification, lambda: cls_rows("classify_signum", "model.hard_fn_after=4")),
    "figure6_middle": (classification,
                       lambda: cls_rows("classify_sort", "dab.loss_to_input=false", loss_to_input=False)),
    "figure6_right": (classification, lambda: cls_rows("classify_sort1d", "dab=conv")),
}


@pytest.mark.parametrize("artifact", list(CASES))
def test_every_md_and_figure_states_n_seeds_budget_hardware_command_and_overrides(artifact, tmp_path, monkeypatch):
    module, make_rows = CASES[artifact]
    rows = make_rows()
    captions = []

    def spy(fig, text, *args, **kwargs):
        captions.append(text)
        return common.add_caption(fig, text, *args, **kwargs)

    monkeypatch.setattr(module, "add_caption", spy, raising=False)
    if artifact in ("figure6_middle", "figure6_right"):
        write_history(tmp_path, artifact, rows, "test/emd" if artifact == "figure6_middle" else "test/accuracy")
    if artifact == "figure4":  # each run's reconstructions.png, for the grid figure
        from PIL import Image

        for i, r in enumerate(rows):
            r["run_dir"] = str(tmp_path / f"run{i}")
            Path(r["run_dir"]).mkdir()
            Image.new("RGB", (60, 30)).save(Path(r["run_dir"]) / "reconstructions.png")
    outputs = module.render(spec_of(artifact), rows, tmp_path)

    (md,) = [p for p in outputs if p.suffix == ".md"]
    text = md.read_text()
    assert "- Runs: " in text and "finished of 3 planned seeds per cell" in text
    assert "- Seeds: 0, 1" in text and "- Hardware: test CPU" in text
    assert "- Budget set: trainer.max_steps=300," in text
    assert f"- Overrides beyond the spec (not budget): `{OVERRIDE}`" in text
    assert f"- Produced by: `scripts/run_artifact.py experiments/{artifact}.yaml" in text
    assert f"- Regenerate: `scripts/aggregate.py --results {tmp_path}`" in text

    pngs = [p for p in outputs if p.suffix == ".png"]
    assert len(pngs) == {"table1": 0, "ablation_estimators": 0, "table2": 0, "figure4": 2}.get(artifact, 1)
    assert len(captions) == len(pngs)  # every figure carries its caption
    for note in captions:  # the reconstruction grid shows one run per picture, the first seed's
        assert "\nn=1 of 3 seeds per picture; seeds 0;" in f"\n{note}" or "\nn=2 of 3 seeds per" in f"\n{note}", note
        assert "seeds 0, 1; " in note or "per picture" in note
        assert "hardware: test CPU" in note
        assert "max_steps 300" in note and f"overrides beyond the spec: {OVERRIDE}" in note
        assert f"runs: scripts/run_artifact.py experiments/{artifact}.yaml" in note


def test_runs_stopped_before_their_budget_are_named_in_the_header(tmp_path):
    rows = sort_rows(["sort_t5"])
    rows[1] = {**rows[1], "steps": 250, "wall_seconds": 600.5}  # its 10-minute cap ended it at 250 of 300
    (md,) = table1.render(spec_of("table1"), rows, tmp_path)
    assert ("- Stopped before their step budget: 1 of 2 runs stopped at 250 of 300 steps (max_minutes cap); their "
            "numbers are those of a shorter, unfinished schedule") in md.read_text()
    (line,) = [r for r in table1.report_rows(spec_of("table1"), rows) if r.values]
    assert line.stopped == "1 of 2 runs stopped at 250 of 300 steps (max_minutes cap)"
    assert common.compare(line)[1] == "stopped"


def test_a_training_free_run_does_not_count_as_a_mixed_budget(tmp_path):
    """A threshold run trains nothing (0 steps) whatever its max_steps: beside longer runs it is no
    mix of budgets; a trained run at another budget is."""
    rows = sort_rows(["sort_t5"])
    free = {**rows[0], "steps": 0, "max_steps": 1000, "run_dir": "runs/free"}
    header = "\n".join(common.provenance_lines(spec_of("table1"), [*rows, free], tmp_path))
    assert "budgets are mixed" not in header
    other = {**rows[0], "max_steps": 1000, "steps": 1000, "run_dir": "runs/other"}
    header = "\n".join(common.provenance_lines(spec_of("table1"), [*rows, other], tmp_path))
    assert "**Warning: runs with different budgets are mixed here:**" in header


def test_n_note_names_the_points_with_another_n():
    assert common.n_note({"a": 3, "b": 3}, 3) == "n=3 of 3 seeds per point"
    assert common.n_note({"a": 2, "b": 2, "c": 3}, 3, "bar") == "n=2 of 3 seeds per bar; n=3: c"
    assert common.n_note({str(i): 1 for i in range(6)} | {"x": 2, "y": 2}, 3, limit=1) == \
        "n=1 of 3 seeds per point; n=2: x and 1 more"


def test_a_swept_config_group_is_named_by_its_option_from_the_command():
    """figure6_right sweeps the `dab` group, whose config holds no name: the cell is `dab=ste`."""
    spec = spec_of("figure6_right")
    row = run("classify_sort1d", 0, "dab=ste", cell="classify_sort1d dab={'gamma': 0.0, 'estimator': 'ste'}")
    assert common.row_cell(spec, row) == "classify_sort1d dab=ste"
    cells = {c["cell"]: c["finished"] for c in common.coverage(spec, [row])}
    assert cells == {"classify_sort1d dab=conv": 0, "classify_sort1d dab=ste": 1}


def test_aggregate_sums_up_empty_cells_in_one_line(capsys):
    spec = spec_of("figure3")  # 10 cells
    aggregate.print_coverage(spec, [run("sort_lstm_t5", 0, "model.ponder_steps=1")])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["  sort_lstm_t5 model.ponder_steps=1: 1 finished, 0 failed, 2 missing of 3 planned seed(s)",
                     "  9 of 10 cell(s) have no runs yet: sort_lstm_t5 model.ponder_steps=0, "
                     "sort_lstm_t5 model.ponder_steps=2, sort_lstm_t5 model.ponder_steps=5 and 6 more"]


def test_time_estimate_follows_max_steps_at_the_measured_speed():
    spec = {"measured_speed": [{"where": "test machine", "steps_per_second": {"a": 10}}]}
    budget = {"trainer.max_steps": "600", "trainer.max_minutes": "5"}
    lines = run_artifact.time_estimate(spec, {"a": 2, "b": 1}, budget, 1)
    # a: 2 x 60 s at 10 steps/s; b: not measured, at its 5-minute cap -> 420 s
    assert lines[1] == "  at the speed measured on test machine: about 7 min (b: not measured there, counted at the cap)"
    assert lines[2] == "  upper bound, every run at its 5-min cap: 15 min"
    longer = run_artifact.time_estimate(spec, {"a": 2}, {**budget, "trainer.max_steps": "1200"}, 2)
    assert longer[1] == "  at the speed measured on test machine: about 2 min"  # 2 x 120 s, 2 at once
    capped = run_artifact.time_estimate(spec, {"a": 2}, {**budget, "trainer.max_steps": "30000"}, 1)
    assert capped[1] == "  at the speed measured on test machine: about 10 min"  # the cap, not 100 min
    bare = run_artifact.time_estimate({}, {"a": 4}, budget, 1)
    assert bare[1:] == ["  upper bound, every run at its 5-min cap: 20 min (no measured speed in the spec, or no max_steps)"]


def test_run_artifact_prints_the_estimate_for_the_budget_given():
    proc = subprocess.run([sys.executable, "scripts/run_artifact.py", "experiments/table1.yaml", "--dry-run",
                           "--only", "sort_t5", "--set", "trainer.max_steps=1500"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    speeds = spec_of("table1")["measured_speed"]
    for entry in speeds:
        seconds = 3 * 1500 / entry["steps_per_second"]["sort_t5"]
        took = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
        assert f"  at the speed measured on {entry['where']}: about {took}\n" in proc.stdout
    assert "  upper bound, every run at its 20-min cap: 60 min" in proc.stdout


def test_experiments_readme_describes_the_specs():
    """Its table has one row per spec with that spec's seeds and run count."""
    readme = (REPO / "experiments" / "README.md").read_text()
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        sweep = spec["sweep"]
        n = len(common.planned_cells(spec)) * len(sweep["seeds"])
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{path.name}` |")), None)
        assert row is not None, f"experiments/README.md has no row for {path.name}"
        assert f"seeds {sweep['seeds'][0]}–{sweep['seeds'][-1]} ({n} runs" in row, row
