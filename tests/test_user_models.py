"""Models as people write them (each from a public bug report of a converter, or from a peer's
front-end test suite): each converts right (golden ``ann`` equals PyTorch, hwsim equals golden
``int``) or is refused with the node, the op and the reason."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import golden
import hwsim
from converter import ConversionConfig, UnsupportedModelError, convert
from tests.test_hwsim import check_agrees


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


def check_converts(model: nn.Module, x: torch.Tensor, cfg: ConversionConfig | None = None):
    """golden ann equals PyTorch within 1e-4 relative; hwsim equals golden int; the model is
    untouched. Returns the SnnModel."""
    model = model.eval()
    state = copy.deepcopy(model.state_dict())
    snn = convert(model, x, cfg or ConversionConfig(), progress=False)
    with torch.no_grad():
        want = model(x).reshape(x.shape[0], -1).double()
    got = golden.run(snn, x, "ann", device="cpu").logits.double()
    scale = want.abs().max().clamp(min=1e-6)
    assert ((got - want).abs().max() / scale).item() < 1e-4, (got, want)
    if snn.is_quantized:
        check_agrees(snn, x, hwsim.ArchConfig(lanes=4))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    return snn


# --------------------------------------------------------------------------- signed input
def test_relu_on_the_signed_input_is_kept() -> None:
    """The issue's example: ReLU then Linear(4, 1), weights 1, input normalisation folded."""
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 1))
    nn.init.ones_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    calib = torch.tensor([[1, -1, 0.5, -0.5], [0.25, 0.75, -0.25, 1]])
    x = torch.tensor([[-1.0, -1, -1, -1], [1, -1, 0.5, -0.5]])
    cfg = ConversionConfig(weight_bits=None, input_mean=(0.5,) * 4, input_std=(0.25,) * 4)
    snn = convert(model, calib, cfg, progress=False)
    assert not snn.input.signed
    for mode, tol in (("ann", 1e-6), ("exact", 4e-3)):  # exact: 8-bit input coding
        got = golden.run(snn, x, mode, device="cpu").logits.reshape(-1)
        np.testing.assert_allclose(got.numpy(), [0.0, 1.5], atol=tol, err_msg=mode)
    assert any("ReLU of the model input" in n for n in snn.meta["notes"])


class ReluFirstCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(x)
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


def test_relu_first_cnn_on_normalised_input() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)  # signed, as after mean/std normalisation
    check_converts(ReluFirstCnn(), x)


def test_input_used_with_and_without_relu_is_refused() -> None:
    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 2)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.a(F.relu(x)) + self.b(x)

    with pytest.raises(UnsupportedModelError, match=r"used both through a ReLU"):
        convert(Both(), torch.randn(4, 4), progress=False)


# --------------------------------------------------------------------------- untouched model
def test_convert_leaves_every_submodule_flag_as_it_was() -> None:
    m = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)
    )
    m.train()
    m[1].eval()
    m[0].weight.requires_grad_(False)
    before = {n: (mod.training) for n, mod in m.named_modules()}
    state = copy.deepcopy(m.state_dict())
    convert(m, torch.rand(4, 1, 8, 8), progress=False)
    assert {n: mod.training for n, mod in m.named_modules()} == before
    assert m[1].training is False and m.training is True
    assert m[0].weight.requires_grad is False and m[4].weight.requires_grad is True
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k


# --------------------------------------------------------------------------- BatchNorm placement
def test_batchnorm_after_relu_folds_into_the_next_layer() -> None:
    torch.manual_seed(1)
    model = _randomise_bn(
        nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2))
    )
    check_converts(model, torch.rand(32, 4))


def test_batchnorm_on_the_input_is_an_input_normalisation() -> None:
    torch.manual_seed(2)
    model = _randomise_bn(
        nn.Sequential(
            nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 2)
        )
    )
    check_converts(model, torch.rand(32, 1, 8, 8))


def test_batchnorm2d_after_relu_with_padding_folds_exactly_at_the_border() -> None:
    torch.manual_seed(3)
    model = _randomise_bn(
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3),
        )
    )
    check_converts(model, torch.rand(32, 2, 6, 6))


def test_batchnorm1d_on_features() -> None:
    check_converts(_randomise_bn(nn.Sequential(nn.BatchNorm1d(1))), torch.tensor([[0.5], [0.25]]))
    torch.manual_seed(4)
    model = _randomise_bn(nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.BatchNorm1d(1)))
    check_converts(model, torch.rand(16, 1))


# --------------------------------------------------------------------------- model outputs
@pytest.mark.parametrize(
    "model, shape",
    [
        (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU()), (6,)),
        (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()), (2, 6, 6)),
        (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.ReLU()), (2, 6, 6)),
        (lambda: nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2)), (2, 6, 6)),
    ],
    ids=["linear-relu", "conv-relu", "conv-flatten-relu", "conv-relu-maxpool"],
)
def test_models_that_end_in_spikes_get_a_readout(model, shape) -> None:
    torch.manual_seed(5)
    snn = check_converts(model(), torch.rand(24, *shape))
    assert any("identity readout" in n for n in snn.meta["notes"])


def test_readout_class_is_the_argmax_of_relu_logits() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.ReLU()).eval()
    x = torch.rand(200, 8)
    snn = convert(model, x, ConversionConfig(weight_bits=None), progress=False)
    with torch.no_grad():
        ref = model(x)
    exact = golden.run(snn, x, "exact", device="cpu")
    clear = (ref.topk(2).values[:, 0] - ref.topk(2).values[:, 1]) > 0.05  # no near ties
    agree = (exact.predictions[clear] == ref.argmax(1)[clear]).float().mean().item()
    assert clear.sum() > 50 and agree > 0.95


class ConvView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3)
        self.c2 = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        return self.c2(F.relu(self.c1(x))).view(x.size(0), -1)


def test_conv_output_viewed_flat() -> None:
    torch.manual_seed(7)
    check_converts(ConvView(), torch.rand(16, 1, 8, 8))


@pytest.mark.parametrize("final", [nn.Softmax(dim=1), nn.LogSoftmax(dim=-1)])
def test_final_softmax_is_dropped_and_said(final) -> None:
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), final).eval()
    x = torch.rand(16, 6)
    snn = convert(model, x, ConversionConfig(weight_bits=None), progress=False)
    with torch.no_grad():
        logits = model[:3](x)
    got = golden.run(snn, x, "ann", device="cpu").logits
    torch.testing.assert_close(got, logits, rtol=1e-4, atol=1e-5)
    assert any("dropped" in n for n in snn.meta["notes"])


def test_softmax_in_the_middle_is_refused() -> None:
    class Mid(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.softmax(self.a(x), dim=1))

    with pytest.raises(UnsupportedModelError, match=r"^node 'b' .*softmax"):
        convert(Mid(), torch.rand(4, 4), progress=False)


# --------------------------------------------------------------------------- no-ops
def test_inference_no_ops_convert() -> None:
    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="valid"),
        nn.Dropout2d(0.3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding="same"),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),  # 6x6 -> 3x3 either way
        nn.Flatten(),
        nn.Dropout1d(0.2),
        nn.Dropout(0.1),
        nn.Linear(36, 3),
    )
    check_converts(model, torch.rand(16, 2, 8, 8))


def test_ceil_mode_that_changes_the_shape_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    with pytest.raises(UnsupportedModelError, match=r"ceil_mode=True gives \(4, 4\) where floor"):
        convert(model, torch.rand(4, 1, 8, 8), progress=False)


def test_clamp_min_zero_is_a_relu() -> None:
    class Clamp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.b(torch.clamp(self.a(x), min=0))

    torch.manual_seed(10)
    check_converts(Clamp(), torch.rand(16, 4))


# --------------------------------------------------------------------------- messages
def test_bare_linear_is_a_one_layer_network() -> None:
    torch.manual_seed(11)
    check_converts(nn.Linear(5, 3), torch.rand(8, 5))


@pytest.mark.parametrize(
    "act",
    [nn.Threshold(0.1, 0.0), nn.GELU(), nn.LogSigmoid(), nn.Softmin(dim=1), nn.Hardshrink()],
    ids=lambda m: type(m).__name__,
)
def test_every_non_relu_activation_gets_one_message(act) -> None:
    model = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError, match=r"^node '_1' .*: not a ReLU network"):
        convert(model, torch.rand(4, 4), progress=False)


def test_functional_threshold_gets_the_activation_message() -> None:
    class Thr(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.threshold(self.a(x), 0.1, 0.0))

    with pytest.raises(UnsupportedModelError, match=r"^node '_threshold' .*not a ReLU network"):
        convert(Thr(), torch.rand(4, 4), progress=False)


def test_reshape_message_prints_the_shapes() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return F.relu(self.c(x)).reshape(x.size(0), 2, 36)

    with pytest.raises(UnsupportedModelError, match=r"reshapes \(N, 2, 6, 6\) to \(N, 2, 36\)"):
        convert(Bad(), torch.rand(4, 1, 8, 8), progress=False)


# --------------------------------------------------------------------------- random models
def _random_layer(rng, shape):
    """A random layer for a model of input ``shape`` ((C, H, W) or (F,)), and its output shape."""
    size = int(np.prod(shape))
    kinds = ["relu", "relu", "bn", "dropout", "act", "softmax", "flatten", "linear"]
    if len(shape) == 3:
        kinds += ["conv", "conv", "conv_same", "maxpool", "avgpool", "dropout2d", "adaptive"]
    kind = rng.choice(kinds)
    c = shape[0]
    simple = {
        "relu": nn.ReLU(),
        "bn": nn.BatchNorm2d(c) if len(shape) == 3 else nn.BatchNorm1d(c),
        "dropout": nn.Dropout(0.3),
        "dropout2d": nn.Dropout2d(0.3),
        "act": rng.choice([nn.Sigmoid(), nn.Tanh(), nn.LeakyReLU(), nn.Threshold(0.1, 0.0)]),
        "softmax": nn.Softmax(dim=1),
        "adaptive": nn.AdaptiveAvgPool2d(1),
    }
    if kind in simple:
        return simple[kind], ((c, 1, 1) if kind == "adaptive" else shape)
    if kind == "flatten":
        return nn.Flatten(), (size,)
    if kind == "linear":
        o = rng.randint(1, 6)
        lin = nn.Linear(size, o)
        return (lin if len(shape) == 1 else nn.Sequential(nn.Flatten(), lin)), (o,)
    h = shape[1]
    o = rng.randint(1, 4)
    if kind == "conv_same":
        return nn.Conv2d(c, o, rng.choice([1, 3]), padding="same"), (o, h, h)
    if kind == "conv":
        k, s = rng.choice([1, 3]), rng.choice([1, 2])
        p = rng.choice([0, k // 2])
        if h + 2 * p < k:
            return nn.Identity(), shape
        out = (h + 2 * p - k) // s + 1
        return nn.Conv2d(c, o, k, stride=s, padding=p), (o, out, out)
    if h < 2:
        return nn.Identity(), shape
    if kind == "maxpool":
        ceil = rng.random() < 0.3
        out = -(-(h - 2) // 2) + 1 if ceil else (h - 2) // 2 + 1
        return nn.MaxPool2d(2, ceil_mode=ceil), (c, out, out)
    return nn.AvgPool2d(2), (c, (h - 2) // 2 + 1, (h - 2) // 2 + 1)


@pytest.mark.parametrize("block", range(4))
def test_random_models_convert_right_or_are_refused_by_node(block: int) -> None:
    """Random stacks of the layers people use (and some they should not): each converts with
    golden ann = PyTorch, or is refused with an UnsupportedModelError that names the node or
    the model output; nothing else (no crash, no wrong result)."""
    import random

    converted = 0
    for seed in range(block * 25, block * 25 + 25):
        rng = random.Random(seed)
        torch.manual_seed(seed)
        shape = rng.choice([(2, 6, 6), (5,)])
        layers, s = [], shape
        for _ in range(rng.randint(1, 6)):
            m, s = _random_layer(rng, s)
            layers.append(m)
        model = _randomise_bn(nn.Sequential(*layers), seed)
        x = torch.randn(16, *shape) if rng.random() < 0.5 else torch.rand(16, *shape)
        try:
            snn = convert(model, x, ConversionConfig(weight_bits=None), progress=False)
        except UnsupportedModelError as exc:
            assert str(exc).startswith(("node '", "the model")), (seed, str(exc))
            continue
        with torch.no_grad():
            want = model(x).reshape(16, -1).double()
        if any("softmax" in n for n in snn.meta.get("notes", [])):
            with torch.no_grad():
                want = model[:-1](x).reshape(16, -1).double()
        got = golden.run(snn, x, "ann", device="cpu").logits.double()
        err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-6)).item()
        assert err < 1e-4, (seed, model, err)
        converted += 1
    assert converted >= 3  # the generator is not all refusals


def test_a_gcn_goes_to_the_graph_front_end() -> None:
    """A graph aggregation (Â · H with Â a buffer) makes the model a graph network: it takes
    (nodes, F) without a batch axis and converts (tests/test_gcn_convert.py has the rest)."""

    class Gcn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("adj", torch.eye(5).to_sparse())
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return torch.sparse.mm(self.adj, self.lin(x))

    x, model = torch.rand(5, 3), Gcn()
    snn = convert(model, x, ConversionConfig(weight_bits=None), progress=False)
    assert snn.meta["graph"] == {"nodes": 5, "features": 3, "one_hot": False}
    got = golden.run(snn, x, "ann", device="cpu").logits
    torch.testing.assert_close(got, model(x).detach(), rtol=1e-5, atol=1e-6)
