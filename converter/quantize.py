"""Quantisation: integer weights, initial potentials and threshold table (docs/semantics.md)."""

from __future__ import annotations

import numpy as np

from converter.config import Q_FRAC_BITS
from converter.frontend import Group
from converter.model import Layer, Synapse


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


def max_phase_input(synapses) -> int:
    """Smax: the largest |S(k)| one phase can add to a potential (docs/semantics.md §4).

    Each source neuron spikes at most once per phase, so Smax = max over output channels of
    Σ |weight_q| over the channel's whole fan-in (all synapse groups, all kernel taps).
    """
    total = None
    for syn in synapses:
        w = np.abs(syn.weight_q.astype(np.int64))
        per = w.reshape(w.shape[0], -1).sum(1) if w.ndim > 1 else w
        if syn.op == "avgpool":
            per = per * syn.kernel[0] * syn.kernel[1]
        total = per if total is None else total + per
    return int(total.max())


def _row_max(w: np.ndarray, op: str) -> np.ndarray:
    a = np.abs(w)
    return a.reshape(a.shape[0], -1).max(axis=1) if op in ("conv", "linear") else a


def quantize_layer(
    base: dict,
    groups: list[Group],
    weights: list[np.ndarray],
    src: Layer,
    weight_bits: int,
    acc_bits: int,
) -> Layer:
    """Integer weights with one scale per output channel (per tensor for the output layer)."""
    qmax = 2 ** (weight_bits - 1) - 1
    acc_max = 2 ** (acc_bits - 1) - 1
    m = np.max(np.stack([_row_max(w, g.op) for g, w in zip(groups, weights, strict=True)]), 0)
    out = base["kind"] == "output"
    if out:  # one scale, so that argmax over the integer potentials is the prediction
        m = np.full_like(m, m.max())
    bias = base["bias"]
    c = base["shape"][0]
    fallback = np.abs(bias).reshape(c, -1).max(1) if bias.ndim > 1 else np.abs(bias)
    if base["threshold"] is not None:
        fallback = np.maximum(fallback, base["threshold"])
    scale = np.where(m > 0, m / qmax, np.where(fallback > 0, fallback / qmax, 1.0))
    if not out:
        # A channel whose threshold dwarfs its weights (a tiny BN γ) would need a threshold
        # wider than the accumulator: coarsen that channel's scale until its largest threshold
        # fits with 2 bits of headroom (the potential may exceed Θ by the Q scaling and S).
        ones = np.ones_like(scale)
        peak = threshold_table(
            base["threshold"], base["shift"], base["T"], base["T_w"], src.T, src.Q, base["Q"], ones
        ).max(axis=1)
        scale = np.maximum(scale, peak / 2 ** (acc_bits - 3))
    dtype = np.int8 if weight_bits <= 8 else np.int16
    syns = []
    for g, w in zip(groups, weights, strict=True):
        s = scale.reshape(-1, *([1] * (w.ndim - 1)))
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
            )
        )
    limit = acc_max - max_phase_input(syns)
    if limit < 1:
        raise ValueError(
            f"layer {base['name']}: acc_bits={acc_bits} is too narrow, one phase of "
            f"input can add {max_phase_input(syns)} to a potential; raise acc_bits"
        )
    s_b = scale.reshape(-1, *([1] * (bias.ndim - 1)))
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
