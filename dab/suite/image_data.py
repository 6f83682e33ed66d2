"""Image data sets as device tensors: Fashion-MNIST, Fashion-MNIST-32 (the CIFAR-shaped stand-in),
CIFAR-10 (torchvision) and ImageNet (an ImageFolder path). Shared by the autoencoder and the
classification families.

Small data sets load once into one uint8 tensor ``[N, C, H, W]`` on the training device;
batches are indexed and converted there (no per-sample PIL transforms in the training loop).
The data root is ``DAB_DATA_ROOT`` if set, else the config's ``dataset.root`` (default ``./data``).
A data set that is neither on disk nor downloadable stops with one message saying how to get it.

Several runs may prepare the same fresh data root at once (``run_artifact.py --jobs N`` right after
``make data``). Unpacking writes each file under a name unique to the writer and renames it into
place atomically, so a reader sees either no file or the whole file; torchvision's download and
extraction run under an exclusive lock file in the root (``.<data set>.lock``), and reads under a
shared one, so no run reads a half-extracted file or downloads while another does (POSIX ``flock``;
where it is unavailable the atomic unpack still holds, the lock is skipped).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.datasets import CIFAR10, FashionMNIST

from dab.errors import ConfigError

_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataMissingError(ConfigError):
    """A data set is not on disk and could not be downloaded; the message says how to get it."""


@dataclass
class ImageSplit:
    """images: uint8 [N, C, H, W] on the device; labels: int64 [N] on the device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def hold_out(self, n: int) -> tuple["ImageSplit", "ImageSplit"]:
        """(the first len - n images, the last n): a training split and its held-out validation split."""
        if not 0 < n < len(self):
            raise ConfigError(f"dataset.validation must be between 1 and {len(self) - 1} (the training images), got {n}")
        return (ImageSplit(self.images[:-n], self.labels[:-n]), ImageSplit(self.images[-n:], self.labels[-n:]))


def data_root(configured: str | os.PathLike | None = None) -> Path:
    """``$DAB_DATA_ROOT`` if set, else ``configured``, else ``./data``."""
    env = os.environ.get("DAB_DATA_ROOT")
    return Path(env or configured or "data")


@contextlib.contextmanager
def _root_lock(root: Path, key: str, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on ``root/.<key>.lock`` (exclusive for writers, shared for readers) during
    the block. Writers create ``root`` if needed; where the lock file cannot be opened (a read-only
    or missing root) or ``fcntl`` does not exist, the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    if exclusive:
        root.mkdir(parents=True, exist_ok=True)
    try:
        handle = open(root / f".{key}.lock", "a+b")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _gunzip_atomically(src: Path, dst: Path) -> None:
    """Decompress ``src`` to ``dst`` through a temporary file unique to this writer in the same
    folder, then ``os.replace`` it into place: concurrent writers never share a partial file, and
    ``dst`` appears only complete (identical content, so the last rename winning is harmless)."""
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.part")  # mode from the umask
    try:
        with gzip.open(src, "rb") as gz, open(tmp, "xb") as out:
            shutil.copyfileobj(gz, out)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def unpack_local_fashion_mnist(root: Path) -> None:
    """torchvision reads the extracted IDX files: unpack any ``root/FashionMNIST/raw/*.gz`` that
    lacks its twin (a no-op where there is none). Safe when several processes do it at once."""
    raw = Path(root) / "FashionMNIST" / "raw"
    if not raw.is_dir():
        return
    todo = [name for name in _FMNIST_FILES if (raw / f"{name}.gz").exists() and not (raw / name).exists()]
    if not todo:
        return
    with _root_lock(Path(root), "FashionMNIST", exclusive=True):  # one unpacker; the others wait, then skip
        for name in todo:
            if not (raw / name).exists():
                _gunzip_atomically(raw / f"{name}.gz", raw / name)


def _missing(name: str, root: Path, how: str, err: Exception | None = None) -> DataMissingError:
    why = f" ({type(err).__name__}: {err})" if err is not None else ""
    return DataMissingError(f"data set '{name}' not found under {root} and could not be downloaded{why}. {how}")


def _torchvision_split(cls, name: str, root: Path, train: bool, download: bool, how: str):
    """``cls(root, train)`` from disk, else downloaded; a failure is one DataMissingError. The
    read holds the root's shared lock and the download its exclusive one, so concurrent runs
    download once and never read a half-extracted file."""
    key = cls.__name__
    try:
        with _root_lock(root, key, exclusive=False):
            return cls(str(root), train=train, download=False)
    except RuntimeError:
        if not download:
            raise _missing(name, root, how) from None
    try:
        with _root_lock(root, key, exclusive=True):  # torchvision skips the download if a peer just did it
            return cls(str(root), train=train, download=True)
    except Exception as err:  # offline, proxy, disk: one message, not a traceback
        raise _missing(name, root, how, err) from None


def load_fashion_mnist(root: Path, train: bool, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 1, 28, 28] and int64 [N] on the CPU, from ``root/FashionMNIST/raw`` (IDX files,
    gzipped or not) or torchvision's download."""
    unpack_local_fashion_mnist(root)
    how = ("Get it with `apt-get install -y dataset-fashion-mnist` and copy "
           "/usr/share/datasets/fashion-mnist/*.gz into <root>/FashionMNIST/raw/ (`make data` does this), "
           "or allow torchvision to download it; <root> is $DAB_DATA_ROOT or dataset.root.")
    ds = _torchvision_split(FashionMNIST, "fmnist", root, train, download, how)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


def load_cifar10(root: Path, train: bool, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 3, 32, 32] and int64 [N] on the CPU via torchvision's CIFAR10."""
    how = ("Allow torchvision to download it (internet access), or place the extracted "
           "cifar-10-batches-py/ folder under <root>; <root> is $DAB_DATA_ROOT or dataset.root.")
    ds = _torchvision_split(CIFAR10, "cifar10", root, train, download, how)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.long)


def pad_to_32_rgb(images: torch.Tensor) -> torch.Tensor:
    """Fashion-MNIST-32 stand-in: uint8 [N, 1, 28, 28] -> [N, 3, 32, 32] (zero pad 2, 3 channels)."""
    return torch.nn.functional.pad(images, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


def _fmnist(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return load_fashion_mnist(root, train, download)


def _fmnist32(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_fashion_mnist(root, train, download)
    return pad_to_32_rgb(images), labels


def _cifar10(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return load_cifar10(root, train, download)


# the small-image data sets held on the device: name -> (per-sample shape, loader); ImageNet is
# read through a DataLoader (imagenet_loader), its shape set by dataset.image_size
DEVICE_SETS = {"fmnist": ((1, 28, 28), _fmnist), "fmnist32": ((3, 32, 32), _fmnist32),
               "cifar10": ((3, 32, 32), _cifar10)}


def load_image_split(name: str, root: str | os.PathLike | None, train: bool, device: torch.device | str,
                     download: bool = True) -> ImageSplit:
    """A whole small-image split (one of ``DEVICE_SETS``) as device tensors."""
    if name not in DEVICE_SETS:
        raise ConfigError(f"{name} is not a small-image data set held on the device; valid choices: "
                          + ", ".join(DEVICE_SETS))
    images, labels = DEVICE_SETS[name][1](data_root(root), train, download)
    return ImageSplit(images.to(device), labels.to(device))


def image_shape(name: str, image_size: int = 512) -> tuple[int, int, int]:
    """Per-sample [C, H, W] of an image data set, known before loading it (imagenet: ``image_size``)."""
    if name == "imagenet":
        return (3, image_size, image_size)
    if name not in DEVICE_SETS:
        raise ConfigError(f"{name} is not an image data set; valid choices: {', '.join(image_datasets())}")
    return DEVICE_SETS[name][0]


def image_datasets() -> tuple[str, ...]:
    """The image data sets: those held on the device, and ImageNet."""
    return (*DEVICE_SETS, "imagenet")


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 in [0, 1], on the same device."""
    return images.float().div_(255.0)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """CIFAR-style augmentation on the device, per sample: zero-pad by ``pad``, crop back to the
    input size at a random offset, and mirror horizontally with probability 1/2. x: [B, C, H, W]."""
    b, c, h, w = x.shape
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=x.device)
        rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
        x = padded.gather(2, rows)
        cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
        x = x.gather(3, cols)
    if flip:
        mirror = torch.rand(b, generator=generator, device=x.device) < 0.5
        x = torch.where(mirror.view(b, 1, 1, 1), x.flip(-1), x)
    return x


def imagenet_loader(path: str | os.PathLike, size: int, batch_size: int, train: bool, workers: int = 8):
    """A torchvision ImageFolder DataLoader over ``path/{train,val}`` resized to ``size`` (the
    paper used 512x512). ImageNet is too large for device tensors, so it keeps a DataLoader."""
    split = Path(path) / ("train" if train else "val")
    if not split.is_dir():
        raise DataMissingError(f"data set 'imagenet' not found: no folder {split}. ImageNet cannot be "
                               "downloaded automatically; get it from image-net.org and give its root "
                               "(holding train/ and val/ class folders) as dataset.root.")
    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    return DataLoader(datasets.ImageFolder(str(split), tf), batch_size=batch_size, shuffle=train,
                      num_workers=workers, drop_last=train, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
