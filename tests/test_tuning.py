"""Equal tuning (scripts/tune_estimators.py): every row the same number of trials over its own grid,
on a validation split, never the test set; the choice is the best mean over a point's trials."""
import sys
from collections import Counter

import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import tune_estimators as tune  # noqa: E402

SPEC = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())


def test_a_larger_grid_is_subsampled_evenly_and_a_smaller_one_gets_more_seeds():
    points = [{"x": i} for i in range(8)]
    assert [p["x"] for p in tune.subsample(points, 6)] == [0, 1, 3, 4, 6, 7]
    assert tune.trials_for([{}], 6) == [(0, s) for s in range(6)]  # one point: six seeds
    assert tune.trials_for(points[:4], 6) == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1)]


def test_every_row_gets_the_same_number_of_trials_on_its_validation_split(tmp_path):
    jobs, table = tune.plan(SPEC, tmp_path, None)
    per_row = Counter(job.label.split(" ")[0] for job in jobs)
    trials = SPEC["tuning"]["trials"]
    ran = [label for label, t in table.items() if not t["missing"]]
    assert set(per_row) == set(ran) and set(per_row.values()) == {trials}
    for job in jobs:
        assert any(o.startswith("dataset.validation=") and o != "dataset.validation=0" for o in job.overrides)
    ste = [j for j in jobs if j.label.startswith("sort/ste ")]
    assert sorted(o for j in ste for o in j.overrides if o.startswith("seed=")) == [f"seed={s}" for s in range(trials)]


def test_the_grid_centre_is_the_spec_s_own_setting_not_the_tuned_one(tmp_path):
    """A relative grid (blackbox's lambda) scales the spec's value (5,000), whatever tuning chose."""
    jobs, _ = tune.plan(SPEC, tmp_path, ["sort_t10"])
    lams = sorted({o for j in jobs if j.label.startswith("sort/blackbox") for o in j.overrides if o.startswith("dab.lam=")})
    assert lams == sorted(f"dab.lam={v}" for v in (500.0, 1500.0, 5000.0, 15000.0, 50000.0))


def test_the_choice_is_the_best_mean_over_a_point_s_trials(tmp_path):
    import json

    _, table = tune.plan(SPEC, tmp_path, ["sort_t10"])
    t = table["sort/blackbox"]
    for (index, seed), value in zip(t["trials"], [0.1, 0.2, 0.9, 0.3, 0.4, 0.95]):
        d = tmp_path / "sort/blackbox" / tune.slug(t["points"][index]) / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"objective": "val/all_or_none", "val/all_or_none": 0.0,
                                                    "val/per_element": value, "train/steps": 1000}))
    trials, chosen = tune.collect({"sort/blackbox": t}, tmp_path)
    assert {r["objective"] for r in trials} == {"val/per_element"}  # the spec's tuning metric for sorting
    # point 0 has trials 0.1 and 0.95 (mean 0.525), point 2 has 0.9: point 2 wins on the mean
    assert chosen["sort/blackbox"]["point"] == t["points"][2]


def test_tuning_one_row_keeps_every_other_row_s_evidence(tmp_path):
    """Runs found for one label replace only that label's rows; the others keep the committed ones."""
    import json

    _, table = tune.plan(SPEC, tmp_path, ["sort_t10"])
    blackbox, ste = table["sort/blackbox"], table["sort/ste"]
    previous = [{"label": "sort/ste", "estimator": "ste", "point": tune.slug(ste["points"][0]), "seed": "0",
                 "objective": "val/per_element", "value": "0.7", "steps": "1000", "hardware": "old"},
                {"label": "sort/blackbox", "estimator": "blackbox", "point": tune.slug(blackbox["points"][0]),
                 "seed": "0", "objective": "val/per_element", "value": "0.9", "steps": "1000", "hardware": "old"}]
    index, seed = blackbox["trials"][1]
    run = tmp_path / "sort/blackbox" / tune.slug(blackbox["points"][index]) / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"val/per_element": 0.5, "train/steps": 1000, "objective": "x",
                                                  "device": "new"}))
    small = {k: table[k] for k in ("sort/ste", "sort/blackbox")}
    trials, chosen = tune.collect(small, tmp_path, previous)
    assert [(r["label"], r["hardware"]) for r in trials] == [("sort/ste", "old"), ("sort/blackbox", "new")]
    assert chosen["sort/blackbox"]["point"] == blackbox["points"][index]  # the new run, not the old 0.9
    assert chosen["sort/ste"]["scores"] == {0: [0.7]}
    text = "\n".join(tune.report(SPEC, small, trials, chosen))
    assert "Hardware: old." in text and "Hardware: new." in text


def test_a_row_whose_estimator_lacks_its_package_is_planned_without_trials_and_says_how_to_install(tmp_path, monkeypatch):
    """The soft sort without torchsort: the row gets no trial jobs and carries the estimator's own
    install hint (dab.estimators.missing_requirement, the check the campaign makes too)."""
    monkeypatch.setitem(sys.modules, "torchsort", None)  # import torchsort raises ImportError
    jobs, table = tune.plan(SPEC, tmp_path, None)
    soft = [label for label, t in table.items() if t["estimator"] == "softsort"]
    assert soft and not any(j.label.split(" ")[0] in soft for j in jobs)
    for label in soft:
        assert "pip install --no-build-isolation" in table[label]["missing"][0]
    assert all(not t["missing"] for label, t in table.items() if label not in soft)
