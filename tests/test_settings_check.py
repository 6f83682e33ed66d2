"""The faster-setting check (scripts/check_settings.py) and its use by the campaign: a setting is
adopted only after a passing check on a full block, only where the CPU can run it, and never for a
run that started without it."""
import csv
import json
import sys

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import campaign  # noqa: E402
import check_settings  # noqa: E402
from test_campaign import tiny_spec  # noqa: E402

from dab.suite.step import cpu_supports_bf16  # noqa: E402


def test_same_ranking_and_small_shifts_pass():
    base = {"a": [0.90, 0.91, 0.92], "b": [0.70, 0.71, 0.69], "c": [0.50, 0.52, 0.51]}
    near = {"a": [0.905, 0.915, 0.91], "b": [0.70, 0.705, 0.70], "c": [0.505, 0.51, 0.50]}
    c = check_settings.compare(base, near)
    assert c["passed"] and c["reversed"] == "" and c["order_fp32"] == c["order_setting"] == "a > b > c"


def test_a_reversed_pair_fails_even_with_small_shifts():
    base = {"a": [0.60, 0.60, 0.61], "b": [0.58, 0.58, 0.57]}
    flipped = {"a": [0.58, 0.58, 0.57], "b": [0.60, 0.60, 0.61]}
    c = check_settings.compare(base, flipped)
    assert not c["passed"] and c["reversed"] == "a / b"


def test_a_shift_beyond_the_seed_spread_fails_without_a_reversal():
    base = {"a": [0.90, 0.91, 0.92], "b": [0.50, 0.51, 0.52]}
    lower = {"a": [0.80, 0.81, 0.82], "b": [0.40, 0.41, 0.42]}  # same order, every mean 0.1 lower
    c = check_settings.compare(base, lower)
    assert c["reversed"] == "" and not c["passed"] and c["max_shift"] > c["spread"]


def test_ties_reverse_nothing():
    assert check_settings.reversed_pairs((("a",), ("b",)), (("a", "b"),)) == []
    assert check_settings.reversed_pairs((("a",), ("b", "c")), (("c",), ("a", "b"))) == [("a", "c")]


def write_rows(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=check_settings.FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in check_settings.FIELDS})


def test_only_the_latest_check_of_a_setting_counts_and_every_metric_must_pass(tmp_path):
    row = {"spec": "tiny", "setting": "trainer.precision=bf16", "block": "all", "hardware": "cpu"}
    write_rows(tmp_path / "settings_check.csv", [
        {**row, "date": "2026-12-01 10:00", "metric": "m1", "passed": "True"},
        {**row, "date": "2026-12-02 10:00", "metric": "m1", "passed": "True"},
        {**row, "date": "2026-12-02 10:00", "metric": "m2", "passed": "False"},
        {**row, "setting": "trainer.compile=true", "date": "2026-12-02 10:00", "metric": "m1", "passed": "True"},
        {**row, "spec": "other", "setting": "x=1", "date": "2026-12-02 10:00", "metric": "m1", "passed": "True"}])
    assert set(check_settings.passed_settings(tmp_path, "tiny")) == {"trainer.compile=true"}
    assert check_settings.passed_settings(tmp_path / "none", "tiny") == {}


def test_the_campaign_adopts_a_setting_only_after_a_passing_check(tmp_path, monkeypatch):
    spec = tiny_spec()
    spec["cpu"]["faster"] = ["trainer.precision=bf16", "trainer.compile=true"]
    said = []
    assert campaign.faster_settings("tiny", spec, tmp_path, said.append) == []
    assert all("fp32 eager" in s and "no passing check" in s for s in said)
    write_rows(tmp_path / "settings_check.csv", [
        {"spec": "tiny", "setting": s, "date": "2026-12-02 10:00", "metric": "m", "passed": "True", "block": "all",
         "hardware": "cpu"} for s in spec["cpu"]["faster"]])
    import dab.suite.step as step
    monkeypatch.setattr(step, "cpu_supports_bf16", lambda: False)
    said.clear()
    assert campaign.faster_settings("tiny", spec, tmp_path, said.append) == ["trainer.compile=true"]
    assert any("no bf16 support" in s for s in said)  # the fallback says why
    monkeypatch.setattr(step, "cpu_supports_bf16", lambda: True)
    assert campaign.faster_settings("tiny", spec, tmp_path, said.append) == spec["cpu"]["faster"]


def test_a_started_run_keeps_the_setting_it_started_with(tmp_path):
    runs = campaign.spec_runs(tiny_spec(), tmp_path)
    started = runs[0].run_dir
    started.mkdir(parents=True)
    (started / "config.yaml").write_text(yaml.safe_dump({"trainer": {"precision": "fp32", "compile": False}}))
    out = campaign.with_settings(runs, ["trainer.precision=bf16"])
    assert out[0].overrides[-2:] == ["trainer.precision=fp32", "trainer.compile=false"]
    # the rest of its block follows it (a block is ranked in one setting); the other block takes the new one
    same = [r for r in out[1:] if r.block == runs[0].block]
    assert len(same) == 3 and all(r.overrides[-2:] == ["trainer.precision=fp32", "trainer.compile=false"] for r in same)
    others = [r for r in out if r.block != runs[0].block]
    assert len(others) == 4 and all(r.overrides[-1] == "trainer.precision=bf16" for r in others)


def test_a_spec_may_use_the_check_of_another_with_the_same_set_up(tmp_path, monkeypatch):
    import dab.suite.step as step
    monkeypatch.setattr(step, "cpu_supports_bf16", lambda: True)
    checked, user = tiny_spec(), tiny_spec()
    checked["cpu"].update(faster=["trainer.precision=bf16"], check="dataset.length=5")
    user["cpu"].update(faster=["trainer.precision=bf16"], checked_on="checked")
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    for name, spec in (("checked", checked), ("user", user)):
        (experiments / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    assert [n for n, _ in campaign.specs(experiments, None)] == ["checked", "user"]
    # before any check: the checked spec has it pending, the other spec waits for it
    assert campaign.pending_checks("checked", checked, tmp_path) == ["trainer.precision=bf16"]
    assert campaign.pending_checks("user", user, tmp_path) == []
    said = []
    assert campaign.faster_settings("user", user, tmp_path, said.append) == []
    assert "no passing check of it on checked" in said[0]
    write_rows(tmp_path / "settings_check.csv", [
        {"spec": "checked", "setting": "trainer.precision=bf16", "date": "2026-12-02 10:00", "metric": "m",
         "passed": "False", "block": "dataset.length=5", "hardware": "cpu"}])
    assert campaign.pending_checks("checked", checked, tmp_path) == []  # a failed check is not run again
    assert campaign.faster_settings("user", user, tmp_path, said.append) == []
    write_rows(tmp_path / "settings_check.csv", [
        {"spec": "checked", "setting": "trainer.precision=bf16", "date": "2026-12-02 11:00", "metric": "m",
         "passed": "True", "block": "dataset.length=5", "hardware": "cpu"}])
    said.clear()
    assert campaign.faster_settings("user", user, tmp_path, said.append) == ["trainer.precision=bf16"]
    assert "checked checked on dataset.length=5" in said[0]
    # another set-up, or a spec without a check, is refused by name
    user["cpu"]["set"] = {**user["cpu"]["set"], "dab.hidden": "16"}
    (experiments / "user.yaml").write_text(yaml.safe_dump(user))
    with pytest.raises(SystemExit, match="checked_on: checked checks another set-up"):
        campaign.specs(experiments, None)
    user["cpu"].update(set=checked["cpu"]["set"], checked_on="nope")
    (experiments / "user.yaml").write_text(yaml.safe_dump(user))
    with pytest.raises(SystemExit, match="'nope' is no spec whose cpu: block has a check; valid choices: checked"):
        campaign.specs(experiments, None)


def test_the_campaign_runs_a_pending_check_first_on_the_block_it_names(tmp_path, monkeypatch):
    import dab.suite.step as step
    monkeypatch.setattr(step, "cpu_supports_bf16", lambda: True)
    spec = tiny_spec()
    spec["cpu"].update(faster=["trainer.precision=bf16"], check="dataset.length=5")
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(spec))
    calls = []

    def fake_check(argv):
        calls.append(argv)
        write_rows(tmp_path / "r" / "settings_check.csv", [
            {"spec": "tiny", "setting": argv[argv.index("--setting") + 1], "date": "2026-12-02 10:00", "metric": "m",
             "passed": "True", "block": argv[argv.index("--block") + 1], "hardware": "cpu"}])
        return 0

    ran = []
    monkeypatch.setattr(check_settings, "main", fake_check)
    monkeypatch.setattr(campaign, "campaign_spec", lambda spec, root, w, t, say, settings, on_block, carried=None: ran.append(settings))
    (tmp_path / "r").mkdir()
    args = ["--experiments", str(experiments), "--runs-root", str(tmp_path / "runs"), "--results", str(tmp_path / "r"),
            "--no-publish"]
    assert campaign.main(args) == 0
    assert len(calls) == 1 and calls[0][:5] == ["tiny", "--block", "dataset.length=5", "--setting", "trainer.precision=bf16"]
    assert ran == [["trainer.precision=bf16"]]
    assert campaign.main(args) == 0 and len(calls) == 1  # recorded: not checked again
    spec["cpu"]["check"] = "dataset.length=9"
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit, match="cpu.check: no block 'dataset.length=9'; valid choices: dataset.length=5, "):
        campaign.main(args)


def test_bad_spec_or_block_is_one_clear_error(tmp_path, capsys):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec()))
    common = ["--experiments", str(experiments), "--runs-root", str(tmp_path / "runs"), "--results", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as e:
        check_settings.main(["nope", "--block", "all", "--setting", "trainer.precision=bf16", *common])
    assert e.value.code == 2 and "valid choices: tiny" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        check_settings.main(["tiny", "--block", "dataset.length=9", "--setting", "trainer.precision=bf16", *common])
    assert e.value.code == 2 and "valid choices: dataset.length=5, dataset.length=6" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no bf16")
def test_a_real_check_runs_both_settings_and_records_it(tmp_path):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec(budget=4, cap=4, lengths=(5,))))
    code = check_settings.main(["tiny", "--block", "dataset.length=5", "--setting", "trainer.precision=bf16",
                                "--experiments", str(experiments), "--runs-root", str(tmp_path / "runs"),
                                "--results", str(tmp_path / "r"), "--workers", "2"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "r" / "settings_check.csv").open()))
    assert len(rows) == 1 and rows[0]["setting"] == "trainer.precision=bf16" and rows[0]["runs"] == "4"
    bf16 = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "_settings").rglob("metrics.json")]
    fp32 = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "tiny").rglob("metrics.json")]
    assert len(bf16) == len(fp32) == 4
    assert {m["precision"] for m in bf16} == {"bf16"} and {m["precision"] for m in fp32} == {"fp32"}
    assert "| tiny | dataset.length=5 | `trainer.precision=bf16` |" in (tmp_path / "r" / "settings_check.md").read_text()


def test_a_misspelt_cpu_key_or_spec_name_is_refused(tmp_path):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    spec = tiny_spec()
    spec["cpu"]["fastr"] = ["trainer.precision=bf16"]
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit, match="unknown cpu: key.*fastr.*valid choices: priority"):
        campaign.specs(experiments, None)
    del spec["cpu"]["fastr"]
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit, match="no spec with a cpu: block named figure9; valid choices: tiny"):
        campaign.specs(experiments, ["figure9"])
    assert [n for n, _ in campaign.specs(REPO / "experiments", None)][:1] == ["figure4"]  # the real specs pass
