"""Shared pytest fixtures: locate the real data folder or skip with a clear reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onespike.data import data_root as _data_root


def _require(subpath: str) -> Path:
    root = _data_root()
    path = root / subpath
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the real-data tests, but {path} is missing")
        pytest.skip(
            f"real data not available: {path} is missing (set ONESPIKE_DATA to the shared data "
            "folder, normally <repo>/../shared/data)"
        )
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder; skips the test if it is absent."""
    return _require("")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four MNIST IDX gzip files; skips if absent."""
    return _require("mnist")


@pytest.fixture(scope="session")
def cifar_subset() -> Path:
    """The real CIFAR-10 subset .npz; skips if absent."""
    return _require("cifar10/cifar10_subset.npz")


@pytest.fixture(scope="session")
def resnet_dir() -> Path:
    """The folder with the pretrained CIFAR-10 ResNet checkpoints; skips if absent."""
    return _require("cifar10-resnet")


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is many times faster than several on a busy CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
