"""Image data as device tensors: local Fashion-MNIST, the 32x32 stand-in, augmentation, errors."""
from pathlib import Path

import pytest
import torch

from dab.suite.image_data import (DataMissingError, data_root, load_image_split, pad_to_32_rgb, random_crop_flip,
                            to_float)

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fmnist_root(tmp_path):
    if not (FMNIST_SYSTEM / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed here (apt-get install -y dataset-fashion-mnist)")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FMNIST_SYSTEM.glob("*.gz"):
        (raw / f.name).symlink_to(f)
    return tmp_path


def test_fashion_mnist_reads_the_local_gzipped_idx_files(fmnist_root, monkeypatch):
    monkeypatch.delenv("DAB_DATA_ROOT", raising=False)
    test = load_image_split("fmnist", fmnist_root, train=False, device="cpu", download=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.labels.shape == (10000,) and set(test.labels.unique().tolist()) == set(range(10))
    assert test.images.float().mean() > 30  # real pixels, not zeros
    s32 = load_image_split("fmnist32", fmnist_root, train=False, device="cpu", download=False)
    assert s32.images.shape == (10000, 3, 32, 32)
    assert torch.equal(s32.images[:, 0, 2:30, 2:30], test.images[:, 0])


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DAB_DATA_ROOT", raising=False)
    with pytest.raises(DataMissingError, match="dataset-fashion-mnist"):
        load_image_split("fmnist", tmp_path, train=False, device="cpu", download=False)
    with pytest.raises(DataMissingError, match="cifar10"):
        load_image_split("cifar10", tmp_path, train=False, device="cpu", download=False)


def test_data_root_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DAB_DATA_ROOT", str(tmp_path))
    assert data_root("elsewhere") == tmp_path
    monkeypatch.delenv("DAB_DATA_ROOT")
    assert data_root("elsewhere") == Path("elsewhere") and data_root(None) == Path("data")


def test_pad_and_augment_keep_shape_and_content():
    imgs = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    assert pad_to_32_rgb(imgs).shape == (6, 3, 32, 32)
    x = to_float(pad_to_32_rgb(imgs))
    gen = torch.Generator().manual_seed(0)
    y = random_crop_flip(x, gen, pad=4, flip=True)
    assert y.shape == x.shape
    same = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(same, x)
    # every crop is a shifted window of the zero-padded image: its sum never exceeds the original's
    assert (y.flatten(1).sum(1) <= x.flatten(1).sum(1) + 1e-4).all()
    assert not torch.equal(y, x)
