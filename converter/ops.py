"""Tensor kernels of the SnnModel's synapse ops, shared by calibration and the golden model."""

from __future__ import annotations

import functools

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
    raise ValueError(f"unknown synapse op {syn.op!r}")


def _shortcut(x: torch.Tensor, syn: Synapse, weight: torch.Tensor, out: Layer) -> torch.Tensor:
    sh, sw = syn.stride
    xs = x[:, :, ::sh, ::sw]
    y = x.new_zeros((x.shape[0], *out.shape))
    lo = max(0, syn.channel_offset)
    hi = min(out.channels, syn.channel_offset + x.shape[1])
    if hi > lo:
        src = xs[:, lo - syn.channel_offset : hi - syn.channel_offset]
        y[:, lo:hi] = src * weight[lo:hi].reshape(-1, *([1] * (len(out.shape) - 1)))
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
    """(MACs, additions) of the ANN operation a synapse group replaces, per image."""
    if syn.op == "conv":
        cin, kh, kw = syn.weight.shape[1:]
        return out.size * cin * kh * kw, 0
    if syn.op == "linear":
        return out.size * src.size, 0
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
