"""The on-chip event buffers between layers: buffer, reader and merger (docs/architecture.md §14).

A layer's spikes are written into its :class:`EventBuffer` in the order its output queue
pops them (phase order: the engine's boundary scans run phase after phase), and read back by
each consumer through a :class:`BufferReader`: a registered-read memory (one cycle, as an
SRAM macro) whose read address runs one event ahead, so the reader offers one event per
cycle without a bubble. An :class:`EventMerger` turns one or two readers into the engine's
``i_events`` stream: for a residual layer group 0's events of phase k before group 1's (the
engine's documented order), then the end-of-layer marker, once. A two-rail source read by
two graph groups keeps its events in a :class:`RailBuffer`: one bank per rail, one reader
each.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import PHASE_BITS, SpikeEvent


class EventBuffer(wiring.Component):
    """``depth`` events of one layer: a write stream (always ready), one registered read port.

    Parameters
    ----------
    depth : int
        Events the buffer holds: the layer's worst case (every neuron spikes once; the input
        layer: size × T_in). A write beyond it is dropped and sets ``overflow``.

    Ports
    -----
    clear : In(1)
        Empty the buffer (the producer's ``start``, or the host's first input beat): a write
        in the same cycle goes to address 0.
    w : In(stream.Signature(SpikeEvent))
        Events in arrival order; ``ready`` is always high.
    count : Out(range(depth + 1))
        Events written since the last ``clear``.
    overflow : Out(1)
        A write found the buffer full (sticky until ``clear``).
    rd_addr : In(range(depth))
        Read address (the readers' and the debug port's addresses, OR-ed: only one is
        non-zero at a time).
    rd_data : Out(32)
        The event at the address of the previous cycle (registered read).
    """

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"an event buffer needs a depth ≥ 1, got {depth!r}")
        self.depth = depth
        super().__init__(
            {
                "clear": In(1),
                "w": In(stream.Signature(SpikeEvent)),
                "count": Out(range(depth + 1)),
                "overflow": Out(1),
                "rd_addr": In(range(max(depth, 2))),
                "rd_data": Out(32),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        # (a memory of one word gets two: a zero-width address is not legal Verilog)
        m.submodules.mem = mem = memory.Memory(shape=32, depth=max(self.depth, 2), init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")  # one-cycle registered read (an SRAM macro)
        base = Signal.like(self.count)  # the write address: 0 right after a clear
        m.d.comb += base.eq(Mux(self.clear, 0, self.count))
        full = base == self.depth
        m.d.comb += [
            self.w.ready.eq(1),
            wr.addr.eq(base),
            wr.data.eq(self.w.payload.as_value()),
            wr.en.eq(self.w.valid & ~full),
            rd.addr.eq(self.rd_addr),
            self.rd_data.eq(rd.data),
        ]
        m.d.sync += self.count.eq(base + (self.w.valid & ~full))
        with m.If(self.clear):
            m.d.sync += self.overflow.eq(0)
        with m.If(self.w.valid & full):
            m.d.sync += self.overflow.eq(1)
        return m


class RailBuffer(wiring.Component):
    """A layer's events in two banks by rail: the buffer of a two-rail source whose consumer
    reads the rails with two synapse groups (a GCN's aggregation, docs/architecture.md §14).

    Events with ``index < boundary`` (the first rail's channels) go to bank 0, the others to
    bank 1, each an :class:`EventBuffer` (one registered read port) in arrival order; each
    bank is read by its own :class:`BufferReader`, so the consumer's two groups are streamed
    as a residual layer's two sources are, without a bubble. The host sees one buffer: bank
    0's events, then bank 1's.

    Parameters
    ----------
    depth : int
        Events of the whole layer (one per neuron).
    boundary : int
        The first neuron of the second rail (0 < boundary < depth).

    Ports
    -----
    clear, w, count, overflow
        As :class:`EventBuffer` (``count``: both banks; ``overflow``: either).
    rd_addr : In(range(depth)); rd_data : Out(32)
        The host's (debug port's) read: event ``rd_addr`` of bank 0 followed by bank 1, one
        cycle later; 0 while a reader owns the banks.
    r0_addr, r1_addr : In; r0_data, r1_data : Out(32); r0_count, r1_count : Out
        Bank g's read port and its count, for the reader of the group that reads rail g.
    """

    def __init__(self, depth: int, boundary: int) -> None:
        if not 0 < boundary < depth:
            raise ValueError(
                f"a rail boundary must lie inside the layer: {boundary!r} of {depth!r}"
            )
        self.depth, self.boundary = depth, boundary
        self.banks = (boundary, depth - boundary)
        ports = {"clear": In(1), "w": In(stream.Signature(SpikeEvent)),
                 "count": Out(range(depth + 1)), "overflow": Out(1),
                 "rd_addr": In(range(depth)), "rd_data": Out(32)}  # fmt: skip
        for g, d in enumerate(self.banks):
            ports.update({f"r{g}_addr": In(range(max(d, 2))), f"r{g}_data": Out(32),
                          f"r{g}_count": Out(range(d + 1))})  # fmt: skip
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        banks = [EventBuffer(d) for d in self.banks]
        m.submodules.bank0, m.submodules.bank1 = banks
        upper = self.w.payload.index >= self.boundary
        hi = Signal()  # the host's address lies in bank 1
        hi_q = Signal()  # ... in the previous cycle: the bank whose word is on rd_data
        m.d.comb += [self.w.ready.eq(1), hi.eq(self.rd_addr >= banks[0].count),
                     self.count.eq(banks[0].count + banks[1].count),
                     self.overflow.eq(banks[0].overflow | banks[1].overflow),
                     self.rd_data.eq(Mux(hi_q, banks[1].rd_data, banks[0].rd_data))]  # fmt: skip
        m.d.sync += hi_q.eq(hi)
        host = (Mux(hi, 0, self.rd_addr), Mux(hi, self.rd_addr - banks[0].count, 0))
        for g, bank in enumerate(banks):
            m.d.comb += [
                bank.clear.eq(self.clear),
                bank.w.payload.eq(self.w.payload),
                bank.w.valid.eq(self.w.valid & (upper if g else ~upper)),
                bank.rd_addr.eq(getattr(self, f"r{g}_addr") | host[g]),
                getattr(self, f"r{g}_data").eq(bank.rd_data),
                getattr(self, f"r{g}_count").eq(bank.count),
            ]
        return m


class BufferReader(wiring.Component):
    """Reads one buffer in order as a stream of events, one per cycle, no bubbles.

    The buffer's read is registered, so the reader keeps the read address one step ahead:
    it presents address ``ptr + 1`` in a cycle whose event is taken and ``ptr`` otherwise,
    and the memory's output then always holds the event at ``ptr`` (read forwarding through
    the address, no skid buffer). ``start`` presents address 0; events are offered from the
    next cycle. Events of phases after ``last_phase`` are not offered (the engine must not
    see them, docs/architecture.md §10).

    Parameters
    ----------
    depth : int
        The buffer's depth.
    last_phase : int, optional
        The consumer's last phase K; ``None``: every phase.

    Ports
    -----
    start : In(1)
        Read from event 0 (the consumer's ``start``).
    stop : In(1)
        The consumer has taken its end marker: release the read port.
    count : In(range(depth + 1))
        The buffer's ``count``.
    addr : Out(range(depth))
        Read address; 0 while not reading (the buffer ORs its readers' addresses).
    data : In(32)
        The buffer's ``rd_data``.
    o : Out(stream.Signature(SpikeEvent))
        The events.
    exhausted : Out(1)
        Reading, and no event left to offer (the count reached, or a phase after K).
    """

    def __init__(self, depth: int, last_phase: int | None = None) -> None:
        self.depth, self.last_phase = depth, last_phase
        super().__init__(
            {
                "start": In(1),
                "stop": In(1),
                "count": In(range(depth + 1)),
                "addr": Out(range(max(depth, 2))),
                "data": In(32),
                "o": Out(stream.Signature(SpikeEvent)),
                "exhausted": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        active = Signal()  # reading: the memory's output is the event at ptr
        ptr = Signal(range(self.depth + 2))
        phase = self.data[20 : 20 + PHASE_BITS]
        more = ptr < self.count
        if self.last_phase is not None and self.last_phase < 2**PHASE_BITS - 1:
            more = more & (phase <= self.last_phase)
        take = Signal()
        m.d.comb += [
            self.o.payload.eq(self.data),
            self.o.valid.eq(active & more),
            self.exhausted.eq(active & ~more),
            take.eq(self.o.valid & self.o.ready),
        ]
        with m.If(self.start):
            m.d.comb += self.addr.eq(0)
            m.d.sync += [ptr.eq(0), active.eq(1)]
        with m.Elif(active):
            m.d.comb += self.addr.eq(Mux(take, ptr + 1, ptr))
            m.d.sync += ptr.eq(ptr + take)
            with m.If(self.stop):
                m.d.sync += active.eq(0)
        return m


class EventMerger(wiring.Component):
    """The engine's input stream from one or two readers (one per synapse group).

    Phase order, and within a phase group 0's events before group 1's; each event carries
    its reader's group bit (two groups only). When every reader is exhausted the merger
    sends the end marker once, then pulses ``finished`` (the readers' ``stop``).

    Ports
    -----
    start : In(1)
        A new layer run: the end marker may be sent again.
    i0, i1 : In(stream.Signature(SpikeEvent))
        The readers (``i1`` only with two groups).
    ex0, ex1 : In(1)
        The readers' ``exhausted``.
    o : Out(stream.Signature(SpikeEvent))
        To the engine's ``i_events``.
    finished : Out(1)
        The end marker is taken this cycle.
    """

    def __init__(self, groups: int) -> None:
        if groups not in (1, 2):
            raise ValueError(f"a layer has one or two synapse groups, got {groups!r}")
        self.groups = groups
        ports = {"start": In(1), "i0": In(stream.Signature(SpikeEvent)), "ex0": In(1)}
        if groups == 2:
            ports.update(i1=In(stream.Signature(SpikeEvent)), ex1=In(1))
        ports.update(o=Out(stream.Signature(SpikeEvent)), finished=Out(1))
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        sent = Signal()  # the end marker of this run was taken
        end_word = Const(1 << 28, 32)  # SpikeEvent with only `end` set
        if self.groups == 1:
            pick0, pick1, all_ex = self.i0.valid, Const(0, 1), self.ex0
        else:
            v0, v1 = self.i0.valid, self.i1.valid
            p0, p1 = self.i0.payload.phase, self.i1.payload.phase
            pick0 = v0 & (self.ex1 | (v1 & (p0 <= p1)))
            pick1 = v1 & (self.ex0 | (v0 & (p1 < p0)))
            all_ex = self.ex0 & self.ex1
        end = all_ex & ~sent
        with m.If(pick0):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(self.i0.payload),
                         self.i0.ready.eq(self.o.ready)]  # fmt: skip
        if self.groups == 2:
            with m.Elif(pick1):
                word = self.i1.payload.as_value() | (1 << 27)  # the group bit
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(word),
                             self.i1.ready.eq(self.o.ready)]  # fmt: skip
        with m.Elif(end):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(end_word)]
            m.d.comb += self.finished.eq(self.o.ready)
        with m.If(self.start):
            m.d.sync += sent.eq(0)
        with m.Elif(self.finished):
            m.d.sync += sent.eq(1)
        return m
