"""Hydra entry point: `python train.py +experiment=sort_t10 [overrides]`; returns the sweep objective."""
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dab.config import register_configs
from dab.errors import ConfigError
from dab.experiment import run_experiment
from dab.trainer import StopRequest

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # `kill` or Ctrl-C: finish the current step, checkpoint, exit 130 (a second signal stops at once)
    signal.signal(signal.SIGTERM, StopRequest.request)
    signal.signal(signal.SIGINT, StopRequest.request)
    try:
        metrics = run_experiment(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: continue from the last checkpoint with trainer.resume=true", file=sys.stderr)
        sys.exit(130)
    return metrics[metrics["objective"]]


if __name__ == "__main__":
    main()
