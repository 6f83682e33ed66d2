"""Hydra entry point: `python train.py +experiment=sort_t10 [overrides]`; returns the sweep objective."""
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dab.cli import check_overrides
from dab.config import register_configs
from dab.errors import ConfigError, TrainingFailed
from dab.experiment import run_experiment
from dab.trainer import Interrupted, StopRequest

CONF = Path(__file__).resolve().parent / "conf"
register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # `kill` or Ctrl-C: finish the current step, checkpoint, exit 130 (a second signal stops at once)
    signal.signal(signal.SIGTERM, StopRequest.request)
    signal.signal(signal.SIGINT, StopRequest.request)
    hc = HydraConfig.get()
    # in a multirun a failed job raises, so Hydra records it, runs the others, and exits 1 at the end
    multirun = hc.mode == RunMode.MULTIRUN
    command = shlex.join(["python", "train.py", *hc.overrides.task])
    try:
        metrics = run_experiment(cfg, hc.runtime.output_dir, command)
    except ConfigError as err:
        if multirun:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingFailed:  # already logged, with status.json written
        if multirun:
            raise
        sys.exit(1)
    except Interrupted:  # already logged: where the run is and how to continue it
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted before training started: nothing was saved", file=sys.stderr)
        sys.exit(130)
    return metrics[metrics["objective"]]


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:], CONF)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
