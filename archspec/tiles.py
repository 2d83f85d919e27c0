"""Tiles of the output-stationary dataflow (docs/architecture.md §11): which output neurons
share the lane registers, which source pixels each tile reads, and the tile shape per layer.

Also the output-stationary int8 MAC array that the SNN is compared with (§12), which uses the
same tile discipline (``ann_tile_counts``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from converter.model import Layer


@dataclass(frozen=True)
class TilePlan:
    """One layer's tiling on P lanes.

    Attributes
    ----------
    shape : tuple of int
        (channels, rows, columns) of a tile; a flat layer is (P, 1, 1) over its neurons.
    tile_of : int64 [neurons]
        The tile of each neuron (C, H, W order); tiles run in this order.
    tile_chans : int64 [tiles]
        Threshold rows a tile reads per compare (its distinct channels).
    tile_idx : int64 [tiles]
        Index reads per tile and input phase: the maximal runs of its receptive-field pixels
        within each source row (one read each), summed over the synapse groups; the source
        rows themselves where the field is a rectangle (a window at least its stride).
    src_pix : int64 [fan-out rows]
        The source pixel (group-global) of each fan-out row (= event id).
    pt_ptr, pt_tile : int64
        CSR over source pixels: the tiles whose receptive field holds the pixel.
    reads_per_spike : float
        Tile reads per source spike, averaged over the source neurons (receptive-field overlap).
    """

    shape: tuple[int, int, int]
    groups: int  # channel groups (tiles of one group share its weights)
    tile_of: np.ndarray
    tile_chans: np.ndarray
    tile_idx: np.ndarray
    src_pix: np.ndarray
    pt_ptr: np.ndarray
    pt_tile: np.ndarray
    reads_per_spike: float

    @property
    def tiles(self) -> int:
        return int(self.tile_idx.size)

    @property
    def lanes(self) -> int:
        return int(np.prod(self.shape))


def source_pixels(layers, lay: Layer, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per fan-out row (groups in order): its group-global source pixel and source row, and
    the source neurons at each global pixel. A linear group's source is one pixel (row)."""
    pix, row, per_pix = [], [], []
    pix_base = row_base = 0
    for syn in groups:
        src = layers[syn.source]
        if syn.op == "linear" or len(src.shape) != 3:
            pix.append(np.full(src.size, pix_base, np.int64))
            row.append(np.full(src.size, row_base, np.int64))
            per_pix.append(np.array([src.size], np.int64))
            pix_base += 1
            row_base += 1
            continue
        c, h, w = src.shape
        local = np.arange(src.size) % (h * w)
        pix.append(pix_base + local)
        row.append(row_base + local // w)
        per_pix.append(np.full(h * w, c, np.int64))
        pix_base += h * w
        row_base += h
    return np.concatenate(pix), np.concatenate(row), np.concatenate(per_pix)


def tile_map(lay: Layer, shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """(tile of each neuron, tiles): channel groups outer (a group's weights stay in the
    weight buffer), pixel blocks inner."""
    if len(lay.shape) != 3:
        tc = shape[0]
        return (np.arange(lay.size) // tc).astype(np.int64), -(-lay.size // tc)
    c, h, w = lay.shape
    tc, th, tw = shape
    ncg, nby, nbx = -(-c // tc), -(-h // th), -(-w // tw)
    cc, yy, xx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    tile = (cc // tc) * (nby * nbx) + (yy // th) * nbx + xx // tw
    return tile.reshape(-1).astype(np.int64), ncg * nby * nbx


@njit(cache=True)
def _pixel_rows(src_pix, src_row, n_pix):
    """The (group-global) source row of each pixel."""
    rows = np.full(n_pix, -1, np.int64)
    for v in range(src_pix.size):
        rows[src_pix[v]] = src_row[v]
    return rows


@njit(cache=True)
def _marks(fan_ptr, fan_tgt, src_pix, src_row, tile_of, n_tiles, n_pix, n_rows):
    """The (tile, pixel) pairs of the receptive fields as CSR over pixels, and the index reads
    per tile: the maximal runs of its receptive-field pixels within each source row."""
    seen = np.zeros(n_tiles * n_pix, np.bool_)
    count = np.zeros(n_pix, np.int64)
    idx = np.zeros(n_tiles, np.int64)
    for v in range(fan_ptr.size - 1):
        p = src_pix[v]
        for f in range(fan_ptr[v], fan_ptr[v + 1]):
            t = tile_of[fan_tgt[f]]
            if not seen[t * n_pix + p]:
                seen[t * n_pix + p] = True
                count[p] += 1
    prow = _pixel_rows(src_pix, src_row, n_pix)
    ptr = np.zeros(n_pix + 1, np.int64)
    for p in range(n_pix):
        ptr[p + 1] = ptr[p] + count[p]
    tiles = np.empty(ptr[-1], np.int64)
    fill = ptr[:-1].copy()
    for t in range(n_tiles):
        for p in range(n_pix):
            if seen[t * n_pix + p]:
                tiles[fill[p]] = t
                fill[p] += 1
                # a run starts where the pixel to the left (same row) is not in the field
                if not (p > 0 and prow[p - 1] == prow[p] and seen[t * n_pix + p - 1]):
                    idx[t] += 1
    return ptr, tiles, idx


#: Above this many (tile, source pixel) pairs the receptive fields are found by sorting the
#: pairs the fan-out reaches instead of marking a dense table (large graphs: tiles × nodes).
DENSE_MARKS = 2**26


@njit(cache=True)
def _pair_keys(fan_ptr, fan_tgt, src_pix, src_row, tile_of, n_pix, n_rows):
    """Per synapse: its (tile, source pixel) and (tile, source row) as flat keys."""
    kp = np.empty(fan_tgt.size, np.int64)
    kr = np.empty(fan_tgt.size, np.int64)
    for v in range(fan_ptr.size - 1):
        p = src_pix[v]
        r = src_row[v]
        for f in range(fan_ptr[v], fan_ptr[v + 1]):
            t = tile_of[fan_tgt[f]]
            kp[f] = t * n_pix + p
            kr[f] = t * n_rows + r
    return kp, kr


def _marks_sparse(fan_ptr, fan_tgt, src_pix, src_row, tile_of, n_tiles, n_pix, n_rows):
    """``_marks`` by sorting the distinct pairs (memory: the fan-out's size, not tiles × pixels)."""
    kp, _ = _pair_keys(fan_ptr, fan_tgt, src_pix, src_row, tile_of, n_pix, n_rows)
    kp = np.unique(kp)  # sorted by tile, then pixel
    t, p = kp // n_pix, kp % n_pix
    order = np.argsort(p, kind="stable")  # by pixel, tiles ascending within a pixel
    ptr = np.zeros(n_pix + 1, np.int64)
    np.cumsum(np.bincount(p, minlength=n_pix), out=ptr[1:])
    prow = _pixel_rows(src_pix, src_row, n_pix)
    # a run starts where the previous pair is not the pixel to the left in the same row
    cont = np.zeros(kp.size, np.bool_)
    if kp.size > 1:
        cont[1:] = (kp[1:] == kp[:-1] + 1) & (p[1:] > 0) & (prow[np.maximum(p[1:] - 1, 0)]
                                                             == prow[p[1:]])  # fmt: skip
    idx = np.bincount(t[~cont], minlength=n_tiles).astype(np.int64)
    return ptr, t[order].astype(np.int64), idx


def build_plan(lay: Layer, fan, src_pix, src_row, per_pix, shape) -> TilePlan:
    """The plan of one tile shape (``fan``: the layer's fan-out table, all groups)."""
    tile_of, n_tiles = tile_map(lay, shape)
    n_rows = int(src_row.max()) + 1 if src_row.size else 1
    marks = _marks if n_tiles * max(per_pix.size, n_rows) <= DENSE_MARKS else _marks_sparse
    ptr, tiles, idx = marks(fan.ptr, fan.tgt, src_pix, src_row, tile_of, n_tiles,
                            per_pix.size, n_rows)  # fmt: skip
    per_chan = lay.size // lay.channels
    chan = np.arange(lay.size) // per_chan
    pairs = np.unique(tile_of * lay.channels + chan)
    tile_chans = np.bincount(pairs // lay.channels, minlength=n_tiles).astype(np.int64)
    reads = float((np.diff(ptr) * per_pix).sum() / max(per_pix.sum(), 1))
    groups = -(-lay.channels // shape[0]) if len(lay.shape) == 3 else n_tiles
    return TilePlan(tuple(shape), groups, tile_of, tile_chans, idx, src_pix, ptr, tiles, reads)


def candidate_shapes(lay: Layer, lanes: int, channels: int = 0) -> list[tuple[int, int, int]]:
    """Tile shapes that fill more than half of the P lanes (or the whole layer): channel
    counts up to min(C, P) (powers of two and C itself; only min(``channels``, C) when
    ``channels`` > 0), pixel blocks of powers of two. A fixed channel count whose tiles
    cannot fill half the lanes keeps its best-filling pixel blocks."""
    if len(lay.shape) != 3:
        return [(lanes, 1, 1)]
    c, h, w = lay.shape
    if channels:
        tcs = {min(c, channels)}
    else:
        tcs = {min(c, lanes)} | {2**i for i in range(16) if 2**i <= min(c, lanes)}
    pows = [2**i for i in range(16) if 2**i <= lanes]
    out, fallback = [], []
    for tc in sorted(tcs):
        budget = lanes // tc
        for th in pows:
            for tw in pows:
                n = min(th, h) * min(tw, w)
                if th * tw > budget or th > 2 * h or tw > 2 * w:
                    continue
                fallback.append((tc * n, (tc, min(th, h), min(tw, w))))
                if tc * n * 2 > lanes or (th >= h and tw >= w):
                    out.append((tc, min(th, h), min(tw, w)))
    if not out and fallback:  # only with a fixed channel count
        most = max(f for f, _ in fallback)
        out = [shape for f, shape in fallback if f == most]
    return sorted(set(out))


def estimate_cycles(plan: TilePlan, per_pix: np.ndarray, spikes: float, n_in: int, n_ph: int,
                    neuron_lat: int) -> float:  # fmt: skip
    """The cycle estimate the shape choice minimises: per tile and input phase, the larger of
    its expected event reads (``spikes`` per source neuron spread over the input phases) and
    its index reads; plus one boundary per phase (at least L_n) and the tile's load."""
    reads_t = np.zeros(plan.tiles)
    np.add.at(reads_t, plan.pt_tile, np.repeat(per_pix, np.diff(plan.pt_ptr)))
    per_phase = spikes * reads_t / max(n_in, 1)
    ev = n_in * np.maximum(per_phase, plan.tile_idx)
    return float(ev.sum() + plan.tiles * (n_ph * max(1, neuron_lat) + 1))


def choose_plan(lay: Layer, fan, src_pix, src_row, per_pix, lanes: int, spikes: float,
                n_in: int, n_ph: int, neuron_lat: int, channels: int = 0) -> TilePlan:  # fmt: skip
    """The candidate tile shape with the fewest estimated cycles (ties: more channels);
    ``channels`` > 0 keeps only the shapes of min(channels, C) channels per tile."""
    best, best_cost = None, None
    for shape in candidate_shapes(lay, lanes, channels):
        plan = build_plan(lay, fan, src_pix, src_row, per_pix, shape)
        cost = estimate_cycles(plan, per_pix, spikes, n_in, n_ph, neuron_lat)
        if best_cost is None or cost < best_cost:
            best, best_cost = plan, cost
    return best


# --------------------------------------------------------------------------- ANN baseline
@njit(cache=True)
def ann_conv_tiles(geo, nz, tc, th, tw):
    """An int8 conv group on an output-stationary MAC array: tiles of tc channels × th × tw
    pixels; each step (c_in, ky, kx) broadcasts one weight word (the tile's tc weights) and
    reads one activation per tile pixel whose tap lies inside the source. Returns
    [dense steps, dense MACs, zero-skip steps, zero-skip MACs, weight reads (dense),
    weight reads (zero-skip), activation reads] over the layer; ``nz`` [C_in, H, W] marks the
    nonzero activations (the zero-skipping array skips a step whose activations are all 0)."""
    ci, h, wd, co, ho, wo, kh, kw, sy, sx, py, px = geo
    out = np.zeros(7, np.int64)
    for c0 in range(0, co, tc):
        nc = min(tc, co - c0)
        for y0 in range(0, ho, th):
            for x0 in range(0, wo, tw):
                for c in range(ci):
                    for ky in range(kh):
                        for kx in range(kw):
                            valid = 0
                            nonzero = 0
                            for oy in range(y0, min(y0 + th, ho)):
                                iy = oy * sy + ky - py
                                if iy < 0 or iy >= h:
                                    continue
                                for ox in range(x0, min(x0 + tw, wo)):
                                    ix = ox * sx + kx - px
                                    if ix < 0 or ix >= wd:
                                        continue
                                    valid += 1
                                    if nz[c, iy, ix]:
                                        nonzero += 1
                            if valid > 0:
                                out[0] += 1
                                out[1] += valid * nc
                                out[4] += nc
                                out[6] += valid
                            if nonzero > 0:
                                out[2] += 1
                                out[3] += nonzero * nc
                                out[5] += nc
    return out
