"""scripts/project_times.py: every spec's projected time from benchmark records (hand-made here)."""
import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import project_times  # noqa: E402


def records(folder, sort_steps_per_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_cpu_1.json").write_text(json.dumps(
        {"experiment": "sort_t10", "batch_size": 1024, "device": "test CPU", "ours_eager_samples_per_s": 1024 * sort_steps_per_s}))
    (folder / "bench_autoencoder_1.json").write_text(json.dumps(
        {"benchmark": "fmnist", "device": "test CPU", "batch_size": 128, "ours_images_per_s": 128 * 10.0}))
    (folder / "bench_classification_cpu.json").write_text(json.dumps(
        {"settings": {"width": 16, "batch": 128, "precision": "fp32", "device": "test CPU"},
         "ours_sort_rows_cols": 128 * 2.0}))


def test_every_spec_is_projected_and_a_faster_rate_shortens_it(tmp_path, capsys):
    records(tmp_path / "slow", 10.0)
    records(tmp_path / "fast", 1000.0)
    slow = project_times.main(["--bench", str(tmp_path / "slow")])
    out = capsys.readouterr().out
    for spec in (REPO / "experiments").glob("*.yaml"):
        assert f"  {spec.stem} " in out, spec.stem
    assert "sort           10.00 steps/s" in out
    fast = project_times.main(["--bench", str(tmp_path / "fast")])
    assert 0 < fast < slow
    table1 = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("table1 ")][0]
    assert "27 runs x  30000 steps, cap 20 min" in table1  # 30,000 steps at 1,000 steps/s: 0.5 min a run
    assert table1.endswith("13.5 min")
