"""The whole network on the output-stationary accelerator (rtl.os_accel.OsAccelerator)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import BUILD, assert_lints_clean, require_simulator
from test_rtl_accelerator import check_run, digits_snn  # noqa: F401  (the module fixture)

import hwsim
from archspec.config import ArchConfig


@pytest.mark.slow
def test_digits_through_the_output_stationary_accelerator(digits_snn) -> None:  # noqa: F811
    """The digits net on os16 (weight buffer, max pooling behind its phase sort) under
    Verilator, 3 images: the input through the AXI port into the first layer's sort, one
    start, one wait for done; every layer's spikes equal golden int's, every engine's cycles
    and counters hwsim's; the top lints clean."""
    snn, x = digits_snn
    arch = ArchConfig.preset("os16")
    rep = check_run(snn, x[3:6], arch, "verilator", "os_accel_digits")
    assert [r.kind for r in rep.layers] == ["neuron", "maxpool", "neuron", "neuron", "output"]
    vdir = BUILD / "os_accel_digits" / "verilog"
    assert_lints_clean(vdir / "onespike_accel.v", vdir / "verilator.vlt")


@pytest.mark.slow
def test_cosim_command_runs_the_output_stationary_accelerator(digits_snn, tmp_path) -> None:  # noqa: F811
    """`onespike cosim ART --preset os16` runs the whole output-stationary accelerator by
    default (here under Icarus, one image) and writes the --json object; the total cycles
    are hwsim's image latency, sorts included."""
    import json

    from onespike.cli import main

    require_simulator("icarus")
    snn, _ = digits_snn
    art = snn.save(tmp_path / "digits.safetensors")
    js = tmp_path / "c.json"
    argv = ["cosim", str(art), "--preset", "os16", "--images", "1", "--sim", "icarus"]
    assert main([*argv, "-o", str(tmp_path / "c"), "--json", str(js)]) == 0
    rep = json.loads(js.read_text())
    assert rep["flow"] == "accelerator" and rep["ok"] is True
    assert [r["name"] for r in rep["layers"]] == [lay.name for lay in snn.layers[1:]]
    assert all(r["spikes_match"] and r["rtl_cycles"] == r["hwsim_cycles"] for r in rep["layers"])
    hw = hwsim.simulate(snn, golden_inputs(snn, 1), ArchConfig.preset("os16"))
    assert rep["total_cycles"] == rep["hwsim_total_cycles"] == hw.image_cycles.tolist()


def golden_inputs(snn, n: int):
    """The first ``n`` images the CLI takes for ``snn`` (its data set)."""
    from onespike.simreport import load_images

    return load_images(snn, None, n)[0]


@pytest.mark.slow
def test_residual_net_through_the_output_stationary_accelerator() -> None:
    """A tiny ResNet (ResNet-20's block types: identity and option-A shortcuts) under
    Verilator, P = 4: a shortcut's source feeds two sorts (the next layer's conv group and
    the residual layer's shortcut group), the residual layer's groups are filled by two
    producers at different times."""
    from test_rtl_residual import tiny_resnet

    snn, x = tiny_resnet("optionA")
    arch = dataclasses.replace(ArchConfig.preset("os16"), lanes=4, output_queue_depth=4)
    rep = check_run(snn, x[:2], arch, "verilator", "os_accel_residual")
    assert sum(len(snn.layers[r.index].synapses) == 2 for r in rep.layers) == 2


def test_output_stationary_accelerator_refuses_by_name(digits_snn) -> None:  # noqa: F811
    """The other dataflow, a graph layer and a max pooling of a max pooling are refused with
    the layer and the reason; rtl.accelerator.refusal gives the same reason."""
    import torch
    from test_rtl_graph import small_gcn
    from torch import nn

    from converter import ConversionConfig, convert
    from rtl.accelerator import refusal
    from rtl.os_accel import OsAccelerator

    snn, _ = digits_snn
    with pytest.raises(ValueError, match="runs the output_stationary dataflow"):
        OsAccelerator(snn, ArchConfig())
    arch = ArchConfig.preset("os16")
    gcn, _ = small_gcn()
    why = refusal(gcn, arch)
    assert why is not None and "layer 2 (" in why and "['graph', 'graph']" in why
    with pytest.raises(ValueError, match=r"layer 2 .*\['graph', 'graph'\]"):
        OsAccelerator(gcn, arch)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))  # fmt: skip
    pools = convert(net, torch.rand(8, 1, 8, 8), ConversionConfig(T=4), progress=False)
    why = refusal(pools, arch)
    assert why is not None and "a max pooling of a max pooling" in why
    acc = OsAccelerator(snn, arch)
    acc._MustUse__silence = True  # (not elaborated here)
    assert acc.consumers[0] == [(1, 0)] and acc.consumers[1] == [(2, 0)]


def test_fork_gives_each_consumer_each_item_once() -> None:
    """EventFork: consumers that take an item in different cycles each take it once, in
    order, with their own group bit; the item leaves when the last has taken it."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator

    from rtl.events import pack_event
    from rtl.os_link import EventFork

    m = Module()
    m.submodules.fork = fork = EventFork((0, 1))
    items = [pack_event(j, j % 3) for j in range(6)] + [pack_event(0, 0, end=1)]
    got: dict[int, list] = {0: [], 1: []}
    ready = {0: [1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1: [0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]}

    async def bench(ctx) -> None:
        j = 0
        for cyc in range(40):
            ctx.set(fork.i.valid, j < len(items))
            ctx.set(fork.i.payload.as_value(), items[j] if j < len(items) else 0)
            for k in (0, 1):
                o = getattr(fork, f"o{k}")
                ctx.set(o.ready, ready[k][cyc] if cyc < len(ready[k]) else 1)
            took = {k: ctx.get(getattr(fork, f"o{k}").valid) and ctx.get(
                getattr(fork, f"o{k}").ready) for k in (0, 1)}  # fmt: skip
            for k in (0, 1):
                if took[k]:
                    got[k].append(ctx.get(getattr(fork, f"o{k}").payload.as_value()))
            if j < len(items) and ctx.get(fork.i.ready):
                j += 1
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for k in (0, 1):  # (the group bit is bit 27 of the event word)
        assert [w & ~(1 << 27) for w in got[k]] == items, k  # each once, in order
        assert all((w >> 27) & 1 == k for w in got[k])


def test_host_input_seals_sorts_and_waits_for_quiet_sorts() -> None:
    """OsHostInput: a new image's first beat empties the sorts (tready low meanwhile), the
    beats pass while the sorts take them, tlast is followed by the end marker (held until
    the sorts take it); start runs once the input is sorted and no sort is clearing its
    counters; a start with no beat empties, seals and runs an image without events."""
    from amaranth.sim import Simulator

    from rtl.os_link import OsHostInput

    dut = OsHostInput()

    async def bench(ctx) -> None:
        async def cycle(**drive) -> dict:
            for k, v in drive.items():
                ctx.set(getattr(dut, k), v)
            got = {k: ctx.get(getattr(dut, k)) for k in ("tready", "clear", "run")}
            w = dut.w
            got["w"] = (ctx.get(w.valid), ctx.get(w.payload.end), ctx.get(w.payload.index))
            await ctx.tick()
            return got

        ctx.set(dut.w.ready, 1)
        first = await cycle(tvalid=1, tdata=5, tlast=0)
        assert first["clear"] == 0 and first["tready"] == 0
        second = await cycle()
        assert second["clear"] == 1 and second["tready"] == 0  # the sorts are emptied first
        for j, last in ((5, 0), (6, 0), (7, 1)):
            got = await cycle(tvalid=1, tdata=j, tlast=last)
            assert got["tready"] == 1 and got["w"] == (1, 0, j)
        ctx.set(dut.tvalid, 0)
        ctx.set(dut.w.ready, 0)  # the sorts are still sorting: the end marker waits
        for _ in range(3):
            assert (await cycle())["w"][:2] == (1, 1)
        ctx.set(dut.w.ready, 1)
        assert (await cycle())["w"][:2] == (1, 1)  # taken
        runs = [(await cycle(start=int(k == 0), quiet=0))["run"] for k in range(4)]
        assert runs == [0, 0, 0, 0]  # a sort is still clearing its counters
        ctx.set(dut.start, 0)
        assert (await cycle(quiet=1))["run"] == 1
        assert (await cycle())["run"] == 0
        await cycle(start=1)  # no beat since the run: an empty image
        ctx.set(dut.start, 0)
        seen = [await cycle() for _ in range(4)]
        assert seen[0]["clear"] == 1 and seen[1]["w"][:2] == (1, 1)
        assert [g["run"] for g in seen] == [0, 0, 1, 0]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
