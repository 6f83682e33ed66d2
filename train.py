"""Hydra entry point: `python train.py +experiment=sort_t10 [overrides]`; returns the sweep objective."""
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dab.config import register_configs
from dab.errors import ConfigError
from dab.experiment import run_experiment

register_configs()


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # lets the trainer checkpoint on `kill`


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        metrics = run_experiment(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return metrics["test/all_or_none"]


if __name__ == "__main__":
    main()
