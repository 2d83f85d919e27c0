"""GCN conversion (issue 11 §1): graph networks written as people write them in PyTorch become
one-spike SNNs; golden ann reproduces the model, exact and int track it, the artifact round-trips,
and what cannot be converted is refused by node."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

import golden
from converter import ConversionConfig, convert
from converter.frontend import UnsupportedModelError
from converter.model import ArtifactError, load
from onespike import gcn, graphs
from tests.conftest import trained_cora

CPU = torch.device("cpu")


def random_graph(n: int = 40, seed: int = 0, p: float = 0.12) -> torch.Tensor:
    """Â of a random undirected graph: symmetric normalisation with self loops."""
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=p, random_state=rng, data_rvs=lambda k: np.ones(k))
    a = ((a + a.T) > 0).astype(np.float64)
    return graphs.to_torch_sparse(graphs.normalize_adjacency(a))


def features(n: int, f: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, f, generator=g) < 0.3).float() * torch.rand(n, f, generator=g)


def trained_like(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


class DenseGCN(nn.Module):
    """Kipf's GCN written with a dense Â buffer, `@`, `h @ W` parameters and a bias added
    after the aggregation (as PyG's GCNConv), ending in log_softmax."""

    def __init__(self, adj: torch.Tensor, f: int, hidden: int, c: int):
        super().__init__()
        self.register_buffer("adj", adj)
        self.w0 = nn.Parameter(torch.empty(f, hidden))
        self.b0 = nn.Parameter(torch.empty(hidden))
        self.w1 = nn.Parameter(torch.empty(hidden, c))

    def forward(self, x):
        h = F.relu(self.adj @ (x @ self.w0) + self.b0)
        h = F.dropout(h, 0.5, self.training)
        return F.log_softmax(torch.mm(self.adj, torch.matmul(h, self.w1)), dim=1)


@pytest.fixture(scope="module")
def graph():
    adj = random_graph()
    return adj, features(40, 12)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> float:
    """Largest error relative to the logits' range."""
    err = (a.double() - b.double()).abs().max().item() / b.double().abs().max().item()
    assert err < tol, err
    return err


@pytest.mark.parametrize("dense", [False, True])
def test_gcn_golden_ann_is_the_model_and_exact_tracks_it(graph, dense):
    adj, x = graph
    model = trained_like(gcn.GCN(adj.to_dense() if dense else adj, 12, 3, hidden=8, bias=True), 1)
    ref = model(x).detach()
    snn = convert(model, x, ConversionConfig(T=24, Q=1.2, weight_bits=None), progress=False)
    kinds = [(lay.kind, lay.rails, [s.op for s in lay.synapses]) for lay in snn.layers]
    assert kinds == [
        ("input", False, []),
        ("neuron", True, ["conv"]),
        ("neuron", False, ["graph", "graph"]),
        ("neuron", True, ["conv"]),
        ("output", False, ["graph", "graph"]),
    ]
    ann = golden.run(snn, x, "ann", device=CPU)
    assert ann.logits.shape == (40, 3) and ann.predictions.shape == (40,)
    _close(ann.logits, ref, 1e-5)
    exact = golden.run(snn, x, "exact", device=CPU)
    _close(exact.logits, ref, 0.08)  # T 24 phases, Q 1.2: a few % of the range
    assert (exact.predictions == ref.argmax(1)).double().mean() > 0.85
    assert 0 < exact.spikes_per_neuron() <= 1


def test_variants_as_people_write_them(graph):
    """Dense Â buffer, `@`, torch.mm, torch.matmul, h @ W, bias after Â, log_softmax."""
    adj, x = graph
    model = trained_like(DenseGCN(adj.to_dense(), 12, 8, 3), 2)
    ref = model(x).detach()
    snn = convert(model, x, ConversionConfig(weight_bits=None), progress=False)
    ann = golden.run(snn, x, "ann", device=CPU)
    # the dropped log_softmax changes the values, not the argmax
    assert torch.equal(ann.predictions, ref.argmax(1))
    assert any("log_softmax" in n for n in snn.meta["notes"])
    # the default calibration ("auto") is the percentile for a graph network (no refit yet);
    # asked for explicitly, the refit is refused by name
    assert snn.config["calibration"] == "percentile"
    with pytest.raises(ValueError, match="not implemented for graph networks"):
        convert(model, x, ConversionConfig(calibration="weights"), progress=False)


def test_one_hot_features_are_one_spike_per_node(graph):
    adj, _ = graph
    model = trained_like(gcn.TextGCN(adj, 4, hidden=10), 3)
    eye = graphs.sparse_identity(40)
    ref = model(eye).detach()
    snn = convert(model, eye, progress=False)
    assert snn.input_shape == (1, 40, 1) and snn.meta["graph"]["one_hot"]
    assert [s.op for s in snn.layers[1].synapses] == ["embedding"]
    _close(golden.run(snn, eye, "ann", device=CPU).logits, ref, 1e-5)
    r = golden.run(snn, torch.eye(40), "exact", device=CPU)  # a dense identity works too
    assert r.counts["spikes"][0] == 40  # each node's input neuron sends one spike
    assert bool((r.spikes[0][:, 0] == 1).all()) and int(r.spikes[0][:, 1:].abs().sum()) == 0
    with pytest.raises(ValueError, match="identity"):
        golden.run(snn, torch.ones(40, 40), "exact", device=CPU)


def test_int_mode_matches_exact_and_the_artifact_round_trips(graph, tmp_path):
    adj, x = graph
    model = trained_like(gcn.GCN(adj, 12, 3, hidden=8), 4)
    snn = convert(model, x, progress=False)
    graph_syn = snn.layers[2].synapses[0]
    assert graph_syn.weight_q.dtype == np.int16 and graph_syn.index.dtype == np.int32
    exact = golden.run(snn, x, "exact", device=CPU)
    got = golden.run(snn, x, "int", device=CPU)
    assert (got.predictions == exact.predictions).double().mean() > 0.85
    path = snn.save(tmp_path / "gcn.onespike")
    back = load(path)
    again = golden.run(back, x, "int", device=CPU)
    assert torch.equal(again.logits_int, got.logits_int)
    assert back.meta["graph"] == snn.meta["graph"]
    for a, b in zip(got.spikes, again.spikes, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    # the ANN does the product Â·H once, though the SNN reads two rails
    nnz = graph_syn.index.shape[1]
    assert got.counts["ann_macs"][2] == nnz * 8
    assert got.counts["neurons"][1] == 8 * 40  # 16 rail neurons per node, 8 values


def test_corrupt_graph_index_is_refused(graph, tmp_path):
    import dataclasses

    from converter.model import validate, with_layers

    adj, x = graph
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=8), 5), x, progress=False)
    lay = snn.layers[2]
    bad = lay.synapses[0].index.copy()
    bad[1, 0] = 99  # a node that does not exist
    syn = dataclasses.replace(lay.synapses[0], index=bad)
    new = dataclasses.replace(lay, synapses=(syn, lay.synapses[1]))
    broken = with_layers(snn, [*snn.layers[:2], new, *snn.layers[3:]])
    with pytest.raises(ArtifactError, match="outside"):
        validate(broken)


class FromInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 4)

    def forward(self, x):
        a = torch.softmax(x @ x.t(), dim=1)  # attention: Â computed from the input
        return a @ self.lin(x)


class Tanh(nn.Module):
    def __init__(self, adj):
        super().__init__()
        self.register_buffer("adj", adj)
        self.lin = nn.Linear(12, 4)

    def forward(self, x):
        return torch.tanh(torch.sparse.mm(self.adj, self.lin(x)))


def test_what_cannot_be_converted_is_refused_by_node(graph):
    adj, x = graph
    with pytest.raises(UnsupportedModelError, match="node 'matmul'"):
        convert(FromInput(), x[:, :12], progress=False)
    with pytest.raises(UnsupportedModelError, match="node 'tanh'.*not a ReLU network"):
        convert(Tanh(adj), x, progress=False)


def test_graph_snn_runs_on_hwsim(graph):
    """hwsim takes the node features as golden does and gives golden int's output potentials
    (the full checks: tests/test_hwsim_graph.py)."""
    from hwsim import ArchConfig, simulate

    adj, x = graph
    snn = convert(trained_like(gcn.GCN(adj, 12, 3, hidden=8), 6), x, progress=False)
    r = simulate(snn, x, ArchConfig())
    g = golden.run(snn, x, "int", device=CPU)
    assert torch.equal(torch.as_tensor(r.logits_int), g.logits_int)


def test_cora_converts_within_a_point():
    """The real thing, small: Cora's trained GCN, exact and int within 1.5 points of the ANN
    on the 1,000 test nodes (the benchmark, benchmarks/gcn.py, reports the spread)."""
    data, model, snn = trained_cora(100)
    x = data.features()
    ann = data.accuracy(model(x).detach())
    for mode in ("exact", "int"):
        r = golden.run(snn, x, mode, device=CPU)
        logits = r.logits_int.double() if mode == "int" else r.logits
        assert data.accuracy(logits) > ann - 1.5, mode
