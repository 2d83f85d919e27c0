"""torch.fx front end for graph convolutional networks (one graph, node features (N, F)).

A GCN as people write it in PyTorch — ``forward(x)`` with the node-feature matrix x (N, F),
no batch axis, a fixed normalised adjacency Â held as a buffer (dense or sparse COO) or a
constant, aggregation as ``adj @ h`` / ``torch.mm`` / ``torch.matmul`` / ``torch.sparse.mm``,
the per-node linear map as ``nn.Linear``, ``F.linear`` or ``h @ W`` — is lowered to raw spiking
layers laid out (features, nodes, 1) (docs/semantics.md §5):

* every matrix product is one spiking layer, as in the paper (Sec. IV-D): a per-node linear
  map is a 1x1 ``conv`` (one-hot features X = I: an ``embedding``), an aggregation a ``graph``
  synapse whose values are Â's;
* a product whose result feeds another product without a ReLU (X·W0 before Â·) is signed:
  it becomes a two-rail layer, max(v, 0) and max(−v, 0) in two halves of its channels, read
  with +weights and −weights by the next layer (exact: v = max(v, 0) − max(−v, 0));
* ReLU makes a one-rail layer, dropout is the identity, a final (log-)softmax is dropped.

An adjacency computed from the input, attention, or a non-ReLU activation is refused by node.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from converter.frontend import (
    Group,
    RawLayer,
    UnsupportedModelError,
    _concrete_values,
    _is_activation,
    _op_name,
    _unsupported,
    is_matrix_product,
    output_value,
)

_DROPOUTS = (nn.Dropout, nn.Identity, F.dropout, "contiguous", "detach", "coalesce")
_RELUS = (nn.ReLU, F.relu, torch.relu, "relu", "relu_")
_ADDS = (operator.add, operator.iadd, torch.add, "add", "add_")
_SOFTMAX = (
    nn.Softmax,
    nn.LogSoftmax,
    F.softmax,
    F.log_softmax,
    torch.softmax,
    torch.log_softmax,
    "softmax",
    "log_softmax",
)


# --------------------------------------------------------------------------- detection
def is_graph_model(model: nn.Module) -> bool:
    """True when ``model``'s forward multiplies by a fixed square matrix held by the model (a
    buffer, parameter or constant of shape (N, N)): a graph aggregation Â·H."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # the CNN front end reports tracing errors
        return False
    attrs = {n.name: _attr(gm, n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for node in gm.graph.nodes:
        if is_matrix_product(node) and node.args and isinstance(node.args[0], torch.fx.Node):
            a = attrs.get(node.args[0].name)
            if isinstance(a, torch.Tensor) and a.dim() == 2 and a.shape[0] == a.shape[1]:
                return True
    return False


def _attr(gm: torch.fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def is_identity(x: torch.Tensor) -> bool:
    """x is the (N, N) identity (dense or sparse): Text GCN's one-hot node features."""
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        return False
    n = x.shape[0]
    if x.is_sparse:
        x = x.coalesce()
        i, v = x.indices(), x.values()
        ar = torch.arange(n, device=i.device)
        return i.shape[1] == n and bool(
            (i[0] == ar).all() and (i[1] == ar).all() and (v == 1).all()
        )
    if n > 4096:  # a dense identity that large is a mistake; never compare 16 M+ entries
        return False
    return bool(torch.equal(x, torch.eye(n, dtype=x.dtype, device=x.device)))


def layer_input(x: torch.Tensor, one_hot: bool, nodes: int, features: int) -> torch.Tensor:
    """The node features (N, F) as the input layer's tensor (1, F, N, 1); one-hot: (1, 1, N, 1)
    of ones (node n's one input neuron). Raises ValueError naming what does not match."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(
            f"a graph network takes the node features (N, F) without a batch axis, got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    if x.shape[0] != nodes:
        raise ValueError(f"the features have {x.shape[0]} nodes, the graph has {nodes}")
    if one_hot:
        if not is_identity(x):
            raise ValueError(
                "this network was converted with one-hot node features (X = I): x must be the "
                f"({nodes}, {nodes}) identity"
            )
        return torch.ones(1, 1, nodes, 1)
    if x.shape[1] != features:
        raise ValueError(f"the features have {x.shape[1]} columns, the network takes {features}")
    dense = x.to_dense() if x.is_sparse else x
    if not torch.isfinite(dense).all():
        raise ValueError("the node features contain NaN or infinity")
    return dense.float().t().reshape(1, features, nodes, 1).contiguous()


# --------------------------------------------------------------------------- values
@dataclass
class GSpikes:
    """The spikes of layer ``layer``; of a two-rail layer, the signed value pos − neg."""

    layer: int


@dataclass
class GAffine:
    """Σ groups + bias over (C, N, 1): the pre-activation of one future layer."""

    groups: list[Group]
    bias: torch.Tensor  # (C,) or (C, N, 1), float64
    channels: int
    node: str


@dataclass
class GConst:
    value: Any


@dataclass
class GDropped:
    value: Any
    note: str


class GraphLowering:
    """State of one lowering: raw layers so far, the value of each fx node."""

    def __init__(self, gm: torch.fx.GraphModule, x: torch.Tensor):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.nodes, self.features = x.shape
        self.one_hot = is_identity(x)
        self.layers: list[RawLayer] = []
        self.values: dict[str, Any] = {}
        self.notes: list[str] = []
        self.rails: dict[int, int] = {}  # id(GAffine) -> its two-rail layer

    def add(self, layer: RawLayer) -> int:
        self.layers.append(layer)
        return len(self.layers) - 1

    def shape(self, c: int) -> tuple[int, int, int]:
        return (c, self.nodes, 1)

    def channels(self, v: GSpikes) -> int:
        lay = self.layers[v.layer]
        return lay.shape[0] // 2 if lay.rails else lay.shape[0]


def lower_graph(model: nn.Module, x: torch.Tensor) -> tuple[list[RawLayer], list[str], dict]:
    """Trace ``model`` (eval mode) on the node features ``x`` (N, F) and lower it.

    Returns the raw layers, notes for the artifact, and the graph metadata (``nodes``,
    ``features``, ``one_hot``). Raises UnsupportedModelError naming the node and the reason."""
    gm = torch.fx.symbolic_trace(model)
    if x.dim() != 2:
        raise UnsupportedModelError(
            f"a graph network takes the node features (N, F), got shape {tuple(x.shape)}"
        )
    ctx = GraphLowering(gm, x)
    concrete = _concrete_values(gm, x, f"node features of shape {tuple(x.shape)}")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(
            f"the model must take exactly one tensor input, it takes {len(placeholders)}"
        )
    for node in gm.graph.nodes:
        ctx.values[node.name] = _lower(ctx, node, concrete)
    meta = {"nodes": int(ctx.nodes), "features": int(ctx.features), "one_hot": ctx.one_hot}
    return ctx.layers, ctx.notes, meta


def _resolve(ctx: GraphLowering, a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        v = ctx.values[a.name]
        return v.value if isinstance(v, GConst) else v
    if isinstance(a, tuple | list):
        return type(a)(_resolve(ctx, b) for b in a)
    return a


def _key(node: torch.fx.Node, modules: dict) -> Any:
    if node.op == "call_module":
        return type(modules[node.target])
    return node.target


def _lower(ctx: GraphLowering, node: torch.fx.Node, concrete: dict) -> Any:
    if node.op == "placeholder":
        shape = ctx.shape(1 if ctx.one_hot else ctx.features)
        return GSpikes(ctx.add(RawLayer("input", "input", shape, one_hot=ctx.one_hot)))
    if node.op == "output":
        return _output(ctx, node)
    if node.op == "get_attr":
        return GConst(concrete[node.name])
    args = [_resolve(ctx, a) for a in node.args]
    kwargs = {k: _resolve(ctx, v) for k, v in node.kwargs.items()}
    values = [a for a in [*args, *kwargs.values()] if isinstance(a, GSpikes | GAffine)]
    if not values and not any(isinstance(a, GDropped) for a in args):
        return GConst(concrete.get(node.name))  # arithmetic on constants, shape queries
    if any(isinstance(a, GDropped) for a in args):
        raise _unsupported(node, "uses a softmax output: a softmax is accepted only last")
    key = _key(node, ctx.modules)
    mod = ctx.modules.get(node.target) if node.op == "call_module" else None
    if key in _DROPOUTS or (node.op == "call_module" and isinstance(mod, nn.Dropout)):
        return args[0]
    if key in _RELUS:
        return _relu(ctx, node, args[0])
    if key is nn.Linear:
        return _linear(ctx, node, args[0], mod.weight.detach(), mod.bias)
    if key is F.linear:
        w = args[1] if len(args) > 1 else kwargs["weight"]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        return _linear(ctx, node, args[0], w, b)
    if is_matrix_product(node):
        return _product(ctx, node, args[0], args[1])
    if key in _ADDS:
        return _add(ctx, node, args[0], args[1], kwargs)
    if key in _SOFTMAX:
        return GDropped(
            args[0],
            f"node '{node.name}' ({_op_name(node)}): dropped; the SNN's "
            "logits are its input (same argmax per node)",
        )
    if _is_activation(node, mod):
        raise _unsupported(
            node,
            "not a ReLU network: one-spike neurons model ReLU only, other activations "
            "cannot be converted",
        )
    raise _unsupported(
        node,
        "unsupported op in a graph network; supported: nn.Linear, F.linear, h @ W, Â @ h "
        "(torch.mm, torch.matmul, torch.sparse.mm), + bias, ReLU, dropout, a final softmax",
    )


# --------------------------------------------------------------------------- handlers
def _spikes_of(ctx: GraphLowering, node, v: Any) -> GSpikes:
    """The spike tensor a product reads: a pre-activation becomes a two-rail layer first."""
    if isinstance(v, GSpikes):
        return v
    if not isinstance(v, GAffine):
        raise _unsupported(node, "operand is not a tensor of the network")
    if id(v) in ctx.rails:
        return GSpikes(ctx.rails[id(v)])
    if any(g.op == "graph" for g in v.groups):
        raise _unsupported(
            node,
            "a product after an aggregation without a ReLU between them: write the per-node "
            "linear map first (Â·(H·W) = (Â·H)·W, the same function)",
        )
    c = v.channels
    groups = [dataclasses.replace(g, weight=torch.cat([g.weight, -g.weight], 0)) for g in v.groups]
    bias = _full(ctx, v.bias, c)
    layer = RawLayer(
        v.node + "_rails",
        "neuron",
        ctx.shape(2 * c),
        groups,
        torch.cat([bias, -bias], 0),
        torch.ones(2 * c, dtype=torch.float64),
        rails=True,
    )
    idx = ctx.add(layer)
    ctx.rails[id(v)] = idx
    ctx.notes.append(
        f"node '{v.node}': signed (a product follows without a ReLU), coded as a two-rail layer "
        f"'{layer.name}' of {2 * c} channels: max(v, 0) and max(-v, 0)"
    )
    return GSpikes(idx)


def _full(ctx: GraphLowering, bias: torch.Tensor, c: int) -> torch.Tensor:
    b = bias.double()
    if b.dim() == 1:
        b = b.reshape(-1, 1, 1)
    return b.expand(c, ctx.nodes, 1).clone()


def _linear(ctx: GraphLowering, node, v: Any, w: torch.Tensor, b: Any) -> GAffine:
    """h·Wᵀ + b per node: a 1x1 convolution over (F, N, 1); of one-hot features, W itself."""
    s = _spikes_of(ctx, node, v)
    src = ctx.layers[s.layer]
    w = torch.as_tensor(w).detach().double()
    if w.dim() != 2:
        raise _unsupported(node, f"a per-node linear map needs a 2-D weight, got {tuple(w.shape)}")
    fin = ctx.nodes if src.one_hot else ctx.channels(s)
    if w.shape[1] != fin:
        raise _unsupported(node, f"weight {tuple(w.shape)} does not take {fin} features")
    if src.one_hot:
        g = Group(s.layer, "embedding", w.clone())
    else:
        wk = torch.cat([w, -w], 1) if src.rails else w
        g = Group(s.layer, "conv", wk.reshape(*wk.shape, 1, 1).clone())
    bias = torch.zeros(w.shape[0], dtype=torch.float64)
    if b is not None:
        bias = bias + _bias_vector(node, b, w.shape[0])
    return GAffine([g], bias, w.shape[0], node.name)


def _bias_vector(node, b: Any, c: int) -> torch.Tensor:
    t = torch.as_tensor(b).detach().double()
    if t.numel() == 1:
        return t.reshape(1).expand(c).clone()
    if t.numel() != c or (t.dim() == 2 and t.shape[0] != 1):
        raise _unsupported(
            node,
            f"adds a tensor of shape {tuple(t.shape)}: only a per-feature "
            f"bias of {c} values (the same at every node) is supported",
        )
    return t.reshape(c)


def _product(ctx: GraphLowering, node, a: Any, b: Any) -> GAffine:
    a_val, b_val = isinstance(a, GSpikes | GAffine), isinstance(b, GSpikes | GAffine)
    if a_val and b_val:
        raise _unsupported(
            node,
            "a product of two tensors computed from the input (an adjacency or attention "
            "computed from the features) cannot be converted: Â must be a fixed buffer or "
            "constant of the model",
        )
    if a_val:  # h @ W: a per-node linear map with the weight W (F_in, F_out)
        w = torch.as_tensor(b)
        if w.is_sparse:
            w = w.to_dense()
        return _linear(ctx, node, a, w.t(), None)
    return _aggregate(ctx, node, torch.as_tensor(a), b)


def _aggregate(ctx: GraphLowering, node, adj: torch.Tensor, v: Any) -> GAffine:
    """Â·H: one ``graph`` group per rail, the values of Â as its weights."""
    n = ctx.nodes
    if adj.dim() != 2 or tuple(adj.shape) != (n, n):
        raise _unsupported(
            node,
            f"aggregates with a {tuple(adj.shape)} matrix, the graph has {n} "
            "nodes: Â must be (N, N)",
        )
    s = _spikes_of(ctx, node, v)
    src = ctx.layers[s.layer]
    if src.one_hot:
        raise _unsupported(
            node, "aggregates one-hot features directly (Â·I): apply the per-node linear map first"
        )
    index, values = _coo(adj)
    if not torch.isfinite(values).all():
        raise _unsupported(node, "Â contains NaN or infinity")
    src.per_layer_lambda = True
    c = ctx.channels(s)
    groups = [Group(s.layer, "graph", values, index=index)]
    if src.rails:
        groups.append(Group(s.layer, "graph", -values, channel_offset=c, index=index))
    return GAffine(groups, torch.zeros(c, dtype=torch.float64), c, node.name)


def _coo(adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index (2, nnz) int32 sorted by (target, source), values float64) of Â's nonzeros."""
    if adj.is_sparse:
        a = adj.detach().coalesce()
        index, values = a.indices(), a.values().double()
    elif adj.layout == torch.sparse_csr:
        return _coo(adj.to_sparse_coo())
    else:
        index = torch.nonzero(adj.detach()).t()
        values = adj.detach()[index[0], index[1]].double()
    keep = values != 0
    return index[:, keep].to(torch.int32).contiguous(), values[keep].contiguous()


def _add(ctx: GraphLowering, node, a: Any, b: Any, kwargs) -> GAffine:
    if "alpha" in kwargs:
        raise _unsupported(node, "add with alpha is not supported")
    if not isinstance(a, GAffine | GSpikes):
        a, b = b, a
    p = a if isinstance(a, GAffine) else _lift(ctx, a, node)
    if isinstance(b, GSpikes | GAffine):
        q = b if isinstance(b, GAffine) else _lift(ctx, b, node)
        if q.channels != p.channels:
            raise _unsupported(node, f"adds {p.channels} and {q.channels} features")
        return GAffine(p.groups + q.groups, _sum_bias(p.bias, q.bias), p.channels, node.name)
    return GAffine(
        p.groups, _sum_bias(p.bias, _bias_vector(node, b, p.channels)), p.channels, node.name
    )


def _sum_bias(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() != b.dim():
        a, b = (t.reshape(-1, 1, 1) if t.dim() == 1 else t for t in (a, b))
    return a + b


def _lift(ctx: GraphLowering, v: GSpikes, node) -> GAffine:
    """Spikes as an identity 1x1 group (rails: [I, −I])."""
    src = ctx.layers[v.layer]
    if src.one_hot:
        raise _unsupported(node, "uses one-hot features other than through a linear map")
    c = ctx.channels(v)
    eye = torch.eye(c, dtype=torch.float64)
    w = torch.cat([eye, -eye], 1) if src.rails else eye
    return GAffine(
        [Group(v.layer, "conv", w.reshape(c, -1, 1, 1))],
        torch.zeros(c, dtype=torch.float64),
        c,
        node.name,
    )


def _relu(ctx: GraphLowering, node, v: Any) -> GSpikes:
    if isinstance(v, GSpikes):
        lay = ctx.layers[v.layer]
        if not lay.rails:
            return v  # spikes (and one-hot features) are non-negative already
        v = _lift(ctx, v, node)
    if not isinstance(v, GAffine):
        raise _unsupported(node, "ReLU of a non-tensor")
    c = v.channels
    layer = RawLayer(
        node.name,
        "neuron",
        ctx.shape(c),
        list(v.groups),
        _full(ctx, v.bias, c),
        torch.ones(c, dtype=torch.float64),
    )
    return GSpikes(ctx.add(layer))


def _output(ctx: GraphLowering, node) -> None:
    out, v = output_value(ctx, node, GDropped)
    if isinstance(v, GSpikes):
        ctx.notes.append(
            f"output '{out.name}': the model ends in spikes; an identity readout decodes them"
        )
        v = _lift(ctx, v, out)
    if not isinstance(v, GAffine):
        raise UnsupportedModelError(
            f"the model output '{getattr(out, 'name', out)}' must be the (N, classes) logits of "
            "a product (a linear map or an aggregation)"
        )
    c = v.channels
    ctx.add(RawLayer("output", "output", ctx.shape(c), list(v.groups), _full(ctx, v.bias, c)))
