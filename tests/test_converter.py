"""Tests of converter.convert: the front end reproduces the ANN, never mutates it, and fails
with exact messages on unsupported models, bad configurations and bad calibration data."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import golden
from converter import CalibrationError, ConversionConfig, UnsupportedModelError, convert

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _randomise_bn(bn: nn.modules.batchnorm._BatchNorm, gen: torch.Generator) -> None:
    """Random running stats; gamma with negative and zero entries (channel 0 is negative,
    channel 1 is zero when there are at least three channels)."""
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)
        bn.weight[0] = -bn.weight[0]
        if c >= 3:
            bn.weight[1] = 0.0


def _prepare(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            _randomise_bn(m, gen)
    return model.eval()


def check_ann_matches(
    model: nn.Module,
    shape: tuple[int, ...],
    *,
    signed: bool = False,
    config: ConversionConfig | None = None,
    seed: int = 0,
) -> None:
    """Convert ``model`` and check that golden ``ann`` mode reproduces its logits."""
    torch.manual_seed(seed)
    model = _prepare(model, seed)
    x = torch.randn(16, *shape) if signed else torch.rand(16, *shape)
    snn = convert(model, x, config or ConversionConfig(), progress=False)
    with torch.no_grad():
        want = model(x)
    got = golden.run(snn, x, "ann", device="cpu").logits
    torch.testing.assert_close(got, want.reshape(got.shape), atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# networks covering every supported construct
# --------------------------------------------------------------------------------------------


class ConvStack(nn.Module):
    """Conv2d with stride 1/2, padding 0/1/2, with and without bias, BN2d, F.relu."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, stride=1, padding=1)
        self.b1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 5, 3, stride=2, padding=0, bias=False)
        self.b2 = nn.BatchNorm2d(5)
        self.c3 = nn.Conv2d(5, 3, 3, stride=1, padding=2)
        self.fc = nn.Linear(3 * 7 * 7, 4)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = F.relu(self.c3(x), inplace=True)
        return self.fc(x.view(x.size(0), -1))


class PoolNet(nn.Module):
    """MaxPool2d / F.max_pool2d before and after ReLU, avg pooling, torch.flatten, reshape."""

    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1)
        self.avg = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        if self.variant == "pool_before_relu":
            x = F.relu(F.max_pool2d(self.c1(x), 2))
            x = nn.functional.relu(self.pool(self.c2(x)))
            x = self.gap(x)
            return self.fc(torch.flatten(x, 1))
        if self.variant == "pool_after_relu":
            x = F.max_pool2d(F.relu(self.c1(x)), kernel_size=2, stride=2)
            x = self.pool(F.relu(self.c2(x)))
            x = F.avg_pool2d(x, x.size()[3])
            return self.fc(x.reshape(x.size(0), -1))
        x = self.avg(F.relu(self.c1(x)))  # avg pooling of 8x8 -> 4x4
        x = F.relu(self.c2(x))
        x = F.avg_pool2d(x, 2)
        x = self.gap(x)
        return self.fc(x.view(-1, 6))


class MlpBn(nn.Module):
    """nn.Flatten, Linear, BatchNorm1d, Dropout, nested Sequential and ModuleList."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.body = nn.Sequential(
            nn.Linear(12, 10),
            nn.BatchNorm1d(10),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Sequential(nn.Linear(10, 8), nn.ReLU()),
        )
        self.heads = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 3)])

    def forward(self, x):
        x = self.body(self.flat(x))
        x = F.dropout(F.relu(self.heads[0](x)), 0.3, training=self.training)
        return self.heads[1](x)


class Block(nn.Module):
    """A ResNet basic block with a configurable shortcut and add spelling."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str, add: str):
        super().__init__()
        self.add = add
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut_kind = shortcut
        self.pad = (cout - cin) // 2
        if shortcut == "conv":
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut_kind == "conv":
            sc = self.shortcut(x)
        elif self.shortcut_kind == "optionA":
            sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)
        else:
            sc = x
        if self.add == "plus":
            out = out + sc
        elif self.add == "iadd":
            out += sc
        else:
            out = torch.add(out, sc)
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, shortcut: str, add: str):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        stride, cout = (1, 4) if shortcut == "identity" else (2, 8)
        self.layer1 = nn.Sequential(Block(4, cout, stride, shortcut, add))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cout, 5)

    def forward(self, x):
        x = self.gap(self.layer1(self.stem(x)))
        return self.fc(x.flatten(1))


class SignedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.c(x)), 1))


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (ConvStack, (3, 12, 12)),
        (lambda: PoolNet("pool_before_relu"), (2, 8, 8)),
        (lambda: PoolNet("pool_after_relu"), (2, 8, 8)),
        (lambda: PoolNet("avg"), (2, 8, 8)),
        (MlpBn, (3, 4)),
        (lambda: TinyResNet("identity", "plus"), (3, 8, 8)),
        (lambda: TinyResNet("identity", "iadd"), (3, 8, 8)),
        (lambda: TinyResNet("identity", "torch_add"), (3, 8, 8)),
        (lambda: TinyResNet("conv", "plus"), (3, 8, 8)),
        (lambda: TinyResNet("optionA", "iadd"), (3, 8, 8)),
        (lambda: TinyResNet("optionA", "torch_add"), (3, 8, 8)),
    ],
)
def test_ann_mode_reproduces_model(make, shape) -> None:
    check_ann_matches(make(), shape)


@pytest.mark.parametrize("make", [SignedConv, lambda: TinyResNet("optionA", "plus")])
def test_ann_mode_signed_inputs(make) -> None:
    shape = (3, 6, 6) if make is SignedConv else (3, 8, 8)
    check_ann_matches(make(), shape, signed=True)


class NormStem(nn.Module):
    """A first layer with zero padding 2 (borders see padded zeros of the normalised input)."""

    def __init__(self, first: str):
        super().__init__()
        self.first = first
        self.c = nn.Conv2d(3, 4, 3, stride=2, padding=2)
        self.bn = nn.BatchNorm2d(4)
        self.fc0 = nn.Linear(3 * 5 * 5, 6)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.fc_lin = nn.Linear(6, 3)

    def forward(self, x):
        if self.first == "linear":
            return self.fc_lin(F.relu(self.fc0(x.flatten(1))))
        return self.fc(F.relu(self.bn(self.c(x))).flatten(1))


@pytest.mark.parametrize("first", ["conv", "linear"])
def test_ann_mode_folds_input_normalisation(first: str) -> None:
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    torch.manual_seed(1)
    model = _prepare(NormStem(first), 1)
    raw = torch.rand(16, 3, 5, 5)
    x = (raw - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    snn = convert(model, x, ConversionConfig(input_mean=mean, input_std=std), progress=False)
    with torch.no_grad():
        want = model(x)
    got = golden.run(snn, x, "ann", device="cpu").logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_q_auto_resolves_to_paper_value() -> None:
    assert ConversionConfig(T=16, Q="auto").q == pytest.approx(1.31, abs=0.015)


# --------------------------------------------------------------------------------------------
# the user's model is never mutated
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [False, True])
def test_convert_does_not_mutate_model(training: bool) -> None:
    model = _prepare(TinyResNet("conv", "iadd"))
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    convert(model, torch.rand(8, 3, 8, 8), progress=False)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert {name: m.training for name, m in model.named_modules()} == modes


# --------------------------------------------------------------------------------------------
# unsupported models: exact messages
# --------------------------------------------------------------------------------------------


class Wrap(nn.Module):
    """A conv → act → head net whose middle is a given callable."""

    def __init__(self, mid, conv: nn.Module | None = None):
        super().__init__()
        self.conv = conv or nn.Conv2d(2, 4, 3, padding=1)
        self.mid = mid
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.mid(self.conv(x)), 1))


class Cat(nn.Module):
    def forward(self, x):
        return torch.cat([F.relu(x), F.relu(x)], 1)[:, :4]


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        return self.b(self.a(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        if x.sum() > 0:
            x = F.relu(x)
        return self.fc(x)


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(F.relu(out[:, -1]))


def check_unsupported(model: nn.Module, shape: tuple[int, ...], pattern: str) -> None:
    with pytest.raises(UnsupportedModelError, match=pattern):
        convert(model.eval(), torch.rand(4, *shape), progress=False)


NOT_RELU = (
    r"\): not a ReLU network: one-spike neurons model ReLU only, "
    r"other activations cannot be converted"
)


@pytest.mark.parametrize(
    ("make", "shape", "pattern"),
    [
        (
            lambda: Wrap(nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1, groups=2)),
            (2, 4, 4),
            r"^node 'conv' \(module conv \(Conv2d\)\): only Conv2d with groups=1, dilation=1 "
            r"and zero padding is supported \(got groups=2",
        ),
        (
            lambda: Wrap(Cat()),
            (2, 4, 4),
            r"^node 'cat' \(function cat\): unsupported op; supported: .*Conv2d.*F\.relu.*Linear",
        ),
        (
            lambda: Wrap(nn.GELU()),
            (2, 4, 4),
            r"^node 'mid' \(module mid \(GELU\)" + NOT_RELU,
        ),
        (
            lambda: Wrap(nn.Sigmoid()),
            (2, 4, 4),
            r"^node 'mid' \(module mid \(Sigmoid\)" + NOT_RELU,
        ),
        (
            lambda: Wrap(nn.LeakyReLU(0.1)),
            (2, 4, 4),
            r"^node 'mid' \(module mid \(LeakyReLU\)" + NOT_RELU,
        ),
        (
            lambda: Wrap(F.leaky_relu),
            (2, 4, 4),
            r"^node 'leaky_relu' \(function leaky_relu" + NOT_RELU,
        ),
        (
            TwoLinear,
            (8,),
            r"^node 'b' \(module b \(Linear\)\): its input is a pre-activation: two linear "
            r"layers without a ReLU between them cannot be converted$",
        ),
        (
            DataDependent,
            (8,),
            r"^torch\.fx could not trace DataDependent: .*Data-dependent control flow is not "
            r"supported\.$",
        ),
    ],
)
def test_unsupported_model_message(make, shape, pattern: str) -> None:
    check_unsupported(make(), shape, pattern)


def test_unsupported_op_message_lists_supported_ops() -> None:
    from converter import supported_ops

    with pytest.raises(UnsupportedModelError) as info:
        convert(Wrap(Cat()).eval(), torch.rand(4, 2, 4, 4), progress=False)
    listed = str(info.value).split("supported: ", 1)[1].split(", ")
    assert listed == supported_ops()
    assert {"Conv2d", "Linear", "ReLU", "BatchNorm2d", "MaxPool2d", "F.relu"} <= set(listed)


def test_unsupported_lstm_names_the_lstm() -> None:
    check_unsupported(Lstm(), (5, 8), r"^node 'lstm' \(module lstm \(LSTM\)\): unsupported op")


# --------------------------------------------------------------------------------------------
# ConversionConfig validation: exact messages
# --------------------------------------------------------------------------------------------


def check_bad_config(kwargs: dict, exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        ConversionConfig(**kwargs)


WEIGHT_BITS = "(2, 3, 4, 5, 6, 7, 8, 16)"


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"T": 0}, ValueError, "T must be in [1, 64], got 0"),
        ({"T": 65}, ValueError, "T must be in [1, 64], got 65"),
        ({"T": 16.0}, TypeError, "T must be an int, got 16.0"),
        ({"T": True}, TypeError, "T must be an int, got True"),
        ({"Q": 2.5}, ValueError, "Q must be in (1, 2] or 'auto', got 2.5"),
        ({"Q": 1.0}, ValueError, "Q must be in (1, 2] or 'auto', got 1.0"),
        ({"Q": "best"}, ValueError, "Q must be in (1, 2] or 'auto', got 'best'"),
        ({"T_w": -1}, ValueError, "T_w must be in [0, 256], got -1"),
        ({"T_in": 0}, ValueError, "T_in must be in [1, 24], got 0"),
        (
            {"weight_bits": 9},
            ValueError,
            f"weight_bits must be one of {WEIGHT_BITS} or None, got 9",
        ),
        (
            {"weight_bits": True},
            ValueError,
            f"weight_bits must be one of {WEIGHT_BITS} or None, got True",
        ),
        ({"percentile": 30}, ValueError, "percentile must be in [50, 100], got 30"),
        ({"percentile": 100.5}, ValueError, "percentile must be in [50, 100], got 100.5"),
        ({"acc_bits": 4}, ValueError, "acc_bits must be in [8, 48], got 4"),
        ({"threshold_shift": 1}, TypeError, "threshold_shift must be a bool, got 1"),
        ({"per_channel": "yes"}, TypeError, "per_channel must be a bool, got 'yes'"),
        ({"input_scale": 0.0}, ValueError, "input_scale must be a positive number, got 0.0"),
        (
            {"input_mean": (0.5,)},
            ValueError,
            "input_mean and input_std must be given together",
        ),
        ({"input_std": (0.5,)}, ValueError, "input_mean and input_std must be given together"),
        (
            {"input_mean": (0.5, 0.5), "input_std": (0.2,)},
            ValueError,
            "input_mean and input_std need one value per channel, got 2 and 1",
        ),
        (
            {"input_mean": (0.5, 0.5), "input_std": (0.2, 0.0)},
            ValueError,
            "input_std values must be positive, got (0.2, 0.0)",
        ),
        (
            {"input_mean": (0.5,), "input_std": (-0.2,)},
            ValueError,
            "input_std values must be positive, got (-0.2,)",
        ),
    ],
)
def test_bad_config_message(kwargs: dict, exc: type[Exception], message: str) -> None:
    check_bad_config(kwargs, exc, message)


def test_config_is_frozen() -> None:
    cfg = ConversionConfig()
    with pytest.raises(AttributeError):
        cfg.T = 8  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# calibration data
# --------------------------------------------------------------------------------------------


def check_bad_calibration(calibration, message: str) -> None:
    with pytest.raises(CalibrationError, match="^" + re.escape(message) + "$"):
        convert(ReluOutFree().eval(), calibration, progress=False)


class ReluOutFree(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


def _nan_batch() -> torch.Tensor:
    x = torch.rand(4, 8)
    x[1, 2] = float("nan")
    return x


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ([], "calibration data is empty: give at least one batch"),
        (torch.empty(0, 8), "calibration batch of shape (0, 8) is empty"),
        (_nan_batch(), "calibration data contains NaN or infinity"),
        (torch.full((2, 8), float("inf")), "calibration data contains NaN or infinity"),
        (
            [torch.rand(2, 8), torch.rand(2, 9)],
            "calibration batches have different shapes: [(8,), (9,)]",
        ),
        ([["a"]], "calibration batches must be tensors, got str"),
    ],
)
def test_bad_calibration_message(calibration, message: str) -> None:
    check_bad_calibration(calibration, message)


def test_calibration_accepts_labelled_batches() -> None:
    model = ReluOutFree().eval()
    x = torch.rand(6, 8)
    cfg = ConversionConfig(percentile=100.0)  # the maximum does not depend on the batching
    a = convert(model, x, cfg, progress=False)
    b = convert(model, [(x[:3], torch.zeros(3)), (x[3:], torch.ones(3))], cfg, progress=False)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert (la.lam == lb.lam).all()


class InputResidual(nn.Module):
    """relu(conv2(relu(conv1(x))) + x): a residual add of input spikes and hidden spikes."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.c1(x))) + x).flatten(1))


def test_residual_of_input_and_hidden_spikes_is_unsupported_model() -> None:
    check_unsupported(InputResidual(), (2, 4, 4), r"^node 'add' \(function add\): ")


def test_supported_ops_names_functional_avg_pool() -> None:
    from converter import supported_ops

    assert "F.avg_pool2d" in supported_ops()
