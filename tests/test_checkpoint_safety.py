"""A checkpoint is plain data read with ``weights_only=True``: one carrying a pickled callable or
object, as a checkpoint someone sends you might, is refused unread with a one-line ConfigError,
on every path that resumes (load_checkpoint, run_experiment, train.py)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dab.errors import ConfigError
from dab.suite.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from dab.suite.experiment import run_experiment

from conftest import compose_config, small_overrides

PRESET = "sort_t5"


class RunsAShellCommand:
    """Unpickled without ``weights_only``, this runs ``command`` (pickle calls os.system)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Anything:
    """A custom class: its instances pickle by reference to code outside torch."""

    def __init__(self):
        self.payload = 42


def make_cfg(runs_root: Path, *extra: str, steps: int = 2):
    return compose_config([f"+experiment={PRESET}", *small_overrides(runs_root, steps=steps), *extra])


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A finished two-step run whose directory holds a real checkpoint."""
    root = tmp_path_factory.mktemp("good")
    run_experiment(make_cfg(root / "runs"), root / "run")
    return root / "run"


def poisoned_copy(good_run: Path, where: Path, payload) -> Path:
    """A copy of ``good_run``'s checkpoint with ``payload`` added: a valid checkpoint otherwise."""
    where.mkdir(parents=True)
    state = torch.load(good_run / CHECKPOINT, map_location="cpu", weights_only=True)
    state["extra"] = payload
    torch.save(state, where / CHECKPOINT)
    return where / CHECKPOINT


def test_a_real_checkpoint_is_plain_data(good_run):
    state = torch.load(good_run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["step"] == 2 and isinstance(state["history"], list) and isinstance(state["config"], dict)


@pytest.mark.parametrize("payload", ["os.system", "command on unpickling", "custom object"])
def test_load_checkpoint_refuses_pickled_code_unread(payload, good_run, tmp_path):
    marker = tmp_path / "ran"
    obj = {"os.system": {"fn": os.system}, "command on unpickling": RunsAShellCommand(f"touch {marker}"),
           "custom object": [Anything()]}[payload]
    ckpt = poisoned_copy(good_run, tmp_path / "sent", obj)
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(ckpt, model, torch.optim.SGD(model.parameters(), 0.1))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot resume from checkpoint {ckpt}: ")
    assert "refused unread" in message
    assert ("Anything" if payload == "custom object" else "system") in message, message
    assert "weights_only=False" not in message  # torch's own advice (load it anyway) is not passed on
    assert not marker.exists()


def test_run_experiment_resume_from_refuses_pickled_code(good_run, tmp_path):
    marker = tmp_path / "ran"
    sent = poisoned_copy(good_run, tmp_path / "sent", RunsAShellCommand(f"touch {marker}")).parent
    (sent / "config.yaml").write_text((good_run / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=f"cannot resume from checkpoint {sent / CHECKPOINT}: it holds a pickled"):
        run_experiment(make_cfg(tmp_path / "runs", f"trainer.resume_from={sent}", steps=4), tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_train_py_resume_from_refuses_pickled_code_with_one_line(good_run, tmp_path, main_inprocess):
    marker = tmp_path / "ran"
    sent = poisoned_copy(good_run, tmp_path / "sent", RunsAShellCommand(f"touch {marker}")).parent
    code, out, err = main_inprocess(f"+experiment={PRESET}", *small_overrides(tmp_path / "runs", steps=4),
                                    f"trainer.resume_from={sent}", f"hydra.run.dir={tmp_path / 'out'}")
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot resume from checkpoint {sent / CHECKPOINT}"), err
    assert "Traceback" not in err and not marker.exists()
    assert not list(tmp_path.rglob("metrics.json"))


def test_save_checkpoint_stores_numpy_numbers_as_python_numbers(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), 0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    history = [{"step": np.int64(1), "test/accuracy": np.float32(0.5), "seconds": np.float64(1.25)}]
    save_checkpoint(tmp_path / CHECKPOINT, model, optimizer, 1, 1.5, history, {"seed": 0, "widths": (16, 32)})
    state = torch.load(tmp_path / CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["history"] == [{"step": 1, "test/accuracy": 0.5, "seconds": 1.25}]
    assert [type(v) for v in state["history"][0].values()] == [int, float, float]
    assert state["config"] == {"seed": 0, "widths": (16, 32)}
    assert type(history[0]["step"]) is np.int64  # the caller's history is left as it was

    fresh = torch.nn.Linear(2, 2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), 0.1)
    load_checkpoint(tmp_path / CHECKPOINT, fresh, fresh_opt)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_save_checkpoint_refuses_what_it_could_not_read_back(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / CHECKPOINT, model, None, 1, 1.0, [], {"seed": 0})
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(TypeError, match=r"config\.data\.root is a pathlib\.\w*Path"):
        save_checkpoint(tmp_path / CHECKPOINT, model, None, 2, 1.0, [], {"data": {"root": Path("/data")}})
    assert (tmp_path / CHECKPOINT).read_bytes() == before
