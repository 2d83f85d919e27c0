"""Graph networks on the rtl layer engine (issue 11 §3): the aggregation (``graph``, a CSR walk,
rtl/csr.py) and one-hot (``embedding``) ops, co-simulated spike for spike against golden int
and cycle for cycle against hwsim (docs/architecture.md §2–§3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import golden
import hwsim
from converter import ConversionConfig, convert
from hwsim.sim import graph_bits
from onespike import gcn, graphs
from rtl.engine import LayerImage
from rtl.generate import supported_layers
from tests.conftest import assert_lints_clean, check_layers, require_simulator, trained_cora
from tests.test_gcn_convert import features, random_graph, trained_like

ARCH = hwsim.ArchConfig()


def small_gcn(seed: int = 0, nodes: int = 40, hidden: int = 8, adj=None, **kw):
    """A random 2-layer GCN on dense node features, converted with the default config."""
    adj = random_graph(nodes, seed, 0.12) if adj is None else adj
    x = features(nodes, 12, seed)
    model = trained_like(gcn.GCN(adj, 12, 3, hidden=hidden, **kw), seed)
    return convert(model, x, progress=False), x


def wide_gcn(density: float = 1.0, nodes: int = 400, feats: int = 400):
    """A random GCN whose input layer (feats × nodes × T_in 8 = 1.28 M events in the worst
    case) exceeds the accelerator's 2^20 debug addresses: binary node features with a
    fraction ``density`` of ones (all ones: every feature codes all T_in bits, so the real
    input exceeds it too), converted with the default config."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(nodes, feats, generator=g) < density).float()
    x[:, 0] = 1.0  # (every node has a feature: the input range is 1)
    adj = random_graph(nodes, 0, 0.02)
    return convert(trained_like(gcn.GCN(adj, feats, 3, hidden=4), 0), x, progress=False), x


def small_text_gcn(seed: int = 3, nodes: int = 40):
    """A random Text GCN (one-hot features X = I), converted with the default config."""
    adj = random_graph(nodes, seed)
    x = graphs.sparse_identity(nodes)
    return convert(trained_like(gcn.TextGCN(adj, 4, hidden=10), seed), x, progress=False), x


def check_graph(snn, x, arch, name: str, **kw) -> list:
    """Every layer co-simulated (spikes, output potentials, cycles and counters checked by
    check_layers); the per-node classes read back equal golden int's."""
    assert supported_layers(snn) == list(range(1, len(snn.layers)))
    kw.setdefault("sim", "icarus")
    reports = check_layers(snn, x, None, arch, name, **kw)
    ref = golden.run(snn, x, "int", device="cpu")
    assert reports[-1].predictions == ref.predictions.tolist()
    for r in reports[:-1]:
        assert r.images == 1 and r.spikes_rtl == r.spikes_golden > 0
    return reports


# --------------------------------------------------------------------------- images
def test_graph_layer_image_shares_the_negated_table() -> None:
    """The −Â group of a two-rail source shares the +Â group's CSR (its events subtract); the
    CSR memories hold hwsim's count of bits; embedding words are indexed by node."""
    snn, _ = small_gcn()
    lay = snn.layers[2]
    img = LayerImage.from_snn(snn, 2, 16)
    pos, neg = img.groups
    assert (pos.op, neg.op) == ("graph", "graph") and (pos.table, neg.table) == (0, 0)
    assert (pos.negate, neg.negate) == (False, True)
    assert (pos.channel_offset, neg.channel_offset) == (0, 8) and img.weights.shape[0] == 0
    csr, nodes = img.csr, 40
    assert csr.tables == 1 and csr.edges == lay.synapses[0].index.shape[1]
    bits = csr.edges * (16 + (nodes - 1).bit_length()) + (nodes + 1) * csr.edges.bit_length()
    assert bits == graph_bits(lay)
    # node m's entries: its out-edges (n, m) of Â, by target node, with Â's weights
    a = sp.coo_matrix((lay.synapses[0].weight_q, tuple(lay.synapses[0].index)), (nodes, nodes))
    a = a.tocsc()
    for m in (0, 7, 39):
        lo, hi = csr.ptr[0, m], csr.ptr[0, m + 1]
        assert csr.target[lo:hi].tolist() == a[:, m].indices.tolist()
        assert csr.weight[lo:hi].tolist() == a[:, m].data.tolist()
    text, _ = small_text_gcn()
    emb = LayerImage.from_snn(text, 1, 16)
    assert emb.op == "embedding" and emb.weights.shape == (40 * 2, 16)  # 20 channels: CB = 2
    w = text.layers[1].synapses[0].weight_q
    assert emb.weights[5 * 2 + 1, :4].tolist() == w[16:20, 5].tolist()


# --------------------------------------------------------------------------- co-simulation
@pytest.mark.slow
def test_gcn_every_layer_matches_golden_and_hwsim() -> None:
    """Dense features: 1 × 1 conv (X·W0, two rails), graph (+Â and −Â), conv, graph output."""
    snn, x = small_gcn()
    assert [[s.op for s in lay.synapses] for lay in snn.layers[1:]] == [
        ["conv"],
        ["graph", "graph"],
        ["conv"],
        ["graph", "graph"],
    ]
    check_graph(snn, x, ARCH, "graph_gcn", chain=True)


@pytest.mark.slow
def test_text_gcn_every_layer_matches_golden_and_hwsim() -> None:
    """One-hot features: the embedding layer reads the (1, N, 1) input layer."""
    snn, x = small_text_gcn()
    assert [s.op for s in snn.layers[1].synapses] == ["embedding"]
    check_graph(snn, x, ARCH, "graph_text_gcn", chain=True)


@pytest.mark.slow
def test_graph_layers_with_several_channel_blocks_and_issue_cycles() -> None:
    """P = 3 (channels over several blocks, the target's lane within its block), I = 2,
    L_a = 1, L_n = 3, a narrow output queue with back-pressure, waiting phases and a bias."""
    adj = random_graph(30, 5, 0.15)
    x = features(30, 12, 5)
    model = trained_like(gcn.GCN(adj, 12, 3, hidden=7, bias=True), 5)
    snn = convert(model, x, ConversionConfig(T=10, T_w=3, Q=1.5), progress=False)
    arch = hwsim.ArchConfig(lanes=3, output_queue_depth=3, event_issue_cycles=2,
                            adder_pipeline_cycles=1, neuron_pipeline_cycles=3)  # fmt: skip
    stalls = hwsim.stall_pattern(seed=2, rate=0.4, length=41)
    check_graph(snn, x, arch, "graph_p3", stalls=stalls)


@pytest.mark.slow
def test_nodes_without_edges_and_two_tables() -> None:
    """A node without edges (no self loop): its events reach no target and cost their issue
    cycles only; a −Â group that is not +Â negated gets a CSR table of its own."""
    rng = np.random.default_rng(6)
    a = sp.random(30, 30, density=0.15, random_state=rng, data_rvs=lambda k: np.ones(k))
    a = ((a + a.T) > 0).astype(np.float64).tolil()
    a[0, :], a[:, 0] = 0, 0  # node 0: isolated
    adj = graphs.to_torch_sparse(graphs.normalize_adjacency(a.tocsr(), add_self_loops=False))
    snn, x = small_gcn(6, 30, adj=adj)
    syn = snn.layers[2].synapses[1]
    w = np.asarray(syn.weight_q).copy()
    w[::3] = 0  # the −Â group's table differs from +Â's
    lay = dataclasses.replace(
        snn.layers[2], synapses=(snn.layers[2].synapses[0], dataclasses.replace(syn, weight_q=w))
    )
    snn = dataclasses.replace(snn, layers=(*snn.layers[:2], lay, *snn.layers[3:]))
    img = LayerImage.from_snn(snn, 2, 16)
    assert img.csr.tables == 2 and [g.table for g in img.groups] == [0, 1]
    assert all(g.empty_nodes for g in img.groups) and not any(g.negate for g in img.groups)
    ref = golden.run(snn, x, "int", device="cpu")
    assert (ref.spikes[1][0, :, 0] >= 0).any()  # node 0 sends events to layer 2
    check_graph(snn, x, ARCH, "graph_isolated")


@pytest.mark.slow
def test_graph_layer_under_verilator() -> None:
    """The Text GCN's aggregation layer (two graph groups sharing one table) under Verilator."""
    snn, x = small_text_gcn(4, 48)
    (rep,) = check_layers(snn, x, [2], ARCH, "graph_verilator", sim="verilator")
    assert rep.spikes_rtl == rep.spikes_golden > 0


@pytest.mark.slow
def test_graph_verilog_lints_clean(tmp_path) -> None:
    """`verilator --lint-only -Wall` is clean on the graph and embedding engines."""

    import rtl

    require_simulator("verilator")
    files = rtl.generate_verilog(small_text_gcn()[0], hwsim.ArchConfig(lanes=3), tmp_path / "t")
    files += rtl.generate_verilog(small_gcn()[0], ARCH, tmp_path / "g", layer=4)
    for f in files:
        assert_lints_clean(f, f.parent / "verilator.vlt")


def test_cora_needs_the_wide_source_index() -> None:
    """A source of more than 2^20 neurons (Cora's input: 1,433 features × 2,708 nodes) sends
    the index's bits 20–22 in the event's spare field; beyond 2^23 it is refused."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from rtl.engine import LayerEngine

    snn, _ = small_gcn()
    img = LayerImage.from_snn(snn, 1, 16)
    big = dataclasses.replace(img.groups[0], src_shape=(1433, 2708, 1))
    engine = LayerEngine(ARCH, dataclasses.replace(img, groups=(big,)))
    engine._MustUse__silence = True  # built for its checks only, never elaborated
    huge = dataclasses.replace(img.groups[0], src_shape=(4096, 2049, 1))
    with warnings.catch_warnings():  # the refused engine is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r"2\^23"):
            LayerEngine(ARCH, dataclasses.replace(img, groups=(huge,)))
        gc.collect()


# --------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_cora_output_layer_through_the_cli(tmp_path) -> None:
    """Cora's trained GCN through `onespike cosim --data cora`: its output layer (the graph
    aggregation of 7 classes × 2 rails, 13,264 edges) under Verilator, with memories sized for
    Cora (1 MiB each, hwsim check_fits); every layer is benchmarks/rtl_gcn.py's (minutes)."""
    import json

    from onespike.cli import main

    data, model, snn = trained_cora(50)
    x = data.features()
    art = snn.save(tmp_path / "cora.safetensors")
    toml = tmp_path / "cora.toml"
    toml.write_text(
        'name = "cora"\nweight_sram_kib = 1024.0\npotential_sram_kib = 1024.0\n'
        "event_buffer_banks = 16\n"
    )
    report = tmp_path / "cosim.json"
    args = ["cosim", str(art), "--arch", str(toml), "--layer", "4", "--sim", "verilator",
            "-o", str(tmp_path / "c"), "--json", str(report)]  # fmt: skip
    assert main(args) == 0  # --data: cora, from the node count
    (rep,) = json.loads(report.read_text())["layers"]  # --layer: the per-layer flow
    assert rep["ok"] and rep["rtl_cycles"] == rep["hwsim_cycles"]
    ref = golden.run(snn, x, "int", device="cpu", keep_spikes=False)
    assert rep["predictions"] == ref.predictions.tolist()
