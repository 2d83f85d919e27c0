"""Tensor kernels of the SnnModel's synapse ops, shared by calibration and the golden model."""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from converter.model import Layer, Synapse


def synapse_forward(
    x: torch.Tensor, syn: Synapse, weight: torch.Tensor, out: Layer
) -> torch.Tensor:
    """Apply one synapse group to source values ``x`` (N, *source shape).

    ``weight`` is the group's weight tensor in the dtype/device of ``x`` (float or integer
    values held in a float dtype). Returns (N, *out.shape).
    """
    n = x.shape[0]
    if syn.op == "conv":
        return F.conv2d(x, weight, stride=syn.stride, padding=syn.padding)
    if syn.op == "linear":
        return F.linear(x.reshape(n, -1), weight).reshape(n, *out.shape)
    if syn.op == "avgpool":
        c = weight.shape[0]
        kernel = weight.reshape(c, 1, 1, 1).expand(c, 1, *syn.kernel)
        return F.conv2d(x, kernel, stride=syn.stride, padding=syn.padding, groups=c)
    if syn.op == "shortcut":
        return _shortcut(x, syn, weight, out)
    if syn.op == "graph":
        return _aggregate(x, syn, weight, out)
    if syn.op == "embedding":  # x (N, 1, nodes, 1): node n's one input neuron
        return x * weight.reshape(1, *out.shape)
    raise ValueError(f"unknown synapse op {syn.op!r}")


def graph_matrix(syn: Synapse, values: torch.Tensor, nodes: int) -> torch.Tensor:
    """Â of a ``graph`` synapse as a sparse CSR (nodes, nodes) matrix with ``values`` (nnz,)
    (float, or integers held in a float dtype), rows = target nodes. Build it once per run
    and pass it to :func:`synapse_forward` as the weight."""
    index = torch.as_tensor(syn.index, device=values.device).long()
    return _csr(index, values, nodes)


def _csr(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    rows = torch.bincount(index[0], minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=values.device)
    crow[1:] = torch.cumsum(rows, 0)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
        return torch.sparse_csr_tensor(crow, index[1], values, (n, n), check_invariants=False)


def _aggregate(x: torch.Tensor, syn: Synapse, weight: torch.Tensor, out: Layer) -> torch.Tensor:
    """y[:, c, n] = Σ_m Â[n, m] · x[:, c + offset, m] (docs/semantics.md §5)."""
    b, (c, n) = x.shape[0], out.shape[:2]
    if weight.layout != torch.sparse_csr:
        index = torch.as_tensor(syn.index, device=x.device).long()
        weight = _csr(index, weight, n)
    xs = x[:, syn.channel_offset : syn.channel_offset + c, :, 0]  # (B, C, nodes)
    h = xs.permute(2, 0, 1).reshape(n, b * c)
    y = torch.sparse.mm(weight, h) if h.numel() else h
    return y.reshape(n, b, c).permute(1, 2, 0).unsqueeze(-1)


def _shortcut(x: torch.Tensor, syn: Synapse, weight: torch.Tensor, out: Layer) -> torch.Tensor:
    sh, sw = syn.stride
    xs = x[:, :, ::sh, ::sw]
    lo = max(0, syn.channel_offset)
    hi = min(out.channels, syn.channel_offset + x.shape[1])
    view = (-1, *([1] * (len(out.shape) - 1)))
    if lo == 0 and hi == out.channels == x.shape[1]:  # every channel, in place: no padding
        return xs * weight.reshape(view)
    y = x.new_zeros((x.shape[0], *out.shape))
    if hi > lo:
        src = xs[:, lo - syn.channel_offset : hi - syn.channel_offset]
        y[:, lo:hi] = src * weight[lo:hi].reshape(view)
    return y


def count_adds(counts: torch.Tensor, syn: Synapse, out: Layer) -> torch.Tensor:
    """Synaptic additions triggered per image: each input spike times its fan-out.

    ``counts`` (N, *source shape) holds the number of spikes of each source neuron. The
    fan-out is structural: every synapse that exists is one addition, whatever its weight.
    """
    n = counts.shape[0]
    if syn.op == "conv":
        cover = conv_cover(
            tuple(counts.shape[2:]), syn.kernel, syn.stride, syn.padding, tuple(out.shape[1:])
        ).to(counts.device, counts.dtype)
        return (counts.sum(1) * cover).reshape(n, -1).sum(1) * out.channels
    if syn.op == "linear":
        return counts.reshape(n, -1).sum(1) * out.size
    if syn.op == "embedding":
        return counts.reshape(n, -1).sum(1) * out.channels
    if syn.op == "graph":  # a spike of node m reaches every target of m's out-edges
        nodes = out.shape[1]
        deg = torch.bincount(torch.as_tensor(syn.index[1]).long(), minlength=nodes)
        read = counts[:, syn.channel_offset : syn.channel_offset + out.channels, :, 0]
        return (read.sum(1) * deg.to(counts.device, counts.dtype)).sum(1)
    ones = counts.new_ones(out.channels)
    if syn.op == "shortcut":
        ones = (syn.channel_offset <= torch.arange(out.channels, device=counts.device)) & (
            torch.arange(out.channels, device=counts.device) < syn.channel_offset + counts.shape[1]
        )
        ones = ones.to(counts.dtype)
    return synapse_forward(counts, syn, ones, out).reshape(n, -1).sum(1)


@functools.lru_cache(maxsize=256)
def conv_cover(in_hw, kernel, stride, padding, out_hw) -> torch.Tensor:
    """For each input pixel, how many output positions of a convolution read it.

    Separable: cover[y, x] = rows(y) · cols(x), with rows(y) = #{oy : 0 ≤ y + p − oy·s < k}.
    """
    axes = []
    for size, k, s, p, o in zip(in_hw, kernel, stride, padding, out_hw, strict=True):
        pos = torch.arange(size).reshape(-1, 1) + p - torch.arange(o).reshape(1, -1) * s
        axes.append(((pos >= 0) & (pos < k)).sum(1).to(torch.float64))
    return axes[0].reshape(-1, 1) * axes[1].reshape(1, -1)


def ann_ops(syn: Synapse, src: Layer, out: Layer) -> tuple[int, int]:
    """(MACs, additions) of the ANN operation a synapse group replaces, per image.

    A two-rail layer (``rails``) stands for an ANN tensor of half its size, and both rails of
    a graph aggregation (the group reading the negative rail, ``channel_offset`` > 0) are one
    ANN product: counted once. One-hot features: X·W is a lookup, one MAC per output.
    """
    o = out.size // 2 if out.rails else out.size
    if syn.op == "conv":
        cin, kh, kw = syn.weight.shape[1:]
        return o * (cin // 2 if src.rails else cin) * kh * kw, 0
    if syn.op == "linear":
        return o * (src.size // 2 if src.rails else src.size), 0
    if syn.op == "graph":
        return (0 if syn.channel_offset else syn.weight.shape[0] * out.channels), 0
    if syn.op == "embedding":
        return o, 0
    if syn.op == "avgpool":
        return 0, out.size * syn.kernel[0] * syn.kernel[1]
    return 0, out.size  # the residual add


def maxpool_phase(phase: torch.Tensor, lay: Layer, T: int) -> torch.Tensor:
    """Max pooling of spike phases: the earliest spike of each window (−1: none)."""
    big = T + 1
    score = torch.where(phase >= 0, big - phase, torch.zeros_like(phase)).to(torch.float32)
    pooled = F.max_pool2d(score, lay.kernel, lay.stride, lay.padding)
    pooled = pooled.to(phase.dtype)
    return torch.where(pooled > 0, big - pooled, torch.full_like(pooled, -1))


def synapse_at(
    x: torch.Tensor, syn: Synapse, weight: torch.Tensor, out: Layer, flat: torch.Tensor
) -> torch.Tensor:
    """:func:`synapse_forward` at a few output neurons only: (m,) values of the neurons with
    flat indices ``flat`` into (N, *out.shape), in the dtype of ``x`` (N, *source shape).

    Golden's exact mode recomputes in float64 the neurons whose float32 potential lies too
    close to a coding threshold to decide; this gathers each one's fan-in, so its cost is
    m · fan-in. ``weight``: the dense weights (a graph group's values, not its CSR matrix).
    """
    size = out.size
    b, j = flat // size, flat % size
    if syn.op == "linear":
        return (x.reshape(x.shape[0], -1)[b] * weight[j]).sum(1)
    if syn.op == "embedding":
        c, n = j // out.shape[1], j % out.shape[1]
        return x[b, 0, n, 0] * weight[c, n]
    if syn.op == "graph":
        c, n = j // out.shape[1], j % out.shape[1]
        index = torch.as_tensor(syn.index, device=x.device).long()
        ptr = torch.zeros(out.shape[1] + 1, dtype=torch.int64, device=x.device)
        ptr[1:] = torch.cumsum(torch.bincount(index[0], minlength=out.shape[1]), 0)
        deg = ptr[n + 1] - ptr[n]
        row = torch.repeat_interleave(torch.arange(len(flat), device=x.device), deg)
        edge = (
            ptr[n][row]
            + torch.arange(int(deg.sum()), device=x.device)
            - (torch.cumsum(deg, 0) - deg)[row]
        )
        vals = weight[edge] * x[b[row], c[row] + syn.channel_offset, index[1][edge], 0]
        return torch.zeros(len(flat), dtype=x.dtype, device=x.device).index_add_(0, row, vals)
    hw = out.shape[1] * out.shape[2]
    c, oy, ox = j // hw, (j % hw) // out.shape[2], j % out.shape[2]
    sy, sx = syn.stride
    if syn.op == "shortcut":
        ci = c - syn.channel_offset
        ok = (ci >= 0) & (ci < x.shape[1])
        v = x[b, ci.clamp(0, x.shape[1] - 1), oy * sy, ox * sx] * weight[c]
        return torch.where(ok, v, torch.zeros_like(v))
    (kh, kw), (ph, pw) = syn.kernel, syn.padding
    ky = torch.arange(kh, device=x.device).reshape(1, 1, kh, 1)
    kx = torch.arange(kw, device=x.device).reshape(1, 1, 1, kw)
    rows = (oy * sy - ph).reshape(-1, 1, 1, 1) + ky
    cols = (ox * sx - pw).reshape(-1, 1, 1, 1) + kx
    inside = ((rows >= 0) & (rows < x.shape[2]) & (cols >= 0) & (cols < x.shape[3])).to(x.dtype)
    rows, cols = rows.clamp(0, x.shape[2] - 1), cols.clamp(0, x.shape[3] - 1)  # zero padding
    if syn.op == "avgpool":  # one weight per channel over the window of the same channel
        win = x[b.reshape(-1, 1, 1, 1), c.reshape(-1, 1, 1, 1), rows, cols] * inside
        return win.sum((1, 2, 3)) * weight[c]
    ci = torch.arange(x.shape[1], device=x.device).reshape(1, -1, 1, 1)
    patch = x[b.reshape(-1, 1, 1, 1), ci, rows, cols] * inside  # (m, C_in, kh, kw)
    return (patch * weight[c]).sum((1, 2, 3))
