"""Fan-out tables of the synapse ops: which potentials an input event touches, and in how many
adder cycles (docs/architecture.md, "Fan-out addressing")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from converter.model import Layer, Synapse


@dataclass(frozen=True)
class FanOut:
    """One synapse group's fan-out in CSR form over the source neurons.

    Attributes
    ----------
    ptr : int64 [n_src + 1]
        Row pointers: the targets of source neuron i are ``tgt[ptr[i]:ptr[i + 1]]``.
    tgt : int32 [synapses]
        Flat (C, H, W order) index of the target neuron.
    w : int32 [synapses]
        The integer weight of each synapse (1 for max pooling).
    cycles : int32 [n_src]
        Adder cycles of one event of each source neuron: rows × ceil(row length / P).
    """

    ptr: np.ndarray
    tgt: np.ndarray
    w: np.ndarray
    cycles: np.ndarray


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def synapse_fanout(syn: Synapse, src: Layer, out: Layer, lanes: int) -> FanOut:
    """The fan-out table of one synapse group (integer weights) on a P = ``lanes`` engine."""
    w = np.asarray(syn.weight_q).astype(np.int32)
    if syn.op == "conv":
        return _window_fanout(src.shape, out.shape, syn.kernel, syn.stride, syn.padding, w, lanes)
    if syn.op == "avgpool":
        return _window_fanout(src.shape, out.shape, syn.kernel, syn.stride, syn.padding, w, 0)
    if syn.op == "linear":
        n_in, n_out = src.size, out.size
        return FanOut(
            ptr=np.arange(n_in + 1, dtype=np.int64) * n_out,
            tgt=np.tile(np.arange(n_out, dtype=np.int32), n_in),
            w=np.ascontiguousarray(w.T).reshape(-1),
            cycles=np.full(n_in, ceil_div(n_out, lanes), np.int32),
        )
    if syn.op == "shortcut":
        return _shortcut_fanout(syn, src, out, w)
    if syn.op == "graph":
        return _graph_fanout(syn, src, out, w)
    if syn.op == "embedding":
        return _embedding_fanout(src, out, w, lanes)
    raise ValueError(f"unknown synapse op {syn.op!r}")


def read_channels(syn: Synapse, src: Layer, out: Layer) -> tuple[int, int]:
    """The source channels [lo, hi) a synapse group reads: a ``graph`` group reads the
    C = ``out.channels`` channels from ``channel_offset`` on (one rail of a two-rail source),
    every other op all of them."""
    if syn.op == "graph":
        lo = syn.channel_offset
        return lo, max(lo, min(src.channels, lo + out.channels))
    return 0, src.channels


def table_entries(syn: Synapse, src: Layer, out: Layer) -> int | None:
    """Synapses in the simulator's fan-out table of one group, computed without building it
    (graph: C read channels × nnz(Â); embedding: C × nodes; linear: N_in × N_out); None for
    the window ops, whose tables are bounded by the layer's shape."""
    if syn.op == "graph":
        lo, hi = read_channels(syn, src, out)
        return (hi - lo) * int(np.asarray(syn.index).shape[1])
    if syn.op == "embedding":
        return out.channels * src.size
    if syn.op == "linear":
        return src.size * out.size
    return None


def _graph_fanout(syn: Synapse, src: Layer, out: Layer, w: np.ndarray) -> FanOut:
    """Aggregation Â·H over layers laid out (features, nodes, 1): source neuron (f + offset, m)
    reaches (f, n) for every edge (n, m) of Â, with weight Â[n, m]. Each target is a different
    node, i.e. a different potential row: one adder cycle per target (out-degree of m)."""
    nodes = src.shape[1]
    idx = np.asarray(syn.index, np.int64)
    order = np.lexsort((idx[0], idx[1]))  # by source node, then target node
    tgt_node, src_node = idx[0][order], idx[1][order]
    w_e = w.reshape(-1)[order]
    deg = np.bincount(src_node, minlength=nodes).astype(np.int64)
    lo, hi = read_channels(syn, src, out)
    reads = np.zeros(src.channels, np.bool_)
    reads[lo:hi] = True
    per = np.where(reads[:, None], deg[None, :], 0).reshape(-1)  # (channels · nodes)
    ptr = np.zeros(per.size + 1, np.int64)
    np.cumsum(per, out=ptr[1:])
    f = np.arange(hi - lo, dtype=np.int64)
    tgt = (f[:, None] * nodes + tgt_node[None, :]).reshape(-1).astype(np.int32)
    return FanOut(ptr, tgt, np.tile(w_e, hi - lo).astype(np.int32), per.astype(np.int32))


def _embedding_fanout(src: Layer, out: Layer, w: np.ndarray, lanes: int) -> FanOut:
    """One-hot features (X = I): node n's input neuron reaches (c, n) for every c, weight
    W[c, n]: one row of C targets (the node's channels are one row group): ⌈C/P⌉ cycles."""
    c, nodes = out.channels, src.size
    tgt = np.arange(c, dtype=np.int64)[None, :] * nodes + np.arange(nodes)[:, None]
    return FanOut(
        ptr=np.arange(nodes + 1, dtype=np.int64) * c,
        tgt=tgt.reshape(-1).astype(np.int32),
        w=np.ascontiguousarray(w.reshape(c, nodes).T).reshape(-1),
        cycles=np.full(nodes, ceil_div(c, lanes), np.int32),
    )


def maxpool_fanout(lay: Layer, src: Layer) -> FanOut:
    """The windows each source neuron belongs to (one target per window, one cycle each)."""
    ones = np.ones(lay.channels, np.int32)
    return _window_fanout(src.shape, lay.shape, lay.kernel, lay.stride, lay.padding, ones, 0)


def _window_fanout(src_shape, out_shape, kernel, stride, padding, w, lanes) -> FanOut:
    """Convolution (``w`` [Co, Ci, kh, kw], lanes > 0: a row of Co targets per kernel tap) or
    depthwise window op (``w`` [C], lanes = 0: one target per tap, 1 cycle each)."""
    depthwise = lanes == 0
    w4 = w.reshape(-1, 1, 1, 1) if depthwise else w
    per_tap = 1 if depthwise else ceil_div(out_shape[0], lanes)
    ptr, tgt, wq, cycles = _window_csr(
        np.array([*src_shape, *out_shape, *kernel, *stride, *padding], np.int64),
        np.ascontiguousarray(w4, dtype=np.int32),
        depthwise,
        per_tap,
    )
    return FanOut(ptr, tgt, wq, cycles)


@njit(cache=True)
def tap_target(n: int, pad: int, k: int, stride: int, size: int) -> int:
    """The output coordinate that input coordinate ``n`` reaches through kernel tap ``k``:
    (n + pad − k) / stride where that is exact and inside [0, size); −1 otherwise (§3)."""
    m = n + pad - k
    if m < 0 or m % stride != 0 or m // stride >= size:
        return -1
    return m // stride


@njit(cache=True)
def _window_csr(geo, w4, depthwise, per_tap):
    """Fan-out rows in source order (c_in, y, x), each walking the taps ky-major, then kx, then
    the output channels: oy = (y + p_y − ky) / s_y must be exact and inside the output."""
    ci, h, wd, co, ho, wo, kh, kw, sy, sx, py, px = geo
    n_src = ci * h * wd
    ptr = np.zeros(n_src + 1, np.int64)
    cycles = np.zeros(n_src, np.int32)
    per = 1 if depthwise else co
    for y in range(h):
        for x in range(wd):
            taps = 0
            for ky in range(kh):
                if tap_target(y, py, ky, sy, ho) < 0:
                    continue
                for kx in range(kw):
                    if tap_target(x, px, kx, sx, wo) >= 0:
                        taps += 1
            for c in range(ci):
                i = (c * h + y) * wd + x
                ptr[i + 1] = taps * per
                cycles[i] = taps * per_tap
    for i in range(n_src):
        ptr[i + 1] += ptr[i]
    tgt = np.empty(ptr[-1], np.int32)
    wq = np.empty(ptr[-1], np.int32)
    for c in range(ci):
        for y in range(h):
            for x in range(wd):
                e = ptr[(c * h + y) * wd + x]
                for ky in range(kh):
                    oy = tap_target(y, py, ky, sy, ho)
                    if oy < 0:
                        continue
                    for kx in range(kw):
                        ox = tap_target(x, px, kx, sx, wo)
                        if ox < 0:
                            continue
                        pix = oy * wo + ox
                        if depthwise:
                            tgt[e] = c * ho * wo + pix
                            wq[e] = w4[c, 0, 0, 0]
                            e += 1
                        else:
                            for o in range(co):
                                tgt[e] = o * ho * wo + pix
                                wq[e] = w4[o, c, ky, kx]
                                e += 1
    return ptr, tgt, wq, cycles


def _shortcut_fanout(syn: Synapse, src: Layer, out: Layer, w: np.ndarray) -> FanOut:
    """Output channel c reads source channel c − offset at every stride-th pixel."""
    c, h, wd = src.shape
    co, ho, wo = out.shape
    cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(wd), indexing="ij")
    oc, oy, ox = cc + syn.channel_offset, yy // syn.stride[0], xx // syn.stride[1]
    ok = (
        (yy % syn.stride[0] == 0)
        & (xx % syn.stride[1] == 0)
        & (oy < ho)
        & (ox < wo)
        & (oc >= 0)
        & (oc < co)
    )
    src_i = (cc * h * wd + yy * wd + xx)[ok]
    tgt = (oc * ho * wo + oy * wo + ox)[ok]
    cycles = ok.reshape(-1).astype(np.int32)
    return _csr(c * h * wd, [src_i], [tgt], [w[oc[ok]]], cycles)


def _csr(n_src: int, src_l, tgt_l, w_l, cycles) -> FanOut:
    if src_l:
        src = np.concatenate(src_l)
        order = np.argsort(src, kind="stable")
        tgt = np.concatenate(tgt_l)[order].astype(np.int32)
        w = np.concatenate(w_l)[order].astype(np.int32)
        counts = np.bincount(src, minlength=n_src)
    else:
        tgt, w, counts = np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(n_src, np.int64)
    ptr = np.zeros(n_src + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    return FanOut(ptr, np.ascontiguousarray(tgt), np.ascontiguousarray(w), cycles)
