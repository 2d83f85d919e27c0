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


def test_single_spike_input_ablation_keeps_each_inputs_first_spike() -> None:
    """benchmarks/accuracy_spread.py's Table VII ablation: golden's binary coding of the
    transformed inputs is the original code's first spike alone, signed inputs included."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_spread.py"
    spec = importlib.util.spec_from_file_location("accuracy_spread", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()  # fmt: skip
    x = torch.randn(16, 3, 4, 4)  # signed inputs: spikes of both signs
    snn = convert(net, [x], ConversionConfig(T=8), progress=False)
    assert snn.layers[0].signed
    full = golden.run(snn, x, "exact", device="cpu").spikes[0].long()  # (N, T_in, C, H, W)
    one = golden.run(snn, bench.single_spike_inputs(snn, x), "exact", device="cpu").spikes[0]
    first = torch.zeros_like(full)
    fired = full != 0
    t_first = torch.where(fired.any(1), fired.long().argmax(1), -1)  # first spike's phase
    for t in range(full.shape[1]):
        first[:, t] = torch.where(t_first == t, full[:, t], 0)
    assert torch.equal(one.long(), first)
    assert (one != 0).sum(1).max() == 1 and (full != 0).sum(1).max() > 1 and (one < 0).any()
