"""Graph data sets for GCNs: the Planetoid citation graphs (Cora, Citeseer) and the Text GCN
document-word graphs (R8, MR), from the files in ``../shared/data`` (see its SOURCES.md).

Every graph is one :class:`GraphData`: node features (or the flag that they are the identity),
the normalised adjacency Â as a float32 coalesced torch sparse COO tensor, node labels and the
train / validation / test node indices (transductive: the whole graph runs, the indexed nodes
are scored).

Sources of the formulas
-----------------------
* Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks",
  ICLR 2017, Eq. 2 / Sec. 2.1 and the reference code ``tkipf/gcn`` (``utils.py``):
  Â = D̃^-1/2 (A + I) D̃^-1/2 with D̃_ii = Σ_j (A + I)_ij; features row-normalised
  (each row divided by its sum; all-zero rows stay zero).
* Yao, Mao & Luo, "Graph Convolutional Networks for Text Classification", AAAI 2019, Sec. 3
  (the edge weights and the two-layer model) and the reference code ``yao8839836/text_gcn``
  (``build_graph.py``):
  document-word weight TF-IDF = tf · log(#docs / df), word-word weight
  PMI(i, j) = log(p(i, j) / (p(i) p(j))) with p(i, j) = #W(i, j) / #W and p(i) = #W(i) / #W over
  sliding windows of 20 words, kept only where PMI > 0; self loops of weight 1;
  Â = D^-1/2 A D^-1/2 with A symmetric and including the self loops.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from onespike.data import data_root

__all__ = [
    "PLANETOID_NAMES",
    "TEXTGCN_NAMES",
    "GraphData",
    "build_textgcn",
    "load_graph",
    "load_planetoid",
    "normalize_adjacency",
    "pmi_matrix",
    "resplit_validation",
    "row_normalize",
    "sparse_identity",
    "textgcn_adjacency",
    "tfidf_matrix",
    "to_torch_sparse",
]

#: Planetoid citation graphs in ``planetoid/<name>.npz``.
PLANETOID_NAMES: tuple[str, ...] = ("cora", "citeseer")
#: Text GCN corpora: name -> (label file, cleaned-text file) in ``textgcn/``.
TEXTGCN_NAMES: dict[str, tuple[str, str]] = {
    "r8": ("R8.txt", "R8.clean.txt.gz"),
    "mr": ("mr.txt", "mr.clean.txt.gz"),
}
_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# The data container
# --------------------------------------------------------------------------------------------


@dataclass
class GraphData:
    """One graph for transductive node classification.

    Attributes
    ----------
    name
        Data set name (``"cora"``, ``"citeseer"``, ``"r8"``, ``"mr"``).
    x
        Node features, float32 (N, F), dense; ``None`` when ``identity_features`` (Text GCN's
        X = I, which is never stored: see :meth:`features`).
    adj
        Â, float32 (N, N) torch sparse COO tensor, coalesced, symmetric.
    labels
        int64 (N,): the class of each node, −1 for nodes without one (Text GCN's word nodes,
        15 Citeseer nodes). Nodes with label −1 are never scored.
    train_index, val_index, test_index
        int64 node indices of the three splits (disjoint).
    num_classes
        Number of classes C (labels are 0..C−1).
    identity_features
        True when the features are the one-hot node ids (X = I, F = N).
    class_names
        Name of each class, index = label (Text GCN corpora; for Planetoid the class numbers).
    info
        Sizes and timings of the build: ``build_seconds``, edge counts, and for Text GCN the
        vocabulary size, window count and the number of each kind of edge.
    """

    name: str
    x: torch.Tensor | None
    adj: torch.Tensor
    labels: torch.Tensor
    train_index: torch.Tensor
    val_index: torch.Tensor
    test_index: torch.Tensor
    num_classes: int
    identity_features: bool = False
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        """N, the number of nodes."""
        return int(self.adj.shape[0])

    @property
    def num_features(self) -> int:
        """F, the input width of the first layer (N for identity features)."""
        return self.num_nodes if self.identity_features else int(self.x.shape[1])

    def features(self) -> torch.Tensor:
        """The model input: ``x``, or for identity features a sparse COO identity (N, N).

        A dense identity for MR would be 29,426² float32 = 3.5 GB; the sparse one holds N
        entries and ``nn.Linear`` accepts it (``I @ W.T`` = ``W.T``).
        """
        if self.identity_features:
            return sparse_identity(self.num_nodes, device=self.adj.device)
        return self.x

    def index(self, split: str) -> torch.Tensor:
        """Node indices of ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        return getattr(self, f"{split}_index")

    def accuracy(self, logits: torch.Tensor, split: str = "test") -> float:
        """Percentage of the scored nodes of ``split`` whose argmax of ``logits`` is their label.

        Parameters
        ----------
        logits
            (N, C) scores of every node (the whole graph, as the model returns it).
        split
            ``"train"``, ``"val"`` or ``"test"``; nodes labelled −1 are left out.

        Returns
        -------
        float
            Accuracy in percent, in [0, 100].
        """
        if logits.shape[0] != self.num_nodes:
            raise ValueError(f"logits for {logits.shape[0]} nodes, graph has {self.num_nodes}")
        idx = self.index(split).to(logits.device)
        y = self.labels.to(logits.device)[idx]
        keep = y >= 0
        if not bool(keep.any()):
            raise ValueError(f"no labelled node in split {split!r}")
        pred = logits.detach()[idx].argmax(1)
        return 100.0 * (pred[keep] == y[keep]).double().mean().item()


# --------------------------------------------------------------------------------------------
# Sparse helpers
# --------------------------------------------------------------------------------------------


def sparse_identity(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The (n, n) float32 identity as a coalesced torch sparse COO tensor (n stored entries)."""
    i = torch.arange(n, device=device)
    return torch.sparse_coo_tensor(
        torch.stack([i, i]),
        torch.ones(n, device=device),
        (n, n),
        is_coalesced=True,
        check_invariants=False,
    )


def to_torch_sparse(m: sp.spmatrix) -> torch.Tensor:
    """A scipy sparse matrix as a float32 coalesced torch sparse COO tensor (row-major order)."""
    m = sp.coo_matrix(sp.csr_matrix(m, dtype=np.float64))  # canonical: sorted, no duplicates
    idx = torch.from_numpy(np.vstack([m.row, m.col]).astype(np.int64))
    val = torch.from_numpy(m.data.astype(np.float32))
    return torch.sparse_coo_tensor(
        idx, val, m.shape, is_coalesced=True, check_invariants=False
    ).coalesce()


def normalize_adjacency(a: sp.spmatrix, add_self_loops: bool = True) -> sp.csr_matrix:
    """Symmetric normalisation Â = D^-1/2 (A [+ I]) D^-1/2 (Kipf & Welling 2017, Eq. 2).

    Parameters
    ----------
    a
        (N, N) symmetric non-negative weights, float.
    add_self_loops
        Add I before normalising (weight 1 on every diagonal entry; an existing diagonal is
        added to).

    Returns
    -------
    scipy.sparse.csr_matrix
        float64 Â, with D_ii = Σ_j (A + I)_ij the weighted degree; rows of degree 0 stay 0.
        Its spectral radius is 1: Â d^1/2 = d^1/2 for the degree vector d.
    """
    a = sp.csr_matrix(a, dtype=np.float64)
    if add_self_loops:
        a = a + sp.identity(a.shape[0], dtype=np.float64, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(deg), 0.0)
    a = a.tocoo()
    # inv_sqrt[i] * inv_sqrt[j] is commutative, so a symmetric A gives an exactly symmetric Â
    vals = a.data * (inv_sqrt[a.row] * inv_sqrt[a.col])
    out = sp.csr_matrix((vals, (a.row, a.col)), shape=a.shape)
    out.sort_indices()
    return out


def row_normalize(x: np.ndarray) -> np.ndarray:
    """Divide each row by its sum (Kipf & Welling's ``preprocess_features``); zero rows stay 0."""
    s = x.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, x / np.where(s > 0, s, 1), 0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Planetoid
# --------------------------------------------------------------------------------------------


def _find(subpath: str, what: str) -> Path:
    path = data_root() / subpath
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {path} (set the ONESPIKE_DATA environment variable to the "
            "shared data folder, normally <repo>/../shared/data, which holds planetoid/ and "
            "textgcn/)"
        )
    return path


def load_planetoid(name: str) -> GraphData:
    """Load Cora or Citeseer from ``planetoid/<name>.npz`` as Kipf & Welling (2017) use it.

    Parameters
    ----------
    name
        ``"cora"`` (2,708 nodes, 1,433 features, 7 classes, 10,556 directed edges) or
        ``"citeseer"`` (3,327 nodes, 3,703 features, 6 classes, 9,104 directed edges).

    Returns
    -------
    GraphData
        ``x`` float32 (N, F) row-normalised bag of words (each row sums to 1, empty rows 0);
        ``adj`` Â = D^-1/2 (A + I) D^-1/2 with A the 0/1 symmetric citation matrix;
        the published Planetoid split (20 labelled nodes per class for training, 500 for
        validation, 1,000 for testing). Citeseer's 15 nodes labelled −1 (none of them in a
        split) are excluded from scoring.

    Raises
    ------
    FileNotFoundError
        If the .npz is not in the data folder.
    ValueError
        For an unknown name.
    """
    name = name.lower()
    if name not in PLANETOID_NAMES:
        raise ValueError(f"unknown Planetoid graph {name!r}; choose from {PLANETOID_NAMES}")
    t0 = time.perf_counter()
    path = _find(f"planetoid/{name}.npz", f"Planetoid graph {name!r}")
    with np.load(path) as z:
        feats = z["features"].astype(np.float32)
        labels = z["labels"].astype(np.int64)
        edges = z["edges"].astype(np.int64)
        split = {s: z[f"{s}_index"].astype(np.int64) for s in _SPLITS}
    n = feats.shape[0]
    a = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    a.data[:] = 1.0  # 0/1 adjacency even if an edge were listed twice
    adj = normalize_adjacency(a, add_self_loops=True)
    num_classes = int(labels.max()) + 1
    return GraphData(
        name=name,
        x=torch.from_numpy(row_normalize(feats)),
        adj=to_torch_sparse(adj),
        labels=torch.from_numpy(labels),
        train_index=torch.from_numpy(split["train"]),
        val_index=torch.from_numpy(split["val"]),
        test_index=torch.from_numpy(split["test"]),
        num_classes=num_classes,
        class_names=[str(c) for c in range(num_classes)],
        info={
            "nodes": n,
            "features": int(feats.shape[1]),
            "edges_directed": int(a.nnz),
            "adj_nnz": int(adj.nnz),
            "unlabelled_nodes": int((labels < 0).sum()),
            "build_seconds": time.perf_counter() - t0,
        },
    )


# --------------------------------------------------------------------------------------------
# Text GCN
# --------------------------------------------------------------------------------------------


def tfidf_matrix(docs: list[np.ndarray], vocab_size: int) -> sp.csr_matrix:
    """Document-word TF-IDF weights of Text GCN (Yao et al. 2019, Sec. 3; ``build_graph.py``).

    TF-IDF(d, w) = tf(d, w) · log(#docs / df(w)), with tf the raw number of times word w occurs
    in document d, df(w) the number of documents containing w, #docs all documents (train and
    test) and log the natural logarithm. A word in every document gets weight 0 (no edge).

    Parameters
    ----------
    docs
        One int array of word ids (0..vocab_size−1) per document, in reading order.
    vocab_size
        V.

    Returns
    -------
    scipy.sparse.csr_matrix
        float64 (#docs, V), zeros not stored.
    """
    rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    cols = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    tf = sp.csr_matrix(
        (np.ones(len(cols)), (rows, cols)), shape=(len(docs), vocab_size), dtype=np.float64
    )
    tf.sum_duplicates()
    df = np.bincount(tf.indices, minlength=vocab_size)
    with np.errstate(divide="ignore"):
        idf = np.where(df > 0, np.log(len(docs) / np.maximum(df, 1)), 0.0)
    out = tf.multiply(idf[None, :]).tocsr()
    out.eliminate_zeros()
    return out


def _window_matrix(docs: list[np.ndarray], vocab_size: int, window: int) -> sp.csr_matrix:
    """(#windows, V) counts of each word in each sliding window (Text GCN's windows: a document
    of at most ``window`` words is one window, a longer one gives len − window + 1)."""
    parts = []
    for d in docs:
        if len(d) == 0:
            continue
        if len(d) <= window:
            parts.append(d[None, :])
        else:
            parts.append(np.lib.stride_tricks.sliding_window_view(d, window))
    rows_list, cols_list, start = [], [], 0
    for p in parts:
        k, w = p.shape
        rows_list.append(np.repeat(np.arange(start, start + k), w))
        cols_list.append(p.ravel())
        start += k
    rows = np.concatenate(rows_list) if rows_list else np.zeros(0, np.int64)
    cols = np.concatenate(cols_list) if cols_list else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(start, vocab_size))
    m.sum_duplicates()
    return m


def pmi_matrix(
    docs: list[np.ndarray], vocab_size: int, window: int = 20, pair_count: str = "windows"
) -> tuple[sp.csr_matrix, int]:
    """Word-word PMI weights of Text GCN over sliding windows (Yao et al. 2019, Sec. 3).

    PMI(i, j) = log( p(i, j) / (p(i) p(j)) ) = log( #W(i, j) · #W / (#W(i) · #W(j)) ), with #W
    the number of windows, #W(i) the number of windows containing word i and #W(i, j) (i ≠ j)
    the number of windows containing both i and j (the paper's definition). Only pairs with
    PMI > 0 are kept; the diagonal is empty (self loops are added later, weight 1).

    Parameters
    ----------
    docs, vocab_size
        As in :func:`tfidf_matrix`.
    window
        Window length in words (20 in the paper).
    pair_count
        ``"windows"`` (default): #W(i, j) counts windows, as the paper defines it.
        ``"reference"``: as the reference ``build_graph.py`` counts, Σ over windows of
        n_i · n_j (every pair of positions holding i and j), which differs from ``"windows"``
        only in windows where i or j occurs more than once; #W(i) is the same in both.

    Returns
    -------
    pmi, num_windows
        float64 symmetric (V, V) csr matrix of the positive PMI values, and #W.
    """
    if pair_count not in ("windows", "reference"):
        raise ValueError(f"pair_count must be 'windows' or 'reference', got {pair_count!r}")
    counts = _window_matrix(docs, vocab_size, window)
    num_windows = counts.shape[0]
    binary = counts.copy()
    binary.data[:] = 1.0
    freq = np.asarray(binary.sum(axis=0)).ravel()  # #W(i)
    m = binary if pair_count == "windows" else counts
    co = (m.T @ m).tocoo()  # #W(i, j); the diagonal is dropped below
    keep = co.row != co.col
    r, c, n_ij = co.row[keep], co.col[keep], co.data[keep]
    pmi = np.log(n_ij * num_windows / (freq[r] * freq[c]))
    pos = pmi > 0
    out = sp.csr_matrix((pmi[pos], (r[pos], c[pos])), shape=(vocab_size, vocab_size))
    out.sort_indices()
    return out, num_windows


def textgcn_adjacency(tfidf: sp.csr_matrix, pmi: sp.csr_matrix) -> sp.csr_matrix:
    """The symmetric weights A of the Text GCN graph, documents first, then words, with self
    loops of weight 1 (not yet normalised).

    A = [[I, T], [Tᵀ, P + I]] with T the (#docs, V) TF-IDF matrix and P the (V, V) PMI matrix.
    """
    nd, v = tfidf.shape
    a = sp.bmat([[None, tfidf], [tfidf.T, pmi]], format="csr", dtype=np.float64)
    a = a + sp.identity(nd + v, dtype=np.float64, format="csr")
    a.sort_indices()
    return a


def _read_corpus(name: str) -> tuple[list[str], list[str], list[str]]:
    """(split of each document, label of each document, cleaned text of each document)."""
    label_file, text_file = TEXTGCN_NAMES[name]
    meta_path = _find(f"textgcn/{label_file}", f"Text GCN corpus {name!r}")
    text_path = _find(f"textgcn/{text_file}", f"Text GCN corpus {name!r}")
    splits, labels = [], []
    for i, line in enumerate(meta_path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[1] not in ("train", "test"):
            raise ValueError(f"{meta_path}: line {i + 1} is not 'index<TAB>train|test<TAB>label'")
        splits.append(parts[1])
        labels.append(parts[2])
    with gzip.open(text_path, "rt", encoding="utf-8") as f:
        texts = f.read().split("\n")
    if len(texts) == len(splits) + 1 and texts[-1] == "":
        texts = texts[:-1]
    if len(texts) != len(splits):
        raise ValueError(f"{text_path} has {len(texts)} documents, {meta_path} {len(splits)}")
    return splits, labels, texts


def _cache_key(name: str, window: int, pair_count: str) -> str:
    label_file, text_file = TEXTGCN_NAMES[name]
    h = hashlib.sha256()
    for f in (label_file, text_file):
        h.update((data_root() / "textgcn" / f).read_bytes())
    h.update(f"{window}:{pair_count}".encode())
    return f"textgcn-{name}-{h.hexdigest()[:16]}.npz"


def build_textgcn(
    name: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    window: int = 20,
    pair_count: str = "windows",
    cache_dir: str | os.PathLike[str] | None = None,
) -> GraphData:
    """Build the heterogeneous document + word graph of Text GCN for R8 or MR.

    Nodes: the documents in file order (train and test, as in ``<corpus>.txt``), then the
    words of the vocabulary (every distinct token of the cleaned corpus) in sorted order.
    Edges (:func:`textgcn_adjacency`): document-word TF-IDF (:func:`tfidf_matrix`), word-word
    positive PMI over sliding windows of ``window`` words (:func:`pmi_matrix`), a self loop of
    weight 1 on every node; Â = D^-1/2 A D^-1/2 with D the weighted degree of A.
    Features: X = I (``identity_features``; :meth:`GraphData.features` gives a sparse identity).

    Parameters
    ----------
    name
        ``"r8"`` (7,674 documents + 7,688 words = 15,362 nodes, 8 classes) or ``"mr"``
        (10,662 + 18,764 = 29,426 nodes, 2 classes).
    seed
        Seed of the validation split: ``int(val_fraction · #train)`` training documents,
        drawn by ``numpy.random.default_rng(seed).permutation``, are held out for validation
        (as the reference code: 10 %, rounded down); the rest train. The graph itself does not
        depend on the seed.
    val_fraction
        Fraction of training documents held out (0.1 in the paper).
    window
        Sliding-window length for PMI (20 in the paper).
    pair_count
        How #W(i, j) is counted, see :func:`pmi_matrix`.
    cache_dir
        Optional folder for the built Â (one .npz keyed by the corpus files' hash, window and
        pair_count). Default: no cache, nothing written.

    Returns
    -------
    GraphData
        ``labels`` −1 on word nodes; ``info`` has ``documents``, ``words``, ``windows``,
        ``doc_word_edges`` and ``word_word_edges`` (undirected pairs), ``self_loops``,
        ``adj_nnz`` (stored entries of Â = 2·doc_word + 2·word_word + N) and ``build_seconds``.

    Raises
    ------
    FileNotFoundError
        If the corpus files are not in the data folder.
    ValueError
        For an unknown name or a malformed corpus.
    """
    name = name.lower()
    if name not in TEXTGCN_NAMES:
        raise ValueError(f"unknown Text GCN corpus {name!r}; choose from {tuple(TEXTGCN_NAMES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    t0 = time.perf_counter()
    splits, label_names, texts = _read_corpus(name)
    tokens = [t.split() for t in texts]
    vocab = sorted({w for ws in tokens for w in ws})
    word_id = {w: i for i, w in enumerate(vocab)}
    docs = [np.fromiter((word_id[w] for w in ws), np.int64, len(ws)) for ws in tokens]
    nd, v = len(docs), len(vocab)

    cached = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / _cache_key(name, window, pair_count)
        if cache_path.exists():
            with np.load(cache_path) as z:
                cached = (
                    sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"])),
                    {k: int(z[k]) for k in ("windows", "doc_word_edges", "word_word_edges")},
                )
    if cached is None:
        tfidf = tfidf_matrix(docs, v)
        pmi, num_windows = pmi_matrix(docs, v, window, pair_count)
        adj = normalize_adjacency(textgcn_adjacency(tfidf, pmi), add_self_loops=False)
        counts = {
            "windows": int(num_windows),
            "doc_word_edges": int(tfidf.nnz),
            "word_word_edges": int(pmi.nnz // 2),
        }
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            np.savez(
                cache_path,
                data=adj.data,
                indices=adj.indices,
                indptr=adj.indptr,
                shape=np.array(adj.shape),
                **{k: np.array(val) for k, val in counts.items()},
            )
    else:
        adj, counts = cached

    class_names = sorted(set(label_names))
    cls = {c: i for i, c in enumerate(class_names)}
    labels = np.full(nd + v, -1, np.int64)
    labels[:nd] = [cls[c] for c in label_names]
    split_arr = np.array(splits)
    train_docs = np.flatnonzero(split_arr == "train")
    test_docs = np.flatnonzero(split_arr == "test")
    n_val = int(val_fraction * len(train_docs))
    perm = np.random.default_rng(seed).permutation(len(train_docs))
    val_docs = np.sort(train_docs[perm[:n_val]])
    real_train = np.sort(train_docs[perm[n_val:]])
    return GraphData(
        name=name,
        x=None,
        adj=to_torch_sparse(adj),
        labels=torch.from_numpy(labels),
        train_index=torch.from_numpy(real_train),
        val_index=torch.from_numpy(val_docs),
        test_index=torch.from_numpy(test_docs),
        num_classes=len(class_names),
        identity_features=True,
        class_names=class_names,
        info={
            "nodes": nd + v,
            "documents": nd,
            "words": v,
            "train_documents": int(len(train_docs)),
            "test_documents": int(len(test_docs)),
            **counts,
            "self_loops": nd + v,
            "adj_nnz": int(adj.nnz),
            "window": window,
            "pair_count": pair_count,
            "split_seed": seed,
            "build_seconds": time.perf_counter() - t0,
        },
    )


def resplit_validation(data: GraphData, seed: int, val_fraction: float = 0.1) -> GraphData:
    """A copy of ``data`` whose train/validation split of the training nodes is redrawn with
    ``seed`` as :func:`build_textgcn` draws it (``int(val_fraction · n)`` of the n train + val
    nodes, sorted, held out); the graph, test nodes and labels are shared, not copied."""
    pool = np.sort(torch.cat([data.train_index, data.val_index]).numpy())
    n_val = int(val_fraction * len(pool))
    perm = np.random.default_rng(seed).permutation(len(pool))
    return replace(
        data,
        train_index=torch.from_numpy(np.sort(pool[perm[n_val:]])),
        val_index=torch.from_numpy(np.sort(pool[perm[:n_val]])),
        info={**data.info, "split_seed": seed},
    )


def load_graph(name: str, **kwargs) -> GraphData:
    """:func:`load_planetoid` for ``"cora"``/``"citeseer"``, :func:`build_textgcn` for
    ``"r8"``/``"mr"`` (``kwargs`` go to the latter)."""
    key = name.lower()
    if key in PLANETOID_NAMES:
        if kwargs:
            raise TypeError(f"load_planetoid takes no options, got {sorted(kwargs)}")
        return load_planetoid(key)
    if key in TEXTGCN_NAMES:
        return build_textgcn(key, **kwargs)
    names = PLANETOID_NAMES + tuple(TEXTGCN_NAMES)
    raise ValueError(f"unknown graph {name!r}; choose from {names}")
