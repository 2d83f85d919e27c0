"""Max pooling in the output-stationary dataflow (docs/architecture.md §11, "Bucketing a
producer's events"): the §5 engine behind a phase sort.

An output-stationary producer emits its events tile by tile, not phase by phase; the §5
max-pooling engine takes a phase's events in any order, but phase after phase (the first
event of a window fires it). :class:`OsMaxPool` therefore loads its source's events into a
:class:`~rtl.os_sort.SortingBuckets` of one bucket per phase (T_src buckets, as
``hwsim.sim.bucketings`` counts a max-pooling reader), then :class:`SortedStream` streams the
sorted event memory out, one event per cycle, into :class:`~rtl.maxpool.MaxPoolEngine`. The
layer's cycles are the engine's, as in the other dataflow; the sort's are the producer's
(``hwsim.sim.bucket_cycles``), reported on ``sort_cycles``.
"""

from __future__ import annotations

from math import prod

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from rtl.engine import COUNTER_BITS, COUNTERS
from rtl.events import SpikeEvent, event_word
from rtl.maxpool import MaxPoolEngine, PoolImage
from rtl.os_sort import SortingBuckets


def pool_entry(neurons: int, phases: int) -> data.StructLayout:
    """An event as the phase sort keeps it: the whole source index in ``c`` (one pixel per
    bucket: the source is sorted as a flat one), an unused column ``x``, the sign and the
    phase (the stream out has no index run to tell it)."""
    return data.StructLayout({"c": range(max(neurons, 2)), "x": 1, "sign": 1,
                              "phase": range(max(phases, 2))})  # fmt: skip


#: Bit positions of ``sign`` and ``end`` in a :class:`~rtl.events.SpikeEvent` word.
SIGN_BIT = data.Layout.cast(SpikeEvent)["sign"].offset
END_BIT = data.Layout.cast(SpikeEvent)["end"].offset


class SortedStream(wiring.Component):
    """The events of a :class:`~rtl.os_sort.SortingBuckets` event memory, addresses
    0 … count − 1 (bucket order), out as a stream, then the end marker: one per cycle while
    ``o`` takes them. The memory's registered read is the output register: its address is
    held while ``o`` stalls.

    ``start`` (one cycle; ``count`` valid from then on) begins a pass; the first item is
    valid two cycles later, with ``first`` high in its cycle; ``finished`` is high in the
    cycle the end marker is taken.

    Ports
    -----
    start : In(1); count : In(range(capacity + 1)); first, finished : Out(1)
    ev_addr : Out(range(capacity)); ev : In(entry)
    o : Out(stream.Signature(SpikeEvent))
    """

    def __init__(self, capacity: int, entry: data.StructLayout) -> None:
        self.capacity = max(capacity, 1)
        super().__init__({
            "start": In(1), "count": In(range(self.capacity + 1)),
            "first": Out(1), "finished": Out(1),
            "ev_addr": Out(range(max(self.capacity, 2))), "ev": In(entry),
            "o": Out(stream.Signature(SpikeEvent)),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        nxt = Signal(range(self.capacity + 1))  # the next address to read
        full, is_end, seen = Signal(), Signal(), Signal()  # the output register's item
        free = ~full | self.o.ready  # the output register is free for the next item
        m.d.comb += [self.o.valid.eq(full), self.first.eq(full & ~seen),
                     self.ev_addr.eq(Mux(free, nxt, nxt - 1))]  # fmt: skip
        # one assignment of the whole word (see rtl/engine.py: no per-field drivers)
        word = event_word(self.ev.c, self.ev.phase) | (self.ev.sign << SIGN_BIT)
        m.d.comb += self.o.payload.eq(Mux(is_end, 1 << END_BIT, word))
        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [nxt.eq(0), full.eq(0), is_end.eq(0), seen.eq(0)]
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(full):
                    m.d.sync += seen.eq(1)
                with m.If(full & is_end & self.o.ready):  # the end marker is taken
                    m.d.comb += self.finished.eq(1)
                    m.d.sync += full.eq(0)
                    m.next = "IDLE"
                with m.Elif(free & (nxt < self.count)):  # the read of the next event
                    m.d.sync += [nxt.eq(nxt + 1), full.eq(1)]
                with m.Elif(free):  # every event read: the end marker follows, no gap
                    m.d.sync += [full.eq(1), is_end.eq(1)]
        return m


class OsMaxPool(wiring.Component):
    """A max-pooling layer in the output-stationary dataflow (module docstring): its
    source's events, in any order, sorted by phase, then through the §5 engine.

    After ``start`` the stream ``i_events`` is loaded into the sort (its end marker is
    taken once the sort is over); then the sorted events stream into the engine, whose
    ``start`` comes with the first of them, so the engine's cycles are those of
    :class:`~rtl.maxpool.MaxPoolEngine` fed one event per cycle (the layer's cycles, as
    hwsim counts them). ``done`` rises when the engine is done and stays high until the next
    ``start``.

    Parameters
    ----------
    arch : ArchConfig
        As :class:`~rtl.maxpool.MaxPoolEngine`'s.
    image : PoolImage
        The layer.

    Ports
    -----
    Those of :class:`~rtl.maxpool.MaxPoolEngine` (start, busy, done, i_events, o_spikes, the
    counters); ``error``: the sort dropped events (more than one per source neuron);
    ``sort_cycles``: the last sort's cycles (⌈T_src / k⌉ + E + 3, ``hwsim.sim.bucket_cycles``).

    ``linked=True`` (the layer of an accelerator, :class:`rtl.os_accel.OsAccelerator`): the
    sort takes its producer's events and end marker whenever ``hold`` is high, while the
    layer is idle; ``hold`` low (one cycle) empties it for the next image. ``start`` then
    streams the sorted events out at once (the sort is over: the accelerator starts the layer
    after its producer's end marker was taken). ``clearing``: the sort clears its counters
    (after a reset).
    """

    def __init__(self, arch: ArchConfig, image: PoolImage, linked: bool = False) -> None:
        self.arch, self.image, self.linked = arch, image, linked
        self.engine = MaxPoolEngine(arch, image)  # (refuses what the §5 engine refuses)
        self.capacity = prod(image.src_shape)  # each source neuron fires at most once
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "sort_cycles": Out(32),
            "i_events": In(stream.Signature(SpikeEvent)),
            "o_spikes": Out(stream.Signature(SpikeEvent)),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
            **({"hold": In(1), "clearing": Out(1)} if linked else {}),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        entry = pool_entry(self.capacity, self.image.t_src)
        m.submodules.sort = sort = SortingBuckets(self.capacity, self.image.t_src,
                                                  (self.capacity, 1, 1), entry)  # fmt: skip
        m.submodules.out = out = SortedStream(self.capacity, entry)
        m.submodules.engine = eng = self.engine
        wiring.connect(m, out.o, eng.i_events)
        wiring.connect(m, eng.o_spikes, wiring.flipped(self.o_spikes))
        m.d.comb += [sort.ev_addr.eq(out.ev_addr), out.ev.eq(sort.ev), out.count.eq(sort.count),
                     sort.i.payload.eq(self.i_events.payload), eng.start.eq(out.first),
                     self.busy.eq(eng.busy), self.error.eq(sort.error),
                     *(getattr(self, n).eq(getattr(eng, n)) for n in COUNTERS)]  # fmt: skip
        begun = Signal()  # the engine has been started on this image
        if self.linked:  # the producer fills the sort; the layer streams it out
            m.d.comb += [
                sort.load.eq(self.hold),
                sort.i.valid.eq(self.i_events.valid),
                self.i_events.ready.eq(sort.i.ready),
                self.clearing.eq(sort.clearing),
            ]
        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [self.done.eq(0), begun.eq(0)]
                m.next = "LOAD"
                if self.linked:
                    m.d.comb += out.start.eq(1)
                    m.d.sync += self.sort_cycles.eq(sort.sort_cycles)
                    m.next = "POOL"
            with m.State("LOAD"):  # the stream into the sort; its end marker after the sort
                if not self.linked:
                    m.d.comb += [sort.load.eq(1), sort.i.valid.eq(self.i_events.valid),
                                 self.i_events.ready.eq(sort.i.ready)]  # fmt: skip
                with m.If(self.i_events.valid & sort.i.ready & self.i_events.payload.end):
                    m.d.comb += out.start.eq(1)
                    m.d.sync += self.sort_cycles.eq(sort.sort_cycles)
                    m.next = "POOL"
            with m.State("POOL"):  # the sorted events through the engine (count held)
                if not self.linked:
                    m.d.comb += sort.load.eq(1)
                with m.If(out.first):
                    m.d.sync += begun.eq(1)
                with m.If(begun & eng.done):  # (done is cleared the cycle after its start)
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m
