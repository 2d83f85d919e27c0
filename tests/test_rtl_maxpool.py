"""The rtl max-pooling engine on floor-mode borders: source pixels in no window (an odd map
pooled 2 × 2 / 2, kernel < stride) cost their I issue cycles only, as hwsim counts them."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import assert_lints_clean, check_layers, require_simulator
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import golden
import hwsim
from converter import ConversionConfig, convert
from rtl.maxpool import PoolImage

CFG = ConversionConfig(T=4, Q=1.5, T_w=1, T_in=3)


@functools.cache
def pool_net(size: int, kernel: int, stride: int, seed: int = 0):
    """Conv 3 × 3 (pad 1, 4 channels) on 1 × size × size, max pool ``kernel`` / ``stride``
    (floor mode), linear output of 3 classes; (snn, index of the max pool, test images)."""
    g = torch.Generator().manual_seed(seed)
    out = (size - kernel) // stride + 1
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(kernel, stride=stride),
        nn.Flatten(), nn.Linear(4 * out * out, 3),
    )  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.rand(20, 1, size, size, generator=g)
    snn = convert(net, x[:16], CFG, progress=False)
    (pool,) = [i for i, lay in enumerate(snn.layers) if lay.kind == "maxpool"]
    return snn, pool, x[16:]


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "arch", "stall_rate"),
    [
        (7, 2, 2, {}, 0.0),  # the default latencies (I = 1): last row and column in no window
        (3, 2, 2, dict(event_issue_cycles=2), 0.0),  # 3 × 3 map: one window, 5 pixels in none
        (8, 2, 3, dict(event_issue_cycles=3, lanes=1, output_queue_depth=2), 0.0),  # k < s
        (5, 2, 3, dict(lanes=1, output_queue_depth=2), 0.7),  # I = 1, back-pressure
    ],
)
def test_floor_mode_borders_match_golden_and_hwsim(size, kernel, stride, arch, stall_rate):
    """The max pool's engine under ``SIM`` (Icarus by default), fed golden's source spikes:
    its spikes equal golden int's, its cycles and counters hwsim's, per image."""
    snn, pool, x = pool_net(size, kernel, stride)
    assert PoolImage.from_snn(snn, pool).has_events_without_fanout()
    assert _spikes_in_no_window(snn, pool, x) > 0
    stalls = hwsim.stall_pattern(seed=size, rate=stall_rate, length=29) if stall_rate else None
    cfg = hwsim.ArchConfig(**{"lanes": 4, **arch})
    name = f"maxpool_floor_{size}_{kernel}_{stride}_i{cfg.event_issue_cycles}"
    (rep,) = check_layers(snn, x, [pool], cfg, name, stalls=stalls)
    assert rep.spikes_rtl == rep.spikes_golden > 0
    assert rep.rtl_cycles == rep.hwsim_cycles


@pytest.mark.parametrize(("size", "kernel", "stride"), [(7, 2, 2), (8, 2, 3)])
def test_floor_mode_borders_through_the_accelerator(size, kernel, stride) -> None:
    """The whole net as one top under Icarus, default latencies (I = 1): spikes and their
    buffer order equal golden's and hwsim's, every engine's cycles hwsim's, and so does the
    controller's total (the max pool's busy may now fall in the issue state, which found the
    end marker: the next engine still starts as docs/architecture.md §14 says)."""
    from test_rtl_accelerator import check_run

    snn, _, x = pool_net(size, kernel, stride)
    arch = hwsim.ArchConfig(lanes=4, output_queue_depth=4)
    check_run(snn, x[:2], arch, "icarus", f"accel_maxpool_floor_{size}_{kernel}_{stride}")


def _spikes_in_no_window(snn, pool: int, x) -> int:
    """golden int's spikes of the max pool's source at pixels that belong to no window."""
    from rtl.engine import tap_mask

    img = PoolImage.from_snn(snn, pool)
    _, h, w = img.src_shape
    ph = golden.run(snn, x, "int", device="cpu").spikes[snn.layers[pool].source]
    ph = np.asarray(ph).reshape(len(x), -1, h, w)
    orphan = [[not any(tap_mask(y, xx, img.kernel, img.stride, img.padding, img.out_shape))
               for xx in range(w)] for y in range(h)]  # fmt: skip
    return int(((ph >= 0) & np.array(orphan)).sum())


def test_default_presets_elaborate_and_lint(tmp_path) -> None:
    """No refusal is left: the shipped presets (I = 1) build a floor-mode max pool, whose
    Verilog is clean under ``verilator --lint-only -Wall`` with the waivers."""

    from rtl import generate_verilog

    snn, pool, _ = pool_net(7, 2, 2)
    files = []
    for preset in ("default", "p4", "p16", "p64"):
        arch = hwsim.ArchConfig.preset(preset)
        assert arch.event_issue_cycles == 1
        files += generate_verilog(snn, arch, tmp_path / preset, layer=pool)
    require_simulator("verilator")
    for f in files:
        assert_lints_clean(f, f.parent / "verilator.vlt")


# --------------------------------------------------------------------------------------------
# the engine alone in Amaranth's simulator against hwsim's kernel (no Verilog simulator)
# --------------------------------------------------------------------------------------------


def _hwsim_pool(img: PoolImage, events, issue: int, depth: int, blocked):
    """hwsim's max-pooling kernel on one image: (cycles, stalled, {(window, phase)})."""
    from types import SimpleNamespace

    from archspec.fanout import maxpool_fanout
    from hwsim import kernels as K

    lay = SimpleNamespace(channels=img.out_shape[0], shape=img.out_shape, kernel=img.kernel,
                          stride=img.stride, padding=img.padding)  # fmt: skip
    fan = maxpool_fanout(lay, SimpleNamespace(shape=img.src_shape))
    ptr = np.searchsorted([k for _, k in events], np.arange(img.t_src + 1)).astype(np.int64)
    lat = np.array([issue, 0, 0, 1, depth], np.int64)
    phase = np.zeros((1, img.n_out), np.int16)
    stats = np.zeros((1, K.N_STATS), np.int64)
    K.maxpool_layer(
        ptr, np.array([j for j, _ in events], np.int64), fan.ptr, fan.tgt, img.t_src, lat,
        np.asarray(blocked, np.bool_), phase, np.zeros((1, K.N_ACTIONS), np.int64), stats,
        np.zeros((1, img.t_src, 2), np.int64),
    )  # fmt: skip
    fired = {(j, int(k)) for j, k in enumerate(phase[0]) if k >= 0}
    return int(stats[0, K.BUSY] + stats[0, K.STALLED]), int(stats[0, K.STALLED]), fired


def _rtl_pool(img: PoolImage, events, issue: int, depth: int, blocked):
    """The engine under Amaranth's simulator, its input stream never dry and its output
    back-pressured by ``blocked`` (indexed by its cycle counter, as the benches do)."""
    from amaranth.sim import Simulator

    from rtl.events import pack_event, unpack_event
    from rtl.maxpool import MaxPoolEngine

    arch = hwsim.ArchConfig(lanes=1, output_queue_depth=depth, event_issue_cycles=issue,
                            input_queue_depth=len(events) + 1)  # fmt: skip
    dut = MaxPoolEngine(arch, img)
    words = [pack_event(j, k) for j, k in events] + [pack_event(0, 0, end=1)]
    got: dict = {"spikes": []}

    async def bench(ctx) -> None:
        for w in words:  # fill the input queue before the start (hwsim's never runs dry)
            ctx.set(dut.i_events.valid, 1)
            ctx.set(dut.i_events.payload.as_value(), w)
            await ctx.tick()
        ctx.set(dut.i_events.valid, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(50 * len(words) + 100):
            ready = not blocked[ctx.get(dut.cycles) % len(blocked)] if len(blocked) else True
            ctx.set(dut.o_spikes.ready, ready)
            if ready and ctx.get(dut.o_spikes.valid):
                got["spikes"].append(unpack_event(ctx.get(dut.o_spikes.payload.as_value())))
            if ctx.get(dut.done):
                break
            await ctx.tick()
        got["cycles"], got["stalled"] = ctx.get(dut.cycles), ctx.get(dut.stalled)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    fired = {(j, k) for j, k, _, _ in got["spikes"]}
    assert len(fired) == len(got["spikes"]), "a window fired twice"
    return got["cycles"], got["stalled"], fired


@st.composite
def pool_cases(draw):
    """A pooling geometry (floor mode; kernel < stride allowed), spiking-layer events (each
    source neuron at most once, in phase order), I, D_out and a back-pressure pattern."""
    c, h, w = draw(st.integers(1, 2)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    py, px = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    ho, wo = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    assume(ho >= 1 and wo >= 1)
    t_src = draw(st.integers(1, 3))
    img = PoolImage((c, h, w), (c, ho, wo), (kh, kw), (sy, sx), (py, px), t_src)
    n = c * h * w
    src = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=min(n, 12)))
    events = sorted(((j, draw(st.integers(0, t_src - 1))) for j in src), key=lambda e: e[1])
    blocked = draw(st.lists(st.booleans(), max_size=6))
    blocked += [False] if blocked else []  # some cycle must pop, or the drain never ends
    return img, events, draw(st.integers(1, 3)), draw(st.integers(1, 2)), blocked


@settings(max_examples=40, deadline=None)
@given(pool_cases())
def test_engine_matches_hwsim_kernel(case) -> None:
    """Cycles, stalls and fired windows (with their phases) equal hwsim's for any geometry,
    events without fan-out included, with I = 1…3 and back-pressure."""
    img, events, issue, depth, blocked = case
    assert _rtl_pool(img, events, issue, depth, blocked) == _hwsim_pool(
        img, events, issue, depth, blocked
    )


def test_last_event_without_fanout_ends_the_layer_at_once() -> None:
    """I = 1: after an event in no window, the next cycle sees the end marker and is the
    drain's (here empty) first cycle: the event costs its issue cycle only."""
    img = PoolImage((1, 3, 3), (1, 1, 1), (2, 2), (2, 2), (0, 0), t_src=1)
    events = [(0, 0), (8, 0)]  # pixel (0, 0): window 0; pixel (2, 2): no window
    for issue in (1, 2):
        # I (window 0's event) + 1 (its test, a push) + I (no window); the push is popped
        # meanwhile, so the drain takes no cycle
        want = (2 * issue + 1, 0, {(0, 0)})
        assert _hwsim_pool(img, events, issue, 1, []) == want
        assert _rtl_pool(img, events, issue, 1, []) == want
