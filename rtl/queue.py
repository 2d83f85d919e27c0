"""The output spike queue: a P-wide push port, a 1-wide valid/ready pop stream."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import SpikeEvent


class OutputQueue(wiring.Component):
    """FIFO of ``depth`` events (docs/architecture.md §4, "Output queue and stalls").

    A push of the lanes in ``push_mask`` is accepted in a cycle that starts with
    level + popcount(mask) ≤ depth (``push_ok``: a registered level, so a pop in the same
    cycle frees space only for the next cycle). The events are stored in lane order. The
    head pops whenever the stream's ``ready`` is high.

    Parameters
    ----------
    lanes : int
        P, the push width.
    depth : int
        D_out ≥ P.

    Ports
    -----
    push_data : In(ArrayLayout(SpikeEvent, P))
        One event per lane (P · 32 bits).
    push_mask : In(P)
        Lanes that carry an event.
    push_en : In(1)
        Push this cycle if ``push_ok``.
    push_ok : Out(1)
        level + popcount(push_mask) ≤ depth.
    level : Out(bits_for(depth))
        Occupancy at the start of the cycle.
    o : Out(stream.Signature(SpikeEvent))
        The queue head (32-bit payload, valid, ready in).
    """

    def __init__(self, lanes: int, depth: int) -> None:
        if depth < lanes:
            raise ValueError(f"depth must be at least lanes ({lanes}), got {depth!r}")
        self.lanes, self.depth = lanes, depth
        super().__init__(
            {
                "push_data": In(data.ArrayLayout(SpikeEvent, lanes)),
                "push_mask": In(lanes),
                "push_en": In(1),
                "push_ok": Out(1),
                "level": Out(range(depth + 1)),
                "o": Out(stream.Signature(SpikeEvent)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.depth
        # a register file with P write ports: the simulators execute its indexed writes
        # natively (a decoded Array of D slots grows as P · D and runs ~20× slower in Icarus);
        # D = 1 gets two slots and one-bit pointers (a zero-width address or pointer is not
        # legal Verilog), of which only slot 0 is used
        m.submodules.store = store = memory.Memory(shape=SpikeEvent, depth=max(d, 2), init=[])
        head = store.read_port(domain="comb")
        rp, wp = Signal(range(max(d, 2))), Signal(range(max(d, 2)))
        # prefix[l]: events in lanes below l, i.e. lane l's offset from the write pointer
        # (each a named wire: an expression used twice is emitted twice, and Icarus then
        # re-evaluates O(P²) adders whenever a mask bit settles)
        prefix = [Signal(range(self.lanes + 1), name=f"prefix{lane}") for lane in
                  range(self.lanes + 1)]  # fmt: skip
        m.d.comb += prefix[0].eq(0)
        for lane in range(self.lanes):
            m.d.comb += prefix[lane + 1].eq(prefix[lane] + self.push_mask[lane])
        count = prefix[-1]
        m.d.comb += self.push_ok.eq(self.level + count <= d)
        push, pop = Signal(), Signal()
        m.d.comb += [push.eq(self.push_en & self.push_ok), pop.eq(self.o.valid & self.o.ready)]
        for lane in range(self.lanes):
            # wp + offset < 2·D: one conditional subtraction wraps it
            slot = Signal(range(2 * d), name=f"slot{lane}")
            m.d.comb += slot.eq(wp + prefix[lane])
            port = store.write_port()
            m.d.comb += [
                port.addr.eq(Mux(slot >= d, slot - d, slot)),
                port.data.eq(self.push_data[lane]),
                port.en.eq(push & self.push_mask[lane]),
            ]
        m.d.comb += [
            head.addr.eq(rp),
            self.o.valid.eq(self.level != 0),
            self.o.payload.eq(head.data),
        ]
        with m.If(push):
            nxt = Signal(range(2 * d))
            m.d.comb += nxt.eq(wp + count)
            m.d.sync += wp.eq(Mux(nxt >= d, nxt - d, nxt))
        with m.If(pop):
            m.d.sync += rp.eq(Mux(rp == d - 1, 0, rp + 1))
        m.d.sync += self.level.eq(self.level + Mux(push, count, 0) - pop)
        return m


class InputQueue(wiring.Component):
    """The input spike queue: a FIFO of ``depth`` events between the event buffer and the
    issue stage (docs/architecture.md §1). Valid/ready on both sides; the head is shown as
    soon as it is stored (first word fall-through), so the issue stage can peek at it.

    Parameters
    ----------
    depth : int
        D_in ≥ 1.

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
        From the event buffer; ``ready`` low while the queue is full.
    o : Out(stream.Signature(SpikeEvent))
        To the issue stage.
    """

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"the input queue needs a depth ≥ 1, got {depth!r}")
        self.depth = depth
        super().__init__(
            {"i": In(stream.Signature(SpikeEvent)), "o": Out(stream.Signature(SpikeEvent))}
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFO(width=32, depth=self.depth)
        m.d.comb += [
            q.w_data.eq(self.i.payload),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
            self.o.payload.eq(q.r_data),
            self.o.valid.eq(q.r_rdy),
            q.r_en.eq(self.o.ready),
        ]
        return m
