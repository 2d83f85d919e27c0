"""The accelerator's controller: runs the layer engines one after the other (layer mode)."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.engine import COUNTER_BITS


class Controller(wiring.Component):
    """Runs the engines one after the other (docs/architecture.md §14): hwsim's layer mode.

    Engine j's readers start one cycle before the engine (``pre``), so that its input queue
    holds the first event when the engine looks at it (an engine without an initialisation
    scan, max pooling, looks in its first cycle): on ``start`` for engine 0, and in the
    cycle engine j − 1's ``busy`` falls (its last DRAIN cycle, in which its output queue is
    found empty: its buffer is complete) for engine j. Engine j starts in the cycle the
    controller sees engine j − 1's ``done``.

    So a run costs the engines' cycles (hwsim's counts) plus 2 controller cycles per engine
    (its start cycle and its last DRAIN cycle, in which neither engine is busy) plus 1 (the
    first engine's start follows the run's ``start`` cycle, which is not counted, as an
    engine's own start cycle is not).

    Parameters
    ----------
    n : int
        Engines, in the order they run.

    Ports
    -----
    start : In(1)
        Pulse while idle: run an image.
    busy : Out(1)
        An image is running (from the cycle after ``start``).
    done : Out(1)
        High from the end of a run until the next ``start``.
    pre : Out(n)
        Engine j's readers' (and merger's) ``start``: one cycle.
    go : Out(n)
        Engine j's ``start`` (and its buffer's clear): one cycle, the cycle after ``pre``.
    run, fin : In(n)
        The engines' ``busy`` and ``done``.
    layer : Out(range(n))
        The engine running (or that ran last).
    cycles : Out(32)
        The cycles of the last (or current) run while ``busy``.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("the accelerator needs at least one engine")
        self.n = n
        super().__init__(
            {
                "start": In(1),
                "busy": Out(1),
                "done": Out(1),
                "pre": Out(n),
                "go": Out(n),
                "run": In(n),
                "fin": In(n),
                "layer": Out(range(max(n, 2))),
                "cycles": Out(COUNTER_BITS),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        n, cur = self.n, self.layer
        launch = Signal()  # this cycle starts engine `cur` (its readers started last cycle)
        run_q = Signal(n)  # the engines' busy, one cycle late
        m.d.sync += run_q.eq(self.run)
        fin, fall = Signal(), Signal()
        m.d.comb += [fin.eq(Array(self.fin[j] for j in range(n))[cur]),
                     fall.eq(Array((run_q[j] & ~self.run[j]) for j in range(n))[cur])]  # fmt: skip
        with m.If(self.busy):
            m.d.sync += [self.cycles.eq(self.cycles + 1), launch.eq(0)]
            with m.If(launch):
                m.d.comb += self.go.eq(1 << cur)
            with m.Elif(fin & (cur == n - 1)):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
            with m.Elif(fin):
                m.d.comb += self.go.eq(1 << (cur + 1))
                m.d.sync += cur.eq(cur + 1)
            with m.If(fall & (cur != n - 1)):
                m.d.comb += self.pre.eq(1 << (cur + 1))
        with m.Elif(self.start):
            m.d.comb += self.pre.eq(1)
            m.d.sync += [cur.eq(0), launch.eq(1), self.busy.eq(1), self.done.eq(0),
                         self.cycles.eq(0)]  # fmt: skip
        return m
