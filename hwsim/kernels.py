"""Numba kernels of the layer engine: event-driven adds, neuron-unit scans, queue timing."""

from __future__ import annotations

import numpy as np
from numba import njit

# Columns of the per-image action counts (same order as archspec.config.ACTIONS).
ADDS, WREAD, BREAD, TREAD, PREAD, PWRITE, MUL, CMP, PUSH, POP, IDX, SIN, SOUT = range(13)
N_ACTIONS = 13
# Columns of the per-image cycle / queue statistics.
BUSY, STALLED, WAITING, PEAK, OCC_SUM, DRAIN = range(6)
N_STATS = 6
# Latency parameters, packed: issue, adder pipeline, neuron pipeline, lanes, output depth.
LAT_ISSUE, LAT_ADDER, LAT_NEURON, LANES, OUT_DEPTH = range(5)


@njit(cache=True)
def _advance(q, c, blocked):
    """Let ``c`` cycles pass with no pushes: the output queue pops one event per cycle that
    the back-pressure pattern does not block. ``q`` = [cycle, occupancy, peak, occ_sum]."""
    n = blocked.size
    t_end = q[0] + c
    while q[0] < t_end and q[1] > 0:
        q[3] += q[1]
        if n == 0 or not blocked[q[0] % n]:
            q[1] -= 1
        q[0] += 1
    q[0] = t_end


@njit(cache=True)
def _push_cycle(q, f, depth, blocked):
    """One cycle that pushes ``f`` events (f ≤ P ≤ depth); returns the stall cycles it waited.

    The push is accepted in a cycle that starts with occupancy + f ≤ depth; the pop of that
    cycle (if any) only frees space for the next cycle (registered FIFO level)."""
    n = blocked.size
    stalls = 0
    while True:
        ok = q[1] + f <= depth
        q[3] += q[1]
        if q[1] > 0 and (n == 0 or not blocked[q[0] % n]):
            q[1] -= 1
        q[0] += 1
        if ok:
            q[1] += f
            if q[1] > q[2]:
                q[2] = q[1]
            return stalls
        stalls += 1


@njit(cache=True)
def _drain(q, blocked):
    """Cycles until the output queue is empty (the layer's results are all written out)."""
    t0 = q[0]
    n = blocked.size
    while q[1] > 0:
        q[3] += q[1]
        if n == 0 or not blocked[q[0] % n]:
            q[1] -= 1
        q[0] += 1
    return q[0] - t0


@njit(cache=True)
def _leak(u, m, lim):
    """U ← clamp((U · M + 2^15) >> 16, −L, L): round half up, arithmetic shift, clamp."""
    v = (u * m + 32768) >> 16
    if v > lim:
        return lim
    if v < -lim:
        return -lim
    return v


@njit(cache=True)
def neuron_layer(
    ev_ptr,
    ev_id,
    ev_sign,
    fan_ptr,
    fan_tgt,
    fan_w,
    ev_cycles,
    bias,
    theta,
    chan,
    row,
    n_rows,
    t_src,
    t_out,
    t_w,
    m_in,
    m_out,
    lim,
    is_output,
    dead_ok,
    lat,
    blocked,
    phase_out,
    u_out,
    counts,
    stats,
    ph_cyc,
):
    """Run one neuron (or output) layer for every image of the batch (docs/architecture.md).

    Events of image b and phase k are ``ev_id/ev_sign[ev_ptr[b*t_src+k]:ev_ptr[b*t_src+k+1]]``
    (ids index the fan-out table, whose rows may come from several synapse groups).
    Writes ``phase_out`` (−1: no spike), ``u_out`` (final potentials), ``counts``,
    ``stats`` (per image) and ``ph_cyc`` [image, phase, (event cycles, scan cycles with stalls;
    the output layer's readout in the last phase's scan)].

    ``dead_ok``: every threshold is ≥ 1, so after the last input an unfired neuron with U < 1
    never fires (the leak keeps U ≤ 0): the simulator then visits only the live neurons and
    counts the dead lanes' work without doing it (the machine still scans every row)."""
    n_img, n = phase_out.shape
    issue, adder_lat, neuron_lat = lat[LAT_ISSUE], lat[LAT_ADDER], lat[LAT_NEURON]
    depth = lat[OUT_DEPTH]
    last = t_src - 1 if is_output else t_out - 1 + t_w
    fired = np.zeros(n, np.bool_)
    fires = np.zeros(n_rows, np.int64)
    live = np.zeros(n, np.int64)
    q = np.zeros(4, np.int64)
    for b in range(n_img):
        u = u_out[b]
        ph = phase_out[b]
        cnt = counts[b]
        st = stats[b]
        q[:] = 0
        fired[:] = False
        for j in range(n):
            u[j] = bias[j]
            ph[j] = -1
        # initialisation scan: B → U, one row of P potentials per cycle
        cnt[BREAD] += n
        cnt[PWRITE] += n
        st[BUSY] += n_rows + neuron_lat
        _advance(q, n_rows + neuron_lat, blocked)
        n_live = -1  # the tail's live list is built at its first boundary
        n_dead = 0  # unfired neurons with U < 1 after the last input: they can never fire
        for k in range(last + 1):
            if k < t_src:  # --- event phase: drain the input events of phase k
                e0, e1 = ev_ptr[b * t_src + k], ev_ptr[b * t_src + k + 1]
                c = 0
                adds = 0
                for e in range(e0, e1):
                    v = ev_id[e]
                    s = ev_sign[e]
                    f0, f1 = fan_ptr[v], fan_ptr[v + 1]
                    for f in range(f0, f1):
                        u[fan_tgt[f]] += s * fan_w[f]
                    adds += f1 - f0
                    c += issue + ev_cycles[v]
                if e1 > e0:
                    c += adder_lat
                # each synapse: one weight read and one potential read-add-write
                cnt[ADDS] += adds
                cnt[WREAD] += adds
                cnt[PREAD] += adds
                cnt[PWRITE] += adds
                cnt[POP] += e1 - e0
                cnt[SIN] += e1 - e0
                st[BUSY] += c
                ph_cyc[b, k, 0] = c
                _advance(q, c, blocked)
            if is_output and k == last:
                break
            # --- neuron-unit scan at the boundary k → k + 1: compare for t_o = k − T_w, leak
            compare = (not is_output) and k >= t_w
            leak = k < last
            m = m_in if k + 1 <= t_src - 1 else m_out
            visited = 0
            n_fire = 0
            n_leak = 0
            if k >= t_src and not is_output and dead_ok and n_live < 0:
                n_live = 0
                for j in range(n):
                    if not fired[j]:
                        if u[j] >= 1:
                            live[n_live] = j
                            n_live += 1
                        else:
                            n_dead += 1
            if n_live >= 0:  # tail: only live neurons can fire; dead lanes are counted
                kept = 0
                for i in range(n_live):
                    j = live[i]
                    visited += 1
                    if compare and u[j] >= theta[chan[j], k - t_w]:
                        fired[j] = True
                        ph[j] = k - t_w
                        fires[row[j]] += 1
                        n_fire += 1
                        continue
                    if leak:
                        u[j] = _leak(u[j], m, lim)
                        n_leak += 1
                    live[kept] = j
                    kept += 1
                n_live = kept
                visited += n_dead
                if leak:
                    n_leak += n_dead
            else:
                for j in range(n):
                    if fired[j]:
                        continue  # the lane is gated: no read, no work
                    visited += 1
                    if compare and u[j] >= theta[chan[j], k - t_w]:
                        fired[j] = True
                        ph[j] = k - t_w
                        fires[row[j]] += 1
                        n_fire += 1
                        continue
                    if leak:
                        u[j] = _leak(u[j], m, lim)
                        n_leak += 1
            cnt[PREAD] += visited
            if compare:
                cnt[CMP] += visited
                cnt[TREAD] += visited
            cnt[MUL] += n_leak
            cnt[PWRITE] += n_leak
            cnt[PUSH] += n_fire
            cnt[SOUT] += n_fire
            # timing: one row per cycle; a row with spikes may wait for the output queue
            stalled = 0
            idle = 0
            if n_fire > 0:
                for r in range(n_rows):
                    f = fires[r]
                    if f > 0:
                        _advance(q, idle, blocked)
                        idle = 0
                        stalled += _push_cycle(q, f, depth, blocked)
                        fires[r] = 0
                    else:
                        idle += 1
            else:
                idle = n_rows
            _advance(q, idle + neuron_lat, blocked)
            scan = n_rows + neuron_lat
            if t_src <= k < t_w:
                st[WAITING] += scan
            else:
                st[BUSY] += scan
            st[STALLED] += stalled
            ph_cyc[b, k, 1] = scan + stalled
        if is_output:  # argmax readout: one row of P potentials per cycle
            cnt[PREAD] += n
            cnt[CMP] += n
            st[BUSY] += n_rows + neuron_lat
            ph_cyc[b, last, 1] = n_rows + neuron_lat
            _advance(q, n_rows + neuron_lat, blocked)
        st[DRAIN] = _drain(q, blocked)
        st[STALLED] += st[DRAIN]
        st[PEAK] = q[2]
        st[OCC_SUM] = q[3]


@njit(cache=True)
def maxpool_layer(
    ev_ptr, ev_id, fan_ptr, fan_tgt, t_src, lat, blocked, phase_out, counts, stats, ph_cyc
):
    """Max pooling: the first event of each window fires it (1 issue cycle per event, then 1
    cycle per window the event belongs to: test-and-set the fired flag, push if newly set)."""
    n_img, n = phase_out.shape
    issue, depth = lat[LAT_ISSUE], lat[OUT_DEPTH]
    fired = np.zeros(n, np.bool_)
    q = np.zeros(4, np.int64)
    for b in range(n_img):
        ph = phase_out[b]
        cnt = counts[b]
        st = stats[b]
        q[:] = 0
        fired[:] = False
        ph[:] = -1
        for k in range(t_src):
            e0, e1 = ev_ptr[b * t_src + k], ev_ptr[b * t_src + k + 1]
            t0 = q[0]
            for e in range(e0, e1):
                v = ev_id[e]
                _advance(q, issue, blocked)
                st[BUSY] += issue
                cnt[POP] += 1
                cnt[SIN] += 1
                for f in range(fan_ptr[v], fan_ptr[v + 1]):
                    j = fan_tgt[f]
                    cnt[CMP] += 1  # test the fired flag
                    st[BUSY] += 1
                    if fired[j]:
                        _advance(q, 1, blocked)
                        continue
                    fired[j] = True
                    ph[j] = k
                    cnt[PWRITE] += 1  # set the flag
                    cnt[PUSH] += 1
                    cnt[SOUT] += 1
                    st[STALLED] += _push_cycle(q, 1, depth, blocked)
            ph_cyc[b, k, 0] = q[0] - t0
        st[DRAIN] = _drain(q, blocked)
        st[STALLED] += st[DRAIN]
        st[PEAK] = q[2]
        st[OCC_SUM] = q[3]


@njit(cache=True)
def gather_add(ev_ptr, ev_id, ev_sign, fan_ptr, fan_tgt, fan_w, n_img, t_src, n):
    """The bare event-driven gather-add (no timing, no neurons): the speed reference."""
    u = np.zeros(n, np.int64)
    total = 0
    for b in range(n_img):
        for e in range(ev_ptr[b * t_src], ev_ptr[(b + 1) * t_src]):
            v = ev_id[e]
            s = ev_sign[e]
            for f in range(fan_ptr[v], fan_ptr[v + 1]):
                u[fan_tgt[f]] += s * fan_w[f]
        total += u[0]
    return total


@njit(cache=True)
def events_from_phases(phase, t_src, offset):
    """Event lists of a spiking source (N, n) of phases (−1: none), bucketed by
    image · t_src + phase in neuron order (a counting sort). Returns (ptr, ids, signs)."""
    n_img, n = phase.shape
    ptr = np.zeros(n_img * t_src + 1, np.int64)
    for b in range(n_img):
        for j in range(n):
            p = phase[b, j]
            if p >= 0:
                ptr[b * t_src + p + 1] += 1
    for i in range(n_img * t_src):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    ids = np.empty(ptr[-1], np.int64)
    for b in range(n_img):
        for j in range(n):
            p = phase[b, j]
            if p >= 0:
                ids[fill[b * t_src + p]] = j + offset
                fill[b * t_src + p] += 1
    return ptr, ids, np.ones(ids.size, np.int64)


@njit(cache=True)
def events_from_trains(trains, offset):
    """Event lists of an input layer's signed trains (N, T_in, n) in {−1, 0, 1}."""
    n_img, t_src, n = trains.shape
    ptr = np.zeros(n_img * t_src + 1, np.int64)
    for b in range(n_img):
        for t in range(t_src):
            for j in range(n):
                if trains[b, t, j] != 0:
                    ptr[b * t_src + t + 1] += 1
    for i in range(n_img * t_src):
        ptr[i + 1] += ptr[i]
    ids = np.empty(ptr[-1], np.int64)
    signs = np.empty(ptr[-1], np.int64)
    e = 0
    for b in range(n_img):
        for t in range(t_src):
            for j in range(n):
                if trains[b, t, j] != 0:
                    ids[e] = j + offset
                    signs[e] = trains[b, t, j]
                    e += 1
    return ptr, ids, signs


@njit(cache=True)
def merge_events(pa, ia, sa, pb, ib, sb):
    """Concatenate two bucketed event lists bucket by bucket (a's events first)."""
    nb = pa.size - 1
    ptr = np.zeros(nb + 1, np.int64)
    ids = np.empty(ia.size + ib.size, np.int64)
    signs = np.empty(ia.size + ib.size, np.int64)
    e = 0
    for i in range(nb):
        for x in range(pa[i], pa[i + 1]):
            ids[e] = ia[x]
            signs[e] = sa[x]
            e += 1
        for x in range(pb[i], pb[i + 1]):
            ids[e] = ib[x]
            signs[e] = sb[x]
            e += 1
        ptr[i + 1] = e
    return ptr, ids, signs


@njit(cache=True)
def schedule_layer(ready_src, init, ph_cyc, drain, t_src, t_w, n_out_phases):
    """Pipelined mode: when each image's phases run on this layer's own engine.

    ``ready_src`` [image, T_src]: the cycle at which the source's events of each phase are
    all available (the max over the layer's sources). The engine takes the images in order;
    phase k's events start when the engine finished phase k − 1 and the source is ready.
    Returns (end [image], ready_out [image, T_out]) with ready_out[i, t_o] the end of the
    scan that decides t_o (k = t_o + T_w; for max pooling, T_w = 0 and the end of phase t_o).
    """
    n_img, n_ph, _ = ph_cyc.shape
    end = np.zeros(n_img, np.int64)
    ready = np.zeros((n_img, n_out_phases), np.int64)
    free = 0
    for i in range(n_img):
        t = free + init
        for k in range(n_ph):
            if k < t_src and ready_src[i, k] > t:
                t = ready_src[i, k]
            t += ph_cyc[i, k, 0] + ph_cyc[i, k, 1]
            t_o = k - t_w
            if 0 <= t_o < n_out_phases:
                ready[i, t_o] = t
        free = t + drain[i]
        end[i] = free
    return end, ready


# --------------------------------------------------------------------------- output stationary
@njit(cache=True)
def os_neuron_layer(
    ev_ptr,
    ev_id,
    ev_sign,
    fan_ptr,
    fan_tgt,
    fan_w,
    src_pix,
    pt_ptr,
    pt_tile,
    bias,
    theta,
    chan,
    tile_of,
    tile_idx,
    tile_chans,
    tile_pre,
    reload,
    t_src,
    t_out,
    t_w,
    m_in,
    m_out,
    lim,
    is_output,
    lat,
    blocked,
    phase_out,
    u_out,
    counts,
    stats,
    u_peak,
):
    """One neuron (or output) layer on the output-stationary engine (docs/architecture.md §11).

    The arithmetic is that of ``neuron_layer`` (adds in any order within a phase, then the
    per-neuron boundary), so the spikes are golden int's; the timing walks the tiles one after
    the other, each through all its phases. ``src_pix[v]``: the (group-global) source pixel of
    fan-out row v; ``pt_tile[pt_ptr[p]:pt_ptr[p + 1]]``: the tiles whose receptive field holds
    pixel p (each reads every event there); ``tile_idx[t]``: index reads of tile t per phase
    (its receptive field's source rows, all groups); ``tile_chans[t]``: its channels (one
    threshold each, into a register per channel, only at the boundaries k where ``reload[k]``:
    the first compare and every t_o whose threshold column differs from the previous one).
    ``tile_pre[t]``: cycles before tile t (filling the weight buffer for its channel group).
    ``u_peak[b]``: the largest |U| of an unfired neuron seen (the width check)."""
    n_img, n = phase_out.shape
    n_tiles = tile_idx.size
    adder_lat, neuron_lat = lat[LAT_ADDER], lat[LAT_NEURON]
    depth = lat[OUT_DEPTH]
    last = t_src - 1 if is_output else t_out - 1 + t_w
    n_ph = last + 1
    n_in = min(t_src, n_ph)
    fired = np.zeros(n, np.bool_)
    ev_tk = np.zeros((n_tiles, max(n_in, 1)), np.int64)
    fire_tk = np.zeros((n_tiles, n_ph), np.int64)
    q = np.zeros(4, np.int64)
    all_chans = 0
    all_idx = 0
    for t in range(n_tiles):
        all_chans += tile_chans[t]
        all_idx += tile_idx[t]
    for b in range(n_img):
        u = u_out[b]
        ph = phase_out[b]
        cnt = counts[b]
        st = stats[b]
        q[:] = 0
        fired[:] = False
        ev_tk[:, :] = 0
        fire_tk[:, :] = 0
        peak = 0
        for j in range(n):
            u[j] = bias[j]
            ph[j] = -1
            a = abs(u[j])
            if a > peak:
                peak = a
        cnt[BREAD] += n
        for k in range(n_ph):
            if k < t_src:  # the adds of phase k (into the lane registers)
                e0, e1 = ev_ptr[b * t_src + k], ev_ptr[b * t_src + k + 1]
                adds = 0
                reads = 0
                for e in range(e0, e1):
                    v = ev_id[e]
                    s = ev_sign[e]
                    f0, f1 = fan_ptr[v], fan_ptr[v + 1]
                    for f in range(f0, f1):
                        u[fan_tgt[f]] += s * fan_w[f]
                    adds += f1 - f0
                    p = src_pix[v]
                    for x in range(pt_ptr[p], pt_ptr[p + 1]):
                        ev_tk[pt_tile[x], k] += 1
                    reads += pt_ptr[p + 1] - pt_ptr[p]
                cnt[ADDS] += adds
                cnt[WREAD] += adds
                cnt[POP] += reads
                cnt[SIN] += e1 - e0
                cnt[IDX] += all_idx
            if is_output and k == last:
                for j in range(n):  # the readout sees the last phase's sums
                    a = abs(u[j])
                    if a > peak:
                        peak = a
                break
            compare = (not is_output) and k >= t_w
            leak = k < last
            m = m_in if k + 1 <= t_src - 1 else m_out
            visited = 0
            n_leak = 0
            n_fire = 0
            for j in range(n):
                if fired[j]:
                    continue  # the lane is gated (and frozen: its adds are gated too)
                visited += 1
                v = u[j]
                a = v if v >= 0 else -v  # the phase's sum V = U + S, as the boundary sees it
                if a > peak:
                    peak = a
                if compare and v >= theta[chan[j], k - t_w]:
                    fired[j] = True
                    ph[j] = k - t_w
                    fire_tk[tile_of[j], k] += 1
                    n_fire += 1
                    continue
                if leak:
                    v = _leak(v, m, lim)
                    u[j] = v
                    n_leak += 1
                    a = v if v >= 0 else -v
                    if a > peak:
                        peak = a
            cnt[PUSH] += n_fire
            cnt[SOUT] += n_fire
            if compare:
                cnt[CMP] += visited
                if reload[k]:
                    cnt[TREAD] += all_chans
            cnt[MUL] += n_leak
        if is_output:
            cnt[CMP] += n  # the argmax over each tile's lanes, then across tiles
        u_peak[b] = peak
        # --- timing: tile after tile, all phases of a tile in its registers
        # the read pipeline fills once per layer: L_a, or the first tile's r index reads and
        # then the run FIFO, the event read, the token FIFO and one token of lead (the RTL's
        # pipeline, docs/architecture.md §11)
        start = adder_lat
        if n_tiles > 0 and tile_idx[0] + 4 > start:
            start = tile_idx[0] + 4
        busy = start
        waiting = 0
        stalled = 0
        _advance(q, start, blocked)
        for t in range(n_tiles):
            # fill the weight buffer (first tile of a channel group), then load the tile's
            # initial potentials into the lane registers
            busy += tile_pre[t] + 1
            _advance(q, tile_pre[t] + 1, blocked)
            for k in range(n_ph):
                c = 0
                if k < n_in:
                    c = ev_tk[t, k]
                    if tile_idx[t] > c:
                        c = tile_idx[t]
                # the phase's reads, then the boundary (or, last phase of the output layer,
                # the tile's argmax); boundaries of a tile at least L_n cycles apart
                cyc = c + 1
                if cyc < neuron_lat:
                    cyc = neuron_lat
                _advance(q, cyc - 1, blocked)
                f = fire_tk[t, k]
                if f > 0:
                    stalled += _push_cycle(q, f, depth, blocked)
                else:
                    _advance(q, 1, blocked)
                if t_src <= k < t_w:
                    waiting += cyc
                else:
                    busy += cyc
        busy += neuron_lat  # the last boundary's pipeline drains
        _advance(q, neuron_lat, blocked)
        st[BUSY] += busy
        st[WAITING] += waiting
        st[DRAIN] = _drain(q, blocked)
        st[STALLED] += stalled + st[DRAIN]
        st[PEAK] = q[2]
        st[OCC_SUM] = q[3]
