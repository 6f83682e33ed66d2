"""Hydra entry point: `python train.py +experiment=sort_t10 [overrides]`; returns the sweep objective."""
import atexit
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dab.errors import ConfigError, TrainingFailed
from dab.suite.cli import check_overrides
from dab.suite.compose import register_schema
from dab.suite.distributed import from_env, teardown
from dab.suite.experiment import run_experiment, with_interpreter
from dab.suite.families import parse
from dab.suite.stop_signals import stop_on_signals
from dab.suite.trainer import Interrupted, StopRequest

CONF = Path(__file__).resolve().parent / "conf"
register_schema()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    # in a multirun a failed job raises, so Hydra records it, runs the others, and exits 1 at the end
    multirun = hc.mode == RunMode.MULTIRUN
    command = shlex.join(["python", "train.py", *hc.overrides.task])
    try:
        args = parse(cfg)  # the one reading of the config, before the signal handlers read the grace
        # `kill` or Ctrl-C: finish the current step, checkpoint, exit 130; a second signal, or a step
        # that does not end within the grace period, ends the process (dab/suite/stop_signals.py)
        with stop_on_signals(StopRequest.request, args.trainer.stop_grace_seconds):
            metrics = run_experiment(args, hc.runtime.output_dir, command)
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
        if multirun:
            sweep = shlex.join([*with_interpreter(["python", "train.py"]), *sys.argv[1:], "trainer.resume=true"])
            print(f"multirun stopped: the jobs after job {hc.job.num} were not started. To finish the sweep, run it "
                  f"again with trainer.resume=true (each job continues its newest checkpoint of the same config; "
                  f"finished jobs only re-record their metrics):\n  {sweep}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted before training started: nothing was saved", file=sys.stderr)
        sys.exit(130)
    finally:
        teardown(from_env())
    return metrics.get(metrics.get("objective"))  # ranks > 0 of a torchrun launch return nothing


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:], CONF)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if from_env().rank > 0:  # torchrun: only rank 0 keeps a run dir; the others log to a temporary one
        scratch = tempfile.mkdtemp(prefix=f"dab_rank{from_env().rank}_")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    main()
