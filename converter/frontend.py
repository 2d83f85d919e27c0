"""torch.fx front end: trace a ReLU network and lower it to a graph of spiking layers.

One handler per supported op, registered in ``HANDLERS``; an op without a handler fails with
the node's name, its op and the supported list.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


class UnsupportedModelError(ValueError):
    """The model uses an op or structure that one-spike conversion does not support."""


# --------------------------------------------------------------------------- values
@dataclass
class Group:
    """A synapse group before calibration: raw ANN weights (float64) and geometry."""

    source: int
    op: str
    weight: torch.Tensor
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    channel_offset: int = 0
    #: an identity view of one spike tensor (shortcut of stride 1, or a diagonal linear
    #: group for a 1-D tensor), possibly scaled per channel: BN on spikes, residual operands
    identity: bool = False
    #: graph op only: (target node, source node) of each value of ``weight``, int32 (2, nnz)
    index: torch.Tensor | None = None


@dataclass
class RawLayer:
    """A layer with ANN parameters: λ-independent, before calibration."""

    name: str
    kind: str
    shape: tuple[int, ...]
    groups: list[Group] = field(default_factory=list)
    bias: torch.Tensor | None = None  # initial potential B, broadcastable to shape
    theta_unit: torch.Tensor | None = None  # θ / λ per channel (1/|BN scale|)
    source: int = -1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    signed: bool = False
    #: input layer only: the model applies ReLU to its input, so the layer codes max(x, 0)
    rectified: bool = False
    #: graph networks (docs/semantics.md §5): a two-rail signed layer; an input layer of
    #: one-hot node features (X = I, one neuron per node); a layer read by a graph
    #: aggregation, which needs one λ for the whole layer
    rails: bool = False
    one_hot: bool = False
    per_layer_lambda: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Spikes:
    """A spike tensor: the output of layer ``layer``, possibly viewed (never copied)."""

    layer: int
    shape: tuple[int, ...]
    flat: bool = False
    stride: tuple[int, int] = (1, 1)
    channel_offset: int = 0
    rectified: bool = False  # the input layer seen through a ReLU (see Lowering.note_input_use)


@dataclass
class PreAct:
    """An affine function of spikes: y = scale ⊙ (Σ groups + bias) + shift (per channel)."""

    groups: list[Group]
    bias: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    shape: tuple[int, ...]
    pending_maxpool: tuple[Any, ...] | None = None
    #: viewed as (N, C·H·W) by a flatten/view: the neurons keep ``shape``
    flat: bool = False

    def folded(self) -> PreAct:
        """The same function with scale 1 and shift 0 (scale folded into the weights)."""
        groups = [_scale_group(g, self.scale) for g in self.groups]
        bias = _per_channel(self.scale, self.shape) * self.bias + _per_channel(
            self.shift, self.shape
        )
        one = torch.ones_like(self.scale)
        return PreAct(groups, bias, one, torch.zeros_like(self.shift), self.shape, flat=self.flat)


@dataclass
class Const:
    value: Any


def _per_channel(v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return v.reshape(-1, *([1] * (len(shape) - 1)))


def _scale_group(g: Group, scale: torch.Tensor) -> Group:
    w = g.weight * scale.reshape(-1, *([1] * (g.weight.dim() - 1)))
    return dataclasses.replace(g, weight=w)


# --------------------------------------------------------------------------- context
class Lowering:
    """State of one lowering: the layers made so far and the value of every fx node."""

    def __init__(self, gm: torch.fx.GraphModule, example: torch.Tensor, input_norm):
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.layers: list[RawLayer] = []
        self.values: dict[str, Any] = {}
        self.concrete = _concrete_values(gm, example)
        self.input_norm = input_norm
        #: how the input tensor is used: True through a ReLU, False as it is (never both)
        self.input_uses: dict[bool, str] = {}
        self.notes: list[str] = []

    def shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        return tuple(self.concrete[node.name].shape[1:])

    def add_layer(self, layer: RawLayer) -> int:
        self.layers.append(layer)
        return len(self.layers) - 1

    def note_input_use(self, v: Spikes, node: torch.fx.Node) -> None:
        """Record that ``node`` reads the input layer, through a ReLU (``v.rectified``) or not.

        The input layer codes either x (signed when x is) or max(x, 0): a model that uses its
        input both ways cannot be converted."""
        self.input_uses.setdefault(v.rectified, node.name)
        if len(self.input_uses) > 1:
            raise _unsupported(
                node,
                f"the model input is used both through a ReLU (node "
                f"'{self.input_uses[True]}') and without one (node '{self.input_uses[False]}'); "
                "the input layer codes one of the two",
            )

    @property
    def input_rectified(self) -> bool:
        return True in self.input_uses

    def as_preact(self, v: Any, node: torch.fx.Node) -> PreAct:
        """Lift a spike tensor to an identity synapse group (for BN on spikes, residual adds):
        a shortcut of the group's stride for (C, H, W) tensors, a diagonal linear group for
        1-D ones."""
        if isinstance(v, PreAct):
            if v.pending_maxpool is not None:
                raise _unsupported(node, "max pooling of a pre-activation must be followed by ReLU")
            return v
        if not isinstance(v, Spikes) or v.flat:
            raise _unsupported(node, "operand is not a spike tensor or a pre-activation")
        c = v.shape[0]
        if len(v.shape) == 1:
            g = Group(v.layer, "linear", torch.eye(c, dtype=torch.float64), identity=True)
        else:
            g = Group(
                v.layer,
                "shortcut",
                torch.ones(c, dtype=torch.float64),
                stride=v.stride,
                channel_offset=v.channel_offset,
                identity=v.stride == (1, 1) and v.channel_offset == 0,
            )
        g = self.fold_input_norm(g, v.shape)
        return _preact([g], g_bias(g), v.shape)

    def fold_input_norm(self, g: Group, out_shape: tuple[int, ...]) -> Group:
        """Fold x = (raw − mean) / std into a group reading the input layer (DESIGN 2.1).

        The weights are divided by std per input channel; the −mean/std part goes through the
        same op as a constant image with the op's own zero padding, so border neurons get
        their exact, position-dependent initial potential (stored with the group until the
        layer is made).
        """
        if g.source != 0 or self.input_norm is None or self.input_rectified:
            return g  # through a ReLU, the input layer codes the model's own input
        mean, std = self.input_norm
        in_shape = self.layers[0].shape
        if len(mean) != in_shape[0]:
            raise UnsupportedModelError(
                f"input_mean/input_std have {len(mean)} channels, the model input has {in_shape[0]}"
            )
        std_t = torch.tensor(std, dtype=torch.float64)
        const = (
            (-torch.tensor(mean, dtype=torch.float64) / std_t)
            .reshape(-1, *([1] * (len(in_shape) - 1)))
            .expand(in_shape)
            .unsqueeze(0)
        )
        inv = 1.0 / std_t
        if g.op == "conv":
            w = g.weight * inv.reshape(1, -1, 1, 1)
        elif g.op == "linear":
            per = inv.repeat_interleave(
                int(torch.tensor(in_shape[1:]).prod()) if len(in_shape) > 1 else 1
            )
            w = g.weight * per.reshape(1, -1)
        else:
            w = (
                g.weight
                * inv[
                    torch.clamp(torch.arange(out_shape[0]) - g.channel_offset, 0, in_shape[0] - 1)
                ]
            )
        folded = dataclasses.replace(g, weight=w)
        folded.const_bias = _apply_group(const, g, out_shape)[0]  # type: ignore[attr-defined]
        return folded


def g_bias(g: Group) -> torch.Tensor:
    return getattr(g, "const_bias", torch.zeros(1, dtype=torch.float64))


def _preact(groups: list[Group], bias: torch.Tensor, shape: tuple[int, ...]) -> PreAct:
    c = shape[0]
    one = torch.ones(c, dtype=torch.float64)
    return PreAct(groups, bias, one, torch.zeros(c, dtype=torch.float64), shape)


def _apply_group(x: torch.Tensor, g: Group, out_shape: tuple[int, ...]) -> torch.Tensor:
    from converter.model import Layer, Synapse
    from converter.ops import synapse_forward

    syn = Synapse(
        g.source,
        g.op,
        g.weight.numpy(),
        None,
        g.kernel,
        g.stride,
        g.padding,
        g.channel_offset,
        None if g.index is None else g.index.numpy(),
    )
    return synapse_forward(x, syn, g.weight, Layer("tmp", "neuron", tuple(out_shape)))


def _concrete_values(
    gm: torch.fx.GraphModule, example: torch.Tensor, what: str | None = None
) -> dict[str, Any]:
    """Run the traced graph once and keep every node's output (for shapes and sizes).

    ``what`` names the input in the error when the model cannot run on it (default: an
    input of shape (N, ...))."""
    seen: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            seen[n.name] = out.detach() if isinstance(out, torch.Tensor) else out
            return out

    with torch.no_grad():
        try:
            Recorder(gm).run(example)
        except Exception as exc:  # the user's model cannot run on this input
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            what = what or f"an input of shape (N, {', '.join(map(str, example.shape[1:]))})"
            raise UnsupportedModelError(f"the model fails on {what}: {first}") from exc
    return seen


def _unsupported(node: torch.fx.Node, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"node '{node.name}' ({_op_name(node)}): {why}")


def _op_name(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        mod = node.graph.owning_module.get_submodule(node.target)
        return f"module {node.target} ({type(mod).__name__})"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"{node.op} {node.target}"


# --------------------------------------------------------------------------- handlers
Handler = Callable[[Lowering, torch.fx.Node, list[Any], dict[str, Any]], Any]
HANDLERS: dict[Any, Handler] = {}


def handles(*keys: Any) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for k in keys:
            HANDLERS[k] = fn
        return fn

    return register


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@handles(nn.Conv2d)
def _conv(ctx: Lowering, node, args, kwargs, mod: nn.Conv2d):
    x = args[0]
    if mod.groups != 1 or _pair(mod.dilation) != (1, 1) or mod.padding_mode != "zeros":
        raise _unsupported(
            node,
            "only Conv2d with groups=1, dilation=1 and zero padding is "
            f"supported (got groups={mod.groups}, dilation={mod.dilation}, "
            f"padding_mode={mod.padding_mode!r})",
        )
    kernel = _pair(mod.kernel_size)
    padding = _conv_padding(node, mod.padding, kernel, _pair(mod.stride))
    g = Group(
        -1,
        "conv",
        mod.weight.detach().double().clone(),
        kernel=kernel,
        stride=_pair(mod.stride),
        padding=padding,
    )
    return _new_preact(ctx, node, x, g, mod.bias, spatial=True)


def _conv_padding(node, padding, kernel, stride) -> tuple[int, int]:
    """Numeric padding; 'valid' is 0, 'same' (stride 1) is (k − 1)/2 for odd kernels."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        if any(k % 2 == 0 for k in kernel):
            raise _unsupported(
                node, f"padding='same' with an even kernel {kernel} pads unevenly (not supported)"
            )
        return (kernel[0] // 2, kernel[1] // 2)
    return _pair(padding)


@handles(nn.Linear)
def _linear(ctx: Lowering, node, args, kwargs, mod: nn.Linear):
    g = Group(-1, "linear", mod.weight.detach().double().clone())
    return _new_preact(ctx, node, args[0], g, mod.bias, spatial=False)


def _new_preact(
    ctx: Lowering, node, x: Any, g: Group, bias: torch.Tensor | None, spatial: bool
) -> PreAct:
    """The pre-activation of a conv/linear group ``g`` (source unset) applied to ``x``: spikes,
    or a per-channel affine view of spikes (a BatchNorm after a ReLU or on the input), which
    is folded into ``g``'s weights and bias."""
    shape = ctx.shape(node)
    if isinstance(x, PreAct):
        g, b = _fold_affine_source(ctx, node, x, g, shape, spatial)
    else:
        g = ctx.fold_input_norm(
            dataclasses.replace(g, source=_spike_source(ctx, node, x, spatial).layer), shape
        )
        b = g_bias(g)
    if bias is not None:
        b = b + _per_channel(bias.detach().double(), shape)
    return _preact([g], b, shape)


def _fold_affine_source(ctx: Lowering, node, p: PreAct, g: Group, shape, spatial: bool):
    """W·(m ⊙ s + c) = (W·diag m)·s + W·c for an affine view y = m ⊙ s + c of the spikes s of
    one layer (DESIGN 2.5's BN folding, applied to the layer after the ReLU). With zero
    padding, W·c is computed on the constant image c padded with zeros, so border neurons get
    their exact initial potential."""
    if p.pending_maxpool is not None or len(p.groups) != 1 or not p.groups[0].identity:
        raise _unsupported(
            node,
            "its input is a pre-activation: two linear layers without a "
            "ReLU between them cannot be converted",
        )
    p = p.folded()
    (ident,) = p.groups
    src = ctx.layers[ident.source]
    if spatial and (p.flat or len(src.shape) != 3):
        raise _unsupported(node, "a convolution needs a (C, H, W) input")
    if not spatial and not p.flat and len(src.shape) != 1:
        raise _unsupported(node, "Linear on a multi-dimensional tensor needs flatten/view first")
    m = ident.weight if ident.op == "shortcut" else torch.diagonal(ident.weight)
    if g.op == "conv":
        w = g.weight * m.reshape(1, -1, 1, 1)
    else:
        w = g.weight * m.repeat_interleave(src.size // src.shape[0]).reshape(1, -1)
    const = p.bias.expand(src.shape).unsqueeze(0)
    b = _apply_group(const, dataclasses.replace(g, source=ident.source), shape)[0]
    return dataclasses.replace(g, source=ident.source, weight=w), b


def _spike_source(ctx: Lowering, node, v: Any, spatial: bool) -> Spikes:
    if isinstance(v, PreAct):
        raise _unsupported(
            node,
            "its input is a pre-activation: two linear layers without a "
            "ReLU between them cannot be converted",
        )
    if not isinstance(v, Spikes):
        raise _unsupported(node, "its input is not a tensor of the network")
    if v.stride != (1, 1) or v.channel_offset != 0:
        raise _unsupported(node, "a sliced/padded tensor may only feed a residual add")
    src_dims = len(ctx.layers[v.layer].shape)
    if spatial and (v.flat or src_dims != 3):
        raise _unsupported(node, "a convolution needs a (C, H, W) input")
    if not spatial and not v.flat and src_dims != 1:
        raise _unsupported(node, "Linear on a multi-dimensional tensor needs flatten/view first")
    return v


@handles(nn.BatchNorm1d, nn.BatchNorm2d)
def _batchnorm(ctx: Lowering, node, args, kwargs, mod):
    if mod.running_mean is None or mod.running_var is None:
        raise _unsupported(node, "BatchNorm without running statistics cannot be folded")
    if isinstance(args[0], PreAct) and args[0].flat:
        raise _unsupported(node, "BatchNorm of a flattened pre-activation is not supported")
    p = ctx.as_preact(args[0], node)
    var = mod.running_var.detach().double()
    g = (mod.weight.detach().double() if mod.affine else torch.ones_like(var)) / torch.sqrt(
        var + mod.eps
    )
    b = mod.bias.detach().double() if mod.affine else torch.zeros_like(var)
    h = b - g * mod.running_mean.detach().double()
    return dataclasses.replace(p, scale=p.scale * g, shift=p.shift * g + h)


@handles(nn.ReLU, F.relu, torch.relu, "relu", "relu_")
def _relu(ctx: Lowering, node, args, kwargs, mod=None):
    v = args[0]
    if isinstance(v, Spikes):
        if ctx.layers[v.layer].kind == "input":
            # the input layer may be signed: through a ReLU it codes max(x, 0) instead
            return dataclasses.replace(v, rectified=True)
        return v  # ReLU of hidden spikes (non-negative values) is the identity
    if not isinstance(v, PreAct):
        raise _unsupported(node, "ReLU of a non-tensor")
    pool = v.pending_maxpool
    layer = _neuron_layer(ctx, node, v)
    idx = ctx.add_layer(layer)
    out = Spikes(idx, layer.shape)
    if pool is not None:
        out = _maxpool_layer(ctx, node, out, *pool, name=node.name + "_pool")
    if v.flat:  # flatten then ReLU: the neurons keep their shape, the consumer sees them flat
        out = Spikes(out.layer, (ctx.layers[out.layer].size,), flat=True)
    return out


def _neuron_layer(ctx: Lowering, node, p: PreAct) -> RawLayer:
    """Fold the per-channel affine into threshold and initial potential (DESIGN 2.5)."""
    a, d = p.scale, p.shift
    sign = torch.sign(a)
    dead = a == 0  # a constant neuron: ReLU(d), no synapses
    safe = torch.where(dead, torch.ones_like(a), a.abs())
    groups = [_scale_group(g, torch.where(dead, torch.zeros_like(a), sign)) for g in p.groups]
    sgn = _per_channel(torch.where(dead, torch.zeros_like(a), sign), p.shape)
    bias = sgn * p.bias + _per_channel(torch.where(dead, d.clamp(min=0), d / safe), p.shape)
    bias = (
        bias.expand(p.shape).clone()
        if bias.dim() == len(p.shape)
        else bias.reshape(-1, *([1] * (len(p.shape) - 1))).expand(p.shape).clone()
    )
    return RawLayer(node.name, "neuron", p.shape, groups, bias, 1.0 / safe)


def _maxpool_layer(
    ctx: Lowering, node, v: Spikes, kernel, stride, padding, name: str | None = None
) -> Spikes:
    if ctx.layers[v.layer].kind == "input":
        raise _unsupported(node, "max pooling of the multi-spike input layer is not supported")
    shape = ctx.shape(node)
    lay = RawLayer(
        name or node.name,
        "maxpool",
        shape,
        source=v.layer,
        kernel=kernel,
        stride=stride,
        padding=padding,
    )
    return Spikes(ctx.add_layer(lay), shape)


def _pool_args(ctx: Lowering, node, kernel, stride, padding, ceil_mode=False, dilation=1):
    """Kernel, stride and padding of a pooling; ``ceil_mode=True`` is accepted where it gives
    the floor-mode output shape (then the two are the same op)."""
    if _pair(dilation) != (1, 1):
        raise _unsupported(node, "pooling with dilation is not supported")
    kernel = _pair(kernel)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    padding = _pair(padding)
    if ceil_mode:
        in_hw, out_hw = ctx.shape(node.args[0])[1:], ctx.shape(node)[1:]
        floor_hw = tuple(
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(in_hw, kernel, stride, padding, strict=True)
        )
        if floor_hw != tuple(out_hw):
            raise _unsupported(
                node,
                f"ceil_mode=True gives {tuple(out_hw)} where floor mode gives {floor_hw}: "
                "partial windows at the border are not supported",
            )
    return kernel, stride, padding


@handles(nn.MaxPool2d, F.max_pool2d)
def _maxpool(ctx: Lowering, node, args, kwargs, mod=None):
    if mod is not None:
        if mod.return_indices:
            raise _unsupported(node, "return_indices=True is not supported")
        k, s, p = _pool_args(
            ctx, node, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.dilation
        )
    else:
        names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
        kw = dict(zip(names, args[1:], strict=False)) | kwargs
        if kw.get("return_indices"):
            raise _unsupported(node, "return_indices=True is not supported")
        k, s, p = _pool_args(
            ctx,
            node,
            kw["kernel_size"],
            kw.get("stride"),
            kw.get("padding", 0),
            kw.get("ceil_mode", False),
            kw.get("dilation", 1),
        )
    v = args[0]
    if isinstance(v, PreAct):
        if v.pending_maxpool is not None or v.flat:
            raise _unsupported(node, "max pooling needs a (C, H, W) pre-activation, pooled once")
        # ReLU(max(z)) = max(ReLU(z)): pool the spikes of the neurons once ReLU comes.
        out = PreAct(v.groups, v.bias, v.scale, v.shift, v.shape, (k, s, p))
        out.pool_shape = ctx.shape(node)  # type: ignore[attr-defined]
        return out
    return _maxpool_layer(ctx, node, _spike_source(ctx, node, v, spatial=True), k, s, p)


@handles(nn.AvgPool2d, F.avg_pool2d, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d)
def _avgpool(ctx: Lowering, node, args, kwargs, mod=None):
    v = args[0]
    if not isinstance(v, Spikes):
        raise _unsupported(
            node, "average pooling must follow a ReLU (it becomes a spiking layer of its own)"
        )
    src = _spike_source(ctx, node, v, spatial=True)
    in_shape = ctx.layers[src.layer].shape
    out_shape = ctx.shape(node)
    k, s, p = _avg_geometry(ctx, node, mod, args, kwargs, in_shape, out_shape)
    if ctx.layers[src.layer].kind == "input":
        raise _unsupported(node, "average pooling of the input layer is not supported")
    c = in_shape[0]
    g = Group(
        src.layer,
        "avgpool",
        torch.full((c,), 1.0 / (k[0] * k[1]), dtype=torch.float64),
        kernel=k,
        stride=s,
        padding=p,
    )
    zero = torch.zeros(out_shape, dtype=torch.float64)
    layer = RawLayer(node.name, "neuron", out_shape, [g], zero, torch.ones(c, dtype=torch.float64))
    return Spikes(ctx.add_layer(layer), out_shape)


def _avg_geometry(ctx, node, mod, args, kwargs, in_shape, out_shape):
    target = node.target if mod is None else type(mod)
    if target in (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d):
        h, w = in_shape[1:]
        oh, ow = out_shape[1:]
        if h % oh or w % ow:
            raise _unsupported(
                node, f"adaptive average pooling {h}x{w} -> {oh}x{ow} has unequal windows"
            )
        return (h // oh, w // ow), (h // oh, w // ow), (0, 0)
    if mod is not None:
        kw = {
            "kernel_size": mod.kernel_size,
            "stride": mod.stride,
            "padding": mod.padding,
            "ceil_mode": mod.ceil_mode,
            "count_include_pad": mod.count_include_pad,
            "divisor_override": mod.divisor_override,
        }
    else:
        names = [
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
        ]
        kw = dict(zip(names, args[1:], strict=False)) | kwargs
    k, s, p = _pool_args(
        ctx,
        node,
        kw["kernel_size"],
        kw.get("stride"),
        kw.get("padding", 0),
        kw.get("ceil_mode", False),
    )
    if p != (0, 0) or kw.get("divisor_override"):
        raise _unsupported(
            node, "average pooling with padding or divisor_override is not supported"
        )
    return k, s, p


@handles(operator.add, operator.iadd, torch.add, "add", "add_")
def _add(ctx: Lowering, node, args, kwargs, mod=None):
    if "alpha" in kwargs or len(args) > 2:
        raise _unsupported(node, "add with alpha is not supported")
    if any(isinstance(v, PreAct | Spikes) and v.flat for v in args[:2]):
        raise _unsupported(node, "a residual add of flattened tensors is not supported")
    a, b = (ctx.as_preact(v, node).folded() for v in args[:2])
    if len({ctx.layers[g.source].kind == "input" for g in a.groups + b.groups}) > 1:
        raise _unsupported(
            node,
            "adds the multi-spike input layer to hidden spikes (they have different phase "
            "counts and bases); a residual add must join hidden layers",
        )
    return _preact(a.groups + b.groups, a.bias + b.bias, a.shape)


@handles(nn.Flatten, torch.flatten, "flatten", "view", "reshape")
def _flatten(ctx: Lowering, node, args, kwargs, mod=None):
    v = args[0]
    out_shape = ctx.shape(node)
    if isinstance(v, Spikes) and v.stride == (1, 1) and v.channel_offset == 0:
        if out_shape == ctx.layers[v.layer].shape:
            return v
        if len(out_shape) == 1 and out_shape[0] == ctx.layers[v.layer].size:
            return dataclasses.replace(v, shape=out_shape, flat=True)
    if isinstance(v, PreAct):
        in_shape = ctx.shape(node.args[0])
        if len(out_shape) == 1 and out_shape[0] == math.prod(in_shape):
            # flatten commutes with the ReLU (or the output) that follows
            return dataclasses.replace(v, flat=True)
        if out_shape == in_shape:
            return v
    want = "(N, " + ", ".join(map(str, ctx.shape(node.args[0]))) + ")"
    got = "(N, " + ", ".join(map(str, out_shape)) + ")"
    raise _unsupported(
        node,
        f"reshapes {want} to {got}: only flattening to (N, features) or keeping the shape "
        "is supported",
    )


@handles(
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.Identity,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
    "contiguous",
    "detach",
)
def _identity(ctx: Lowering, node, args, kwargs, mod=None):
    return args[0]


@handles(operator.getitem)
def _getitem(ctx: Lowering, node, args, kwargs, mod=None):
    v, idx = args
    if isinstance(v, Spikes) and isinstance(idx, tuple) and len(idx) == 4:
        full = slice(None)
        if (
            idx[0] == full
            and idx[1] == full
            and all(
                isinstance(s, slice) and s.start in (None, 0) and s.stop is None for s in idx[2:]
            )
        ):
            stride = tuple(int(s.step or 1) for s in idx[2:])
            if v.stride == (1, 1):
                return Spikes(v.layer, ctx.shape(node), stride=stride)
    raise _unsupported(node, "only x[:, :, ::s, ::s] subsampling (a ResNet shortcut) is supported")


@handles(F.pad)
def _pad(ctx: Lowering, node, args, kwargs, mod=None):
    v, pad = args[0], tuple(args[1] if len(args) > 1 else kwargs["pad"])
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value", 0)
    if (
        isinstance(v, Spikes)
        and mode == "constant"
        and not value
        and len(pad) == 6
        and (pad[:4] == (0, 0, 0, 0) and pad[4] >= 0 and pad[5] >= 0)
    ):
        return Spikes(
            v.layer, ctx.shape(node), stride=v.stride, channel_offset=v.channel_offset + pad[4]
        )
    raise _unsupported(
        node, "only zero padding of the channel axis (a ResNet option-A shortcut) is supported"
    )


@dataclass
class Dropped:
    """A softmax / log-softmax over the classes: monotonic per row, so the argmax of the
    logits is kept; accepted only as the model's last op, and dropped (``note`` says so)."""

    value: Any
    note: str


@handles(nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
         "softmax", "log_softmax")  # fmt: skip
def _softmax(ctx: Lowering, node, args, kwargs, mod=None):
    v = args[0]
    dim = mod.dim if mod is not None else (args[1] if len(args) > 1 else kwargs.get("dim"))
    if not isinstance(v, PreAct) or len(ctx.concrete[node.name].shape) != 2 or dim not in (1, -1):
        raise _unsupported(
            node,
            "not a ReLU network: a softmax is accepted only over the classes of the final "
            "(N, classes) logits, where it does not change the argmax",
        )
    return Dropped(v, f"node '{node.name}' ({_op_name(node)}): dropped; the SNN's logits are "
                      "its input (same argmax)")  # fmt: skip


@handles(torch.clamp, torch.clip, torch.clamp_min, "clamp", "clip", "clamp_min", "clamp_")
def _clamp(ctx: Lowering, node, args, kwargs, mod=None):
    names = ("min", "max")
    kw = dict(zip(names, args[1:], strict=False)) | kwargs
    if node.target in (torch.clamp_min, "clamp_min"):
        kw = {"min": args[1] if len(args) > 1 else kwargs.get("min")}
    if kw.get("min") == 0 and kw.get("max") is None:
        return _relu(ctx, node, args[:1], {})  # clamp(min=0) is a ReLU
    raise _unsupported(
        node,
        f"not a ReLU network: clamp(min={kw.get('min')}, max={kw.get('max')}) is not a ReLU; "
        "one-spike neurons model ReLU only",
    )


#: Activation functions other than ReLU, by name (functions, tensor methods); activation
#: modules are recognised as the classes of torch.nn.modules.activation.
_ACTIVATION_NAMES = frozenset(
    (
        "sigmoid",
        "tanh",
        "gelu",
        "silu",
        "elu",
        "leaky_relu",
        "relu6",
        "hardswish",
        "hardsigmoid",
        "hardtanh",
        "softplus",
        "mish",
        "selu",
        "celu",
        "prelu",
        "rrelu",
        "threshold",
        "softsign",
        "tanhshrink",
        "logsigmoid",
        "hardshrink",
        "softshrink",
        "softmin",
        "glu",
    )
)


def _is_activation(node: torch.fx.Node, mod: nn.Module | None) -> bool:
    if mod is not None:
        t = type(mod)
        return t.__module__ == "torch.nn.modules.activation" and t is not nn.MultiheadAttention
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return name.strip("_") in _ACTIVATION_NAMES


def supported_ops() -> list[str]:
    """The readable list of supported ops (for error messages and --help)."""
    names = []
    for k in HANDLERS:
        if isinstance(k, type):
            names.append(k.__name__)
        elif isinstance(k, str):
            names.append(f".{k}()")
        else:
            if getattr(F, k.__name__, None) is k:
                names.append("F." + k.__name__)
            elif getattr(operator, k.__name__, None) is k:
                names.append("operator." + k.__name__)
            else:
                names.append("torch." + k.__name__)
    return sorted(set(names))


# --------------------------------------------------------------------------- driver
def lower(
    model: nn.Module, example: torch.Tensor, input_norm=None
) -> tuple[list[RawLayer], list[str]]:
    """Trace ``model`` (in eval mode) and lower it to raw spiking layers.

    Returns the layers and notes on what the conversion changed (a dropped final softmax, an
    identity readout after a final ReLU) for the artifact's metadata."""
    if type(model) in HANDLERS:  # a bare leaf module: trace it as a one-layer network
        model = nn.Sequential(model)
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:
        raise UnsupportedModelError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Data-dependent control "
            "flow is not supported."
        ) from exc
    _refuse_matrix_products(gm)
    ctx = Lowering(gm, example, input_norm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(
            f"the model must take exactly one tensor input, it takes {len(placeholders)}"
        )
    for node in gm.graph.nodes:
        ctx.values[node.name] = _lower_node(ctx, node)
    if ctx.input_rectified:
        ctx.layers[0].rectified = True
        ctx.notes.append(
            f"node '{ctx.input_uses[True]}': ReLU of the model input; the input layer codes "
            "max(x, 0) of the model's own input (no input normalisation folded)"
        )
    return ctx.layers, ctx.notes


#: Products of two matrices (a graph aggregation Â·H, or h @ W): graph_frontend lowers them.
MATMUL_FUNCS = (torch.mm, torch.matmul, torch.sparse.mm, torch.spmm, operator.matmul)
MATMUL_METHODS = ("mm", "matmul", "__matmul__", "spmm")


def is_matrix_product(node: torch.fx.Node) -> bool:
    """``node`` multiplies two matrices (function, operator or tensor method)."""
    return (node.op == "call_function" and node.target in MATMUL_FUNCS) or (
        node.op == "call_method" and node.target in MATMUL_METHODS
    )


def _refuse_matrix_products(gm: torch.fx.GraphModule) -> None:
    """A product of two tensors (a graph aggregation Â·H, attention, a bare ``h @ W``) is not a
    layer the converter knows: refuse it by node before running the model (a GCN takes one
    graph without a batch axis, so the trial run would fail with a shape error instead)."""
    for node in gm.graph.nodes:
        batched = (node.op == "call_function" and node.target in (torch.bmm, torch.einsum)) or (
            node.op == "call_method" and node.target == "bmm"
        )
        if is_matrix_product(node) or batched:
            raise _unsupported(
                node,
                "a matrix product of two tensors (attention, or h @ W) is not supported: use "
                "nn.Linear for per-sample linear maps (a graph aggregation Â·H needs Â held "
                "by the model as a square buffer or constant)",
            )


#: Handlers that pass the input layer's spikes on as a view (its uses are their consumers').
_VIEWS = (_relu, _clamp, _flatten, _identity)


def _lower_node(ctx: Lowering, node: torch.fx.Node) -> Any:
    if node.op == "placeholder":
        shape = ctx.shape(node)
        layer = RawLayer("input", "input", shape)
        return Spikes(ctx.add_layer(layer), shape)
    if node.op == "output":
        return _output(ctx, node)
    concrete = ctx.concrete.get(node.name)
    if not isinstance(concrete, torch.Tensor) and _is_shape_query(ctx, node):
        return Const(concrete)  # sizes, shapes, constants: known from the example run
    if node.op == "get_attr":
        raise _unsupported(
            node, "direct use of a parameter or buffer in forward() is not supported"
        )
    args = [_resolve(ctx, a) for a in node.args]
    kwargs = {k: _resolve(ctx, v) for k, v in node.kwargs.items()}
    if node.op == "call_module":
        mod = ctx.modules[node.target]
        handler, key = HANDLERS.get(type(mod)), mod
    elif node.op == "call_method":
        handler, key = HANDLERS.get(node.target), None
    else:
        handler, key = HANDLERS.get(node.target), None
    if handler is None:
        if _is_activation(node, key):
            raise _unsupported(
                node,
                "not a ReLU network: one-spike neurons model ReLU only, "
                "other activations cannot be converted",
            )
        if node.op == "call_module" and type(key).__name__ == "MultiheadAttention":
            raise _unsupported(node, "attention cannot be converted (not a ReLU network)")
        raise _unsupported(node, "unsupported op; supported: " + ", ".join(supported_ops()))
    for a in args:
        if isinstance(a, Dropped):
            raise _unsupported(
                node,
                "uses a softmax output: a softmax is accepted only as the model's last op",
            )
        if isinstance(a, Spikes) and a.layer == 0 and handler not in _VIEWS:
            ctx.note_input_use(a, node)
    if node.op == "call_module":
        return handler(ctx, node, args, kwargs, key)
    return handler(ctx, node, args, kwargs)


def _is_shape_query(ctx: Lowering, node: torch.fx.Node) -> bool:
    """x.size(), x.shape, x.dim() and arithmetic on their results: constants of the trace."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in ("shape", "ndim")
    if node.op != "call_function":
        return False
    return all(isinstance(ctx.values.get(a.name), Const) for a in node.all_input_nodes)


def _resolve(ctx: Lowering, a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        v = ctx.values[a.name]
        return v.value if isinstance(v, Const) else v
    if isinstance(a, tuple | list):
        return type(a)(_resolve(ctx, x) for x in a)
    if isinstance(a, slice):
        return slice(_resolve(ctx, a.start), _resolve(ctx, a.stop), _resolve(ctx, a.step))
    return a


def output_value(ctx, node: torch.fx.Node, dropped: type):
    """(returned node, its value) of the fx ``output`` node: the one tensor the model returns
    (a 1-tuple unwrapped; None for a constant), past a ``dropped`` op, whose note is kept.
    Shared by the CNN and graph front ends."""
    out = node.args[0]
    if isinstance(out, tuple | list):
        if len(out) != 1:
            raise UnsupportedModelError("the model must return exactly one tensor (the logits)")
        out = out[0]
    v = ctx.values[out.name] if isinstance(out, torch.fx.Node) else None
    if isinstance(v, dropped):
        ctx.notes.append(v.note)
        v = v.value
    return out, v


def _output(ctx: Lowering, node: torch.fx.Node) -> None:
    out, v = output_value(ctx, node, Dropped)
    if isinstance(v, Spikes):
        v = _readout(ctx, out, v)
    if not isinstance(v, PreAct) or v.pending_maxpool is not None:
        raise UnsupportedModelError(
            f"the model output '{getattr(out, 'name', out)}' must be the pre-activation of a "
            "final Linear/Conv2d layer (the logits) or the spikes of a ReLU, not a max pooling "
            "of logits or a constant"
        )
    p = v.folded()
    bias = (
        p.bias.expand(p.shape).clone()
        if p.bias.dim() == len(p.shape)
        else p.bias.reshape(-1, *([1] * (len(p.shape) - 1))).expand(p.shape).clone()
    )
    ctx.add_layer(RawLayer("output", "output", p.shape, p.groups, bias, None))


def _readout(ctx: Lowering, out: torch.fx.Node, v: Spikes) -> PreAct:
    """A model that ends in a ReLU (or pooling of spikes): the output layer is an identity
    readout that integrates the decoded value of every spike of that layer, so the logits are
    the spikes' decoded values and the class is their argmax (ties: the lower index)."""
    if v.stride != (1, 1) or v.channel_offset:
        raise UnsupportedModelError(f"the model output '{out.name}' is a sliced spike tensor")
    if v.layer == 0:
        ctx.note_input_use(v, out)
    shape = ctx.layers[v.layer].shape
    ctx.notes.append(
        f"output '{out.name}': the model ends in spikes (ReLU or pooling); an identity readout "
        "layer decodes them (logits = decoded spike values, class = their argmax)"
    )
    return ctx.as_preact(Spikes(v.layer, shape, rectified=v.rectified), out)
