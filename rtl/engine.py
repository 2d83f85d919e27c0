"""The layer engine of a neuron or output layer (docs/architecture.md §1–§4): images, top."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from archspec.fanout import ceil_div, tap_target
from converter.model import SnnModel
from converter.quantize import fixed_base
from rtl.addrgen import AddressGenerator
from rtl.addrgen import window_taps as window_taps  # (re-exported: rtl/maxpool.py)
from rtl.csr import CsrImage
from rtl.engine_ctrl import COUNTER_BITS as COUNTER_BITS
from rtl.engine_ctrl import COUNTERS, EngineController
from rtl.engine_ctrl import countdown as countdown  # (re-exported: rtl/maxpool.py)
from rtl.engine_scan import ArgmaxReadout, ScanRow
from rtl.events import INDEX_BITS, PHASE_BITS, SpikeEvent
from rtl.lane import Lane
from rtl.queue import InputQueue, OutputQueue

#: Bits of the event's spare field that carry the source index's bits 20–22 for a source of
#: more than 2^20 neurons (a graph network's input layer); zero for every other source.
WIDE_INDEX_BITS = 3


@dataclass(frozen=True)
class GroupImage:
    """One synapse group of a layer as the address generator sees it (docs/architecture.md §3).

    Attributes
    ----------
    op : str
        ``"conv"`` (linear included: a 1 × 1 convolution of a 1 × 1 image), ``"avgpool"``,
        ``"shortcut"``, ``"embedding"`` or ``"graph"``. avgpool and shortcut are depthwise:
        one target and one adder cycle per valid tap; a shortcut is a 1 × 1 window with the
        group's stride whose target channel is c + ``channel_offset``. An embedding (one-hot
        source (1, N, 1)) is a 1 × 1 conv whose weight words are indexed by the source node
        instead of the source channel; a graph group walks its source node's CSR entries
        (rtl/csr.py): one target, one adder cycle per edge.
    src_shape : (C_in, H, W)
        The group's source layer.
    kernel, stride, padding : (int, int)
        The window ((1, 1), (s, s), (0, 0) for a shortcut).
    channel_offset : int
        Shortcut: the target channel of source channel c is c + channel_offset (≥ 0). Graph:
        output channel f reads source channel f + channel_offset.
    base : int
        The group's first word in the weight memory.
    words : int
        The group's weight words (0 for a graph group: its weights are in the CSR).
    table : int
        Graph: the group's CSR table (:attr:`LayerImage.csr`).
    negate : bool
        Graph: the table holds the negated weights of this group (the −Â group of a two-rail
        source shares the +Â group's table; its events subtract).
    empty_nodes : bool
        Graph: some source node has no edge (its events reach no target).
    """

    op: str
    src_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    channel_offset: int
    base: int
    words: int
    table: int = 0
    negate: bool = False
    empty_nodes: bool = False

    @property
    def depthwise(self) -> bool:
        return self.op in ("avgpool", "shortcut")

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def tap_mask(self, y: int, x: int, out_shape) -> list[bool]:
        """Which taps (ky-major) of a source pixel hit an output pixel (§3)."""
        return tap_mask(y, x, self.kernel, self.stride, self.padding, out_shape)

    def has_events_without_fanout(self, out_shape) -> bool:
        """Whether an event of this group can reach no target (0 adder cycles, §3): a pixel
        that no tap maps into the output, or a shortcut channel beyond C_out."""
        c_in, h, w = self.src_shape
        if self.op == "graph":
            return self.empty_nodes
        if self.op == "shortcut" and c_in + self.channel_offset > out_shape[0]:
            return True
        return any(not any(self.tap_mask(y, x, out_shape)) for y in range(h) for x in range(w))


def tap_mask(y: int, x: int, kernel, stride, padding, out_shape) -> list[bool]:
    """Which kernel taps (ky-major) of source pixel (y, x) hit an output pixel (§3)."""
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    _, h_out, w_out = out_shape
    mask = []
    for ky in range(kh):
        for kx in range(kw):
            mask.append(
                tap_target(y, py, ky, sy, h_out) >= 0 and tap_target(x, px, kx, sx, w_out) >= 0
            )
    return mask


@dataclass(frozen=True)
class LayerImage:
    """One neuron layer as the engine holds it: descriptor and memory images.

    A linear layer is held as a 1 × 1 convolution of a 1 × 1 image (C_in = n_in,
    C_out = n_out), so one address generator serves both (docs/architecture.md §2–§3). An
    average-pooling or shortcut group is a depthwise window: one target and one adder cycle
    per valid tap. A residual layer has two synapse groups (``groups``), told apart by the
    events' ``group`` bit; each has its own source shape and window.

    Attributes
    ----------
    op : str
        Group 0's op: ``"conv"`` (linear included), ``"avgpool"`` or ``"shortcut"``.
    is_output : bool
        The output layer: no compares, potentials leak until the last source phase, then the
        argmax readout.
    src_shape : (C_in, H, W)
        Group 0's source layer (a flat source of n neurons: (n, 1, 1)).
    out_shape : (C_out, H_out, W_out)
        The layer.
    kernel, stride, padding : (int, int)
        Group 0's window ((1, 1), (1, 1), (0, 0) for linear).
    t_src, t, t_w : int
        Source phases (the same for both groups), layer phases, wait timestep.
    m_in, m_out : int
        The bases as 18-bit fixed point, M = round(Q · 2^16).
    sat_limit : int
        L.
    weights : int ndarray [words, P]
        The groups' weight words one after the other (group 1's from ``groups[1].base``, right
        after group 0's). Conv: word base + ((c_in · kh + ky) · kw + kx) · CB + cb holds
        W[cb·P + lane, c_in, ky, kx] (zero in padding lanes); avgpool / shortcut: word
        base + cb holds the weights of output channels cb·P + lane; CB = ⌈C_out / P⌉.
    bias : int ndarray [R, P]
        Initial potentials B in the potential layout: row (y · W_out + x) · CB + cb.
    theta : int ndarray [T · CB, P]
        Θq[c, t_o] at word t_o · CB + cb, lane c − cb·P: a row of P thresholds per read (no
        rows for the output layer).
    groups : tuple of GroupImage
        The synapse groups (one, or two for a residual layer or a graph layer reading a
        two-rail source).
    weight_bits : int
        The widest group's integer weights (8; 16 with a residual shortcut group, whose one
        weight per channel is stored as int16, or a graph group, docs/semantics.md §5). The
        engine's weight words and PE array have lanes of max(W, weight_bits) bits.
    csr : CsrImage or None
        A graph layer's CSR tables of Â (rtl/csr.py); embedding: weight word
        base + n · CB + cb holds W[cb·P + lane, n].
    """

    is_output: bool
    out_shape: tuple[int, int, int]
    t_src: int
    t: int
    t_w: int
    m_in: int
    m_out: int
    sat_limit: int
    weights: np.ndarray
    bias: np.ndarray
    theta: np.ndarray
    groups: tuple[GroupImage, ...]
    weight_bits: int
    csr: CsrImage | None = None

    # group 0's window: the layer's for a single-group layer
    op = property(lambda self: self.groups[0].op)
    src_shape = property(lambda self: self.groups[0].src_shape)
    kernel = property(lambda self: self.groups[0].kernel)
    stride = property(lambda self: self.groups[0].stride)
    padding = property(lambda self: self.groups[0].padding)

    @property
    def last_phase(self) -> int:
        """K = T − 1 + T_w, the last boundary (output layer: T_src − 1, the last event phase)."""
        return self.t_src - 1 if self.is_output else self.t - 1 + self.t_w

    @property
    def n_in(self) -> int:
        return int(np.prod(self.src_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def pixels(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    def has_events_without_fanout(self) -> bool:
        """Whether some event reaches no target (it costs its I issue cycles only, §3–§4)."""
        return any(g.has_events_without_fanout(self.out_shape) for g in self.groups)

    @classmethod
    def from_snn(cls, snn: SnnModel, index: int, lanes: int) -> LayerImage:
        """The image of layer ``index`` of ``snn`` (a neuron or output layer with one linear,
        conv, avgpool, shortcut, embedding or graph synapse group, a residual layer with two
        conv / avgpool / shortcut groups, or a graph layer with two graph groups)."""
        lay = snn.layers[index]
        if not _engine_layer(lay):
            ops = ", ".join(s.op for s in lay.synapses) or "none"
            raise ValueError(
                f"layer {index} ({lay.name}, {lay.kind}) is not a neuron or output layer with "
                f"one {'/'.join(OPS)} synapse group, two {'/'.join(PAIR_OPS)} groups (shortcut "
                "channel offsets ≥ 0) or two graph groups (its groups: "
                f"{ops}): the rtl layer engine cannot run it"
            )
        if lay.bias_q is None:
            raise ValueError(f"layer {index} ({lay.name}) is not quantised")
        srcs = [snn.layers[s.source] for s in lay.synapses]
        if len({s.T for s in srcs}) != 1:
            raise ValueError(f"layer {index} ({lay.name}): its sources differ in T")
        is_output = lay.kind == "output"
        c_out = _chw(lay.shape)[0]
        cb = ceil_div(c_out, lanes)
        pad = cb * lanes - c_out
        graph_syns = [s for s in lay.synapses if s.op == "graph"]
        csr, tables = None, iter(())
        if graph_syns:
            csr, table_list = CsrImage.from_synapses(graph_syns, lay.shape[1])
            tables = iter(table_list)
        groups, blocks = [], []
        for syn, src in zip(lay.synapses, srcs, strict=True):
            g, words = _group_image(syn, src, lay, lanes, cb, pad)
            base = sum(len(b) for b in blocks)
            g = replace(g, base=base, words=len(words))
            if syn.op == "graph":
                table, negate = next(tables)
                g = replace(g, table=table, negate=negate, empty_nodes=csr.empty_nodes(table))
            groups.append(g)
            blocks.append(words)
        out_shape = (lay.size, 1, 1) if lay.synapses[0].op == "linear" else _chw(lay.shape)
        bias = np.asarray(lay.bias_q, np.int64).reshape(c_out, -1)  # [C, pixels]
        bias = np.pad(bias, ((0, pad), (0, 0))).T.reshape(-1, lanes)  # pixel-major rows
        if is_output:
            theta = np.zeros((0, lanes), np.int64)
        else:
            theta = np.pad(np.asarray(lay.threshold_q, np.int64), ((0, pad), (0, 0)))
            theta = theta.T.reshape(-1, lanes)
        return cls(
            is_output, out_shape, srcs[0].T, lay.T, lay.T_w, fixed_base(srcs[0].Q),
            fixed_base(lay.Q), int(lay.sat_limit), np.concatenate(blocks), bias, theta,
            tuple(groups), max(8 * np.asarray(s.weight_q).dtype.itemsize for s in lay.synapses),
            csr,
        )  # fmt: skip


def _group_image(syn, src, lay, lanes: int, cb: int, pad: int):
    """(GroupImage with base 0, its weight words [words, P]) of one synapse group."""
    w = np.asarray(syn.weight_q, np.int64)
    if syn.op == "linear":
        src_shape = (src.size, 1, 1)
        w = w.reshape(lay.size, src.size, 1, 1)
        kernel, stride, padding = (1, 1), (1, 1), (0, 0)
    elif syn.op in ("graph", "embedding"):  # (features, nodes, 1) layers, a 1 × 1 window
        src_shape = _chw(src.shape)
        kernel, stride, padding = (1, 1), (1, 1), (0, 0)
    elif syn.op == "shortcut":
        src_shape = _chw(src.shape)
        kernel, stride, padding = (1, 1), tuple(syn.stride), (0, 0)
    else:
        src_shape = _chw(src.shape)
        kernel, stride, padding = tuple(syn.kernel), tuple(syn.stride), tuple(syn.padding)
    if syn.op in ("avgpool", "shortcut"):  # one weight per output channel: word cb, lane c − cb·P
        words = np.pad(w, (0, pad)).reshape(-1, lanes)
        op = syn.op
    elif syn.op == "graph":  # its weights are the CSR's (CsrImage)
        words = np.zeros((0, lanes), np.int64)
        op = syn.op
    elif syn.op == "embedding":  # W [C, N] → one P-lane word per (node n, cb)
        words = np.pad(w.reshape(lay.channels, -1), ((0, pad), (0, 0))).T.reshape(-1, lanes)
        op = syn.op
    else:  # [C_in, kh, kw, CB·P] → one P-lane word per (c_in, ky, kx, cb)
        words = np.pad(w, ((0, pad), (0, 0), (0, 0), (0, 0))).transpose(1, 2, 3, 0)
        words = words.reshape(-1, lanes)
        op = "conv"
    off = int(syn.channel_offset) if syn.op in ("shortcut", "graph") else 0
    return GroupImage(op, src_shape, kernel, stride, padding, off, 0, len(words)), words


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], 1, 1) if len(shape) == 1 else (shape[0], shape[1], shape[2])


#: Synapse ops the engine's address generator handles as a layer's only group.
OPS = ("linear", "conv", "avgpool", "shortcut", "embedding", "graph")
#: Ops of the two groups of a residual layer (any pair of them).
PAIR_OPS = ("conv", "avgpool", "shortcut")


def _engine_layer(lay) -> bool:
    """Whether :class:`LayerEngine` runs this layer: one synapse group; two (a residual
    layer) of :data:`PAIR_OPS`; or two graph groups (a two-rail source); shortcut channel
    offsets ≥ 0."""
    syns = lay.synapses
    if lay.kind not in ("neuron", "output") or len(syns) not in (1, 2):
        return False
    ops = [s.op for s in syns]
    if len(syns) == 2 and not (all(o in PAIR_OPS for o in ops) or ops == ["graph", "graph"]):
        return False
    return all(s.op in OPS and (s.op != "shortcut" or s.channel_offset >= 0) for s in syns)


class LayerEngine(wiring.Component):
    """One neuron or output layer on the reference engine, cycle for cycle as hwsim counts.

    Schedule (docs/architecture.md §4): initialisation scan (R rows + L_n); per phase
    k ≤ K: the events of phase k (I issue cycles + their adder cycles, then L_a if there
    were any; an event without fan-out costs its issue cycles only: with I = 1 the cycle
    after it, which must look at the next event, is that event's ISSUE or the first L_a
    cycle, so such layers need L_a ≥ 1 when I = 1), the boundary scan (R rows, a row with
    spikes waits while the output queue cannot take them, then L_n); finally the drain of
    the output queue. The output layer has no compares and no scan after its last event
    phase; the argmax readout (R rows + L_n) follows it.

    Registered reads (docs/architecture.md §10): the potential, weight, bias and threshold
    memories (and a graph layer's edge memory) read in one cycle, as SRAM macros, so each
    row is a two-stage pipeline. An adder cycle (ADD) is stage 1: it addresses the target
    row and the weight word; stage 2, the next cycle, adds and writes the row back while the
    next adder cycle reads; an event's last write-back falls in the next event's first issue
    cycle or the first L_a cycle (hence L_a ≥ 1). A scan reads one row ahead (the
    controller's ``rd_row``): the cycle before the scan (the last of L_a, L_n, or the one that
    sees the phase's end) reads its first row, and each scan cycle of the schedule is its
    row's stage 2 (compare, leak, push, write back), so the pushes, stalls and cycles are
    those of the asynchronous schedule. The potential SRAM reads the old row while writing
    it (read-first); each lane's :class:`~rtl.engine_mem.PotentialBank` forwards a write
    to the read of the same row in the same cycle (consecutive adder cycles on one row;
    with L_a = 1 the phase's last write-back and the scan's first read).

    The blocks of docs/architecture.md §1, each a component wired here: the input queue
    (:class:`~rtl.queue.InputQueue`); the issue stage and address generator
    (:class:`~rtl.addrgen.AddressGenerator`, with its :class:`~rtl.addrgen.EventDecoder`
    and, for a graph layer, :class:`~rtl.csr.CsrWalker`); the P lanes (:class:`~rtl.lane.Lane`:
    the PE's adder, the neuron unit :class:`~rtl.neuron.NeuronUnit` and the lane's bank of
    the potential SRAM with its bypass, :class:`~rtl.engine_mem.PotentialBank`); the scan
    row's neuron indices and threshold address (:class:`~rtl.engine_scan.ScanRow`); the
    output queue (:class:`~rtl.queue.OutputQueue`); the controller
    (:class:`~rtl.engine_ctrl.EngineController`, the schedule above, with the activity
    counters); the output layer's readout (:class:`~rtl.engine_scan.ArgmaxReadout`). The
    weight, bias and threshold memories are Amaranth memories of this module; ``rd_addr`` /
    ``rd_data`` are the host's (registered) read port into the potential SRAM.

    Parameters
    ----------
    arch : ArchConfig
        P = ``lanes``, W, A, D_out, I, L_a, L_n (I, L_a, L_n ≥ 1; a ValueError names the
        parameter otherwise).
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
        Source events in phase order (32-bit payload, valid in, ready out); a residual layer's
        events carry their synapse group, group 0's events of a phase before group 1's (the
        order only matters for the cycle count, which hwsim takes this way); a graph layer's
        events carry the group that reads their rail (channel), each sent once; a source of
        more than 2^20 neurons sends the index's bits 20–22 in the spare field; an event with
        ``end`` set closes the layer and is consumed when the layer is done. The engine peeks
        at the head to see that a phase is over, so events of phases after K must not be
        sent (hwsim's reader never reads them); an empty stream (no head to peek at) stalls
        the engine, cycles that hwsim, whose input queue never runs dry, does not count.
    o_spikes : Out(stream.Signature(SpikeEvent))
        Output spikes (index = neuron, phase = t_o), from the output queue; ``ready`` low is
        back-pressure.
    cycles, stalled, spikes_in, spikes_out, adds, compares, multiplies : Out(32)
        Activity counters of the current (or last) run (docs/architecture.md §6): all cycles
        of the layer; cycles a scan row waited for the output queue, plus the drain; events
        consumed; spikes pushed; synapse additions (neurons that exist, zero weight or not);
        threshold compares of the scans and the readout's compares; leaks (U · M).
    argmax, rd_addr, rd_data : output layer only
        ``argmax`` (Out): the class of the last run (ties: the lowest index); ``rd_addr``
        (In) / ``rd_data`` (Out, P signed A-bit lanes): the host's read port into the
        potential SRAM (row layout of docs/architecture.md §2), for the output potentials;
        a registered read: ``rd_data`` is the row ``rd_addr`` named in the previous cycle.
    """

    def __init__(self, arch: ArchConfig, image: LayerImage) -> None:
        groups = image.groups
        if image.n_out > 2**INDEX_BITS:
            raise ValueError(f"layers are limited to 2^{INDEX_BITS} neurons")
        # a source of more than 2^20 neurons (a graph network's input layer: features × nodes)
        # sends the index's bits 20–22 in the event's spare field (docs/architecture.md §1)
        if any(np.prod(g.src_shape) > 2 ** (INDEX_BITS + WIDE_INDEX_BITS) for g in groups):
            raise ValueError(
                f"source layers are limited to 2^{INDEX_BITS + WIDE_INDEX_BITS} neurons"
            )
        if len(groups) > 2:
            raise ValueError("the event's group bit selects one of at most two synapse groups")
        if image.t_src > 2**PHASE_BITS or image.t > 2**PHASE_BITS:
            raise ValueError(f"phases are limited to 2^{PHASE_BITS}")
        if arch.event_issue_cycles < 1 or arch.neuron_pipeline_cycles < 1:
            raise ValueError(
                "the rtl engine needs event_issue_cycles ≥ 1 and neuron_pipeline_cycles ≥ 1, "
                f"got {arch.event_issue_cycles!r} and {arch.neuron_pipeline_cycles!r}"
            )
        # the memories' reads are registered: a phase's last adder cycle writes its row back
        # in the next cycle, the first L_a cycle, while the scan (or readout) that follows
        # reads its first row (docs/architecture.md §10); with L_a = 0 both would fall into
        # the scan's first cycle. (An event without fan-out, I = 1: the ISSUE state that sees
        # the phase's end is that first L_a cycle.)
        if arch.adder_pipeline_cycles < 1:
            raise ValueError(
                "the rtl engine needs adder_pipeline_cycles (L_a) ≥ 1: its memories have "
                "registered reads, and the write-back of a phase's last adder cycle takes the "
                f"first L_a cycle; got adder_pipeline_cycles={arch.adder_pipeline_cycles!r}"
            )
        self.arch, self.image = arch, image
        #: Lane width of the weight words and the PE array's weights: W, or 16 for a residual
        #: layer's int16 shortcut weights (hwsim sizes the words at W bits).
        self.weight_bits = max(arch.weight_bits, image.weight_bits)
        self.cb = ceil_div(image.out_shape[0], arch.lanes)  # words per pixel (channel blocks)
        self.rows = image.pixels * self.cb
        # the signature is a dict, not annotations: under `from __future__ import annotations`
        # Amaranth cannot read annotation strings
        ports = {
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "i_events": In(stream.Signature(SpikeEvent)),
            "o_spikes": Out(stream.Signature(SpikeEvent)),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
        }
        if image.is_output:
            ports["argmax"] = Out(range(max(image.n_out, 2)))
            ports["rd_addr"] = In(range(max(self.rows, 2)))  # (as the memory's address)
            ports["rd_data"] = Out(data.ArrayLayout(signed(arch.potential_bits), arch.lanes))
        super().__init__(ports)

    # ------------------------------------------------------------------ memories
    def _memories(self, m: Module):
        p, a, img = self.arch.lanes, self.arch.potential_bits, self.image
        wrow = data.ArrayLayout(signed(self.weight_bits), p)
        arow = data.ArrayLayout(signed(a), p)
        # the potential SRAM: one bank per lane, in its lane (rtl/lane.py)
        lanes = [Lane(a, self.weight_bits, img.sat_limit, self.rows, host=img.is_output)
                 for _ in range(p)]  # fmt: skip
        for i, lane in enumerate(lanes):
            m.submodules[f"lane{i}"] = lane
        # (memories of one word get two: a zero-width address is not legal Verilog)
        m.submodules.wgt = wgt = memory.Memory(
            shape=wrow, depth=max(len(img.weights), 2), init=img.weights.tolist()
        )
        m.submodules.bias = bias = memory.Memory(
            shape=arow, depth=max(self.rows, 2), init=img.bias.tolist()
        )
        thr_r = None
        if not img.is_output:
            m.submodules.thr = thr = memory.Memory(
                shape=arow, depth=max(len(img.theta), 2), init=img.theta.tolist()
            )
            thr_r = thr.read_port(domain="sync")
        if img.is_output:  # the host reads the output potentials
            for i, lane in enumerate(lanes):
                m.d.comb += [lane.host_addr.eq(self.rd_addr), self.rd_data[i].eq(lane.host_u)]
        # registered reads (SRAM macros): a word is addressed one cycle before it is used
        return lanes, wgt.read_port(domain="sync"), bias.read_port(domain="sync"), thr_r

    def _wire_lanes(self, m: Module, lanes, ag, ctrl, row, bias_r, thr_r) -> None:
        """The P lanes: the potential SRAM's addresses and write select (shared), and each
        lane's weight, initial potential, threshold and valid bit (its slice of the words)."""
        # adder cycles: stage 1 (ADD) addresses the target row and the weight word; stage 2
        # (the next cycle) adds the word to the row and writes it back (add_row, add_we)
        add_row, add_we = Signal.like(ag.row), Signal()
        m.d.sync += [add_row.eq(ag.row), add_we.eq(ctrl.step)]
        # read the adder's target, else the scan's next row; one write port for the initial
        # potentials (fired flags 0), the adder's and the neuron unit's words
        rd_addr, wr_addr, wr_en = Signal.like(ag.row), Signal.like(ag.row), Signal()
        m.d.comb += [rd_addr.eq(Mux(ctrl.step, ag.row, ctrl.rd_row)),
                     wr_addr.eq(Mux(add_we, add_row, ctrl.row)),
                     wr_en.eq(ctrl.init | add_we | ctrl.scan_we)]  # fmt: skip
        for i, lane in enumerate(lanes):
            m.d.comb += [lane.rd_addr.eq(rd_addr), lane.wr_addr.eq(wr_addr),
                         lane.wr_en.eq(wr_en), lane.init.eq(ctrl.init), lane.add.eq(add_we),
                         lane.weight.eq(ag.weights[i]), lane.negate.eq(ag.negate),
                         lane.bias.eq(bias_r.data[i]), lane.valid.eq(row.lane_valid[i]),
                         lane.compare.eq(ctrl.compare), lane.leak.eq(ctrl.leak),
                         lane.m.eq(ctrl.m)]  # fmt: skip
            if thr_r is not None:  # (the output layer has no thresholds)
                m.d.comb += lane.theta.eq(thr_r.data[i])
        fire = Cat(*(lane.fire for lane in lanes))
        m.d.comb += [ctrl.fire.eq(fire), ctrl.compared.eq(Cat(*(x.compared for x in lanes))),
                     ctrl.leaked.eq(Cat(*(x.leaked for x in lanes)))]  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        arch, img, p = self.arch, self.image, self.arch.lanes
        lanes, wgt_r, bias_r, thr_r = self._memories(m)
        # the input queue (D_in events) between the event buffer and the issue stage
        m.submodules.iq = iq = InputQueue(arch.input_queue_depth)
        m.submodules.ag = ag = AddressGenerator(img, p, self.weight_bits)
        m.submodules.row = row = ScanRow(img, p)
        m.submodules.oq = oq = OutputQueue(p, arch.output_queue_depth)
        m.submodules.ctrl = ctrl = EngineController(arch, img)
        wiring.connect(m, wiring.flipped(self.i_events), iq.i)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))
        m.d.comb += [ctrl.start.eq(self.start), self.busy.eq(ctrl.busy), self.done.eq(ctrl.done)]
        m.d.comb += [getattr(self, name).eq(getattr(ctrl, name)) for name in COUNTERS]
        # issue: the controller pops the queue's head, the address generator decodes it
        head = iq.o.payload
        m.d.comb += [ctrl.head.eq(head), ctrl.head_valid.eq(iq.o.valid), iq.o.ready.eq(ctrl.pop),
                     ag.head.eq(head), ag.load.eq(ctrl.load), ag.step.eq(ctrl.step),
                     ctrl.head_fanout.eq(ag.head_fanout), ctrl.fanout.eq(ag.fanout),
                     ctrl.last.eq(ag.last), ctrl.lanes.eq(ag.lanes),
                     wgt_r.addr.eq(ag.wgt_addr), ag.wgt_data.eq(wgt_r.data)]  # fmt: skip
        # scans: stage 1 addresses the row of the next scan cycle (ctrl.rd_row: B, U, Θq);
        # stage 2 is the controller's row (initial potentials, boundary scan, readout)
        m.d.comb += [row.k.eq(ctrl.k), row.cb.eq(ctrl.cb), row.pix.eq(ctrl.pix),
                     bias_r.addr.eq(ctrl.rd_row)]  # fmt: skip
        if thr_r is not None:
            m.d.comb += [row.rd_k.eq(ctrl.rd_k), row.rd_cb.eq(ctrl.rd_cb),
                         thr_r.addr.eq(row.theta_addr)]  # fmt: skip
        self._wire_lanes(m, lanes, ag, ctrl, row, bias_r, thr_r)
        m.d.comb += [oq.push_data.eq(row.events), oq.push_mask.eq(ctrl.fire),
                     oq.push_en.eq(ctrl.push_en), ctrl.push_ok.eq(oq.push_ok),
                     ctrl.out_empty.eq(oq.level == 0)]  # fmt: skip
        if img.is_output:
            m.submodules.readout = ro = ArgmaxReadout(img, p, arch.potential_bits)
            m.d.comb += [ro.row[i].eq(lane.word) for i, lane in enumerate(lanes)]
            m.d.comb += [ro.first.eq(ctrl.row == 0), ro.cb.eq(ctrl.cb), ro.pix.eq(ctrl.pix),
                         ro.en.eq(ctrl.readout), self.argmax.eq(ro.argmax)]  # fmt: skip
        return m
