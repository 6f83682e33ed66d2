"""Figure 4 and 5 renderers on hand-made CSV rows: panels, mean ± std table, 'not run' cells,
the posterior-probe column and panel, the reconstruction grid."""
import gzip
import importlib
import sys

import pytest
import yaml

from conftest import REPO, compose_config
from test_report import FROZEN_CPU

sys.path.insert(0, str(REPO / "scripts"))


def rows_for(tmp_path, with_png: bool):
    from PIL import Image

    rows = []
    for seed, (ssim, acc) in enumerate([(0.70, 0.60), (0.80, 0.70)]):
        for variant in ("dab_binary", "bernoulli"):
            run = tmp_path / f"{variant}_{seed}"
            run.mkdir()
            if with_png:
                Image.new("RGB", (240, 62), (seed * 100, 50, 50)).save(run / "reconstructions.png")
            rows.append({"run_dir": str(run), "experiment": "vae_fmnist", "seed": seed, "status": "finished",
                         "steps": 300, "wall_seconds": 100.0, "device": "test CPU", "max_steps": 300,
                         "max_minutes": None, "dataset": "fmnist", "variant": variant, "bpp_target": 0.1,
                         "bpp": 0.0995, "bits": 78.0, "ms_ssim": ssim - (variant == "bernoulli") * 0.1,
                         "linear_acc": acc, "recon_loss": 250.0,
                         "linear_acc_posterior": acc + 0.2 if variant == "bernoulli" else None})
    rows.append({**rows[0], "seed": 2, "status": "failed", "ms_ssim": None, "linear_acc": None})
    return rows


def test_figure4_renders_panels_table_and_grid(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "figure4.yaml").read_text())
    render = importlib.import_module("renderers.figure4").render
    out = render(spec, rows_for(tmp_path, with_png=True), tmp_path / "results")
    names = {p.name for p in out}
    assert names == {"figure4.md", "figure4.png", "figure4_reconstructions.png"}
    assert all(p.stat().st_size > 0 for p in out)
    md = (tmp_path / "results" / "figure4.md").read_text()
    line = next(x for x in md.splitlines() if "| dab-binary | 0.1 |" in x and "Fashion-MNIST" in x)
    # n of the spec's 3 seeds; the failed seed 2 is counted as failed, its empty metrics left out
    # MS-SSIM an index, the probe accuracies in % like every accuracy of the suite
    assert "| 0.750 ± 0.071 (n=2 of 3, 1 failed) | 65.00 ± 7.07 (n=2 of 3, 1 failed) |" in line
    assert ("| bernoulli | 0.1 | 0.0995 | 0.650 ± 0.071 (n=2 of 3) | 65.00 ± 7.07 (n=2 of 3) | "
            "85.00 ± 7.07 (n=2 of 3) |") in md
    assert "| MS-SSIM | linear acc. % | linear acc. % (posterior) |" in md
    assert line.endswith("| — |")  # a deterministic code has no posterior probe
    assert "| CIFAR-10 | dab-binary | 0.1 | — | not run | not run | not run |" in md
    assert "| Fashion-MNIST | discrete | 0.02 | — | not run | not run | not run |" in md
    assert "- Hardware: test CPU (4 runs)" in md and "trainer.max_steps=300" in md


def panel_columns(png) -> int:
    """Panels per row of a rendered Figure 4: 5 inches each at 120 dpi."""
    from PIL import Image

    return round(Image.open(png).size[0] / 600)


def test_figure4_posterior_panel_only_when_runs_report_it(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "figure4.yaml").read_text())
    figure4 = importlib.import_module("renderers.figure4")
    rows = rows_for(tmp_path, with_png=False)
    assert panel_columns(figure4.plot(spec, rows, tmp_path / "with.png")) == 3
    old = [{k: v for k, v in r.items() if k != "linear_acc_posterior"} for r in rows]  # a CSV from before
    assert panel_columns(figure4.plot(spec, old, tmp_path / "without.png")) == 2
    md = "\n".join(figure4.table(spec, old))
    assert ("| Fashion-MNIST | bernoulli | 0.1 | 0.0995 | 0.650 ± 0.071 (n=2 of 3) | 65.00 ± 7.07 (n=2 of 3) "
            "| — |") in md
    # the third panel: the posterior probe for a stochastic variant, the code probe for a deterministic one
    bern, binary = rows[1], rows[0]
    assert (bern["variant"], binary["variant"]) == ("bernoulli", "dab_binary")
    stochastic = figure4.stochastic(spec)
    assert stochastic == {"bernoulli", "discrete", "discrete_cosine", "dab_bernoulli"}  # from the variants' latents
    assert figure4.posterior_probe(bern, stochastic) == 0.8 and figure4.posterior_probe(binary, stochastic) == 0.6
    assert figure4.posterior_probe({**bern, "linear_acc_posterior": None}, stochastic) is None  # never the draw's


def test_figure5_renders_one_bpp_level_without_pngs(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "figure5.yaml").read_text())
    rows = [{**r, "dataset": "imagenet", "experiment": "vae_imagenet", "bpp_target": 0.00097}
            for r in rows_for(tmp_path, with_png=False)]
    out = importlib.import_module("renderers.figure5").render(spec, rows, tmp_path / "results")
    assert {p.name for p in out} == {"figure5.md", "figure5.png"}
    md = out[0].read_text()
    assert "| ImageNet | dab-binary | 0.00097 | 0.0995 | 0.750 ± 0.071 (n=2 of 5, 1 failed)" in md
    assert "| ImageNet | threshold | 0.00097 | — | not run | not run |" in md


@pytest.mark.parametrize("spec_name", ["figure4", "figure5"])
def test_specs_keep_the_contract(spec_name):
    spec = yaml.safe_load((REPO / "experiments" / f"{spec_name}.yaml").read_text())
    for key in ("artifact", "title", "source", "sweep", "budget", "metric", "paper", "columns", "render"):
        assert key in spec
    assert all(p.startswith(("config.", "metrics.")) for p in spec["columns"].values())
    assert (REPO / "scripts" / "renderers" / f"{spec['render']}.py").is_file()
    assert len(spec["sweep"]["overrides"]["latent.bpp"]) >= (4 if spec_name == "figure4" else 1)
    assert spec["columns"]["bpp_target"] == "config.latent.bpp"
    assert "variant" not in spec["columns"]  # aggregate.py's standard column: the variant's label


@pytest.mark.parametrize("spec_name", ["figure4", "figure5"])
def test_every_variant_is_one_latent_with_its_estimator_and_composes(spec_name):
    """A variant's label is the paper's name; its overrides pick the one latent mechanism
    (bridged_* behind dab.estimator, or a VAE baseline)."""
    from dab.suite.families import parse

    spec = yaml.safe_load((REPO / "experiments" / f"{spec_name}.yaml").read_text())
    figure4 = importlib.import_module("renderers.figure4")
    for label, overrides in spec["sweep"]["variants"].items():
        assert label in figure4.LEGEND
        assert set(overrides) <= {"latent", "dab.estimator", "latent.anneal", "latent.anneal_epochs"}
        assert overrides.get("dab.estimator", "dab") == ("ste" if label.startswith("ste_") else "dab")
        cfg = compose_config([f"+experiment={spec['sweep']['presets'][0]}",
                              *(f"{k}={v}" for k, v in overrides.items()), "trainer.device=cpu"])
        assert ("(ours)" in figure4.LEGEND[label]) == (label.startswith("ste_") or "latent.anneal" in overrides)
        parse(cfg)
        assert cfg.latent.name == overrides["latent"]


@pytest.mark.parametrize("tier", ["cpu", "gpu", "cpu-now"])
def test_committed_figure4_runs_render_in_the_specs_cells(tier, tmp_path):
    """The committed Figure 4 runs recorded their latent by its old name (latent=dab_binary, before
    one mechanism, latent=bridged_binary dab.estimator=dab, replaced those names): their `variant`
    column holds the label, so they still fall in the spec's cells, carry no extra override, and
    the table and ranking show their numbers at every bpp level they ran. The CPU tier's runs of
    that time are frozen; the campaign's runs that replaced them (``cpu-now``) render the same way."""
    common = importlib.import_module("renderers.common")
    figure4 = importlib.import_module("renderers.figure4")
    spec = yaml.safe_load((REPO / "experiments" / "figure4.yaml").read_text())
    for name in ("figure4_runs.csv", "figure4_history.csv"):
        if tier == "cpu":  # the CPU tier's runs of that time, frozen (the campaign has replaced them since)
            (tmp_path / name).write_bytes(gzip.decompress((FROZEN_CPU / f"{name}.gz").read_bytes()))
        elif (REPO / "results" / tier.split("-")[0] / name).exists():
            (tmp_path / name).write_bytes((REPO / "results" / tier.split("-")[0] / name).read_bytes())
    rows = common.load_rows(tmp_path / "figure4_runs.csv")
    if tier != "cpu-now":
        assert all(f"latent={r['variant']} " in r["command"] for r in rows)  # the old names, as recorded
    cells = {c["cell"]: c["finished"] for c in common.coverage(spec, rows)}
    assert len(cells) == len(common.planned_cells(spec)) and sum(cells.values()) == len(rows)  # all in planned cells
    assert not any(o.startswith("latent") for o in common.setting_overrides(spec, rows))
    md = figure4.render(spec, rows, tmp_path)[0].read_text()
    levels = sorted({r["bpp_target"] for r in rows})
    for r in rows:
        line = next(x for x in md.splitlines()
                    if x.startswith(f"| Fashion-MNIST | {figure4.LEGEND[r['variant']]} | {r['bpp_target']:g} |"))
        assert "not run" not in line
    if (tmp_path / "figure4_history.csv").exists():
        assert all(f"| bpp {b:g} | " in md for b in levels)
        # the paper's claim checked per set compared, block and metric, beside the rankings
        for among in spec["paper"]["claim_among"]:
            for b in levels:
                for metric in ("test/ms_ssim", "test/linear_acc"):
                    (row,) = [x for x in md.splitlines() if x.startswith(f"| {among} | bpp {b:g} | {metric} | ")]
                    assert " evaluations | " in row and row.split(" | ")[3].startswith(("met (step", "not met (step"))
