"""Two-layer graph convolutional networks as a user writes them in PyTorch, and their training.

* :class:`GCN` — Kipf & Welling (ICLR 2017), Eq. 9: Z = Â ReLU(Â X W0) W1 (softmax in the loss),
  16 hidden units, dropout 0.5 on the input features and on the hidden layer.
* :class:`TextGCN` — Yao, Mao & Luo (AAAI 2019), Sec. 3: the same with X = I (one-hot node
  ids), 200 hidden units, dropout 0.5 on the hidden layer only (the reference code's first layer
  is ``featureless``: its input dropout never reaches the product).

Both hold Â as a (sparse COO) buffer ``adj`` and take one graph: ``forward(x)`` with ``x`` the
(N, F) node-feature matrix, no batch axis, returning (N, C) logits. Each of the four matrix
products is one ``nn.Linear`` (the per-node linear map) or one ``torch.sparse.mm(self.adj, ·)``
(the graph aggregation), so ``torch.fx.symbolic_trace`` sees them as separate nodes.

:func:`train_gcn` trains either with the published hyper-parameters (:data:`KIPF`,
:data:`TEXTGCN`), full batch, on the whole graph, the loss on the training nodes only.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from onespike.graphs import GraphData

__all__ = ["GCN", "KIPF", "TEXTGCN", "TextGCN", "build_model", "train_gcn"]

#: Kipf & Welling (2017), Sec. 5.2 and ``tkipf/gcn``: Adam lr 0.01, L2 5e-4 on the first layer's
#: weights only, 200 epochs (their early-stopping window of 10 on the validation loss is not used
#: here, as the brief's 200 epochs), Glorot-uniform initialisation, no bias.
KIPF: dict = {"lr": 0.01, "weight_decay": 5e-4, "epochs": 200, "patience": None}
#: Yao et al. (2019), Sec. 4 and ``yao8839836/text_gcn``: Adam lr 0.02, no weight decay, up to
#: 200 epochs, stop after 10 epochs without a new best validation loss.
TEXTGCN: dict = {"lr": 0.02, "weight_decay": 0.0, "epochs": 200, "patience": 10}


class GCN(nn.Module):
    """Kipf & Welling's two-layer GCN on one fixed graph.

    ``forward(x)``: x (N, F) float32 node features (dense, or torch sparse COO) →
    dropout → ``lin0`` (per node, F → hidden) → Â · → ReLU → dropout → ``lin1`` (per node,
    hidden → C) → Â · → (N, C) logits.

    Parameters
    ----------
    adj
        Â, (N, N) float32, normally a coalesced sparse COO tensor (e.g. ``GraphData.adj``);
        stored as the buffer ``adj`` (saved in the state dict, moved by ``.to``).
    in_features, num_classes
        F and C.
    hidden
        Hidden units (16 in Kipf & Welling).
    dropout
        Dropout probability, applied to the hidden layer and, if ``input_dropout``, to x.
    input_dropout
        Drop input features too (Kipf & Welling: yes). Must be False for a sparse input.
    bias
        Give both ``nn.Linear`` a bias (default False, as both reference codes). The bias is
        added per node before the aggregation, so node n receives Σ_m Â[n, m] · b.
    """

    def __init__(
        self,
        adj: torch.Tensor,
        in_features: int,
        num_classes: int,
        hidden: int = 16,
        dropout: float = 0.5,
        *,
        input_dropout: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adj must be square (N, N), got {tuple(adj.shape)}")
        self.register_buffer("adj", adj)
        self.input_dropout = input_dropout
        self.dropout = nn.Dropout(dropout)
        self.lin0 = nn.Linear(in_features, hidden, bias=bias)
        self.lin1 = nn.Linear(hidden, num_classes, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights, zero biases (both reference codes' initialisation)."""
        for lin in (self.lin0, self.lin1):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_dropout:
            x = self.dropout(x)
        h = torch.sparse.mm(self.adj, self.lin0(x))
        h = self.dropout(torch.relu(h))
        return torch.sparse.mm(self.adj, self.lin1(h))


class TextGCN(GCN):
    """Yao et al.'s Text GCN: :class:`GCN` with X = I, 200 hidden units, no input dropout.

    ``forward(x)`` takes the (N, N) identity, normally as a sparse COO tensor
    (:func:`onespike.graphs.sparse_identity`, or ``GraphData.features()``): ``lin0`` of it is
    Iᵀ-times-weight, i.e. ``lin0.weight.T`` (N, 200) — the row of W0 of each node — without ever
    forming the dense identity (for MR 29,426² float32 would be 3.5 GB). A dense identity gives
    the same result for small graphs. ``lin0.weight`` is (hidden, N): one column per node.
    """

    def __init__(
        self,
        adj: torch.Tensor,
        num_classes: int,
        hidden: int = 200,
        dropout: float = 0.5,
        *,
        bias: bool = False,
    ) -> None:
        super().__init__(
            adj, adj.shape[0], num_classes, hidden, dropout, input_dropout=False, bias=bias
        )


class _SymmetricSpMM(torch.autograd.Function):
    """Â @ h for a symmetric sparse CSR Â, whose gradient is Âᵀ @ g = Â @ g (no transpose)."""

    @staticmethod
    def forward(ctx, csr: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        ctx.csr = csr
        return torch.sparse.mm(csr, h)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return None, torch.sparse.mm(ctx.csr, g)


class _FastAggregation(TorchFunctionMode):
    """During training only: route ``torch.sparse.mm(adj, h)``, ``torch.mm``, ``torch.matmul``
    and ``adj @ h`` with the model's own (symmetric) ``adj`` buffer to a CSR product whose
    backward reuses Â instead of transposing and re-sorting the COO tensor every step (R8: 0.8 s
    per step). Same values up to rounding order; the model and its forward are untouched."""

    _FUNCS = (torch.sparse.mm, torch.mm, torch.matmul, torch.Tensor.__matmul__)

    def __init__(self, adj: torch.Tensor) -> None:
        super().__init__()
        self.adj = adj
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.csr = adj.detach().to_sparse_csr()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FUNCS and len(args) == 2 and not kwargs and args[0] is self.adj:
            return _SymmetricSpMM.apply(self.csr, args[1])
        return func(*args, **kwargs)


def _is_symmetric(adj: torch.Tensor) -> bool:
    if adj.layout != torch.sparse_coo or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        return False
    a, at = adj.coalesce(), adj.t().coalesce()
    return torch.equal(a.indices(), at.indices()) and torch.equal(a.values(), at.values())


def build_model(data: GraphData, **kwargs) -> GCN:
    """The published model for ``data``: :class:`TextGCN` for identity features, else
    :class:`GCN` (``kwargs`` go to the constructor). Call under a seed for a seeded init."""
    if data.identity_features:
        return TextGCN(data.adj, data.num_classes, **kwargs)
    return GCN(data.adj, data.num_features, data.num_classes, **kwargs)


def train_gcn(
    data: GraphData,
    model: GCN,
    *,
    seed: int,
    lr: float | None = None,
    weight_decay: float | None = None,
    epochs: int | None = None,
    patience: int | None | str = "default",
    reset: bool = True,
    restore_best: bool | None = None,
    fast_aggregation: bool = True,
    verbose: bool = False,
) -> tuple[GCN, dict]:
    """Train ``model`` on ``data``, full batch, with the published hyper-parameters.

    Defaults come from :data:`TEXTGCN` when ``data.identity_features`` (Text GCN), else from
    :data:`KIPF`; any argument given overrides its preset. Adam; cross-entropy on the training
    nodes only (the models' final softmax folded into the loss); weight decay on ``lin0.weight``
    only (Kipf's L2 term 5e-4 · ||W0||²/2 has exactly Adam's ``weight_decay`` gradient 5e-4 · W0).
    The validation loss is computed every epoch with dropout off. A model's input dropout
    (``input_dropout``, :class:`GCN` on Planetoid) is applied here to the nonzero features only,
    as Kipf's ``sparse_dropout``: the same distribution as ``nn.Dropout`` on the dense x,
    far fewer random draws (Cora: 49,216 instead of 3.9 M; the model itself is unchanged).

    Parameters
    ----------
    data
        The graph; its ``features()`` are the input.
    model
        A :class:`GCN` or :class:`TextGCN` on ``data.adj`` (or any module mapping the features
        to (N, C) logits, with ``lin0`` for the weight decay).
    seed
        Seeds the initialisation (when ``reset``) and the dropout masks. The global torch RNG
        is left as it was. On CPU the run is deterministic for a fixed thread count.
    lr, weight_decay, epochs
        Adam learning rate, L2 coefficient on ``lin0.weight``, maximum epochs.
    patience
        Stop after this many epochs without a new lowest validation loss; None: run all
        ``epochs``; ``"default"``: the preset's (10 for Text GCN, None for Kipf).
    reset
        Re-initialise the weights (Glorot) under ``seed`` first.
    restore_best
        Return the weights of the epoch with the lowest validation loss. Default: True when
        early stopping is on, else False (the last epoch, as Kipf's 200 epochs).
    fast_aggregation
        While training, compute products with ``model.adj`` (a symmetric sparse COO buffer,
        as every graph of :mod:`onespike.graphs`) by a CSR kernel whose backward reuses Â
        (measured here on R8: 2.1 s -> 0.7 s per epoch). Skipped when ``adj`` is not exactly
        symmetric. The values are the same up to float rounding order.
    verbose
        Print one line per epoch.

    Returns
    -------
    model, history
        The model in eval mode, and a dict: per-epoch lists ``train_loss``, ``val_loss``,
        ``train_acc``, ``val_acc`` (percent), ``best_epoch`` (1-based, lowest validation loss),
        ``epochs_run``, ``returned_epoch`` (whose weights are returned),
        ``stopped_early``, ``seconds`` (wall time of the training loop), ``hyper`` (the values
        used), ``test_acc`` (percent, of the returned weights).
    """
    preset = TEXTGCN if data.identity_features else KIPF
    lr = preset["lr"] if lr is None else lr
    weight_decay = preset["weight_decay"] if weight_decay is None else weight_decay
    epochs = preset["epochs"] if epochs is None else epochs
    if patience == "default":
        patience = preset["patience"]
    if restore_best is None:
        restore_best = patience is not None
    x = data.features()
    y = data.labels.to(x.device)
    tr, va = data.train_index.to(x.device), data.val_index.to(x.device)
    hyper = {
        "lr": lr,
        "weight_decay": weight_decay,
        "epochs": epochs,
        "patience": patience,
        "restore_best": restore_best,
        "seed": seed,
        "fast_aggregation": fast_aggregation,
    }
    hist: dict = {"train_loss": [], "val_loss": [], "train_acc": [], "val_acc": []}
    t0 = time.perf_counter()
    # Kipf's sparse_dropout: drop only the stored (nonzero) input features. Same distribution
    # as nn.Dropout on the dense x (a dropped zero stays zero) with ~1 % of the random draws.
    sparse_drop = bool(getattr(model, "input_dropout", False)) and not x.is_sparse
    if sparse_drop:
        xs = x.to_sparse().coalesce()
        p_in = model.dropout.p
    adj = getattr(model, "adj", None)
    fast = fast_aggregation and isinstance(adj, torch.Tensor) and _is_symmetric(adj)
    mode = _FastAggregation(adj) if fast else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), mode:
        torch.manual_seed(seed)
        if reset:
            model.reset_parameters()
        decay = [model.lin0.weight] if weight_decay else []
        rest = [p for p in model.parameters() if all(p is not q for q in decay)]
        groups = [{"params": rest, "weight_decay": 0.0}]
        if decay:
            groups.append({"params": decay, "weight_decay": weight_decay})
        opt = torch.optim.Adam(groups, lr=lr)
        best_loss, best_epoch, best_state, since = math.inf, 0, None, 0
        stopped = False
        for epoch in range(1, epochs + 1):
            model.train()
            opt.zero_grad()
            if sparse_drop:
                keep = torch.rand(xs._nnz(), device=x.device) >= p_in
                xin = torch.sparse_coo_tensor(
                    xs.indices()[:, keep],
                    xs.values()[keep] / (1.0 - p_in),
                    xs.shape,
                    is_coalesced=True,
                    check_invariants=False,
                )
                model.input_dropout = False
                try:
                    out = model(xin)
                finally:
                    model.input_dropout = True
            else:
                out = model(x)
            loss = F.cross_entropy(out[tr], y[tr])
            loss.backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                ev = model(x)
                val_loss = F.cross_entropy(ev[va], y[va]).item()
            hist["train_loss"].append(loss.item())
            hist["val_loss"].append(val_loss)
            hist["train_acc"].append(data.accuracy(out, "train"))
            hist["val_acc"].append(data.accuracy(ev, "val"))
            if verbose:
                print(
                    f"epoch {epoch:3d} loss {loss.item():.4f} val_loss {val_loss:.4f} "
                    f"train {hist['train_acc'][-1]:.2f} val {hist['val_acc'][-1]:.2f}",
                    flush=True,
                )
            if val_loss < best_loss:
                best_loss, best_epoch, since = val_loss, epoch, 0
                if restore_best:
                    best_state = copy.deepcopy(
                        {k: v for k, v in model.state_dict().items() if k != "adj"}
                    )
            else:
                since += 1
                if patience is not None and since >= patience:
                    stopped = True
                    break
        if restore_best and best_state is not None:
            model.load_state_dict(best_state, strict=False)
    model.eval()
    hist.update(
        best_epoch=best_epoch,
        epochs_run=len(hist["train_loss"]),
        returned_epoch=best_epoch if restore_best else len(hist["train_loss"]),
        stopped_early=stopped,
        seconds=time.perf_counter() - t0,
        hyper=hyper,
    )
    with torch.no_grad():
        hist["test_acc"] = data.accuracy(model(x), "test")
    return model, hist
