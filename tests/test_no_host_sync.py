"""No host synchronisation inside the training step of any family (CUDA only: counted with
torch.cuda.set_sync_debug_mode, which raises on a sync). The batches, the augmentation and the
losses stay on the device; the trainer syncs only at log, evaluation and checkpoint steps."""
import pytest
import torch

from dab.suite.step import build_run
from test_compile_families import FAMILIES, synthetic_images  # noqa: F401  (fixture)

from conftest import compose_config, small_overrides

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="sync counting needs CUDA")

CASES = {"sort": ["+experiment=sort_t10"], **FAMILIES}


@pytest.mark.parametrize("family", CASES)
def test_training_steps_make_no_host_sync(family, tmp_path, synthetic_images):  # noqa: F811
    shared = [o for o in small_overrides(tmp_path) if not o.startswith(("model.", "dataset.test_size",
                                                                          "trainer.device"))]
    run = build_run(compose_config([*CASES[family], *shared, "trainer.device=cuda"]), torch.device("cuda"))
    run.step(0)  # first step: cuDNN autotuning and lazy initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            run.step(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
