"""Tests of hwsim: spikes and adds identical to golden int, hand-computed cycle counts, queue
back-pressure, energy = counts × table, and the configuration's error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import golden
import hwsim
from archspec.config import ACTIONS, CONFIG_DIR, COSTED_ACTIONS
from converter import ConversionConfig, Layer, SnnModel, Synapse, convert
from converter.model import validate

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# agreement with golden int (DESIGN Section 4)
# --------------------------------------------------------------------------------------------


class Net(nn.Module):
    """conv(stride, padding) BN ReLU → [max/avg pool] → [residual block] → linear ReLU → linear."""

    def __init__(self, c: int, stride: int, pad: int, pool: str, residual: bool):
        super().__init__()
        self.conv = nn.Conv2d(2, c, 3, stride=stride, padding=pad)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2), "none": nn.Identity()}[pool]
        self.residual = residual
        if residual:
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(c)
            self.relu2 = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc1 = nn.LazyLinear(12)
        self.relu_fc = nn.ReLU()
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv(x))))
        if self.residual:
            x = self.relu2(self.bn2(self.conv2(self.relu1(self.conv1(x)))) + x)
        return self.fc2(self.relu_fc(self.fc1(self.flat(x))))


def make_snn(seed: int, net_kw: dict, cfg: dict) -> tuple[SnnModel, torch.Tensor]:
    torch.manual_seed(seed)
    net = Net(**net_kw).eval()
    net(torch.rand(2, 2, 8, 8))  # materialise the lazy layer
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    snn = convert(net, torch.rand(32, 2, 8, 8), ConversionConfig(**cfg), progress=False)
    return snn, torch.rand(8, 2, 8, 8)


def drawn_snn(seed: int, net_kw: dict, cfg: dict) -> tuple[SnnModel, torch.Tensor]:
    """make_snn for a property test's draw: a draw the converter refuses because its
    integers do not fit acc_bits (a net whose activations nearly vanish needs thresholds
    wider than 16 bits: it says so and names the layer) is rejected, not failed."""
    from hypothesis import assume

    try:
        return make_snn(seed, net_kw, cfg)
    except ValueError as exc:
        assume("acc_bits" not in str(exc))
        raise


def check_agrees(snn: SnnModel, x: torch.Tensor, arch: hwsim.ArchConfig | None = None) -> None:
    """Spikes of every layer, predictions, output potentials and adds equal golden int."""
    g = golden.run(snn, x, "int", device="cpu")
    r = hwsim.simulate(snn, x, arch)
    for i, lay in enumerate(snn.layers):
        if g.spikes[i] is None:
            assert r.spikes[i] is None, lay.name
        else:
            np.testing.assert_array_equal(r.spikes[i], g.spikes[i].numpy(), err_msg=lay.name)
    np.testing.assert_array_equal(r.predictions, g.predictions.numpy())
    np.testing.assert_array_equal(r.logits_int, g.logits_int.numpy())
    np.testing.assert_array_equal(r.counts["adds"], g.counts["adds"])
    np.testing.assert_array_equal(r.counts["spikes_out"][1:-1], g.counts["spikes"][1:-1])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    c=st.integers(1, 5),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    pool=st.sampled_from(["max", "avg", "none"]),
    residual=st.booleans(),
    T=st.integers(2, 10),
    tw=st.integers(0, 12),
    T_in=st.integers(2, 8),
    acc_bits=st.sampled_from([16, 24, 32]),
    lanes=st.sampled_from([1, 3, 16]),
)
def test_random_nets_agree_with_golden(
    seed, c, stride, pad, pool, residual, T, tw, T_in, acc_bits, lanes
) -> None:
    cfg = dict(T=T, T_w=tw, T_in=T_in, acc_bits=acc_bits, Q=1.3 if T > 4 else 1.7)
    snn, x = drawn_snn(seed, dict(c=c, stride=stride, pad=pad, pool=pool, residual=residual), cfg)
    check_agrees(snn, x, dataclasses.replace(hwsim.ArchConfig(), lanes=lanes))


@pytest.mark.parametrize("T_w", [0, 3, None])
def test_residual_net_with_saturating_potentials_agrees(T_w) -> None:
    """acc_bits = 16 and T_w < T_in: potentials hit the clamp, decisions see partial inputs."""
    snn, x = make_snn(3, dict(c=4, stride=1, pad=1, pool="max", residual=True),
                      dict(T=8, T_w=T_w, acc_bits=16, T_in=8))  # fmt: skip
    check_agrees(snn, x * 1.5)


@pytest.fixture(scope="module")
def digits() -> tuple[SnnModel, torch.Tensor, torch.Tensor]:
    from onespike.data import load_digits
    from onespike.models import train_digits_cnn

    model, _ = train_digits_cnn(seed=0, epochs=5)
    x_tr, _, x_te, y_te = load_digits(seed=0)
    snn = convert(model, x_tr[:256], ConversionConfig(), progress=False)
    return snn, x_te[:120], y_te[:120]


def test_digits_cnn_agrees_with_golden(digits) -> None:
    snn, x, _ = digits
    check_agrees(snn, x)


def test_digits_cnn_with_short_wait_agrees(digits) -> None:
    snn, x, _ = digits
    layers = [dataclasses.replace(x, T_w=2) if x.kind == "neuron" else x for x in snn.layers]
    # a different T_w changes the decisions but not the threshold table's validity for hwsim:
    # both engines read the same (possibly mis-scaled) integers, so they must still agree
    check_agrees(dataclasses.replace(snn, layers=tuple(layers)), x[:40])


# --------------------------------------------------------------------------------------------
# hand-computed cycle counts on a hand-built network
# --------------------------------------------------------------------------------------------

ARCH = hwsim.ArchConfig(
    lanes=2,
    output_queue_depth=2,
    event_issue_cycles=1,
    adder_pipeline_cycles=2,
    neuron_pipeline_cycles=2,
)


def tiny_snn(weights, thresholds, *, t_in: int, T: int, T_w: int) -> SnnModel:
    """input (1,) → linear → hidden (n,) with Q = 2 → output (1,); a valid SnnModel."""
    n = len(weights)
    one = np.ones(1, np.float32)
    inp = Layer("in", "input", (1,), T=t_in, Q=2.0, lam=one, input_gain=one,
                input_offset=np.zeros(1, np.float32))  # fmt: skip
    w = np.array(weights, np.int8).reshape(n, 1)
    ones = np.ones(n, np.float32)
    hid = Layer(
        "hid", "neuron", (n,), T=T, Q=2.0, T_w=T_w, lam=ones,
        synapses=(Synapse(0, "linear", w.astype(np.float32), w),),
        bias=np.zeros(n, np.float32), threshold=ones, scale=ones, bias_q=np.zeros(n, np.int64),
        threshold_q=np.tile(np.array(thresholds, np.int64), (n, 1)), sat_limit=2**20,
    )  # fmt: skip
    wo = np.ones((1, n), np.int8)
    out = Layer(
        "out", "output", (1,), T=0, Q=2.0, lam=one,
        synapses=(Synapse(1, "linear", wo.astype(np.float32), wo),), bias=np.zeros(1, np.float32),
        scale=one, bias_q=np.zeros(1, np.int64), sat_limit=2**20,
    )  # fmt: skip
    snn = SnnModel(layers=(inp, hid, out), config={}, weight_bits=8, acc_bits=32)
    validate(snn)
    return snn


def cycles(r: hwsim.SimResult, i: int = 1) -> tuple[int, int, int]:
    return int(r.cycles["busy"][i]), int(r.cycles["stalled"][i]), int(r.cycles["waiting"][i])


def test_one_event_cycles() -> None:
    """x = 0.5, T_in = 2: one event at phase 0 into 3 neurons, P = 2 (docs/architecture.md).

    init 2 rows + 2 = 4; phase 0: 1 issue + ceil(3/2) = 2 adder + 2 pipeline = 5; boundary 0
    (compare t_o = 0, leak) 2 + 2 = 4; phase 1: no events, 0; boundary 1 (compare t_o = 1) 4.
    """
    snn = tiny_snn([5, 5, 5], [100, 100], t_in=2, T=2, T_w=0)
    r = hwsim.simulate(snn, torch.tensor([[0.5]]), ARCH)
    assert cycles(r) == (4 + 5 + 4 + 4, 0, 0)
    assert r.counts["adds"][1] == 3 and r.counts["spikes_in"][1] == 1
    assert r.counts["compares"][1] == 6 and r.counts["multiplies"][1] == 3
    assert r.adder_cycles[1] == 2 and r.lane_utilisation[1] == pytest.approx(3 / 4)


def test_fired_neurons_are_skipped_by_the_neuron_unit() -> None:
    """Neuron 0 fires at phase 0: later scans gate its lane (no read, compare or multiply),
    the scan still takes one cycle per row."""
    snn = tiny_snn([50, 5, 5], [40, 40], t_in=2, T=2, T_w=0)
    r = hwsim.simulate(snn, torch.tensor([[0.5]]), ARCH)
    assert r.spikes[1].tolist() == [[0, -1, -1]]
    assert cycles(r) == (17, 0, 0)
    assert r.counts["compares"][1] == 3 + 2
    assert r.counts["multiplies"][1] == 2  # the leak after phase 0 of the two unfired neurons
    assert r.counts["potential_reads"][1] == 3 + 3 + 2  # adds, scan 0, scan 1
    assert r.counts["queue_pushes"][1] == 1 and r.queue_peak[1] == 1


def test_waiting_for_t_w() -> None:
    """T_in = 2, T = 1, T_w = 3: boundaries 0 and 1 follow input phases, boundary 2 waits
    (no input, no decision), boundary 3 decides t_o = 0."""
    snn = tiny_snn([5, 5, 5], [100], t_in=2, T=1, T_w=3)
    r = hwsim.simulate(snn, torch.tensor([[0.5]]), ARCH)
    assert cycles(r) == (4 + 5 + 4 + 4 + 4, 0, 4)
    assert r.counts["compares"][1] == 3


def test_full_output_queue_stalls_the_scan() -> None:
    """4 neurons fire at t_o = 0, P = 2, depth 2: row 0 pushes 2, row 1 waits 2 cycles for the
    queue to pop twice; the queue then drains during the 2-cycle pipeline tail."""
    snn = tiny_snn([9, 9, 9, 9], [5], t_in=1, T=1, T_w=0)
    r = hwsim.simulate(snn, torch.tensor([[0.5]]), ARCH)
    assert r.spikes[1].tolist() == [[0, 0, 0, 0]]
    assert cycles(r) == (4 + 5 + 4, 2, 0)
    assert r.queue_peak[1] == 2


def test_back_pressure_pattern_adds_stalls() -> None:
    """A blocked output queue stalls pushes and the final drain; the spikes do not change."""
    snn = tiny_snn([9, 9, 9, 9], [5], t_in=1, T=1, T_w=0)
    x = torch.tensor([[0.5]])
    free = hwsim.simulate(snn, x, ARCH)
    blocked = np.zeros(64, bool)
    blocked[9:20] = blocked[23:25] = True  # the queue cannot pop in cycles 9-19 and 23-24
    r = hwsim.simulate(snn, x, ARCH, stalls=blocked)
    np.testing.assert_array_equal(r.spikes[1], free.spikes[1])
    # row 0 pushes 2 at cycle 9; row 1 stalls in cycles 10-21 (the queue pops at 20 and 21)
    # and pushes at 22; the pipeline tail (23, 24) is blocked; the drain pops at 25 and 26
    assert cycles(free) == (13, 2, 0)
    assert cycles(r) == (13, 12 + 2, 0)
    pattern = hwsim.stall_pattern(seed=1, rate=0.5)
    assert pattern.dtype == bool and np.array_equal(pattern, hwsim.stall_pattern(1, 0.5))
    with pytest.raises(ValueError, match="at least one unblocked cycle"):
        hwsim.simulate(snn, x, ARCH, stalls=np.ones(8, bool))


# --------------------------------------------------------------------------------------------
# energy and configuration
# --------------------------------------------------------------------------------------------


def test_energy_is_counts_times_table() -> None:
    snn, x = make_snn(1, dict(c=3, stride=1, pad=1, pool="avg", residual=False), dict(T=6))
    r = hwsim.simulate(snn, x[:2])
    e = r.energy_pj()
    assert set(e) == set(COSTED_ACTIONS) and set(r.counts) == set(ACTIONS)
    table = r.arch.energy
    assert np.allclose(e["adds"], r.counts["adds"] * table.add_pj)
    assert np.allclose(e["queue_pushes"], r.counts["queue_pushes"] * table.queue_push_pj)
    expect = sum(r.counts[a] * table.cost_pj(a) for a in COSTED_ACTIONS)
    np.testing.assert_allclose(r.total_energy_pj(), expect)
    assert np.allclose(r.latency_us(), r.total_cycles / 500.0)


@pytest.mark.parametrize("name", ["default", "p4", "p16", "p64"])
def test_shipped_configs_load(name) -> None:
    arch = hwsim.ArchConfig.preset(name)
    assert arch.lanes == {"default": 16, "p4": 4, "p16": 16, "p64": 64}[name]
    assert arch.energy.add_pj == 0.1 and arch.energy.weight_read_pj == 2.5
    if name == "default":
        assert arch == hwsim.ArchConfig()


def write(tmp_path: Path, text: str) -> Path:
    base = (CONFIG_DIR / "default.toml").read_text()
    path = tmp_path / "arch.toml"
    path.write_text(text.format(base=base))
    return path


@pytest.mark.parametrize(
    "text, error, match",
    [
        ("{base}\n", None, None),
        ("bogus_cycles = 3\n{base}", ValueError, r"unknown key bogus_cycles = 3; known keys"),
        ("weight_sram = 64\n{base}", ValueError, r"weight_sram has no unit, write weight_sram_kib"),
        ("{base}\nadd = 0.1\n", ValueError, r"energy.add has no unit, write energy.add_pj"),
        ("lanes = 0\n", ValueError, r"lanes must be positive, got 0"),
        ("weight_sram_kib = -4.0\n", ValueError, r"weight_sram_kib must be positive, got -4.0"),
        ("clock_mhz = 0\n", ValueError, r"clock_mhz must be positive, got 0"),
        ("lanes = 2.5\n", TypeError, r"lanes must be an int, got 2.5"),
        ("output_queue_depth = 8\n", ValueError, r"output_queue_depth must be at least lanes"),
        ("[energy]\nadd_pj = -1.0\n", ValueError, r"energy.add_pj must be non-negative, got -1.0"),
    ],
)
def test_config_errors(tmp_path, text, error, match) -> None:
    path = write(tmp_path, text)
    if error is None:
        assert hwsim.ArchConfig.from_toml(path) == hwsim.ArchConfig()
    else:
        with pytest.raises(error, match=match):
            hwsim.ArchConfig.from_toml(path)


def test_network_that_does_not_fit_is_rejected() -> None:
    snn, x = make_snn(2, dict(c=4, stride=1, pad=1, pool="none", residual=False), dict(T=4))
    # layer 1: 8 x 8 pixels x 1 row of 16 lanes of 33 bits (potential + fired flag)
    small = dataclasses.replace(hwsim.ArchConfig(), potential_sram_kib=4.0)
    with pytest.raises(
        hwsim.ArchFitError,
        match=r"^layer 1 \(relu\) needs 4\.12 KiB of potential memory, potential_sram_kib = 4$",
    ):
        hwsim.simulate(snn, x, small)
    # layer 1: 18 weight words of 16 x 8 bits, 64 rows of 16 initial potentials, 4 x 4 thresholds
    narrow = dataclasses.replace(hwsim.ArchConfig(), weight_sram_kib=1.0)
    with pytest.raises(
        hwsim.ArchFitError,
        match=r"^layer 1 \(relu\) needs 4\.34 KiB of parameter memory, weight_sram_kib = 1$",
    ):
        hwsim.simulate(snn, x, narrow)
    with pytest.raises(hwsim.ArchFitError, match=r"32-bit potentials .* potential_bits = 12"):
        hwsim.check_fits(snn, dataclasses.replace(hwsim.ArchConfig(), potential_bits=12))


def test_report_rows_are_per_image_and_add_up() -> None:
    snn, x = make_snn(4, dict(c=3, stride=2, pad=1, pool="none", residual=True), dict(T=5))
    r = hwsim.simulate(snn, x[:4])
    rows = r.rows()
    assert [row["layer"] for row in rows] == [*r.names, "total"]
    assert rows[-1]["adds"] == pytest.approx(r.counts["adds"].sum() / 4)
    assert rows[-1]["energy_pj"] == pytest.approx(r.total_energy_pj().sum() / 4)
    assert rows[-1]["busy_cycles"] == pytest.approx(r.cycles["busy"].sum() / 4)
    # each image also pays the controller's cycles between the layers (docs §14)
    assert r.controller_cycles == 2 * (len(snn.layers) - 1) + 1
    assert r.latency_per_image_us().sum() == pytest.approx(
        r.latency_us().sum() + 4 * r.controller_cycles / r.arch.clock_mhz
    )


def test_pipelined_tiny_stream_hand_computed() -> None:
    """Hidden layer (17 cycles, decides t_o = 0 at cycle 13 and t_o = 1 at 17) feeding the
    output layer (init 3; leak scan after phase 0: 3; readout: 3): in layer mode 17 + 9 = 26
    engine cycles and 2 · 2 + 1 = 5 controller cycles (docs/architecture.md §14): 31;
    pipelined the output engine starts phase 0 at 13 and phase 1 at 17: 20."""
    snn = tiny_snn([5, 5, 5], [100, 100], t_in=2, T=2, T_w=0)
    x = torch.tensor([[0.5]])
    layer = hwsim.simulate(snn, x, ARCH)
    pipe = hwsim.simulate(snn, x, ARCH, mode="pipelined")
    assert layer.cycles_per_image.sum(1).tolist() == [26] and layer.controller_cycles == 5
    assert layer.stream_end_cycles.tolist() == [31]
    assert pipe.stream_end_cycles.tolist() == [20]
    two = hwsim.simulate(snn, torch.tensor([[0.5], [0.5]]), ARCH, mode="pipelined")
    # image 1 enters the hidden engine at 17 and is decided at 30 and 34; output ends at 37
    assert two.stream_end_cycles.tolist() == [20, 37]
    assert two.images_per_s() == pytest.approx(500e6 / 17)


def test_pipelined_mode_same_spikes_and_faster_stream() -> None:
    snn, x = make_snn(5, dict(c=3, stride=1, pad=1, pool="max", residual=True), dict(T=6, T_w=2))
    layer = hwsim.simulate(snn, x, mode="layer")
    pipe = hwsim.simulate(snn, x, mode="pipelined")
    for a, b in zip(layer.spikes[1:-1], pipe.spikes[1:-1], strict=True):
        np.testing.assert_array_equal(a, b)
    for k in ACTIONS:
        np.testing.assert_array_equal(layer.counts[k], pipe.counts[k])
    per_engine = layer.total_cycles[1:]
    assert pipe.stream_end_cycles[-1] >= per_engine.max()  # the slowest engine bounds it
    assert pipe.stream_end_cycles[-1] < layer.stream_end_cycles[-1]
    assert pipe.first_image_latency_us() < layer.first_image_latency_us()
    assert (
        layer.stream_end_cycles[-1]
        == layer.total_cycles.sum() + x.shape[0] * layer.controller_cycles
    )
    assert pipe.controller_cycles == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        hwsim.simulate(snn, x, mode="tiled")


def test_resnet20_agrees_with_golden(resnet_dir, cifar_subset) -> None:
    """CIFAR-10 ResNet-20 (option-A shortcuts: subsample + channel offset), two images."""
    from onespike.data import CIFAR_MEAN, CIFAR_STD, load_cifar10_subset
    from onespike.models import load_cifar_resnet

    x, _ = load_cifar10_subset("test", path=cifar_subset)
    cfg = ConversionConfig(input_mean=CIFAR_MEAN, input_std=CIFAR_STD)
    snn = convert(load_cifar_resnet(20, root=resnet_dir), x[:32], cfg, progress=False)
    assert any(s.op == "shortcut" and s.channel_offset for lay in snn.layers for s in lay.synapses)
    check_agrees(snn, x[100:102])


def test_mnist_cnn_agrees_with_golden(mnist_dir) -> None:
    """The committed MNIST CNN, a few test images."""
    from onespike.data import load_mnist
    from onespike.models import load_mnist_cnn

    x, _ = load_mnist("test", root=mnist_dir)
    snn = convert(load_mnist_cnn(), x[:64], ConversionConfig(), progress=False)
    check_agrees(snn, x[:4])
