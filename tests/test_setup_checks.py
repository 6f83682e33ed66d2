"""`make setup` and the TORCH choice: an unknown value is refused on every call, and set-up is
marked done only when the installed torch/torchvision pair runs a torchvision op. The Makefile
runs in a copy under tmp_path with `python3` and `pip` replaced by stand-ins that install nothing:
no test here touches the real .venv or the network."""
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

NMS_ERROR = "operator torchvision::nms does not exist"
STAMP = Path(".venv/.installed")

# `python3 -m venv .venv` makes a venv whose pip only logs its arguments (and fails for the CPU index
# when FAIL_CPU_INDEX is set) and whose python is this test's interpreter, torch and all.
FAKE_PYTHON3 = f"""#!/bin/sh
[ "$1 $2 $3" = "-m venv .venv" ] || exit 9
mkdir -p .venv/bin
cat > .venv/bin/pip <<'EOF'
#!/bin/sh
echo "$@" >> pip.log
case "$*" in *--index-url*) [ -n "$FAIL_CPU_INDEX" ] && {{ echo "ERROR: no matching distribution" >&2; exit 1; }};; esac
exit 0
EOF
printf '#!/bin/sh\\nexec {sys.executable} "$@"\\n' > .venv/bin/python
chmod +x .venv/bin/pip .venv/bin/python
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of what `make setup` reads, with a `python3` on PATH that builds a stand-in venv."""
    work = tmp_path / "repo"
    (work / "scripts").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "scripts/check_torch.py"):
        shutil.copy(REPO / name, work / name)
    (tmp_path / "bin").mkdir()
    executable(tmp_path / "bin" / "python3", FAKE_PYTHON3)
    return work


def make(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("TORCH", "MAKEFLAGS", "PYTHONPATH")}
    base["PATH"] = f"{tree.parent / 'bin'}{os.pathsep}{base['PATH']}"
    return subprocess.run(["make", "--no-print-directory", *args], cwd=tree, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


def fake_torchvision(root: Path, how: str) -> Path:
    """A `torchvision` package that fails as one built for another torch does: at import, or in
    the op; or whose op gives a wrong answer. Returns the folder to put on PYTHONPATH."""
    pkg = root / how / "torchvision"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"raise RuntimeError({NMS_ERROR!r})\n" if how == "import" else
                                     "from . import ops\n__version__ = '0.0.fake'\n")
    (pkg / "ops.py").write_text(f"def nms(boxes, scores, iou_threshold):\n    raise RuntimeError({NMS_ERROR!r})\n"
                                if how != "wrong" else
                                "import torch\n\ndef nms(boxes, scores, iou_threshold):\n    return torch.tensor([0, 1])\n")
    return root / how


def check_torch(pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check_torch.py"),
                           "--pair", "torch==2.14.1 torchvision==0.29.1"],
                          env=env, capture_output=True, text=True, timeout=120)


# ---- TORCH: checked when the Makefile is read -------------------------------------------------

@pytest.mark.parametrize("target", ["run", "test", "setup", "table1"])
@pytest.mark.parametrize("value", ["gpu", "CPU", ""])
def test_an_unknown_torch_is_refused_on_every_call_even_with_a_venv(value, target, tree):
    (tree / STAMP).parent.mkdir()
    (tree / STAMP).touch()  # set up already: nothing would be (re)installed
    proc = make(tree, "-n", target, f"TORCH={value}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"unknown TORCH={value}; valid choices: default, cpu" in proc.stderr
    assert proc.stdout == ""  # refused before any command is planned
    assert not (tree / "pip.log").exists()


def test_an_unknown_torch_from_the_environment_is_refused_too(tree):
    proc = make(tree, "-n", "run", TORCH="cuda")
    assert proc.returncode == 2 and "unknown TORCH=cuda; valid choices: default, cpu" in proc.stderr


@pytest.mark.parametrize("value", [None, "default", "cpu"])
def test_the_valid_torch_choices_pass(value, tree):
    (tree / STAMP).parent.mkdir()
    (tree / STAMP).touch()
    proc = make(tree, "-n", "run", *([] if value is None else [f"TORCH={value}"]))
    assert proc.returncode == 0, proc.stderr
    assert "train.py +experiment=sort_t10" in proc.stdout and "pip" not in proc.stdout


def test_the_run_banner_quotes_no_timing_and_points_to_the_timings_page(tree):
    (tree / STAMP).parent.mkdir()
    (tree / STAMP).touch()
    (banner,) = [line for line in make(tree, "-n", "run").stdout.splitlines() if line.startswith("echo ")]
    assert "docs/timings.md" in banner
    assert not re.search(r"\d\s*(min|s\b|h\b|hours?|seconds?)", banner), banner


# ---- the torch/torchvision check ---------------------------------------------------------------

def test_check_torch_passes_on_this_venv():
    proc = check_torch()
    assert proc.returncode == 0, proc.stderr
    assert "work together" in proc.stdout


@pytest.mark.parametrize("how", ["import", "op", "wrong"])
def test_check_torch_fails_with_what_to_do(how, tmp_path):
    proc = check_torch(fake_torchvision(tmp_path, how))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.startswith("error: torch and torchvision do not work together: ")
    want = {"import": f"`import torchvision` raised RuntimeError: {NMS_ERROR}",
            "op": f"`torchvision.ops.nms` raised RuntimeError: {NMS_ERROR}",
            "wrong": "torchvision.ops.nms kept boxes [0, 1] where [0] is right"}[how]
    assert want in err.splitlines()[0]
    assert "installed: torch " in err and "TORCH=cpu" in err
    assert "rm -rf .venv && make setup" in err
    assert "pip install --force-reinstall torch==2.14.1 torchvision==0.29.1 && make setup" in err
    assert "Traceback" not in err


# ---- `make setup` end to end, with the stand-in python3 and pip --------------------------------

def test_setup_is_not_marked_done_while_the_pair_fails_then_is(tree, tmp_path):
    broken = make(tree, "setup", PYTHONPATH=str(fake_torchvision(tmp_path, "import")))
    assert broken.returncode != 0, broken.stdout
    assert NMS_ERROR in broken.stderr and "rm -rf .venv && make setup" in broken.stderr
    assert not (tree / STAMP).exists()  # so the next call installs and checks again

    fixed = make(tree, "setup")
    assert fixed.returncode == 0, fixed.stderr
    assert "work together" in fixed.stdout and (tree / STAMP).exists()
    assert "Nothing to be done" in make(tree, "-n", "setup").stdout


def test_setup_torch_cpu_stops_with_what_to_do_when_the_cpu_index_fails(tree):
    proc = make(tree, "setup", "TORCH=cpu", FAIL_CPU_INDEX="1")
    assert proc.returncode != 0, proc.stdout
    assert "could not install torch and torchvision from PyTorch's CPU wheel index" in proc.stderr
    assert "'make setup' without TORCH=cpu" in proc.stderr and "torch==2.14.1 torchvision==0.29.1" in proc.stderr
    assert not (tree / STAMP).exists()
    pip_calls = (tree / "pip.log").read_text().splitlines()
    assert not any("-e" in call.split() for call in pip_calls)  # stopped before installing the rest


def test_setup_torch_cpu_installs_from_the_cpu_index_then_checks(tree):
    proc = make(tree, "setup", "TORCH=cpu")
    assert proc.returncode == 0, proc.stderr
    pip_calls = (tree / "pip.log").read_text().splitlines()
    assert any("--index-url https://download.pytorch.org/whl/cpu" in call for call in pip_calls)
    assert "work together" in proc.stdout and (tree / STAMP).exists()
