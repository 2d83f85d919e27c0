"""The layer engine's controller: the per-layer schedule of docs/architecture.md §4."""

from __future__ import annotations

from contextlib import contextmanager

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from archspec.fanout import ceil_div
from rtl.events import SpikeEvent
from rtl.neuron import M_BITS

#: Width of the activity counters.
COUNTER_BITS = 32
#: The activity counters of an engine run (ports of the same names).
COUNTERS = ("cycles", "stalled", "spikes_in", "spikes_out", "adds", "compares", "multiplies")


class EngineController(wiring.Component):
    """The schedule of a neuron or output layer, cycle for cycle as hwsim counts (§4).

    States: IDLE; INIT (U ← B, one row a cycle) and INIT_TAIL (L_n); per phase k ≤ K the
    events (ISSUE and ISSUE_WAIT: I cycles; ADD: one adder cycle per channel block of a tap;
    WAIT_IN: the input stream ran dry) and ADDER_TAIL (L_a, if the phase had events); SCAN
    (the boundary k → k + 1, one row a cycle, stalling while the output queue cannot take the
    row's spikes) and SCAN_TAIL (L_n); the output layer's READOUT (one row a cycle) and
    READOUT_TAIL (L_n); DRAIN (until the output queue is empty). The rules that are the
    rtl's own (the end of a phase seen at the stream's head, events without fan-out) are in
    docs/architecture.md §10.

    Parameters
    ----------
    arch : ArchConfig
        P = ``lanes``, I, L_a, L_n.
    image : LayerImage
        The layer's descriptor constants (rtl/engine.py).

    Ports
    -----
    start : In(1)
        Pulse in the idle state: run the layer (cycle 0 is the next cycle).
    busy : Out(1)
        The layer is running (its cycles are being counted).
    done : Out(1)
        High from the end of a run (output queue empty) until the next ``start``.
    head : In(SpikeEvent)
        The input queue's head (its phase and end-of-layer bit are read).
    head_valid : In(1)
        The input queue has a head.
    pop : Out(1)
        Take the head (an event being issued, or the end-of-layer marker at the end).
    load, step : Out(1)
        To the address generator: latch the head event (its first issue cycle); an adder
        cycle (ADD: stage 1, the potential row and the weight word are read; the engine adds
        and writes the row back in the next cycle, docs/architecture.md §10).
    head_fanout, fanout, last : In(1)
        From the address generator: the head reaches a target; the latched event has taps
        left; this adder cycle is the event's last.
    lanes : In(range(P + 1))
        From the address generator: the synapses of this adder cycle.
    k : Out(range(K + 2))
        The phase.
    row, cb, pix : Out(range(R + 1)), Out(range(CB + 1)), Out(range(H_out · W_out + 1))
        The row of the initialisation scan, boundary scan and readout: its index, channel
        block and output pixel.
    rd_row, rd_cb, rd_k : Out(range(R + 1)), Out(range(CB + 1)), Out(range(K + 2))
        The row whose potentials (and initial potentials, thresholds) are read this cycle for
        the next scan cycle (registered reads, docs/architecture.md §10): ``row`` + 1 after a
        row that is done, ``row`` again while a scan row waits for the output queue, and row
        0 of phase k outside the scans (of k + 1 in SCAN_TAIL's last cycle), so that the
        cycle before a scan (the last of L_a, L_n or of the event phase) reads its first row.
    init, scan_we : Out(1)
        Write the potential row: the initial potentials B (fired flags 0); the neuron unit's
        row (a scan row whose spikes the output queue takes).
    compare, leak : Out(1)
        To the neuron unit: this boundary decides t_o = k − T_w (k ≥ T_w; never for the
        output layer); this boundary scales (k < K).
    m : Out(18)
        The base of this boundary: M_in while phase k + 1 still has input, then M_out.
    push_en : Out(1)
        A scan row offers its spikes to the output queue.
    push_ok : In(1)
        The output queue takes them.
    out_empty : In(1)
        The output queue is empty.
    fire, compared, leaked : In(P)
        The neuron unit's lanes that fire, compare and leak (the counters).
    readout : Out(1)
        Output layer only: the readout takes this row into the running argmax.
    cycles, stalled, spikes_in, spikes_out, adds, compares, multiplies : Out(32)
        The activity counters (docs/architecture.md §6).
    """

    def __init__(self, arch: ArchConfig, image) -> None:
        self.arch, self.image = arch, image
        self.n_cb = ceil_div(image.out_shape[0], arch.lanes)
        self.rows = image.pixels * self.n_cb
        p = arch.lanes
        ports = {
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "head": In(SpikeEvent),
            "head_valid": In(1),
            "pop": Out(1),
            "load": Out(1),
            "step": Out(1),
            "head_fanout": In(1),
            "fanout": In(1),
            "last": In(1),
            "lanes": In(range(p + 1)),
            "k": Out(range(image.last_phase + 2)),
            "row": Out(range(self.rows + 1)),
            "cb": Out(range(self.n_cb + 1)),
            "pix": Out(range(image.pixels + 1)),
            "rd_row": Out(range(self.rows + 1)),
            "rd_cb": Out(range(self.n_cb + 1)),
            "rd_k": Out(range(image.last_phase + 2)),
            "init": Out(1),
            "scan_we": Out(1),
            "compare": Out(1),
            "leak": Out(1),
            "m": Out(M_BITS),
            "push_en": Out(1),
            "push_ok": In(1),
            "out_empty": In(1),
            "fire": In(p),
            "compared": In(p),
            "leaked": In(p),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
        }
        if image.is_output:
            ports["readout"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        img, k = self.image, self.k
        m.d.comb += [
            # the scan row read this cycle: row 0 of this phase unless a state says otherwise
            self.rd_row.eq(0),
            self.rd_cb.eq(0),
            self.rd_k.eq(k),
            self.leak.eq(k < img.last_phase),
            # M_in while the next phase still has input (k + 1 ≤ T_src − 1), then M_out
            self.m.eq(Mux(k + 1 <= img.t_src - 1, img.m_in, img.m_out)),
        ]
        if img.is_output:  # no thresholds: the output layer never fires
            m.d.comb += self.compare.eq(0)
        else:
            # k ≥ T_w (always true for T_w = 0: a constant, not a comparison Verilator flags)
            m.d.comb += self.compare.eq(k >= img.t_w if img.t_w else 1)
        fsm = _Schedule(self, m)
        with m.FSM():
            fsm.idle_and_init()
            fsm.events()
            fsm.scan()
            if img.is_output:
                fsm.readout()
            fsm.drain()
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m


class _Schedule:
    """The states of :class:`EngineController`'s FSM, built into module ``m``: its registers
    (the wait counter, whether the phase had events) and the transitions the states share."""

    def __init__(self, ctrl: EngineController, m: Module) -> None:
        arch = ctrl.arch
        self.c, self.m, self.arch, self.img = ctrl, m, arch, ctrl.image
        self.k_last = ctrl.image.last_phase
        self.no_fanout = ctrl.image.has_events_without_fanout()
        self.wait = Signal(range(max(arch.adder_pipeline_cycles, arch.neuron_pipeline_cycles,
                                     arch.event_issue_cycles) + 1))  # fmt: skip
        self.had = Signal()  # the current phase had events (its scan waits L_a for the adders)

    def wait_then(self, n: int, state: str, then: str) -> None:
        """Go to ``state`` for n cycles (n ≥ 1) and then to ``then``; n = 0 goes on."""
        if n:
            self.m.d.sync += self.wait.eq(n - 1)
            self.m.next = state
        else:
            self.m.next = then

    def more(self, kx) -> Value:
        """The head is an event of phase ``kx``."""
        c = self.c
        return c.head_valid & ~c.head.end & (c.head.phase == kx)

    def after_events(self, kx, had_events) -> None:
        """The phase kx's next event, its end (L_a drain, then the scan or, after the output
        layer's last phase, the readout), or a wait for the input stream; phases past the
        source's last have no event phase."""
        m, c, img = self.m, self.c, self.img
        with m.If((kx < img.t_src) & ~c.head_valid):
            m.next = "WAIT_IN"
        with m.Elif((kx < img.t_src) & self.more(kx)):
            m.next = "ISSUE"
        with m.Else():
            m.d.sync += [c.row.eq(0), c.cb.eq(0), c.pix.eq(0)]
            if img.is_output:
                with m.If(kx == self.k_last):
                    self.tail_then(had_events, "READOUT")
                with m.Else():
                    self.tail_then(had_events, "SCAN")
            else:
                self.tail_then(had_events, "SCAN")

    def tail_then(self, had_events, then: str) -> None:
        """The L_a adder drain if the phase had events, then ``then``."""
        m, la = self.m, self.arch.adder_pipeline_cycles
        if isinstance(had_events, int):
            if had_events:
                self.wait_then(la, "ADDER_TAIL", then)
            else:
                m.next = then
            return
        with m.If(had_events):
            self.wait_then(la, "ADDER_TAIL", then)
        with m.Else():
            m.next = then

    def to_scan(self) -> None:
        """After the event phase k: the boundary scan (output layer: after its last event
        phase, the readout)."""
        m = self.m
        if self.img.is_output:
            with m.If(self.c.k == self.k_last):
                m.next = "READOUT"
            with m.Else():
                m.next = "SCAN"
        else:
            m.next = "SCAN"

    def next_row(self) -> None:
        """Advance a scan by one row: channel block, then pixel (and read the next row)."""
        m, c, n_cb = self.m, self.c, self.c.n_cb
        cb_next = Mux(c.cb == n_cb - 1, 0, c.cb + 1)
        m.d.sync += [c.row.eq(c.row + 1), c.cb.eq(cb_next)]
        m.d.comb += [c.rd_row.eq(c.row + 1), c.rd_cb.eq(cb_next)]
        with m.If(c.cb == n_cb - 1):
            m.d.sync += c.pix.eq(c.pix + 1)

    def rows_then(self, state: str) -> None:
        """After the scan's last row: L_n cycles in ``state``."""
        with self.m.If(self.c.row == self.c.rows - 1):
            self.m.d.sync += self.wait.eq(self.arch.neuron_pipeline_cycles - 1)
            self.m.next = state

    def idle_and_init(self) -> None:
        """IDLE, then the initialisation scan: U ← B, fired ← 0, one row per cycle, and L_n."""
        m, c = self.m, self.c
        with m.State("IDLE"), m.If(c.start):
            m.d.sync += [c.row.eq(0), c.k.eq(0), self.had.eq(0), c.done.eq(0)]
            m.d.sync += [getattr(c, name).eq(0) for name in COUNTERS]
            m.next = "INIT"
        with m.State("INIT"):
            m.d.comb += [c.busy.eq(1), c.init.eq(1), c.rd_row.eq(c.row + 1)]
            m.d.sync += c.row.eq(c.row + 1)
            self.rows_then("INIT_TAIL")
        with countdown(m, "INIT_TAIL", self.wait, c.busy):
            self.after_events(c.k, 0)
        with m.State("WAIT_IN"):  # the input stream ran dry: not in hwsim's count
            m.d.comb += c.busy.eq(1)
            self.after_events(c.k, self.had)

    def events(self) -> None:
        """An event's I issue cycles and its adder cycles, and the L_a drain."""
        m, c, arch, k = self.m, self.c, self.arch, self.c.k
        issue = arch.event_issue_cycles
        with m.State("ISSUE"):  # pop the event, latch its source pixel and valid taps
            m.d.comb += c.busy.eq(1)
            with m.If(self.more(k)):
                m.d.comb += [c.pop.eq(1), c.load.eq(1)]
                m.d.sync += [self.had.eq(1), c.spikes_in.eq(c.spikes_in + 1)]
                if issue > 1:
                    self.wait_then(issue - 1, "ISSUE_WAIT", "ADD")
                elif self.no_fanout:  # without fan-out: on to the next event (or phase end)
                    m.next = "ADD"
                    with m.If(~c.head_fanout):
                        m.next = "ISSUE"
                else:
                    m.next = "ADD"
            if self.no_fanout and issue == 1:
                # after an event without fan-out (I = 1): the stream ran dry (wait here, as
                # in WAIT_IN) or the phase is over: this is the first L_a cycle
                with m.Elif(c.head_valid):
                    m.d.sync += [c.row.eq(0), c.cb.eq(0), c.pix.eq(0)]
                    if arch.adder_pipeline_cycles > 1:
                        self.wait_then(arch.adder_pipeline_cycles - 1, "ADDER_TAIL", "SCAN")
                    else:
                        self.to_scan()
        with countdown(m, "ISSUE_WAIT", self.wait, c.busy):
            if self.no_fanout:  # an event without fan-out costs its issue cycles only
                with m.If(~c.fanout):
                    self.after_events(k, 1)
                with m.Else():
                    m.next = "ADD"
            else:
                m.next = "ADD"
        with m.State("ADD"):  # one channel block of one tap: read, add the word, write
            m.d.comb += [c.busy.eq(1), c.step.eq(1)]
            m.d.sync += c.adds.eq(c.adds + c.lanes)
            with m.If(c.last):
                self.after_events(k, 1)
        with countdown(m, "ADDER_TAIL", self.wait, c.busy):
            self.to_scan()

    def scan(self) -> None:
        """The boundary k → k + 1: compare, fire, leak, one row a cycle; then L_n and the next
        phase (or, after K, the drain)."""
        m, c = self.m, self.c
        with m.State("SCAN"):
            m.d.comb += [c.busy.eq(1), c.push_en.eq(1)]
            with m.If(c.push_ok):
                m.d.comb += c.scan_we.eq(1)
                m.d.sync += [
                    c.spikes_out.eq(c.spikes_out + _popcount(c.fire)),
                    c.compares.eq(c.compares + _popcount(c.compared)),
                    c.multiplies.eq(c.multiplies + _popcount(c.leaked)),
                ]
                self.next_row()
                self.rows_then("SCAN_TAIL")
            with m.Else():  # the queue cannot take this row's spikes yet: read it again
                m.d.comb += [c.rd_row.eq(c.row), c.rd_cb.eq(c.cb)]
                m.d.sync += c.stalled.eq(c.stalled + 1)
        with countdown(m, "SCAN_TAIL", self.wait, c.busy):
            # (the next phase's scan may start next cycle: its first row is read now)
            m.d.comb += c.rd_k.eq(c.k + 1)
            m.d.sync += [self.had.eq(0), c.k.eq(c.k + 1)]
            with m.If(c.k == self.k_last):
                m.next = "DRAIN"
            with m.Else():
                self.after_events(c.k + 1, 0)

    def readout(self) -> None:
        """The output layer's argmax readout: one row of P potentials per cycle (one compare
        per neuron), then L_n (docs/architecture.md §4)."""
        m, c, p, n_cb = self.m, self.c, self.arch.lanes, self.c.n_cb
        c_out = self.img.out_shape[0]
        valid_lanes = Mux(c.cb == n_cb - 1, c_out - (n_cb - 1) * p, p)
        with m.State("READOUT"):
            m.d.comb += [c.busy.eq(1), c.readout.eq(1)]
            m.d.sync += c.compares.eq(c.compares + valid_lanes)
            self.next_row()
            self.rows_then("READOUT_TAIL")
        with countdown(m, "READOUT_TAIL", self.wait, c.busy):
            m.next = "DRAIN"

    def drain(self) -> None:
        """The layer ends when the output queue is empty; the end-of-layer marker is taken."""
        m, c = self.m, self.c
        with m.State("DRAIN"):
            with m.If(~c.out_empty):
                m.d.comb += c.busy.eq(1)
                m.d.sync += c.stalled.eq(c.stalled + 1)
            with m.Else():
                m.d.comb += c.pop.eq(c.head_valid & c.head.end)
                m.d.sync += c.done.eq(1)
                m.next = "IDLE"


@contextmanager
def countdown(m: Module, state: str, wait: Signal, busy: Signal):
    """An FSM state that lasts until ``wait`` (loaded on entry) has counted down to 0, busy
    in every cycle; the body of the ``with`` runs in its last cycle (the pipeline tails and
    the issue cycles of docs/architecture.md §4)."""
    with m.State(state):
        m.d.comb += busy.eq(1)
        m.d.sync += wait.eq(wait - 1)
        with m.If(wait == 0):
            yield


def _popcount(bits) -> Value:
    """The number of set bits of ``bits`` (a P-bit mask: fired, compared or leaked lanes)."""
    total = 0
    for i in range(len(bits)):
        total = total + bits[i]
    return total
