"""The whole accelerator (rtl.Accelerator) as one Verilog top, co-simulated end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import BUILD, assert_lints_clean, require_simulator

import golden
import hwsim
from converter import ConversionConfig, convert


@pytest.fixture(scope="module")
def digits_snn():
    """The digits CNN (conv, max pool, conv, avg pool, linear output), default conversion."""
    from onespike.data import load_digits
    from onespike.models import train_digits_cnn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small net: one thread is faster on a busy machine
    try:
        model, _ = train_digits_cnn(seed=0)
        x_tr, _, x_te, _ = load_digits(seed=0)
        snn = convert(model, list(x_tr.split(256)), ConversionConfig(), name="DigitsCNN",
                      progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return snn, x_te


def check_run(snn, x, arch, sim: str, name: str):
    """accel_cosim under ``sim`` on the top of ``arch``'s dataflow; assert every layer exact
    (spikes, their order in the buffers, cycles: hwsim's, max pooling included) and the
    controller's total hwsim's (the output-stationary top's: its sorts included)."""
    from rtl.accel_sim import accel_cosim

    require_simulator(sim)
    rep = accel_cosim(snn, arch, x, sim=sim, out_dir=BUILD / name)
    assert rep.errors == [], rep.errors[:3]
    for r in rep.layers:
        assert r.errors == [] and r.spikes_match, f"layer {r.index}: {r.errors[:3]}"
        assert r.rtl_cycles == r.hwsim_cycles
    ref = golden.run(snn, x, "int", device="cpu")
    assert rep.predictions == ref.predictions.tolist()
    hw = hwsim.simulate(snn, x, arch)
    if arch.dataflow == "potential_sram":  # docs/architecture.md §14
        assert hw.controller_cycles == 2 * (len(snn.layers) - 1) + 1
        assert rep.gap_cycles == [hw.controller_cycles] * x.shape[0]
    else:  # the sequencer's cycles and the producers' sorts
        assert hw.controller_cycles == hwsim.sim.controller_cycles(snn, arch)
        assert rep.gap_cycles == (hw.controller_cycles + hw.bucket_cycles.sum(1)).tolist()
    assert rep.total_cycles == rep.hwsim_total_cycles == hw.image_cycles.tolist()
    assert rep.ok and rep.sim_seconds > 0 and rep.build_seconds > 0
    return rep


@pytest.mark.slow
@pytest.mark.parametrize(("sim", "images"), [("icarus", 1), ("verilator", 2)])
def test_digits_through_the_accelerator(digits_snn, sim, images) -> None:
    """The digits net on the default accelerator (P = 16): input events through the AXI
    port, one start, one wait for done; every layer's spikes equal golden int's, every
    engine's cycles hwsim's (layer mode), the class and output potentials golden's; the top
    lints clean."""
    snn, x = digits_snn
    # images 3 and 4 (Verilator): in image 4 the max pool's drain depends on the order of
    # its events within a phase (hwsim reads them in the scan order the conv emits, §14)
    rep = check_run(snn, x[3 : 3 + images], hwsim.ArchConfig(), sim, f"accel_digits_{sim}")
    assert [r.kind for r in rep.layers] == ["neuron", "maxpool", "neuron", "neuron", "output"]
    if sim == "verilator":  # the top lints clean with the engines' waivers (§10)
        vdir = BUILD / f"accel_digits_{sim}" / "verilog"
        assert_lints_clean(vdir / "onespike_accel.v", vdir / "verilator.vlt")
    js = rep.to_json()
    assert {"layers", "sim_seconds", "build_seconds"} <= set(js)
    assert {"name", "spikes_match", "rtl_cycles", "hwsim_cycles"} <= set(js["layers"][0])


@pytest.mark.slow
def test_cosim_command_runs_the_accelerator(digits_snn, tmp_path, capsys) -> None:
    """`onespike cosim ART` runs the whole accelerator by default (Icarus, one image) and
    writes the --json object: per layer name, spikes_match, rtl_cycles, hwsim_cycles, and
    sim_seconds, build_seconds."""
    from onespike.cli import main

    require_simulator("icarus")
    snn, _ = digits_snn
    art = snn.save(tmp_path / "digits.safetensors")
    out, js = tmp_path / "c", tmp_path / "cosim.json"
    argv = ["cosim", str(art), "--images", "1", "--sim", "icarus", "-o", str(out)]
    assert main([*argv, "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "the whole accelerator under icarus" in text and "MISMATCH" not in text
    assert (out / "accel" / "verilog" / "onespike_accel.v").is_file()
    rep = json.loads(js.read_text())
    assert rep["flow"] == "accelerator" and rep["ok"] is True
    assert isinstance(rep["sim_seconds"], float) and rep["sim_seconds"] > 0
    assert isinstance(rep["build_seconds"], float) and rep["build_seconds"] > 0
    assert [r["name"] for r in rep["layers"]] == [lay.name for lay in snn.layers[1:]]
    for r in rep["layers"]:
        assert r["spikes_match"] is True and r["rtl_cycles"] == r["hwsim_cycles"]
        assert len(r["rtl_cycles"]) == 1
    assert rep["total_cycles"] == rep["hwsim_total_cycles"]


@pytest.mark.parametrize("which", ["gcn", "text_gcn"])
def test_graph_networks_through_the_accelerator(which) -> None:
    """A GCN (dense features) and a Text GCN (one-hot features, an embedding layer) run whole
    under Icarus: each two-rail layer's buffer is split into rail banks that the next
    layer's two graph groups read as two sources; every layer exact, the classes per node
    golden int's; the top lints clean."""
    from test_rtl_graph import small_gcn, small_text_gcn

    from rtl.accel_sim import accel_cosim
    from rtl.accelerator import plan

    snn, x = small_gcn() if which == "gcn" else small_text_gcn()
    layers = plan(snn)
    rails = {p.index: p.split for p in layers if p.split is not None}
    assert rails == {1: snn.layers[1].size // 2, 3: snn.layers[3].size // 2}
    assert [p.banks for p in layers if p.index in (2, 4)] == [(0, 1), (0, 1)]
    require_simulator("icarus")
    arch = hwsim.ArchConfig()
    rep = accel_cosim(snn, arch, x, sim="icarus", out_dir=BUILD / f"accel_{which}")
    assert rep.ok, rep.first_error()
    assert all(r.rtl_cycles == r.hwsim_cycles for r in rep.layers)
    assert rep.total_cycles == rep.hwsim_total_cycles and len(rep.total_cycles) == 1
    ref = golden.run(snn, x, "int", device="cpu")
    assert rep.predictions == ref.predictions.tolist()  # one class per node
    assert rep.layers[1].counters["spikes_in"] == rep.layers[1].hwsim_counts["spikes_in"] > 0
    verilog = BUILD / f"accel_{which}" / "verilog"
    assert_lints_clean(verilog / "onespike_accel.v", verilog / "verilator.vlt")  # RailBuffer too


@pytest.mark.slow
def test_graph_input_buffer_sized_to_its_features() -> None:
    """A graph whose input layer's worst case (features × nodes × T_in = 1.06 M events)
    exceeds the debug port's 2^20 addresses while its sparse binary features fit (as
    Cora's: 31 M against 184 k) gets an input buffer of its features' events and runs whole
    under Verilator, every layer exact."""
    from test_rtl_graph import wide_gcn

    from rtl.accel_sim import accel_cosim, input_capacity
    from rtl.accelerator import plan

    snn, x = wide_gcn(density=0.02, nodes=100, feats=1320)  # 1.06 M input events at worst
    lay = snn.layers[0]
    events = input_capacity(snn, x)
    assert lay.size * lay.T > 2**20 > events > 0
    assert plan(snn, events)[0].depth == events
    with pytest.raises(ValueError, match="2\\^20 addresses"):
        plan(snn)
    require_simulator("verilator")
    rep = accel_cosim(snn, hwsim.ArchConfig(), x, sim="verilator", out_dir=BUILD / "accel_wide")
    assert rep.ok, rep.first_error()
    assert rep.predictions == golden.run(snn, x, "int", device="cpu").predictions.tolist()


def test_accelerator_refuses_two_groups_on_one_source_that_are_not_rails() -> None:
    """Two synapse groups reading one source are run only as a graph layer's two rails."""
    import dataclasses

    from test_rtl_graph import small_gcn

    from rtl.accelerator import plan

    snn, _ = small_gcn()
    lay = snn.layers[2]
    syns = [lay.synapses[0], dataclasses.replace(lay.synapses[1], op="shortcut")]
    bad = dataclasses.replace(snn, layers=[*snn.layers[:2], dataclasses.replace(lay, synapses=syns),
                                           *snn.layers[3:]])  # fmt: skip
    with pytest.raises(ValueError, match=r"layer 2 \(relu\): .* not a graph layer's two rails"):
        plan(bad)


def test_cosim_command_runs_a_graph_network_on_the_accelerator(tmp_path, monkeypatch) -> None:
    """`onespike cosim` on a graph network runs the whole accelerator by default: the JSON
    names that flow, every layer is exact, the class per node is golden int's."""
    from test_rtl_graph import small_gcn

    from onespike import rtlcli
    from onespike.cli import main

    require_simulator("icarus")
    snn, x = small_gcn(seed=1, nodes=24)
    art = snn.save(tmp_path / "gcn.safetensors")
    monkeypatch.setattr(rtlcli, "_graph_features", lambda snn, data: x)
    js = tmp_path / "c.json"
    assert main(["cosim", str(art), "--sim", "icarus", "-o", str(tmp_path / "c"),
                 "--json", str(js)]) == 0  # fmt: skip
    rep = json.loads(js.read_text())
    assert rep["flow"] == "accelerator" and rep["ok"] and rep["images"] == 1
    assert all(r["spikes_match"] and r["rtl_cycles"] == r["hwsim_cycles"] for r in rep["layers"])
    assert rep["predictions"] == golden.run(snn, x, "int", device="cpu").predictions.tolist()


def test_cosim_command_falls_back_for_a_graph_the_accelerator_refuses(
    tmp_path, capsys, monkeypatch
) -> None:
    """A graph whose input would exceed the debug port's 2^20 addresses (every feature codes
    all T_in bits) is co-simulated on the per-layer engines, with the reason on stderr (the
    benches stubbed here: test_rtl_graph runs them)."""
    from test_rtl_graph import wide_gcn

    import rtl.cosim
    from onespike import rtlcli
    from onespike.cli import main
    from rtl.accel_sim import input_capacity

    snn, x = wide_gcn()  # every feature 1: 1.28 M input events > 2^20
    assert input_capacity(snn, x) > 2**20
    art = snn.save(tmp_path / "gcn.safetensors")
    calls = []

    def fake_cosim(snn, x, arch, **kw):
        calls.append(kw)
        return []

    monkeypatch.setattr(rtl.cosim, "cosim", fake_cosim)
    monkeypatch.setattr(rtlcli, "_graph_features", lambda snn, data: x)
    js = tmp_path / "c.json"
    assert main(["cosim", str(art), "-o", str(tmp_path / "c"), "--json", str(js)]) == 0
    err = capsys.readouterr().err
    assert "does not run this network" in err and "2^20 addresses" in err
    assert len(calls) == 1 and calls[0]["layers"] is None
    assert json.loads(js.read_text())["flow"] == "layers"


@pytest.mark.slow
def test_residual_net_through_the_accelerator() -> None:
    """A tiny ResNet (identity and option-A shortcuts: two-source layers merged per phase,
    group 0 first; events without fan-out) under Verilator, P = 4."""
    from test_rtl_residual import tiny_resnet

    snn, x = tiny_resnet("optionA")
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    rep = check_run(snn, x[:2], arch, "verilator", "accel_residual")
    assert sum(len(snn.layers[r.index].synapses) == 2 for r in rep.layers) == 2


# --------------------------------------------------------------------------------------------
# the blocks alone (Amaranth's simulator; no Verilog simulator needed)
# --------------------------------------------------------------------------------------------


async def collect_stream(ctx, merge, cycles: int) -> list[tuple]:
    """Start the merger (and the readers wired to its ``start``) and take its stream for
    ``cycles`` cycles: (valid, index, phase, group, end) per cycle."""
    ctx.set(merge.start, 1)
    await ctx.tick()
    ctx.set(merge.start, 0)
    ctx.set(merge.o.ready, 1)
    got = []
    for _ in range(cycles):
        valid, word = ctx.get(merge.o.valid), ctx.get(merge.o.payload)
        got.append((valid, word.index, word.phase, word.group, word.end))
        await ctx.tick()
    return got


def assert_stream(got: list[tuple], want: list[tuple]) -> None:
    """``want``'s (phase, group, index) in every cycle, no bubble, then the end marker
    once."""
    n = len(want)
    assert all(v == 1 for v, *_ in got[: n + 1])  # no bubble, then the end marker
    assert [(p, g, j) for _, j, p, g, _ in got[:n]] == want
    assert got[n][4] == 1 and all(v == 0 for v, *_ in got[n + 1 :])


def test_buffers_readers_and_merger_stream_without_bubbles() -> None:
    """Two buffers written in phase order, read back through registered-read memories: the
    merged stream offers an event in every cycle until the end marker (sent once), phase by
    phase with group 0 first, and drops phases after K."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.sim import Simulator

    from rtl.evbuf import BufferReader, EventBuffer, EventMerger
    from rtl.events import pack_event

    ev = [
        sorted(
            (int(j), int(p))
            for j, p in zip(rng.integers(0, 50, n), rng.integers(0, 6, n), strict=True)
        )  # fmt: skip
        for rng, n in ((np.random.default_rng(1), 23), (np.random.default_rng(2), 17))
    ]
    ev = [sorted(e, key=lambda t: t[1]) for e in ev]  # phase order
    k_last = 4
    m = Module()
    bufs = [EventBuffer(32), EventBuffer(32)]
    rds = [BufferReader(32, k_last), BufferReader(32, k_last)]
    m.submodules.merge = merge = EventMerger(2)
    for g in range(2):
        m.submodules[f"b{g}"], m.submodules[f"r{g}"] = bufs[g], rds[g]
        m.d.comb += [rds[g].count.eq(bufs[g].count), rds[g].data.eq(bufs[g].rd_data),
                     bufs[g].rd_addr.eq(rds[g].addr), rds[g].stop.eq(merge.finished),
                     getattr(merge, f"ex{g}").eq(rds[g].exhausted),
                     rds[g].start.eq(merge.start)]  # fmt: skip
        wiring.connect(m, rds[g].o, getattr(merge, f"i{g}"))
    got = []

    async def bench(ctx) -> None:
        for g in range(2):  # write both buffers
            for j, p in ev[g]:
                ctx.set(bufs[g].w.valid, 1)
                ctx.set(bufs[g].w.payload.as_value(), pack_event(j, p))
                await ctx.tick()
            ctx.set(bufs[g].w.valid, 0)
        got.extend(await collect_stream(ctx, merge, 60))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = sorted([(p, g, j) for g in range(2) for j, p in ev[g] if p <= k_last],
                  key=lambda t: (t[0], t[1]))  # fmt: skip
    assert_stream(got, want)


def test_rail_buffer_banks_by_rail_and_reads_back_as_one_buffer() -> None:
    """A two-rail layer's events, written interleaved (scan order), land in the bank of their
    rail; two readers stream the banks through the merger without a bubble (phase by phase,
    rail 0 first, each with its group bit); the host reads bank 0's events, then bank 1's."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.sim import Simulator

    from rtl.evbuf import BufferReader, EventMerger, RailBuffer
    from rtl.events import pack_event, unpack_event

    boundary, depth = 30, 60
    rng = np.random.default_rng(3)
    ev = sorted(((int(j), int(p)) for j, p in zip(rng.choice(depth, 40, replace=False),
                                                  rng.integers(0, 5, 40), strict=True)),
                key=lambda t: t[1])  # fmt: skip
    m = Module()
    m.submodules.buf = buf = RailBuffer(depth, boundary)
    m.submodules.merge = merge = EventMerger(2)
    for g in range(2):
        m.submodules[f"r{g}"] = rd = BufferReader(buf.banks[g])
        port = {k: getattr(buf, f"r{g}_{k}") for k in ("addr", "data", "count")}
        m.d.comb += [rd.count.eq(port["count"]), rd.data.eq(port["data"]), rd.start.eq(merge.start),
                     port["addr"].eq(rd.addr), rd.stop.eq(merge.finished),
                     getattr(merge, f"ex{g}").eq(rd.exhausted)]  # fmt: skip
        wiring.connect(m, rd.o, getattr(merge, f"i{g}"))
    got, host = [], []

    async def bench(ctx) -> None:
        for j, p in ev:
            ctx.set(buf.w.valid, 1)
            ctx.set(buf.w.payload.as_value(), pack_event(j, p))
            await ctx.tick()
        ctx.set(buf.w.valid, 0)
        assert ctx.get(buf.count) == len(ev) and not ctx.get(buf.overflow)
        for a in range(len(ev)):  # the host's registered read: the word after the edge
            ctx.set(buf.rd_addr, a)
            await ctx.tick()
            host.append(unpack_event(ctx.get(buf.rd_data))[:2])
        ctx.set(buf.rd_addr, 0)
        got.extend(await collect_stream(ctx, merge, len(ev) + 3))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert host == [e for e in ev if e[0] < boundary] + [e for e in ev if e[0] >= boundary]
    want = sorted([(p, int(j >= boundary), j) for j, p in ev], key=lambda t: (t[0], t[1]))
    assert_stream(got, want)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_accelerator_plan_and_register_map(digits_snn) -> None:
    """Buffer depths are golden's worst case; the register map; the other dataflow refused."""
    from rtl.accelerator import Accelerator, layer_register

    snn, _ = digits_snn
    acc = Accelerator(snn, hwsim.ArchConfig())
    acc._MustUse__silence = True  # (not elaborated here: the co-simulation tests build it)
    depths = [p.depth for p in acc.layers]
    assert depths == [64 * snn.layers[0].T, 512, 128, 256, 64, 0]
    assert acc.registers[0] == "status" and acc.registers[2] == "cycles"
    assert acc.registers[layer_register(3, "adds")] == "adds@3"
    assert acc.registers[layer_register(2, "events")] == "events@2"
    with pytest.raises(ValueError, match="potential_sram"):
        Accelerator(snn, hwsim.ArchConfig(dataflow="output_stationary"))


def test_cosim_command_names_the_mismatch(digits_snn, tmp_path, capsys, monkeypatch) -> None:
    """A mismatch of the accelerator run (stubbed: a report whose layer 2 lost a spike) prints
    the layer, the first neuron and the phase, and exits 1."""
    import rtl.accel_sim
    from onespike.cli import main
    from rtl.accel_sim import AccelLayerReport, AccelReport

    require_simulator("icarus")  # (the command checks the simulator before the run)
    snn, _ = digits_snn
    art = snn.save(tmp_path / "digits.safetensors")
    err = "layer 2 (pool) image 0: first difference at neuron 17 phase 3; lost [(17, 3)]"

    def fake(snn, arch, x, sim, out_dir):
        layers = [AccelLayerReport(i, lay.name, lay.kind, i != 2, [10], [10],
                                   errors=[err] if i == 2 else [])
                  for i, lay in enumerate(snn.layers) if i]  # fmt: skip
        return AccelReport(layers, [0], [61], [11], 0.5, 0.0, 0.0, 1.0, [], [61], sim)

    monkeypatch.setattr(rtl.accel_sim, "accel_cosim", fake)
    js = tmp_path / "c.json"
    argv = ["cosim", str(art), "--images", "1", "--sim", "icarus", "-o", str(tmp_path / "c")]
    assert main([*argv, "--json", str(js)]) == 1
    assert f"MISMATCH: {err}" in capsys.readouterr().out
    rep = json.loads(js.read_text())
    assert rep["ok"] is False and [r["spikes_match"] for r in rep["layers"]][1] is False
