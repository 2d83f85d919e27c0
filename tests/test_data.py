"""Tests of onespike.data: data-root lookup, the four loaders, normalisation and --data specs."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from onespike import data as D

# --------------------------------------------------------------------------------------------
# data root
# --------------------------------------------------------------------------------------------


def test_data_root_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ONESPIKE_DATA", str(tmp_path))
    assert D.data_root() == tmp_path


def test_data_root_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONESPIKE_DATA", raising=False)
    repo = Path(D.__file__).resolve().parents[1]
    assert D.data_root() == repo.parent / "shared" / "data"


def test_find_data_missing_names_path_and_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ONESPIKE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nothing-here.*ONESPIKE_DATA"):
        D.find_data("nothing-here")
    (tmp_path / "mnist").mkdir()
    assert D.find_data("mnist") == tmp_path / "mnist"


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_load_digits_shapes_and_split() -> None:
    x_tr, y_tr, x_te, y_te = D.load_digits()
    assert x_tr.shape == (1347, 1, 8, 8) and x_te.shape == (450, 1, 8, 8)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    assert set(y_te.tolist()) == set(range(10))
    # stratified: every class holds 25 % +- 1 of its images in the test set
    counts_te = torch.bincount(y_te, minlength=10)
    counts_all = counts_te + torch.bincount(y_tr, minlength=10)
    assert torch.all((counts_te - 0.25 * counts_all).abs() <= 1)
    # deterministic for a seed, different for another
    again = D.load_digits()
    assert torch.equal(again[0], x_tr) and torch.equal(again[3], y_te)
    assert not torch.equal(D.load_digits(seed=1)[1], y_tr)


def test_load_digits_bad_fraction() -> None:
    with pytest.raises(ValueError, match=r"test_fraction.*1\.5"):
        D.load_digits(test_fraction=1.5)


# --------------------------------------------------------------------------------------------
# MNIST IDX
# --------------------------------------------------------------------------------------------


def _idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload


def _write_mnist(
    folder: Path,
    n: int = 3,
    *,
    img_magic: int = 2051,
    lbl_magic: int = 2049,
    rows: int = 28,
    n_labels: int | None = None,
    cut_images: int = 0,
    labels: bytes | None = None,
) -> Path:
    """Write a tiny test-split MNIST pair into ``folder`` with optional defects."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = bytes((i * 7) % 256 for i in range(n * rows * 28))
    img = _idx_bytes(img_magic, (n, rows, 28), pixels)
    if cut_images:
        img = img[:-cut_images]
    n_labels = n if n_labels is None else n_labels
    lbl = _idx_bytes(lbl_magic, (n_labels,), labels or bytes(i % 10 for i in range(n_labels)))
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(img))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lbl))
    return folder


def test_load_mnist_synthetic_ok(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, n=3)
    x, y = D.load_mnist("test", root=root)
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 2] and y.dtype == torch.int64
    assert float(x.reshape(-1)[1]) == pytest.approx(7 / 255)


def test_load_mnist_wrong_image_magic(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, img_magic=2049)
    msg = re.escape(
        f"{root / 't10k-images-idx3-ubyte.gz'}: bad IDX magic number 2049, expected 2051"
    )
    with pytest.raises(ValueError, match=msg):
        D.load_mnist("test", root=root)


def test_load_mnist_wrong_label_magic(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, lbl_magic=2051)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: bad IDX magic number 2051"):
        D.load_mnist("test", root=root)


def test_load_mnist_truncated_payload(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, n=3, cut_images=100)
    expected = 16 + 3 * 28 * 28
    msg = (
        r"t10k-images-idx3-ubyte\.gz: IDX size mismatch: header dims \(3, 28, 28\) need "
        rf"{expected} bytes, file has {expected - 100} \(truncated or corrupt\)"
    )
    with pytest.raises(ValueError, match=msg):
        D.load_mnist("test", root=root)


def test_load_mnist_truncated_header(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08"))
    with pytest.raises(ValueError, match=r"truncated IDX header \(3 bytes, need at least 16\)"):
        D.load_mnist("test", root=root)


def test_load_mnist_truncated_gzip_stream(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path)
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: not a valid gzip file"):
        D.load_mnist("test", root=root)


def test_load_mnist_not_gzip(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: not a valid gzip file"):
        D.load_mnist("test", root=root)


def test_load_mnist_wrong_image_size(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, rows=27)
    with pytest.raises(ValueError, match=r"image size 27x28, expected 28x28"):
        D.load_mnist("test", root=root)


def test_load_mnist_count_mismatch(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, n=3, n_labels=4)
    with pytest.raises(ValueError, match=r"holds 3 images but .*t10k-labels.* holds 4 labels"):
        D.load_mnist("test", root=root)


def test_load_mnist_label_out_of_range(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path, n=3, labels=bytes([1, 12, 3]))
    with pytest.raises(ValueError, match=r"label 12 out of range 0\.\.9"):
        D.load_mnist("test", root=root)


def test_load_mnist_missing_file(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz"):
        D.load_mnist("test", root=root)


def test_load_mnist_bad_split() -> None:
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        D.load_mnist("val")


def test_load_mnist_real(mnist_dir: Path) -> None:
    x, y = D.load_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x_tr, y_tr = D.load_mnist("train", root=mnist_dir)
    assert x_tr.shape == (60000, 1, 28, 28) and y_tr.shape == (60000,)
    assert y_tr[:5].tolist() == [5, 0, 4, 1, 9]


# --------------------------------------------------------------------------------------------
# CIFAR-10 subset and normalisation
# --------------------------------------------------------------------------------------------


def test_load_cifar10_subset_real(cifar_subset: Path) -> None:
    x, y = D.load_cifar10_subset("test")
    assert x.shape == (1017, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (1017,) and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # official test-batch order
    x_tr, y_tr = D.load_cifar10_subset("train", path=cifar_subset)
    assert x_tr.shape == (5170, 3, 32, 32) and y_tr.shape == (5170,)


def test_load_cifar10_subset_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, test_images=np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npz: missing array\(s\) \['test_labels'\]"):
        D.load_cifar10_subset("test", path=bad)
    np.savez(bad, test_images=np.zeros((2, 32, 32, 3), np.uint8), test_labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"expected \(N, 3, 32, 32\) uint8"):
        D.load_cifar10_subset("test", path=bad)
    np.savez(bad, test_images=np.zeros((2, 3, 32, 32), np.uint8), test_labels=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"test_labels has shape \(3,\), expected \(2,\)"):
        D.load_cifar10_subset("test", path=bad)
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        D.load_cifar10_subset("test", path=tmp_path / "absent.npz")


def test_normalize() -> None:
    x = torch.rand(4, 3, 5, 5)
    out = D.normalize(x, D.CIFAR_MEAN, D.CIFAR_STD)
    for c in range(3):
        expect = (x[:, c] - D.CIFAR_MEAN[c]) / D.CIFAR_STD[c]
        torch.testing.assert_close(out[:, c], expect)
    with pytest.raises(ValueError, match=r"one value per channel \(1 channels\)"):
        D.normalize(torch.rand(2, 1, 4, 4), D.CIFAR_MEAN, D.CIFAR_STD)
    with pytest.raises(ValueError, match=r"std must be positive"):
        D.normalize(x, (0, 0, 0), (1, 0, 1))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*\(3, 5, 5\)"):
        D.normalize(x[0])


# --------------------------------------------------------------------------------------------
# load_dataset (--data specs)
# --------------------------------------------------------------------------------------------


def test_load_dataset_digits_with_count() -> None:
    x, y = D.load_dataset("digits:100", "test")
    assert x.shape == (100, 1, 8, 8) and y.shape == (100,)
    x_full, y_full = D.load_dataset("digits", "test")
    assert x_full.shape[0] == 450
    assert torch.equal(x, x_full[:100]) and torch.equal(y, y_full[:100])


def test_load_dataset_mnist_and_cifar(mnist_dir: Path, cifar_subset: Path) -> None:
    x, y = D.load_dataset("mnist:500", "test")
    assert x.shape == (500, 1, 28, 28) and y[:3].tolist() == [7, 2, 1]
    x, y = D.load_dataset("cifar10:17", "train")
    assert x.shape == (17, 3, 32, 32) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_load_dataset_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*digits, mnist, cifar10"):
        D.load_dataset("imagenet", "test")
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist_'"):
        D.load_dataset("mnist_:5", "test")


@pytest.mark.parametrize("count", ["0", "-3", "abc", "2.5", "", " 7"])
def test_load_dataset_bad_count(count: str) -> None:
    msg = r"count after ':' must be a positive integer, got " + re.escape(repr(count))
    with pytest.raises(ValueError, match=msg):
        D.load_dataset(f"digits:{count}", "test")


def test_load_dataset_count_too_large() -> None:
    with pytest.raises(
        ValueError, match=r"asked for 1000 examples but the test split has only 450"
    ):
        D.load_dataset("digits:1000", "test")


def test_load_dataset_bad_split_and_spec() -> None:
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'dev'"):
        D.load_dataset("digits", "dev")
    with pytest.raises(ValueError, match=r"non-empty string"):
        D.load_dataset("  ", "test")
    with pytest.raises(TypeError, match=r"data spec must be a string, got int 5"):
        D.load_dataset(5, "test")  # type: ignore[arg-type]


def test_load_dataset_npz(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    x = np.random.default_rng(0).random((6, 2, 3), dtype=np.float64)
    np.savez(path, x=x, y=np.arange(6, dtype=np.int32))
    got_x, got_y = D.load_dataset(str(path), "test")
    assert got_x.dtype == torch.float32 and got_y.dtype == torch.int64
    assert got_x.shape == (6, 2, 3) and got_y.tolist() == list(range(6))
    np.testing.assert_allclose(got_x.numpy(), x.astype(np.float32))
    got_x, got_y = D.load_dataset(f"{path}:4", "train")
    assert got_x.shape == (4, 2, 3) and got_y.tolist() == [0, 1, 2, 3]


def test_load_dataset_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(
        ValueError, match=r"bad\.npz: missing array\(s\) \['x'\].*\['images', 'y'\]"
    ):
        D.load_dataset(str(path), "test")
    np.savez(path, x=np.zeros((3, 4), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"'x' has 3 examples but 'y' has 2 labels"):
        D.load_dataset(str(path), "test")
    np.savez(path, x=np.zeros((2, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"'x' must be a float array, got dtype uint8"):
        D.load_dataset(str(path), "test")
    np.savez(path, x=np.zeros((2, 4), np.float32), y=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"'y' must be a 1-D integer label array"):
        D.load_dataset(str(path), "test")
    np.savez(path, x=np.full((2, 4), np.nan, np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"NaN or infinite"):
        D.load_dataset(str(path), "test")
    np.savez(path, x=np.zeros((2, 4), np.float32), y=np.array([0, -1]))
    with pytest.raises(ValueError, match=r"negative label -1"):
        D.load_dataset(str(path), "test")
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable \.npz file"):
        D.load_dataset(str(path), "test")
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        D.load_dataset(str(tmp_path / "absent.npz"), "test")


def test_load_dataset_npz_rejects_pickles(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"pickled\.npz: not a readable \.npz file"):
        D.load_dataset(str(path), "test")
