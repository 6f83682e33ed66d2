"""experiments/estimators.yaml plans the estimator table as sweep groups (one per task: its preset,
settings and step budget) of variants (one per estimator), in place of the 20 est_* presets it
replaced (conf/experiment/est_*.yaml, last at commit PRESETS_COMMIT). Every job that
`run_artifact.py --dry-run` prints composes the very config of the old preset's job, but for
run_name and runs_root. (A proof of that move: once the old presets no longer compose with
today's groups, the first test can go.) Each variant builds the estimator it names:
tests/test_gradient_fidelity.py."""
import argparse
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import CONF_DIR, REPO, compose_config

sys.path.insert(0, str(REPO / "scripts"))

import run_artifact  # noqa: E402
from renderers.common import tuned_settings  # noqa: E402

SPEC = yaml.safe_load((REPO / "experiments" / "estimators.yaml").read_text())

PRESETS_COMMIT = "7f9ea2a"
OLD_PRESET = {  # variant label -> the est_* preset it replaced
    "sort/dab": "est_sort_dab", "sort/dab_lti": "est_sort_dab_lti", "sort/ste": "est_sort_ste",
    "sort/blackbox": "est_sort_blackbox", "sort/perturbed": "est_sort_perturbed",
    "ae_binary/dab": "est_vae_binary_dab", "ae_binary/ste": "est_vae_binary_ste",
    "ae_binary/blackbox": "est_vae_binary_blackbox", "ae_binary/perturbed": "est_vae_binary_perturbed",
    "ae_bernoulli/dab": "est_vae_bernoulli_dab", "ae_bernoulli/ste": "est_vae_bernoulli_ste",
    "ae_bernoulli/gumbel": "est_vae_bernoulli_gumbel", "ae_bernoulli/gumbel_st": "est_vae_bernoulli_gumbel_st",
    "ae_bernoulli/reinmax": "est_vae_bernoulli_reinmax", "ae_bernoulli/reinforce": "est_vae_bernoulli_reinforce",
    "classify/dab": "est_classify_dab", "classify/dab_lti": "est_classify_dab_lti", "classify/ste": "est_classify_ste",
    "classify/perturbed": "est_classify_perturbed", "classify/softsort": "est_classify_softsort",
}
# The old spec's job for a preset: run_artifact.py's command then (results/cpu/estimators_runs.csv).
OLD_JOB = ["seed=0", "trainer.progress=false", "runs_root=runs/estimators", "trainer.resume=auto"]


def variant_overrides() -> dict[str, list[str]]:
    """label -> the overrides of the variant's seed-0 job, as run_artifact.py plans it."""
    args = argparse.Namespace(only=None, variants=None, seeds="0", sweep=[], set=[], fast=False)
    _, multiruns = run_artifact.plan(SPEC, args)
    return {m.variant: [f"+experiment={m.presets[0]}", "seed=0",
                        *(f"{k}={v}" for k, v in (m.overrides | m.budget).items())] for m in multiruns}


def dry_run_jobs(*args: str) -> dict[str, list[list[str]]]:
    """variant label -> the overrides of each job its multirun runs, from run_artifact.py --dry-run
    (Hydra's own parser expands the sweeps; hydra.* launch settings dropped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    proc = subprocess.run([sys.executable, "scripts/run_artifact.py", "experiments/estimators.yaml", "--dry-run",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    parser, jobs = OverridesParser.create(), {}
    for head, command in zip(lines, lines[1:]):
        if not head.startswith("variant "):
            continue
        words = shlex.split(command)
        choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                   else [o.input_line] for o in parser.parse_overrides(words[words.index("-m") + 1:])
                   if not o.get_key_element().startswith("hydra")]
        expanded = [[]]
        for values in choices:
            expanded = [job + [v] for job in expanded for v in values]
        jobs[head.removeprefix("variant ").split(":")[0]] = expanded
    return jobs


@pytest.fixture(scope="module")
def old_conf(tmp_path_factory):
    """Today's conf/ with the old est_* presets back in conf/experiment/."""
    if shutil.which("git") is None or subprocess.run(["git", "cat-file", "-e", f"{PRESETS_COMMIT}^{{commit}}"],
                                                     cwd=REPO, capture_output=True).returncode != 0:
        pytest.skip(f"needs the git history (commit {PRESETS_COMMIT}, the last with the est_* presets)")
    conf = tmp_path_factory.mktemp("old") / "conf"
    shutil.copytree(CONF_DIR, conf)
    for preset in OLD_PRESET.values():
        text = subprocess.run(["git", "show", f"{PRESETS_COMMIT}:conf/experiment/{preset}.yaml"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
        (conf / "experiment" / f"{preset}.yaml").write_text(text)
    return conf


def plain(cfg, tuned: dict) -> dict:
    """The config but for run_name, runs_root, the evaluation cadence (issue 21 evaluates more often,
    for the settle rule) and the settings tuning chose for the row (``tuned``: dab.<key> -> value)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out = {k: v for k, v in out.items() if k not in ("run_name", "runs_root")}
    out["trainer"] = {k: v for k, v in out["trainer"].items() if k not in ("eval_every", "log_every")}
    out["dab"] = {k: v for k, v in out["dab"].items() if f"dab.{k}" not in tuned}
    return out


def test_every_job_composes_the_config_of_the_preset_it_replaced(old_conf):
    jobs = dry_run_jobs()
    assert set(jobs) == set(OLD_PRESET)
    for label, preset in OLD_PRESET.items():
        assert len(jobs[label]) == 3  # seeds 0, 1, 2
        (job,) = [j for j in jobs[label] if "seed=0" in j]
        new = compose_config(job, old_conf)
        old = compose_config([f"+experiment={preset}", *OLD_JOB], old_conf)
        tuned = tuned_settings(SPEC).get(label, {})
        assert plain(new, tuned) == plain(old, tuned), (label, job)
        assert old.run_name == preset and new.run_name == job[0].split("=")[1]


def test_the_spec_plans_one_group_per_task_with_its_budget():
    groups = SPEC["sweep"]["groups"]
    assert [g["presets"] for g in groups] == [["sort_t10"], ["vae_fmnist"], ["classify_sort1d"]]
    assert [g["budget"]["trainer.max_steps"] for g in groups] == [1000, 150, 150]
    assert sorted(label for g in groups for label in g["variants"]) == sorted(OLD_PRESET)
    assert set(SPEC["fidelity"]["tasks"]) == {"sort", "autoencode", "classify"}
    listed = set(SPEC["measured_speed"][0]["steps_per_second"])
    assert listed == set(OLD_PRESET)  # the time estimate finds every variant's speed


def test_only_and_variants_restrict_the_jobs():
    jobs = dry_run_jobs("--only", "vae_fmnist", "--variants", "ae_binary/ste,ae_bernoulli/reinmax,sort/ste",
                        "--seeds", "1", "--set", "trainer.max_steps=4")
    assert set(jobs) == {"ae_binary/ste", "ae_bernoulli/reinmax"}
    assert all("seed=1" in j and "trainer.max_steps=4" in j for js in jobs.values() for j in js)
    proc = subprocess.run([sys.executable, "scripts/run_artifact.py", "experiments/estimators.yaml", "--dry-run",
                           "--set", "dab.estimator=ste"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "set by the spec's variants; choose them with --variants" in proc.stderr
