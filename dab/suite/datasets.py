"""The data sets a config may name (``dataset=<name>``), each with the schema of its own settings.

The modules that load them: ``dab/suite/sorting_data.py`` (``sort``) and
``dab/suite/image_data.py`` (``fmnist``, ``fmnist32``, ``cifar10``, ``imagenet``). Which family
accepts which data set is the family's business (its ``parse``).
"""
from __future__ import annotations

from dataclasses import dataclass

from dab.registry import Registry

DATASETS = Registry("dataset")


@dataclass
class SortData:
    """Sequences x ~ U(0,1)^T, target argsort(x) (paper Sec. 5.1)."""
    length: int = 10  # T, the sequence length
    batch_size: int = 1024
    test_size: int = 10000
    test_seed: int = 1234  # fixed: every run is scored on the same test sequences
    # > 0: score this many held-out sequences (drawn from test_seed + 1) instead of the test set,
    # reported as val/* (tuning never sees the test set)
    validation: int = 0


@dataclass
class FMNISTData:
    """Fashion-MNIST 28x28 grey; autoencoders only."""
    root: str = "data"  # folder holding the data sets ($DAB_DATA_ROOT wins when set)
    batch_size: int = 128
    test_size: int = 10000  # test images scored (a fixed subsample when smaller than the split)
    probe_size: int = 10000  # autoencode: training images (a fixed subsample) the linear probe is fitted on
    # > 0: the last this many training images are held out of training and scored instead of the
    # test set, reported as val/* (tuning never sees the test set)
    validation: int = 0


@dataclass
class SmallImageData(FMNISTData):
    """32x32 RGB (CIFAR-10, the Fashion-MNIST-32 stand-in): autoencoders and classifiers."""
    crop_pad: int = 4  # classify: on-device random crop after zero-padding by this much; 0 = off
    flip: bool = True  # classify: on-device random horizontal flip
    emd_batch: int = 0  # classify: test images on which test/emd is measured at each evaluation; 0 = off


@dataclass
class ImageNetData(FMNISTData):
    """An ImageFolder tree, resized and center-cropped; autoencoders only."""
    root: str = "/path/to/imagenet"
    image_size: int = 512  # resize + center-crop side (the paper: 512)
    batch_size: int = 192
    probe_size: int = 50000
    workers: int = 8  # DataLoader worker processes



# an entry is its settings' schema (the loaders live with the families' data modules)
DATASETS.register("sort", SortData, schema=SortData)
DATASETS.register("fmnist", FMNISTData, schema=FMNISTData)
DATASETS.register("fmnist32", SmallImageData, schema=SmallImageData)
DATASETS.register("cifar10", SmallImageData, schema=SmallImageData)
DATASETS.register("imagenet", ImageNetData, schema=ImageNetData)
