"""Tests of golden: input and hidden codings, BN folding, exact mode against Eq. 4 on the
original nn.Module, pipelined and integer modes, operation counts and determinism. The
conversions here use the percentile calibration, whose weights are the ANN's folded ones
(the identities below are about that folding; the refit is tested in test_calibration.py)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import golden
from converter import ConversionConfig, SnnModel, convert
from converter.model import with_layers
from tests.conftest import skip_or_fail

CPU = "cpu"


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# small networks (ReLUs and average pools are modules, so forward hooks can find them)
# --------------------------------------------------------------------------------------------


class Block(nn.Module):
    """ReLU(BN(conv(ReLU(BN(conv(x))))) + x): one spiking layer with two synapse groups."""

    def __init__(self, c: int, bn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


class RandomNet(nn.Module):
    """conv(stride, padding) [BN] ReLU → [max/avg pool] → [residual block] → MLP head."""

    def __init__(
        self,
        c: int,
        stride: int,
        pad: int,
        bn: bool,
        pool: str,
        residual: bool,
        kernel: int = 3,
        width: int = 12,
    ):
        super().__init__()
        self.conv = nn.Conv2d(2, c, kernel, stride=stride, padding=pad)
        self.bn = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2), "none": nn.Identity()}[pool]
        self.block = Block(c, bn) if residual else nn.Identity()
        self.flat = nn.Flatten()
        self.fc1 = nn.LazyLinear(width)
        self.relu_fc = nn.ReLU()
        self.fc2 = nn.Linear(width, 4)

    def forward(self, x):
        x = self.block(self.pool(self.relu(self.bn(self.conv(x)))))
        return self.fc2(self.relu_fc(self.fc1(self.flat(x))))


def make_net(seed: int, shape=(2, 8, 8), **kw) -> nn.Module:
    torch.manual_seed(seed)
    net = RandomNet(**kw)
    net.eval()(torch.rand(2, *shape))  # materialise the lazy layer
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.weight[0] = -m.weight[0]
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


DEFAULT_NET = dict(c=4, stride=1, pad=1, bn=True, pool="max", residual=True)


def default_snn(seed: int = 0, **cfg) -> tuple[nn.Module, SnnModel, torch.Tensor]:
    net = make_net(seed, **DEFAULT_NET)
    torch.manual_seed(seed + 100)
    calib = torch.rand(32, 2, 8, 8)
    snn = convert(net, calib, ConversionConfig(calibration="percentile", **cfg), progress=False)
    return net, snn, torch.rand(48, 2, 8, 8)


def hidden(snn: SnnModel) -> list[int]:
    return [i for i, lay in enumerate(snn.layers) if lay.kind in ("neuron", "maxpool")]


# --------------------------------------------------------------------------------------------
# input coding (DESIGN 2.1)
# --------------------------------------------------------------------------------------------


def test_input_coding_of_8bit_image_is_exact() -> None:
    """k/255 with the default input scale: T_in bits, MSB at phase 0, decodes to k/255."""
    torch.manual_seed(0)
    k = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    x = torch.cat([k, k.flip(-1)]).repeat(1, 2, 1, 1) / 255  # (2, 2, 16, 16), includes 0 and 1
    net = nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 14 * 14, 3))
    snn = convert(net.eval(), x, progress=False)
    trains = golden.run(snn, x, "exact", device=CPU).spikes[0]
    t_in = snn.layers[0].T
    assert t_in == 8
    assert trains.shape == (2, t_in, 2, 16, 16) and trains.dtype == torch.int8
    lam = torch.as_tensor(snn.layers[0].lam, dtype=torch.float64).reshape(1, 1, -1, 1, 1)
    weights = torch.tensor([2.0**-t for t in range(t_in)], dtype=torch.float64)
    decoded = (trains.double() * lam * weights.reshape(1, -1, 1, 1, 1)).sum(1)
    torch.testing.assert_close(decoded, x.double(), rtol=1e-6, atol=0)
    code = torch.round(x * 255).to(torch.int64)
    for t in range(t_in):  # phase t carries bit 7 - t of the 8-bit value (MSB first)
        assert torch.equal(trains[:, t].to(torch.int64), (code >> (t_in - 1 - t)) & 1)


# --------------------------------------------------------------------------------------------
# hidden coding (DESIGN 2.2): a neuron with zero weights, threshold 1 and initial potential v
# --------------------------------------------------------------------------------------------


def coded_phases(values: list[float], q: float, t: int, shift: bool, mode: str) -> list[int]:
    """Phases a hidden layer emits for normalised activations ``values`` (exactly set)."""
    c = len(values)
    net = nn.Sequential(nn.Linear(1, c), nn.ReLU(), nn.Linear(c, 2)).eval()
    cfg = ConversionConfig(
        calibration="percentile", T=t, Q=q, threshold_shift=shift, weight_bits=None
    )
    snn = convert(net, torch.rand(8, 1), cfg, progress=False)
    lay = snn.layers[1]
    syn = dataclasses.replace(lay.synapses[0], weight=np.zeros_like(lay.synapses[0].weight))
    lay = dataclasses.replace(
        lay,
        synapses=(syn,),
        bias=np.asarray(values, dtype=np.float32),
        threshold=np.ones(c, dtype=np.float32),
    )
    snn = with_layers(snn, [snn.layers[0], lay, *snn.layers[2:]])
    return golden.run(snn, torch.rand(1, 1), mode, device=CPU).spikes[1][0].tolist()


def _below(v: float) -> float:
    return float(np.nextafter(np.float32(v), np.float32(0)))


@pytest.mark.parametrize("mode", ["exact", "pipelined"])
@pytest.mark.parametrize(
    ("shift", "c"),
    [(True, 0.75), (False, 1.0)],  # round mode c = (1 + 1/Q)/2 = 0.75 for Q = 2; floor c = 1
)
def test_hidden_coding_at_thresholds(shift: bool, c: float, mode: str) -> None:
    t = 8
    at = [c * 2.0**-p for p in range(t)]
    below = [_below(v) for v in at]
    phases = coded_phases(at + below + [1.0, 7.5, 0.0, -3.0], 2.0, t, shift, mode)
    assert phases[:t] == list(range(t))  # exactly on c · Q^-t: fires at t
    assert phases[t : 2 * t] == [*range(1, t), -1]  # just below: t + 1, or underflow
    assert phases[2 * t :] == [0, 0, -1, -1]  # saturation; zero and negative: no spike


@pytest.mark.parametrize(("q", "t"), [(1.3, 16), (1.2, 24), (1.71, 5)])
def test_hidden_coding_non_power_of_two_base(q: float, t: int) -> None:
    c = (1 + 1 / q) / 2
    at = [c * q**-p for p in range(t)]
    up = [v * (1 + 1e-5) for v in at]
    down = [v * (1 - 1e-5) for v in at]
    phases = coded_phases(up + down, q, t, True, "exact")
    assert phases[:t] == list(range(t))
    assert phases[t:] == [*range(1, t), -1]


@pytest.mark.parametrize(("q", "shift", "c"), [(2.0, True, 0.75), (1.3, True, 0.5 + 0.5 / 1.3)])
def test_shift_constant(q: float, shift: bool, c: float) -> None:
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
    for s, want in ((shift, c), (False, 1.0)):
        snn = convert(
            net,
            torch.rand(4, 1),
            ConversionConfig(calibration="percentile", Q=q, threshold_shift=s),
            progress=False,
        )
        assert snn.layers[1].shift == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------------------------
# BN folding (DESIGN 2.5)
# --------------------------------------------------------------------------------------------


def test_bn_folding_identity() -> None:
    """θ = σλ/|γ|, B = s(b − μ) + βσ/|γ|, weights × s with s = sign(γ), per channel."""
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.3]))
        bn.weight.copy_(torch.tensor([1.5, -0.7, 0.4]))
        bn.bias.copy_(torch.tensor([0.2, 0.1, -0.05]))
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 2)).eval()
    snn = convert(
        net,
        torch.rand(16, 2, 5, 5),
        ConversionConfig(calibration="percentile", weight_bits=None),
        progress=False,
    )
    lay, lam_in = snn.layers[1], snn.layers[0].lam
    g = bn.weight.detach().double().numpy()
    sigma = np.sqrt(bn.running_var.double().numpy() + bn.eps)
    mu, beta = bn.running_mean.double().numpy(), bn.bias.detach().double().numpy()
    b, w = conv.bias.detach().double().numpy(), conv.weight.detach().double().numpy()
    s = np.sign(g)
    np.testing.assert_allclose(lay.threshold, sigma * lay.lam / np.abs(g), rtol=1e-6)
    bias = s * (b - mu) + beta * sigma / np.abs(g)
    np.testing.assert_allclose(lay.bias, np.broadcast_to(bias[:, None, None], (3, 5, 5)), 1e-6)
    eff = s[:, None, None, None] * w * lam_in.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(lay.synapses[0].weight, eff, rtol=1e-6)
    assert (np.sign(lay.synapses[0].weight[1]) == -np.sign(w[1])).all()  # γ < 0 negates


# --------------------------------------------------------------------------------------------
# exact mode = Eq. 4 applied to the original nn.Module
# --------------------------------------------------------------------------------------------


def eq4_reference(net: nn.Module, snn: SnnModel, x: torch.Tensor) -> torch.Tensor:
    """The ANN with every spiking layer's output replaced by its single-spike code and the
    input by its T_in-bit code, computed independently of golden (float64)."""
    net = copy.deepcopy(net).double()
    layers = {lay.name: lay for lay in snn.layers if lay.kind == "neuron"}

    def code(lay):
        def hook(module, args, a):
            shape = (1, -1) + (1,) * (a.dim() - 2)
            lam = torch.as_tensor(lay.lam, dtype=torch.float64).reshape(shape)
            th = torch.tensor([lay.shift * lay.Q**-t for t in range(lay.T)], dtype=torch.float64)
            r = (a / lam).unsqueeze(-1)
            fired = r >= th  # (…, T): phases whose threshold the value reaches
            t_star = torch.where(fired.any(-1), fired.to(torch.int8).argmax(-1), -1)
            val = lam * lay.Q ** (-t_star.double())
            return torch.where(t_star >= 0, val, torch.zeros_like(val))

        return hook

    handles = [
        m.register_forward_hook(code(layers[name.replace(".", "_")]))
        for name, m in net.named_modules()
        if name.replace(".", "_") in layers
    ]
    assert handles, "no spiking layer found by name"
    inp = snn.layers[0]
    lam_in = 2 * torch.as_tensor(inp.lam, dtype=torch.float64).reshape(1, -1, 1, 1)
    top = 2**inp.T - 1
    coded = torch.round(x.double() / lam_in * 2**inp.T).clamp(max=top) * lam_in / 2**inp.T
    with torch.no_grad():
        out = net(coded)
    for h in handles:
        h.remove()
    return out


# derandomized: a random run found the float32 tie of test_exact_threshold_tie_float64 below
# (fixed since: exact mode computes in float64); the examples are the same on every run
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    seed=st.integers(0, 2**16),
    t=st.integers(4, 24),
    q=st.floats(1.05, 2.0),
    shift=st.booleans(),
    c=st.integers(2, 5),
    stride=st.sampled_from([1, 2]),
    pad=st.integers(0, 2),
    bn=st.booleans(),
    pool=st.sampled_from(["max", "avg", "none"]),
    residual=st.booleans(),
)
def test_exact_mode_is_eq4_on_the_ann(seed, t, q, shift, c, stride, pad, bn, pool, residual):
    net = make_net(seed, c=c, stride=stride, pad=pad, bn=bn, pool=pool, residual=residual)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    cfg = ConversionConfig(
        calibration="percentile", T=t, Q=q, threshold_shift=shift, weight_bits=None
    )
    snn = convert(net, calib, cfg, progress=False)
    got = golden.run(snn, x, "exact", device=CPU)
    want = eq4_reference(net, snn, x)
    assert torch.equal(got.predictions, want.argmax(1))
    torch.testing.assert_close(got.logits.double(), want, rtol=1e-4, atol=1e-4)


def test_exact_threshold_tie_float64():
    """An average pooling of equal spikes under floor coding (threshold_shift=False) lands a
    potential exactly on a coding threshold; float32 rounding once put that neuron a phase
    late (found by hypothesis); exact mode recomputes such neurons in float64 and decides
    them as Eq. 4 does."""
    seed = 813
    net = make_net(seed, c=3, stride=2, pad=1, bn=False, pool="avg", residual=True)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    cfg = ConversionConfig(
        calibration="percentile", T=7, Q=1.5750484037945465, threshold_shift=False, weight_bits=None
    )
    snn = convert(net, calib, cfg, progress=False)
    got = golden.run(snn, x, "exact", device=CPU)
    torch.testing.assert_close(got.logits.double(), eq4_reference(net, snn, x), rtol=1e-4,
                               atol=1e-4)  # fmt: skip


def _float64_exact(monkeypatch, snn, x) -> golden.GoldenResult:
    """golden exact computed in float64 throughout (no float32 pass, no recomputation)."""
    from golden import engine

    with monkeypatch.context() as m:
        m.setattr(engine, "_engine_dtype", lambda snn, mode, cpu: torch.float64)
        m.setattr(engine, "EXACT_ROUNDING", 0.0)
        return golden.run(snn, x, "exact", device=CPU)


#: Random nets of ``make_net`` drawn by hypothesis (the float64 tests below).
NET_DRAWS = dict(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 6),
    stride=st.sampled_from([1, 2]),
    pool=st.sampled_from(["max", "avg", "none"]),
    residual=st.booleans(),
)
SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=20, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(**NET_DRAWS, shift=st.booleans(), q=st.floats(1.05, 2.0))
def test_exact_decides_as_float64(monkeypatch, seed, c, stride, pool, residual, shift, q):
    """Exact mode's float32 pass with float64 recomputation near the thresholds gives the
    spikes of a pure float64 run in every layer (including threshold ties of floor coding)."""
    net = make_net(seed, c=c, stride=stride, pad=1, bn=False, pool=pool, residual=residual)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    cfg = ConversionConfig(
        calibration="percentile", T=7, Q=q, threshold_shift=shift, weight_bits=None
    )
    snn = convert(net, calib, cfg, progress=False)
    got, want = golden.run(snn, x, "exact", device=CPU), _float64_exact(monkeypatch, snn, x)
    for i, (a, b) in enumerate(zip(got.spikes, want.spikes, strict=True)):
        assert (a is None and b is None) or torch.equal(a, b), i


@settings(max_examples=15, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(**NET_DRAWS, kernels=st.booleans())
def test_exact_rounding_bound_covers_the_float64_magnitude(
    monkeypatch, seed, c, stride, pool, residual, kernels
):
    """Exact mode's float32 pass is as right as its bound of Σ|w|·|x| + |B|: the
    Cauchy–Schwarz parts (‖w_o‖₂ · ‖x_patch‖₂, the patch's Σ_c x² written by the source's
    coding kernel on the CPU) plus the float32 |w| on |x| of the other groups are the
    float64 Σ|w|·|x| + |B| of every neuron of every spiking layer or more, up to their own
    float32 rounding."""
    from converter.ops import synapse_forward
    from golden import engine

    net = make_net(seed, c=c, stride=stride, pad=1, bn=True, pool=pool, residual=residual)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    cfg = ConversionConfig(calibration="percentile", T=7, Q=1.3, weight_bits=None)
    snn = convert(net, calib, cfg, progress=False)
    checked = []
    parts_of = engine._Engine._magnitude_parts

    def check(self, lay, decoded):
        parts = parts_of(self, lay, decoded)
        got = self._sum_parts(lay, parts).double()
        want = torch.as_tensor(lay.bias, dtype=torch.float64).abs()
        for s, d in zip(lay.synapses, decoded, strict=True):
            w = torch.as_tensor(s.weight, dtype=torch.float64).abs()
            want = want + synapse_forward(d.double().abs(), s, w, lay)
        # the bound's own float32 rounding (relative ~n·2^-24) is what EXACT_ROUNDING's
        # factor 2 of safety covers: it has to hold to far better than a factor 2
        bad = got < want * (1 - 2.0**-16)
        assert not bad.any(), (lay.name, got[bad][:5].tolist(), want[bad][:5].tolist())
        checked.append(lay.name)
        return parts

    monkeypatch.setattr(engine, "USE_KERNELS", kernels)
    monkeypatch.setattr(engine, "FUSED_EXACT", False)  # (its own bound: test_exact_conv_*)
    monkeypatch.setattr(engine._Engine, "_magnitude_parts", check)
    golden.run(snn, x, "exact", device=CPU)
    assert len(checked) == sum(lay.kind == "neuron" for lay in snn.layers)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 6),
    pool=st.sampled_from(["max", "avg", "none"]),
    residual=st.booleans(),
    shift=st.booleans(),
    q=st.floats(1.05, 2.0),
    t_w=st.integers(0, 7),
)
def test_pipelined_decides_as_float64(monkeypatch, seed, c, pool, residual, shift, q, t_w):
    """Pipelined mode on the CPU (float32 passes, float64 recomputation of the neurons a
    compare's rounding could move) gives the spikes and logits of its float64 run (the
    PyTorch expressions other devices use), including threshold ties of floor coding and
    decisions on partial potentials (T_w < T)."""
    from converter.requantize import with_wait
    from golden import engine

    net = make_net(seed, c=c, stride=1, pad=1, bn=False, pool=pool, residual=residual)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    cfg = ConversionConfig(
        calibration="percentile", T=7, Q=q, threshold_shift=shift, weight_bits=None
    )
    snn = with_wait(convert(net, calib, cfg, progress=False), t_w)
    got = golden.run(snn, x, "pipelined", device=CPU)
    with monkeypatch.context() as m:
        m.setattr(engine, "USE_KERNELS", False)
        want = golden.run(snn, x, "pipelined", device=CPU)
    check_same(got, want)


def test_pipelined_recomputes_the_neurons_its_float32_pass_cannot_decide(monkeypatch):
    """With a rounding unit far above float32's every compare is 'near': every neuron of
    every spiking layer goes through the float64 recomputation, and the spikes stay those of
    the float64 run."""
    from converter.requantize import with_wait
    from golden import engine

    _, snn, x = default_snn(T=8, Q=1.4)
    snn = with_wait(snn, 2)
    want = golden.run(snn, x, "pipelined", device=CPU)
    seen = []
    orig = engine._Engine._potential64_at

    def spy(self, lay, spikes, flat, upto=None):
        seen.append(int(flat.numel()))
        return orig(self, lay, spikes, flat, upto)

    monkeypatch.setattr(engine, "EXACT_ROUNDING", 0.25)
    monkeypatch.setattr(engine._Engine, "_potential64_at", spy)
    got = golden.run(snn, x, "pipelined", device=CPU)
    check_same(got, want)
    assert seen and max(seen) > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 6),
    kernel=st.integers(1, 5),
    stride=st.sampled_from([1, 2]),
    pad=st.integers(0, 2),
    bn=st.booleans(),
    pool=st.sampled_from(["max", "avg", "none"]),
    residual=st.booleans(),
    width=st.integers(1, 16),
    signed=st.booleans(),
)
def test_ann_mode_is_the_pytorch_model(
    seed, c, kernel, stride, pad, bn, pool, residual, width, signed
):
    """golden ``ann`` (the folded network: BN in thresholds, λ in weights) reproduces the
    nn.Module's logits on random small nets and random, possibly signed, inputs."""
    net = make_net(
        seed, c=c, kernel=kernel, stride=stride, pad=pad, bn=bn, pool=pool, residual=residual,
        width=width,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    draw = torch.randn if signed else torch.rand
    calib, x = draw(8, 2, 8, 8, generator=gen), draw(8, 2, 8, 8, generator=gen)
    snn = convert(
        net, calib, ConversionConfig(calibration="percentile", weight_bits=None), progress=False
    )
    got = golden.run(snn, x, "ann", device=CPU).logits
    with torch.no_grad():
        want = net(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max()))


def test_eq4_reference_finds_every_spiking_layer() -> None:
    """Guards the property test: each neuron layer of the SNN is named after a module."""
    net = make_net(0, c=3, stride=1, pad=1, bn=True, pool="avg", residual=True)
    snn = convert(net, torch.rand(8, 2, 8, 8), progress=False)
    names = {n.replace(".", "_") for n, _ in net.named_modules()}
    neurons = [lay.name for lay in snn.layers if lay.kind == "neuron"]
    assert neurons == ["relu", "pool", "block_relu1", "block_relu2", "relu_fc"]
    assert set(neurons) <= names


# --------------------------------------------------------------------------------------------
# pipelined mode (DESIGN 2.6)
# --------------------------------------------------------------------------------------------


def test_pipelined_with_long_wait_equals_exact() -> None:
    _, snn, x = default_snn(T=12, Q=1.4, T_w=12)
    ex = golden.run(snn, x, "exact", device=CPU)
    pi = golden.run(snn, x, "pipelined", device=CPU)
    for i in hidden(snn):
        assert torch.equal(ex.spikes[i], pi.spikes[i]), snn.layers[i].name
    assert torch.equal(ex.predictions, pi.predictions)
    torch.testing.assert_close(ex.logits, pi.logits)


def test_pipelined_with_short_wait_has_noise_spikes() -> None:
    _, snn, x = default_snn(T=12, Q=1.4, T_w=2)
    ex = golden.run(snn, x, "exact", device=CPU)
    pi = golden.run(snn, x, "pipelined", device=CPU)
    assert any(not torch.equal(ex.spikes[i], pi.spikes[i]) for i in hidden(snn))
    for i in hidden(snn):
        sp = pi.spikes[i]
        assert sp.dtype == torch.int16 and sp.min() >= -1 and sp.max() < snn.layers[i].T
    for i, lay in enumerate(snn.layers):  # at most one spike per neuron and image
        if lay.kind == "neuron":
            assert pi.counts["spikes"][i] == int((pi.spikes[i] >= 0).sum())
            assert pi.counts["spikes"][i] <= lay.size * x.shape[0]
    assert pi.spikes_per_neuron() <= 1.0


# --------------------------------------------------------------------------------------------
# integer mode
# --------------------------------------------------------------------------------------------


def check_int_close_to_exact(weight_bits: int, layer_min: float, total_min: float) -> None:
    _, snn, x = default_snn(T=16, Q=1.3, weight_bits=weight_bits)
    ex = golden.run(snn, x, "exact", device=CPU)
    it = golden.run(snn, x, "int", device=CPU)
    agree, total = 0, 0
    for i in hidden(snn):
        a, b = ex.spikes[i], it.spikes[i]
        agree += int((a == b).sum())
        total += a.numel()
        assert (a == b).double().mean() >= layer_min, snn.layers[i].name
        both = (a >= 0) & (b >= 0)
        assert ((a - b)[both].abs() <= 1).double().mean() >= 0.9, snn.layers[i].name
        assert ((a >= 0) != (b >= 0)).double().mean() <= 0.03, snn.layers[i].name
    assert agree / total >= total_min
    assert (ex.predictions == it.predictions).double().mean() >= 0.9


@pytest.mark.parametrize(
    ("weight_bits", "layer_min", "total_min"), [(8, 0.8, 0.93), (16, 0.99, 0.995)]
)
def test_int_mode_within_quantisation_bound_of_exact(
    weight_bits: int, layer_min: float, total_min: float
) -> None:
    """A = 32; bounds found empirically on this net, seeds 0–4. INT8 weights: per-layer
    agreement of spike phases 0.98 (first layer) down to 0.83 (the 12-neuron last hidden
    layer), 0.96–0.97 over all hidden neurons, ≥ 93 % of the phase differences within ±1,
    ≤ 2 % neurons that fire in one mode only, all predictions equal. INT16 weights: ≥ 0.998
    per layer. With acc_bits = 16 the INT8 checks fail (40–70 % agreement), so a broken
    integer datapath does not pass."""
    check_int_close_to_exact(weight_bits, layer_min, total_min)


def test_int_mode_tiny_accumulator_saturates_and_differs() -> None:
    _, wide, x = default_snn(T=16, Q=1.3)
    _, tiny, _ = default_snn(T=16, Q=1.3, acc_bits=12)
    a = golden.run(wide, x, "int", device=CPU)
    b = golden.run(tiny, x, "int", device=CPU)
    lim = tiny.output.sat_limit  # |U| is clamped to L after each scaling, then one phase added
    assert 0 < lim < 2**11 - 1
    assert b.logits_int.abs().max() <= 2**11 - 1  # the 12-bit register never overflows
    assert a.logits_int.abs().max() > 2**11  # the wide one does need more bits
    assert any(not torch.equal(a.spikes[i], b.spikes[i]) for i in hidden(wide))


def test_accumulator_too_narrow_for_one_phase_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"acc_bits=8 is too narrow, one phase of input can add"):
        default_snn(T=16, Q=1.3, acc_bits=8)


def test_int_mode_needs_integer_weights() -> None:
    _, snn, x = default_snn(weight_bits=None)
    with pytest.raises(ValueError, match=r"^int mode needs integer weights"):
        golden.run(snn, x, "int", device=CPU)


@pytest.mark.parametrize(
    ("mode", "kwargs", "message"),
    [
        ("float", {}, r"^mode must be one of \('ann', 'exact', 'pipelined', 'int'\), got 'float'$"),
        ("exact", {"batch_size": 0}, r"^batch_size must be a positive int, got 0$"),
    ],
)
def test_run_rejects_bad_arguments(mode: str, kwargs: dict, message: str) -> None:
    _, snn, x = default_snn()
    with pytest.raises(ValueError, match=message):
        golden.run(snn, x, mode, device=CPU, **kwargs)


def test_run_rejects_wrong_input_shape() -> None:
    _, snn, _ = default_snn()
    with pytest.raises(ValueError, match=r"^inputs have shape \(2, 2, 8, 9\), the SNN takes "):
        golden.run(snn, torch.rand(2, 2, 8, 9), "exact", device=CPU)


# --------------------------------------------------------------------------------------------
# counts and energy (DESIGN 2.10)
# --------------------------------------------------------------------------------------------


def check_conv_adds(row: int, col: int, want: int, mode: str) -> None:
    """One input spike at (row, col) of a 5x5 map into a 3x3 conv, padding 1, C_out = 4."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(100, 2))
    snn = convert(
        net.eval(),
        torch.rand(4, 1, 5, 5),
        ConversionConfig(calibration="percentile", input_scale=1.0),
        progress=False,
    )
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, row, col] = 0.5  # the single bit of phase 0
    res = golden.run(snn, x, mode, device=CPU)
    assert res.counts["spikes"][0] == 1
    assert res.counts["adds"][1] == want
    assert res.counts["ann_macs"][1] == 4 * 25 * 9


@pytest.mark.parametrize("mode", ["exact", "int"])
@pytest.mark.parametrize(("row", "col", "want"), [(2, 2, 36), (0, 0, 16), (0, 2, 24), (4, 1, 24)])
def test_conv_adds_hand_count(row: int, col: int, want: int, mode: str) -> None:
    check_conv_adds(row, col, want, mode)


@pytest.mark.parametrize(
    ("precision", "want"),
    [("fp32", 150 * 4.6 / (15 * 0.9)), ("int8", 150 * 0.23 / (15 * 0.03))],
)
def test_energy_ratio_hand_made_counts(precision: str, want: float) -> None:
    counts = {"adds": np.array([0, 10, 5]), "ann_macs": np.array([0, 100, 50])}
    assert golden.energy_ratio(counts, precision) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("counts", "precision", "message"),
    [
        ({"adds": [0], "ann_macs": [5]}, "fp32", r"^the SNN performed no additions"),
        ({"adds": [1], "ann_macs": [5]}, "fp16", r"^precision must be one of \['fp32', 'int8'\]"),
    ],
)
def test_energy_ratio_errors(counts: dict, precision: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        golden.energy_ratio(counts, precision)


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------


def check_same(a: golden.GoldenResult, b: golden.GoldenResult) -> None:
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.predictions, b.predictions)
    for sa, sb in zip(a.spikes, b.spikes, strict=True):
        assert (sa is None and sb is None) or torch.equal(sa, sb)
    for k in ("spikes", "adds"):
        assert np.array_equal(a.counts[k], b.counts[k])


@pytest.mark.parametrize("mode", ["exact", "pipelined", "int"])
def test_runs_are_deterministic_and_batch_independent(mode: str) -> None:
    _, snn, x = default_snn(T=10, Q=1.5, T_w=3)
    full = golden.run(snn, x, mode, device=CPU)
    check_same(full, golden.run(snn, x, mode, device=CPU))
    check_same(full, golden.run(snn, x, mode, device=CPU, batch_size=5))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    seed=st.integers(0, 2**16),
    c=st.integers(1, 6),
    stride=st.sampled_from([1, 2]),
    pool=st.sampled_from(["max", "avg", "none"]),
    residual=st.booleans(),
    q=st.floats(1.05, 2.0),
    t_w=st.sampled_from([None, 2]),
)
def test_cpu_kernels_equal_the_pytorch_expressions(monkeypatch, seed, c, stride, pool, residual,
                                                   q, t_w):  # fmt: skip
    """golden.kernels (the CPU path) gives the spikes, counts and logits of the PyTorch
    expressions that other devices run, in exact, pipelined and int mode."""
    from converter.requantize import with_wait
    from golden import engine

    net = make_net(seed, c=c, stride=stride, pad=1, bn=True, pool=pool, residual=residual)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    snn = convert(
        net,
        calib,
        ConversionConfig(calibration="percentile", T=7, Q=q, weight_bits=8),
        progress=False,
    )
    if t_w is not None:
        snn = with_wait(snn, t_w)
    for mode in ("exact", "pipelined", "int"):
        got = golden.run(snn, x, mode, device=CPU)
        with monkeypatch.context() as m:
            m.setattr(engine, "USE_KERNELS", False)
            want = golden.run(snn, x, mode, device=CPU)
        for i, (a, b) in enumerate(zip(got.spikes, want.spikes, strict=True)):
            assert (a is None and b is None) or torch.equal(a, b), (mode, i)
        for k in ("spikes", "adds"):
            assert np.array_equal(got.counts[k], want.counts[k]), (mode, k)
        assert torch.equal(got.logits, want.logits), mode
        if mode == "int":
            assert torch.equal(got.logits_int, want.logits_int)


@pytest.mark.parametrize(
    ("mode", "down", "t_w"),
    [("int", "optionA", 0), ("int", "optionA", 5), ("int", "conv", 2),
     ("pipelined", "optionA", 0), ("pipelined", "optionA", 3), ("pipelined", "conv", 5)],
)  # fmt: skip
def test_event_kernels_equal_the_reference(monkeypatch, mode, down, t_w) -> None:
    """The event-driven kernels (a ResNet layer's synaptic input of every phase from its
    spikes' fan-out) give the reference's spikes, counts and logits, on identity and option-A
    shortcuts (stride 2, channel offset); a projection block (two convolutions) is not
    theirs. int (kernels.int_events) against the phase-by-phase path (dense convolutions of
    each phase's mask); pipelined (kernels.pipelined_events: every partial potential V(k),
    the float32 rounding test and the float64 recomputation; taken here even without partial
    potentials, T_w ≥ T − 1) against the float64 run."""
    from converter.requantize import with_wait
    from golden import engine, kernels
    from tests.test_rtl_residual import tiny_resnet

    snn, x = tiny_resnet(down, n_test=6)
    snn = with_wait(snn, t_w)
    name, shortcut_arg = ("int_events", 6) if mode == "int" else ("pipelined_events", 8)
    calls = []
    real = getattr(kernels, name)

    def spy(*args):
        calls.append(args[shortcut_arg].shape[0] > 0)  # (a shortcut source given)
        return real(*args)

    monkeypatch.setattr(kernels, name, spy)
    monkeypatch.setattr(engine, "EVENTS_MIN_PARTIALS", 0)
    got = golden.run(snn, x, mode, device=CPU)
    groups = [engine._event_groups(snn, lay) for lay in snn.layers]
    assert any(calls) and len(calls) == sum(g is not None for g in groups)
    assert (down == "optionA") == all(
        g is not None for g, lay in zip(groups, snn.layers, strict=True)
        if lay.kind == "neuron" and len(lay.synapses) == 2
    )  # fmt: skip
    with monkeypatch.context() as m:
        if mode == "int":
            m.setattr(engine, "_event_groups", lambda snn, lay: None)
        else:
            m.setattr(engine, "USE_KERNELS", False)  # float64 throughout (other devices' path)
        want = golden.run(snn, x, mode, device=CPU)
    check_same(got, want)
    if mode == "int":
        assert torch.equal(got.logits_int, want.logits_int)


@pytest.mark.parametrize("down", ["optionA", "conv"])
def test_exact_conv_kernel_decides_as_float64(monkeypatch, down: str) -> None:
    """kernels.exact_conv_code (exact mode's convolution layers with at most one shortcut:
    identity, option A's stride 2 and channel offset) gives the spikes of the float64 run
    and the spikes, counts and logits of the per-layer path (``_exact_phases``), the counts
    of the PyTorch expressions (a shortcut's additions: ``kernels.shortcut_fanout``); with a
    rounding unit so large that every neuron is flagged, every neuron is recomputed in
    float64 in the kernel and the result is the same."""
    from golden import engine, kernels
    from tests.test_rtl_residual import tiny_resnet

    snn, x = tiny_resnet(down, n_test=6)
    calls = []
    real = kernels.exact_conv_code

    def spy(*args):
        real(*args)
        calls.append((args[8].shape[0] > 0, args[0].size, int(args[-1].sum())))

    monkeypatch.setattr(kernels, "exact_conv_code", spy)
    monkeypatch.setattr(engine, "NATIVE_EXACT", False)  # (the native pass: below)
    got = golden.run(snn, x, "exact", device=CPU)
    assert any(short for short, _, _ in calls)
    want = _float64_exact(monkeypatch, snn, x)
    for i, (a, b) in enumerate(zip(got.spikes, want.spikes, strict=True)):
        assert (a is None and b is None) or torch.equal(a, b), i
    with monkeypatch.context() as m:
        m.setattr(engine, "FUSED_EXACT", False)
        check_same(got, golden.run(snn, x, "exact", device=CPU))
    with monkeypatch.context() as m:  # the native pass where it runs (else Numba's again)
        m.setattr(engine, "NATIVE_EXACT", True)
        check_same(got, golden.run(snn, x, "exact", device=CPU))
    with monkeypatch.context() as m:  # the counts (kernels.shortcut_fanout) too
        m.setattr(engine, "USE_KERNELS", False)
        torch_path = golden.run(snn, x, "exact", device=CPU)
    for k in ("spikes", "adds"):
        assert np.array_equal(got.counts[k], torch_path.counts[k]), k
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(engine, "EXACT_ROUNDING", 0.25)
        every = golden.run(snn, x, "exact", device=CPU)
    assert calls and all(n == rec for _, n, rec in calls)
    check_same(got, every)


@settings(max_examples=12, deadline=None, suppress_health_check=SLOW_DRAWS)
@given(**NET_DRAWS, t=st.sampled_from([3, 16, 31, 40]), q=st.floats(1.05, 2.0),
       rounding=st.sampled_from([2.0**-23, 2.0**-12]))  # fmt: skip
def test_native_exact_pass_equals_the_numba_kernel(monkeypatch, seed, c, stride, pool, residual,
                                                   t, q, rounding):  # fmt: skip
    """golden.native (exact mode's coding pass in C with AVX-512, then the Numba float64
    recomputation of what it flags) gives the Numba kernel's spikes, counts and logits: rows
    that are not a multiple of 16 neurons (masked tails), tables of more than 32 entries
    (gathers instead of permutes, T = 31, 40), and a rounding unit that flags many neurons."""
    from golden import engine, native

    if native.library() is None:  # (CI runs it: scripts/setup.sh installs a C compiler)
        skip_or_fail(f"the native kernel does not run here: {native.status()}")
    net = make_net(seed, c=c, stride=stride, pad=1, bn=True, pool=pool, residual=residual)
    gen = torch.Generator().manual_seed(seed)
    calib, x = torch.rand(8, 2, 8, 8, generator=gen), torch.rand(8, 2, 8, 8, generator=gen)
    snn = convert(net, calib, ConversionConfig(calibration="percentile", T=t, Q=q),
                  progress=False)  # fmt: skip
    calls = []
    real = native.exact_conv_rows
    with monkeypatch.context() as m:  # (hypothesis reuses the fixture across draws)
        m.setattr(engine, "EXACT_ROUNDING", rounding)
        m.setattr(native, "exact_conv_rows", lambda *a: calls.append(1) or real(*a))
        got = golden.run(snn, x, "exact", device=CPU)
        assert calls
        m.setattr(engine, "NATIVE_EXACT", False)
        check_same(got, golden.run(snn, x, "exact", device=CPU))


@pytest.mark.parametrize(("groups", "extra"), [(0, True), (1, False), (2, True)])
def test_exact_code_kernel_against_numpy(groups: int, extra: bool) -> None:
    """kernels.exact_code's phases, near flags, decodes, Σ_c dec² and spikes per pixel
    against the same formulas in NumPy float64: mag = |B| + Σ_g pix_g · wn_g + |extra|,
    tol = mag · γ / θ + |r| · ε, near = r within tol of the nearest threshold below or
    above. Potentials are drawn on and around the thresholds so that every branch is
    taken."""
    from golden import kernels

    rng = np.random.default_rng(groups)
    n, c, per, t, q = 9, 3, 16, 6, 1.4
    th = np.array([q**-k for k in range(t)][::-1], np.float32)  # ascending
    theta = rng.uniform(0.5, 2.0, c).astype(np.float32)
    base = rng.choice(np.concatenate([th, [0.0, 2.0]]), (n, c, per))
    step = rng.choice([-1, 1], (n, c, per)) * 10 ** rng.uniform(-6, -1, (n, c, per))
    r_want = base * (1 + np.where(rng.random((n, c, per)) < 0.1, 0.0, step))
    z = (r_want * theta[None, :, None]).astype(np.float32).reshape(-1)
    pix = rng.uniform(0, 50, (groups, n * per)).astype(np.float32)
    wn = rng.uniform(0, 50, (groups, c)).astype(np.float32)
    bias = rng.uniform(0, 5, c * per).astype(np.float32)
    # extra: a shortcut's own products w · x, taken by their magnitude
    ext = rng.uniform(-50, 50, z.size).astype(np.float32) if extra else np.zeros(0, np.float32)
    table = np.array([0.0] + [q**-k for k in range(t)], np.float32)
    gamma, eps = 40 * 2.0**-23, 4 * 2.0**-24
    phase = np.empty(z.size, np.int16)
    near = np.empty(z.size, np.bool_)
    dec = np.empty(z.size, np.float32)
    sq = np.empty(n * per, np.float32)
    fired = np.empty(n * per, np.int32)
    kernels.exact_code(z, pix, wn, bias, ext, theta, th, gamma, eps, per, table, phase, near,
                       dec, sq, fired)  # fmt: skip

    r = (z.reshape(n, c, per) / theta[None, :, None]).astype(np.float32).astype(np.float64)
    mag = np.broadcast_to(bias.reshape(1, c, per).astype(np.float64), (n, c, per)).copy()
    for g in range(groups):
        mag += pix[g].reshape(n, 1, per).astype(np.float64) * wn[g].reshape(1, c, 1)
    if extra:
        mag += np.abs(ext.reshape(n, c, per))
    tol = mag * gamma / theta[None, :, None].astype(np.float64) + np.abs(r) * eps
    k = (r[..., None] >= th.astype(np.float64)).sum(-1)
    want_phase = np.where(k == 0, -1, t - k)
    dist = np.abs(r[..., None] - th.astype(np.float64)).min(-1)
    assert np.array_equal(phase.reshape(n, c, per), want_phase)
    sure = np.abs(dist - tol) > 1e-5 * tol  # away from the float32 rounding of the test
    assert np.array_equal(near.reshape(n, c, per)[sure], (dist <= tol)[sure])
    assert near.any() and not near.all()
    want_dec = table[want_phase + 1]
    assert np.array_equal(dec.reshape(n, c, per), want_dec)
    np.testing.assert_allclose(sq, (want_dec.astype(np.float64) ** 2).sum(1).reshape(-1),
                               rtol=1e-6)  # fmt: skip
    assert np.array_equal(fired, (want_phase >= 0).sum(1).reshape(-1))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("t", [1, 8, 24])
def test_encode_binary_kernel_equals_encode_input(signed: bool, t: int) -> None:
    """kernels.encode_binary (the CPU engine's input coding) gives encode_input's spike
    trains, _decode's values and the spikes per neuron, on values drawn on and between the
    code's rounding ties (round half to even), at 0, and past the top code."""
    from converter.model import Layer
    from golden import engine, kernels

    lay = Layer(name="in", kind="input", shape=(2, 3, 5), T=t, signed=signed)
    rng = np.random.default_rng(t)
    ties = (rng.integers(0, 2**t, (4, 30)) + 0.5) / 2**t
    v = np.concatenate([ties, rng.uniform(0, 1.2, (4, 30)), np.zeros((1, 30))])
    if signed:
        v = v * rng.choice([-1.0, 1.0], v.shape)
    v = torch.as_tensor(v.reshape(-1, *lay.shape))
    want = engine.encode_input(v, dataclasses.replace(lay, input_gain=1.0, input_offset=0.0))
    n = v.shape[0]
    trains = np.empty((n, t, 30), np.int8)
    dec = np.empty((n, 30), np.float32)
    counts = np.empty((n, 30), np.float32)
    kernels.encode_binary(v.numpy().reshape(n, -1), t, signed, True, trains, dec, counts)
    assert np.array_equal(trains, want.numpy().reshape(n, t, -1))
    assert np.array_equal(dec, engine._decode(want, lay, torch.float32).numpy().reshape(n, -1))
    assert np.array_equal(counts, (want != 0).sum(1).numpy().reshape(n, -1))
    dec2, counts2 = np.empty_like(dec), np.empty_like(counts)  # without the trains
    kernels.encode_binary(v.numpy().reshape(n, -1), t, signed, False,
                          np.empty((n, 0, 30), np.int8), dec2, counts2)  # fmt: skip
    assert np.array_equal(dec2, dec) and np.array_equal(counts2, counts)


def test_native_kernel_falls_back_with_its_reason(monkeypatch) -> None:
    """Without the native pass (switched off, or no C compiler) golden says why
    (native.status) and runs exact mode on the Numba kernel, with the same result."""
    from golden import native

    _, snn, x = default_snn(T=8, Q=1.4)
    want = golden.run(snn, x, "exact", device=CPU)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("ONESPIKE_NATIVE", "0")
    assert native.library() is None and "ONESPIKE_NATIVE=0" in native.status()
    check_same(golden.run(snn, x, "exact", device=CPU), want)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("ONESPIKE_NATIVE")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.library() is None and "no C compiler" in native.status()
    check_same(golden.run(snn, x, "exact", device=CPU), want)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [((2, 2), (2, 2), (0, 0)),
                                                           ((3, 3), (2, 2), (1, 1)),
                                                           ((3, 2), (1, 2), (1, 0))])  # fmt: skip
def test_maxpool_kernel_equals_maxpool_phase(kernel, stride, padding) -> None:
    """kernels.maxpool_phases (the CPU engine's max pooling of phases) gives
    converter.ops.maxpool_phase's earliest spike per window, −1 where none spikes, with
    padding and uneven strides."""
    from converter.model import Layer
    from converter.ops import maxpool_phase
    from golden import kernels

    rng = np.random.default_rng(sum(kernel) + sum(padding))
    sp = torch.as_tensor(rng.integers(-1, 7, (3, 2, 9, 8)).astype(np.int16))
    sp[0, 0] = -1  # a channel with no spike
    oh = (9 + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (8 + 2 * padding[1] - kernel[1]) // stride[1] + 1
    lay = Layer(name="pool", kind="maxpool", shape=(2, oh, ow), T=7, kernel=kernel,
                stride=stride, padding=padding)  # fmt: skip
    want = maxpool_phase(sp, lay, 7)
    out = np.empty((3, 2, oh, ow), np.int16)
    kernels.maxpool_phases(sp.numpy(), *kernel, *stride, *padding, out)
    assert np.array_equal(out, want.numpy())
