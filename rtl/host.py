"""The accelerator's host side: AXI4-Stream input, debug read port, register block (§14)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import INDEX_BITS, SpikeEvent

#: Width of the register block's and the debug port's addresses and data.
ADDR_BITS, WORD_BITS = 16, 32


class HostInput(wiring.Component):
    """The input events of an image through an AXI4-Stream slave, into the input buffer.

    One 32-bit event word per beat (rtl/events.py: index, phase, sign; phase order); a beat
    is taken whenever the accelerator is not busy. The first beat after ``tlast`` (or after
    a run) starts a new image at address 0; ``start`` without any beat since the last run
    runs an image without input events.

    Ports
    -----
    tdata, tvalid, tlast : In
        The AXI4-Stream beat.
    tready : Out(1)
        High while the accelerator is idle.
    busy, start : In(1)
        The controller's ``busy`` and the host's ``start``.
    w : Out(stream.Signature(SpikeEvent))
        Into the input layer's buffer.
    clear : Out(1)
        Empty the input buffer (a new image's first beat, or a start with no beat).
    """

    def __init__(self) -> None:
        super().__init__(
            {
                "tdata": In(32),
                "tvalid": In(1),
                "tlast": In(1),
                "tready": Out(1),
                "busy": In(1),
                "start": In(1),
                "w": Out(stream.Signature(SpikeEvent)),
                "clear": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        fresh = Signal(init=1)  # the next beat starts an image (at address 0)
        loaded = Signal()  # a beat since the last run
        beat = Signal()
        m.d.comb += [
            self.tready.eq(~self.busy),
            beat.eq(self.tvalid & self.tready),
            self.w.valid.eq(beat),
            self.w.payload.eq(self.tdata),
            self.clear.eq((fresh & beat) | (self.start & ~self.busy & ~loaded)),
        ]
        with m.If(self.busy):
            m.d.sync += [fresh.eq(1), loaded.eq(0)]
        with m.Elif(beat):
            m.d.sync += [fresh.eq(self.tlast), loaded.eq(1)]
        return m


class DebugPort(wiring.Component):
    """Reads back any layer's buffered events after an image.

    Parameters
    ----------
    buffers : list of (layer index, depth)
        The event buffers.

    Ports
    -----
    layer : In(8), addr : In(INDEX_BITS)
        The layer and the event (while the accelerator is idle).
    data : Out(32)
        The event word, the cycle after ``layer`` / ``addr`` (the buffer's registered read).
    count : Out(32)
        Events in the layer's buffer (0 for a layer without one).
    busy : In(1)
        While busy the port drives no buffer address (the readers own them).
    b<i>_addr, b<i>_data, b<i>_count
        To and from the buffer of layer i.
    """

    def __init__(self, buffers: list[tuple[int, int]]) -> None:
        self.buffers = buffers
        ports = {"layer": In(8), "addr": In(INDEX_BITS), "data": Out(32), "count": Out(32),
                 "busy": In(1)}  # fmt: skip
        for i, depth in buffers:
            ports.update({f"b{i}_addr": Out(range(max(depth, 2))), f"b{i}_data": In(32),
                          f"b{i}_count": In(range(depth + 1))})  # fmt: skip
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        sel = Signal.like(self.layer)  # the layer of the word on `data` (one cycle later)
        m.d.sync += sel.eq(self.layer)
        for i, _ in self.buffers:
            mine = ~self.busy & (self.layer == i)
            m.d.comb += getattr(self, f"b{i}_addr").eq(Mux(mine, self.addr, 0))
            with m.If(sel == i):
                m.d.comb += self.data.eq(getattr(self, f"b{i}_data"))
            with m.If(self.layer == i):
                m.d.comb += self.count.eq(getattr(self, f"b{i}_count"))
        return m


class RegisterBlock(wiring.Component):
    """Read-only 32-bit registers at fixed word addresses; one registered read per cycle.

    Parameters
    ----------
    addresses : list of int
        The word address of each register (``values[j]`` is read at ``addresses[j]``;
        other addresses read 0).

    Ports
    -----
    values : In(ArrayLayout(32, len(addresses)))
        The registers' contents.
    addr : In(16)
    data : Out(32)
        The register at the previous cycle's ``addr``.
    """

    def __init__(self, addresses: list[int]) -> None:
        if len(set(addresses)) != len(addresses):
            raise ValueError("register addresses must differ")
        self.addresses = list(addresses)
        super().__init__(
            {
                "values": In(data.ArrayLayout(WORD_BITS, len(addresses))),
                "addr": In(ADDR_BITS),
                "data": Out(WORD_BITS),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        with m.Switch(self.addr):
            for j, a in enumerate(self.addresses):
                with m.Case(a):
                    m.d.sync += self.data.eq(self.values[j])
            with m.Default():
                m.d.sync += self.data.eq(0)
        return m
