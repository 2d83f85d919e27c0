"""Graph data and GCN models (onespike.graphs, onespike.gcn): sizes as ../shared/data/SOURCES.md
states them, the normalisation, TF-IDF and PMI against hand-computed values, a short Cora
training run, and torch.fx tracing of both models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from onespike import gcn, graphs
from tests.conftest import _require


@pytest.fixture(scope="module")
def cora() -> graphs.GraphData:
    _require("planetoid/cora.npz")
    return graphs.load_planetoid("cora")


@pytest.fixture(scope="module")
def mr() -> graphs.GraphData:
    _require("textgcn/mr.txt")
    _require("textgcn/mr.clean.txt.gz")
    return graphs.build_textgcn("mr")


def _dense_sym_check(adj: torch.Tensor) -> None:
    a = adj.coalesce()
    at = adj.t().coalesce()
    assert a.dtype == torch.float32 and a.is_coalesced()
    assert torch.equal(a.indices(), at.indices())
    assert torch.equal(a.values(), at.values())


def _check_normalised(adj: torch.Tensor) -> None:
    """Â = D^-1/2 (A + I) D^-1/2 with unit self loops: Â_ii = 1/d_i, and Â d^1/2 = d^1/2."""
    a = adj.coalesce()
    idx, val = a.indices(), a.values().double()
    diag = torch.zeros(a.shape[0], dtype=torch.float64)
    on = idx[0] == idx[1]
    diag[idx[0, on]] = val[on]
    assert bool((diag > 0).all()), "every node has a self loop"
    sqrt_d = (1.0 / diag).sqrt()
    lhs = torch.sparse_coo_tensor(idx, val, a.shape, check_invariants=False) @ sqrt_d.unsqueeze(1)
    torch.testing.assert_close(lhs.squeeze(1), sqrt_d, rtol=1e-5, atol=0)
    assert bool((val > 0).all())


@pytest.mark.parametrize(
    ("name", "nodes", "features", "classes", "edges", "splits"),
    [
        ("cora", 2708, 1433, 7, 10556, (140, 500, 1000)),
        ("citeseer", 3327, 3703, 6, 9104, (120, 500, 1000)),
    ],
)
def test_planetoid_sizes(name, nodes, features, classes, edges, splits):
    _require(f"planetoid/{name}.npz")
    g = graphs.load_planetoid(name)
    assert (g.num_nodes, g.num_features, g.num_classes) == (nodes, features, classes)
    assert g.info["edges_directed"] == edges
    assert g.adj._nnz() == edges + nodes  # A without self loops, plus I
    assert tuple(len(g.index(s)) for s in ("train", "val", "test")) == splits
    assert g.x.shape == (nodes, features) and g.x.dtype == torch.float32
    sums = g.x.sum(1)
    nonzero = sums > 0
    torch.testing.assert_close(sums[nonzero], torch.ones(int(nonzero.sum())))
    _dense_sym_check(g.adj)
    _check_normalised(g.adj)
    # the scored nodes all carry a label (Citeseer's 15 label −1 nodes are in no split)
    for s in ("train", "val", "test"):
        assert bool((g.labels[g.index(s)] >= 0).all())


def test_textgcn_mr_graph(mr):
    info = mr.info
    assert (mr.num_nodes, info["documents"], info["words"]) == (29426, 10662, 18764)
    assert (info["train_documents"], info["test_documents"]) == (7108, 3554)
    assert mr.adj._nnz() == 2 * info["doc_word_edges"] + 2 * info["word_word_edges"] + 29426
    assert mr.num_classes == 2 and mr.identity_features and mr.x is None
    assert len(mr.val_index) == int(0.1 * 7108)
    assert len(mr.train_index) + len(mr.val_index) == 7108
    assert len(mr.test_index) == 3554
    # documents first, then words: split indices are documents, word labels are −1
    assert bool((mr.labels[10662:] == -1).all()) and bool((mr.labels[:10662] >= 0).all())
    all_idx = torch.cat([mr.train_index, mr.val_index, mr.test_index])
    assert len(set(all_idx.tolist())) == 10662 and int(all_idx.max()) < 10662
    _dense_sym_check(mr.adj)
    _check_normalised(mr.adj)
    feats = mr.features()
    assert feats.layout == torch.sparse_coo and feats._nnz() == 29426


def test_textgcn_r8_size():
    _require("textgcn/R8.txt")
    _require("textgcn/R8.clean.txt.gz")
    g = graphs.build_textgcn("r8", seed=1)
    assert (g.num_nodes, g.info["documents"], g.info["words"]) == (15362, 7674, 7688)
    assert (g.info["train_documents"], g.info["test_documents"]) == (5485, 2189)
    assert g.num_classes == 8 and len(g.val_index) == 548
    assert g.adj._nnz() == 2 * g.info["doc_word_edges"] + 2 * g.info["word_word_edges"] + 15362


def test_tfidf_hand_computed():
    # words: a=0, b=1, c=2, d=3, e=4 (e in every document: idf 0, no edge)
    docs = [np.array(d) for d in ([0, 1, 0, 4], [1, 2, 4], [2, 2, 3, 4])]
    t = graphs.tfidf_matrix(docs, 5).toarray()
    l3, l15 = math.log(3 / 1), math.log(3 / 2)
    expected = np.array(
        [
            [2 * l3, l15, 0, 0, 0],
            [0, l15, l15, 0, 0],
            [0, 0, 2 * l15, l3, 0],
        ]
    )
    np.testing.assert_allclose(t, expected, rtol=1e-12)
    assert graphs.tfidf_matrix(docs, 5).nnz == 6


def test_pmi_hand_computed_and_positive():
    a, b, c, d, e, f = range(6)
    # window 3: "a b c d" -> [a b c], [b c d]; "a b" and "e f" are one window each: #W = 4
    docs = [np.array([a, b, c, d]), np.array([a, b]), np.array([e, f])]
    pmi, n_windows = graphs.pmi_matrix(docs, 6, window=3)
    assert n_windows == 4
    # #W(a)=2 #W(b)=3 #W(c)=2 #W(d)=1 #W(e)=#W(f)=1
    expected = {
        (a, b): math.log(2 * 4 / (2 * 3)),
        (b, c): math.log(2 * 4 / (3 * 2)),
        (b, d): math.log(1 * 4 / (3 * 1)),
        (c, d): math.log(1 * 4 / (2 * 1)),
        (e, f): math.log(1 * 4 / (1 * 1)),
    }  # (a, c): log(1*4/(2*2)) = 0, not > 0: no edge
    got = pmi.todok()
    assert len(got) == 2 * len(expected)
    for (i, j), v in expected.items():
        assert got[i, j] == pytest.approx(v, rel=1e-12)
        assert got[j, i] == pytest.approx(v, rel=1e-12)
    # a repeated word: the paper counts windows, the reference code position pairs
    rep = [np.array([a, b, a])]
    assert graphs.pmi_matrix(rep, 2, window=3)[0].nnz == 0  # log(1·1/(1·1)) = 0
    ref, _ = graphs.pmi_matrix(rep, 2, window=3, pair_count="reference")
    assert ref[0, 1] == pytest.approx(math.log(2))


def test_textgcn_adjacency_layout():
    t = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 2.0], [0.0, 3.0]]))  # 3 docs, 2 words
    p = sp.csr_matrix(np.array([[0.0, 0.7], [0.7, 0.0]]))
    a = graphs.textgcn_adjacency(t, p).toarray()
    expected = np.eye(5)
    expected[:3, 3:] = t.toarray()
    expected[3:, :3] = t.toarray().T
    expected[3:, 3:] += p.toarray()
    np.testing.assert_array_equal(a, expected)
    n = graphs.normalize_adjacency(a, add_self_loops=False).toarray()
    d = expected.sum(1)
    np.testing.assert_allclose(n, expected / np.sqrt(np.outer(d, d)), rtol=1e-12)


def test_pmi_of_real_corpus_only_positive(mr):
    assert bool((mr.adj.coalesce().values() > 0).all())
    from onespike.graphs import _read_corpus

    _, _, texts = _read_corpus("mr")
    tokens = [t.split() for t in texts[:2000]]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in tokens for w in ws}))}
    docs = [np.array([vocab[w] for w in ws], dtype=np.int64) for ws in tokens]
    pmi, _ = graphs.pmi_matrix(docs, len(vocab))
    assert pmi.nnz > 0 and bool((pmi.data > 0).all())
    assert (pmi != pmi.T).nnz == 0 and pmi.diagonal().sum() == 0


def test_accuracy_skips_unlabelled():
    adj = graphs.sparse_identity(4)
    g = graphs.GraphData(
        name="t",
        x=torch.zeros(4, 1),
        adj=adj,
        labels=torch.tensor([0, 1, -1, 1]),
        train_index=torch.tensor([0]),
        val_index=torch.tensor([1]),
        test_index=torch.tensor([1, 2, 3]),
        num_classes=2,
    )
    logits = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]])
    assert g.accuracy(logits, "test") == 50.0  # node 2 (label −1) not scored
    assert g.accuracy(logits, "train") == 100.0


def test_missing_data_message(monkeypatch, tmp_path):
    monkeypatch.setenv("ONESPIKE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ONESPIKE_DATA"):
        graphs.load_planetoid("cora")
    with pytest.raises(FileNotFoundError, match="ONESPIKE_DATA"):
        graphs.build_textgcn("r8")
    with pytest.raises(ValueError, match="unknown"):
        graphs.load_graph("pubmed")


def test_gcn_trains_on_cora(cora, one_thread):
    model = gcn.build_model(cora)
    model, hist = gcn.train_gcn(cora, model, seed=0)
    assert not model.training
    assert hist["epochs_run"] == 200 and hist["hyper"]["lr"] == 0.01
    assert hist["test_acc"] > 75.0, hist["test_acc"]
    with torch.no_grad():
        assert cora.accuracy(model(cora.x)) == hist["test_acc"]


def test_training_is_seeded_and_fast_path_exact(cora, one_thread):
    runs = [
        gcn.train_gcn(cora, gcn.build_model(cora), seed=3, epochs=15, fast_aggregation=fast)[1]
        for fast in (True, True, False)
    ]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    np.testing.assert_allclose(runs[0]["train_loss"], runs[2]["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(runs[0]["val_loss"], runs[2]["val_loss"], rtol=1e-5)


def test_textgcn_early_stopping_restores_best(one_thread):
    # a 2-community toy graph: identity features, 6 documents + 4 words
    rng = np.random.default_rng(0)
    t = sp.csr_matrix(rng.random((6, 4)) * (rng.random((6, 4)) < 0.6))
    adj = graphs.normalize_adjacency(graphs.textgcn_adjacency(t, sp.csr_matrix((4, 4))), False)
    g = graphs.GraphData(
        name="toy",
        x=None,
        adj=graphs.to_torch_sparse(adj),
        labels=torch.tensor([0, 1, 0, 1, 0, 1, -1, -1, -1, -1]),
        train_index=torch.tensor([0, 1, 2, 3]),
        val_index=torch.tensor([4]),
        test_index=torch.tensor([5]),
        num_classes=2,
        identity_features=True,
    )
    model, hist = gcn.train_gcn(g, gcn.build_model(g, hidden=8), seed=0, patience=3)
    assert hist["hyper"]["lr"] == 0.02 and hist["hyper"]["weight_decay"] == 0.0
    assert hist["epochs_run"] <= 200
    if hist["stopped_early"]:
        assert hist["epochs_run"] == hist["best_epoch"] + 3
    with torch.no_grad():
        out = model(g.features())
        val = torch.nn.functional.cross_entropy(out[g.val_index], g.labels[g.val_index]).item()
    assert val == pytest.approx(min(hist["val_loss"]), rel=1e-5)


def _products(traced: torch.fx.GraphModule) -> tuple[int, int]:
    mods = [n for n in traced.graph.nodes if n.op == "call_module" and "lin" in str(n.target)]
    aggs = [n for n in traced.graph.nodes if n.target is torch.sparse.mm]
    return len(mods), len(aggs)


def test_fx_trace_gcn(cora):
    model = gcn.build_model(cora).eval()
    traced = torch.fx.symbolic_trace(model)
    assert _products(traced) == (2, 2)
    with torch.no_grad():
        torch.testing.assert_close(traced(cora.x), model(cora.x))
    assert model(cora.x).shape == (2708, 7)


def test_fx_trace_textgcn(mr):
    model = gcn.build_model(mr).eval()
    assert isinstance(model, gcn.TextGCN) and model.lin0.weight.shape == (200, 29426)
    traced = torch.fx.symbolic_trace(model)
    assert _products(traced) == (2, 2)
    x = mr.features()
    with torch.no_grad():
        out = traced(x)
        torch.testing.assert_close(out, model(x))
    assert out.shape == (29426, 2)


def test_textgcn_split_is_seeded(mr):
    built = graphs.build_textgcn("mr", seed=1)
    again = graphs.resplit_validation(mr, seed=1)
    assert torch.equal(again.val_index, built.val_index)
    assert torch.equal(again.train_index, built.train_index)
    assert not torch.equal(built.val_index, mr.val_index)
    assert torch.equal(graphs.resplit_validation(mr, seed=0).val_index, mr.val_index)
    assert again.adj is mr.adj
