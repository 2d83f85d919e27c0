"""Derive a variant of a converted SnnModel without calibrating again (e.g. another T_w)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from converter.frontend import Group
from converter.model import Layer, SnnModel, canonical, validate
from converter.quantize import quantize_layer


def with_wait(snn: SnnModel, t_w: int) -> SnnModel:
    """The same network with wait timestep ``t_w``: thresholds (and, where a threshold no
    longer fits the accumulator, scales) are derived again from the float parameters."""
    if isinstance(t_w, bool) or not isinstance(t_w, int) or t_w < 0:
        raise ValueError(f"T_w must be a non-negative int, got {t_w!r}")
    layers: list[Layer] = []
    for lay in snn.layers:
        if lay.kind != "neuron":
            layers.append(lay)
            continue
        lay = replace(lay, T_w=t_w)
        if snn.is_quantized:
            lay = _requantize(lay, layers, snn)
        layers.append(lay)
    cfg = dict(snn.config, T_w=t_w, T_w_resolved=t_w)
    out = canonical(replace(snn, layers=tuple(layers), config=cfg))
    validate(out)
    return out


def _requantize(lay: Layer, done: list[Layer], snn: SnnModel) -> Layer:
    groups = [
        Group(
            s.source,
            s.op,
            torch.from_numpy(s.weight.astype(np.float64)),
            s.kernel,
            s.stride,
            s.padding,
            s.channel_offset,
        )
        for s in lay.synapses
    ]
    weights = [s.weight.astype(np.float64) for s in lay.synapses]
    base = dict(
        name=lay.name,
        kind=lay.kind,
        shape=lay.shape,
        T=lay.T,
        Q=lay.Q,
        lam=lay.lam,
        bias=lay.bias.astype(np.float64),
        threshold=lay.threshold.astype(np.float64),
        shift=lay.shift,
        T_w=lay.T_w,
        act_mean=lay.act_mean,
    )
    src = done[lay.synapses[0].source]
    means = [done[s.source].act_mean for s in lay.synapses]
    out = quantize_layer(base, groups, weights, src, snn.weight_bits, snn.acc_bits, means)
    syns = tuple(  # the ANN's own weights (a refitted artifact) stay
        replace(q, ann_weight=s.ann_weight) for q, s in zip(out.synapses, lay.synapses, strict=True)
    )
    return replace(out, synapses=syns, ann_bias=lay.ann_bias)
