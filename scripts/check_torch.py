"""Set-up check (`make setup`): the installed torch and torchvision work together.

Imports both and runs one torchvision operator (non-maximum suppression on two boxes). A torchvision
built for another torch fails here, e.g. with "operator torchvision::nms does not exist", although
pip installed both without complaint and sorting runs (it never imports torchvision) until the
image tasks and the tests do. Prints one line and exits 0 when the pair works; otherwise says what
failed and what to do, and exits 1.

    .venv/bin/python scripts/check_torch.py [--pair "torch==X torchvision==Y"]
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata


def installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def pair_error() -> str | None:
    """None when torch and torchvision import and ``torchvision.ops.nms`` gives the right answer;
    else which step failed and how."""
    step = "import torch"
    try:
        import torch

        step = "import torchvision"
        import torchvision

        step = "torchvision.ops.nms"
        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9]])  # IoU 0.9: the second goes
        keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.5).tolist()
    except Exception as err:  # ImportError, RuntimeError (an operator missing), OSError (a shared library)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "(no message)"
        return f"`{step}` raised {type(err).__name__}: {reason}"
    if keep != [0]:
        return f"torchvision.ops.nms kept boxes {keep} where [0] is right"
    return None


def advice(error: str, pair: str | None) -> str:
    by_hand = (f".venv/bin/pip install --force-reinstall {pair}" if pair is not None else
               ".venv/bin/pip install --force-reinstall torch==2.N.* torchvision==0.(N+15).*  (one release of each)")
    return "\n".join([
        f"error: torch and torchvision do not work together: {error}",
        f"  installed: torch {installed('torch')}, torchvision {installed('torchvision')}; pip can mix two builds that"
        " do not fit, e.g. with TORCH=cpu when PyTorch's CPU wheel index cannot be reached",
        "  to fix it, either start again with PyPI's default build (about 6 GB; it runs on a CPU too):",
        "    rm -rf .venv && make setup        (without TORCH=cpu)",
        "  or install a matching pair by hand, then check again:",
        f"    {by_hand} && make setup",
        "  set-up is not marked done, so the next make call installs and checks again",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", help='a torch/torchvision pair known to work, offered as the fix by hand, e.g. '
                                       '"torch==2.14.1 torchvision==0.29.1"')
    args = parser.parse_args()
    error = pair_error()
    if error is not None:
        print(advice(error, args.pair), file=sys.stderr)
        return 1
    print(f"torch {installed('torch')} and torchvision {installed('torchvision')} work together "
          "(torchvision.ops.nms ran)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
