"""Tests of onespike.models: architectures, fx-traceability, training and pretrained accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn

from onespike.data import CIFAR_MEAN, CIFAR_STD, load_cifar10_subset, load_mnist, normalize
from onespike.models import (
    MNIST_CHECKPOINT,
    BasicBlock,
    DigitsCNN,
    LambdaLayer,
    MnistCNN,
    ResNetCifar,
    evaluate,
    load_cifar_resnet,
    load_mnist_cnn,
    resnet20,
    resnet32,
    resnet_cifar,
    train_digits_cnn,
)

# --------------------------------------------------------------------------------------------
# architectures and torch.fx
# --------------------------------------------------------------------------------------------

_CASES = [
    (DigitsCNN, (2, 1, 8, 8)),
    (MnistCNN, (2, 1, 28, 28)),
    (resnet20, (2, 3, 32, 32)),
    (resnet32, (2, 3, 32, 32)),
]


@pytest.mark.parametrize(("factory", "shape"), _CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_forward_shape_and_fx_trace(factory, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(shape)
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), out)
    assert out.shape == (2, 10)


def test_digits_cnn_structure() -> None:
    layers = list(DigitsCNN().features)
    kinds = [type(m) for m in layers]
    assert kinds == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.AvgPool2d,
        nn.Flatten,
        nn.Linear,
    ]
    assert layers[2].inplace and layers[9].in_features == 64


def test_mnist_cnn_uses_functional_relu_and_view() -> None:
    graph = torch.fx.symbolic_trace(MnistCNN()).graph
    targets = [n.target for n in graph.nodes]
    assert torch.nn.functional.relu in targets
    assert "view" in targets and "size" in targets
    assert MnistCNN().fc1.in_features == 1568


def test_resnet_structure() -> None:
    m = resnet20()
    assert [len(m.layer1), len(m.layer2), len(m.layer3)] == [3, 3, 3]
    assert [len(resnet32().layer3), len(resnet_cifar(56).layer2)] == [5, 9]
    first = m.layer2[0]
    assert isinstance(first, BasicBlock) and isinstance(first.shortcut, LambdaLayer)
    assert isinstance(m.layer2[1].shortcut, nn.Sequential) and len(m.layer2[1].shortcut) == 0
    x = torch.randn(1, 16, 32, 32)
    y = first.shortcut(x)  # option A: subsample and zero-pad 8 channels on each side
    assert y.shape == (1, 32, 16, 16)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert float(y[:, :8].abs().sum() + y[:, 24:].abs().sum()) == 0.0
    # state-dict keys match the published checkpoints (after stripping "module.")
    keys = set(m.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer3.2.bn2.weight", "linear.bias"} <= keys
    assert not any("shortcut" in k for k in keys)


@pytest.mark.parametrize("depth", [0, 21, 2, 20.0, True])
def test_resnet_bad_depth(depth: object) -> None:
    with pytest.raises(ValueError, match=rf"depth must be 6n \+ 2.*{depth!r}"):
        resnet_cifar(depth)  # type: ignore[arg-type]


def test_resnet_bad_blocks() -> None:
    with pytest.raises(ValueError, match=r"three positive ints"):
        ResNetCifar([3, 3])


# --------------------------------------------------------------------------------------------
# digits training
# --------------------------------------------------------------------------------------------


def test_train_digits_cnn_accuracy_and_rng_isolation() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model, acc = train_digits_cnn(seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # caller's RNG stream untouched
    assert acc > 0.95
    assert not model.training


def test_train_digits_cnn_deterministic() -> None:
    m1, a1 = train_digits_cnn(seed=3, epochs=2)
    m2, a2 = train_digits_cnn(seed=3, epochs=2)
    assert a1 == a2
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k


def test_train_digits_cnn_bad_epochs() -> None:
    with pytest.raises(ValueError, match=r"epochs must be a positive int, got 0"):
        train_digits_cnn(epochs=0)


def test_evaluate_validates_lengths() -> None:
    with pytest.raises(ValueError, match=r"x has 3 examples and y has 2"):
        evaluate(DigitsCNN(), torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.int64))


# --------------------------------------------------------------------------------------------
# pretrained CIFAR-10 ResNets
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_test(cifar_subset: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_cifar10_subset("test", path=cifar_subset)
    return normalize(x, CIFAR_MEAN, CIFAR_STD), y


@pytest.mark.parametrize(("depth", "correct"), [(20, 932), (32, 944)])
def test_pretrained_resnet_accuracy(
    resnet_dir: Path, cifar_test: tuple[torch.Tensor, torch.Tensor], depth: int, correct: int
) -> None:
    # SOURCES.md: ResNet-20 91.64 % (932/1017), ResNet-32 92.82 % (944/1017) on the subset.
    model = load_cifar_resnet(depth)
    assert not model.training
    x, y = cifar_test
    acc = evaluate(model, x, y)
    assert round(acc * len(y)) == correct
    assert round(100 * acc, 2) == {20: 91.64, 32: 92.82}[depth]


def test_pretrained_resnet_traced_matches(
    resnet_dir: Path, cifar_test: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = load_cifar_resnet(20, root=resnet_dir)
    x = cifar_test[0][:64]
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


def test_load_cifar_resnet_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"resnet20-\*\.th"):
        load_cifar_resnet(20, root=tmp_path)
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2 with n >= 1, got 19"):
        load_cifar_resnet(19, root=tmp_path)


# --------------------------------------------------------------------------------------------
# committed MNIST checkpoint
# --------------------------------------------------------------------------------------------


def test_mnist_checkpoint_committed_and_small() -> None:
    assert MNIST_CHECKPOINT.is_file(), f"{MNIST_CHECKPOINT} missing; run benchmarks/train_mnist.py"
    assert MNIST_CHECKPOINT.stat().st_size < 2 * 1024 * 1024
    assert MNIST_CHECKPOINT.read_bytes()[8:9] == b"{"  # safetensors header, not a pickle


def test_mnist_checkpoint_accuracy(mnist_dir: Path) -> None:
    model = load_mnist_cnn()
    assert not model.training
    x, y = load_mnist("test", root=mnist_dir)
    acc = evaluate(model, x[:2000], y[:2000])
    assert acc >= 0.99, f"MNIST CNN accuracy {acc:.4f} on the first 2000 test images"


def test_load_mnist_cnn_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.*train_mnist\.py"):
        load_mnist_cnn(tmp_path / "nope.safetensors")
