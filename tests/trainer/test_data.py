from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import DataError, TrainConfig, load_data
from trainer.data import read_idx


def test_idx_folder_loads_the_shared_mnist_test_split(mnist_dir: Path) -> None:
    data = load_data(TrainConfig(dataset="idx", data_root=str(mnist_dir)))
    assert data.train.shape == (8000, 1, 28, 28) and data.holdout.shape == (2000, 1, 28, 28)
    assert data.train.dtype == torch.float32
    assert -1.0 <= float(data.train.min()) and float(data.train.max()) <= 1.0
    pixels = torch.cat([data.train, data.holdout]).add(1).div(2)
    assert abs(float(pixels.mean()) - 0.1325) < 2e-3  # the README's checked mean
    counts = torch.bincount(torch.cat([data.train_labels, data.holdout_labels]), minlength=10)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    again = load_data(TrainConfig(dataset="mnist", data_root=str(mnist_dir)))  # same files through 'mnist'
    assert torch.equal(again.holdout, data.holdout) and again.fingerprint == data.fingerprint


def test_idx_reader_reads_uncompressed_files_too(tmp_path: Path, mnist_dir: Path) -> None:
    with gzip.open(mnist_dir / "t10k-labels-idx1-ubyte.gz") as src, open(tmp_path / "labels", "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert read_idx(tmp_path / "labels").shape == (10000,)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        read_idx(tmp_path / "bad")


def test_digits_split_is_deterministic_and_resizable() -> None:
    a, b = load_data(TrainConfig()), load_data(TrainConfig(seed=5))
    assert a.shape == (1, 8, 8) and torch.equal(a.holdout, b.holdout)
    assert len(a.train) + len(a.holdout) == 1797
    big = load_data(TrainConfig(image_size=16))
    assert big.shape == (1, 16, 16) and big.fingerprint != a.fingerprint


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_data(TrainConfig(dataset="folder", data_root=str(tmp_path), image_size=8, holdout_fraction=0.2))
    assert data.shape == (3, 8, 8) and len(data.train) == 8 and len(data.holdout) == 2
    assert sorted(torch.cat([data.train_labels, data.holdout_labels]).tolist()) == [0] * 5 + [1] * 5


def test_missing_files_without_download_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_data(TrainConfig(dataset="fashion-mnist", data_root=str(tmp_path)))
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value) and "download: true" in str(info.value)


def test_torchvision_layout_with_both_splits_uses_the_official_split(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)

    def write(name: str, arr: np.ndarray) -> None:
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        with gzip.open(raw / f"{name}.gz", "wb") as fh:
            fh.write(header + arr.astype(np.uint8).tobytes())

    write("train-images-idx3-ubyte", rng.integers(0, 255, (30, 28, 28)))
    write("train-labels-idx1-ubyte", rng.integers(0, 10, (30,)))
    write("t10k-images-idx3-ubyte", rng.integers(0, 255, (7, 28, 28)))
    write("t10k-labels-idx1-ubyte", rng.integers(0, 10, (7,)))
    data = load_data(TrainConfig(dataset="mnist", data_root=str(tmp_path)))
    assert len(data.train) == 30 and len(data.holdout) == 7


def test_download_path_fetches_made_files_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's real download code, pointed at a loopback server holding small files made here."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    import torchvision.datasets as tvd

    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(2)
    resources = []
    for name, arr in [("train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28))),
                      ("train-labels-idx1-ubyte", rng.integers(0, 10, (20,))),
                      ("t10k-images-idx3-ubyte", rng.integers(0, 255, (6, 28, 28))),
                      ("t10k-labels-idx1-ubyte", rng.integers(0, 10, (6,)))]:
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        blob = gzip.compress(header + arr.astype(np.uint8).tobytes())
        (served / f"{name}.gz").write_bytes(blob)
        resources.append((f"{name}.gz", hashlib.md5(blob).hexdigest()))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
    monkeypatch.setattr(tvd.MNIST, "resources", resources)
    try:
        data = load_data(TrainConfig(dataset="mnist", data_root=str(tmp_path / "root"), download=True))
    finally:
        server.shutdown()
    assert len(data.train) == 20 and len(data.holdout) == 6
    assert (tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def _write_idx(folder: Path, name: str, arr: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(folder / f"{name}.gz", "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_is_found_where_the_system_package_installs_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a data_root, fashion-mnist reads the folder Debian's dataset-fashion-mnist installs (here one the test
    makes in that layout: gzipped IDX files, both official splits); a data_root given still wins."""
    import trainer.data

    system = tmp_path / "usr-share-datasets-fashion-mnist"
    rng = np.random.default_rng(2)
    _write_idx(system, "train-images-idx3-ubyte", rng.integers(0, 255, (40, 28, 28)))
    _write_idx(system, "train-labels-idx1-ubyte", rng.integers(0, 10, (40,)))
    _write_idx(system, "t10k-images-idx3-ubyte", rng.integers(0, 255, (9, 28, 28)))
    _write_idx(system, "t10k-labels-idx1-ubyte", rng.integers(0, 10, (9,)))
    monkeypatch.setitem(trainer.data.SYSTEM_FOLDERS, "fashion-mnist", [tmp_path / "absent", system])
    data = load_data(TrainConfig(dataset="fashion-mnist"))
    assert len(data.train) == 40 and len(data.holdout) == 9  # the official split, not a holdout_fraction split
    with pytest.raises(DataError, match="not found under"):  # an explicit data_root is not second-guessed
        load_data(TrainConfig(dataset="fashion-mnist", data_root=str(tmp_path / "empty")))


def test_stacked_mnist_stacks_three_digits_of_one_split_deterministically(tmp_path: Path) -> None:
    """Each stacked image's channels are digits of its own split, and its label is their triple's code."""
    rng = np.random.default_rng(3)
    train_x, train_y = rng.integers(0, 255, (50, 28, 28)), np.arange(50) % 10
    test_x, test_y = rng.integers(0, 255, (20, 28, 28)), (np.arange(20) * 3) % 10
    for name, arr in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                      ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        _write_idx(tmp_path, name, arr)
    cfg = TrainConfig(dataset="stacked-mnist", data_root=str(tmp_path))
    data = load_data(cfg)
    assert data.shape == (3, 28, 28) and data.channel_classes == 10
    assert len(data.train) == 25600 and len(data.holdout) == 10000
    assert load_data(cfg).fingerprint == data.fingerprint  # deterministic
    for images, labels, src_x, src_y in ((data.train, data.train_labels, train_x, train_y),
                                         (data.holdout, data.holdout_labels, test_x, test_y)):
        source = torch.from_numpy(src_x).float().div(127.5).sub(1)
        for i in (0, 1, 777):
            code = int(labels[i])
            for c, digit in enumerate((code // 100, code // 10 % 10, code % 10)):
                match = [j for j in range(len(source)) if torch.equal(images[i, c], source[j])]
                assert match and src_y[match[0]] == digit
    assert len(set(data.train_labels.tolist())) > 900  # ~all 1000 triples among 25600 draws
