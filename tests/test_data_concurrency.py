"""Preparing a fresh data root from several processes at once (``--jobs 2`` right after
``make data``): every process gets the data, the same data, and no partial file is left behind.
The Fashion-MNIST files here are small synthetic gzipped IDX files, so this runs anywhere."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dab.suite import image_data

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": 3000, "t10k": 500}  # images per split; large enough that unpacking takes a while

# A child: import everything, say "ready", wait for "go", load both splits, print their digests.
CHILD = r"""
import hashlib, json, os, sys, time
from pathlib import Path
import torchvision.datasets  # imported lazily by the loader: import it before "ready"
from dab.suite.image_data import load_image_split
root, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.0005)
out = {}
for train in (True, False):
    s = load_image_split("fmnist", root, train=train, device="cpu", download=False)
    out["train" if train else "t10k"] = [list(s.images.shape), hashlib.sha256(s.images.numpy().tobytes()).hexdigest(),
                                         hashlib.sha256(s.labels.numpy().tobytes()).hexdigest()]
print(json.dumps(out))
"""


def write_synthetic_fmnist(root: Path) -> dict:
    """Gzipped IDX files for both splits under ``root/FashionMNIST/raw`` (as ``make data`` leaves
    them); returns, per split, [shape, sha256 of the uint8 images, sha256 of the int64 labels]."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    expected = {}
    for split, n in SPLITS.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        # IDX: 0x0000 magic, dtype byte 0x08 (uint8), number of dims, then big-endian int32 sizes
        idx3 = struct.pack(">I3I", 0x0803, n, 28, 28) + images.tobytes()
        idx1 = struct.pack(">II", 0x0801, n) + labels.tobytes()
        (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx3, compresslevel=1))
        (raw / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx1, compresslevel=1))
        expected[split] = [[n, 1, 28, 28], hashlib.sha256(images.tobytes()).hexdigest(),
                           hashlib.sha256(labels.astype(np.int64).tobytes()).hexdigest()]
    return expected


def test_two_processes_prepare_the_same_fresh_root_at_once(tmp_path):
    root = tmp_path / "data"
    expected = write_synthetic_fmnist(root)
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if k != "DAB_DATA_ROOT"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    readies = [tmp_path / f"ready{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(ready), str(go)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ready in readies]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in readies):  # both children have imported torch and dab
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a child died early"
            time.sleep(0.01)
        go.touch()  # release both at once
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == expected  # both processes: the data as written
    raw = root / "FashionMNIST" / "raw"
    assert not list(raw.glob("*.part")), "a partial file was left behind"
    for split, n in SPLITS.items():
        assert (raw / f"{split}-images-idx3-ubyte").stat().st_size == 16 + n * 28 * 28


def test_concurrent_unpackers_never_share_a_partial_file(tmp_path, monkeypatch):
    """Two writers of the same file, forced to be mid-copy at the same moment (the lock is taken
    out of the way): both finish and the file is whole."""
    src = tmp_path / "f.gz"
    payload = os.urandom(1 << 16)
    src.write_bytes(gzip.compress(payload))
    dst = tmp_path / "f"
    both_copying = threading.Barrier(2, timeout=30)
    real_copy = image_data.shutil.copyfileobj

    def copy_in_step(a, b, *args):
        both_copying.wait()
        real_copy(a, b, *args)

    monkeypatch.setattr(image_data.shutil, "copyfileobj", copy_in_step)
    errors = []

    def writer():
        try:
            image_data._gunzip_atomically(src, dst)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and dst.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.gz"]


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_unpacker_waits_for_the_first_then_skips(tmp_path):
    """Under the root lock only one process unpacks; one that arrives meanwhile finds the files."""
    root = tmp_path / "data"
    write_synthetic_fmnist(root)
    raw = root / "FashionMNIST" / "raw"
    done = []
    with image_data._root_lock(root, "FashionMNIST", exclusive=True):
        t = threading.Thread(target=lambda: (image_data.unpack_local_fashion_mnist(root), done.append(1)))
        t.start()
        t.join(0.5)
        assert done == [] and not (raw / "train-images-idx3-ubyte").exists()  # blocked on the lock
    t.join(60)
    assert done == [1] and (raw / "train-images-idx3-ubyte").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_torchvision_reads_share_the_root_lock_and_downloads_hold_it_alone(tmp_path):
    """CIFAR-10 / Fashion-MNIST through torchvision: the read runs under the shared lock (a
    download elsewhere would wait), the download under the exclusive one (a reader would wait)."""
    import fcntl

    seen = []

    def lock_state() -> str:
        with open(tmp_path / ".FakeSet.lock", "a+b") as probe:
            for mode, name in ((fcntl.LOCK_EX, "free"), (fcntl.LOCK_SH, "shared")):
                try:
                    fcntl.flock(probe.fileno(), mode | fcntl.LOCK_NB)
                    fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
                    return name
                except BlockingIOError:
                    continue
            return "exclusive"

    class FakeSet:
        def __init__(self, root, train, download):
            seen.append((download, lock_state()))
            if not download:
                raise RuntimeError("Dataset not found")

    image_data._torchvision_split(FakeSet, "fake", tmp_path, train=True, download=True, how="")
    assert seen == [(False, "shared"), (True, "exclusive")]
    assert lock_state() == "free"
