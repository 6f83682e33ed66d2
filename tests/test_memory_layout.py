"""The classifier's memory layout: channels-last only where oneDNN's CPU kernels are sound, and a
training run through the real build path on an AVX2-only oneDNN (emulated on any x86 CPU with
ONEDNN_MAX_CPU_ISA=AVX2), the configuration that crashed with a heap corruption."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dab.suite.families import parse

from dab.errors import ConfigError
from dab.suite.families.classification import make_classifier
from dab.suite.memory_layout import onednn_avx2_unsafe_convs, use_channels_last

from conftest import REPO, compose_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def classifier(width: int):
    return make_classifier(parse(compose_config(["+experiment=classify_identity", f"model.width={width}"])))


@pytest.mark.parametrize("width,unsafe", [(1, 2), (2, 2), (4, 1), (7, 1), (8, 0), (64, 0)])
def test_strided_pointwise_convs_with_2_to_7_input_channels_are_flagged(width, unsafe):
    """A ResNet18's projection shortcuts (1x1, stride 2) take w, 2w and 4w channels."""
    names = onednn_avx2_unsafe_convs(classifier(width))
    assert len(names) == unsafe, names
    assert all("shortcut" in n for n in names)


def test_auto_uses_channels_last_on_cuda_and_on_cpus_where_it_is_safe():
    narrow, wide = classifier(4), classifier(8)
    assert use_channels_last("auto", narrow, CUDA) and use_channels_last("auto", wide, CUDA)
    assert use_channels_last("auto", wide, CPU)
    assert not use_channels_last("auto", narrow, CPU)
    assert not use_channels_last(False, wide, CUDA) and use_channels_last(True, wide, CPU)


def test_forcing_channels_last_onto_an_unsafe_cpu_model_is_a_config_error():
    with pytest.raises(ConfigError, match="valid choices here: auto, false"):
        use_channels_last(True, classifier(4), CPU)
    with pytest.raises(ConfigError, match="valid choices: auto, true, false"):
        use_channels_last("nhwc", classifier(8), CPU)


def test_the_preset_asks_for_auto():
    assert compose_config(["+experiment=classify_sort"]).model.channels_last == "auto"


CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, "tests")
    from dab.suite import image_data
    from dab.suite.experiment import run_experiment
    from conftest import compose_config

    def fake(channels, side):
        def load(root, train, download=True):
            gen = torch.Generator().manual_seed(int(train))
            n = 128 if train else 64
            return (torch.randint(0, 256, (n, channels, side, side), generator=gen, dtype=torch.uint8),
                    torch.randint(0, 10, (n,), generator=gen))
        return load

    image_data.load_fashion_mnist = fake(1, 28)
    width, out = sys.argv[1], sys.argv[2]
    cfg = compose_config(["+experiment=classify_identity", "dataset=fmnist32", f"model.width={width}",
                          "dataset.batch_size=32", "dataset.test_size=64", "trainer.max_steps=3",
                          "trainer.eval_every=3", "trainer.progress=false", "trainer.device=cpu",
                          f"runs_root={out}/runs"])
    metrics = run_experiment(cfg, out + "/run")
    print("steps", metrics["train/steps"])
""")


@pytest.mark.parametrize("width", [4, 8])
def test_classifier_trains_on_an_avx2_only_onednn(width, tmp_path):
    """Width 4 crashed here (double free / segfault in the shortcut's weight gradient) before the
    layout guard; width 8 runs channels-last through the AVX2 kernels and must pass too. One thread
    makes the crash deterministic."""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(width), str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "steps 3" in proc.stdout
