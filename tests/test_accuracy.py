"""Accuracy of the converted SNN next to its ANN on real data (subsets, to stay fast).

Paired comparisons on the same images; the full-size numbers are in benchmarks/results/.
"""

from __future__ import annotations

import pytest
import torch

import golden
from converter import ConversionConfig, convert
from onespike import data, models


def ann_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).double().mean().item()


def check_snn(model, calib, x, y, cfg: ConversionConfig, modes: dict[str, float]) -> dict:
    """Convert, then assert each mode's accuracy is within its bound (points) of the ANN's."""
    snn = convert(model, calib, cfg, progress=False)
    ann = ann_accuracy(model, x, y)
    got = {}
    for mode, bound in modes.items():
        got[mode] = golden.run(snn, x, mode, device="cpu", keep_spikes=False).accuracy(y)
        assert got[mode] >= ann - bound, f"{mode}: {got[mode]:.2f} % vs ANN {ann:.2f} %"
    return got


def test_digits_cnn() -> None:
    model, _ = models.train_digits_cnn(seed=0)
    xtr, _, xte, yte = data.load_digits(seed=0)
    check_snn(
        model, xtr, xte, yte, ConversionConfig(), {"exact": 1.0, "int": 1.0, "pipelined": 1.0}
    )


def test_mnist_cnn(mnist_dir) -> None:
    xtr, _ = data.load_mnist("train")
    xte, yte = data.load_mnist("test")
    check_snn(
        models.load_mnist_cnn(),
        xtr[:512],
        xte[:1000],
        yte[:1000],
        ConversionConfig(),
        {"exact": 0.5, "int": 0.5},
    )


@pytest.fixture(scope="module")
def cifar(cifar_subset, resnet_dir):
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, yte = data.load_cifar10_subset("test")
    return data.normalize(xtr[:512], mean, std), data.normalize(xte[:256], mean, std), yte[:256]


def test_resnet20_cifar10(cifar) -> None:
    calib, x, y = cifar
    cfg = ConversionConfig(T=16, Q=1.3, input_mean=data.CIFAR_MEAN, input_std=data.CIFAR_STD)
    check_snn(
        models.load_cifar_resnet(20), list(calib.split(256)), x, y, cfg, {"exact": 1.5, "int": 1.5}
    )


def test_resnet20_pipelined_with_full_wait_is_exact(cifar) -> None:
    calib, x, _ = cifar
    cfg = ConversionConfig(T=16, Q=1.3, input_mean=data.CIFAR_MEAN, input_std=data.CIFAR_STD)
    snn = convert(models.load_cifar_resnet(20), list(calib.split(256)), cfg, progress=False)
    e = golden.run(snn, x[:16], "exact", device="cpu")
    p = golden.run(snn, x[:16], "pipelined", device="cpu")
    for i, lay in enumerate(snn.layers):
        if lay.kind in ("neuron", "maxpool"):
            assert torch.equal(e.spikes[i], p.spikes[i]), lay.name
