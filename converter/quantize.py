"""Quantisation: integer weights, initial potentials and threshold table (docs/semantics.md)."""

from __future__ import annotations

import numpy as np

from converter.config import Q_FRAC_BITS
from converter.frontend import Group
from converter.model import Layer, Synapse, max_phase_input

#: Width of a residual shortcut group's per-channel weights (docs/semantics.md §1).
SHORTCUT_WEIGHT_BITS = 16
#: Width of a graph aggregation's weights, the values of Â (docs/semantics.md §5): Â spans
#: several decades (Text GCN R8: self loops near 1, document-word edges near 1e-3), which INT8
#: would round to zero.
GRAPH_WEIGHT_BITS = 16


def fixed_base(q: float) -> int:
    """M = round(Q · 2^F): the base as the neuron unit's fixed-point multiplier."""
    return round(q * (1 << Q_FRAC_BITS))


def quantized_base(q: float) -> float:
    """The base the integer datapath really uses, M / 2^F."""
    return fixed_base(q) / (1 << Q_FRAC_BITS)


def gain(k: int, t_in: int, q_in: float, q_out: float) -> float:
    """G(k): the factor the integer potential carries at phase k (docs/semantics.md §3).

    The leak is Q_in while input spikes can still arrive (k ≤ T_in − 1), Q_out afterwards.
    """
    return q_in ** min(k, t_in - 1) * q_out ** max(0, k - t_in + 1)


def threshold_table(
    theta: np.ndarray,
    shift: float,
    T: int,
    T_w: int,
    t_in: int,
    q_in: float,
    q_out: float,
    scale: np.ndarray,
) -> np.ndarray:
    """Θq[c, t_o] = round(c_Q · θ_c · Q_out^-t_o · G(t_o + T_w) / s_c), quantised bases."""
    qi, qo = quantized_base(q_in), quantized_base(q_out)
    t = np.arange(T)
    g = np.array([gain(int(k), t_in, qi, qo) for k in t + T_w])
    return np.rint(shift * theta[:, None] * qo ** (-t[None, :]) * g[None, :] / scale[:, None])


def _bias_correction(syns, weights, scale, src_means) -> np.ndarray:
    """Expected error that weight rounding adds to each output channel's potential.

    Rounding many small weights of one sign to zero shifts every potential the same way; with
    the mean input m_i of each source channel (in spike units, from calibration) the expected
    shift is Σ_i (weight_q · scale − weight)[j, i] · m_i, which is taken off the initial
    potential (bias correction, Nagel et al., ICCV 2019).
    """
    corr = np.zeros(scale.shape[0])
    for syn, w, m in zip(syns, weights, src_means, strict=True):
        if syn.op in ("graph", "embedding"):
            continue  # one weight per edge / neuron: its rounding error is not a shared bias
        err = syn.weight_q.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1))) - w
        m = m.astype(np.float64)
        if syn.op == "conv":
            corr += (err.sum(axis=(2, 3)) * m.reshape(1, -1)).sum(1)
        elif syn.op == "linear":
            per = np.repeat(m, err.shape[1] // m.shape[0])
            corr += err @ per
        elif syn.op == "avgpool":
            corr += err * syn.kernel[0] * syn.kernel[1] * m
        else:
            idx = np.arange(err.shape[0]) - syn.channel_offset
            ok = (idx >= 0) & (idx < m.shape[0])
            corr += np.where(ok, err * m[np.clip(idx, 0, m.shape[0] - 1)], 0.0)
    return corr


def _row_max(w: np.ndarray, op: str, c: int) -> np.ndarray:
    a = np.abs(w)
    if op == "graph":  # one Â for every channel
        return np.full(c, a.max(initial=0.0))
    return a.reshape(a.shape[0], -1).max(axis=1) if op in ("conv", "linear", "embedding") else a


def quantize_layer(
    base: dict,
    groups: list[Group],
    weights: list[np.ndarray],
    src: Layer,
    weight_bits: int,
    acc_bits: int,
    src_means: list[np.ndarray | None] | None = None,
) -> Layer:
    """Integer weights with one scale per output channel (per tensor for the output layer)."""
    qmax = 2 ** (weight_bits - 1) - 1
    acc_max = 2 ** (acc_bits - 1) - 1
    # The scale follows the weight arrays (conv, linear, pooling). A residual shortcut group
    # has one weight per channel (λ of the block input) that often dwarfs the conv weights; it
    # is stored with SHORTCUT_WEIGHT_BITS instead, so that it does not coarsen the conv row.
    sized = [(g, w) for g, w in zip(groups, weights, strict=True) if g.op != "shortcut"]
    sized = sized or list(zip(groups, weights, strict=True))
    c = base["shape"][0]
    m = np.max(np.stack([_row_max(w, g.op, c) for g, w in sized]), 0)
    out = base["kind"] == "output"
    if out:  # one scale, so that argmax over the integer potentials is the prediction
        m = np.full_like(m, m.max())
    bias = base["bias"]
    fallback = np.abs(bias).reshape(c, -1).max(1) if bias.ndim > 1 else np.abs(bias)
    if base["threshold"] is not None:
        fallback = np.maximum(fallback, base["threshold"])
    scale = np.where(m > 0, m / qmax, np.where(fallback > 0, fallback / qmax, 1.0))
    top = 2 ** (SHORTCUT_WEIGHT_BITS - 1) - 1
    for g, w in zip(groups, weights, strict=True):
        if g.op == "shortcut" and len(sized) < len(groups):  # never clip a shortcut weight
            scale = np.maximum(scale, np.abs(w) / top)
    if not out:
        # A channel whose threshold dwarfs its weights (a tiny BN γ) would need a threshold
        # wider than the accumulator: coarsen that channel's scale until its largest threshold
        # fits with 2 bits of headroom (the potential may exceed Θ by the Q scaling and S).
        ones = np.ones_like(scale)
        peak = threshold_table(
            base["threshold"], base["shift"], base["T"], base["T_w"], src.T, src.Q, base["Q"], ones
        ).max(axis=1)
        scale = np.maximum(scale, peak / 2 ** (acc_bits - 3))
    graph = any(g.op == "graph" for g in groups)
    if graph:  # Â's integers serve every channel: one scale, GRAPH_WEIGHT_BITS wide
        scale = np.full_like(scale, scale.max() * qmax / (2 ** (GRAPH_WEIGHT_BITS - 1) - 1))
        if not out:
            scale = np.maximum(scale, peak.max() / 2 ** (acc_bits - 3))
    dtype = np.int8 if weight_bits <= 8 else np.int16
    syns = []
    for g, w in zip(groups, weights, strict=True):
        s = scale.reshape(-1, *([1] * (w.ndim - 1)))
        if g.op == "graph":
            gtop = 2 ** (GRAPH_WEIGHT_BITS - 1) - 1
            wq = np.clip(np.rint(w / scale[0]), -gtop, gtop).astype(np.int16)
        elif g.op == "shortcut" and len(sized) < len(groups):
            wq = np.clip(np.rint(w / s), -top, top).astype(np.int16)
        else:
            wq = np.clip(np.rint(w / s), -qmax, qmax).astype(dtype)
        syns.append(
            Synapse(
                g.source,
                g.op,
                w.astype(np.float32),
                wq,
                g.kernel,
                g.stride,
                g.padding,
                g.channel_offset,
                None if g.index is None else g.index.numpy(),
            )
        )
    limit = acc_max - max_phase_input(syns)
    if limit < 1:
        raise ValueError(
            f"layer {base['name']}: acc_bits={acc_bits} is too narrow, one phase of "
            f"input can add {max_phase_input(syns)} to a potential; raise acc_bits"
        )
    s_b = scale.reshape(-1, *([1] * (bias.ndim - 1)))
    if src_means is not None and all(m is not None for m in src_means):
        bias = bias - _bias_correction(syns, weights, scale, src_means).reshape(s_b.shape)
    bias_q = np.clip(np.rint(bias / s_b), -limit, limit).astype(np.int64)
    threshold_q = None
    if not out:
        tq = threshold_table(
            base["threshold"], base["shift"], base["T"], base["T_w"], src.T, src.Q, base["Q"], scale
        )
        if tq.max() > limit:
            raise ValueError(
                f"layer {base['name']}: a threshold needs {int(np.ceil(np.log2(tq.max()))) + 1} "
                f"bits, more than acc_bits={acc_bits}; raise acc_bits or lower T_w"
            )
        threshold_q = np.maximum(tq, 1).astype(np.int64)
    return Layer(
        synapses=tuple(syns),
        scale=scale.astype(np.float32),
        bias_q=bias_q,
        threshold_q=threshold_q,
        sat_limit=int(limit),
        **base,
    )
