"""The output-stationary engine of a linear layer (docs/architecture.md §11 and §10,
"Output-stationary engine"): controller and top."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from archspec.fanout import ceil_div
from rtl.engine import LayerImage
from rtl.engine_ctrl import COUNTER_BITS, COUNTERS, _popcount, countdown
from rtl.engine_scan import ArgmaxReadout
from rtl.events import INDEX_BITS, PHASE_BITS, SpikeEvent, event_word
from rtl.neuron import M_BITS
from rtl.os_blocks import TOKEN, OsLane, PhaseBuckets, RunReader
from rtl.queue import OutputQueue

#: Depth of the token FIFO between the run reader and the lanes: the reader issues a token
#: only while the FIFO will have room, and with 4 entries it keeps ahead of lanes that pop
#: one token per cycle.
TOKEN_FIFO_DEPTH = 4


def os_refusal(image: LayerImage, arch: ArchConfig) -> str | None:
    """Why :class:`OsEngine` cannot run ``image`` on ``arch``, or None."""
    if (
        len(image.groups) != 1
        or image.op != "conv"
        or image.src_shape[1:] != (1, 1)
        or (image.out_shape[1:] != (1, 1))
    ):
        return (
            "the output-stationary rtl engine runs linear layers (one linear synapse group) "
            f"only; this layer's groups are {[g.op for g in image.groups]} on "
            f"{image.src_shape} → {image.out_shape} (modelled by hwsim only)"
        )
    if arch.adder_pipeline_cycles < 2:
        return (
            "the output-stationary rtl engine needs adder_pipeline_cycles (L_a) ≥ 2: its index "
            "and event reads are registered and fill the read pipeline before the first "
            f"tile's reads; got {arch.adder_pipeline_cycles!r}"
        )
    if arch.neuron_pipeline_cycles < 1:
        return f"neuron_pipeline_cycles must be ≥ 1, got {arch.neuron_pipeline_cycles!r}"
    if image.t_src > 2**PHASE_BITS or image.t + image.t_w > 2**PHASE_BITS:
        return f"phases are limited to 2^{PHASE_BITS}"
    if image.n_in > 2**INDEX_BITS or image.n_out > 2**INDEX_BITS:
        return f"layers are limited to 2^{INDEX_BITS} neurons"
    return None


class OsController(wiring.Component):
    """The schedule of docs/architecture.md §11 for one layer, cycle for cycle as hwsim's
    ``os_neuron_layer`` counts it.

    States: IDLE; LOAD (the event buffer takes the stream; not a layer cycle); LA (L_a, the
    read pipeline fills; the run reader starts in its first cycle); per tile TLOAD (1 cycle,
    U ← B) and per phase k ≤ K: READ (pop the phase's tokens, one per cycle; then idle until
    the phase has had L_n − 1 cycles) and BOUND (the boundary; it waits while the output queue
    cannot take the tile's spikes); after the last tile TAIL (L_n) and DRAIN.

    Ports: ``start``, ``busy``, ``done`` and the counters as :class:`~rtl.LayerEngine`'s;
    ``load`` / ``loaded`` / ``events`` to the event buffer; ``reader_start``; the token head
    (``tok``, ``tok_valid``, ``pop``); the tile ``t`` and phase ``k``; the lane controls
    (``lane_load``, ``add``, ``negate``, ``boundary``, ``commit``, ``compare``, ``leak``, ``m``,
    ``valid``: the lanes that hold a neuron); the lanes' ``fire`` / ``compared`` / ``leaked``
    masks; the output queue's ``push_en`` / ``push_ok`` / ``out_empty``; ``readout`` (the
    output layer's argmax boundary); the memory addresses of the next cycle's words
    (``bias_addr``, ``thr_addr``) and the weight address of the token popped (``wgt_addr``).
    """

    def __init__(self, arch: ArchConfig, image: LayerImage, capacity: int) -> None:
        p = arch.lanes
        self.arch, self.image = arch, image
        self.tiles = ceil_div(image.n_out, p)
        self.n_ph = image.last_phase + 1
        self.n_in = min(image.t_src, self.n_ph)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
            "load": Out(1), "loaded": In(1), "events": In(range(capacity + 1)),
            "reader_start": Out(1),
            "tok": In(TOKEN), "tok_valid": In(1), "pop": Out(1),
            "t": Out(range(self.tiles + 1)), "k": Out(range(self.n_ph + 1)),
            "lane_load": Out(1), "add": Out(1), "negate": Out(1), "boundary": Out(1),
            "commit": Out(1), "compare": Out(1), "leak": Out(1), "m": Out(M_BITS),
            "valid": Out(p), "fire": In(p), "compared": In(p), "leaked": In(p),
            "push_en": Out(1), "push_ok": In(1), "out_empty": In(1), "readout": Out(1),
            "bias_addr": Out(range(max(self.tiles, 2))),
            "thr_addr": Out(range(max(self.tiles * max(image.t, 1), 2))),
            "wgt_addr": Out(range(max(image.n_in * self.tiles, 2))),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        img, p, k, t = self.image, self.arch.lanes, self.k, self.t
        last_k, last_t = self.n_ph - 1, self.tiles - 1
        n_valid = Mux(t == last_t, img.n_out - last_t * p, p)
        m.d.comb += self.valid.eq(Cat(*(i < n_valid for i in range(p))))
        m.d.comb += [self.leak.eq(k != last_k),
                     self.m.eq(Mux(k + 1 <= img.t_src - 1, img.m_in, img.m_out)),
                     self.readout.eq(self.boundary & self.commit & (k == last_k)
                                     if img.is_output else 0)]  # fmt: skip
        if img.is_output:
            m.d.comb += self.compare.eq(0)
        else:
            m.d.comb += self.compare.eq(k >= img.t_w if img.t_w else 1)
        # the adds land one cycle after their token's pop (the weight's registered read)
        m.d.sync += [self.add.eq(self.pop & ~self.tok.filler), self.negate.eq(self.tok.sign)]
        m.d.comb += self.wgt_addr.eq(self.tok.index * self.tiles + t)
        sched = _OsSchedule(self, m, n_valid)
        with m.FSM():
            sched.idle_and_load()
            sched.tile()
            sched.boundary()
            sched.tail()
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m


class _OsSchedule:
    """The states of :class:`OsController`'s FSM, built into module ``m``."""

    def __init__(self, c: OsController, m: Module, n_valid) -> None:
        arch = c.arch
        self.c, self.m, self.arch, self.img, self.n_valid = c, m, arch, c.image, n_valid
        self.wait = Signal(range(max(arch.adder_pipeline_cycles, arch.neuron_pipeline_cycles)
                                 + 1))  # fmt: skip
        self.cyc = Signal(range(arch.neuron_pipeline_cycles + 1))  # READ cycles of the phase
        self.reads_done = Signal()  # the phase's last token has been popped

    def enter_phase(self, kx) -> None:
        """Start phase ``kx``: READ, or straight to BOUND when it has no reads and L_n ≤ 1."""
        c, m = self.c, self.m
        no_reads = Value.cast(kx) >= c.n_in
        m.d.sync += [c.k.eq(kx), self.cyc.eq(0), self.reads_done.eq(no_reads)]
        m.next = "READ"
        if self.arch.neuron_pipeline_cycles <= 1:
            with m.If(no_reads):
                m.next = "BOUND"

    def idle_and_load(self) -> None:
        c, m, la = self.c, self.m, self.arch.adder_pipeline_cycles
        with m.State("IDLE"), m.If(c.start):
            m.d.sync += [c.done.eq(0), *(getattr(c, n).eq(0) for n in COUNTERS)]
            m.next = "LOAD"
        with m.State("LOAD"):  # the source's events into the event buffer (not a layer cycle)
            m.d.comb += c.load.eq(1)
            with m.If(c.loaded):
                m.d.sync += [c.spikes_in.eq(c.events), c.t.eq(0), self.wait.eq(la - 1)]
                m.next = "LA"
        with m.State("LA"):  # L_a: the index, event and weight reads fill their pipeline
            m.d.comb += [c.busy.eq(1), c.load.eq(1), c.reader_start.eq(self.wait == la - 1)]
            m.d.sync += self.wait.eq(self.wait - 1)
            with m.If(self.wait == 0):
                m.next = "TLOAD"

    def tile(self) -> None:
        """A tile's first cycle (U ← B) and the reads of its phases."""
        c, m, ln = self.c, self.m, self.arch.neuron_pipeline_cycles
        with m.State("TLOAD"):
            m.d.comb += [c.busy.eq(1), c.load.eq(1), c.lane_load.eq(1)]
            self.enter_phase(0)
        with m.State("READ"):
            m.d.comb += [c.busy.eq(1), c.load.eq(1), c.pop.eq(c.tok_valid & ~self.reads_done)]
            with m.If(c.pop & ~c.tok.filler):
                m.d.sync += c.adds.eq(c.adds + self.n_valid)
            fin = self.reads_done | (c.pop & c.tok.last)
            with m.If(fin & (self.cyc + 1 >= ln - 1)):
                m.next = "BOUND"
            with m.Else():
                m.d.sync += [self.cyc.eq(Mux(self.cyc >= ln, ln, self.cyc + 1)),
                             self.reads_done.eq(fin)]  # fmt: skip

    def boundary(self) -> None:
        """V = U + S, compare, fire (waiting for the output queue), scale; then the next
        phase, the next tile or the tail."""
        c, m, img = self.c, self.m, self.img
        last_k, last_t = c.n_ph - 1, c.tiles - 1
        with m.State("BOUND"):
            m.d.comb += [c.busy.eq(1), c.load.eq(1), c.boundary.eq(1), c.push_en.eq(1),
                         c.commit.eq((c.fire == 0) | c.push_ok)]  # fmt: skip
            with m.If(~c.commit):
                m.d.sync += c.stalled.eq(c.stalled + 1)
            with m.Else():
                m.d.sync += [c.compares.eq(c.compares + _popcount(c.compared)),
                             c.multiplies.eq(c.multiplies + _popcount(c.leaked)),
                             c.spikes_out.eq(c.spikes_out + _popcount(c.fire))]  # fmt: skip
                if img.is_output:  # the argmax: one compare per neuron of the tile
                    with m.If(c.k == last_k):
                        m.d.sync += c.compares.eq(c.compares + self.n_valid)
                with m.If(c.k != last_k):
                    self.enter_phase(c.k + 1)
                with m.Elif(c.t != last_t):
                    m.d.sync += c.t.eq(c.t + 1)
                    m.next = "TLOAD"
                with m.Else():
                    m.d.sync += self.wait.eq(self.arch.neuron_pipeline_cycles - 1)
                    m.next = "TAIL"
        # the next cycle's words: the tile's initial potentials for TLOAD (after the last
        # boundary of the previous tile), the thresholds of the boundary
        nxt_t = Mux(c.boundary, c.t + 1, c.t)
        m.d.comb += c.bias_addr.eq(Mux(nxt_t > last_t, last_t, nxt_t))
        if not img.is_output:
            nxt_k = Mux(c.boundary & c.commit, c.k + 1, c.k)
            row = Mux(nxt_k >= img.t_w, (nxt_k - img.t_w) * c.tiles + c.t, 0)
            m.d.comb += c.thr_addr.eq(Mux(row >= c.tiles * img.t, 0, row))

    def tail(self) -> None:
        c, m = self.c, self.m
        with countdown(m, "TAIL", self.wait, c.busy):
            m.next = "DRAIN"
        with m.State("DRAIN"):
            with m.If(~c.out_empty):
                m.d.comb += c.busy.eq(1)
                m.d.sync += c.stalled.eq(c.stalled + 1)
            with m.Else():
                m.d.sync += c.done.eq(1)
                m.next = "IDLE"


class OsEngine(wiring.Component):
    """A linear neuron or output layer on the output-stationary engine (docs/architecture.md
    §11), cycle for cycle as hwsim counts it (``dataflow = "output_stationary"``).

    Tiles of P consecutive neurons run one after the other; a tile's potentials U, its
    phase's synaptic input S and the fired flags stay in the lanes' registers
    (:class:`~rtl.os_blocks.OsLane`) through all phases. The source's events are first
    loaded from ``i_events`` into the engine's event buffer, bucketed by phase with one index
    entry per phase (:class:`~rtl.os_blocks.PhaseBuckets`; in an accelerator the producer
    writes it, so these cycles are not the layer's); then every tile reads every phase's run
    again (:class:`~rtl.os_blocks.RunReader`, into a token FIFO), each token one cycle of the
    lanes: the weight word (P weights of the tile's neurons for the event's source neuron) is
    read in the cycle of the pop and added in the next. The boundary, the output queue and
    the counters are as :class:`~rtl.LayerEngine`'s; the output layer's last boundary takes
    the tile into the argmax and writes its potentials where the host reads them.

    Parameters
    ----------
    arch : ArchConfig
        P, W, A, D_out, L_a (≥ 2), L_n (≥ 1).
    image : LayerImage
        A linear layer (:func:`os_refusal` names what else is refused).
    capacity : int
        Events of one image the event buffer holds (the source's size, times its phases for
        the signed trains of the input layer).

    Ports
    -----
    As :class:`~rtl.LayerEngine`'s: ``start`` (then the stream is loaded; the layer's cycle 0
    follows the end marker), ``busy`` (the layer's cycles), ``done``, ``i_events``,
    ``o_spikes``, the counters, and for the output layer ``argmax``, ``rd_addr`` (a tile) and
    ``rd_data`` (its P potentials, a registered read). Also ``overflow``: more events came
    than ``capacity`` (they were dropped; the run is wrong).
    """

    def __init__(self, arch: ArchConfig, image: LayerImage, capacity: int) -> None:
        why = os_refusal(image, arch)
        if why is not None:
            raise ValueError(why)
        self.arch, self.image, self.capacity = arch, image, max(capacity, 1)
        self.weight_bits = max(arch.weight_bits, image.weight_bits)
        self.tiles = ceil_div(image.n_out, arch.lanes)
        self.rows = self.tiles
        ports = {
            "start": In(1), "busy": Out(1), "done": Out(1), "overflow": Out(1),
            "i_events": In(stream.Signature(SpikeEvent)),
            "o_spikes": Out(stream.Signature(SpikeEvent)),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
        }  # fmt: skip
        if image.is_output:
            ports["argmax"] = Out(range(max(image.n_out, 2)))
            ports["rd_addr"] = In(range(max(self.tiles, 2)))
            ports["rd_data"] = Out(data.ArrayLayout(signed(arch.potential_bits), arch.lanes))
        super().__init__(ports)

    def _memories(self, m: Module):
        """The weight, bias and threshold memories' registered read ports (None: no
        thresholds), and the output layer's potential memory."""
        p, a, img = self.arch.lanes, self.arch.potential_bits, self.image
        wrow = data.ArrayLayout(signed(self.weight_bits), p)
        arow = data.ArrayLayout(signed(a), p)
        mems = {"wgt": (wrow, img.weights), "bias": (arow, img.bias)}
        if not img.is_output:
            mems["thr"] = (arow, img.theta)
        ports = {}
        for name, (shape, init) in mems.items():
            m.submodules[name] = mem = memory.Memory(shape=shape, depth=max(len(init), 2),
                                                     init=init.tolist())  # fmt: skip
            ports[name] = mem.read_port(domain="sync")
        pot = None
        if img.is_output:
            m.submodules.pot = pot = memory.Memory(shape=arow, depth=max(self.tiles, 2), init=[])
            host = pot.read_port(domain="sync")
            m.d.comb += [host.addr.eq(self.rd_addr), self.rd_data.eq(host.data)]
        return ports["wgt"], ports["bias"], ports.get("thr"), pot

    def elaborate(self, platform) -> Module:
        m = Module()
        arch, img, p = self.arch, self.image, self.arch.lanes
        wgt_r, bias_r, thr_r, pot = self._memories(m)
        ctrl = OsController(arch, img, self.capacity)
        m.submodules.ctrl = ctrl
        m.submodules.buf = buf = PhaseBuckets(self.capacity, ctrl.n_in)
        m.submodules.rdr = rdr = RunReader(ctrl.tiles, ctrl.n_in, self.capacity,
                                           TOKEN_FIFO_DEPTH)  # fmt: skip
        m.submodules.oq = oq = OutputQueue(p, arch.output_queue_depth)
        wiring.connect(m, wiring.flipped(self.i_events), buf.i)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))
        m.d.comb += [ctrl.start.eq(self.start), self.busy.eq(ctrl.busy), self.done.eq(ctrl.done),
                     self.overflow.eq(buf.overflow),
                     *(getattr(self, n).eq(getattr(ctrl, n)) for n in COUNTERS)]  # fmt: skip
        m.d.comb += [buf.load.eq(ctrl.load), ctrl.loaded.eq(buf.loaded),
                     ctrl.events.eq(buf.count), rdr.start.eq(ctrl.reader_start),
                     buf.idx_addr.eq(rdr.idx_addr), rdr.idx.eq(buf.idx),
                     buf.ev_addr.eq(rdr.ev_addr), rdr.ev.eq(buf.ev),
                     ctrl.tok.eq(rdr.o.payload), ctrl.tok_valid.eq(rdr.o.valid),
                     rdr.o.ready.eq(ctrl.pop), wgt_r.addr.eq(ctrl.wgt_addr),
                     bias_r.addr.eq(ctrl.bias_addr)]  # fmt: skip
        lanes = [OsLane(arch.potential_bits, self.weight_bits, img.sat_limit) for _ in range(p)]
        for i, lane in enumerate(lanes):
            m.submodules[f"lane{i}"] = lane
            m.d.comb += [lane.load.eq(ctrl.lane_load), lane.add.eq(ctrl.add),
                         lane.negate.eq(ctrl.negate), lane.boundary.eq(ctrl.boundary),
                         lane.commit.eq(ctrl.commit), lane.weight.eq(wgt_r.data[i]),
                         lane.bias.eq(bias_r.data[i]), lane.valid.eq(ctrl.valid[i]),
                         lane.compare.eq(ctrl.compare), lane.leak.eq(ctrl.leak),
                         lane.m.eq(ctrl.m)]  # fmt: skip
            if thr_r is not None:
                m.d.comb += lane.theta.eq(thr_r.data[i])
        m.d.comb += [ctrl.fire.eq(Cat(*(x.fire for x in lanes))),
                     ctrl.compared.eq(Cat(*(x.compared for x in lanes))),
                     ctrl.leaked.eq(Cat(*(x.leaked for x in lanes)))]  # fmt: skip
        if thr_r is not None:
            m.d.comb += thr_r.addr.eq(ctrl.thr_addr)
        phase = ctrl.k - img.t_w if img.t_w else ctrl.k
        words = [event_word(ctrl.t * p + i, phase) for i in range(p)]
        m.d.comb += [oq.push_data.eq(Cat(*words)), oq.push_mask.eq(ctrl.fire),
                     oq.push_en.eq(ctrl.push_en & (ctrl.fire != 0)),
                     ctrl.push_ok.eq(oq.push_ok), ctrl.out_empty.eq(oq.level == 0)]  # fmt: skip
        if img.is_output:
            self._readout(m, ctrl, lanes, pot)
        return m

    def _readout(self, m: Module, ctrl, lanes, pot) -> None:
        """The output layer's last boundary of a tile: its V into the argmax and into the
        potential memory the host reads."""
        arch = self.arch
        m.submodules.readout = ro = ArgmaxReadout(self.image, arch.lanes, arch.potential_bits)
        wr = pot.write_port()
        m.d.comb += [ro.row[i].eq(lane.v) for i, lane in enumerate(lanes)]
        m.d.comb += [wr.data[i].eq(lane.v.u) for i, lane in enumerate(lanes)]
        m.d.comb += [ro.first.eq(ctrl.t == 0), ro.cb.eq(ctrl.t), ro.pix.eq(0),
                     ro.en.eq(ctrl.readout), self.argmax.eq(ro.argmax),
                     wr.addr.eq(ctrl.t), wr.en.eq(ctrl.readout)]  # fmt: skip
