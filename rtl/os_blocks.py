"""Read-side blocks of the output-stationary engine (docs/architecture.md §11, "The RTL of
this dataflow"): the index reader, the event reader and the two-headed token FIFO, and the
event buffer's layouts (the buffer itself: :class:`rtl.os_sort.SortingBuckets`)."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.os_geom import OsGeometry, TileWalk


def run_layout(capacity: int) -> data.StructLayout:
    """An index entry: the run [start, end) of one (phase, pixel)'s events."""
    return data.StructLayout({"start": range(capacity + 1), "end": range(capacity + 1)})


def event_entry(channels: int, width: int) -> data.StructLayout:
    """An event as the event memory holds it: its channel, its column and its sign (its
    phase and row are those of the run it is read in)."""
    return data.StructLayout({"c": range(max(channels, 2)), "x": range(max(width, 2)),
                              "sign": 1})  # fmt: skip


def item_layout(capacity: int, height: int) -> data.StructLayout:
    """A run FIFO item: a run [start, end) of source row y of synapse group ``group``;
    ``eop``: the phase's last row (its item is passed on even when its run is empty)."""
    return data.StructLayout({"start": range(capacity + 1), "end": range(capacity + 1),
                              "y": range(max(height, 2)), "group": 1, "eop": 1})  # fmt: skip


class IndexReader(wiring.Component):
    """Walks the tiles, per tile the input phases, per phase each group's receptive-field rows
    (group 0's, then group 1's): one index read per row and cycle (ports a and b of the
    group's buffer: the run of columns x0..x1), each non-empty run (and every phase's last
    row) into the run FIFO. It runs ahead of the event reader as far as the FIFO allows
    (§11, rule 1).

    Ports
    -----
    start : In(1)
        Pulse: walk from tile 0 (the first index read is addressed in the next cycle).
    idx_a, idx_b : Out
        The index addresses (of the group being read; both buffers get them).
    run_a_<g>, run_b_<g> : In(run_layout)
        Group g's buffer's index data.
    o : Out(stream.Signature(item_layout))
        The run FIFO's head.
    """

    def __init__(self, g: OsGeometry, phases: int, capacity: int, depth: int) -> None:
        self.g, self.phases, self.capacity, self.depth = g, max(phases, 1), capacity, depth
        self.item = item_layout(capacity, max(grp.src_shape[1] for grp in g.groups))
        entries = self.phases * max(grp.pixels for grp in g.groups)
        ports = {"start": In(1), "idx_a": Out(range(max(entries, 2))),
                 "idx_b": Out(range(max(entries, 2))),
                 "o": Out(stream.Signature(self.item))}  # fmt: skip
        for i in range(len(g.groups)):
            ports.update({f"run_a_{i}": In(run_layout(capacity)),
                          f"run_b_{i}": In(run_layout(capacity))})  # fmt: skip
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        g, last_g = self.g, len(self.g.groups) - 1
        m.submodules.walk = walk = TileWalk(g)
        m.submodules.q = q = fifo.SyncFIFO(width=self.item.size, depth=self.depth)
        m.d.comb += [self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy),
                     q.r_en.eq(self.o.ready)]  # fmt: skip
        height = max(grp.src_shape[1] for grp in g.groups)
        width = max(grp.src_shape[2] for grp in g.groups)
        k, y = Signal(range(self.phases + 1)), Signal(range(height + 2))
        xc = Signal(range(width + 2))
        # fresh: the group's first row and column are next; fresh_x: the row's first column
        grp, fresh, fresh_x, walking = Signal(), Signal(), Signal(), Signal()
        pend, pend_valid = Signal(self.item), Signal()  # the row read last cycle
        item = Signal(self.item)
        run_a, run_b = Signal(run_layout(self.capacity)), Signal(run_layout(self.capacity))
        a1, b1 = getattr(self, f"run_a_{last_g}"), getattr(self, f"run_b_{last_g}")
        m.d.comb += [run_a.eq(Mux(pend.group, a1, self.run_a_0)),
                     run_b.eq(Mux(pend.group, b1, self.run_b_0))]  # fmt: skip
        m.d.comb += [item.start.eq(run_a.start), item.end.eq(run_b.end),
                     item.y.eq(pend.y), item.group.eq(pend.group), item.eop.eq(pend.eop),
                     q.w_data.eq(item),
                     q.w_en.eq(pend_valid & ((item.start != item.end) | item.eop))]  # fmt: skip
        f0, f1 = walk.field(0), walk.field(last_g)
        y0, y1, x0, x1 = (Mux(grp, b, a) for a, b in zip(f0, f1, strict=True))
        # a sparse group (a 1 × 1 window under stride s) reads every s-th pixel of every
        # s-th row, one pixel a read; every other group one read per row (columns x0..x1)
        sparse = [gg.sparse for gg in g.groups]
        step_y = [gg.stride[0] if gg.sparse else 1 for gg in g.groups]
        step_x = [gg.stride[1] if gg.sparse else 1 for gg in g.groups]
        is_sparse = Mux(grp, sparse[-1], sparse[0])
        sy, sx = Mux(grp, step_y[-1], step_y[0]), Mux(grp, step_x[-1], step_x[0])
        row, col = Signal.like(y), Signal.like(xc)
        m.d.comb += [row.eq(Mux(fresh, y0, y)), col.eq(Mux(fresh | fresh_x, x0, xc))]
        for i, addr in ((0, self.idx_a), (1, self.idx_b)):
            per = [k * gg.pixels + row * gg.src_shape[2] +
                   (col if gg.sparse else walk.field(j)[2 + i])
                   for j, gg in enumerate(g.groups)]  # fmt: skip
            m.d.comb += addr.eq(Mux(grp, per[-1], per[0]))
        issue = Signal()
        m.d.comb += issue.eq(walking & (q.level + pend_valid < self.depth))
        end_row = ~is_sparse | (col + sx > x1)
        end_g = end_row & (row + sy > y1)
        last = (grp == last_g) | ~getattr(walk, f"act_{last_g}")
        eop = end_g & last
        m.d.sync += [pend_valid.eq(issue), pend.y.eq(row), pend.group.eq(grp), pend.eop.eq(eop)]
        with m.If(issue):
            m.d.sync += [fresh.eq(0), fresh_x.eq(0), y.eq(row)]
            with m.If(~end_row):  # the next pixel of a sparse row
                m.d.sync += xc.eq(col + sx)
            with m.Elif(~end_g):  # the next row
                m.d.sync += [y.eq(row + sy), fresh_x.eq(1)]
            with m.Elif(~eop):  # the next group's rows
                m.d.sync += [grp.eq(1), fresh.eq(1)]
            with m.Else():  # the next phase, or the next tile
                m.d.sync += [grp.eq(0), fresh.eq(1), k.eq(k + 1)]
                with m.If(k == self.phases - 1):
                    m.d.sync += k.eq(0)
                    m.d.comb += walk.step.eq(1)
                    with m.If(walk.last):
                        m.d.sync += walking.eq(0)
        with m.If(self.start):
            m.d.comb += walk.restart.eq(1)
            m.d.sync += [k.eq(0), grp.eq(0), fresh.eq(1), walking.eq(1), pend_valid.eq(0)]
        return m


def token_layout(channels: int, height: int, width: int) -> data.StructLayout:
    """A token for the lanes: an event (channel c, row y, column x, sign, synapse group) or
    the end of a phase's reads (``marker``)."""
    return data.StructLayout({"c": range(max(channels, 2)), "y": range(max(height, 2)),
                              "x": range(max(width, 2)), "sign": 1, "group": 1,
                              "marker": 1})  # fmt: skip


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
    """Reads the events of the runs in the run FIFO, one per cycle (from the event memory of
    the run's group), into the token FIFO; after a phase's last event (or, for a phase
    without events, alone) a marker token.

    Ports
    -----
    runs : In(stream.Signature(item_layout))
        The index reader's FIFO.
    ev_addr : Out; ev_<g> : In(event_entry)
        The event memories' read ports (registered; every group's gets the address).
    head0, head1 : Out(token_layout); level : Out; pop : In(range(3))
        The token FIFO (:class:`PeekFifo`).
    """

    def __init__(self, capacity: int, item, tok, entry, groups: int, depth: int) -> None:
        self.capacity, self.depth, self.item, self.tok = capacity, depth, item, tok
        ports = {"runs": In(stream.Signature(item)), "ev_addr": Out(range(max(capacity, 2))),
                 "head0": Out(tok), "head1": Out(tok), "level": Out(range(depth + 1)),
                 "pop": In(range(3))}  # fmt: skip
        ports.update({f"ev_{i}": In(entry) for i in range(groups)})
        self.groups = groups
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.q = q = PeekFifo(self.tok, self.depth)
        m.d.comb += [self.head0.eq(q.head0), self.head1.eq(q.head1), self.level.eq(q.level),
                     q.pop.eq(self.pop)]  # fmt: skip
        cur = Signal(self.item)  # the run being read (start = its next event)
        marker_due = Signal()  # the phase's events are all read: its marker is next
        pend, pend_valid = Signal(self.tok), Signal()  # issued last cycle
        ev = getattr(self, f"ev_{self.groups - 1}")  # group 1's (group 0's if only one)
        tok = Signal(self.tok)
        c = Mux(pend.group, ev.c, self.ev_0.c)
        x = Mux(pend.group, ev.x, self.ev_0.x)
        sign = Mux(pend.group, ev.sign, self.ev_0.sign)
        m.d.comb += [tok.eq(pend), tok.c.eq(c), tok.x.eq(x), tok.sign.eq(sign & ~pend.marker),
                     q.w_data.eq(tok), q.w_en.eq(pend_valid)]  # fmt: skip
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
                     pend.y.eq(run.y), pend.group.eq(run.group)]  # fmt: skip
        with m.If(issue_ev):
            m.d.sync += [cur.eq(run), cur.start.eq(run.start + 1),
                         marker_due.eq(run.eop & (run.start + 1 == run.end))]  # fmt: skip
        with m.If(issue_mk):
            m.d.sync += marker_due.eq(0)
        return m
