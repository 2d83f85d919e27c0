"""rtl.os_sort.SortingBuckets: a producer's events in any order, bucketed by (phase, pixel)
with a counting sort in n + E + 3 cycles (docs/architecture.md §11, "Bucketing a producer's
events"), read back through its index and event-memory ports."""

from __future__ import annotations

import numpy as np
import pytest

from hwsim.sim import PREFIX_WIDTH, bucket_cycles


def _reference(events, phases, shape):
    """The runs and entries of the same events bucketed by (phase, pixel), each run's events
    in arrival order: {key: [(c, x, sign), ...]}."""
    _, h, w = shape
    runs = {k: [] for k in range(phases * h * w)}
    for idx, ph, sign in events:
        if ph < phases:
            pix = idx % (h * w)
            runs[ph * h * w + pix].append((idx // (h * w), pix % w, sign))
    return runs


def _bench(images, phases, shape, capacity, gaps, abandon=(), width=PREFIX_WIDTH):
    from amaranth.sim import Simulator

    from rtl.os_blocks import event_entry
    from rtl.os_sort import SortingBuckets

    c, h, w = shape
    dut = SortingBuckets(capacity, phases, shape, event_entry(c, w), width=width)
    seen = []

    async def bench(ctx) -> None:
        for events, wait in abandon:  # images given up: load dropped `wait` cycles after the end
            ctx.set(dut.load, 1)
            for idx, ph, sign in events:
                ctx.set(dut.i.payload, {"index": idx, "phase": ph, "sign": sign})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.payload, {"end": 1})
            for _ in range(wait):
                await ctx.tick()
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.load, 0)
            await ctx.tick()
        for events in images:
            ctx.set(dut.load, 1)
            for t, (idx, ph, sign) in enumerate(events):
                ctx.set(dut.i.valid, 0)
                for _ in range(gaps[t % len(gaps)]):
                    await ctx.tick()
                ctx.set(dut.i.payload, {"index": idx, "phase": ph, "sign": sign})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.payload, {"end": 1})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            got = {"cycles": ctx.get(dut.sort_cycles), "count": ctx.get(dut.count),
                   "error": ctx.get(dut.error), "runs": {}}  # fmt: skip
            for k in range(phases * h * w):
                ctx.set(dut.idx_a, k)
                await ctx.tick()
                run = ctx.get(dut.run_a)
                entries = []
                for a in range(run.start, run.end):
                    ctx.set(dut.ev_addr, a)
                    await ctx.tick()
                    ev = ctx.get(dut.ev)
                    entries.append((ev.c, ev.x, ev.sign))
                got["runs"][k] = entries
            seen.append(got)
            ctx.set(dut.load, 0)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def _events(rng, shape, phases, n_events, extra_phases=0):
    """Distinct neurons, one spike each (one-spike coding), phases up to phases + extra."""
    size = int(np.prod(shape))
    idx = rng.choice(size, n_events, replace=False)
    ph = rng.integers(0, phases + extra_phases, n_events)
    sign = rng.integers(0, 2, n_events)
    return [(int(a), int(b), int(s)) for a, b, s in zip(idx, ph, sign, strict=True)]


@pytest.mark.parametrize("width", [PREFIX_WIDTH, 1, 4])
def test_any_order_is_bucketed_by_phase_and_pixel_in_the_modelled_cycles(width) -> None:
    """Two images (the counters cleared between them), back-to-back events and gaps, runs of
    one bucket back to back (the transparent counter and pointer reads), events of phases the
    consumer never reads dropped, and an image without events."""
    rng = np.random.default_rng(3)
    shape, phases = (3, 2, 3), 4
    first = _events(rng, shape, phases, 14, extra_phases=1)
    first += [(1, 2, 0), (7, 2, 0), (13, 2, 1)]  # pixel 1, phase 2, three in a row
    second = _events(rng, shape, phases, 18)
    images = [first, second, []]
    seen = _bench(images, phases, shape, capacity=18, gaps=[0, 0, 2, 0, 1], width=width)
    n = phases * shape[1] * shape[2]
    for events, got in zip(images, seen, strict=True):
        kept = sum(ph < phases for _, ph, _ in events)
        assert got["error"] == 0 and got["count"] == kept
        # ⌈n / k⌉ + 1 prefix cycles, E + 2 scatter cycles
        assert got["cycles"] == -(-n // width) + kept + 3
        if width == PREFIX_WIDTH:
            assert got["cycles"] == bucket_cycles(n, kept)
        assert got["runs"] == _reference(events, phases, shape)


def test_more_events_than_capacity_set_error_and_keep_the_first() -> None:
    rng = np.random.default_rng(5)
    shape, phases = (2, 2, 2), 2
    events = _events(rng, shape, phases, 6)
    (got,) = _bench([events], phases, shape, capacity=4, gaps=[0])
    assert got["error"] == 1 and got["count"] == 4
    assert got["runs"] == _reference(events[:4], phases, shape)
    assert got["cycles"] == bucket_cycles(phases * 4, 4)


@pytest.mark.parametrize("wait", [0, 3, 40])
def test_an_abandoned_image_leaves_no_count_behind(wait) -> None:
    """Load dropped while collecting (wait 0: the end marker never taken), in the prefix pass
    (3) and in the scatter pass (40 > 24 buckets): the next image is sorted as if alone."""
    rng = np.random.default_rng(11)
    shape, phases = (3, 2, 3), 4
    first, second = _events(rng, shape, phases, 12), _events(rng, shape, phases, 9)
    (got,) = _bench([second], phases, shape, capacity=18, gaps=[0], abandon=[(first, wait)])
    assert got["runs"] == _reference(second, phases, shape) and got["count"] == 9
    assert got["cycles"] == bucket_cycles(phases * 6, 9)


@pytest.mark.parametrize("shape", [(5, 1, 1)])
def test_a_flat_source_has_one_bucket_per_phase(shape) -> None:
    rng = np.random.default_rng(9)
    events = _events(rng, shape, 3, 5)
    (got,) = _bench([events], 3, shape, capacity=5, gaps=[0])
    assert got["runs"] == _reference(events, 3, shape) and got["cycles"] == bucket_cycles(3, 5)


@pytest.mark.slow
def test_sorting_buckets_verilog_lints_clean(tmp_path) -> None:
    """`verilator --lint-only -Wall` with the generated waivers is clean on the block."""
    from amaranth.back import verilog
    from conftest import assert_lints_clean, require_simulator

    from rtl.generate import VERILATOR_WAIVERS
    from rtl.os_blocks import event_entry
    from rtl.os_sort import SortingBuckets

    require_simulator("verilator")
    dut = SortingBuckets(64, 4, (3, 4, 4), event_entry(3, 4))
    (tmp_path / "sorting_buckets.v").write_text(verilog.convert(dut, name="sorting_buckets"))
    (tmp_path / "verilator.vlt").write_text(VERILATOR_WAIVERS)
    assert_lints_clean(tmp_path / "sorting_buckets.v", tmp_path / "verilator.vlt")


@pytest.mark.parametrize("stall_rate", [0.0, 0.5])
def test_sorted_stream_reads_the_event_memory_out_in_order(stall_rate) -> None:
    """rtl.os_pool.SortedStream: the sort's event memory, addresses 0 … count − 1, out as a
    stream (index, phase, sign as the phase sort keeps them), one event per cycle while the
    stream takes them, its first item two cycles after ``start`` with ``first`` high, then
    the end marker without a gap; the item is held while the stream stalls."""
    from amaranth.sim import Simulator

    from rtl.os_pool import SortedStream, pool_entry

    rng = np.random.default_rng(7)
    mem = [(int(rng.integers(0, 200)), int(rng.integers(0, 6)), int(rng.integers(0, 2)))
           for _ in range(23)]  # fmt: skip
    dut = SortedStream(32, pool_entry(200, 6))
    stalls = rng.random(200) < stall_rate
    got, trace = [], []

    async def memory(ctx) -> None:  # a registered read of the event memory
        async for _, _, addr in ctx.tick().sample(dut.ev_addr):
            c, ph, s = mem[min(addr, len(mem) - 1)]
            ctx.set(dut.ev, {"c": c, "phase": ph, "sign": s})

    async def bench(ctx) -> None:
        ctx.set(dut.count, len(mem))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(200):
            ready = not stalls[cycle]
            ctx.set(dut.o.ready, ready)
            valid, item = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
            trace.append((valid, ready, ctx.get(dut.first), ctx.get(dut.finished)))
            if valid and ready:
                if item.end:
                    got.append("end")
                    break
                got.append((item.index, item.phase, item.sign))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(memory)
    sim.add_testbench(bench)
    sim.run()
    assert got == [*mem, "end"]
    valid = [v for v, *_ in trace]
    # (the trace starts in the cycle after start's)
    assert valid[:2] == [0, 1] and trace[1][2] == 1 and sum(f for *_, f, _ in trace) == 1
    first = valid.index(1)
    assert all(valid[first:]), "a gap in the stream"
    assert trace[-1][3] == 1  # finished with the end marker's transfer
    if stall_rate == 0:
        assert len(trace) == 1 + len(mem) + 1


def test_os_max_pool_sorts_then_pools_in_the_modelled_sort_cycles() -> None:
    """rtl.os_pool.OsMaxPool on shuffled events of two images: each window fires at the
    smallest phase of its events (the §5 engine fed phase after phase), and the sort takes
    hwsim.sim.bucket_cycles(T_src, E) cycles (one bucket per phase)."""
    from amaranth.sim import Simulator

    import hwsim
    from rtl.maxpool import PoolImage
    from rtl.os_pool import OsMaxPool

    image = PoolImage((2, 4, 4), (2, 2, 2), (2, 2), (2, 2), (0, 0), 5)
    dut = OsMaxPool(hwsim.ArchConfig(dataflow="output_stationary"), image)
    rng = np.random.default_rng(3)
    images = [_events(rng, image.src_shape, 5, n) for n in (19, 7)]
    seen = []

    async def bench(ctx) -> None:
        ctx.set(dut.o_spikes.ready, 1)
        for events in images:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            out = []
            for idx, ph, sign in [*events, (None, 0, 0)]:
                ctx.set(dut.i_events.payload, {"end": 1} if idx is None else
                        {"index": idx, "phase": ph, "sign": sign})  # fmt: skip
                ctx.set(dut.i_events.valid, 1)
                await ctx.tick().until(dut.i_events.ready)
            ctx.set(dut.i_events.valid, 0)
            while not ctx.get(dut.done):
                if ctx.get(dut.o_spikes.valid):
                    out.append((ctx.get(dut.o_spikes.payload.index),
                                ctx.get(dut.o_spikes.payload.phase)))  # fmt: skip
                await ctx.tick()
            seen.append((out, ctx.get(dut.sort_cycles), ctx.get(dut.error)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for events, (out, cycles, error) in zip(images, seen, strict=True):
        first = {}
        for idx, ph, _ in events:
            c, y, x = idx // 16, (idx // 4) % 4, idx % 4
            win = c * 4 + (y // 2) * 2 + x // 2
            first[win] = min(first.get(win, ph), ph)
        assert sorted(out) == sorted(first.items())
        assert [p for _, p in out] == sorted(p for _, p in out)  # pushed phase after phase
        assert cycles == bucket_cycles(5, len(events)) and not error
