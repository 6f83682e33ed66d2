"""The three benchmark scripts (`make bench`) end to end on a tiny budget, as subprocesses: each
composes its real preset, prints a rate for the plain loop and for ours and the ratio, and writes its
JSON. Numbers are not judged (a benchmark is not a timed test): present, positive, consistent."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

HAS_FMNIST = (REPO / "data" / "FashionMNIST" / "raw").is_dir()
NO_FMNIST = "Fashion-MNIST not under data/FashionMNIST/raw (run `make data`)"


def run_script(name: str, *args: str) -> list[str]:
    """``python scripts/<name> *args`` from the repo root on the CPU; its stdout lines."""
    out = subprocess.run([sys.executable, f"scripts/{name}", "--device", "cpu", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()


def test_sorting_bench(tmp_path):
    lines = run_script("bench.py", "--seconds", "0.5", "--repeats", "2", "--tta-minutes", "0.05", "--tta-steps", "50",
                       "--eval-every", "10", "--out", str(tmp_path))
    assert lines[-1].startswith("speedup_vs_plain=") and float(lines[-1].split("=")[1]) > 0
    for label in ("plain reference-style loop", "dab trainer step, fp32 eager", "dab trainer loop, fp32 eager",
                  "dab trainer, fp32 torch.compile",
                  "time to accuracy, sort_t5", "plain loop (paper recipe) after the same"):
        assert any(line.startswith(label) for line in lines), (label, lines)
    (record_path,) = tmp_path.glob("bench_cpu_*.json")
    record = json.loads(record_path.read_text())
    assert record["experiment"] == "sort_t10" and record["batch_size"] == 1024  # the preset's own batch
    rates = [record[k] for k in ("plain_samples_per_s", "ours_eager_samples_per_s", "ours_loop_samples_per_s",
                                 "ours_fast_samples_per_s")]
    assert min(rates) > 0 and all(len(v) == 2 for v in record["samples_per_s_each"].values())  # two rounds
    assert record["speedup_vs_plain"] == pytest.approx(record["ours_fast_samples_per_s"] / record["plain_samples_per_s"])
    tta = record["time_to_accuracy"]
    assert tta["ours"]["steps"] > 0 and 0 <= tta["ours"]["accuracy"] <= 1
    assert tta["plain_same_seconds"]["steps"] > 0 and 0 <= tta["plain_same_seconds"]["accuracy"] <= 1
    assert record_path.with_suffix(".txt").read_text().splitlines() == lines


@pytest.mark.skipif(not HAS_FMNIST, reason=NO_FMNIST)
def test_autoencoder_bench(tmp_path):
    lines = run_script("bench_autoencoder.py", "--seconds", "0.5", "--workers", "0", "--out", str(tmp_path))
    assert lines[-1].startswith("speedup_vs_plain=") and float(lines[-1].split("=")[1]) > 0
    assert any(line.startswith("plain (DataLoader") for line in lines) and any(line.startswith("ours") for line in lines)
    record = json.loads(next(tmp_path.glob("bench_autoencoder_*.json")).read_text())
    assert record["batch_size"] == 128 and "vae_fmnist" in record["benchmark"]
    assert record["plain_images_per_s"] > 0 and record["ours_images_per_s"] > 0
    assert record["speedup_vs_plain"] == pytest.approx(record["ours_images_per_s"] / record["plain_images_per_s"])


@pytest.mark.parametrize("data", ["synthetic", pytest.param("fmnist32", marks=pytest.mark.skipif(not HAS_FMNIST,
                                                                                                reason=NO_FMNIST))])
def test_classification_bench(data, tmp_path):
    out = tmp_path / "bench_classification.json"
    lines = run_script("bench_classification.py", "--data", data, "--width", "4", "--batch", "32", "--images", "256",
                       "--seconds", "0.5", "--warmup", "2", "--workers", "0", "--out", str(out))
    assert lines[-1].startswith("identity_vs_plain=") and "sort_step_overhead=" in lines[-1]
    for label in ("ours  identity", "ours  sort_rows_cols", "plain identity"):
        assert any(line.startswith(label) for line in lines), (label, lines)
    record = json.loads(out.read_text())
    assert record["settings"]["data"] == data and record["settings"]["batch"] == 32
    assert min(record[k] for k in ("ours_identity", "ours_sort_rows_cols", "plain_identity")) > 0
    assert record["identity_vs_plain"] == pytest.approx(record["ours_identity"] / record["plain_identity"])
    assert record["sort_step_overhead"] == pytest.approx(record["ours_identity"] / record["ours_sort_rows_cols"] - 1)


def test_settings_bench(tmp_path):
    lines = run_script("bench_settings.py", "--families", "sorting", "--settings", "bf16 eager", "--seconds", "0.3",
                       "--repeats", "2", "--out", str(tmp_path))
    record = json.loads(next(tmp_path.glob("bench_settings_cpu_*.json")).read_text())
    settings = record["families"]["sorting"]["settings"]
    assert settings["fp32 eager"]["ratio"] == 1.0 and settings["fp32 eager"]["steps_per_s"] > 0
    from dab.suite.step import cpu_supports_bf16
    if cpu_supports_bf16():
        assert settings["bf16 eager"]["steps_per_s"] > 0 and any("bf16 eager" in line for line in lines)
    else:
        assert "bf16 eager" not in settings and any("no bf16 support" in line for line in lines)
