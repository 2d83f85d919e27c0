"""The max-pooling engine: test-and-set of a fired flag per window (docs/architecture.md §5)."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from converter.model import SnnModel
from rtl.engine import COUNTER_BITS, COUNTERS, _chw, countdown, tap_mask, window_taps
from rtl.events import INDEX_BITS, SpikeEvent, event_word
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

    def check_taps(self) -> None:
        """An event in no window would need a two-deep look-ahead on the input stream to cost
        only its issue cycles, as hwsim counts it; such layers are refused (the layer engine
        handles such events, see :meth:`rtl.engine.LayerImage.has_events_without_fanout`)."""
        _, h, w = self.src_shape
        for y in range(h):
            for x in range(w):
                if not any(tap_mask(y, x, self.kernel, self.stride, self.padding,
                                    self.out_shape)):  # fmt: skip
                    raise ValueError(
                        f"source pixel ({y}, {x}) reaches no output pixel: the rtl engine "
                        "does not yet support events without fan-out"
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
        image = cls(
            _chw(src.shape), _chw(lay.shape), tuple(lay.kernel), tuple(lay.stride),
            tuple(lay.padding), src.T,
        )  # fmt: skip
        image.check_taps()
        return image


class MaxPoolEngine(wiring.Component):
    """One max-pooling layer: the first event of a window fires it, at the same phase.

    Per source event: I issue cycles, then one cycle per window that holds the event (taps
    walked ky-major, as §3): test the window's fired flag; if clear, set it and push the
    event (window, k) into the output queue, waiting while the queue cannot take it. No
    scans, no potentials, no arithmetic; the layer ends when the end marker has been read
    and the output queue is empty. The flags are a register of one bit per window, cleared
    by ``start`` (max-pooling layers are small).

    Ports are those of :class:`rtl.LayerEngine` (start, busy, done, i_events, o_spikes and
    the counters; ``compares`` counts flag tests, ``adds`` and ``multiplies`` stay 0).
    """

    def __init__(self, arch: ArchConfig, image: PoolImage) -> None:
        if image.n_out > 2**INDEX_BITS:
            raise ValueError(f"layers are limited to 2^{INDEX_BITS} neurons")
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
        arch, img = self.arch, self.image
        c_in, h_in, w_in = img.src_shape
        _, h_out, w_out = img.out_shape
        kh, kw = img.kernel
        n_taps = kh * kw
        m.submodules.oq = oq = OutputQueue(1, arch.output_queue_depth)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))

        flags = Signal(img.n_out)
        # the input queue (D_in events) between the event buffer and the issue stage
        m.submodules.iq = iq = InputQueue(arch.input_queue_depth)
        wiring.connect(m, wiring.flipped(self.i_events), iq.i)
        src = iq.o
        head = src.payload
        ev_c = Signal(range(max(c_in, 2)))
        ev_y, ev_x = Signal(range(max(h_in, 2))), Signal(range(max(w_in, 2)))
        ev_k = Signal.like(head.phase)
        todo = Signal(n_taps)
        wait = Signal(range(arch.event_issue_cycles + 1))

        def geometry(y, x):
            return window_taps(y, x, img.src_shape, img.out_shape, img.kernel, img.stride,
                               img.padding)  # fmt: skip

        hw = h_in * w_in
        head_rem = head.index % hw
        head_y, head_x = head_rem // w_in, head_rem % w_in
        head_mask = Cat(Const(1, 1) if ok is True else ok for ok, _, _ in
                        geometry(head_y, head_x))  # fmt: skip
        tap = Signal(range(max(n_taps, 2)))
        for t in reversed(range(n_taps)):
            with m.If(todo[t]):
                m.d.comb += tap.eq(t)
        geo = geometry(ev_y, ev_x)
        window = Signal(range(max(img.n_out, 2)))  # C·H·W index of the window
        m.d.comb += window.eq(
            (ev_c * h_out + Array(g[1] for g in geo)[tap]) * w_out + Array(g[2] for g in geo)[tap]
        )
        is_set = Signal()
        m.d.comb += [
            is_set.eq(flags.bit_select(window, 1)),
            # one assignment of the whole event (see rtl/engine.py: no per-field drivers)
            oq.push_data.eq(event_word(window, ev_k)),
            oq.push_mask.eq(1),
        ]

        def next_event() -> None:
            """Issue the next event, or (a peek at the head) end the layer without a cycle."""
            with m.If(src.valid & head.end):
                m.next = "DRAIN"
            with m.Else():
                m.next = "NEXT"

        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [flags.eq(0), self.done.eq(0)]
                m.d.sync += [getattr(self, name).eq(0) for name in COUNTERS]
                next_event()
            with m.State("NEXT"):  # issue: pop the next event (or wait for the stream)
                m.d.comb += self.busy.eq(1)
                with m.If(src.valid & head.end):  # only after the stream ran dry
                    m.next = "DRAIN"
                with m.Elif(src.valid):
                    m.d.comb += src.ready.eq(1)
                    m.d.sync += [
                        ev_c.eq(head.index // hw), ev_y.eq(head_y), ev_x.eq(head_x),
                        ev_k.eq(head.phase), todo.eq(head_mask),
                        self.spikes_in.eq(self.spikes_in + 1),
                    ]  # fmt: skip
                    if arch.event_issue_cycles > 1:
                        m.d.sync += wait.eq(arch.event_issue_cycles - 2)
                        m.next = "ISSUE_WAIT"
                    else:
                        m.next = "TEST"
            with countdown(m, "ISSUE_WAIT", wait, self.busy):
                m.next = "TEST"
            with m.State("TEST"):  # one window: test (and set) its flag, push if newly set
                m.d.comb += self.busy.eq(1)
                done_tap = Signal()
                with m.If(is_set):
                    m.d.comb += done_tap.eq(1)
                with m.Else():
                    m.d.comb += oq.push_en.eq(1)
                    with m.If(oq.push_ok):
                        m.d.comb += done_tap.eq(1)
                        m.d.sync += [
                            flags.bit_select(window, 1).eq(1),
                            self.spikes_out.eq(self.spikes_out + 1),
                        ]
                    with m.Else():
                        m.d.sync += self.stalled.eq(self.stalled + 1)
                with m.If(done_tap):
                    rest = todo & ~(1 << tap)
                    m.d.sync += [todo.eq(rest), self.compares.eq(self.compares + 1)]
                    with m.If(rest == 0):
                        next_event()
            with m.State("DRAIN"):
                with m.If(oq.level != 0):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += self.stalled.eq(self.stalled + 1)
                with m.Else():
                    m.d.comb += src.ready.eq(1)  # consume the end marker
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m
