"""The layer engine for a linear or convolution neuron layer (docs/architecture.md §3–§4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from converter.model import SnnModel
from converter.quantize import fixed_base
from hwsim.config import ArchConfig
from hwsim.fanout import ceil_div
from rtl.events import INDEX_BITS, PHASE_BITS, SpikeEvent, pot_word
from rtl.neuron import AdderArray, NeuronUnit
from rtl.queue import OutputQueue

#: Width of the activity counters.
COUNTER_BITS = 32


@dataclass(frozen=True)
class LayerImage:
    """One neuron layer as the engine holds it: descriptor and memory images.

    A linear layer is held as a 1 × 1 convolution of a 1 × 1 image (C_in = n_in,
    C_out = n_out), so one address generator serves both (docs/architecture.md §2–§3).

    Attributes
    ----------
    src_shape : (C_in, H, W)
        The source layer (a flat source of n neurons: (n, 1, 1)).
    out_shape : (C_out, H_out, W_out)
        The layer.
    kernel, stride, padding : (int, int)
        The convolution ((1, 1), (1, 1), (0, 0) for linear).
    t_src, t, t_w : int
        Source phases, layer phases, wait timestep.
    m_in, m_out : int
        The bases as 18-bit fixed point, M = round(Q · 2^16).
    sat_limit : int
        L.
    weights : int ndarray [C_in · kh · kw · CB, P]
        Word ((c_in · kh + ky) · kw + kx) · CB + cb holds W[cb·P + lane, c_in, ky, kx] (zero in
        padding lanes); CB = ⌈C_out / P⌉.
    bias : int ndarray [R, P]
        Initial potentials B in the potential layout: row (y · W_out + x) · CB + cb.
    theta : int ndarray [T · CB, P]
        Θq[c, t_o] at word t_o · CB + cb, lane c − cb·P: a row of P thresholds per read.
    """

    src_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    t_src: int
    t: int
    t_w: int
    m_in: int
    m_out: int
    sat_limit: int
    weights: np.ndarray
    bias: np.ndarray
    theta: np.ndarray

    @property
    def last_phase(self) -> int:
        """K = T − 1 + T_w, the last boundary."""
        return self.t - 1 + self.t_w

    @property
    def n_in(self) -> int:
        return int(np.prod(self.src_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def pixels(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    @classmethod
    def from_snn(cls, snn: SnnModel, index: int, lanes: int) -> LayerImage:
        """The image of layer ``index`` of ``snn`` (a neuron layer with one linear or conv
        synapse group)."""
        lay = snn.layers[index]
        if lay.kind != "neuron" or len(lay.synapses) != 1 or lay.synapses[0].op not in OPS:
            raise ValueError(
                f"layer {index} ({lay.name}) is not a neuron layer with one linear or conv "
                "synapse group: the rtl engine handles only those so far"
            )
        syn = lay.synapses[0]
        src = snn.layers[syn.source]
        w = np.asarray(syn.weight_q, np.int64)
        if syn.op == "linear":
            src_shape, out_shape = (src.size, 1, 1), (lay.size, 1, 1)
            w = w.reshape(lay.size, src.size, 1, 1)
            kernel, stride, padding = (1, 1), (1, 1), (0, 0)
        else:
            src_shape, out_shape = _chw(src.shape), _chw(lay.shape)
            kernel, stride, padding = tuple(syn.kernel), tuple(syn.stride), tuple(syn.padding)
        c_out = out_shape[0]
        cb = ceil_div(c_out, lanes)
        pad = cb * lanes - c_out
        # [C_in, kh, kw, CB·P] → one P-lane word per (c_in, ky, kx, cb)
        words = np.pad(w, ((0, pad), (0, 0), (0, 0), (0, 0))).transpose(1, 2, 3, 0)
        bias = np.asarray(lay.bias_q, np.int64).reshape(c_out, -1)  # [C, pixels]
        bias = np.pad(bias, ((0, pad), (0, 0))).T.reshape(-1, lanes)  # pixel-major rows
        theta = np.pad(np.asarray(lay.threshold_q, np.int64), ((0, pad), (0, 0)))
        image = cls(
            src_shape, out_shape, kernel, stride, padding, src.T, lay.T, lay.T_w,
            fixed_base(src.Q), fixed_base(lay.Q), int(lay.sat_limit),
            words.reshape(-1, lanes), bias, theta.T.reshape(-1, lanes),
        )  # fmt: skip
        image.check_taps()
        return image

    def tap_mask(self, y: int, x: int) -> list[bool]:
        """Which kernel taps (ky-major) of a source pixel hit an output pixel (§3)."""
        (kh, kw), (sy, sx), (py, px) = self.kernel, self.stride, self.padding
        _, h_out, w_out = self.out_shape
        mask = []
        for ky in range(kh):
            for kx in range(kw):
                ny, nx = y + py - ky, x + px - kx
                ok_y = ny >= 0 and ny % sy == 0 and ny // sy < h_out
                ok_x = nx >= 0 and nx % sx == 0 and nx // sx < w_out
                mask.append(ok_y and ok_x)
        return mask

    def check_taps(self) -> None:
        """An event with no valid tap would need a two-deep look-ahead on the input stream
        to cost only its issue cycles, as hwsim counts it; such layers are refused."""
        _, h, w = self.src_shape
        for y in range(h):
            for x in range(w):
                if not any(self.tap_mask(y, x)):
                    raise ValueError(
                        f"source pixel ({y}, {x}) reaches no output pixel: the rtl engine "
                        "does not yet support events without fan-out"
                    )


def _axis(v, offset: int, stride: int, size_in: int, size_out: int):
    """One axis of a tap: (valid, output coordinate) of input coordinate ``v`` (a Value in
    [0, size_in)) for n = v + offset: n ≥ 0, n divisible by the stride, n / stride < size_out.
    ``valid`` is True where that holds for every v."""
    terms = []
    if offset < 0:
        terms.append(v >= -offset)  # the tap is above/left of the image border
        n = (v - (-offset)).as_unsigned()  # only used when v ≥ −offset
    else:
        n = v + offset
    if stride > 1:
        terms.append(n % stride == 0)  # strided: only every stride-th position has a tap
    if (size_in - 1 + offset) // stride >= size_out:
        terms.append(n // stride < size_out)  # beyond the bottom/right border
    out = n // stride if stride > 1 else n
    return _and(*terms), out


def _and(*terms):
    """Conjunction of Values, folding the constant True."""
    terms = [t for t in terms if t is not True]
    if not terms:
        return True
    out = terms[0]
    for t in terms[1:]:
        out = out & t
    return out


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], 1, 1) if len(shape) == 1 else (shape[0], shape[1], shape[2])


#: Synapse ops the engine's address generator handles.
OPS = ("linear", "conv")


class LayerEngine(wiring.Component):
    """One linear or conv neuron layer on the reference engine, cycle for cycle as hwsim counts.

    Schedule (docs/architecture.md §4): initialisation scan (R rows + L_n); per phase
    k ≤ K: the events of phase k (I issue cycles + R adder cycles each, then L_a if there
    were any), the boundary scan (R rows, a row with spikes waits while the output queue
    cannot take them, then L_n); finally the drain of the output queue. The memories are
    read asynchronously, so each adder or scan cycle is one row's read-modify-write; L_a and
    L_n are the pipeline cycles the schedule reserves (a registered-read pipeline would fill
    them).

    Parameters
    ----------
    arch : ArchConfig
        P = ``lanes``, W, A, D_out, I, L_a, L_n.
    image : LayerImage
        The layer (descriptor constants and memory initial contents).

    Ports
    -----
    start : In(1)
        Pulse in the idle state: run the layer (cycle 0 is the next cycle).
    busy : Out(1)
        The layer is running (its cycles are being counted).
    done : Out(1)
        High from the end of a run (output queue empty) until the next ``start``.
    i_events : In(stream.Signature(SpikeEvent))
        Source events in phase order (32-bit payload, valid in, ready out); an event with
        ``end`` set closes the layer and is consumed when the layer is done. The engine peeks
        at the head to see that a phase is over, so events of phases after K must not be
        sent (hwsim's reader never reads them); an empty stream (no head to peek at) stalls
        the engine, cycles that hwsim, whose input queue never runs dry, does not count.
    o_spikes : Out(stream.Signature(SpikeEvent))
        Output spikes (index = neuron, phase = t_o), from the output queue; ``ready`` low is
        back-pressure.
    cycles, stalled, spikes_in, spikes_out : Out(32)
        Activity counters of the current (or last) run: all cycles of the layer, cycles a
        scan row waited for the output queue plus the drain, events consumed, spikes pushed.
    """

    def __init__(self, arch: ArchConfig, image: LayerImage) -> None:
        if image.n_out > 2**INDEX_BITS or image.n_in > 2**INDEX_BITS:
            raise ValueError(f"layers are limited to 2^{INDEX_BITS} neurons")
        if image.t_src > 2**PHASE_BITS or image.t > 2**PHASE_BITS:
            raise ValueError(f"phases are limited to 2^{PHASE_BITS}")
        if arch.event_issue_cycles < 1 or arch.neuron_pipeline_cycles < 1:
            raise ValueError(
                "the rtl engine needs event_issue_cycles ≥ 1 and neuron_pipeline_cycles ≥ 1, "
                f"got {arch.event_issue_cycles!r} and {arch.neuron_pipeline_cycles!r}"
            )
        self.arch, self.image = arch, image
        self.cb = ceil_div(image.out_shape[0], arch.lanes)  # words per pixel (channel blocks)
        self.rows = image.pixels * self.cb
        # the signature is a dict, not annotations: under `from __future__ import annotations`
        # Amaranth cannot read annotation strings
        super().__init__(
            {
                "start": In(1),
                "busy": Out(1),
                "done": Out(1),
                "i_events": In(stream.Signature(SpikeEvent)),
                "o_spikes": Out(stream.Signature(SpikeEvent)),
                "cycles": Out(COUNTER_BITS),
                "stalled": Out(COUNTER_BITS),
                "spikes_in": Out(COUNTER_BITS),
                "spikes_out": Out(COUNTER_BITS),
            }
        )

    # ------------------------------------------------------------------ memories
    def _memories(self, m: Module):
        p, a, img = self.arch.lanes, self.arch.potential_bits, self.image
        row = data.ArrayLayout(pot_word(a), p)
        wrow = data.ArrayLayout(signed(self.arch.weight_bits), p)
        arow = data.ArrayLayout(signed(a), p)
        m.submodules.pot = pot = memory.Memory(shape=row, depth=self.rows, init=[])
        m.submodules.wgt = wgt = memory.Memory(
            shape=wrow, depth=img.weights.shape[0], init=img.weights.tolist()
        )
        m.submodules.bias = bias = memory.Memory(
            shape=arow, depth=self.rows, init=img.bias.tolist()
        )
        m.submodules.thr = thr = memory.Memory(
            shape=arow, depth=img.theta.shape[0], init=img.theta.tolist()
        )
        # asynchronous reads: a row is read, updated and written back in one cycle
        return (
            pot.read_port(domain="comb"),
            pot.write_port(),
            wgt.read_port(domain="comb"),
            bias.read_port(domain="comb"),
            thr.read_port(domain="comb"),
        )

    def _tap_geometry(self, y, x):
        """Per kernel tap (ky-major): (valid, oy, ox) of a source pixel (y, x) (§3).

        Conditions that are constant for the layer's shapes are folded here, so that the
        Verilog holds no constant comparisons (Verilator's UNSIGNED/CMPCONST lint)."""
        img = self.image
        (kh, kw), (sy, sx), (py, px) = img.kernel, img.stride, img.padding
        _, h_in, w_in = img.src_shape
        _, h_out, w_out = img.out_shape
        taps = []
        for ky in range(kh):
            for kx in range(kw):
                ok_y, oy = _axis(y, py - ky, sy, h_in, h_out)
                ok_x, ox = _axis(x, px - kx, sx, w_in, w_out)
                taps.append((_and(ok_y, ok_x), oy, ox))
        return taps

    def elaborate(self, platform) -> Module:
        m = Module()
        arch, img, rows, n_cb = self.arch, self.image, self.rows, self.cb
        p = arch.lanes
        c_in_n, h_in, w_in = img.src_shape
        c_out, _, w_out = img.out_shape
        n_taps = img.kernel[0] * img.kernel[1]
        k_last = img.last_phase
        pot_r, pot_w, wgt_r, bias_r, thr_r = self._memories(m)
        m.submodules.pe = pe = AdderArray(p, arch.weight_bits, arch.potential_bits)
        m.submodules.nu = nu = NeuronUnit(p, arch.potential_bits, img.sat_limit)
        m.submodules.oq = oq = OutputQueue(p, arch.output_queue_depth)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))

        k = Signal(range(k_last + 2))  # the phase
        r = Signal(range(rows + 1))  # the row of the init and boundary scans
        cb = Signal(range(n_cb + 1))  # channel block of the row (scan) or of the tap (adds)
        pix = Signal(range(img.pixels + 1))  # output pixel of the scan row
        wait = Signal(range(max(arch.adder_pipeline_cycles, arch.neuron_pipeline_cycles,
                                arch.event_issue_cycles) + 1))  # fmt: skip
        neg = Signal()
        had = Signal()  # the current phase had events (its scan waits L_a for the adders)
        head = self.i_events.payload
        # the event being added: source channel and pixel, taps still to do
        ev_c = Signal(range(max(c_in_n, 2)))  # (at least one bit: no zero-width wires)
        ev_y, ev_x = Signal(range(max(h_in, 2))), Signal(range(max(w_in, 2)))
        todo = Signal(n_taps)

        # decompose the head's flat C·H·W index (constant divisors)
        hw = h_in * w_in
        head_rem = head.index % hw
        head_y, head_x = head_rem // w_in, head_rem % w_in
        head_mask = Cat(Const(1, 1) if ok is True else ok for ok, _, _ in
                        self._tap_geometry(head_y, head_x))  # fmt: skip
        # the lowest tap still to do, and its output pixel
        tap = Signal(range(max(n_taps, 2)))
        for t in reversed(range(n_taps)):
            with m.If(todo[t]):
                m.d.comb += tap.eq(t)
        geo = self._tap_geometry(ev_y, ev_x)
        oy = Array(g[1] for g in geo)[tap]
        ox = Array(g[2] for g in geo)[tap]
        add_row = (oy * w_out + ox) * n_cb + cb
        in_add = Signal()

        m.d.comb += [
            pot_r.addr.eq(Mux(in_add, add_row, r)),
            pot_w.addr.eq(Mux(in_add, add_row, r)),
            wgt_r.addr.eq((ev_c * n_taps + tap) * n_cb + cb),
            bias_r.addr.eq(r),
            pe.row_in.eq(pot_r.data),
            pe.weights.eq(wgt_r.data),
            pe.negate.eq(neg),
            nu.row_in.eq(pot_r.data),
            nu.theta.eq(thr_r.data),
            # k ≥ T_w (always true for T_w = 0: a constant, not a comparison Verilator flags)
            nu.compare.eq(k >= img.t_w if img.t_w else 1),
            nu.leak.eq(k < k_last),
            # M_in while the next phase still has input (k + 1 ≤ T_src − 1), then M_out
            nu.m.eq(Mux(k + 1 <= img.t_src - 1, img.m_in, img.m_out)),
        ]
        # threshold word (k − T_w) · CB + cb; only read when k ≥ T_w
        m.d.comb += thr_r.addr.eq((k - img.t_w) * n_cb + cb)
        for lane in range(p):
            chan = cb * p + lane
            m.d.comb += [
                nu.lane_valid[lane].eq(chan < c_out),
                oq.push_data[lane].index.eq(chan * img.pixels + pix),  # C·H·W order
                oq.push_data[lane].phase.eq(k - img.t_w),
            ]
        m.d.comb += oq.push_mask.eq(nu.fire)

        def wait_then(n: int, state: str, then: str) -> None:
            """Go to ``state`` for n cycles (n ≥ 1) and then to ``then``; n = 0 goes on."""
            if n:
                m.d.sync += wait.eq(n - 1)
                m.next = state
            else:
                m.next = then

        def after_events(kx, had_events) -> None:
            """The phase kx's next event, its end (L_a drain, then the scan), or a wait for
            the input stream; phases past the source's last have no event phase."""
            more = self.i_events.valid & ~head.end & (head.phase == kx)
            with m.If((kx < img.t_src) & ~self.i_events.valid):
                m.next = "WAIT_IN"
            with m.Elif((kx < img.t_src) & more):
                m.next = "ISSUE"
            with m.Else():
                m.d.sync += [r.eq(0), cb.eq(0), pix.eq(0)]
                with m.If(had_events):
                    wait_then(arch.adder_pipeline_cycles, "ADDER_TAIL", "SCAN")
                with m.Else():
                    m.next = "SCAN"

        def next_row() -> None:
            """Advance the scan by one row: channel block, then pixel."""
            m.d.sync += [r.eq(r + 1), cb.eq(Mux(cb == n_cb - 1, 0, cb + 1))]
            with m.If(cb == n_cb - 1):
                m.d.sync += pix.eq(pix + 1)

        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [
                    r.eq(0), k.eq(0), had.eq(0), self.done.eq(0), self.cycles.eq(0),
                    self.stalled.eq(0), self.spikes_in.eq(0), self.spikes_out.eq(0),
                ]  # fmt: skip
                m.next = "INIT"
            with m.State("INIT"):  # U ← B, fired ← 0, one row per cycle
                m.d.comb += [self.busy.eq(1), pot_w.en.eq(1)]
                for lane in range(p):
                    m.d.comb += [pot_w.data[lane].u.eq(bias_r.data[lane]),
                                 pot_w.data[lane].fired.eq(0)]  # fmt: skip
                m.d.sync += r.eq(r + 1)
                with m.If(r == rows - 1):
                    m.d.sync += wait.eq(arch.neuron_pipeline_cycles - 1)
                    m.next = "INIT_TAIL"
            with m.State("INIT_TAIL"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    after_events(k, 0)
            with m.State("WAIT_IN"):  # the input stream ran dry: not in hwsim's count
                m.d.comb += self.busy.eq(1)
                after_events(k, had)
            with m.State("ISSUE"):  # pop the event, latch its source pixel and valid taps
                m.d.comb += [self.busy.eq(1), self.i_events.ready.eq(1)]
                m.d.sync += [
                    ev_c.eq(head.index // hw), ev_y.eq(head_y), ev_x.eq(head_x),
                    todo.eq(head_mask), neg.eq(head.sign), cb.eq(0), had.eq(1),
                    self.spikes_in.eq(self.spikes_in + 1),
                ]  # fmt: skip
                wait_then(arch.event_issue_cycles - 1, "ISSUE_WAIT", "ADD")
            with m.State("ISSUE_WAIT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "ADD"
            with m.State("ADD"):  # one channel block of one tap: read, add the word, write
                m.d.comb += [self.busy.eq(1), in_add.eq(1), pot_w.en.eq(1),
                             pot_w.data.eq(pe.row_out)]  # fmt: skip
                m.d.sync += cb.eq(cb + 1)
                with m.If(cb == n_cb - 1):
                    rest = todo & ~(1 << tap)
                    m.d.sync += [cb.eq(0), todo.eq(rest)]
                    with m.If(rest == 0):
                        after_events(k, 1)
            with m.State("ADDER_TAIL"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.next = "SCAN"
            with m.State("SCAN"):  # boundary k → k + 1: compare, fire, leak; one row a cycle
                m.d.comb += [self.busy.eq(1), oq.push_en.eq(1)]
                with m.If(oq.push_ok):
                    m.d.comb += pot_w.en.eq(1)
                    m.d.comb += pot_w.data.eq(nu.row_out)
                    m.d.sync += self.spikes_out.eq(self.spikes_out + _fire_count(nu))
                    next_row()
                    with m.If(r == rows - 1):
                        m.d.sync += wait.eq(arch.neuron_pipeline_cycles - 1)
                        m.next = "SCAN_TAIL"
                with m.Else():  # the queue cannot take this row's spikes yet
                    m.d.sync += self.stalled.eq(self.stalled + 1)
            with m.State("SCAN_TAIL"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.sync += had.eq(0)
                    self._next_phase(m, k, k_last, after_events)
            with m.State("DRAIN"):  # the layer ends when the output queue is empty
                with m.If(oq.level != 0):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += self.stalled.eq(self.stalled + 1)
                with m.Else():
                    # consume the end-of-layer marker
                    m.d.comb += self.i_events.ready.eq(self.i_events.valid & head.end)
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m

    @staticmethod
    def _next_phase(m: Module, k, k_last: int, after_events) -> None:
        """After boundary k: the drain (k = K) or the event phase k + 1."""
        m.d.sync += k.eq(k + 1)
        with m.If(k == k_last):
            m.next = "DRAIN"
        with m.Else():
            after_events(k + 1, 0)


def _fire_count(nu: NeuronUnit):
    """Spikes of the current scan row (popcount of the fire mask)."""
    total = 0
    for lane in range(nu.lanes):
        total = total + nu.fire[lane]
    return total
