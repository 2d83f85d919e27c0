"""The max-pooling engine: test-and-set of a fired flag per window (docs/architecture.md §5)."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from converter.model import SnnModel
from rtl.engine import COUNTER_BITS, COUNTERS, _chw, countdown, tap_mask, window_taps
from rtl.events import INDEX_BITS, PHASE_BITS, SpikeEvent, event_word
from rtl.queue import InputQueue, OutputQueue


@dataclass(frozen=True)
class PoolImage:
    """A max-pooling layer as the engine holds it: shapes and window (no memories)."""

    src_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    t_src: int

    def has_events_without_fanout(self) -> bool:
        """Whether a source pixel belongs to no window (floor-mode borders, kernel < stride):
        its events cost their I issue cycles only (docs/architecture.md §5)."""
        _, h, w = self.src_shape
        return any(
            not any(tap_mask(y, x, self.kernel, self.stride, self.padding, self.out_shape))
            for y in range(h)
            for x in range(w)
        )

    @property
    def n_out(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    @classmethod
    def from_snn(cls, snn: SnnModel, index: int) -> PoolImage:
        lay = snn.layers[index]
        if lay.kind != "maxpool":
            raise ValueError(f"layer {index} ({lay.name}) is a {lay.kind} layer, not maxpool")
        src = snn.layers[lay.source]
        return cls(
            _chw(src.shape), _chw(lay.shape), tuple(lay.kernel), tuple(lay.stride),
            tuple(lay.padding), src.T,
        )  # fmt: skip


class PoolWindows(wiring.Component):
    """The max-pooling engine's address generator: the windows a source event belongs to,
    one per cycle, in tap order (ky-major, then kx: docs/architecture.md §3).

    ``load`` latches the source pixel and channel of ``index`` and its valid taps; ``window``
    then names the first of them while ``valid`` is high, and each ``next`` steps to the
    following one. An event in no window (floor-mode borders, kernel < stride) leaves
    ``valid`` low after its ``load``.

    Parameters
    ----------
    image : PoolImage
        The layer's shapes, kernel, stride and padding.

    Ports
    -----
    index : In(20)
        Source neuron (C·H·W order) of the event at the head of the input stream.
    load : In(1)
        Latch ``index``'s windows (the event's issue cycle); overrides ``next``.
    next : In(1)
        The current window is done: step to the next one (or to none).
    valid : Out(1)
        A window of the latched event is pending.
    window : Out(range(n_out))
        The pending window's output neuron (C·H·W order of the pooled layer).
    """

    def __init__(self, image: PoolImage) -> None:
        self.image = image
        super().__init__(
            {
                "index": In(INDEX_BITS),
                "load": In(1),
                "next": In(1),
                "valid": Out(1),
                "window": Out(range(max(image.n_out, 2))),
            }
        )

    def _taps(self, y, x) -> list:
        img = self.image
        return window_taps(y, x, img.src_shape, img.out_shape, img.kernel, img.stride,
                           img.padding)  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        c_in, h_in, w_in = self.image.src_shape
        _, h_out, w_out = self.image.out_shape
        n_taps = prod(self.image.kernel)
        hw = h_in * w_in
        rem = self.index % hw
        in_y, in_x = rem // w_in, rem % w_in
        in_mask = Cat(Const(1, 1) if ok is True else ok for ok, _, _ in self._taps(in_y, in_x))
        ev_c = Signal(range(max(c_in, 2)))
        ev_y, ev_x = Signal(range(max(h_in, 2))), Signal(range(max(w_in, 2)))
        todo = Signal(n_taps)  # the taps (windows) of the latched event not yet visited
        tap = Signal(range(max(n_taps, 2)))  # the first of them: a priority encoder
        for t in reversed(range(n_taps)):
            with m.If(todo[t]):
                m.d.comb += tap.eq(t)
        geo = self._taps(ev_y, ev_x)
        m.d.comb += [
            self.valid.eq(todo != 0),
            self.window.eq((ev_c * h_out + Array(g[1] for g in geo)[tap]) * w_out
                           + Array(g[2] for g in geo)[tap]),
        ]  # fmt: skip
        with m.If(self.load):
            m.d.sync += [ev_c.eq(self.index // hw), ev_y.eq(in_y), ev_x.eq(in_x),
                         todo.eq(in_mask)]  # fmt: skip
        with m.Elif(self.next):
            m.d.sync += todo.eq(todo & ~(1 << tap))
        return m


class MaxPoolEngine(wiring.Component):
    """One max-pooling layer: the first event of a window fires it, at the same phase.

    Per source event: I issue cycles, then one cycle per window that holds the event
    (:class:`PoolWindows`, taps ky-major as §3): test the window's fired flag; if clear, set
    it and push the event (window, k) into the output queue, waiting while the queue cannot
    take it. An event in no window (floor-mode borders, kernel < stride) costs its I issue
    cycles only, as hwsim counts it: the state that tests windows also issues the next event
    once none is pending, so with I = 1 the cycle after such an event issues the next one, or
    (the end marker at the head) is the drain's first cycle. No scans, no potentials, no
    arithmetic; the layer ends when the end marker has been read and the output queue is
    empty. The flags are a register of one bit per window, cleared by ``start`` (max-pooling
    layers are small).

    Parameters
    ----------
    arch : ArchConfig
        I = ``event_issue_cycles`` (≥ 1), D_out = ``output_queue_depth``, D_in.
    image : PoolImage
        The layer.

    Ports
    -----
    Those of :class:`rtl.LayerEngine` (start, busy, done, i_events, o_spikes and the 32-bit
    counters); ``compares`` counts flag tests, ``adds`` and ``multiplies`` stay 0.
    """

    def __init__(self, arch: ArchConfig, image: PoolImage) -> None:
        if image.n_out > 2**INDEX_BITS or prod(image.src_shape) > 2**INDEX_BITS:
            raise ValueError(f"layers are limited to 2^{INDEX_BITS} neurons")
        if image.t_src > 2**PHASE_BITS:
            raise ValueError(f"phases are limited to 2^{PHASE_BITS}, got {image.t_src!r}")
        if arch.event_issue_cycles < 1:
            raise ValueError(
                f"the rtl engine needs event_issue_cycles ≥ 1, got {arch.event_issue_cycles!r}"
            )
        self.arch, self.image = arch, image
        super().__init__(
            {
                "start": In(1),
                "busy": Out(1),
                "done": Out(1),
                "i_events": In(stream.Signature(SpikeEvent)),
                "o_spikes": Out(stream.Signature(SpikeEvent)),
                **{name: Out(COUNTER_BITS) for name in COUNTERS},
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        issue = self.arch.event_issue_cycles
        m.submodules.oq = oq = OutputQueue(1, self.arch.output_queue_depth)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))
        # the input queue (D_in events) between the event buffer and the issue stage
        m.submodules.iq = iq = InputQueue(self.arch.input_queue_depth)
        wiring.connect(m, wiring.flipped(self.i_events), iq.i)
        src, head = iq.o, iq.o.payload
        m.submodules.walk = walk = PoolWindows(self.image)
        m.d.comb += walk.index.eq(head.index)
        ev_k = Signal.like(head.phase)
        wait = Signal(range(issue + 1))
        flags = Signal(self.image.n_out)  # one per window: max-pooling layers are small

        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [flags.eq(0), self.done.eq(0)]
                m.d.sync += [getattr(self, name).eq(0) for name in COUNTERS]
                m.next = "EVENTS"
            with m.State("EVENTS"):  # a window's cycle, else an issue cycle, else the drain
                with m.If(walk.valid):
                    self._test_window(m, walk, oq, flags, ev_k)
                with m.Elif(src.valid & head.end):
                    self._drain(m, src, oq)  # no event left: this cycle is the drain's first
                with m.Elif(src.valid):  # issue: pop the event, latch its windows
                    m.d.comb += [self.busy.eq(1), src.ready.eq(1), walk.load.eq(1)]
                    m.d.sync += [ev_k.eq(head.phase), self.spikes_in.eq(self.spikes_in + 1)]
                    if issue > 1:
                        m.d.sync += wait.eq(issue - 2)
                        m.next = "ISSUE_WAIT"
                with m.Else():  # the input stream ran dry: not in hwsim's count
                    m.d.comb += self.busy.eq(1)
            with countdown(m, "ISSUE_WAIT", wait, self.busy):
                m.next = "EVENTS"
            with m.State("DRAIN"):
                self._drain(m, src, oq)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m

    def _test_window(self, m: Module, walk: PoolWindows, oq: OutputQueue, flags, ev_k) -> None:
        """One window's cycle: test (and set) its fired flag, push the event if newly set."""
        is_set = flags.bit_select(walk.window, 1)
        # one assignment of the whole event (see rtl/engine.py: no per-field drivers)
        m.d.comb += [self.busy.eq(1), oq.push_data.eq(event_word(walk.window, ev_k)),
                     oq.push_mask.eq(1), oq.push_en.eq(~is_set)]  # fmt: skip
        with m.If(is_set | oq.push_ok):  # tested: on to the next window (or event)
            m.d.comb += walk.next.eq(1)
            m.d.sync += self.compares.eq(self.compares + 1)
        with m.If(~is_set & oq.push_ok):
            m.d.sync += [flags.bit_select(walk.window, 1).eq(1),
                         self.spikes_out.eq(self.spikes_out + 1)]  # fmt: skip
        with m.If(~is_set & ~oq.push_ok):  # the queue cannot take the spike yet
            m.d.sync += self.stalled.eq(self.stalled + 1)

    def _drain(self, m: Module, src: stream.Interface, oq: OutputQueue) -> None:
        """A drain cycle: busy while the output queue holds spikes, then (not counted) the
        end marker is consumed and the layer is done."""
        with m.If(oq.level != 0):
            m.d.comb += self.busy.eq(1)
            m.d.sync += self.stalled.eq(self.stalled + 1)
            m.next = "DRAIN"
        with m.Else():
            m.d.comb += src.ready.eq(1)  # consume the end marker
            m.d.sync += self.done.eq(1)
            m.next = "IDLE"
