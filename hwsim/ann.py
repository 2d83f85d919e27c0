"""The ANN baseline an ANN architect would accept (docs/architecture.md §12): the same network
in int8 on an output-stationary MAC array of P multipliers, with the same memories as the SNN
engine (parameter SRAM for weights and biases, the event buffer's SRAM as the activation
buffer), priced by the same CACTI table and logic model (``hwsim.energy``).

Per conv group, tiles of tc = min(C_out, P) channels × th × tw pixels (tc · th · tw ≤ P; the
pixel block with the fewest cycles among the power-of-two shapes). A tile keeps its partial
sums in the MAC registers; each cycle is one step (c_in, ky, kx): one weight word (the tile's
tc weights, broadcast over the pixels) and one 8-bit activation per tile pixel whose tap lies
inside the source (zero padding is skipped), tc × valid-pixel MACs. Then one cycle writes the
tile's outputs (bias add, requantising multiply, ReLU, 8-bit write per output). Linear groups
use tiles of P outputs and one broadcast activation per step. Average-pooling and residual
additions take ⌈adds / P⌉ cycles, max pooling ⌈compares / P⌉.

Graph networks (docs/semantics.md §5): a two-rail layer stands for an ANN tensor of half its
channels (its outputs, and a conv's C_in / C_out, are the ANN's). The aggregation Â·H (the
``graph`` group at channel offset 0; the −Â group is the same product, counted once, as in
``converter.ops.ann_ops``): tiles of tc = min(C, P) channels of one target node, one step per
in-edge (n, m) that broadcasts the 16-bit Â[n, m] to the tc lanes, each reading its 8-bit
activation of node m: nnz · ⌈C/P⌉ cycles, nnz · C MACs of 8 × 16 bits, a 16-bit weight read
per step. One-hot features (``embedding``, X = I): a lookup, one MAC per output, ⌈C/P⌉ cycles
per node.

With ``weight_buffer_kib`` > 0 the array has the same weight buffer as the output-stationary
SNN engine: a conv layer whose channel-group slice (C_in · kh · kw · tc weights) fits and is
reused by several pixel tiles loads it once (⌈slice / P⌉ cycles per channel group, a
parameter-SRAM read and a buffer write per weight) and reads its steps' weights from it.

``zero_skip``: a step whose activations (all tile pixels) are zero is skipped (no MAC, no
weight read, no cycle); the activations are still read (that is how the zeros are found).
Which activations are zero is taken from the SNN: a source neuron that does not spike counts
as a zero activation. An int8 activation is nonzero from λ/254 up, a spike needs about
c_Q · λ · Q^−(T−1) (λ/52 at T = 16, Q = 1.3), so this marks more activations zero than the
int8 ANN has: it favours the zero-skipping ANN.
"""

from __future__ import annotations

import math
from dataclasses import replace as dataclass_replace
from typing import Any

import numpy as np

from archspec.config import ArchConfig
from archspec.tiles import ann_conv_tiles
from converter.model import SnnModel
from converter.ops import ann_ops
from hwsim.energy import MUL8_PJ, add_pj, memories, mul_pj

PARTS = ("multiplies", "accumulates", "weight_reads", "activation_reads", "output_stage",
         "leakage")  # fmt: skip


def _nonzero(snn: SnnModel, spikes: list, i: int, b: int) -> np.ndarray:
    """Nonzero activations of layer i, image b, as a (C, H, W) or (N,) bool array; of a
    two-rail layer the ANN's (C/2, H, W) (a value is nonzero when either rail spikes)."""
    lay = snn.layers[i]
    sp = np.asarray(spikes[i][b])
    if lay.kind == "input":
        return (sp != 0).any(axis=0).reshape(lay.shape)
    nz = (sp >= 0).reshape(lay.shape)
    if lay.rails:
        half = lay.channels // 2
        nz = nz[:half] | nz[half:]
    return nz


def _ann_channels(lay) -> int:
    """Channels of the ANN tensor a layer stands for (a two-rail layer: half its own)."""
    return lay.channels // 2 if lay.rails else lay.channels


def _graph_counts(syn, lay, snn: SnnModel, spikes: list, b: int, variant: str, p: int):
    """(steps, MACs, activation reads, tiles) of Â·H (the ``graph`` group at channel offset 0)
    on the array: tiles of tc = min(C, P) channels of one target node, one step per in-edge
    (n, m): Â[n, m] broadcast to the tc lanes, each reading its channel of node m. The
    zero-skipping array skips a step whose tc activations are all zero (after reading them)."""
    src = snn.layers[syn.source]
    nodes = src.shape[1]
    c = lay.channels
    tc = min(c, p)
    groups = -(-c // tc)
    src_node = np.asarray(syn.index[1], np.int64)
    nnz = src_node.size
    if variant != "zero_skip":
        return nnz * groups, nnz * c, nnz * c, nodes * groups
    nz = _nonzero(snn, spikes, syn.source, b).reshape(-1, nodes)[:c]  # (C, nodes)
    steps = macs = 0
    for g in range(groups):
        blk = nz[g * tc : (g + 1) * tc]
        live = blk.any(0)[src_node]
        steps += int(live.sum())
        macs += int(live.sum()) * blk.shape[0]
    return steps, macs, nnz * c, nodes * groups


def _conv_shape(co: int, ho: int, wo: int, lanes: int) -> list[tuple[int, int, int]]:
    tc = min(co, lanes)
    tp = max(1, lanes // tc)
    out = []
    th = 1
    while th <= tp:
        out.append((tc, min(th, ho), min(tp // th, wo)))
        th *= 2
    return sorted(set(out))


def ann_array(snn: SnnModel, arch: ArchConfig, spikes: list, images: int) -> dict[str, Any]:
    """Dense and zero-skipping int8 output-stationary MAC arrays, per image (averaged over
    ``images`` of the SNN's ``spikes``, which only the zero-skipping variant uses).

    Returns ``{"dense": {...}, "zero_skip": {...}}``, each with ``cycles``, ``macs``,
    ``weight_reads``, ``activation_reads``, ``output_writes`` (8-bit elements; an int16 weight
    counts once), ``latency_us``, ``energy_pj``, ``energy_by_part_pj`` and
    ``mac_utilisation`` (MACs / (P · cycles))."""
    p = arch.lanes
    mem = memories(arch)
    par, act = mem["parameter_sram"], mem["event_buffer"]
    w_pj = par.read_pj / p  # one 8-bit weight of a P · 8-bit word
    a_rd = act.read_pj * 8 / 32  # one 8-bit activation of a 32-bit word
    a_wr = act.write_pj * 8 / 32
    bias_pj = par.read_pj * 32 / (p * arch.weight_bits)
    buf = memories(dataclass_replace(arch, dataflow="output_stationary")).get("weight_buffer")
    res = {}
    for variant in ("dense", "zero_skip"):
        tot = dict.fromkeys(("cycles", "macs", "macs16", "wreads", "wreads16", "wreads_buffer",
                             "fills", "areads", "adds", "outputs"), 0.0)  # fmt: skip
        e = dict.fromkeys(PARTS, 0.0)
        for b in range(images if variant == "zero_skip" else 1):
            for lay in snn.layers:
                if lay.kind == "input":
                    continue
                if lay.kind == "maxpool":
                    c = lay.size * lay.kernel[0] * lay.kernel[1]
                    tot["cycles"] += math.ceil(c / p)
                    tot["areads"] += c
                    e["accumulates"] += c * add_pj(8)
                    e["activation_reads"] += c * a_rd
                    e["output_stage"] += lay.size * a_wr
                    continue
                acc_bits = 16
                n_tiles = 0
                for s in lay.synapses:
                    src = snn.layers[s.source]
                    if s.op == "conv":
                        co, ho, wo = _ann_channels(lay), *lay.shape[1:]
                        ci, h, w = _ann_channels(src), *src.shape[1:]
                        kh, kw = s.kernel
                        acc_bits = max(acc_bits, 16 + math.ceil(math.log2(ci * kh * kw)))
                        nz = (_nonzero(snn, spikes, s.source, b) if variant == "zero_skip"
                              else np.ones(src.shape, np.bool_))  # fmt: skip
                        geo = np.array([ci, h, w, co, ho, wo, kh, kw, *s.stride, *s.padding],
                                       np.int64)  # fmt: skip
                        best = None
                        for tc, th, tw in _conv_shape(co, ho, wo, p):
                            r = ann_conv_tiles(geo, nz, tc, th, tw)
                            nt = -(-co // tc) * -(-ho // th) * -(-wo // tw)
                            if best is None or r[0] + nt < best[0][0] + best[1]:
                                best = (r, nt)
                        r, nt = best
                        k = 2 if variant == "zero_skip" else 0
                        tot["cycles"] += r[k]
                        tot["macs"] += r[k + 1]
                        tc = min(co, p)
                        slice_w = ci * kh * kw * tc
                        groups = -(-co // tc)
                        if buf is not None and nt > groups and slice_w * 8 <= buf.kib * 8192:
                            tot["wreads_buffer"] += r[4 + k // 2]
                            tot["fills"] += co * ci * kh * kw
                            tot["cycles"] += groups * -(-slice_w // p)
                        else:
                            tot["wreads"] += r[4 + k // 2]
                        tot["areads"] += r[6]
                        n_tiles = max(n_tiles, nt)
                    elif s.op == "linear":
                        n_in = src.size
                        acc_bits = max(acc_bits, 16 + math.ceil(math.log2(n_in)))
                        steps = n_in
                        if variant == "zero_skip":
                            steps = int(_nonzero(snn, spikes, s.source, b).sum())
                        nt = -(-lay.size // p)
                        tot["cycles"] += steps * nt
                        tot["macs"] += steps * lay.size
                        tot["wreads"] += steps * lay.size
                        tot["areads"] += n_in * nt
                        n_tiles = max(n_tiles, nt)
                    elif s.op == "graph":
                        if s.channel_offset:  # the −Â group: the same ANN product Â·H
                            continue
                        # Â·H, tiles of tc channels of one target node; a step per in-edge
                        # (n, m): one 16-bit Â[n, m] broadcast, tc activations of node m
                        steps, macs, areads, nt = _graph_counts(s, lay, snn, spikes, b, variant, p)
                        indeg = np.bincount(np.asarray(s.index[0]), minlength=lay.shape[1])
                        acc_bits = max(acc_bits, 24 + math.ceil(math.log2(max(2, indeg.max()))))
                        tot["cycles"] += steps
                        tot["macs"] += macs
                        tot["macs16"] += macs
                        tot["wreads16"] += steps
                        tot["areads"] += areads
                        n_tiles = max(n_tiles, nt)
                    elif s.op == "embedding":
                        # X = I: a lookup, one MAC per output: the tile of P outputs of a node
                        # reads their P weights (the one-hot activation is 1)
                        c = _ann_channels(lay)
                        nodes = src.size
                        nt = nodes * -(-c // p)
                        tot["cycles"] += nt
                        tot["macs"] += c * nodes
                        tot["wreads"] += c * nodes
                        tot["areads"] += nodes
                        n_tiles = max(n_tiles, nt)
                    else:  # average pooling or the residual add: one add per operand
                        adds = ann_ops(s, src, lay)[1]
                        tot["cycles"] += math.ceil(adds / p)
                        tot["adds"] += adds
                        tot["areads"] += adds
                outputs = lay.size // 2 if lay.rails else lay.size  # the ANN's tensor
                tot["cycles"] += n_tiles if n_tiles else math.ceil(outputs / p)
                tot["outputs"] += outputs
                e["output_stage"] += outputs * (bias_pj + mul_pj(acc_bits, 18) + add_pj(8)
                                                + a_wr)  # fmt: skip
        n = images if variant == "zero_skip" else 1
        tot = {k: v / n for k, v in tot.items()}
        e["output_stage"] /= n
        # Â's 16-bit values (docs/semantics.md §5) make 8 × 16-bit multiplies
        e["multiplies"] = (tot["macs"] - tot["macs16"]) * MUL8_PJ + tot["macs16"] * mul_pj(8, 16)
        # the partial sums (16-bit products summed over the fan-in) are about 26 bits wide
        e["accumulates"] = e["accumulates"] / n + (tot["macs"] + tot["adds"]) * add_pj(26)
        # (maxpool compares: 8 bits, above; MACs and residual / pooling adds: 26 bits)
        e["weight_reads"] = (tot["wreads"] + 2 * tot["wreads16"]) * w_pj
        if buf is not None:
            e["weight_reads"] += tot["wreads_buffer"] * buf.read_pj / p
            e["weight_fills"] = tot["fills"] * (par.read_pj + buf.write_pj) / p
        e["activation_reads"] = tot["areads"] * a_rd
        lat_us = tot["cycles"] / arch.clock_mhz
        leak = par.leakage_mw + act.leakage_mw + (buf.leakage_mw if buf is not None else 0.0)
        e["leakage"] = leak * lat_us * 1e3  # mW · µs = nJ
        res[variant] = {
            "cycles": tot["cycles"],
            "macs": tot["macs"],
            "weight_reads": tot["wreads"] + tot["wreads16"] + tot["wreads_buffer"],
            "activation_reads": tot["areads"],
            "output_writes": tot["outputs"],
            "latency_us": lat_us,
            "energy_pj": float(sum(e.values())),
            "energy_by_part_pj": {k: float(v) for k, v in e.items()},
            "mac_utilisation": tot["macs"] / max(p * tot["cycles"], 1),
        }
    return res
