"""convert(): trace → lower → calibrate → normalise → quantise → SnnModel."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from converter import calibration as cal
from converter import graph_frontend
from converter.config import ConversionConfig
from converter.frontend import Group, RawLayer, lower
from converter.model import Layer, SnnModel, Synapse, canonical, validate, with_layers
from converter.ops import synapse_forward

#: Relative amount by which λ is set below the calibration statistic (see _lambdas).
LAMBDA_MARGIN = 2.0**-14


class CalibrationError(ValueError):
    """The calibration data is empty, of the wrong shape or not finite."""


def convert(
    model: nn.Module,
    calibration: torch.Tensor | Iterable,
    config: ConversionConfig | None = None,
    *,
    progress: bool = True,
    name: str | None = None,
) -> SnnModel:
    """Convert a pretrained ReLU network into a one-spike SNN.

    Parameters
    ----------
    model : nn.Module
        The ANN. It is traced with torch.fx and never modified (its training mode is restored).
    calibration : Tensor or iterable of Tensor or (Tensor, label) batches
        Inputs exactly as the model takes them; used for the activation statistics λ.
    config : ConversionConfig
        Conversion parameters (defaults: T 16, Q 1.3, T_w = T, T_in 8, INT8 weights).
    progress : bool
        Show a progress bar over the calibration batches.
    name : str, optional
        Recorded in the artifact's metadata (default: the model's class name).
    """
    config = config or ConversionConfig()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, ConversionConfig):
        raise TypeError(f"config must be a ConversionConfig, got {type(config).__name__}")
    # every submodule's own flag: a model may mix train and eval submodules on purpose
    modes = [(m, m.training) for m in model.modules()]
    graph = None
    try:
        model.eval()
        with torch.no_grad():
            is_graph = graph_frontend.is_graph_model(model)
            config = resolved(config, is_graph)
            if is_graph:
                raw, notes, graph, batches = _lower_graph(model, calibration, config)
            else:
                batches = _batches(calibration)
                norm = (config.input_mean, config.input_std) if config.input_mean else None
                raw, notes = lower(model, batches[0][:1].float().cpu(), norm)
            stats, means = calibrate(raw, batches, config, progress)
            ann_raw = raw
            raw, stats = cal.correct(raw, batches, stats, config)
    finally:
        for m, training in modes:
            m.training = training
    name = name or type(model).__name__
    snn = canonical(build(raw, stats, means, config, name))
    if raw is not ann_raw:  # the calibration refitted: keep the ANN's own weights beside
        snn = with_ann(snn, canonical(build(ann_raw, stats, means, config, name)))
    if notes:
        snn = dataclasses.replace(snn, meta={**snn.meta, "notes": notes})
    if graph is not None:
        snn = dataclasses.replace(snn, meta={**snn.meta, "graph": graph})
    validate(snn)
    return snn


def resolved(config: ConversionConfig, graph: bool) -> ConversionConfig:
    """``config`` with ``calibration="auto"`` made concrete: ``"weights"`` for feed-forward
    and residual networks (the best measured choice: README, benchmarks/results/
    accuracy_spread.md), ``"percentile"`` for graph networks (no refit there yet)."""
    if config.calibration != "auto":
        return config
    return dataclasses.replace(config, calibration="percentile" if graph else "weights")


def with_ann(snn: SnnModel, ann: SnnModel) -> SnnModel:
    """``snn`` with the weights and biases of ``ann`` (the same network converted without the
    refit, same λ) as its ``ann_weight`` / ``ann_bias`` wherever they differ."""
    layers = []
    for lay, ref in zip(snn.layers, ann.layers, strict=True):
        syns = tuple(
            s if np.array_equal(s.weight, r.weight) else replace(s, ann_weight=r.weight)
            for s, r in zip(lay.synapses, ref.synapses, strict=True)
        )
        same = lay.bias is None or np.array_equal(lay.bias, ref.bias)
        layers.append(replace(lay, synapses=syns, ann_bias=None if same else ref.bias))
    return with_layers(snn, layers)


def _lower_graph(model: nn.Module, calibration, config: ConversionConfig):
    """A graph network: calibration is the node features (N, F) of the model's graph, or a
    list of them; each becomes one (1, F, N, 1) batch of the layers (docs/semantics.md §5)."""
    graphs = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    if not graphs or not all(isinstance(g, torch.Tensor) for g in graphs):
        raise CalibrationError(
            "a graph network calibrates on its node features: give x (N, F) or a list of them"
        )
    if config.input_mean is not None:
        raise CalibrationError("input_mean/input_std are for image inputs, not graph networks")
    if config.calibration != "percentile":
        raise CalibrationError(
            f"calibration={config.calibration!r} is not implemented for graph networks; "
            "use 'percentile'"
        )
    raw, notes, graph = graph_frontend.lower_graph(model, graphs[0].cpu())
    try:
        batches = [
            graph_frontend.layer_input(g.cpu(), graph["one_hot"], graph["nodes"], graph["features"])
            for g in graphs
        ]
    except ValueError as exc:
        raise CalibrationError(f"calibration graph: {exc}") from exc
    return raw, notes, graph, batches


def _batches(calibration) -> list[torch.Tensor]:
    if isinstance(calibration, torch.Tensor):
        calibration = [calibration]
    out = []
    for b in calibration:
        x = b[0] if isinstance(b, tuple | list) else b
        if not isinstance(x, torch.Tensor):
            raise CalibrationError(f"calibration batches must be tensors, got {type(x).__name__}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise CalibrationError(f"calibration batch of shape {tuple(x.shape)} is empty")
        if not torch.isfinite(x).all():
            raise CalibrationError("calibration data contains NaN or infinity")
        out.append(x.detach().float().cpu())
    if not out:
        raise CalibrationError("calibration data is empty: give at least one batch")
    shapes = {tuple(x.shape[1:]) for x in out}
    if len(shapes) != 1:
        raise CalibrationError(f"calibration batches have different shapes: {sorted(shapes)}")
    return out


# --------------------------------------------------------------------------- calibration
def _raw_input(x: torch.Tensor, lay: RawLayer, config: ConversionConfig) -> torch.Tensor:
    """The input as the input layer codes it: raw = x · std + mean (or x itself); through a
    ReLU of the model input, max(x, 0)."""
    if lay.rectified:
        return x.double().clamp(min=0)
    if config.input_mean is None:
        return x.double()
    c = x.shape[1]
    if len(config.input_mean) != c:
        raise CalibrationError(
            f"input_mean has {len(config.input_mean)} channels, the input has {c}"
        )
    shape = (1, c) + (1,) * (x.dim() - 2)
    mean = torch.tensor(config.input_mean, dtype=torch.float64).reshape(shape)
    std = torch.tensor(config.input_std, dtype=torch.float64).reshape(shape)
    return x.double() * std + mean


def _forward_raw(raw: list[RawLayer], x: torch.Tensor) -> list[torch.Tensor]:
    """The ANN through the folded raw graph: every layer's true activation (float32)."""
    acts: list[torch.Tensor] = [x.float()]
    for lay in raw[1:]:
        if lay.kind == "maxpool":
            acts.append(
                torch.nn.functional.max_pool2d(
                    acts[lay.source], lay.kernel, lay.stride, lay.padding
                )
            )
            continue
        z = _preactivation(raw, lay, acts)
        if lay.kind == "neuron":
            z = z.clamp(min=0) / _chan(lay.theta_unit.float(), lay.shape)
        acts.append(z)
    return acts


def _preactivation(raw: list[RawLayer], lay: RawLayer, acts: list[torch.Tensor]) -> torch.Tensor:
    z = lay.bias.float().unsqueeze(0).expand(acts[0].shape[0], *lay.shape).clone()
    for g in lay.groups:
        z += synapse_forward(acts[g.source], _syn(g), g.weight.float(), _as_layer(lay))
    return z


def _syn(g: Group, weight=None, weight_q=None) -> Synapse:
    w = g.weight if weight is None else weight
    return Synapse(
        g.source,
        g.op,
        np.asarray(w, dtype=np.float32),
        weight_q,
        g.kernel,
        g.stride,
        g.padding,
        g.channel_offset,
        None if g.index is None else g.index.numpy(),
    )


def _as_layer(lay: RawLayer) -> Layer:
    return Layer(lay.name, lay.kind, tuple(lay.shape))


def _chan(v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return v.reshape(-1, *([1] * (len(shape) - 1)))


def calibrate(
    raw: list[RawLayer], batches: list[torch.Tensor], config: ConversionConfig, progress: bool
) -> list[torch.Tensor | None]:
    """Per-layer activation statistic (max or percentile) per channel, and the input range."""
    stats: list[torch.Tensor | None] = [None] * len(raw)
    sums: list[torch.Tensor | None] = [None] * len(raw)
    seen = 0
    for x in tqdm(batches, desc="calibrating", disable=None if progress else True, leave=False):
        acts = _forward_raw(raw, _raw_input(x, raw[0], config))
        n = x.shape[0]
        for i, (lay, a) in enumerate(zip(raw, acts, strict=True)):
            if lay.kind == "output":
                continue
            per_image = a.reshape(n, lay.shape[0], -1).mean(2).sum(0).double()
            sums[i] = per_image if sums[i] is None else sums[i] + per_image
            if lay.kind not in ("input", "neuron"):
                continue
            s = _statistic(a.abs() if lay.kind == "input" else a, lay, config)
            if stats[i] is None:
                stats[i] = s * n if config.percentile < 100 else s
            elif config.percentile < 100:
                stats[i] = stats[i] + s * n
            else:
                stats[i] = torch.maximum(stats[i], s)
        seen += n
        if bool((acts[0] < 0).any()):
            raw[0].signed = True  # signed inputs: every input spike carries a sign
    if config.percentile < 100:
        stats = [s / seen if s is not None else None for s in stats]
    means = [m / seen if m is not None else None for m in sums]
    return stats, means


# Average pooling of a conv map keeps its channels, so it gets a λ per channel too (the paper
# normalises pooling layers per layer; per channel measured +0.3 points on CIFAR ResNet-20).
_PER_CHANNEL_OPS = ("conv", "shortcut", "avgpool", "graph", "embedding")


def lambda_per_channel(lay: RawLayer, config: ConversionConfig) -> bool:
    """Whether layer ``lay`` gets one λ per channel (else one per layer)."""
    return (
        config.per_channel
        and lay.kind == "neuron"
        and len(lay.shape) == 3
        and all(g.op in _PER_CHANNEL_OPS for g in lay.groups)
        and not lay.per_layer_lambda  # read by a graph aggregation: one λ (semantics.md §5)
    )


def _statistic(a: torch.Tensor, lay: RawLayer, config: ConversionConfig) -> torch.Tensor:
    per_channel = lambda_per_channel(lay, config)
    c = lay.shape[0]
    if lay.rails:  # both rails share one λ: the statistic of |v| = pos + neg
        half = c // 2
        one_rail = dataclasses.replace(lay, rails=False, shape=(half, *lay.shape[1:]))
        s = _statistic(a[:, :half] + a[:, half:], one_rail, config)
        return torch.cat([s, s])
    flat = a.transpose(0, 1).reshape(c, -1) if per_channel else a.reshape(1, -1)
    if config.percentile >= 100:
        s = flat.max(dim=1).values
    else:
        k = max(1, min(flat.shape[1], math.ceil(flat.shape[1] * config.percentile / 100)))
        s = flat.kthvalue(k, dim=1).values
    return s if per_channel else s.expand(c).clone()


# --------------------------------------------------------------------------- building
def build(raw: list[RawLayer], stats, means, config: ConversionConfig, name: str) -> SnnModel:
    """Normalise by λ, fold λ into the weights, quantise, and assemble the SnnModel.

    ``means``: the mean activation per channel of every layer over the calibration data; as a
    fraction of λ it is stored (``act_mean``) and used to correct the quantisation bias.
    """
    lams = _lambdas(raw, stats, config)
    layers = []
    for i, lay in enumerate(raw):
        if lay.kind == "input":
            layers.append(_input_layer(lay, lams[i], config))
            layers[-1] = replace(layers[-1], act_mean=_mean_fraction(means[i], layers[-1]))
        elif lay.kind == "maxpool":
            src = layers[lay.source]
            layers.append(
                Layer(
                    lay.name,
                    "maxpool",
                    tuple(lay.shape),
                    T=src.T,
                    Q=src.Q,
                    lam=src.lam,
                    source=lay.source,
                    kernel=lay.kernel,
                    stride=lay.stride,
                    padding=lay.padding,
                    act_mean=_mean_fraction(means[i], src),
                )
            )
        else:
            layers.append(_neuron_layer(lay, layers, lams[i], config))
            if lay.kind == "neuron":
                layers[-1] = replace(layers[-1], act_mean=_mean_fraction(means[i], layers[-1]))
    cfg = {k: v for k, v in dataclasses.asdict(config).items() if not k.startswith("_")}
    cfg["Q_resolved"] = config.q
    cfg["T_w_resolved"] = config.t_w
    return SnnModel(tuple(layers), cfg, config.weight_bits, config.acc_bits, {"model": name})


def _lambdas(raw, stats, config) -> list[np.ndarray | None]:
    lams: list[np.ndarray | None] = []
    for lay, s in zip(raw, stats, strict=True):
        if s is None:
            lams.append(None)
            continue
        s = s.numpy().astype(np.float64)
        if lay.kind == "input":
            m = float(s.max()) if config.input_scale is None else config.input_scale
            if config.input_scale is None:
                m *= 2**config.T_in / (2**config.T_in - 1)
            if lay.one_hot:  # X = I: the value 1 is half the range, one spike at phase 0
                m = 2.0
            lams.append(np.full(lay.shape[0], m if m > 0 else 1.0))
            continue
        # a channel that never fired in calibration: any positive λ keeps it consistent
        fallback = s.max() if s.max() > 0 else 1.0
        # Spike inputs are discrete, so activations repeat exactly and the calibration maximum
        # recurs on test data, where a/λ = 1 sits exactly on the floor-mode threshold (and
        # halves, quarters... on the next ones when Q = 2). A λ a hair below the statistic
        # puts those ties on the firing side, so float rounding cannot split them.
        lams.append(np.where(s > 0, s, fallback) * (1 - LAMBDA_MARGIN))
    return lams


def _input_layer(lay: RawLayer, lam_in: np.ndarray, config: ConversionConfig) -> Layer:
    c = lay.shape[0]
    if config.input_mean is not None and not lay.rectified:
        gain = np.asarray(config.input_std) / lam_in
        offset = np.asarray(config.input_mean) / lam_in
    else:
        gain, offset = 1.0 / lam_in, np.zeros(c)
    # A phase-t input spike is bit t+1 of the coded fraction: it carries λ_in · 2^-(t+1),
    # i.e. lam · 2^-t with lam = λ_in / 2 (so every layer follows lam · Q^-t).
    return Layer(
        "input",
        "input",
        tuple(lay.shape),
        T=config.T_in,
        Q=2.0,
        lam=lam_in / 2,
        input_gain=gain,
        input_offset=offset,
        signed=bool(lay.signed) and not lay.rectified,
    )


def _neuron_layer(lay: RawLayer, layers: list[Layer], lam, config: ConversionConfig) -> Layer:
    src_layers = [layers[g.source] for g in lay.groups]
    weights = [_effective_weight(g, s) for g, s in zip(lay.groups, src_layers, strict=True)]
    bias = lay.bias.numpy().astype(np.float64)
    out = lay.kind == "output"
    src = src_layers[0]
    if any((s.T, s.Q) != (src.T, src.Q) for s in src_layers):
        raise ValueError(
            f"layer {lay.name} adds spikes with different (T, Q): "
            f"{[(s.T, s.Q) for s in src_layers]}"
        )
    c = lay.shape[0]
    threshold = None if out else (lam * lay.theta_unit.numpy()).astype(np.float64)
    base = dict(
        name=lay.name,
        kind=lay.kind,
        shape=tuple(lay.shape),
        T=0 if out else config.T,
        Q=src.Q if out else config.q,
        lam=np.ones(c) if out else lam,
        bias=bias,
        threshold=threshold,
        shift=(1 + 1 / config.q) / 2 if config.threshold_shift and not out else 1.0,
        T_w=0 if out else config.t_w,
        rails=lay.rails,
    )
    if config.weight_bits is None:
        syns = tuple(_syn(g, w) for g, w in zip(lay.groups, weights, strict=True))
        return Layer(synapses=syns, **base)
    from converter.quantize import quantize_layer

    src_means = [layers[g.source].act_mean for g in lay.groups]
    return quantize_layer(
        base, lay.groups, weights, src, config.weight_bits, config.acc_bits, src_means
    )


def _effective_weight(g: Group, src: Layer) -> np.ndarray:
    """ANN weight × λ of the presynaptic channel (DESIGN 2.4)."""
    w = g.weight.numpy().astype(np.float64)
    lam = src.lam.astype(np.float64)
    if g.op == "conv":
        return w * lam.reshape(1, -1, 1, 1)
    if g.op == "linear":
        per = np.repeat(lam, src.size // src.channels)
        return w * per.reshape(1, -1)
    if g.op == "avgpool":
        return w * lam
    if g.op in ("graph", "embedding"):  # one λ for the whole source (docs/semantics.md §5)
        if np.ptp(lam) != 0:
            raise ValueError(f"a {g.op} synapse needs one λ for its source, got {lam.min()}..")
        return w * lam[0]
    idx = np.clip(np.arange(w.shape[0]) - g.channel_offset, 0, src.channels - 1)
    return w * lam[idx]


def _mean_fraction(mean: torch.Tensor | None, lay: Layer) -> np.ndarray | None:
    """The mean activation per channel in units of the layer's λ (its spikes' scale)."""
    if mean is None:
        return None
    return (mean.numpy() / lay.lam.astype(np.float64)).astype(np.float32)
