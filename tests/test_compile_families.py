"""The compiled whole step (trainer.compile=true) on every family: after a few steps its parameters
equal eager's. Slow (each family compiles for tens of seconds on a CPU): `pytest -m slow`."""
import pytest
import torch

from test_autoencoders import prototype_images
from test_compile import train_params

from conftest import compose_config, small_overrides

pytestmark = pytest.mark.slow


@pytest.fixture
def synthetic_images(monkeypatch):
    import dab.suite.families.autoencoding as ae
    import dab.suite.families.classification as cl
    from dab.suite.image_data import ImageSplit, image_shape

    def split(name, root, train, device, download=True):
        images, labels = prototype_images(256 if train else 64, image_shape(name), seed=int(train))
        return ImageSplit(images.to(device), labels.to(device))

    monkeypatch.setattr(ae, "load_image_split", split)
    monkeypatch.setattr(cl.image_data, "load_image_split", split)


FAMILIES = {
    "autoencode": ["+experiment=vae_fmnist", "model.widths=[8,8]", "model.hidden=16", "dataset.test_size=16",
                   "dataset.probe_size=64"],
    "classify": ["+experiment=classify_sort", "dataset=fmnist32", "model.width=4", "dataset.test_size=32",
                 "dab.hidden=8", "model.channels_last=false"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_compiled_whole_step_trains_the_eager_parameters_in_every_family(family, tmp_path, synthetic_images):
    torch._dynamo.reset()
    shared = [o for o in small_overrides(tmp_path) if not o.startswith(("model.", "dataset.test_size"))]
    # SGD: the convolutions' biases before BatchNorm have a zero true gradient, and Adam would turn
    # its rounding noise into lr-sized steps that differ between any two summation orders
    base = [*FAMILIES[family], *shared, "optimizer=sgd", "optimizer.grad_clip=1.0"]
    init = train_params(compose_config(base), 0)
    eager = train_params(compose_config(base), 3)
    fast = train_params(compose_config([*base, "trainer.compile=true"]), 3)
    assert max(float((eager[k] - init[k]).abs().max()) for k in eager) > 1e-3  # it trained
    for name in eager:
        torch.testing.assert_close(fast[name], eager[name], rtol=1e-3, atol=1e-5, msg=name)
