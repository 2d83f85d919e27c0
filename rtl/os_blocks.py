"""Blocks of the output-stationary engine (docs/architecture.md §11, §10 "Output-stationary
engine"): the source's event buffer bucketed by phase, the run reader, one lane."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import INDEX_BITS, SpikeEvent, pot_word
from rtl.neuron import NEURON_INPUTS, NEURON_OUTPUTS, NeuronUnit, neuron_ports


def run_layout(capacity: int) -> data.StructLayout:
    """An index entry: the run [start, end) of one phase's events in the event memory."""
    return data.StructLayout({"start": range(capacity + 1), "end": range(capacity + 1)})


#: An event as the event memory holds it: the source neuron and the sign (its phase is the
#: bucket it is in).
EVENT_ENTRY = data.StructLayout({"index": INDEX_BITS, "sign": 1})


class PhaseBuckets(wiring.Component):
    """The source layer's events of one image, bucketed by phase, with their index.

    While ``load`` is high the stream ``i`` is written in: events (in phase order) one after
    the other into the event memory, and for every phase k < ``phases`` one index entry, the
    run [start, end) of its events. The entry of phase k is written when the stream moves
    past k (a later phase, or the end marker), one per cycle, the stream held meanwhile.
    ``loaded`` rises when the end marker has been taken (and stays until the next ``load``).
    An event of a phase at or past ``phases`` is dropped (the consumer never reads it).

    Both memories have registered reads (SRAM macros): the data of an address comes out in
    the next cycle.

    Parameters
    ----------
    capacity : int
        Events of one image (the event memory's words).
    phases : int
        The phases the consumer reads (T_in' of docs/architecture.md §11).

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
        Events in phase order, then the end marker.
    load : In(1)
        Take the stream (``loaded`` is cleared when it rises).
    loaded : Out(1)
        The end marker has been taken.
    count : Out(range(capacity + 1))
        Events written.
    overflow : Out(1)
        More than ``capacity`` events came (the extra ones were dropped).
    idx_addr : In(range(phases)), idx : Out(run_layout)
        The index's read port.
    ev_addr : In(range(capacity)), ev : Out(EVENT_ENTRY)
        The event memory's read port.
    """

    def __init__(self, capacity: int, phases: int) -> None:
        self.capacity, self.phases = max(capacity, 1), max(phases, 1)
        super().__init__(
            {
                "i": In(stream.Signature(SpikeEvent)),
                "load": In(1),
                "loaded": Out(1),
                "count": Out(range(self.capacity + 1)),
                "overflow": Out(1),
                "idx_addr": In(range(max(self.phases, 2))),
                "idx": Out(run_layout(self.capacity)),
                "ev_addr": In(range(max(self.capacity, 2))),
                "ev": Out(EVENT_ENTRY),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        cap, n_ph = self.capacity, self.phases
        # (memories of one word get two: a zero-width address is not legal Verilog)
        m.submodules.evm = evm = memory.Memory(shape=EVENT_ENTRY, depth=max(cap, 2), init=[])
        m.submodules.idxm = idxm = memory.Memory(shape=run_layout(cap), depth=max(n_ph, 2), init=[])
        ev_w, idx_w = evm.write_port(), idxm.write_port()
        ev_r, idx_r = evm.read_port(domain="sync"), idxm.read_port(domain="sync")
        m.d.comb += [ev_r.addr.eq(self.ev_addr), self.ev.eq(ev_r.data),
                     idx_r.addr.eq(self.idx_addr), self.idx.eq(idx_r.data)]  # fmt: skip
        ph = Signal(range(n_ph + 1))  # the phase whose run is open
        start = Signal.like(self.count)  # where it starts
        head = self.i.payload
        target = Signal(range(2 ** head.phase.shape().width + 1))
        m.d.comb += target.eq(Mux(head.end, n_ph, head.phase))
        active = Signal()
        m.d.comb += active.eq(self.load & ~self.loaded & self.i.valid)
        with m.If(active & (ph < target) & (ph < n_ph)):  # close phase ph's run
            m.d.comb += [idx_w.addr.eq(ph), idx_w.data.start.eq(start),
                         idx_w.data.end.eq(self.count), idx_w.en.eq(1)]  # fmt: skip
            m.d.sync += [ph.eq(ph + 1), start.eq(self.count)]
        with m.Elif(active):  # an event of phase ph (or a later dropped one), or the end
            m.d.comb += self.i.ready.eq(1)
            with m.If(head.end):
                m.d.sync += self.loaded.eq(1)
            with m.Elif(head.phase < n_ph):
                with m.If(self.count < cap):
                    m.d.comb += [ev_w.addr.eq(self.count), ev_w.data.index.eq(head.index),
                                 ev_w.data.sign.eq(head.sign), ev_w.en.eq(1)]  # fmt: skip
                    m.d.sync += self.count.eq(self.count + 1)
                with m.Else():
                    m.d.sync += self.overflow.eq(1)
        with m.If(~self.load):  # ready for the next image
            m.d.sync += [self.loaded.eq(0), ph.eq(0), start.eq(0), self.count.eq(0),
                         self.overflow.eq(0)]  # fmt: skip
        return m


#: A token of the run reader: one event read (``index``, ``sign``), or a cycle of a phase
#: whose run is empty (``filler``); ``last`` closes the phase's reads.
TOKEN = data.StructLayout({"index": INDEX_BITS, "sign": 1, "filler": 1, "last": 1})


class RunReader(wiring.Component):
    """Walks the tiles and, per tile, the input phases, reading each phase's run of events:
    one token per cycle into a FIFO the lanes pop (docs/architecture.md §11, rule 1: the
    reads run ahead across phases and tiles).

    A phase's reads are its events, one per cycle (a phase without events reads one filler
    token: its index read, the r = 1 of a linear layer). The index entry of the next phase is
    addressed in the cycle that issues a run's last token, so the runs follow one another
    without a gap; a token is issued only while the FIFO will have room for it when its event
    arrives from the memory in the next cycle.

    Parameters
    ----------
    tiles : int
        Tiles of the layer.
    phases : int
        Input phases per tile (T_in').
    capacity : int
        The event memory's words.
    depth : int
        The token FIFO's depth.

    Ports
    -----
    start : In(1)
        Pulse: walk from tile 0, phase 0 (the index is addressed in the next cycle).
    idx_addr : Out, idx : In(run_layout)
        To :class:`PhaseBuckets`' index read port.
    ev_addr : Out, ev : In(EVENT_ENTRY)
        To its event read port.
    o : Out(stream.Signature(TOKEN))
        The FIFO's head (valid / ready).
    """

    def __init__(self, tiles: int, phases: int, capacity: int, depth: int) -> None:
        self.tiles, self.phases, self.capacity = tiles, max(phases, 1), max(capacity, 1)
        self.depth = depth
        super().__init__(
            {
                "start": In(1),
                "idx_addr": Out(range(max(self.phases, 2))),
                "idx": In(run_layout(self.capacity)),
                "ev_addr": Out(range(max(self.capacity, 2))),
                "ev": In(EVENT_ENTRY),
                "o": Out(stream.Signature(TOKEN)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.q = q = fifo.SyncFIFO(width=TOKEN.size, depth=self.depth)
        m.d.comb += [self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy),
                     q.r_en.eq(self.o.ready)]  # fmt: skip
        t = Signal(range(self.tiles + 1))
        k = Signal(range(self.phases + 1))
        pos, end = Signal(range(self.capacity + 1)), Signal(range(self.capacity + 1))
        first, walking = Signal(), Signal()  # first: the index entry arrives this cycle
        pend = Signal(TOKEN)  # the token issued last cycle (its event arrives now)
        pend_valid = Signal()
        word = Signal(TOKEN)  # the token with its event (a filler carries none)
        m.d.comb += [word.filler.eq(pend.filler), word.last.eq(pend.last),
                     word.index.eq(Mux(pend.filler, 0, self.ev.index)),
                     word.sign.eq(~pend.filler & self.ev.sign),
                     q.w_data.eq(word), q.w_en.eq(pend_valid)]  # fmt: skip
        cur_pos, cur_end = Signal.like(pos), Signal.like(end)
        m.d.comb += [cur_pos.eq(Mux(first, self.idx.start, pos)),
                     cur_end.eq(Mux(first, self.idx.end, end))]  # fmt: skip
        issue = Signal()
        m.d.comb += issue.eq(walking & (q.level + pend_valid < self.depth))
        last = Signal()
        m.d.comb += last.eq(cur_pos + 1 >= cur_end)
        nxt_k = Mux(k == self.phases - 1, 0, k + 1)
        m.d.comb += [self.ev_addr.eq(cur_pos), self.idx_addr.eq(Mux(issue & last, nxt_k, k))]
        m.d.sync += [pend_valid.eq(issue), pos.eq(cur_pos), end.eq(cur_end), first.eq(0)]
        with m.If(issue):
            m.d.sync += [pend.filler.eq(cur_pos >= cur_end), pend.last.eq(last),
                         pos.eq(cur_pos + 1)]  # fmt: skip
            with m.If(last):  # the next phase (or tile) reads its index entry next cycle
                m.d.sync += [k.eq(nxt_k), first.eq(1)]
                with m.If(k == self.phases - 1):
                    m.d.sync += t.eq(t + 1)
                    with m.If(t == self.tiles - 1):
                        m.d.sync += [walking.eq(0), first.eq(0)]
        with m.If(self.start):
            m.d.sync += [t.eq(0), k.eq(0), walking.eq(1), first.eq(1), pend_valid.eq(0)]
            m.d.comb += self.idx_addr.eq(0)
        return m


class OsLane(wiring.Component):
    """Lane i of the output-stationary PE array (docs/architecture.md §11): the registers U,
    S and the fired flag of one neuron of the tile, its adder and its neuron unit.

    ``load``: U ← ``bias``, S ← 0, fired ← 0 (the tile's first cycle). ``add``: S ← S ±
    ``weight`` (the weight read for the event popped in the previous cycle). ``boundary``:
    V = U + S (+ the add landing in this cycle) goes through the neuron unit (compare, fire,
    scale) and, with ``commit``, U ← its result, S ← 0; a fired lane keeps its flag (its
    adds go on into S but are never used: docs/architecture.md §11 "frozen"). The neuron unit
    sees V as its word, so ``fire``, ``compared`` and ``leaked`` are those of the boundary.

    Parameters
    ----------
    acc_bits : int
        A: U and V are A-bit (exact for an unfired lane, docs/semantics.md §4); S has A + 1.
    weight_bits : int
    sat_limit : int
        L.

    Ports
    -----
    load, add, negate, boundary, commit : In(1)
    weight : In(signed(weight_bits))
    bias, theta : In(signed(A))
    valid, compare, leak, m : In
        The neuron unit's inputs.
    v : Out(pot_word(A))
        V and the fired flag, as the boundary sees them.
    fire, compared, leaked : Out(1)
    """

    def __init__(self, acc_bits: int, weight_bits: int, sat_limit: int) -> None:
        self.acc_bits, self.sat_limit = acc_bits, sat_limit
        super().__init__(
            {
                "load": In(1),
                "add": In(1),
                "negate": In(1),
                "boundary": In(1),
                "commit": In(1),
                "weight": In(signed(weight_bits)),
                "bias": In(signed(acc_bits)),
                "v": Out(pot_word(acc_bits)),
                **neuron_ports(acc_bits),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        a = self.acc_bits
        m.submodules.nu = nu = NeuronUnit(a, self.sat_limit)
        u, s, fired = Signal(signed(a)), Signal(signed(a + 1)), Signal()
        w = Signal(signed(a + 1))
        m.d.comb += w.eq(Mux(self.add, Mux(self.negate, -self.weight, self.weight), 0))
        s_now = Signal(signed(a + 2))
        m.d.comb += s_now.eq(s + w)
        m.d.comb += [self.v.u.eq((u + s_now)[:a]), self.v.fired.eq(fired), nu.word_in.eq(self.v)]
        m.d.comb += [getattr(nu, n).eq(getattr(self, n)) for n in NEURON_INPUTS]
        m.d.comb += [getattr(self, n).eq(getattr(nu, n) & self.boundary) for n in NEURON_OUTPUTS]
        with m.If(self.load):
            m.d.sync += [u.eq(self.bias), s.eq(0), fired.eq(0)]
        with m.Elif(self.boundary & self.commit):
            m.d.sync += [u.eq(nu.word_out.u), fired.eq(nu.word_out.fired), s.eq(0)]
        with m.Elif(self.add):
            m.d.sync += s.eq(s_now[: a + 1])
        return m
