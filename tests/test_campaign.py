"""The CPU campaign (scripts/campaign.py): blocks extended by resume until their ranking settles,
on hand-made histories and on real short runs; a campaign stopped with Ctrl-C and started again
finishes the same runs with the same numbers."""
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import campaign  # noqa: E402

TINY = ["model.widths=[8]", "dataset.batch_size=16", "dataset.test_size=32", "dab.hidden=8"]


def tiny_spec(budget=4, cap=8, eval_every=2, lengths=(5, 6)) -> dict:
    return {"artifact": "tiny", "sweep": {"presets": ["sort_t5"], "seeds": [0, 1],
                                          "variants": {"dab": {}, "ste": {"dab.estimator": "ste"}},
                                          "overrides": {"dataset.length": list(lengths)}},
            "cpu": {"priority": 1, "budget": budget, "cap": cap, "factor": 2, "eval_every": eval_every,
                    "blocks": ["dataset.length"], "metric": "test/per_element",
                    "set": dict(item.split("=", 1) for item in TINY)}}


def test_runs_are_the_product_in_stable_dirs(tmp_path):
    runs = campaign.spec_runs(tiny_spec(), tmp_path)
    assert len(runs) == 2 * 2 * 2  # variants x lengths x seeds
    assert {r.block for r in runs} == {"dataset.length=5", "dataset.length=6"}
    assert {r.group for r in runs} == {"dab", "ste"}
    assert len({r.run_dir for r in runs}) == 8 and campaign.spec_runs(tiny_spec(), tmp_path) == runs
    assert all("model.widths=[8]" in r.overrides for r in runs)


def fake_runs(settles: set[str], metrics: tuple = ("test/per_element",)):
    """A run_jobs stand-in writing metrics.json with a history to each job's budget: in a block of
    ``settles`` dab leads ste at every evaluation, elsewhere the lead changes at every one."""
    calls = []

    def run(jobs, workers, threads, say=print, fill=()):
        calls.append(sorted({j.max_steps for j in jobs}))
        ran = 0
        for j in jobs:
            if j.done():  # as run_jobs: a run at (or beyond) its budget is not run again
                continue
            ran += 1
            group = j.label.split(" | ")[0].split("/")[-1]  # an estimator-table label: its row
            block = j.label.split(" | ")[1]
            history = []
            for step in range(2, j.max_steps + 1, 2):
                lead = group == "dab" if block in settles else (group == "dab") == ((step // 2) % 2 == 0)
                history.append({"step": step, **{m: 0.9 if lead else 0.1 for m in metrics}})
            j.run_dir.mkdir(parents=True, exist_ok=True)
            (j.run_dir / "metrics.json").write_text(json.dumps({"train/steps": j.max_steps, "history": history,
                                                                 "wall_seconds": 1.0}))
        return {"done before": len(jobs) - ran, "ran": ran, "failed": 0}

    return run, calls


def test_an_unsettled_block_is_extended_and_a_settled_one_stops(tmp_path, monkeypatch):
    run, calls = fake_runs(settles={"dataset.length=5"})
    monkeypatch.setattr(campaign, "run_jobs", run)
    status = campaign.campaign_spec(tiny_spec(budget=4, cap=16), tmp_path, 1, 1, say=lambda *_: None)
    assert calls == [[4], [4], [8], [16]]  # length 5 settled at 4; length 6 went on to 8, then to the cap
    assert status["dataset.length=5"]["settled"] and status["dataset.length=5"]["budget"] == 4
    assert status["dataset.length=5"]["verdict"] == "settled at step 2 of 4"
    assert not status["dataset.length=6"]["settled"] and status["dataset.length=6"]["budget"] == 16
    assert status["dataset.length=6"]["verdict"].startswith("capped unsettled at 16 steps")
    path = campaign.write_status(tmp_path, "tiny", tiny_spec(), status, campaign.spec_runs(tiny_spec(), tmp_path))
    text = path.read_text()
    assert "| dataset.length=5 | settled at step 2 of 4 | dab > ste |" in text
    longer = {**status, "dataset.length=10": status["dataset.length=6"]}  # blocks in reading order, not string order
    text = campaign.write_status(tmp_path, "tiny", tiny_spec(), longer, campaign.spec_runs(tiny_spec(), tmp_path)).read_text()
    assert text.index("| dataset.length=5 |") < text.index("| dataset.length=6 |") < text.index("| dataset.length=10 |")


def test_a_budget_dependent_group_is_run_afresh_at_each_budget_never_resumed(tmp_path, monkeypatch):
    """The fast recipe's cosine lr fits trainer.max_steps: its runs go to each larger budget as new
    runs in sibling directories, and the first budget's runs stay as they were."""
    run, calls = fake_runs(settles=set())
    monkeypatch.setattr(campaign, "run_jobs", run)
    spec = tiny_spec(budget=4, cap=16, lengths=(5,))
    spec["cpu"]["set"]["+recipe"] = "fast"
    said = []
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=said.append)
    assert calls == [[4], [8], [16]]
    assert any("run afresh at each larger budget" in line and "trainer.max_steps" in line for line in said)
    assert status["dataset.length=5"]["verdict"].startswith("capped unsettled at 16 steps")
    for r in campaign.spec_runs(spec, tmp_path):
        assert json.loads((r.run_dir / "metrics.json").read_text())["train/steps"] == 4  # never resumed
        for steps in (8, 16):
            fresh = json.loads((campaign.fresh_dir(r.run_dir, steps) / "metrics.json").read_text())
            assert fresh["train/steps"] == steps and fresh["history"][0]["step"] == 2  # a new run from step 0


def test_only_the_dependent_group_is_rerun_and_a_continued_campaign_ranks_where_it_stopped(tmp_path, monkeypatch):
    run, calls = fake_runs(settles=set())
    monkeypatch.setattr(campaign, "run_jobs", run)
    monkeypatch.setattr(campaign, "budget_dependent", lambda runs: {"ste": "its schedule fits trainer.max_steps"})
    spec = tiny_spec(budget=4, cap=8, lengths=(5,))
    campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    runs = campaign.spec_runs(spec, tmp_path)
    for r in runs:
        steps = json.loads((r.run_dir / "metrics.json").read_text())["train/steps"]
        assert steps == (8 if r.group == "dab" else 4)  # dab resumed to 8 in its own dir; ste kept its 4
        assert campaign.fresh_dir(r.run_dir, 8).is_dir() == (r.group == "ste")
    # started again, the campaign ranks the block at 8 (where dab's histories end), not at 4
    calls.clear()
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    assert calls == [[8]] and status["dataset.length=5"]["budget"] == 8


def test_the_budget_ladder():
    assert campaign.budgets(1000, 8000, 2) == [1000, 2000, 4000, 8000]
    assert campaign.budgets(1000, 3000, 2) == [1000, 2000, 3000]
    assert campaign.budgets(500, 500, 2) == [500]


@pytest.mark.slow
def test_real_short_runs_extend_by_resume(tmp_path):
    spec = tiny_spec(budget=4, cap=8, lengths=(5,))
    status = campaign.campaign_spec(spec, tmp_path, 2, 1, say=lambda *_: None)
    runs = campaign.spec_runs(spec, tmp_path)
    metrics = [json.loads((r.run_dir / "metrics.json").read_text()) for r in runs]
    budget = status["dataset.length=5"]["budget"]
    assert budget in (4, 8) and all(m["train/steps"] == budget for m in metrics)
    if budget == 8:  # extended: the runs continued their own checkpoints, history unbroken
        assert all([h["step"] for h in m["history"]] == [2, 4, 6, 8] for m in metrics)
        assert all(m["resumed_from"] for m in metrics)


def campaign_cmd(experiments, runs, results) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "campaign.py"), "--experiments", str(experiments), "--runs-root",
            str(runs), "--results", str(results), "--workers", "1", "--no-publish"]


@pytest.mark.slow
def test_a_campaign_stopped_with_ctrl_c_finishes_the_same_runs_with_the_same_numbers(tmp_path):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec(budget=40, cap=40, eval_every=20, lengths=(5,))))
    straight = subprocess.run(campaign_cmd(experiments, tmp_path / "a", tmp_path / "ra"), cwd=REPO,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    proc = subprocess.Popen(campaign_cmd(experiments, tmp_path / "b", tmp_path / "rb"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list((tmp_path / "b").rglob("metrics.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the second run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "run the same command to continue" in err
    assert len(list((tmp_path / "b").rglob("metrics.json"))) < 4  # stopped before the end
    again = subprocess.run(campaign_cmd(experiments, tmp_path / "b", tmp_path / "rb"), cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for r in campaign.spec_runs(tiny_spec(lengths=(5,)), tmp_path / "a"):
        a = json.loads((r.run_dir / "metrics.json").read_text())
        b = json.loads((tmp_path / "b" / r.run_dir.relative_to(tmp_path / "a") / "metrics.json").read_text())
        assert a["test/per_element"] == b["test/per_element"]
        assert [h["test/per_element"] for h in a["history"]] == [h["test/per_element"] for h in b["history"]]
    assert (tmp_path / "rb" / "campaign.md").read_text() == (tmp_path / "ra" / "campaign.md").read_text()


def test_a_block_settles_only_when_every_metric_has(tmp_path, monkeypatch):
    run, calls = fake_runs(settles={"dataset.length=5", "dataset.length=6"})

    def with_second_metric(jobs, workers, threads, say=print, fill=()):
        counts = run(jobs, workers, threads, say)
        for j in jobs:  # a second metric whose order flips at every evaluation in every block
            m = json.loads((j.run_dir / "metrics.json").read_text())
            group = j.label.split(" | ")[0].split("/")[-1]  # an estimator-table label: its row
            for h in m["history"]:
                h["test/other"] = 0.9 if (group == "dab") == ((h["step"] // 2) % 2 == 0) else 0.1
            (j.run_dir / "metrics.json").write_text(json.dumps(m))
        return counts

    monkeypatch.setattr(campaign, "run_jobs", with_second_metric)
    spec = tiny_spec(budget=4, cap=8)
    spec["cpu"]["metric"] = ["test/per_element", "test/other"]
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    assert calls == [[4], [8], [4], [8]]  # test/other never settles: each block goes on to the cap
    assert status["dataset.length=5 | test/per_element"]["settled"]
    assert not status["dataset.length=5 | test/other"]["settled"]
    assert all(s["budget"] == 8 for s in status.values())


def test_budget_spec_runs_each_group_once_at_its_own_budget(tmp_path, monkeypatch):
    spec = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())
    spec["cpu"].pop("extend", None)  # the spec's budgets alone, not extended
    run, calls = fake_runs(settles={"column=sort"}, metrics=tuple(spec["cpu"]["metric"]))
    monkeypatch.setattr(campaign, "run_jobs", run)
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    assert calls == [[1000], [150], [150], [150]]  # each column once, at its groups' own budget
    jobs = campaign.jobs_at(spec, campaign.spec_runs(spec, tmp_path), None)
    assert {j.max_steps for j in jobs} == {150, 1000} and len(jobs) == 60
    assert all("trainer.max_minutes=null" in j.overrides for j in jobs)
    columns = ("column=sort", "column=ae_binary", "column=ae_bernoulli", "column=classify")
    assert set(status) == {f"{c} | {m}" for c in columns for m in spec["cpu"]["metric"]}
    assert all(s["budget"] is None for s in status.values())
    assert status["column=sort | test/all_or_none"]["verdict"].startswith("settled at step")
    assert status["column=classify | test/accuracy"]["verdict"].startswith("at the spec's budgets, not extended: not settled")


def test_column_blocks_split_an_estimator_table_by_task(tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())
    runs = campaign.spec_runs(spec, tmp_path)
    assert {r.block for r in runs} == {"column=sort", "column=ae_binary", "column=ae_bernoulli", "column=classify"}
    assert {r.group for r in runs if r.block == "column=classify"} >= {"classify/dab", "classify/ste"}


def test_a_block_with_an_unfinished_run_is_reported_stopped_not_extended(tmp_path, monkeypatch):
    run, calls = fake_runs(settles=set())

    def failing(jobs, workers, threads, say=print, fill=()):  # the ste runs of length 6 fail at start
        counts = run([j for j in jobs if not (j.label.startswith("ste") and "length=6" in j.label)], workers, threads)
        return {**counts, "failed": 2}

    monkeypatch.setattr(campaign, "run_jobs", failing)
    status = campaign.campaign_spec(tiny_spec(budget=4, cap=16), tmp_path, 1, 1, say=lambda *_: None)
    assert status["dataset.length=6"]["verdict"].startswith("stopped with 2 unfinished run(s) at 4:")  # not extended
    assert status["dataset.length=5"]["verdict"].startswith("capped unsettled at 16")  # the other block went on


def test_runs_go_block_by_block(tmp_path, monkeypatch):
    seen = []

    def record(jobs, workers, threads, say=print, fill=()):
        seen.append([j.label.split(" | ")[1] for j in jobs])
        return fake_runs(settles={"dataset.length=5", "dataset.length=6"})[0](jobs, workers, threads)

    monkeypatch.setattr(campaign, "run_jobs", record)
    published = []
    campaign.campaign_spec(tiny_spec(), tmp_path, 1, 1, say=lambda *_: None,
                           on_block=lambda status: published.append(sorted(status)))
    assert seen == [["dataset.length=5"] * 4, ["dataset.length=6"] * 4]
    assert published == [["dataset.length=5"], ["dataset.length=5", "dataset.length=6"]]  # after each block


def test_a_block_extended_by_an_earlier_campaign_reports_the_steps_it_reached(tmp_path, monkeypatch):
    run, calls = fake_runs(settles={"dataset.length=5", "dataset.length=6"})
    monkeypatch.setattr(campaign, "run_jobs", run)
    spec = tiny_spec(budget=4, cap=16)
    for job in campaign.jobs_at(spec, campaign.spec_runs(spec, tmp_path), 8):  # an earlier campaign went to 8
        run([job], 1, 1)
    calls.clear()
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    assert status["dataset.length=5"]["budget"] == 8 and status["dataset.length=5"]["verdict"] == "settled at step 2 of 8"


def test_a_training_free_run_counts_as_done_at_any_budget(tmp_path):
    from jobs import Job

    job = Job("threshold", [], tmp_path, 1000)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "finished", "train/steps": 0, "train/trainable": False}))
    assert job.done()
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "finished", "train/steps": 0, "train/trainable": True}))
    assert not job.done()


def test_each_block_names_the_runs_it_was_ranked_on_for_publishing(tmp_path, monkeypatch):
    """publish() aggregates these run dirs alone: a dependent group's at the block's final budget
    (its fresh directory), every other run's own directory; a block in progress has none."""
    run, _ = fake_runs(settles=set())
    monkeypatch.setattr(campaign, "run_jobs", run)
    monkeypatch.setattr(campaign, "budget_dependent", lambda runs: {"ste": "its schedule fits trainer.max_steps"})
    spec = tiny_spec(budget=4, cap=8, lengths=(5, 6))
    seen = []
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None,
                                    on_block=lambda s: seen.append({k: list(v["runs"]) for k, v in s.items()}))
    assert list(seen[0]) == ["dataset.length=5"]  # after the first block: the second is not in it
    runs = [r for r in campaign.spec_runs(spec, tmp_path) if r.block == "dataset.length=5"]
    expected = sorted(str(campaign.fresh_dir(r.run_dir, 8) if r.group == "ste" else r.run_dir) for r in runs)
    assert sorted(status["dataset.length=5"]["runs"]) == expected


def test_a_continued_campaign_reads_each_budget_as_it_stood_and_skips_training_free_runs(tmp_path, monkeypatch):
    """A threshold run (nothing to train, 0 steps) does not pull a continued block back to its
    first budget; and a block read at a budget sees each history only up to that budget, so runs
    an interrupted extension took further cannot settle (or unsettle) it early."""
    run, _ = fake_runs(settles=set())
    monkeypatch.setattr(campaign, "run_jobs", run)
    spec = tiny_spec(budget=4, cap=8, lengths=(5,))
    runs = campaign.spec_runs(spec, tmp_path)
    for job in campaign.jobs_at(spec, runs, 8):
        run([job], 1, 1)
    free = runs[0]
    (free.run_dir / "metrics.json").write_text(json.dumps({"train/steps": 0, "train/trainable": False, "history": []}))
    assert campaign.resumed_to(runs[1:], {}, [4, 8]) == 8
    assert campaign.resumed_to(runs, {}, [4, 8]) == 8  # the training-free run is left out
    # a lead that holds to step 4 and flips after it: settled at 4 when read at 4, not at 8
    for r in runs[1:]:
        lead = r.group == "dab"
        history = [{"step": s, "test/per_element": 0.9 if lead == (s <= 4) else 0.1} for s in (2, 4, 6, 8)]
        (r.run_dir / "metrics.json").write_text(json.dumps({"train/steps": 8, "history": history}))
    at4, at8 = campaign.verdicts(spec, runs, 4), campaign.verdicts(spec, runs, 8)
    assert at4["dataset.length=5"].settled and at4["dataset.length=5"].order == (("dab",), ("ste",))
    assert not at8["dataset.length=5"].settled


def test_the_most_a_tier_can_take_counts_every_block_to_its_cap(tmp_path, monkeypatch):
    """Resumable runs go from where they stand to the cap; a budget-dependent group is run afresh
    at each budget of the ladder; a training-free run costs nothing."""
    monkeypatch.setattr(campaign, "budget_dependent", lambda runs: {"ste": "its schedule fits trainer.max_steps"})
    spec = tiny_spec(budget=4, cap=16, lengths=(5,))  # ladder 4, 8, 16
    runs = campaign.spec_runs(spec, tmp_path)  # dab and ste, seeds 0 and 1
    assert campaign.steps_to_cap(spec, runs) == 2 * 16 + 2 * (4 + 8 + 16)
    dab0, dab1, ste0 = (next(r for r in runs if r.group == g and r.run_dir.name.endswith(s))
                        for g, s in (("dab", "0"), ("dab", "1"), ("ste", "0")))
    for run_dir, payload in ((dab0.run_dir, {"train/steps": 8}), (dab1.run_dir, {"train/steps": 0, "train/trainable": False}),
                             (ste0.run_dir, {"train/steps": 4}), (campaign.fresh_dir(ste0.run_dir, 8), {"train/steps": 8})):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(payload))
    assert campaign.steps_to_cap(spec, runs) == (16 - 8) + 0 + 16 + (4 + 8 + 16)


def test_a_block_settled_at_a_finished_budget_has_nothing_left_to_its_cap(tmp_path, monkeypatch):
    """The plan's most-that-is-left counts what the campaign would run: a block settled at a budget
    all its runs finished stops there (Table 2, settled at 2,000 of a 4,000 cap, has nothing left)."""
    monkeypatch.setattr(campaign, "budget_dependent", lambda runs: {})
    spec = tiny_spec(budget=4, cap=16, lengths=(5, 6))  # ladder 4, 8, 16
    runs = campaign.spec_runs(spec, tmp_path)
    for r in runs:  # every run at 8 steps; length 5: dab leads throughout, length 6: the lead flips
        r.run_dir.mkdir(parents=True)
        flips = r.block == "dataset.length=6"
        history = [{"step": s, "test/per_element": 0.9 if (r.group == "dab") != (flips and s % 4 == 0) else 0.1}
                   for s in (2, 4, 6, 8)]
        (r.run_dir / "metrics.json").write_text(json.dumps({"train/steps": 8, "wall_seconds": 8.0, "history": history}))
    assert campaign.verdicts(spec, runs, 8)["dataset.length=5"].settled
    assert not campaign.verdicts(spec, runs, 8)["dataset.length=6"].settled
    assert campaign.steps_to_cap(spec, runs, by_group=True) == {"dab": 2 * (16 - 8), "ste": 2 * (16 - 8)}


def test_the_time_left_is_priced_at_each_groups_own_step_rate(tmp_path, monkeypatch):
    """A slow group (the estimator table's perturbed row runs at a fifteenth of the others' speed)
    is priced at its own rate, not at the average of every finished run."""
    monkeypatch.setattr(campaign, "budget_dependent", lambda runs: {})
    spec = tiny_spec(budget=4000, cap=8000, lengths=(5,))  # dab and ste, seeds 0 and 1
    runs = campaign.spec_runs(spec, tmp_path)
    assert campaign.remaining(spec, runs, 1).endswith("; no finished run yet to time them by")
    for r in runs:  # both dab runs at 2 s per step, one ste run at 0.2 s per step, the other not started
        if r.group == "dab" or r.run_dir.name.endswith("0"):
            r.run_dir.mkdir(parents=True)
            rate = 2.0 if r.group == "dab" else 0.2
            (r.run_dir / "metrics.json").write_text(json.dumps({"train/steps": 4000, "wall_seconds": 4000 * rate}))
    assert campaign.group_rates(runs) == {"dab": 2.0, "ste": 0.2}
    assert campaign.steps_to_cap(spec, runs, by_group=True) == {"dab": 2 * 4000, "ste": 4000 + 8000}
    # left: the second ste run, 4,000 steps at 0.2 s = 0.2 h (the mean over every finished run's steps,
    # 1.4 s per step, would say 1.6 h); to the cap 8,000 * 2 + 12,000 * 0.2 s = 5.1 h
    text = campaign.remaining(spec, runs, 1)
    assert "1 not yet at the first budget of 4000 steps (cap 8000); about 0.2 h at 0.5 (dab) to 5.0 (ste) steps/s" in text
    assert text.endswith("; at most 5.1 h more if every block runs to its cap")
    assert campaign.remaining(spec, runs, 2).endswith("; at most 2.6 h more if every block runs to its cap")


def test_a_continued_campaign_publishes_once_the_first_block_with_work_ends(tmp_path, monkeypatch):
    """Blocks found finished are read, not published one by one (that would commit the tier without
    the later blocks in between); the first block that runs anything publishes all of them."""
    run, _ = fake_runs(settles={"dataset.length=5", "dataset.length=6", "dataset.length=7"})
    monkeypatch.setattr(campaign, "run_jobs", run)
    spec = tiny_spec(lengths=(5, 6, 7))
    campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    for r in campaign.spec_runs(spec, tmp_path):
        if r.block == "dataset.length=7":
            (r.run_dir / "metrics.json").unlink()
    published = []
    campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None, on_block=lambda s: published.append(sorted(s)))
    assert published == [["dataset.length=5", "dataset.length=6", "dataset.length=7"]]
    published.clear()  # all finished: published once, after the last block
    campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None, on_block=lambda s: published.append(sorted(s)))
    assert published == [["dataset.length=5", "dataset.length=6", "dataset.length=7"]]


def test_spec_budgets_extend_per_block_to_a_multiple_of_their_own(tmp_path, monkeypatch):
    """``budget: spec`` with ``extend: 8``: each block starts at its runs' own budget (sort 1,000
    steps, the other columns 150) and an unsettled one doubles up to 8 times it, evaluating at its
    runs' own interval; a budget-dependent group (the sort column's cosine recipe) runs afresh."""
    spec = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())
    assert spec["cpu"]["extend"] == 8  # the estimator table's CPU tier
    run, calls = fake_runs(settles={"column=sort"}, metrics=tuple(spec["cpu"]["metric"]))
    monkeypatch.setattr(campaign, "run_jobs", run)
    monkeypatch.setattr(campaign, "budget_dependent",
                        lambda runs: {r.group: "its cosine lr fits trainer.max_steps" for r in runs if r.block == "column=sort"})
    runs = campaign.spec_runs(spec, tmp_path)
    n_sort = sum(r.block == "column=sort" for r in runs)
    assert campaign.steps_to_cap(spec, runs) == n_sort * (1000 + 2000 + 4000 + 8000) + (len(runs) - n_sort) * 1200
    status = campaign.campaign_spec(spec, tmp_path, 1, 1, say=lambda *_: None)
    assert calls == [[1000]] + [[150], [300], [600], [1200]] * 3
    assert status["column=sort | test/all_or_none"]["verdict"].startswith("settled at step")
    assert status["column=classify | test/accuracy"]["verdict"].startswith("capped unsettled at 1200 steps")
    classify = [r for r in runs if r.block == "column=classify"]
    assert all("trainer.eval_every=50" in j.overrides for j in campaign.jobs_at(spec, classify, 300))
    assert campaign.ladder_of(spec, classify) == [150, 300, 600, 1200]
    mixed = [classify[0], dataclasses.replace(classify[1], trainer={**classify[1].trainer, "trainer.max_steps": 300})]
    with pytest.raises(SystemExit, match="one spec budget per block"):
        campaign.ladder_of(spec, mixed)
    del spec["cpu"]["extend"]
    assert campaign.ladder_of(spec, classify) is None and campaign.steps_to_cap(spec, runs) == 0


@pytest.mark.parametrize("bad", [0.5, "eight", None])
def test_a_bad_extend_value_is_one_clear_error(bad, tmp_path):
    spec = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())
    spec["cpu"]["extend"] = bad
    runs = [r for r in campaign.spec_runs(spec, tmp_path) if r.block == "column=classify"]
    if bad is None:  # no extend: the spec's budgets, once
        assert campaign.ladder_of(spec, runs) is None
        return
    with pytest.raises(SystemExit, match=r"cpu.extend must be a number >= 1 .* got "):
        campaign.ladder_of(spec, runs)


def test_the_slowest_runs_start_first(tmp_path, monkeypatch):
    """Longest expected time first (steps left times the group's rate): the slow row does not start
    last and run on alone while the other worker idles; without any rate the order stays."""
    spec = tiny_spec(budget=4, cap=4, lengths=(5,))
    runs = campaign.spec_runs(spec, tmp_path)  # dab seeds 0, 1, then ste seeds 0, 1
    jobs = campaign.jobs_at(spec, runs, 4)
    assert campaign.longest_first(jobs, runs, {}) == jobs
    half = next(r for r in runs if r.group == "ste")
    half.run_dir.mkdir(parents=True)
    (half.run_dir / "metrics.json").write_text(json.dumps({"train/steps": 2, "wall_seconds": 20.0}))
    order = campaign.longest_first(jobs, runs, {"dab": 1.0, "ste": 10.0})
    assert [j.run_dir for j in order] == [
        *(r.run_dir for r in runs if r.group == "ste" and r is not half), half.run_dir,  # 40 s, then 20 s left
        *(r.run_dir for r in runs if r.group == "dab")]  # 4 s left each, in the runs' order


STUB = """#!{python}
# a train.py stand-in: sleeps for its 'sleep=' seconds, then writes metrics.json at its budget
import json, pathlib, sys, time
args = dict(a.split("=", 1) for a in sys.argv[2:] if "=" in a)
run_dir = pathlib.Path(args["hydra.run.dir"].strip("'"))
with open({log!r}, "a") as log:
    log.write(f"start {{run_dir.name}}\\n")
time.sleep(float(args["sleep"]))
(run_dir / "metrics.json").write_text(json.dumps({{"train/steps": int(args["trainer.max_steps"])}}))
"""


def stub_jobs(tmp_path, spec: dict) -> tuple[list, str]:
    """Jobs named by ``spec`` {name: (sleep seconds, expected seconds)}, and a stub python to run them."""
    log = tmp_path / "started.log"
    stub = tmp_path / "stub_python"
    stub.write_text(STUB.format(python=sys.executable, log=str(log)))
    stub.chmod(0o755)
    jobs = [campaign.Job(name, [f"sleep={sleep}", "trainer.max_steps=4"], tmp_path / name, 4, expected=expected)
            for name, (sleep, expected) in spec.items()]
    return jobs, str(stub)


def test_a_later_blocks_run_fills_a_worker_idle_at_the_end_only_where_it_fits(tmp_path):
    """Two workers, a long and a short job: when the short one ends, the idle worker takes the first
    fill job expected to end before the long one (not the one expected to outlast it, nor one of
    unknown length), and the call ends with the long job, not with a fill job."""
    jobs, stub = stub_jobs(tmp_path, {"long": (3.0, 3.0), "short": (0.1, 0.1)})
    fill, _ = stub_jobs(tmp_path, {"outlasts": (60.0, 30.0), "unknown": (0.1, None), "fits": (0.5, 0.5),
                                   "underestimated": (4.0, 0.5)})
    from jobs import run_jobs  # noqa: PLC0415
    start = time.time()
    counts = run_jobs(jobs, workers=2, threads=1, python=stub, say=lambda *_: None, fill=fill)
    assert time.time() - start < 20  # the 60-second job never started
    assert counts == {"done before": 0, "ran": 2, "failed": 0, "filled": 2}
    started = (tmp_path / "started.log").read_text().split()[1::2]
    assert sorted(started[:2]) == ["long", "short"] and started[2:] == ["fits", "underestimated"]
    # a filled job that runs longer than expected is waited for: none is left running on return
    assert [j.done() for j in fill] == [False, False, True, True]
    # a running job of unknown length: nothing fills in
    for j in jobs + fill:
        (j.run_dir / "metrics.json").unlink(missing_ok=True)
    (tmp_path / "started.log").unlink()
    jobs[0].expected = None
    counts = run_jobs(jobs, workers=2, threads=1, python=stub, say=lambda *_: None, fill=fill)
    assert counts["filled"] == 0 and not any(j.done() for j in fill)


def test_the_campaign_offers_later_blocks_first_round_to_fill_in_and_publishes_a_block_filled_in(tmp_path, monkeypatch):
    """While a block runs, the next blocks' first-round jobs are offered as fill, timed at the spec's
    measured CPU speed where no run of the group finished yet (GPU speeds left out); a block whose
    runs were all filled in earlier is published after its own (empty) turn."""
    spec = tiny_spec(lengths=(5, 6, 7))
    spec["measured_speed"] = [{"where": "one NVIDIA H100", "steps_per_second": {"dab": 1000, "ste": 1000}},
                              {"where": "a 2-core CPU", "steps_per_second": {"dab": 2.0, "ste": 4.0}},
                              {"where": "another CPU", "steps_per_second": {"dab": 1.0}}]
    assert campaign.spec_rates(spec) == {"dab": 1.0, "ste": 0.25}  # the slowest CPU entry per group
    run, _ = fake_runs(settles={"dataset.length=5", "dataset.length=6", "dataset.length=7"})
    offered = []

    own = {}

    def run_and_fill(jobs, workers, threads, say=print, fill=()):
        offered.append([(j.label.split(" | ")[1], j.max_steps, j.expected) for j in fill])
        for j in jobs:
            own.setdefault(j.run_dir, (j.overrides, j.max_steps, j.done()))
        for j in fill:
            own.setdefault(("offered", j.run_dir), (j.overrides, j.max_steps))
        run(list(fill), workers, threads)  # as if every fill job fitted
        return run(jobs, workers, threads)

    monkeypatch.setattr(campaign, "run_jobs", run_and_fill)
    published = []
    campaign.campaign_spec(spec, tmp_path, 2, 1, say=lambda *_: None, on_block=lambda s: published.append(sorted(s)))
    # block 5's round offered blocks 6 and 7's runs at their first budget (4 steps: dab 4 s, ste 1 s)
    assert sorted(offered[0]) == [(f"dataset.length={n}", 4, t) for n in (6, 7) for t in (1.0, 1.0, 4.0, 4.0)]
    assert offered[1:] == [[], []]  # the later blocks' turns: their runs were done already
    # what was offered is exactly what the later blocks' own turns then found done (same run
    # directory, overrides and budget)
    filled = {d: v for d, v in own.items() if isinstance(d, tuple)}
    assert len(filled) == 8
    for (_, run_dir), (overrides, max_steps) in filled.items():
        assert own[run_dir] == (overrides, max_steps, True)
    # block 6 ran nothing in its own turn, but its runs ran in this campaign: published after it
    assert published == [["dataset.length=5"], ["dataset.length=5", "dataset.length=6"],
                         ["dataset.length=5", "dataset.length=6", "dataset.length=7"]]


def test_a_filled_in_run_that_failed_is_not_offered_again(tmp_path, monkeypatch):
    """A later block's run that failed while filling in is left to its own block's turn: the earlier
    block's next round does not offer it again."""
    run, _ = fake_runs(settles={"dataset.length=6"})  # block 5 goes on to its cap, 8 steps
    offered = []

    def fail_first_fill(jobs, workers, threads, say=print, fill=()):
        offered.append([j.run_dir for j in fill])
        if fill:
            fill[0].failed = True
        return run(jobs, workers, threads)

    monkeypatch.setattr(campaign, "run_jobs", fail_first_fill)
    campaign.campaign_spec(tiny_spec(lengths=(5, 6)), tmp_path, 2, 1, say=lambda *_: None)
    assert len(offered[0]) == 4 and offered[1] == offered[0][1:]  # block 5 at 4, then 8 steps
    assert offered[2:] == [[]]  # block 6's turn runs all four itself


def test_a_missing_optional_package_stops_the_campaign_before_any_run(tmp_path, monkeypatch, capsys):
    """A spec whose runs need an estimator's optional package (softsort: torchsort) stops the whole
    campaign up front with the install hint and a non-zero exit, dry run included, instead of its
    runs failing hours in; with the package importable the same plan starts."""
    spec = tiny_spec()
    spec["sweep"]["variants"]["softsort"] = {"dab.estimator": "softsort"}
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(spec))
    runs_root = tmp_path / "runs"
    monkeypatch.setitem(sys.modules, "torchsort", None)  # import torchsort raises ImportError
    for extra in ([], ["--dry-run"]):
        assert campaign.main(["--experiments", str(experiments), "--runs-root", str(runs_root),
                              "--results", str(tmp_path / "results"), *extra]) == 2
        err = capsys.readouterr().err
        assert "experiments/tiny.yaml: estimator softsort needs the torchsort package" in err
        assert "pip install --no-build-isolation" in err
    assert not runs_root.exists() and not (tmp_path / "results").exists()
    assert campaign.missing_requirements([r for r in campaign.spec_runs(spec, runs_root) if "softsort" not in r.group]) == []
    importable = type(sys)("torchsort")
    importable.soft_sort = lambda x, **kw: x
    monkeypatch.setitem(sys.modules, "torchsort", importable)
    assert campaign.missing_requirements(campaign.spec_runs(spec, runs_root)) == []


def test_a_tier_recorded_finished_whose_runs_are_gone_is_skipped_unless_redone(tmp_path, capsys):
    """On a new machine (an empty run root) a spec that campaign.md records as finished is not run
    again from scratch; one stopped with unfinished runs, one with runs here, and one named in --redo are."""
    experiments, results, runs_root = tmp_path / "experiments", tmp_path / "results", tmp_path / "runs"
    experiments.mkdir()
    results.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec()))
    runs = campaign.spec_runs(tiny_spec(), runs_root)
    blocks = sorted({r.block for r in runs})
    args = ["--experiments", str(experiments), "--runs-root", str(runs_root), "--results", str(results), "--dry-run"]

    def record(verdict: str) -> None:
        status = {f"{b}, test/per_element": {"verdict": verdict if i == 0 else "settled at step 4 of 8",
                                            "order": [["dab"], ["ste"]]} for i, b in enumerate(blocks)}
        campaign.write_status(results, "tiny", tiny_spec(), status, runs)

    def plan(*extra: str) -> str:
        assert campaign.main(args + list(extra)) == 0
        return capsys.readouterr().out

    assert "tiny: 8 runs in 2 block(s)" in plan()  # nothing recorded yet
    first = {f"{blocks[0]}": {"verdict": "settled at step 4 of 8", "order": [["dab"], ["ste"]]}}
    campaign.write_status(results, "tiny", tiny_spec(), first, runs)  # published as the first block ended
    assert campaign.published(results, "tiny", tiny_spec(), runs) is None and "tiny: 8 runs in 2 block(s)" in plan()
    record("capped unsettled at 8 steps: not settled: the order changed at the last evaluation (step 8)")
    wider = dict(tiny_spec(), sweep={**tiny_spec()["sweep"], "seeds": [0, 1, 2]})  # the plan changed since
    assert campaign.published(results, "tiny", wider, campaign.spec_runs(wider, runs_root)) is None
    assert campaign.published(results, "tiny", tiny_spec(), runs) == [
        "capped unsettled at 8 steps: not settled: the order changed at the last evaluation (step 8)",
        "settled at step 4 of 8"]
    out = plan()
    assert "tiny: finished already" in out and "every one of its 2 block verdict(s)" in out and "runs in" not in out
    assert "tiny: 8 runs in 2 block(s)" in plan("--redo", "tiny")
    runs[0].run_dir.mkdir(parents=True)  # a run here: the campaign continues it (and republishes)
    assert "tiny: 8 runs in 2 block(s)" in plan()
    shutil.rmtree(runs_root)
    record("stopped with 1 unfinished run(s) at 8: not settled")
    assert campaign.published(results, "tiny", tiny_spec(), runs) is None and "tiny: 8 runs in 2 block(s)" in plan()
    with pytest.raises(SystemExit, match="--redo: unknown spec.*nope; valid choices: tiny"):
        campaign.main(args + ["--redo", "nope"])
    (experiments / "other.yaml").write_text(yaml.safe_dump({**tiny_spec(), "artifact": "other"}))
    with pytest.raises(SystemExit, match="--redo other: left out by --only tiny; name it in --only too"):
        campaign.main(args + ["--only", "tiny", "--redo", "other"])
    (experiments / "other.yaml").unlink()
    assert not runs_root.exists()


def test_a_block_key_that_presets_set_is_read_from_each_runs_config(tmp_path):
    """`blocks: [dataset.length]` over presets of different T (Table 1's CPU tier): one block per T,
    each ranking only the presets of that T; a key in neither the sweep nor the config is one error."""
    spec = {"artifact": "tiny", "sweep": {"presets": ["sort_t5", "sort_elu_t5", "sort_t10", "sort_elu_t10"], "seeds": [0, 1]},
            "cpu": {"priority": 1, "budget": 4, "cap": 8, "eval_every": 2, "blocks": ["dataset.length"],
                    "metric": "test/all_or_none", "set": {}}}
    runs = campaign.spec_runs(spec, tmp_path)
    assert {r.block: sorted({q.group for q in runs if q.block == r.block}) for r in runs} == {
        "dataset.length=5": ["sort_elu_t5", "sort_t5"], "dataset.length=10": ["sort_elu_t10", "sort_t10"]}
    spec["cpu"]["blocks"] = ["dataset.lenght"]
    with pytest.raises(SystemExit, match="cpu.blocks: 'dataset.lenght' is neither a swept key nor in the config"):
        campaign.spec_runs(spec, tmp_path)


def test_every_shipped_cpu_tier_plans_its_runs_in_blocks(tmp_path):
    """Each spec's `cpu:` block (keys, presets, block keys) plans without error, every block holds
    runs of at least one group over the spec's seeds, and Table 1's tier compares within each T."""
    found = dict(campaign.specs(REPO / "experiments", None))
    assert {"figure4", "table2", "estimators", "table1", "ablation_estimators"} <= set(found)
    for name, spec in found.items():
        runs = campaign.spec_runs(spec, tmp_path)
        assert runs, name
        for block in {r.block for r in runs}:
            assert len({r.run_dir for r in runs if r.block == block}) >= 2, (name, block)
    table1 = campaign.spec_runs(found["table1"], tmp_path)
    assert {r.block: sorted({q.group for q in table1 if q.block == r.block}) for r in table1} == {
        "dataset.length=5": ["sort_elu_t5", "sort_t5"], "dataset.length=10": ["sort_elu_t10", "sort_t10"],
        "dataset.length=15": ["sort_elu_t15", "sort_t15"]}


def test_a_run_identical_to_another_specs_finished_run_is_copied_not_trained_again(tmp_path):
    """Table 1's Signum-Dense rows are the estimator ablation's DAB rows: a job whose config, budget,
    precision and thread count match a run of another spec finished on this CPU is copied (naming
    its source, no staging left behind) and then counts as done; an unfinished source, another
    thread count, precision, step count, CPU or config is not, and an unfinished candidate does
    not hide a finished one. campaign.md does not count a copy's training time twice."""
    from dab.suite.experiment import hardware_name

    cpu = hardware_name(campaign.torch_cpu()).rsplit(" (", 1)[0]
    a = dict(tiny_spec(lengths=(5, 6)), artifact="a")
    b = dict(tiny_spec(lengths=(5, 6)), artifact="b")
    jobs_a = campaign.jobs_at(a, campaign.spec_runs(a, tmp_path), 4)
    jobs_b = campaign.jobs_at(b, campaign.spec_runs(b, tmp_path), 4)
    assert [j.label for j in jobs_a] == [j.label for j in jobs_b] and len(jobs_a) == 8

    def finished_run(job, run_dir=None, steps=4, status="finished", threads=1, precision="fp32", device=None,
                     hidden=None):
        run_dir = run_dir or job.run_dir
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            [*job.overrides, f"trainer.precision={precision}", "trainer.compile=false",  # named on a resume
             f"trainer.threads={threads}", "trainer.progress=false", "trainer.resume=auto"]))
        config = campaign.parse(campaign.compose_config(
            [*(o for o in job.overrides if not o.startswith("runs_root=")), f"trainer.threads={threads}"])).config
        config["trainer"]["precision"] = precision
        if hidden is not None:  # as if trained under an older preset
            config["dab"]["hidden"] = hidden
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / "metrics.json").write_text(json.dumps({"status": status, "train/steps": steps, "wall_seconds": 3600,
                                                          "device": device or f"{cpu} ({threads} threads)"}))

    finished_run(jobs_a[0])                        # dab T=5 seed0: identical to b's (fp32 named, b's from the config)
    finished_run(jobs_a[1], status="interrupted")  # dab T=5 seed1: not finished
    finished_run(jobs_a[2], threads=2)             # dab T=6 seed0: another thread count
    finished_run(jobs_a[3], precision="bf16")      # dab T=6 seed1: another precision
    finished_run(jobs_a[4], steps=8)               # ste T=5 seed0: finished at another step count
    finished_run(jobs_a[5], device="Some Other CPU (1 threads)")  # ste T=5 seed1: another machine
    finished_run(jobs_a[6], hidden=16)             # ste T=6 seed0: another config
    finished_run(jobs_a[7])                        # ste T=6 seed1: identical, behind an unfinished candidate
    finished_run(jobs_a[7], run_dir=tmp_path / "_early" / "x" / "seed1", status="interrupted")
    said = []
    assert campaign.copy_identical(jobs_b, tmp_path, 1, said.append) == 2
    assert [j.done() for j in jobs_b] == [True, False, False, False, False, False, False, True]
    assert (jobs_b[0].run_dir / campaign.COPIED).read_text().strip() == str(jobs_a[0].run_dir)
    assert (jobs_b[7].run_dir / campaign.COPIED).read_text().strip() == str(jobs_a[7].run_dir)
    assert not any(j.run_dir.exists() for j in jobs_b[1:7]) and "copied" in said[0]
    assert not (tmp_path / ".copying").exists()
    longer = campaign.jobs_at(b, campaign.spec_runs(b, tmp_path / "other"), 8)
    assert campaign.copy_identical(longer, tmp_path, 1, said.append) == 0  # another budget, another root
    status = {"all": {"verdict": "settled at step 2 of 4", "order": [["dab"]]}}
    text = campaign.write_status(tmp_path, "b", b, status, campaign.spec_runs(b, tmp_path)).read_text()
    assert "0.00 CPU-hours of training (wall_seconds summed; 2 runs copied from identical runs of another spec" in text


def test_blocks_finished_on_an_earlier_machine_are_kept_and_only_the_rest_is_run(tmp_path, monkeypatch, capsys):
    """A machine lost mid-spec: the blocks campaign.md records as finished, whose runs are all
    finished rows of the committed runs CSV and none of whose runs is under the new run root, are
    kept as recorded (verdict, order, CPU time, CSV rows and history) and not run again; the rest
    runs. A block with a run here, a run missing from the CSV, or a changed plan is not carried."""
    spec = dict(tiny_spec(budget=4, cap=8), history=True)
    old_root, new_root, results = tmp_path / "old", tmp_path / "new", tmp_path / "results"
    results.mkdir()
    run, calls = fake_runs(settles={"dataset.length=5"})
    monkeypatch.setattr(campaign, "run_jobs", run)
    status = campaign.campaign_spec(spec, old_root, 1, 1, say=lambda *_: None)
    old_runs = campaign.spec_runs(spec, old_root)
    for r in old_runs:  # each run took 900 s on the old machine
        m = json.loads((r.run_dir / "metrics.json").read_text())
        (r.run_dir / "metrics.json").write_text(json.dumps({**m, "wall_seconds": 900.0}))
    status["dataset.length=6"]["verdict"] = "stopped with 1 unfinished run(s) at 8: not settled"  # the machine went
    campaign.write_status(results, "tiny", spec, status, old_runs)
    assert "| dataset.length=5 | settled at step 2 of 4 | dab > ste | 1.00 |" in (results / "campaign.md").read_text()
    rows = [{"artifact": "tiny", "experiment": "sort_t5", "cell": f"sort_t5 {r.group}", "seed": r.overrides[-2][5:],
             "status": "finished", "steps": 4, "wall_seconds": 900.0, "run_dir": r.run_dir.relative_to(old_root).as_posix()}
            for r in old_runs]
    campaign.aggregate.write_csv(results / "tiny_runs.csv", rows, campaign.aggregate.STANDARD)
    history = [{"run_dir": r["run_dir"], "experiment": "sort_t5", "cell": r["cell"], "seed": r["seed"], "step": s,
                "test/per_element": 0.5} for r in rows for s in (2, 4)]
    campaign.aggregate.write_csv(results / "tiny_history.csv", history,
                                 ["run_dir", "experiment", "cell", "seed", "step", "test/per_element"])

    runs = campaign.spec_runs(spec, new_root)
    carried = campaign.carried_blocks(results, "tiny", spec, runs, new_root)
    five = sorted(r.run_dir.relative_to(new_root).as_posix() for r in runs if r.block == "dataset.length=5")
    assert list(carried) == ["dataset.length=5"] and sorted(carried["dataset.length=5"]["carried"]) == five
    assert carried["dataset.length=5"]["verdict"] == "settled at step 2 of 4"
    assert carried["dataset.length=5"]["order"] == [("dab",), ("ste",)] and carried["dataset.length=5"]["hours"] == 1.0

    calls.clear()
    status = campaign.campaign_spec(spec, new_root, 1, 1, say=lambda *_: None, carried=carried)
    assert calls == [[4], [8]]  # the T=6 block alone, from its first budget
    assert not any(r.run_dir.exists() for r in runs if r.block == "dataset.length=5")
    assert status["dataset.length=5"] == carried["dataset.length=5"]
    assert status["dataset.length=6"]["verdict"].startswith("capped unsettled at 8 steps")
    text = campaign.write_status(results, "tiny", spec, status, runs).read_text()
    assert "| dataset.length=5 | settled at step 2 of 4 | dab > ste | 1.00 |" in text
    assert "1.00 CPU-hours of training (wall_seconds summed; 4 runs of 1 block(s) finished on an earlier machine" in text
    again = campaign.carried_blocks(results, "tiny", spec, runs, new_root)  # T=6's runs are here: it is not carried
    assert list(again) == ["dataset.length=5"] and again["dataset.length=5"]["hours"] == 1.0

    campaign.aggregate.aggregate(spec, new_root, results, only=set(), carry=set(five))
    kept, _ = campaign.aggregate.read_csv(results / "tiny_runs.csv")
    assert sorted(r["run_dir"] for r in kept) == five and all(r["wall_seconds"] == "900.0" for r in kept)
    kept_history, _ = campaign.aggregate.read_csv(results / "tiny_history.csv")
    assert len(kept_history) == 2 * len(five) and {h["run_dir"] for h in kept_history} == set(five)

    # not carried: a run of the block under the new root; a run missing from the CSV; another plan
    campaign.write_status(results, "tiny", spec, {**carried, "dataset.length=6": {
        "verdict": "stopped with 1 unfinished run(s) at 8: not settled", "order": [["dab", "ste"]]}}, runs)
    campaign.aggregate.write_csv(results / "tiny_runs.csv", rows, campaign.aggregate.STANDARD)
    shutil.rmtree(new_root)
    assert list(campaign.carried_blocks(results, "tiny", spec, runs, new_root)) == ["dataset.length=5"]
    next(r for r in runs if r.block == "dataset.length=5").run_dir.mkdir(parents=True)
    assert campaign.carried_blocks(results, "tiny", spec, runs, new_root) == {}
    shutil.rmtree(new_root)
    campaign.aggregate.write_csv(results / "tiny_runs.csv", rows[1:], campaign.aggregate.STANDARD)
    assert campaign.carried_blocks(results, "tiny", spec, runs, new_root) == {}
    campaign.aggregate.write_csv(results / "tiny_runs.csv", rows, campaign.aggregate.STANDARD)
    for seeds in ([0, 1, 2], [0]):  # a seed added, a seed dropped: not the plan the verdict was about
        other = dict(spec, sweep={**spec["sweep"], "seeds": seeds})
        assert campaign.carried_blocks(results, "tiny", other, campaign.spec_runs(other, new_root), new_root) == {}
    fewer = dict(spec, sweep={**spec["sweep"], "variants": {"dab": {}}})  # a variant dropped
    assert campaign.carried_blocks(results, "tiny", fewer, campaign.spec_runs(fewer, new_root), new_root) == {}
    longer = dict(spec, sweep={**spec["sweep"], "overrides": {"dataset.length": [5, 6, 7]}})  # a block added
    assert list(campaign.carried_blocks(results, "tiny", longer, campaign.spec_runs(longer, new_root), new_root)) == [
        "dataset.length=5"]

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.yaml").write_text(yaml.safe_dump(spec))
    args = ["--experiments", str(experiments), "--runs-root", str(new_root), "--results", str(results), "--dry-run"]
    assert campaign.main(args) == 0
    assert "1 block(s) finished on an earlier machine" in capsys.readouterr().out
    assert campaign.main(args + ["--redo", "tiny"]) == 0
    assert "earlier machine" not in capsys.readouterr().out


def test_a_record_from_before_per_block_times_carries_its_total_once(tmp_path):
    """campaign.md sections written before the CPU-hours column: when every recorded block is
    carried, the section's total (and its copies) goes with the first block, the others say so."""
    spec = tiny_spec()
    runs = campaign.spec_runs(spec, tmp_path / "runs")
    (tmp_path / "campaign.md").write_text(
        "# CPU campaign\n\n## tiny\n\nBudget 4 steps; metric test/per_element; overrides: none; 8 runs, 0.84 CPU-hours "
        "of training (wall_seconds summed; 2 runs copied from identical runs of another spec, not counted).\n\n"
        "| block | verdict | order at the last evaluation (best first, ~ tied) |\n|---|---|---|\n"
        "| dataset.length=5 | settled at step 2 of 4 | dab > ste |\n| dataset.length=6 | settled at step 4 of 8 | ste ~ dab |\n")
    rows = [{"run_dir": r.run_dir.relative_to(tmp_path / "runs").as_posix(), "status": "finished"} for r in runs]
    campaign.aggregate.write_csv(tmp_path / "tiny_runs.csv", rows, ["run_dir", "status"])
    carried = campaign.carried_blocks(tmp_path, "tiny", spec, runs, tmp_path / "runs")
    assert carried["dataset.length=6"]["order"] == [("ste", "dab")]
    text = campaign.write_status(tmp_path, "tiny", spec, carried, runs).read_text()
    assert "8 runs, 0.84 CPU-hours of training (wall_seconds summed; 2 runs copied" in text
    assert "| dataset.length=5 | settled at step 2 of 4 | dab > ste | 0.84 (+2 copied) |" in text
    assert "| dataset.length=6 | settled at step 4 of 8 | ste ~ dab | counted with dataset.length=5 |" in text
    assert campaign.carried_blocks(tmp_path, "tiny", spec, runs, tmp_path / "runs") == carried  # read back the same


def test_every_spec_with_a_cpu_tier_keeps_its_history():
    """A CPU tier is judged by the settle rule on the order at every evaluation: its published
    results must carry that history (<artifact>_history.csv), or the rendered ranking by step, and
    Figure 6 left's curves and largest falls, are silently left out."""
    tiers = campaign.specs(REPO / "experiments", None)
    assert {name for name, _ in tiers} >= {"figure4", "table2", "figure6_left", "figure6_right"}
    assert [name for name, spec in tiers if spec.get("history") is not True] == []
