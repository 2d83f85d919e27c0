"""Read-side blocks of the output-stationary engine (docs/architecture.md §11, "The RTL of
this dataflow"): the tile walk, the event buffer bucketed by phase and pixel, the index
reader, the event reader and the two-headed token FIFO."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.fanout import ceil_div
from rtl.events import SpikeEvent


@dataclass(frozen=True)
class OsGeometry:
    """A layer's window and tiling as the output-stationary engine walks it.

    A linear layer is a 1 × 1 convolution of a 1 × 1 image ((n_in, 1, 1) → (n_out, 1, 1));
    its tile is (P, 1, 1). Tiles run channel group by channel group, then row-major over the
    pixel blocks (``archspec.tiles.tile_map``).
    """

    src_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    tile: tuple[int, int, int]  # (tc, th, tw)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(channel groups, pixel-block rows, pixel-block columns)."""
        (c, h, w), (tc, th, tw) = self.out_shape, self.tile
        return ceil_div(c, tc), ceil_div(h, th), ceil_div(w, tw)

    @property
    def tiles(self) -> int:
        g = self.grid
        return g[0] * g[1] * g[2]

    @property
    def src_pixels(self) -> int:
        return self.src_shape[1] * self.src_shape[2]

    def rows(self, t: int) -> tuple[int, int, int, int]:
        """Tile t's receptive field: source rows y0..y1, columns x0..x1 (inclusive)."""
        (_, h, w), (_, ho, wo) = self.src_shape, self.out_shape
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.stride, self.padding
        _, th, tw = self.tile
        _, nby, nbx = self.grid
        by, bx = divmod(t % (nby * nbx), nbx)
        oy0, ox0 = by * th, bx * tw
        oy1, ox1 = min(oy0 + th, ho) - 1, min(ox0 + tw, wo) - 1
        return (max(0, oy0 * sy - py), min(h - 1, oy1 * sy - py + kh - 1),
                max(0, ox0 * sx - px), min(w - 1, ox1 * sx - px + kw - 1))  # fmt: skip

    @property
    def max_rows(self) -> int:
        return max(r[1] - r[0] + 1 for r in map(self.rows, range(self.tiles)))


class TileWalk(wiring.Component):
    """The current tile of the walk and its receptive field (combinational from three
    counters: channel group, pixel-block row and column).

    Ports
    -----
    restart, step : In(1)
        Go to tile 0; go to the next tile (in the next cycle).
    t, cg, oy0, ox0 : Out
        The tile, its channel group and its first output row and column.
    y0, y1, x0, x1 : Out
        Its receptive field's source rows and columns (inclusive).
    last : Out(1)
        It is the last tile.
    """

    def __init__(self, g: OsGeometry) -> None:
        self.g = g
        (_, h, w), (_, ho, wo) = g.src_shape, g.out_shape
        n = g.tiles
        super().__init__({
            "restart": In(1), "step": In(1), "t": Out(range(n + 1)), "cg": Out(range(n + 1)),
            "oy0": Out(range(ho + 1)), "ox0": Out(range(wo + 1)),
            "y0": Out(range(h + 1)), "y1": Out(range(h + 1)),
            "x0": Out(range(w + 1)), "x1": Out(range(w + 1)), "last": Out(1),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.g
        (_, h, w), (_, ho, wo) = g.src_shape, g.out_shape
        (kh, kw), (sy, sx), (py, px) = g.kernel, g.stride, g.padding
        _, th, tw = g.tile
        ncg, nby, nbx = g.grid
        by, bx = Signal(range(nby + 1)), Signal(range(nbx + 1))
        m.d.comb += [self.oy0.eq(by * th), self.ox0.eq(bx * tw),
                     self.last.eq(self.t == g.tiles - 1)]  # fmt: skip
        oy1 = Mux(by == nby - 1, ho - 1, by * th + th - 1)
        ox1 = Mux(bx == nbx - 1, wo - 1, bx * tw + tw - 1)
        lo_y, hi_y = Signal(signed(16)), Signal(signed(16))
        lo_x, hi_x = Signal(signed(16)), Signal(signed(16))
        m.d.comb += [lo_y.eq(self.oy0 * sy - py), hi_y.eq(oy1 * sy - py + kh - 1),
                     lo_x.eq(self.ox0 * sx - px), hi_x.eq(ox1 * sx - px + kw - 1)]  # fmt: skip
        m.d.comb += [self.y0.eq(Mux(lo_y < 0, 0, lo_y)), self.y1.eq(Mux(hi_y > h - 1, h - 1, hi_y)),
                     self.x0.eq(Mux(lo_x < 0, 0, lo_x)),
                     self.x1.eq(Mux(hi_x > w - 1, w - 1, hi_x))]  # fmt: skip
        with m.If(self.restart):
            m.d.sync += [self.t.eq(0), self.cg.eq(0), by.eq(0), bx.eq(0)]
        with m.Elif(self.step):
            m.d.sync += self.t.eq(self.t + 1)
            with m.If(bx != nbx - 1):
                m.d.sync += bx.eq(bx + 1)
            with m.Elif(by != nby - 1):
                m.d.sync += [bx.eq(0), by.eq(by + 1)]
            with m.Else():
                m.d.sync += [bx.eq(0), by.eq(0), self.cg.eq(self.cg + 1)]
        return m


def run_layout(capacity: int) -> data.StructLayout:
    """An index entry: the run [start, end) of one (phase, pixel)'s events."""
    return data.StructLayout({"start": range(capacity + 1), "end": range(capacity + 1)})


def event_entry(channels: int, width: int) -> data.StructLayout:
    """An event as the event memory holds it: its channel, its column and its sign (its
    phase and row are those of the run it is read in)."""
    return data.StructLayout({"c": range(max(channels, 2)), "x": range(max(width, 2)),
                              "sign": 1})  # fmt: skip


class PhaseBuckets(wiring.Component):
    """The source layer's events of one image, bucketed by phase and pixel, with the index.

    While ``load`` is high the stream ``i`` is written in: events (sorted by phase, then
    source pixel; any channel order) one after the other into the event memory, and for every
    (phase k < ``phases``, pixel) one index entry: the run [start, end) of its events. An
    entry is written when the stream moves past it (a later key, or the end marker), one per
    cycle, the stream held meanwhile. ``loaded`` rises when the end marker has been taken.
    Events of phases ≥ ``phases`` are dropped (the consumer never reads them). ``error``:
    more than ``capacity`` events, or an event whose (phase, pixel) is behind the stream's
    (the run would be wrong); cleared with ``load``.

    The index has two registered read ports (a and b: a row's run is [a.start, b.end), the
    one 32-bit index read of §11), the event memory one.

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
    load : In(1); loaded, error : Out(1); count : Out(range(capacity + 1))
    idx_a, idx_b : In(range(phases · pixels)) addresses; run_a, run_b : Out(run_layout)
    ev_addr : In(range(capacity)); ev : Out(event_entry)
    """

    def __init__(self, capacity: int, phases: int, src_shape: tuple[int, int, int]) -> None:
        self.capacity, self.phases, self.src_shape = max(capacity, 1), max(phases, 1), src_shape
        self.entries = self.phases * src_shape[1] * src_shape[2]
        self.entry = event_entry(src_shape[0], src_shape[2])
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)), "load": In(1), "loaded": Out(1),
            "error": Out(1), "count": Out(range(self.capacity + 1)),
            "idx_a": In(range(max(self.entries, 2))), "idx_b": In(range(max(self.entries, 2))),
            "run_a": Out(run_layout(self.capacity)), "run_b": Out(run_layout(self.capacity)),
            "ev_addr": In(range(max(self.capacity, 2))), "ev": Out(self.entry),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        cap, n = self.capacity, self.entries
        _, h, w = self.src_shape
        # (memories of one word get two: a zero-width address is not legal Verilog)
        m.submodules.evm = evm = memory.Memory(shape=self.entry, depth=max(cap, 2), init=[])
        m.submodules.idxm = idxm = memory.Memory(shape=run_layout(cap), depth=max(n, 2), init=[])
        ev_w, idx_w = evm.write_port(), idxm.write_port()
        ev_r, ra, rb = (evm.read_port(domain="sync"), idxm.read_port(domain="sync"),
                        idxm.read_port(domain="sync"))  # fmt: skip
        m.d.comb += [ev_r.addr.eq(self.ev_addr), self.ev.eq(ev_r.data),
                     ra.addr.eq(self.idx_a), rb.addr.eq(self.idx_b),
                     self.run_a.eq(ra.data), self.run_b.eq(rb.data)]  # fmt: skip
        e = Signal(range(n + 1))  # the entry whose run is open
        start = Signal.like(self.count)
        head = self.i.payload
        pix = Signal(range(h * w + 1))
        m.d.comb += pix.eq(head.index % (h * w))
        past = Signal()  # the end marker, or an event of a phase the consumer never reads
        m.d.comb += past.eq(head.end | (head.phase >= self.phases))
        key = Signal(range(n + h * w + 1))
        m.d.comb += key.eq(Mux(past, n, head.phase * (h * w) + pix))
        active = Signal()
        m.d.comb += active.eq(self.load & ~self.loaded & self.i.valid)
        with m.If(active & (e < key)):  # close entry e
            m.d.comb += [idx_w.addr.eq(e), idx_w.data.start.eq(start),
                         idx_w.data.end.eq(self.count), idx_w.en.eq(1)]  # fmt: skip
            m.d.sync += [e.eq(e + 1), start.eq(self.count)]
        with m.Elif(active):
            m.d.comb += self.i.ready.eq(1)
            with m.If(head.end):
                m.d.sync += self.loaded.eq(1)
            with m.Elif(~past):
                with m.If((self.count < cap) & (e == key)):
                    m.d.comb += [ev_w.addr.eq(self.count), ev_w.data.c.eq(head.index // (h * w)),
                                 ev_w.data.x.eq(pix % w), ev_w.data.sign.eq(head.sign),
                                 ev_w.en.eq(1)]  # fmt: skip
                    m.d.sync += self.count.eq(self.count + 1)
                with m.Else():
                    m.d.sync += self.error.eq(1)
        with m.If(~self.load):  # ready for the next image
            m.d.sync += [self.loaded.eq(0), e.eq(0), start.eq(0), self.count.eq(0),
                         self.error.eq(0)]  # fmt: skip
        return m


def item_layout(capacity: int, height: int) -> data.StructLayout:
    """A run FIFO item: a run [start, end) of source row y; ``eop``: the phase's last row
    (its item is passed on even when its run is empty)."""
    return data.StructLayout({"start": range(capacity + 1), "end": range(capacity + 1),
                              "y": range(max(height, 2)), "eop": 1})  # fmt: skip


class IndexReader(wiring.Component):
    """Walks the tiles, per tile the input phases, per phase the source rows of the tile's
    receptive field: one index read per row and cycle (ports a and b: the run of columns
    x0..x1), each non-empty run (and every phase's last row) into the run FIFO. It runs
    ahead of the event reader as far as the FIFO allows (§11, rule 1).

    Ports
    -----
    start : In(1)
        Pulse: walk from tile 0 (the first index read is addressed in the next cycle).
    idx_a, idx_b : Out; run_a, run_b : In(run_layout)
        To :class:`PhaseBuckets`' index.
    o : Out(stream.Signature(item_layout))
        The run FIFO's head.
    """

    def __init__(self, g: OsGeometry, phases: int, capacity: int, depth: int) -> None:
        self.g, self.phases, self.capacity, self.depth = g, max(phases, 1), capacity, depth
        self.item = item_layout(capacity, g.src_shape[1])
        entries = self.phases * g.src_pixels
        super().__init__({
            "start": In(1), "idx_a": Out(range(max(entries, 2))),
            "idx_b": Out(range(max(entries, 2))), "run_a": In(run_layout(capacity)),
            "run_b": In(run_layout(capacity)), "o": Out(stream.Signature(self.item)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        g, hw, w = self.g, self.g.src_pixels, self.g.src_shape[2]
        m.submodules.walk = walk = TileWalk(g)
        m.submodules.q = q = fifo.SyncFIFO(width=self.item.size, depth=self.depth)
        m.d.comb += [self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy),
                     q.r_en.eq(self.o.ready)]  # fmt: skip
        k, y = Signal(range(self.phases + 1)), Signal(range(g.src_shape[1] + 1))
        fresh, walking = Signal(), Signal()  # fresh: the tile's first row is y0
        pend, pend_valid = Signal(self.item), Signal()  # the row read last cycle
        item = Signal(self.item)
        m.d.comb += [item.start.eq(self.run_a.start), item.end.eq(self.run_b.end),
                     item.y.eq(pend.y), item.eop.eq(pend.eop), q.w_data.eq(item),
                     q.w_en.eq(pend_valid & ((item.start != item.end) | item.eop))]  # fmt: skip
        row = Signal.like(y)
        m.d.comb += row.eq(Mux(fresh, walk.y0, y))
        base = k * hw + row * w
        m.d.comb += [self.idx_a.eq(base + walk.x0), self.idx_b.eq(base + walk.x1)]
        issue = Signal()
        m.d.comb += issue.eq(walking & (q.level + pend_valid < self.depth))
        eop = row == walk.y1
        m.d.sync += [pend_valid.eq(issue), pend.y.eq(row), pend.eop.eq(eop)]
        with m.If(issue):
            m.d.sync += [y.eq(row + 1), fresh.eq(0)]
            with m.If(eop):
                m.d.sync += [y.eq(walk.y0), k.eq(k + 1)]
                with m.If(k == self.phases - 1):
                    m.d.sync += [k.eq(0), fresh.eq(1)]
                    m.d.comb += walk.step.eq(1)
                    with m.If(walk.last):
                        m.d.sync += walking.eq(0)
        with m.If(self.start):
            m.d.comb += walk.restart.eq(1)
            m.d.sync += [k.eq(0), fresh.eq(1), walking.eq(1), pend_valid.eq(0)]
        return m


def token_layout(channels: int, height: int, width: int) -> data.StructLayout:
    """A token for the lanes: an event (channel c, row y, column x, sign) or the end of a
    phase's reads (``marker``)."""
    return data.StructLayout({"c": range(max(channels, 2)), "y": range(max(height, 2)),
                              "x": range(max(width, 2)), "sign": 1, "marker": 1})  # fmt: skip


class PeekFifo(wiring.Component):
    """A FIFO whose first two entries are visible (a register file of ``depth`` words).

    Ports
    -----
    w_data : In(layout); w_en : In(1)
        Write (the caller keeps ``level`` < depth).
    head0, head1 : Out(layout); level : Out(range(depth + 1))
    pop : In(range(3))
        Entries taken this cycle (≤ level).
    """

    def __init__(self, layout: data.StructLayout, depth: int) -> None:
        self.layout, self.depth = layout, depth
        super().__init__({
            "w_data": In(layout), "w_en": In(1), "head0": Out(layout), "head1": Out(layout),
            "level": Out(range(depth + 1)), "pop": In(range(3)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.depth
        slots = Array(Signal(self.layout, name=f"slot{i}") for i in range(d))
        rp, wp = Signal(range(d)), Signal(range(d))

        def wrap(v):
            return Mux(v >= d, v - d, v)

        m.d.comb += [self.head0.eq(slots[rp]), self.head1.eq(slots[wrap(rp + 1)])]
        with m.If(self.w_en):
            m.d.sync += [slots[wp].eq(self.w_data), wp.eq(wrap(wp + 1))]
        m.d.sync += [rp.eq(wrap(rp + self.pop)), self.level.eq(self.level + self.w_en - self.pop)]
        return m


class EventReader(wiring.Component):
    """Reads the events of the runs in the run FIFO, one per cycle, into the token FIFO; after
    a phase's last event (or, for a phase without events, alone) a marker token.

    Ports
    -----
    runs : In(stream.Signature(item_layout))
        The index reader's FIFO.
    ev_addr : Out; ev : In(event_entry)
        The event memory's read port (registered).
    head0, head1 : Out(token_layout); level : Out; pop : In(range(3))
        The token FIFO (:class:`PeekFifo`).
    """

    def __init__(self, capacity: int, src_shape: tuple[int, int, int], depth: int) -> None:
        c, h, w = src_shape
        self.capacity, self.depth = capacity, depth
        self.item, self.tok = item_layout(capacity, h), token_layout(c, h, w)
        super().__init__({
            "runs": In(stream.Signature(self.item)), "ev_addr": Out(range(max(capacity, 2))),
            "ev": In(event_entry(c, w)), "head0": Out(self.tok), "head1": Out(self.tok),
            "level": Out(range(depth + 1)), "pop": In(range(3)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.q = q = PeekFifo(self.tok, self.depth)
        m.d.comb += [self.head0.eq(q.head0), self.head1.eq(q.head1), self.level.eq(q.level),
                     q.pop.eq(self.pop)]  # fmt: skip
        cur = Signal(self.item)  # the run being read (start = its next event)
        marker_due = Signal()  # the phase's events are all read: its marker is next
        pend, pend_valid = Signal(self.tok), Signal()  # issued last cycle
        tok = Signal(self.tok)
        m.d.comb += [tok.eq(pend), tok.c.eq(self.ev.c), tok.x.eq(self.ev.x),
                     tok.sign.eq(self.ev.sign & ~pend.marker), q.w_data.eq(tok),
                     q.w_en.eq(pend_valid)]  # fmt: skip
        room = Signal()
        m.d.comb += room.eq(q.level + pend_valid < self.depth)
        has_cur = cur.start != cur.end
        head = self.runs.payload
        run = Signal(self.item)  # the run an event is read from this cycle
        m.d.comb += run.eq(Mux(has_cur, cur, head))
        m.d.comb += self.ev_addr.eq(run.start)
        issue_ev = room & ~marker_due & (has_cur | (self.runs.valid & (head.start != head.end)))
        issue_mk = room & (marker_due | (~has_cur & self.runs.valid & (head.start == head.end)))
        m.d.comb += self.runs.ready.eq(room & ~marker_due & ~has_cur)
        m.d.sync += [pend_valid.eq(issue_ev | issue_mk), pend.marker.eq(issue_mk),
                     pend.y.eq(run.y)]  # fmt: skip
        with m.If(issue_ev):
            m.d.sync += [cur.eq(run), cur.start.eq(run.start + 1),
                         marker_due.eq(run.eop & (run.start + 1 == run.end))]  # fmt: skip
        with m.If(issue_mk):
            m.d.sync += marker_due.eq(0)
        return m
