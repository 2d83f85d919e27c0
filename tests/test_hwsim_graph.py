"""hwsim runs graph networks (issue 11 §3): the aggregation (``graph``) and one-hot
(``embedding``) ops as CSR fan-outs in both dataflows, spike-exact against golden int; their
cycles, memory sizes and ANN baselines (docs/architecture.md §2, §3, §11, §12)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import archspec.tiles
import golden
import hwsim
from archspec.fanout import synapse_fanout, table_entries
from converter import ConversionConfig, convert
from converter.model import Layer, Synapse
from hwsim.ann import ann_array
from hwsim.report import ann_mac_array, layer_rows
from hwsim.sim import ArchFitError, check_fits, graph_table_bits, memory_bits
from onespike import gcn, graphs
from tests.conftest import trained_cora
from tests.test_gcn_convert import features, random_graph, trained_like

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
PS = hwsim.ArchConfig()
OS = hwsim.ArchConfig.preset("os16")


def arch_for(dataflow: str, lanes: int = 16) -> hwsim.ArchConfig:
    base = PS if dataflow == "potential_sram" else OS
    return dataclasses.replace(base, lanes=lanes, output_queue_depth=max(64, lanes))


def check_agrees(snn, x, arch, mode: str = "layer") -> hwsim.SimResult:
    """Spikes of every layer, output potentials (nodes, C), per-node predictions and adds
    equal golden int's."""
    g = golden.run(snn, x, "int", device=CPU)
    r = hwsim.simulate(snn, x, arch, mode=mode)
    for i, lay in enumerate(snn.layers):
        if g.spikes[i] is None:
            assert r.spikes[i] is None, lay.name
        else:
            np.testing.assert_array_equal(r.spikes[i], g.spikes[i].numpy(), err_msg=lay.name)
    nodes = snn.meta["graph"]["nodes"]
    assert r.logits_int.shape == tuple(g.logits_int.shape) == (nodes, snn.output.channels)
    np.testing.assert_array_equal(r.logits_int, g.logits_int.numpy())
    np.testing.assert_array_equal(r.predictions, g.predictions.numpy())
    np.testing.assert_array_equal(r.counts["adds"], g.counts["adds"])
    np.testing.assert_array_equal(r.counts["spikes_out"][1:-1], g.counts["spikes"][1:-1])
    return r


# --------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("dataflow", ["potential_sram", "output_stationary"])
@pytest.mark.parametrize(
    ("seed", "nodes", "density", "hidden", "lanes"),
    [(0, 40, 0.12, 8, 16), (1, 57, 0.05, 5, 3), (2, 30, 0.3, 12, 64)],
)
def test_gcn_agrees_with_golden(dataflow, seed, nodes, density, hidden, lanes) -> None:
    adj = random_graph(nodes, seed, density)
    x = features(nodes, 12, seed)
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=hidden), seed), x, progress=False)
    assert [s.op for s in snn.layers[2].synapses] == ["graph", "graph"]
    r = check_agrees(snn, x, arch_for(dataflow, lanes))
    if dataflow == "output_stationary":
        for i, lay in enumerate(snn.layers):
            if lay.kind in ("neuron", "output"):
                assert r.potential_peak[i] <= 2 ** (int(r.potential_bits[i]) - 1) - 1
                assert np.prod(r.tile_shapes[i]) <= lanes


def test_gcn_with_waiting_phases_and_bias_agrees() -> None:
    adj = random_graph(35, 7, 0.1)
    x = features(35, 9, 7)
    model = trained_like(gcn.GCN(adj, 9, 4, hidden=6, bias=True), 7)
    snn = convert(model, x, ConversionConfig(T=10, T_w=3, Q=1.5), progress=False)
    for dataflow in ("potential_sram", "output_stationary"):
        check_agrees(snn, x, arch_for(dataflow))


@pytest.mark.parametrize("dataflow", ["potential_sram", "output_stationary"])
def test_text_gcn_one_hot_agrees_with_golden(dataflow) -> None:
    adj = random_graph(40, 3)
    snn = convert(trained_like(gcn.TextGCN(adj, 4, hidden=10), 3), graphs.sparse_identity(40),
                  progress=False)  # fmt: skip
    assert [s.op for s in snn.layers[1].synapses] == ["embedding"]
    r = check_agrees(snn, graphs.sparse_identity(40), arch_for(dataflow))
    # a dense identity works too; anything else is refused as golden refuses it
    r2 = hwsim.simulate(snn, torch.eye(40), arch_for(dataflow))
    np.testing.assert_array_equal(r2.logits_int, r.logits_int)
    with pytest.raises(ValueError, match="identity"):
        hwsim.simulate(snn, torch.ones(40, 40), arch_for(dataflow))


@pytest.mark.parametrize("dataflow", ["potential_sram", "output_stationary"])
def test_pipelined_mode_runs_graphs(dataflow) -> None:
    adj = random_graph(40, 4)
    x = features(40, 12, 4)
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=8), 4), x, progress=False)
    layer = check_agrees(snn, x, arch_for(dataflow))
    piped = check_agrees(snn, x, arch_for(dataflow), mode="pipelined")
    assert 0 < piped.stream_end_cycles[0] <= layer.stream_end_cycles[0]


def test_image_inputs_are_refused_for_a_graph() -> None:
    adj = random_graph(40, 5)
    x = features(40, 12, 5)
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=8), 5), x, progress=False)
    with pytest.raises(ValueError, match="node features"):
        hwsim.simulate(snn, torch.zeros(1, *snn.input_shape))
    with pytest.raises(ValueError, match="39 nodes"):
        hwsim.simulate(snn, x[:39])


# --------------------------------------------------------------------------- fan-out, cycles
def _layers(c_src: int, c: int, nodes: int) -> tuple[Layer, Layer]:
    return Layer("src", "neuron", (c_src, nodes, 1)), Layer("out", "neuron", (c, nodes, 1))


def test_graph_fanout_by_hand() -> None:
    """Edges (target, source): 0←0, 0←1, 1←1, 2←1, 2←2; a two-rail source of 2 × 2 channels;
    the group at offset 2 reads channels 2, 3 (the negative rail) only."""
    index = np.array([[0, 0, 1, 2, 2], [0, 1, 1, 1, 2]], np.int32)
    w = np.array([5, -6, 7, 8, 9], np.int16)
    src, out = _layers(4, 2, 3)
    syn = Synapse(source=0, op="graph", weight=w.astype(np.float32), weight_q=w, index=index,
                  channel_offset=2)  # fmt: skip
    fan = synapse_fanout(syn, src, out, lanes=16)
    assert fan.ptr.size == 4 * 3 + 1
    deg = [1, 3, 1]  # out-degrees of nodes 0, 1, 2
    assert fan.cycles.tolist() == [0, 0, 0, 0, 0, 0, *deg, *deg]  # one cycle per target
    # source neuron (channel 3, node 1) reaches (1, 0), (1, 1), (1, 2)
    v = 3 * 3 + 1
    got = sorted(zip(fan.tgt[fan.ptr[v] : fan.ptr[v + 1]].tolist(),
                     fan.w[fan.ptr[v] : fan.ptr[v + 1]].tolist(), strict=True))  # fmt: skip
    assert got == [(3, -6), (4, 7), (5, 8)]
    assert table_entries(syn, src, out) == fan.tgt.size == 2 * 5


def test_embedding_fanout_by_hand() -> None:
    src, out = Layer("in", "input", (1, 3, 1)), Layer("out", "neuron", (5, 3, 1))
    w = np.arange(15, dtype=np.int8).reshape(5, 3)
    syn = Synapse(source=0, op="embedding", weight=w.astype(np.float32), weight_q=w)
    fan = synapse_fanout(syn, src, out, lanes=2)
    assert fan.cycles.tolist() == [3, 3, 3]  # ⌈5 / 2⌉ rows of the node's channels
    assert fan.tgt[fan.ptr[1] : fan.ptr[2]].tolist() == [1, 4, 7, 10, 13]  # (c, node 1)
    assert fan.w[fan.ptr[1] : fan.ptr[2]].tolist() == w[:, 1].tolist()


def test_graph_adder_cycles_are_one_per_target() -> None:
    """potential_sram: a graph event costs one adder cycle per target (each a different
    node's row), an embedding event ⌈C/P⌉."""
    adj = random_graph(40, 8)
    snn = convert(trained_like(gcn.TextGCN(adj, 4, hidden=10), 8), graphs.sparse_identity(40),
                  progress=False)  # fmt: skip
    r = hwsim.simulate(snn, graphs.sparse_identity(40), PS)
    for i, lay in enumerate(snn.layers):
        ops = {s.op for s in lay.synapses}
        if ops == {"graph"}:
            assert r.adder_cycles[i] == r.counts["adds"][i]
            assert r.lane_utilisation[i] == pytest.approx(1 / PS.lanes)
        if ops == {"embedding"}:
            assert r.adder_cycles[i] == 40 * -(-lay.channels // PS.lanes)


def test_sparse_receptive_fields_give_the_same_tiles(monkeypatch) -> None:
    """Large graphs find the output-stationary receptive fields (the union of a tile's
    in-neighbours) by sorting (memory: the fan-out's size, not tiles × nodes): same result."""
    adj = random_graph(50, 11, 0.1)
    x = features(50, 12, 11)
    model = trained_like(gcn.GCN(adj, 12, 3, hidden=8), 11)
    dense = hwsim.simulate(convert(model, x, progress=False), x, OS)
    monkeypatch.setattr(archspec.tiles, "DENSE_MARKS", 0)
    sparse = check_agrees(convert(model, x, progress=False), x, OS)
    np.testing.assert_array_equal(sparse.cycles_per_image, dense.cycles_per_image)
    for a in ("queue_pops", "index_reads", "threshold_reads"):
        np.testing.assert_array_equal(sparse.counts[a], dense.counts[a])
    assert sparse.tile_shapes == dense.tile_shapes


# --------------------------------------------------------------------------- ANN baselines
def test_ann_baselines_count_the_products_once() -> None:
    adj = random_graph(40, 9)
    x = features(40, 12, 9)
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=8), 9), x, progress=False)
    g = golden.run(snn, x, "int", device=CPU)
    for arch in (PS, OS):
        r = hwsim.simulate(snn, x, arch)
        ann = ann_array(snn, arch, r.spikes, 1)
        assert ann["dense"]["macs"] == g.counts["ann_macs"].sum()
        assert 0 < ann["zero_skip"]["macs"] <= ann["dense"]["macs"]
        np.testing.assert_array_equal(ann_mac_array(snn, arch)["macs"], g.counts["ann_macs"])
        rows = layer_rows(r, snn)
        assert rows[-1]["ann_macs"] == g.counts["ann_macs"].sum()
    eye = graphs.sparse_identity(40)
    text = convert(trained_like(gcn.TextGCN(adj, 4, hidden=10), 9), eye, progress=False)
    g = golden.run(text, eye, "int", device=CPU)
    r = hwsim.simulate(text, eye, PS)
    assert ann_array(text, PS, r.spikes, 1)["dense"]["macs"] == g.counts["ann_macs"].sum()


# --------------------------------------------------------------------------- memories
def test_graph_weights_are_counted_at_16_bits_once_per_layer() -> None:
    adj = random_graph(40, 10)
    x = features(40, 12, 10)
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=8), 10), x, progress=False)
    lay = snn.layers[2]
    pos, neg = lay.synapses
    assert np.array_equal(neg.weight_q, -pos.weight_q)  # −Â: shares +Â's CSR
    nnz = pos.index.shape[1]
    assert graph_table_bits(pos, 40) == nnz * (16 + 6) + 41 * nnz.bit_length()
    rows = 40 * 1  # 8 channels, P = 16: one row per node
    thresholds = 8 * lay.T * 32
    assert memory_bits(snn, lay, PS) == (
        graph_table_bits(pos, 40) + rows * 16 * 32 + thresholds,
        rows * 16 * 33,
    )


def _ring_text_gcn(nodes: int, hidden: int):
    i = np.arange(nodes)
    a = sp.coo_matrix((np.ones(nodes), (i, (i + 1) % nodes)), shape=(nodes, nodes))
    adj = graphs.to_torch_sparse(graphs.normalize_adjacency(((a + a.T) > 0).astype(np.float64)))
    model = trained_like(gcn.TextGCN(adj, 8, hidden=hidden), 0)
    return convert(model, graphs.sparse_identity(nodes), progress=False)


def test_r8_sized_graph_is_refused_by_name_before_any_table(monkeypatch) -> None:
    """R8's 15,362 nodes (a ring instead of its 3.45 M edges) with Text GCN's 200 hidden
    features: refused by the configured memories, naming the layer and the sizes, before a
    fan-out table is built."""
    snn = _ring_text_gcn(15_362, 200)

    def no_tables(*args, **kw):
        raise AssertionError("a fan-out table was built")

    monkeypatch.setattr(hwsim.sim, "synapse_fanout", no_tables)
    eye = graphs.sparse_identity(15_362)
    with pytest.raises(ArchFitError, match=r"layer 1 \(lin0_rails\) needs 30028\.91 KiB of param"):
        hwsim.simulate(snn, eye, PS)
    big = dataclasses.replace(PS, weight_sram_kib=65536.0)
    with pytest.raises(ArchFitError, match=r"layer 1 \(lin0_rails\) needs .* KiB of potential"):
        check_fits(snn, big)
    # memories large enough, but the simulator's expanded tables too large: refused by name
    huge = dataclasses.replace(big, potential_sram_kib=65536.0)
    monkeypatch.setattr(hwsim.sim, "MAX_TABLE_ENTRIES", 10_000_000)
    with pytest.raises(ArchFitError, match=r"layer 2 \(relu\).* 18,434,400 synapses"):
        hwsim.simulate(snn, eye, huge)
    # the graph's own CSR (its 16-bit weights) is counted and named
    tiny = dataclasses.replace(huge, weight_sram_kib=1.0)
    with pytest.raises(ArchFitError, match=r"layer 1 \(lin0_rails\)"):
        check_fits(snn, tiny)


def test_r8_sizes_are_computed_without_building() -> None:
    """R8 itself: 3.45 M entries of Â; the hidden aggregation reads 200 channels, so the
    simulator's table would be 690 M synapses (refused), Â's CSR alone 12.4 MiB."""
    nnz, nodes = 3_450_000, 15_362
    idx = np.zeros((2, nnz), np.int32)  # never read: only the shapes count
    syn = Synapse(source=1, op="graph", weight=np.zeros(0, np.float32),
                  weight_q=np.zeros(nnz, np.int16), index=idx)  # fmt: skip
    src, out = _layers(400, 200, nodes)
    assert table_entries(syn, src, out) == 690_000_000 > hwsim.sim.MAX_TABLE_ENTRIES
    bits = graph_table_bits(syn, nodes)
    assert bits == nnz * (16 + 14) + (nodes + 1) * 22
    assert bits / 8 / 2**20 == pytest.approx(12.38, abs=0.01)


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_cora_agrees_with_golden() -> None:
    """Cora's trained GCN (2,708 nodes, 1,433 features) on the potential-SRAM engine with
    memories sized for it (1 MiB each: its rails layer needs 385 KiB of parameters; the
    features' events need 15 event-buffer banks of 64 KiB, refused by image and layer)."""
    data, model, snn = trained_cora(50)
    x = data.features()
    with pytest.raises(ArchFitError, match="lin0_rails"):
        check_fits(snn, PS)
    arch = dataclasses.replace(PS, weight_sram_kib=1024.0, potential_sram_kib=1024.0)
    with pytest.raises(
        ArchFitError, match=r"image 0: while layer 1 \(lin0_rails\) runs.* 15 banks"
    ):
        hwsim.simulate(snn, x, arch)
    r = check_agrees(snn, x, dataclasses.replace(arch, event_buffer_banks=16))
    assert r.logits_int.shape == (2708, 7)
    assert data.accuracy(torch.as_tensor(r.logits_int).double()) > 50
