"""Data loaders for scikit-learn digits, MNIST (IDX), the CIFAR-10 subset and user .npz files."""

from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASET_NAMES",
    "data_root",
    "find_data",
    "load_cifar10_subset",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "normalize",
]

#: Per-channel mean of the CIFAR-10 ResNet checkpoints' input normalisation.
CIFAR_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel standard deviation of the CIFAR-10 ResNet checkpoints' input normalisation.
CIFAR_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_REPO_ROOT = Path(__file__).resolve().parents[1]

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_CIFAR_SUBSET = "cifar10/cifar10_subset.npz"


def data_root() -> Path:
    """Return the shared data folder: ``$ONESPIKE_DATA`` if set, else ``<repo>/../shared/data``.

    Returns
    -------
    Path
        The folder that holds ``mnist/``, ``cifar10/`` and ``cifar10-resnet/``. It may not exist.
    """
    env = os.environ.get("ONESPIKE_DATA")
    if env:  # absolute: the path may be handed to worker processes in other folders
        return Path(env).expanduser().resolve()
    return _REPO_ROOT.parent / "shared" / "data"


def find_data(subpath: str | os.PathLike[str]) -> Path:
    """Return ``data_root() / subpath``, raising if it does not exist.

    Parameters
    ----------
    subpath
        Path relative to the data root, e.g. ``"mnist"`` or ``"cifar10/cifar10_subset.npz"``.

    Returns
    -------
    Path
        The existing file or folder.

    Raises
    ------
    FileNotFoundError
        If the path does not exist; the message names it and mentions ``ONESPIKE_DATA``.
    """
    path = data_root() / subpath
    if not path.exists():
        raise FileNotFoundError(
            f"data not found: {path} (set the ONESPIKE_DATA environment variable to the folder "
            "holding mnist/, cifar10/ and cifar10-resnet/)"
        )
    return path


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_digits(
    seed: int = 0, test_fraction: float = 0.25
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load scikit-learn's bundled 8x8 digits with a deterministic stratified split.

    Parameters
    ----------
    seed
        Random seed of the split.
    test_fraction
        Fraction of the 1797 images put into the test set, in (0, 1).

    Returns
    -------
    x_train, y_train, x_test, y_test
        Images as float32 tensors of shape (N, 1, 8, 8) in [0, 1]; labels as int64 tensors.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (
        torch.from_numpy(np.ascontiguousarray(x_tr)),
        torch.from_numpy(np.ascontiguousarray(y_tr)),
        torch.from_numpy(np.ascontiguousarray(x_te)),
        torch.from_numpy(np.ascontiguousarray(y_te)),
    )


def _read_gzip(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST file not found: {path} (set ONESPIKE_DATA to the shared data folder)"
        )
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a valid gzip file ({exc})") from exc


def _parse_idx(path: Path, magic: int, ndim: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Parse one IDX file; return the uint8 payload and its dimensions."""
    raw = _read_gzip(path)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(
            f"{path}: truncated IDX header ({len(raw)} bytes, need at least {header_len})"
        )
    got_magic = int.from_bytes(raw[0:4], "big")
    if got_magic != magic:
        raise ValueError(f"{path}: bad IDX magic number {got_magic}, expected {magic}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX size mismatch: header dims {dims} need {expected} bytes, "
            f"file has {len(raw)} (truncated or corrupt)"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len)
    return data, dims


def load_mnist(
    split: str, root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST from the gzip-compressed IDX files.

    Parameters
    ----------
    split
        ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
    root
        Folder holding the four ``*-idx?-ubyte.gz`` files; defaults to ``data_root() / "mnist"``.

    Returns
    -------
    x, y
        Images as float32 (N, 1, 28, 28) in [0, 1]; labels as int64 (N,).

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If a file is not gzip, has a wrong magic number or dimensions, is truncated, holds
        labels above 9, or image and label counts disagree.
    """
    _check_split(split)
    folder = find_data("mnist") if root is None else Path(root)
    img_name, lbl_name = _MNIST_FILES[split]
    img_path, lbl_path = folder / img_name, folder / lbl_name

    images, (n_img, rows, cols) = _parse_idx(img_path, _IDX_IMAGES_MAGIC, 3)
    if (rows, cols) != (28, 28):
        raise ValueError(f"{img_path}: image size {rows}x{cols}, expected 28x28")
    labels, (n_lbl,) = _parse_idx(lbl_path, _IDX_LABELS_MAGIC, 1)
    if n_img != n_lbl:
        raise ValueError(f"{img_path} holds {n_img} images but {lbl_path} holds {n_lbl} labels")
    if n_lbl and int(labels.max()) > 9:
        raise ValueError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")

    x = torch.from_numpy(images.reshape(n_img, 1, 28, 28).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def _read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read the named arrays from a ``.npz`` file without unpickling anything."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not a .npz archive (a single .npy array?)")
        with npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise ValueError(
                    f"{path}: missing array(s) {missing}; expected {list(keys)}, "
                    f"found {sorted(npz.files)}"
                )
            return {k: npz[k] for k in keys}
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc


def load_cifar10_subset(
    split: str, path: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the real CIFAR-10 subset (1017 test and 5170 train images).

    Parameters
    ----------
    split
        ``"train"`` or ``"test"``.
    path
        The ``.npz`` file; defaults to ``data_root() / "cifar10/cifar10_subset.npz"``.

    Returns
    -------
    x, y
        Images as float32 (N, 3, 32, 32) in [0, 1] (not normalised); labels as int64 (N,).

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If keys, shapes, dtypes or labels are wrong.
    """
    _check_split(split)
    npz_path = find_data(_CIFAR_SUBSET) if path is None else Path(path)
    if not npz_path.is_file():
        raise FileNotFoundError(f"CIFAR-10 subset not found: {npz_path}")
    img_key, lbl_key = f"{split}_images", f"{split}_labels"
    arrays = _read_npz(npz_path, (img_key, lbl_key))
    images, labels = arrays[img_key], arrays[lbl_key]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        raise ValueError(
            f"{npz_path}: {img_key} has shape {images.shape} dtype {images.dtype}, "
            "expected (N, 3, 32, 32) uint8"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{npz_path}: {lbl_key} has shape {labels.shape}, expected ({images.shape[0]},)"
        )
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{npz_path}: label {int(labels.max())} out of range 0..9")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def normalize(
    x: torch.Tensor, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD
) -> torch.Tensor:
    """Normalise images per channel: ``(x - mean) / std``.

    Parameters
    ----------
    x
        Images shaped (N, C, H, W).
    mean, std
        One value per channel (length C); every ``std`` entry must be positive.

    Returns
    -------
    torch.Tensor
        The normalised images, same shape and dtype as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"normalize expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(
            f"mean {tuple(mean)} and std {tuple(std)} need one value per channel "
            f"({x.shape[1]} channels)"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x_tr, y_tr, x_te, y_te = load_digits()
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


_LOADERS: dict[str, Callable[[str], tuple[torch.Tensor, torch.Tensor]]] = {
    "digits": _digits_split,
    "mnist": load_mnist,
    "cifar10": load_cifar10_subset,
}
#: Built-in dataset names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def _load_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    arrays = _read_npz(path, ("x", "y"))
    x, y = arrays["x"], arrays["y"]
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: 'x' must be a float array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{path}: 'x' must be shaped (N, ...) with ndim >= 2, got {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(
            f"{path}: 'y' must be a 1-D integer label array, got shape {y.shape} dtype {y.dtype}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: 'x' has {x.shape[0]} examples but 'y' has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{path}: 'x' and 'y' are empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: 'x' contains NaN or infinite values")
    if int(y.min()) < 0:
        raise ValueError(f"{path}: 'y' contains negative label {int(y.min())}")
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def _parse_count(spec: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0 or not (text.isascii() and text.isdigit()):
        raise ValueError(
            f"invalid data spec {spec!r}: the count after ':' must be a positive integer, "
            f"got {text!r}"
        )
    return n


def load_dataset(spec: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the data named by a command-line ``--data`` argument.

    Parameters
    ----------
    spec
        ``digits``, ``mnist`` or ``cifar10`` (raw [0, 1] images; the caller normalises),
        optionally with a ``:N`` suffix keeping the first N examples (``mnist:500``); or a path
        to a ``.npz`` file holding a float array ``x`` shaped (N, ...) and integer labels ``y``
        shaped (N,), which may also take a ``:N`` suffix. For ``.npz`` files ``split`` is
        ignored.
    split
        ``"train"`` or ``"test"``.

    Returns
    -------
    x, y
        float32 inputs and int64 labels.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones), a bad count, or a malformed
        ``.npz`` file (missing keys, wrong dtypes, x/y length mismatch).
    TypeError
        If ``spec`` is not a string.
    FileNotFoundError
        If the data files are missing.
    """
    if not isinstance(spec, str):
        raise TypeError(f"data spec must be a string, got {type(spec).__name__} {spec!r}")
    if not spec.strip():
        raise ValueError(f"data spec must be a non-empty string, got {spec!r}")
    _check_split(split)
    spec = spec.strip()
    source, count = spec, None
    if ":" in spec and not spec.endswith(".npz"):
        head, tail = spec.rsplit(":", 1)
        if head:
            source, count = head, _parse_count(spec, tail)

    if source.endswith(".npz"):
        x, y = _load_npz(Path(source).expanduser())
    elif source in _LOADERS:
        x, y = _LOADERS[source](split)
    else:
        raise ValueError(
            f"unknown dataset {source!r}: expected one of {', '.join(DATASET_NAMES)} "
            "(optionally with ':N'), or a path to a .npz file with arrays 'x' and 'y'"
        )

    if count is not None:
        if count > x.shape[0]:
            raise ValueError(
                f"invalid data spec {spec!r}: asked for {count} examples but the {split} split "
                f"has only {x.shape[0]}"
            )
        x, y = x[:count], y[:count]
    return x, y
