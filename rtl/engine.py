"""The layer engine for a linear or convolution neuron layer (docs/architecture.md §3–§4)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from archspec.fanout import ceil_div
from converter.model import SnnModel
from converter.quantize import fixed_base
from rtl.csr import CsrImage, CsrWalker
from rtl.events import INDEX_BITS, PHASE_BITS, SpikeEvent, event_word, pot_word
from rtl.neuron import AdderArray, NeuronUnit
from rtl.queue import InputQueue, OutputQueue

#: Width of the activity counters.
COUNTER_BITS = 32
#: Bits of the event's spare field that carry the source index's bits 20–22 for a source of
#: more than 2^20 neurons (a graph network's input layer); zero for every other source.
WIDE_INDEX_BITS = 3
#: The activity counters of an engine run (ports of the same names).
COUNTERS = ("cycles", "stalled", "spikes_in", "spikes_out", "adds", "compares", "multiplies")


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
            ny, nx = y + py - ky, x + px - kx
            ok_y = ny >= 0 and ny % sy == 0 and ny // sy < h_out
            ok_x = nx >= 0 and nx % sx == 0 and nx // sx < w_out
            mask.append(ok_y and ok_x)
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
    phase; the argmax readout (R rows + L_n) follows it. The memories are read
    asynchronously, so each adder or scan cycle is one row's read-modify-write; L_a and L_n
    are the pipeline cycles the schedule reserves (a registered-read pipeline would fill
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
        potential SRAM (row layout of docs/architecture.md §2), for the output potentials.
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
        # an event without fan-out ends its I issue cycles with the phase's next event or the
        # first L_a cycle: with I = 1 the ISSUE state decides the latter a cycle late, so it
        # counts it as that first L_a cycle (there is none for L_a = 0)
        if (
            image.has_events_without_fanout()
            and arch.event_issue_cycles == 1
            and arch.adder_pipeline_cycles == 0
        ):
            raise ValueError(
                "events without fan-out (stride, shortcut) need event_issue_cycles ≥ 2 or "
                "adder_pipeline_cycles ≥ 1 on the rtl engine"
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
        row = data.ArrayLayout(pot_word(a), p)
        wrow = data.ArrayLayout(signed(self.weight_bits), p)
        arow = data.ArrayLayout(signed(a), p)
        # (memories of one word get two: a zero-width address is not legal Verilog)
        m.submodules.pot = pot = memory.Memory(shape=row, depth=max(self.rows, 2), init=[])
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
            thr_r = thr.read_port(domain="comb")
        if img.is_output:  # the host reads the output potentials
            host = pot.read_port(domain="comb")
            m.d.comb += host.addr.eq(self.rd_addr)
            for lane in range(p):
                m.d.comb += self.rd_data[lane].eq(host.data[lane].u)
        # asynchronous reads: a row is read, updated and written back in one cycle
        return (
            pot.read_port(domain="comb"),
            pot.write_port(),
            wgt.read_port(domain="comb"),
            bias.read_port(domain="comb"),
            thr_r,
        )

    def _tap_geometry(self, group: GroupImage, y, x):
        """Per kernel tap of ``group`` (ky-major): (valid, oy, ox) of a source pixel (y, x)."""
        return window_taps(y, x, group.src_shape, self.image.out_shape, group.kernel,
                           group.stride, group.padding)  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        arch, img, rows, n_cb = self.arch, self.image, self.rows, self.cb
        p = arch.lanes
        groups = img.groups
        two = len(groups) == 2
        c_out, _, w_out = img.out_shape
        n_taps = max(g.taps for g in groups)
        no_fanout = img.has_events_without_fanout()
        k_last = img.last_phase
        pot_r, pot_w, wgt_r, bias_r, thr_r = self._memories(m)
        m.submodules.pe = pe = AdderArray(p, self.weight_bits, arch.potential_bits)
        m.submodules.nu = nu = NeuronUnit(p, arch.potential_bits, img.sat_limit)
        m.submodules.oq = oq = OutputQueue(p, arch.output_queue_depth)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))
        csr = None
        if img.csr is not None:  # the graph address generator (rtl/csr.py)
            m.submodules.csr = csr = CsrWalker(img.csr)

        k = Signal(range(k_last + 2))  # the phase
        r = Signal(range(rows + 1))  # the row of the init and boundary scans
        cb = Signal(range(n_cb + 1))  # channel block of the row (scan) or of the tap (adds)
        pix = Signal(range(img.pixels + 1))  # output pixel of the scan row
        wait = Signal(range(max(arch.adder_pipeline_cycles, arch.neuron_pipeline_cycles,
                                arch.event_issue_cycles) + 1))  # fmt: skip
        neg = Signal()
        had = Signal()  # the current phase had events (its scan waits L_a for the adders)
        # the input queue (D_in events) between the event buffer and the issue stage
        m.submodules.iq = iq = InputQueue(arch.input_queue_depth)
        wiring.connect(m, wiring.flipped(self.i_events), iq.i)
        src = iq.o
        head = src.payload
        # the event being added: group, source channel and pixel, taps still to do (each
        # group has its own source shape; the registers are as wide as the widest)
        ev_g = Signal()
        ev_c = Signal(range(max(*(g.src_shape[0] for g in groups), 2)))  # (≥ 1 bit)
        ev_y = Signal(range(max(*(g.src_shape[1] for g in groups), 2)))
        ev_x = Signal(range(max(*(g.src_shape[2] for g in groups), 2)))
        todo = Signal(n_taps)

        # decompose the head's flat C·H·W index per group (constant divisors) and select the
        # head's group
        head_g = head.group if two else Const(0, 1)
        heads = []
        head_index = head.index
        if any(np.prod(g.src_shape) > 2**INDEX_BITS for g in groups):
            head_index = Cat(head.index, head.spare)  # the index's high bits in the spare field
        for gi, g in enumerate(groups):
            c_in_g, h_in, w_in = g.src_shape
            hw = h_in * w_in
            hc = Signal.like(ev_c, name=f"head_c{gi}")
            hy = Signal.like(ev_y, name=f"head_y{gi}")
            hx = Signal.like(ev_x, name=f"head_x{gi}")
            rem = Signal(range(max(hw, 2)), name=f"head_rem{gi}")
            m.d.comb += [rem.eq(head_index % hw), hc.eq(head_index // hw),
                         hy.eq(rem // w_in), hx.eq(rem % w_in)]  # fmt: skip
            bits = [Const(1, 1) if ok is True else ok for ok, _, _ in
                    self._tap_geometry(g, hy, hx)]  # fmt: skip
            if g.op == "shortcut" and c_in_g + g.channel_offset > c_out:
                bits = [b & (hc + g.channel_offset < c_out) for b in bits]  # no such channel
            if g.op == "graph" and g.empty_nodes:  # a node without edges: no target
                bits = [csr.nonempty]
            mask = Signal(n_taps, name=f"head_mask{gi}")
            m.d.comb += mask.eq(Cat(*bits))
            heads.append((hc, hy, hx, mask))
        head_c, head_y, head_x, head_mask = (
            [Signal.like(v, name=n) for v, n in
             zip(heads[0], ("head_c", "head_y", "head_x", "head_mask"), strict=True)]
        )  # fmt: skip
        for sel, v0, v1 in zip((head_c, head_y, head_x, head_mask), heads[0], heads[-1],
                               strict=True):  # fmt: skip
            m.d.comb += sel.eq(Mux(head_g, v1, v0) if two else v0)
        # the event's sign: a graph group sharing the other's negated table subtracts
        negates = [g.negate for g in groups]
        head_neg = head.sign
        if any(negates):
            head_neg = head.sign ^ (Mux(head_g, int(negates[-1]), int(negates[0])) if two else 1)
        if csr is not None:  # look up the head's node: its edge range, whether it has edges
            tables = [g.table for g in groups if g.op == "graph"]
            m.d.comb += csr.node.eq(head_y)
            if img.csr.tables == 2:
                m.d.comb += csr.table.eq(Mux(head_g, tables[-1], tables[0]))
        # the lowest tap still to do
        tap = Signal(range(max(n_taps, 2)))
        for t in reversed(range(n_taps)):
            with m.If(todo[t]):
                m.d.comb += tap.eq(t)
        # per group: the tap's row, weight address and word, lanes that add, last block
        in_add = Signal()
        add_row = Signal(range(max(rows, 2)))
        wbits = self.weight_bits
        per_group = []
        for gi, g in enumerate(groups):
            geo = self._tap_geometry(g, ev_y, ev_x)
            oy = Array(t[1] for t in geo)[tap] if len(geo) > 1 else geo[0][1]
            ox = Array(t[2] for t in geo)[tap] if len(geo) > 1 else geo[0][2]
            row_g = Signal.like(add_row, name=f"add_row{gi}")
            addr_g = Signal.like(wgt_r.addr, name=f"wgt_addr{gi}")
            word_g = Signal(p * wbits, name=f"wgt_word{gi}")
            if g.op == "graph":  # one target per CSR edge: (ev_c − offset, target node)
                f_g = Signal(range(max(c_out, 2)), name=f"tgt_c{gi}")
                ev_cb = Signal(range(max(n_cb, 2)), name=f"tgt_cb{gi}")
                ev_lane = Signal(range(max(p, 2)), name=f"tgt_lane{gi}")
                m.d.comb += [f_g.eq(ev_c - g.channel_offset), ev_cb.eq(f_g // p),
                             ev_lane.eq(f_g % p),
                             row_g.eq(csr.target * n_cb + ev_cb),
                             addr_g.eq(0)]  # fmt: skip
                # the edge's weight (sign-extended to the lanes) in the target's lane, 0 in
                # the others
                w_g = Signal(signed(wbits), name=f"edge_w{gi}")
                m.d.comb += w_g.eq(csr.weight)
                m.d.comb += word_g.eq(Cat(*(
                    Mux(ev_lane == lane, w_g, 0)[:wbits] for lane in range(p)
                )))  # fmt: skip
                lanes_g, last_g = 1, csr.last
            elif g.depthwise:  # one target: channel ev_c + offset, in its channel block
                chan_g = Signal(range(max(c_out + g.src_shape[0] + g.channel_offset, 2)),
                                name=f"tgt_c{gi}")  # fmt: skip
                ev_cb = Signal(range(max(n_cb, 2)), name=f"tgt_cb{gi}")
                ev_lane = Signal(range(max(p, 2)), name=f"tgt_lane{gi}")
                m.d.comb += [chan_g.eq(ev_c + g.channel_offset), ev_cb.eq(chan_g // p),
                             ev_lane.eq(chan_g % p),
                             row_g.eq((oy * w_out + ox) * n_cb + ev_cb),
                             addr_g.eq(g.base + ev_cb)]  # fmt: skip
                # only the target's lane adds (the others add 0: their potentials are
                # unchanged); one whole-word assignment
                raw = wgt_r.data.as_value()
                m.d.comb += word_g.eq(Cat(*(
                    Mux(ev_lane == lane, raw[lane * wbits:(lane + 1) * wbits], 0)
                    for lane in range(p)
                )))  # fmt: skip
                lanes_g, last_g = 1, Const(1, 1)
            else:
                # conv: weight words by (source channel, tap, cb); embedding (a one-hot
                # (1, N, 1) source): by (source node, cb)
                if g.op == "embedding":
                    word_row = ev_y * g.src_shape[2] + ev_x
                else:
                    word_row = ev_c * g.taps + tap
                m.d.comb += [row_g.eq((oy * w_out + ox) * n_cb + cb),
                             addr_g.eq(g.base + word_row * n_cb + cb),
                             word_g.eq(wgt_r.data)]  # fmt: skip
                # the lanes of this channel block that hold a neuron
                lanes_g = Mux(cb == n_cb - 1, c_out - (n_cb - 1) * p, p)
                last_g = Const(1, 1) if n_cb == 1 else cb == n_cb - 1
            per_group.append((row_g, addr_g, word_g, lanes_g, last_g))

        def by_group(j: int):
            """Field j of the event's group."""
            v0, v1 = per_group[0][j], per_group[-1][j]
            return Mux(ev_g, v1, v0) if two else v0

        add_lanes = Signal(range(p + 1))
        last_block = Signal()
        m.d.comb += [add_row.eq(by_group(0)), wgt_r.addr.eq(by_group(1)),
                     pe.weights.eq(by_group(2)), add_lanes.eq(by_group(3)),
                     last_block.eq(by_group(4))]  # fmt: skip
        if csr is not None:  # each adder cycle of a graph event is one edge
            m.d.comb += csr.step.eq(in_add)

        m.d.comb += [
            pot_r.addr.eq(Mux(in_add, add_row, r)),
            pot_w.addr.eq(Mux(in_add, add_row, r)),
            bias_r.addr.eq(r),
            pe.row_in.eq(pot_r.data),
            pe.negate.eq(neg),
            nu.row_in.eq(pot_r.data),
            nu.leak.eq(k < k_last),
            # M_in while the next phase still has input (k + 1 ≤ T_src − 1), then M_out
            nu.m.eq(Mux(k + 1 <= img.t_src - 1, img.m_in, img.m_out)),
        ]
        if img.is_output:  # no thresholds: the output layer never fires
            m.d.comb += nu.compare.eq(0)
        else:
            # k ≥ T_w (always true for T_w = 0: a constant, not a comparison Verilator flags)
            m.d.comb += nu.compare.eq(k >= img.t_w if img.t_w else 1)
            # threshold word (k − T_w) · CB + cb; only read when k ≥ T_w
            m.d.comb += [thr_r.addr.eq((k - img.t_w) * n_cb + cb), nu.theta.eq(thr_r.data)]
        t_o = Signal(PHASE_BITS)
        m.d.comb += t_o.eq(k - img.t_w)
        # whole-vector assignments: Icarus turns a net driven lane by lane (or field by field)
        # into a resolved multi-driver net and re-packs all its bits for every reader on every
        # change, which made a P = 16 engine ~30× slower
        valid, events = [], []
        for lane in range(p):
            chan = cb * p + lane
            valid.append(chan < c_out)
            events.append(event_word(chan * img.pixels + pix, t_o))  # C·H·W order
        m.d.comb += [nu.lane_valid.eq(Cat(*valid)), oq.push_data.eq(Cat(*events))]
        m.d.comb += oq.push_mask.eq(nu.fire)

        def wait_then(n: int, state: str, then: str) -> None:
            """Go to ``state`` for n cycles (n ≥ 1) and then to ``then``; n = 0 goes on."""
            if n:
                m.d.sync += wait.eq(n - 1)
                m.next = state
            else:
                m.next = then

        def after_events(kx, had_events) -> None:
            """The phase kx's next event, its end (L_a drain, then the scan or, after the
            output layer's last phase, the readout), or a wait for the input stream; phases
            past the source's last have no event phase."""
            more = src.valid & ~head.end & (head.phase == kx)
            with m.If((kx < img.t_src) & ~src.valid):
                m.next = "WAIT_IN"
            with m.Elif((kx < img.t_src) & more):
                m.next = "ISSUE"
            with m.Else():
                m.d.sync += [r.eq(0), cb.eq(0), pix.eq(0)]
                if img.is_output:
                    with m.If(kx == k_last):
                        tail_then(had_events, "READOUT")
                    with m.Else():
                        tail_then(had_events, "SCAN")
                else:
                    tail_then(had_events, "SCAN")

        def tail_then(had_events, then: str) -> None:
            """The L_a adder drain if the phase had events, then ``then``."""
            if isinstance(had_events, int):
                if had_events:
                    wait_then(arch.adder_pipeline_cycles, "ADDER_TAIL", then)
                else:
                    m.next = then
                return
            with m.If(had_events):
                wait_then(arch.adder_pipeline_cycles, "ADDER_TAIL", then)
            with m.Else():
                m.next = then

        def to_scan() -> None:
            """After the event phase k: the boundary scan (output layer: after its last event
            phase, the readout)."""
            if img.is_output:
                with m.If(k == k_last):
                    m.next = "READOUT"
                with m.Else():
                    m.next = "SCAN"
            else:
                m.next = "SCAN"

        def next_row() -> None:
            """Advance the scan by one row: channel block, then pixel."""
            m.d.sync += [r.eq(r + 1), cb.eq(Mux(cb == n_cb - 1, 0, cb + 1))]
            with m.If(cb == n_cb - 1):
                m.d.sync += pix.eq(pix + 1)

        counters = {name: getattr(self, name) for name in COUNTERS}
        with m.FSM():
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [r.eq(0), k.eq(0), had.eq(0), self.done.eq(0)]
                m.d.sync += [c.eq(0) for c in counters.values()]
                m.next = "INIT"
            with m.State("INIT"):  # U ← B, fired ← 0, one row per cycle
                m.d.comb += [self.busy.eq(1), pot_w.en.eq(1)]
                m.d.comb += pot_w.data.eq(
                    Cat(*(Cat(bias_r.data[lane], Const(0, 1)) for lane in range(p)))
                )
                m.d.sync += r.eq(r + 1)
                with m.If(r == rows - 1):
                    m.d.sync += wait.eq(arch.neuron_pipeline_cycles - 1)
                    m.next = "INIT_TAIL"
            with countdown(m, "INIT_TAIL", wait, self.busy):
                after_events(k, 0)
            with m.State("WAIT_IN"):  # the input stream ran dry: not in hwsim's count
                m.d.comb += self.busy.eq(1)
                after_events(k, had)
            with m.State("ISSUE"):  # pop the event, latch its source pixel and valid taps
                m.d.comb += self.busy.eq(1)
                more = src.valid & ~head.end & (head.phase == k)
                with m.If(more):
                    m.d.comb += src.ready.eq(1)
                    if csr is not None:
                        m.d.comb += csr.load.eq(1)
                    m.d.sync += [
                        ev_g.eq(head_g), ev_c.eq(head_c), ev_y.eq(head_y), ev_x.eq(head_x),
                        todo.eq(head_mask), neg.eq(head_neg), cb.eq(0), had.eq(1),
                        self.spikes_in.eq(self.spikes_in + 1),
                    ]  # fmt: skip
                    if arch.event_issue_cycles > 1:
                        wait_then(arch.event_issue_cycles - 1, "ISSUE_WAIT", "ADD")
                    elif no_fanout:  # without fan-out: on to the next event (or phase end)
                        m.next = "ADD"
                        with m.If(head_mask == 0):
                            m.next = "ISSUE"
                    else:
                        m.next = "ADD"
                if no_fanout and arch.event_issue_cycles == 1:
                    # after an event without fan-out (I = 1): the stream ran dry (wait here,
                    # as in WAIT_IN) or the phase is over: this is the first L_a cycle
                    with m.Elif(src.valid):
                        m.d.sync += [r.eq(0), cb.eq(0), pix.eq(0)]
                        if arch.adder_pipeline_cycles > 1:
                            wait_then(arch.adder_pipeline_cycles - 1, "ADDER_TAIL", "SCAN")
                        else:
                            to_scan()
            with countdown(m, "ISSUE_WAIT", wait, self.busy):
                if no_fanout:  # an event without fan-out costs its issue cycles only
                    with m.If(todo == 0):
                        after_events(k, 1)
                    with m.Else():
                        m.next = "ADD"
                else:
                    m.next = "ADD"
            with m.State("ADD"):  # one channel block of one tap: read, add the word, write
                m.d.comb += [self.busy.eq(1), in_add.eq(1), pot_w.en.eq(1),
                             pot_w.data.eq(pe.row_out)]  # fmt: skip
                m.d.sync += [self.adds.eq(self.adds + add_lanes), cb.eq(cb + 1)]
                with m.If(last_block):
                    rest = todo & ~(1 << tap)
                    m.d.sync += [cb.eq(0), todo.eq(rest)]
                    with m.If(rest == 0):
                        after_events(k, 1)
            with countdown(m, "ADDER_TAIL", wait, self.busy):
                to_scan()
            with m.State("SCAN"):  # boundary k → k + 1: compare, fire, leak; one row a cycle
                m.d.comb += [self.busy.eq(1), oq.push_en.eq(1)]
                with m.If(oq.push_ok):
                    m.d.comb += pot_w.en.eq(1)
                    m.d.comb += pot_w.data.eq(nu.row_out)
                    m.d.sync += [
                        self.spikes_out.eq(self.spikes_out + _popcount(nu.fire)),
                        self.compares.eq(self.compares + _popcount(nu.compared)),
                        self.multiplies.eq(self.multiplies + _popcount(nu.leaked)),
                    ]
                    next_row()
                    with m.If(r == rows - 1):
                        m.d.sync += wait.eq(arch.neuron_pipeline_cycles - 1)
                        m.next = "SCAN_TAIL"
                with m.Else():  # the queue cannot take this row's spikes yet
                    m.d.sync += self.stalled.eq(self.stalled + 1)
            with countdown(m, "SCAN_TAIL", wait, self.busy):
                m.d.sync += had.eq(0)
                self._next_phase(m, k, k_last, after_events)
            if img.is_output:
                self._readout(m, r, cb, pix, next_row, pot_r, wait)
            with m.State("DRAIN"):  # the layer ends when the output queue is empty
                with m.If(oq.level != 0):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += self.stalled.eq(self.stalled + 1)
                with m.Else():
                    # consume the end-of-layer marker
                    m.d.comb += src.ready.eq(src.valid & head.end)
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

    def _readout(self, m: Module, r, cb, pix, next_row, pot_r, wait) -> None:
        """The output layer's argmax readout: one row of P potentials per cycle, then L_n;
        ties go to the lowest neuron index (docs/architecture.md §4)."""
        arch, img, p = self.arch, self.image, self.arch.lanes
        a, n_cb, c_out = arch.potential_bits, self.cb, img.out_shape[0]
        run_u, run_i = Signal(signed(a)), Signal(range(max(img.n_out, 2)))  # best so far
        # the row's winner: a chain over the lanes, starting from the best of earlier rows
        cand_u, cand_i = Signal(signed(a)), Signal.like(run_i)
        m.d.comb += [cand_u.eq(Mux(r == 0, -(2 ** (a - 1)), run_u)),
                     cand_i.eq(Mux(r == 0, img.n_out - 1, run_i))]  # fmt: skip
        for lane in range(p):
            chan = cb * p + lane
            u, idx = pot_r.data[lane].u, chan * img.pixels + pix
            wins = Signal(name=f"wins{lane}")
            m.d.comb += wins.eq((chan < c_out) & ((u > cand_u) | ((u == cand_u) & (idx < cand_i))))
            next_u = Signal(signed(a), name=f"cand_u{lane}")
            next_i = Signal.like(run_i, name=f"cand_i{lane}")
            m.d.comb += [next_u.eq(Mux(wins, u, cand_u)), next_i.eq(Mux(wins, idx, cand_i))]
            cand_u, cand_i = next_u, next_i
        valid_lanes = Mux(cb == n_cb - 1, c_out - (n_cb - 1) * p, p)
        with m.State("READOUT"):
            m.d.comb += self.busy.eq(1)
            m.d.sync += [run_u.eq(cand_u), run_i.eq(cand_i), self.argmax.eq(cand_i),
                         self.compares.eq(self.compares + valid_lanes)]  # fmt: skip
            next_row()
            with m.If(r == self.rows - 1):
                m.d.sync += wait.eq(arch.neuron_pipeline_cycles - 1)
                m.next = "READOUT_TAIL"
        with countdown(m, "READOUT_TAIL", wait, self.busy):
            m.next = "DRAIN"


def window_taps(y, x, src_shape, out_shape, kernel, stride, padding) -> list:
    """Per kernel tap (ky-major): (valid, oy, ox) of source pixel (y, x), Values (§3).

    Conditions that are constant for the layer's shapes are folded here, so that the
    Verilog holds no constant comparisons (Verilator's UNSIGNED/CMPCONST lint)."""
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    _, h_in, w_in = src_shape
    _, h_out, w_out = out_shape
    taps = []
    for ky in range(kh):
        for kx in range(kw):
            ok_y, oy = _axis(y, py - ky, sy, h_in, h_out)
            ok_x, ox = _axis(x, px - kx, sx, w_in, w_out)
            taps.append((_and(ok_y, ok_x), oy, ox))
    return taps


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
