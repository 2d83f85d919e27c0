"""Tests of the output-stationary dataflow (docs/architecture.md §11), the CACTI memory
prices (archspec.memcost, hwsim.energy) and the int8 MAC-array baseline (hwsim.ann)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hwsim import ARCH, check_agrees, cycles, drawn_snn, make_snn, tiny_snn

import hwsim
from archspec.config import COSTED_ACTIONS, DATAFLOWS
from archspec.memcost import sram
from converter.ops import ann_ops
from hwsim import energy as E
from hwsim.ann import ann_array

pytestmark = pytest.mark.usefixtures("one_thread")

OS = dataclasses.replace(ARCH, dataflow="output_stationary")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
    lanes=st.sampled_from([1, 3, 16, 64]),
    dataflow=st.sampled_from(DATAFLOWS),
    wbuf=st.sampled_from([0.0, 0.5]),
)
def test_random_nets_agree_with_golden_in_both_dataflows(
    seed, c, stride, pad, pool, residual, T, tw, T_in, acc_bits, lanes, dataflow, wbuf
) -> None:
    cfg = dict(T=T, T_w=tw, T_in=T_in, acc_bits=acc_bits, Q=1.3 if T > 4 else 1.7)
    snn, x = drawn_snn(seed, dict(c=c, stride=stride, pad=pad, pool=pool, residual=residual), cfg)
    arch = dataclasses.replace(hwsim.ArchConfig(), lanes=lanes, dataflow=dataflow,
                               output_queue_depth=max(64, lanes),
                               weight_buffer_kib=wbuf)  # fmt: skip
    check_agrees(snn, x, arch)
    if dataflow == "output_stationary":
        r = hwsim.simulate(snn, x, arch)
        for i, lay in enumerate(snn.layers):
            if lay.kind in ("neuron", "output"):
                # the lane registers are as wide as the layer's bound, and the bound holds
                assert 2 <= r.potential_bits[i] <= acc_bits
                assert r.potential_peak[i] <= 2 ** (int(r.potential_bits[i]) - 1) - 1
                assert np.prod(r.tile_shapes[i]) <= lanes


@pytest.mark.parametrize("mode", ["layer", "pipelined"])
def test_dataflows_give_the_same_spikes_and_adds(mode) -> None:
    snn, x = make_snn(5, dict(c=3, stride=1, pad=1, pool="max", residual=True), dict(T=6, T_w=2))
    ps = hwsim.simulate(snn, x, mode=mode)
    os_ = hwsim.simulate(snn, x, hwsim.ArchConfig.preset("os16"), mode=mode)
    for a, b in zip(ps.spikes, os_.spikes, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ps.counts["adds"], os_.counts["adds"])
    neuron = [i for i, k in enumerate(os_.kinds) if k in ("neuron", "output")]
    assert os_.counts["potential_reads"][neuron].sum() == 0
    assert os_.counts["potential_writes"][neuron].sum() == 0
    assert np.all(np.diff(os_.stream_end_cycles) > 0)
    if mode == "pipelined":
        layer = hwsim.simulate(snn, x, hwsim.ArchConfig.preset("os16"))
        assert os_.stream_end_cycles[-1] < layer.stream_end_cycles[-1]


def test_output_stationary_cycles_hand_computed() -> None:
    """The §4 example on the output-stationary engine (docs/architecture.md §11): P = 2, a
    linear layer of 3 neurons in 2 tiles, one input event at phase 0, T_src = T = 2, T_w = 0.

    Start: max(L_a = 2, r + 4 = 5) = 5 (the read pipeline fills once, the first tile's one
    index read and the RTL's pipeline behind it); per tile: load 1, phase 0: max(1 event
    read, 1 index read) + 1 boundary = 2, phase 1: max(0, 1) + 1 = 2 (≥ L_n = 2): 5 per tile;
    the last boundary's L_n = 2: 5 + 5 + 5 + 2 = 17 cycles."""
    snn = tiny_snn([5, 5, 5], [100, 100], t_in=2, T=2, T_w=0)
    r = hwsim.simulate(snn, torch.tensor([[0.5]]), OS)
    assert r.tile_shapes[1] == (2, 1, 1)
    assert cycles(r) == (17, 0, 0)
    assert r.counts["adds"][1] == 3 and r.counts["spikes_in"][1] == 1
    assert r.counts["queue_pops"][1] == 2  # the event is read by both tiles
    assert r.counts["index_reads"][1] == 4  # 2 tiles × 1 source row × 2 input phases
    assert r.counts["threshold_reads"][1] == 3  # 3 channels, loaded once (constant columns)
    assert r.counts["compares"][1] == 6 and r.counts["multiplies"][1] == 3
    assert r.counts["bias_reads"][1] == 3
    # output layer: start 5, one tile: load 1, phase 0 (leak) 2, phase 1 (readout) 2, L_n 2
    assert cycles(r, 2) == (12, 0, 0)
    # the hidden layer's events sorted for the output layer (flat: a bucket per phase):
    # 2 buckets (one counter word: 1 + 1 prefix cycles) + E events + 2 scatter cycles;
    # word accesses: counters E + 1 reads and writes, pointers E reads and E + 1 writes,
    # staging E and E, the index 2 writes: 3 · E + 1 reads, 3 · E + 4 writes
    e = int(r.counts["spikes_out"][1])
    assert hwsim.sim.bucket_cycles(2, e) == 1 + e + 3
    assert r.bucket_cycles.tolist() == [[0, 1 + e + 3, 0]]
    assert r.bucket_reads[1] == 3 * e + 1 and r.bucket_writes[1] == 3 * e + 4
    assert r.image_cycles[0] == 17 + 12 + r.controller_cycles + 1 + e + 3


def test_a_producer_sorts_once_per_way_its_consumers_read() -> None:
    """Conv → max pool → conv → (conv + identity shortcut) → linear → output: the first conv
    is read by max pooling (one bucket per phase), the pooled layer by a convolution and the
    shortcut (one sort into T · H · W buckets, shared), the residual layer by a linear layer
    (T); the input and output layers are not sorted."""
    snn, x = make_snn(5, dict(c=3, stride=1, pad=1, pool="max", residual=True), dict(T=6))
    r = hwsim.simulate(snn, x[:2], hwsim.ArchConfig.preset("os16"))
    pix = [lay.T * lay.shape[1] * lay.shape[2] if len(lay.shape) == 3 else 0 for lay in snn.layers]
    assert [lay.kind for lay in snn.layers] == ["input", "neuron", "maxpool", "neuron", "neuron",
                                                "neuron", "output"]  # fmt: skip
    expect = [[], [6], [pix[2]], [pix[3]], [6], [6], []]
    assert [hwsim.sim.bucketings(snn, i) for i in range(len(snn.layers))] == expect
    for i, sorts in enumerate(expect):
        if not sorts:
            assert r.bucket_cycles[:, i].sum() == 0
            continue
        e = (r.spikes[i].reshape(2, -1) >= 0).sum(1)
        assert r.bucket_cycles[:, i].tolist() == [hwsim.sim.bucket_cycles(sorts[0], v) for v in e]
    assert r.bucket_cycles.sum() > 0
    pipe = hwsim.simulate(snn, x[:2], hwsim.ArchConfig.preset("os16"), mode="pipelined")
    assert pipe.stream_end_cycles[0] == r.image_cycles[0] - r.controller_cycles


def test_potential_width_follows_the_layer_bound() -> None:
    """Weights 5, bias 0, T_src = 2, Q = 2: |U| ≤ 5 after phase 0, ≤ 2·5 + 5 = 15 after
    phase 1: 4 magnitude bits and a sign, 5 bits."""
    snn = tiny_snn([5, 5, 5], [100, 100], t_in=2, T=2, T_w=0)
    r = hwsim.simulate(snn, torch.tensor([[1.0]]), OS)
    assert r.potential_bits[1] == 5
    assert r.potential_peak[1] == 15  # code 3: spikes at phases 0 and 1, U = 2·5 + 5


def test_shipped_output_stationary_presets() -> None:
    for name, p in (("os16", 16), ("os64", 64)):
        arch = hwsim.ArchConfig.preset(name)
        assert arch.lanes == p and arch.dataflow == "output_stationary"
        assert arch.memory_model == "cacti"
    with pytest.raises(ValueError, match=r"dataflow must be one of"):
        dataclasses.replace(hwsim.ArchConfig(), dataflow="weight_stationary")
    with pytest.raises(ValueError, match=r"memory_model must be one of"):
        dataclasses.replace(hwsim.ArchConfig(), memory_model="guess")


# ------------------------------------------------------------------------- memories and energy
def test_cacti_table_points_and_interpolation() -> None:
    m = sram(32, 64)
    assert m.read_pj == pytest.approx(17.0418)  # CACTI 7, 45 nm, itrs-lstp (the table)
    mid = sram(48, 64)
    assert sram(32, 64).read_pj < mid.read_pj < sram(64, 64).read_pj
    assert sram(8, 64).area_mm2 < sram(256, 64).area_mm2
    with pytest.raises(ValueError, match="outside the CACTI table"):
        sram(4096, 64)
    wide = E.memory(256, 2048)  # four 512-bit banks of 64 KiB
    assert wide.read_pj == pytest.approx(4 * sram(64, 512).read_pj)
    deep = E.memory(8192, 64)  # four 2 MiB macros in depth: one is read, all leak and cost area
    big = sram(2048, 64)
    assert deep.read_pj == pytest.approx(big.read_pj)
    assert deep.area_mm2 == pytest.approx(4 * big.area_mm2)
    assert deep.leakage_mw == pytest.approx(4 * big.leakage_mw)


def test_area_is_srams_queues_and_logic_and_the_sweep_ranks_it() -> None:
    from onespike.sweep import area_mm2 as sweep_area

    arch = dataclasses.replace(hwsim.ArchConfig(), memory_model="cacti")
    a = E.area_mm2(arch)
    srams = a["parameter_sram"] + a["potential_sram"] + a["event_buffer"]
    assert a["total_sram"] == pytest.approx(srams)
    assert a["total"] == pytest.approx(srams + a["queues"] + a["logic"])
    assert a["queues"] == pytest.approx((64 + 64) * 32 * E.QUEUE_UM2_PER_BIT / 1e6)
    wide = E.area_mm2(dataclasses.replace(arch, lanes=4 * arch.lanes))
    assert wide["logic"] > 3 * a["logic"]
    assert sweep_area(arch) == a["total"]
    # the sweep can rank memories past the table's 2 MiB (macros in depth)
    assert sweep_area(dataclasses.replace(arch, weight_sram_kib=8192.0)) > a["total"]


def test_sort_memories_only_for_output_stationary_with_a_network() -> None:
    """The counting sorts' memories (docs/architecture.md §11) join the area and the leakage
    only when the network is known and the dataflow is output-stationary; the machine's own
    figures stay what ``memories`` and the rough models give."""
    snn, _ = make_snn(5, dict(c=3, stride=1, pad=1, pool="max", residual=True), dict(T=6))
    os16 = hwsim.ArchConfig.preset("os16")
    ps = dataclasses.replace(os16, dataflow="potential_sram")
    for arch in (os16, ps):
        alone = E.area_mm2(arch)
        srams = {k: m.area_mm2 for k, m in E.memories(arch).items()}
        lanes = arch.lanes * E.LANE_GATES_A32 * arch.potential_bits / 32
        assert alone == {**srams, "total_sram": pytest.approx(sum(srams.values())),
                         "queues": pytest.approx((arch.input_queue_depth
                                                  + arch.output_queue_depth) * 32 * 1.2e-6),
                         "logic": pytest.approx((E.CONTROL_GATES + lanes) * E.GATE_UM2 / 1e6),
                         "total": pytest.approx(alone["total_sram"] + alone["queues"]
                                                + alone["logic"])}  # fmt: skip
        assert E.area_mm2(arch, None) == alone
        assert E.leakage_mw(arch) == pytest.approx(
            sum(m.leakage_mw for m in E.memories(arch).values())
        )
    assert E.area_mm2(ps, snn) == E.area_mm2(ps) and E.leakage_mw(ps, snn) == E.leakage_mw(ps)
    alone, full = E.area_mm2(os16), E.area_mm2(os16, snn)
    sort = E.sort_memories(os16, [hwsim.sim.sort_shapes(snn, i) for i in range(7)])
    assert set(sort) == {"sort0.counters", "sort0.pointers", "sort0.staging"}
    assert full["sort_memories"] == pytest.approx(sum(m.area_mm2 for m in sort.values()))
    assert full["sort_memories"] > 0
    assert full["total_sram"] == pytest.approx(alone["total_sram"] + full["sort_memories"])
    assert full["total"] == pytest.approx(alone["total"] + full["sort_memories"])
    leak = sum(m.leakage_mw for m in sort.values())
    assert E.leakage_mw(os16, snn) == pytest.approx(E.leakage_mw(os16) + leak)


def test_sort_memories_are_sized_for_the_network() -> None:
    """The tiny linear net (1 → 3 → 1, T = 2): the hidden layer is sorted for the linear
    output layer into B = T = 2 buckets, at most E = 3 events (one per neuron), its entry
    the neuron (⌈log2 3⌉ = 2 bits), a 1-bit column and the sign: 4 bits. With k = 8:
    counters and pointers ⌈2 / 8⌉ → 2 words (the RTL's least) of 8 × ⌈log2 4⌉ = 16 bits,
    staging 3 words of 4 + ⌈log2 2⌉ = 5 bits: 32 + 32 + 15 bits."""
    snn = tiny_snn([5, 5, 5], [100, 100], t_in=2, T=2, T_w=0)
    shapes = [hwsim.sim.sort_shapes(snn, i) for i in range(3)]
    assert shapes == [[], [hwsim.sim.SortShape(2, 3, 4)], []]
    (shape,) = E.sorters(shapes)
    geo = E.sort_geometry(shape)
    assert geo == {"counters": (2, 16), "pointers": (2, 16), "staging": (3, 5)}
    assert sum(d * w for d, w in geo.values()) == 32 + 32 + 15
    mem = E.sort_memories(OS, shapes)
    assert mem["sort0.staging"] == E.memory(15 / 8192, 5)  # priced as 1 KiB, as every SRAM
    # §11's figure: ResNet-20's first stage at T = 16, 16 × 32 × 32 neurons: B = 16,384
    # buckets, 15-bit counters and pointers in 2,048 words of 8: 30 KiB each; its staging
    # entry (channel 4 bits, column 5, sign, key 14) is 24 bits
    big = E.sort_geometry(hwsim.sim.SortShape(16 * 32 * 32, 16 * 32 * 32, 4 + 5 + 1))
    assert big == {"counters": (2048, 120), "pointers": (2048, 120), "staging": (16384, 24)}
    assert 2048 * 120 / 8192 == 30


def test_sorters_are_shared_by_the_layers_and_side_by_side_within_one() -> None:
    """Layer mode: one layer sorts at a time, so the sorters are as many as the most sorts of
    one layer, sorter j sized by every layer's j-th largest sort."""
    s = hwsim.sim.SortShape
    shapes = [[], [s(6, 192, 10), s(96, 192, 5)], [s(384, 48, 5)], [s(6, 12, 6)], []]
    assert E.sorters(shapes) == [s(384, 192, 6), s(6, 192, 10)]
    assert E.sorters([]) == []


@pytest.mark.parametrize(("capacity", "phases", "src"), [(3, 2, (3, 1, 1)), (120, 3, (4, 5, 6)),
                                                         (1000, 16, (40, 5, 5))])  # fmt: skip
def test_sort_geometry_is_the_rtls(capacity, phases, src) -> None:
    """Depth and width of the staging, counter and pointer memories that
    ``rtl.os_sort.SortingBuckets`` builds."""
    from amaranth.hdl import Shape

    from rtl.os_blocks import event_entry
    from rtl.os_sort import SortingBuckets

    entry = event_entry(src[0], src[2])
    m = SortingBuckets(capacity, phases, src, entry).elaborate(None)
    got = {}
    for name, key in (("staging", "stage"), ("counters", "cnt"), ("pointers", "ptr")):
        mem = m.submodules[key]
        got[name] = (mem.depth, Shape.cast(mem.shape).width)
    shape = hwsim.sim.SortShape(phases * src[1] * src[2], capacity, Shape.cast(entry).width)
    assert E.sort_geometry(shape) == got


def test_a_max_pooling_readers_sort_keeps_the_phase_as_the_rtl_does() -> None:
    """A layer read by max pooling is sorted by phase only, flat, and its entry also holds
    the phase (``rtl.os_pool.pool_entry``: the sorted events stream out without an index
    run): the entry width is the RTL's."""
    from amaranth.hdl import Shape

    from rtl.os_pool import pool_entry

    snn, _ = make_snn(5, dict(c=3, stride=1, pad=1, pool="max", residual=False), dict(T=6))
    i = next(lay.source for lay in snn.layers if lay.kind == "maxpool")
    src = snn.layers[i]
    (shape,) = hwsim.sim.sort_shapes(snn, i)
    assert shape.buckets == src.T
    assert shape.entry_bits == Shape.cast(pool_entry(src.size, src.T)).width


def test_sort_memories_grow_with_the_network() -> None:
    """More channels (a bigger first layer, more events per image) → bigger sort memories;
    the sweep's area counts them when it has the network."""
    from onespike.sweep import area_mm2 as sweep_area

    arch = hwsim.ArchConfig.preset("os16")
    areas = []
    for c in (2, 8):
        snn, _ = make_snn(3, dict(c=c, stride=1, pad=1, pool="none", residual=False), dict(T=6))
        areas.append(E.area_mm2(arch, snn)["sort_memories"])
        assert sweep_area(arch, snn) == E.area_mm2(arch, snn)["total"] > sweep_area(arch)
    assert areas[1] > areas[0]


def test_cacti_energy_is_counts_times_prices_plus_leakage() -> None:
    snn, x = make_snn(1, dict(c=3, stride=1, pad=1, pool="avg", residual=False), dict(T=6))
    for df in DATAFLOWS:
        arch = dataclasses.replace(hwsim.ArchConfig(), dataflow=df, memory_model="cacti")
        r = hwsim.simulate(snn, x[:2], arch)
        e = r.energy_pj()
        stationary = df == "output_stationary"
        assert set(e) == {*COSTED_ACTIONS, "leakage"} | ({"bucketing"} if stationary else set())
        for i in range(len(r.names)):
            cost = E.per_access_pj(arch, int(r.potential_bits[i]))
            for a in COSTED_ACTIONS:
                assert e[a][i] == pytest.approx(r.counts[a][i] * cost[a])
        cycles = r.total_cycles
        if stationary:  # the producers' counting sorts: accesses and cycles (§11)
            ev = E.memories(arch)["event_buffer"]
            mem = E.sort_memories(arch, r.sort_shapes)
            sort = np.zeros(len(r.names))
            for i, shapes in enumerate(r.sort_shapes):
                for j, sh in enumerate(sorted(shapes, key=lambda s: -s.buckets)):
                    ev_i, words = r.bucket_events[i], r.images * -(-sh.buckets // 8)
                    assert ev_i == r.counts["spikes_out"][i]
                    cnt, ptr, stg = (mem[f"sort{j}.{k}"] for k in ("counters", "pointers",
                                                                   "staging"))  # fmt: skip
                    sort[i] += ((ev_i + words) * (cnt.read_pj + cnt.write_pj)
                                + ev_i * ptr.read_pj + (ev_i + words) * ptr.write_pj
                                + ev_i * (stg.read_pj + stg.write_pj)
                                + r.images * sh.buckets * ev.write_pj)  # fmt: skip
            np.testing.assert_allclose(e["bucketing"], sort)
            assert sort.sum() > 0
            cycles = cycles + r.bucket_cycles.sum(0)
        # the sort memories leak too (output-stationary), sized for this network
        leak = E.leakage_mw(arch, snn) * cycles / arch.clock_mhz * 1e3
        np.testing.assert_allclose(e["leakage"], leak)
        assert (E.leakage_mw(arch, snn) > E.leakage_mw(arch)) == stationary
        assert r.rows()[-1]["energy_pj"] == pytest.approx(r.total_energy_pj().sum() / 2)


def test_weight_buffer_fills_once_and_costs_its_cycles() -> None:
    """conv 2 → 4 channels, 3 × 3, on 8 × 8 pixels, P = 16: the 72 weights fit a 0.5 KiB
    buffer and are loaded once per image; each channel group costs C_in = 2 fill cycles
    before its first tile (one tap-bank word, 9 · tc weights, per source channel)."""
    snn, x = make_snn(6, dict(c=4, stride=1, pad=1, pool="none", residual=False), dict(T=5))
    arch = dataclasses.replace(hwsim.ArchConfig.preset("os16"), weight_buffer_kib=0.0)
    plain = hwsim.simulate(snn, x[:2], arch)
    buf = hwsim.simulate(snn, x[:2], dataclasses.replace(arch, weight_buffer_kib=0.5))
    assert buf.weight_fills[1] == 2 * 4 * 9 and plain.weight_fills.sum() == 0
    tc = buf.tile_shapes[1][0]
    fill = -(-4 // tc) * 2
    assert buf.cycles["busy"][1] - plain.cycles["busy"][1] == 2 * fill  # 2 images
    for a, b in zip(plain.spikes, buf.spikes, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    e_buf, e_plain = buf.energy_pj(), plain.energy_pj()
    assert e_buf["weight_fills"][1] > 0
    assert e_buf["weight_reads"][1] < e_plain["weight_reads"][1]


def test_logic_scaling() -> None:
    assert E.add_pj(8) == pytest.approx(0.03) and E.add_pj(32) == pytest.approx(0.1)
    assert E.mul_pj(32, 32) == pytest.approx(3.1)


# ------------------------------------------------------------------------- ANN baseline
def test_ann_array_counts_every_mac_once() -> None:
    """No padding: the dense array does every MAC of the ANN (converter.ops.ann_ops) once;
    the zero-skipping one does at most as many, in at most as many cycles."""
    snn, x = make_snn(2, dict(c=4, stride=1, pad=0, pool="none", residual=False), dict(T=5))
    arch = hwsim.ArchConfig.preset("os16")
    r = hwsim.simulate(snn, x[:3], arch)
    ann = ann_array(snn, arch, r.spikes, r.images)
    macs = sum(
        ann_ops(s, snn.layers[s.source], lay)[0] for lay in snn.layers[1:] for s in lay.synapses
    )
    assert ann["dense"]["macs"] == macs
    assert ann["zero_skip"]["macs"] <= macs
    assert ann["zero_skip"]["cycles"] <= ann["dense"]["cycles"]
    assert 0 < ann["dense"]["mac_utilisation"] <= 1
    assert ann["dense"]["energy_pj"] == pytest.approx(
        sum(ann["dense"]["energy_by_part_pj"].values())
    )


def test_energy_by_block_adds_up() -> None:
    snn, x = make_snn(7, dict(c=4, stride=1, pad=1, pool="none", residual=True), dict(T=5))
    arch = dataclasses.replace(hwsim.ArchConfig.preset("os16"), weight_buffer_kib=1.0)
    r = hwsim.simulate(snn, x[:2], arch)
    blocks = E.energy_by_block(r)
    assert sum(blocks.values()) == pytest.approx(r.total_energy_pj().sum() / 2)
    assert blocks["weight_buffer"] > 0 and "potential_sram" in blocks
