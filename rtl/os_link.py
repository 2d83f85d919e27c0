"""The links of the output-stationary accelerator (docs/architecture.md §14, "The
output-stationary accelerator"): a producer's events fanned out to its consumers' sorts, the
sequencing of the layers, the host's input stream.

In this dataflow a layer's event buffer is its consumer's counting sort
(:class:`rtl.os_sort.SortingBuckets`, inside :class:`rtl.OsEngine` and
:class:`rtl.os_pool.OsMaxPool`): a producer's spikes go straight from its output queue into
every sort that reads them (:class:`EventFork`), one event per cycle, while it runs; when it
is done, the :class:`OsSequencer` sends its end marker, which each sort takes once it has
sorted, and then starts the next layer.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.engine import COUNTER_BITS
from rtl.events import SpikeEvent


class EventFork(wiring.Component):
    """One stream into ``len(groups)`` consumers, each item to every one of them, with the
    group bit of consumer j set to ``groups[j]`` (its synapse group in the consumer).

    An item leaves when every consumer has taken it (each one's handshake remembered, so
    that consumers that take it in different cycles each take it once). The sorts take an
    event in every cycle while they collect, so events pass one per cycle; the end marker
    waits for the slowest sort.

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
    o<j> : Out(stream.Signature(SpikeEvent)), j < len(groups)
    """

    def __init__(self, groups: tuple[int, ...]) -> None:
        if not groups or any(g not in (0, 1) for g in groups):
            raise ValueError(f"a fork needs one or more consumers of group 0 or 1, got {groups}")
        self.groups = tuple(groups)
        ports = {"i": In(stream.Signature(SpikeEvent))}
        ports.update({f"o{j}": Out(stream.Signature(SpikeEvent)) for j in range(len(groups))})
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        n = len(self.groups)
        took = Signal(n)  # consumer j has taken the current item
        outs = [getattr(self, f"o{j}") for j in range(n)]
        left = Cat(took[j] | o.ready for j, o in enumerate(outs))
        m.d.comb += self.i.ready.eq(left.all())
        for j, (o, g) in enumerate(zip(outs, self.groups, strict=True)):
            m.d.comb += [o.payload.eq(self.i.payload), o.payload.group.eq(g),
                         o.valid.eq(self.i.valid & ~took[j])]  # fmt: skip
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += took.eq(0)
        with m.Elif(self.i.valid):
            m.d.sync += took.eq(left)
        return m


class OsSequencer(wiring.Component):
    """Runs the engines one after the other (layer mode) and closes each producer's stream.

    Engine j is started (``go``, one cycle); when it is done and it has consumers
    (``sealed`` is wired), its end marker is offered (``eos``) until every consumer's sort
    has taken it (``sealed``: the sorts are over), and engine j + 1 is started in the next
    cycle. So a run costs the engines' own cycles, each producer's longest sort
    (``hwsim.sim.bucket_cycles``) and :data:`hwsim.sim.OS_CONTROLLER_CYCLES_PER_ENGINE`
    cycles per engine (its ``go`` cycle, its LOAD cycle, the cycle its ``done`` is seen, the
    cycle the end marker is presented to the sorts), plus one per run.

    Parameters
    ----------
    n : int
        Engines, in the order they run; the last has no consumers.

    Ports
    -----
    start : In(1); busy, done : Out(1)
        As :class:`rtl.accel_ctrl.Controller`'s.
    go : Out(n); fin : In(n)
        Engine j's ``start`` and ``done``.
    eos : Out(n); sealed : In(n)
        Offer engine j's end marker to its consumers; they have all taken it.
    layer : Out(range(n)); cycles : Out(32)
        The engine running; the cycles of the last (or current) run.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("the accelerator needs at least one engine")
        self.n = n
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "go": Out(n), "fin": In(n), "eos": Out(n), "sealed": In(n),
            "layer": Out(range(max(n, 2))), "cycles": Out(COUNTER_BITS),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        n, cur = self.n, self.layer
        fin = Array(self.fin[j] for j in range(n))[cur]
        sealed = Array(self.sealed[j] for j in range(n))[cur]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [cur.eq(0), self.busy.eq(1), self.done.eq(0), self.cycles.eq(0)]
                m.next = "GO"
            with m.State("GO"):
                m.d.comb += self.go.eq(1 << cur)
                m.next = "RUN"
            with m.State("RUN"), m.If(fin):
                m.next = "SEAL"
                with m.If(cur == n - 1):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
            with m.State("SEAL"):
                m.d.comb += self.eos.eq(1 << cur)
                with m.If(sealed):
                    m.d.sync += cur.eq(cur + 1)
                    m.next = "GO"
        return m


class OsHostInput(wiring.Component):
    """The input events of an image through an AXI4-Stream slave, into the input layer's
    consumers' sorts (and its trace buffer), sorted before the run.

    The first beat after a run, after ``tlast`` or after a reset starts a new image: two
    cycles with ``tready`` low, in the second of which ``clear`` empties every sort and the
    input's trace buffer (``clear`` comes from a state, never combinationally from the
    host's inputs, so that clock gates can sample it); then one event per beat while the
    sorts take them (``tready`` follows ``w``'s ``ready``). After ``tlast`` the end marker
    follows, and the sorts sort. ``start`` while idle requests a run: it begins (``run``,
    one cycle) once the input is sorted and no sort is clearing its counters (``quiet``:
    after a reset every sort clears them, and a layer's sort still clearing when its
    producer runs would hold the producer back); a ``start`` before ``tlast`` ends the image
    there, and a ``start`` with no beat since the last run runs an image without input
    events (the sorts are emptied and sealed first).

    Ports
    -----
    tdata, tvalid, tlast : In; tready : Out(1)
        The AXI4-Stream beat.
    busy, start, quiet : In(1)
        The sequencer's ``busy``, the host's ``start``; no sort is clearing its counters.
    w : Out(stream.Signature(SpikeEvent))
        Into the input's :class:`EventFork`.
    clear : Out(1)
        Empty the sorts (their ``hold`` low) and the input's trace buffer.
    run : Out(1)
        Start the sequencer.
    """

    def __init__(self) -> None:
        super().__init__({
            "tdata": In(32), "tvalid": In(1), "tlast": In(1), "tready": Out(1),
            "busy": In(1), "start": In(1), "quiet": In(1),
            "w": Out(stream.Signature(SpikeEvent)), "clear": Out(1), "run": Out(1),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        want = Signal()  # a run was requested
        idle = ~self.busy
        with m.If(idle & self.start):
            m.d.sync += want.eq(1)
        empty = Signal()  # the image being started has no beat (a start alone)
        with m.FSM():
            with m.State("FRESH"), m.If(idle & (self.tvalid | self.start | want)):
                m.d.sync += empty.eq(~self.tvalid)  # the next beat starts an image
                m.next = "CLEAR"
            with m.State("CLEAR"):  # (a state, not the beat: the clock gates sample it)
                m.d.comb += self.clear.eq(1)
                m.next = "LOAD"
                with m.If(empty):  # a run with no input events
                    m.next = "SEAL"
            with m.State("LOAD"):
                with m.If(self.start | want):
                    m.next = "SEAL"
                with m.Else():
                    m.d.comb += [self.tready.eq(self.w.ready), self.w.valid.eq(self.tvalid),
                                 self.w.payload.eq(self.tdata)]  # fmt: skip
                    with m.If(self.tvalid & self.w.ready & self.tlast):
                        m.next = "SEAL"
            with m.State("SEAL"):  # the end marker, taken once every sort is over
                m.d.comb += [self.w.valid.eq(1), self.w.payload.end.eq(1)]
                with m.If(self.w.ready):
                    m.next = "SORTED"
            with m.State("SORTED"):
                with m.If(idle & (self.start | want) & self.quiet):
                    m.d.comb += self.run.eq(1)
                    m.d.sync += want.eq(0)
                    m.next = "FRESH"
                with m.Elif(idle & self.tvalid & ~self.start & ~want):  # a new image replaces it
                    m.d.sync += empty.eq(0)
                    m.next = "CLEAR"
        return m
