"""The output-stationary engine (docs/architecture.md §11, "The RTL of this dataflow"):
the layer's image, the controller and the top."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from converter.model import SnnModel
from rtl.engine import LayerImage
from rtl.engine_ctrl import COUNTER_BITS, COUNTERS, _popcount, countdown
from rtl.engine_scan import ArgmaxReadout
from rtl.events import INDEX_BITS, PHASE_BITS, SpikeEvent, event_word
from rtl.neuron import M_BITS
from rtl.os_blocks import (
    EventReader,
    IndexReader,
    event_entry,
    item_layout,
    token_layout,
)
from rtl.os_geom import OsGeometry, OsGroup, TileWalk
from rtl.os_lane import OsLane
from rtl.os_sort import SortingBuckets
from rtl.queue import OutputQueue

#: Depth of the run FIFO (in runs, beyond two phases of the widest tile) and of the token
#: FIFO: the readers stay ahead of the lanes (docs/architecture.md §11, RTL).
RUN_FIFO_SLACK, TOKEN_FIFO_DEPTH = 2, 8
#: Cycles from the first tile's last index read to the lanes' first token, plus one token of
#: lead (so a phase's end marker is there with its last event): the layer's start is
#: max(L_a, r + START_AFTER_INDEX) (hwsim's ``os_neuron_layer``).
START_AFTER_INDEX = 4


#: Synapse ops the output-stationary engine reads (a layer of one group, or two: residual).
OS_OPS = ("linear", "conv", "avgpool", "shortcut")


def os_refusal(snn: SnnModel, index: int, arch: ArchConfig) -> str | None:
    """Why :class:`OsEngine` cannot run layer ``index`` on ``arch``, or None: it runs neuron
    and output layers of one or two linear, conv, average-pooling or shortcut groups (a
    shortcut's channel offset ≥ 0) whose windows are at least their strides (a tile's
    receptive field is a rectangle: one index read per row) or 1 × 1 (a strided shortcut or
    projection: one read per pixel), and a flat output layer."""
    lay = snn.layers[index]
    syns = lay.synapses
    ops = [s.op for s in syns]
    if lay.kind not in ("neuron", "output") or len(syns) not in (1, 2) or any(
        op not in OS_OPS for op in ops
    ):  # fmt: skip
        return (
            f"the output-stationary rtl engine runs layers of one or two {'/'.join(OS_OPS)} "
            f"synapse groups; this {lay.kind} layer's groups are {ops or 'none'} (modelled by "
            "hwsim only)"
        )
    for syn in syns:
        if syn.op == "shortcut" and syn.channel_offset < 0:
            return "a shortcut with a negative channel offset"
        small = syn.op != "linear" and any(
            k < s for k, s in zip(syn.kernel, syn.stride, strict=True)
        )  # fmt: skip
        if small and tuple(syn.kernel) != (1, 1):
            return (
                f"a {syn.op} kernel {tuple(syn.kernel)} smaller than its stride "
                f"{tuple(syn.stride)} (neither a rectangle of source pixels nor single pixels)"
            )
    if len({snn.layers[s.source].T for s in syns}) != 1:
        return "its sources differ in T"
    if lay.kind == "output" and len(lay.shape) != 1:
        return "the output-stationary rtl engine reads back flat output layers only"
    srcs = [snn.layers[s.source] for s in syns]
    if srcs[0].T > 2**PHASE_BITS or lay.T + lay.T_w > 2**PHASE_BITS:
        return f"phases are limited to 2^{PHASE_BITS}"
    if max(s.size for s in srcs) > 2**INDEX_BITS or lay.size > 2**INDEX_BITS:
        return f"layers are limited to 2^{INDEX_BITS} neurons"
    return None


@dataclass(frozen=True)
class OsImage:
    """One layer as the output-stationary engine holds it.

    Attributes
    ----------
    layer : LayerImage
        Its constants (T, T_w, bases, L, ...) in the potential-SRAM engine's image.
    geometry : OsGeometry
        Groups, windows and tile shape (hwsim's, ``hwsim.sim.os_tile_plan``).
    weights : list of int ndarray, one per group
        Conv (linear): [C_in · CG, kh · kw · tc], word c_in · CG + cg holding
        W[cg·tc + j, c_in, ky, kx] at element (ky·kw + kx)·tc + j (0 past C): every tap of
        the group's channels for one source channel (the tap banks). Depthwise (average
        pooling, shortcut): [CG, tc], word cg holding the weights of channels cg·tc + j.
    bias : int ndarray [tiles, P]
        Each tile's initial potentials, lane order (0 where a lane holds no neuron).
    theta : int ndarray [T · CG, tc]
        Θq[cg·tc + j, t_o] at word t_o · CG + cg (no rows for the output layer).
    capacity : list of int
        Events of one image per group: its source's size, or an input layer's size × T_in.
    buffered : bool
        The layer uses the weight buffer (hwsim's rule, ``hwsim.sim.weight_buffered``):
        before each channel group's first tile its weights are copied into it, one word per
        cycle, and the lanes read them from there.
    fills : list of int
        Per group, its words in the weight buffer (``hwsim.sim.group_fill_words``).
    """

    layer: LayerImage
    geometry: OsGeometry
    weights: list
    bias: np.ndarray
    theta: np.ndarray
    capacity: list
    buffered: bool
    fills: list

    @property
    def fill_words(self) -> int:
        """The weight buffer's words of a channel group (hwsim's ``fill_words``)."""
        return sum(self.fills)

    def fill_base(self, i: int) -> int:
        """The first fill word of group i."""
        return sum(self.fills[:i])

    @classmethod
    def from_snn(cls, snn: SnnModel, index: int, arch: ArchConfig) -> OsImage:
        from hwsim.sim import group_fill_words, os_tile_plan, weight_buffered

        why = os_refusal(snn, index, arch)
        if why is not None:
            raise ValueError(f"layer {index} ({snn.layers[index].name}): {why}")
        lay, img = snn.layers[index], LayerImage.from_snn(snn, index, arch.lanes)
        plan = os_tile_plan(snn, lay, arch)
        groups = tuple(OsGroup(gi.src_shape, gi.kernel, gi.stride, gi.padding, gi.depthwise,
                               gi.channel_offset) for gi in img.groups)  # fmt: skip
        g = OsGeometry(groups, img.out_shape, tuple(int(v) for v in plan.shape))
        if not all(g.active(t, 0) for t in range(g.tiles)):
            raise ValueError(
                f"layer {index} ({lay.name}): its first synapse group does not reach every "
                "tile (a depthwise group with a channel offset), which the output-stationary "
                "rtl engine does not run"
            )
        (c, ho, wo), tc, ncg = g.out_shape, g.tile[0], g.grid[0]
        weights = []
        for syn, grp in zip(lay.synapses, groups, strict=True):
            w = np.asarray(syn.weight_q, np.int64)
            if grp.depthwise:  # one weight per output channel
                weights.append(np.pad(w.reshape(-1), (0, ncg * tc - c)).reshape(ncg, tc))
                continue
            c_in = grp.src_shape[0]
            w = np.pad(w.reshape(c, c_in, *grp.kernel), ((0, ncg * tc - c), (0, 0), (0, 0),
                                                         (0, 0)))  # fmt: skip
            weights.append(w.reshape(ncg, tc, c_in, -1).transpose(2, 0, 3, 1)
                           .reshape(c_in * ncg, -1))  # fmt: skip
        b = np.asarray(lay.bias_q, np.int64).reshape(c, ho, wo)
        bias = np.zeros((g.tiles, arch.lanes), np.int64)
        for t in range(g.tiles):
            for lane, (cc, y, x) in enumerate(lane_neurons(g, t)):
                if cc < c and y < ho and x < wo:
                    bias[t, lane] = b[cc, y, x]
        theta = np.zeros((0, tc), np.int64)
        if not img.is_output:
            th_q = np.pad(np.asarray(lay.threshold_q, np.int64), ((0, ncg * tc - c), (0, 0)))
            theta = th_q.reshape(ncg, tc, -1).transpose(2, 0, 1).reshape(-1, tc)
        srcs = [snn.layers[s.source] for s in lay.synapses]
        capacity = [s.size * (s.T if s.kind == "input" else 1) for s in srcs]
        return cls(
            img,
            g,
            weights,
            bias,
            theta,
            capacity,
            weight_buffered(lay, plan, arch),
            group_fill_words(lay),
        )


def layouts(image: OsImage):
    """(run FIFO item, token, event entry) layouts wide enough for every group."""
    gs = image.geometry.groups
    cap = max(image.capacity)
    c_in = max(g.src_shape[0] for g in gs)
    h, w = max(g.src_shape[1] for g in gs), max(g.src_shape[2] for g in gs)
    return item_layout(cap, h), token_layout(c_in, h, w), event_entry(c_in, w)


def lane_neurons(g: OsGeometry, t: int) -> list[tuple[int, int, int]]:
    """(channel, row, column) of each lane's neuron in tile t (may lie past the layer)."""
    (tc, th, tw), (_, nby, nbx) = g.tile, g.grid
    cg, rem = divmod(t, nby * nbx)
    by, bx = divmod(rem, nbx)
    places = (lane_place(g, i) for i in range(tc * th * tw))
    return [(cg * tc + slot, by * th + dy, bx * tw + dx) for slot, dy, dx in places]


def lane_place(g: OsGeometry, lane: int) -> tuple[int, int, int]:
    """(channel slot, dy, dx) of a lane in every tile."""
    _, th, tw = g.tile
    return lane // (th * tw), (lane // tw) % th, lane % tw


class OsController(wiring.Component):
    """The schedule of docs/architecture.md §11 for one layer, cycle for cycle as hwsim's
    ``os_neuron_layer`` counts it.

    States: IDLE; LOAD (the event buffer takes the stream; not a layer cycle); START
    (max(L_a, r + 4) cycles: the readers fill their pipeline); per tile FILL (the weight
    buffer, before a channel group's first tile, if the layer uses it), TLOAD (1 cycle, U ← B)
    and per phase k ≤ K: READ (tokens popped, one event per cycle, its end marker with its last
    event; then idle until the phase has had max(r, L_n − 1) cycles) and BOUND (the boundary;
    it waits while the output queue cannot take the tile's spikes); after the last tile TAIL
    (L_n) and DRAIN.

    Ports: ``start``, ``busy``, ``done`` and the counters as :class:`~rtl.LayerEngine`'s;
    ``load`` / ``loaded`` / ``events`` to the event buffer; ``reader_start``; the token FIFO's
    heads and ``pop`` (0–2); the tile walk's ``t``, ``cg``, ``oy0``, ``ox0``, ``rows`` (r) and
    ``last``, and its ``step``; the phase ``k``; the lane controls (``lane_load``, ``add``,
    ``negate``, ``boundary``, ``commit``, ``compare``, ``leak``, ``m``); the lanes' ``valid``,
    ``hits``, ``fire``, ``compared`` and ``leaked`` masks; the output queue's ``push_en`` /
    ``push_ok`` / ``out_empty``; ``readout``; the next cycle's ``bias_addr`` and ``thr_addr``.
    """

    def __init__(self, arch: ArchConfig, image: OsImage) -> None:
        p, img, g = arch.lanes, image.layer, image.geometry
        self.arch, self.image = arch, image
        self.tiles = g.tiles
        self.n_ph = img.last_phase + 1
        self.n_in = min(img.t_src, self.n_ph)
        self.fill = image.fill_words if image.buffered else 0
        self.start_cycles = max(arch.adder_pipeline_cycles,
                                g.index_reads(0) + START_AFTER_INDEX)  # fmt: skip
        tok = layouts(image)[1]
        rmax = g.max_reads + max(arch.neuron_pipeline_cycles, 1)
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
            "load": Out(1), "loaded": In(1), "events": In(range(sum(image.capacity) + 1)),
            "reader_start": Out(1), "head0": In(tok), "head1": In(tok),
            "level": In(range(TOKEN_FIFO_DEPTH + 1)), "pop": Out(range(3)),
            "t": In(range(self.tiles + 1)), "cg": In(range(self.tiles + 1)),
            "rows": In(range(rmax + 1)), "last": In(1), "group_last": In(1), "step": Out(1),
            "fill_en": Out(1), "fill_i": Out(range(self.fill + 1)),
            "k": Out(range(self.n_ph + 1)),
            "lane_load": Out(1), "add": Out(1), "negate": Out(1), "boundary": Out(1),
            "commit": Out(1), "compare": Out(1), "leak": Out(1), "m": Out(M_BITS),
            "valid": In(p), "hits": In(p), "fire": In(p), "compared": In(p), "leaked": In(p),
            "push_en": Out(1), "push_ok": In(1), "out_empty": In(1), "readout": Out(1),
            "bias_addr": Out(range(max(self.tiles, 2))),
            "thr_addr": Out(range(max(g.grid[0] * max(img.t, 1), 2))),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        img, k = self.image.layer, self.k
        last_k = self.n_ph - 1
        m.d.comb += [self.leak.eq(k != last_k),
                     self.m.eq(Mux(k + 1 <= img.t_src - 1, img.m_in, img.m_out)),
                     self.readout.eq(self.boundary & self.commit & (k == last_k)
                                     if img.is_output else 0)]  # fmt: skip
        if img.is_output:
            m.d.comb += self.compare.eq(0)
        else:
            m.d.comb += self.compare.eq(k >= img.t_w if img.t_w else 1)
        # the adds land one cycle after their token's pop (the weight word's registered read)
        m.d.sync += [self.add.eq((self.pop != 0) & ~self.head0.marker),
                     self.negate.eq(self.head0.sign)]  # fmt: skip
        m.d.sync += self.adds.eq(self.adds + _popcount(self.hits))
        sched = _OsSchedule(self, m)
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

    def __init__(self, c: OsController, m: Module) -> None:
        arch = c.arch
        self.c, self.m, self.arch, self.img = c, m, arch, c.image.layer
        self.wait = Signal(range(max(c.start_cycles, arch.neuron_pipeline_cycles) + 1))
        self.cyc = Signal.like(c.rows)  # READ cycles of the phase so far (saturating)
        self.reads_done = Signal()  # the phase's end marker has been popped

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
        c, m, s = self.c, self.m, self.c.start_cycles
        with m.State("IDLE"), m.If(c.start):
            m.d.sync += [c.done.eq(0), *(getattr(c, n).eq(0) for n in COUNTERS)]
            m.next = "LOAD"
        with m.State("LOAD"):  # the source's events into the event buffer (not a layer cycle)
            m.d.comb += c.load.eq(1)
            with m.If(c.loaded):
                m.d.sync += [c.spikes_in.eq(c.events), self.wait.eq(s - 1)]
                m.next = "START"
        with m.State("START"):  # the index, run, event and token pipeline fills
            m.d.comb += [c.busy.eq(1), c.load.eq(1), c.reader_start.eq(self.wait == s - 1)]
            m.d.sync += self.wait.eq(self.wait - 1)
            with m.If(self.wait == 0):
                self.next_tile(first=True)

    def next_tile(self, first: bool) -> None:
        """Go to the next tile: through FILL when it is its channel group's first and the
        layer uses the weight buffer (``first``: the layer's first tile)."""
        c, m = self.c, self.m
        if not c.image.buffered:
            m.next = "TLOAD"
            return
        m.d.sync += c.fill_i.eq(0)
        if first:
            m.next = "FILL"
        else:
            m.next = "TLOAD"
            with m.If(c.group_last):
                m.next = "FILL"

    def tile(self) -> None:
        """The weight buffer's fill (a channel group's first tile), a tile's first cycle
        (U ← B) and the reads of its phases."""
        c, m, ln = self.c, self.m, self.arch.neuron_pipeline_cycles
        if c.image.buffered:
            with m.State("FILL"):  # one word a cycle; the last one is written in TLOAD
                m.d.comb += [c.busy.eq(1), c.load.eq(1), c.fill_en.eq(1)]
                m.d.sync += c.fill_i.eq(c.fill_i + 1)
                with m.If(c.fill_i == c.fill - 1):
                    m.next = "TLOAD"
        with m.State("TLOAD"):
            m.d.comb += [c.busy.eq(1), c.load.eq(1), c.lane_load.eq(1)]
            self.enter_phase(0)
        with m.State("READ"):
            m.d.comb += [c.busy.eq(1), c.load.eq(1)]
            h0, h1, more = c.head0, c.head1, ~self.reads_done
            ev = more & (c.level != 0) & ~h0.marker
            pair = ev & (c.level >= 2) & h1.marker  # the last event and its phase's marker
            alone = more & (c.level != 0) & h0.marker  # a phase without events
            m.d.comb += c.pop.eq(Mux(pair, 2, Mux(ev | alone, 1, 0)))
            fin = self.reads_done | pair | alone
            need = Signal.like(c.rows)
            # an input phase reads max(e, r) cycles; every phase lasts at least L_n in all
            m.d.comb += need.eq(Mux((c.k < c.n_in) & (c.rows > ln - 1), c.rows, ln - 1))
            with m.If(fin & (self.cyc + 1 >= need)):
                m.next = "BOUND"
            with m.Else():
                m.d.sync += [self.cyc.eq(Mux(self.cyc >= need, need, self.cyc + 1)),
                             self.reads_done.eq(fin)]  # fmt: skip

    def boundary(self) -> None:
        """V = U + S, compare, fire (waiting for the output queue), scale; then the next
        phase, the next tile or the tail."""
        c, m, img = self.c, self.m, self.img
        last_k = c.n_ph - 1
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
                        m.d.sync += c.compares.eq(c.compares + _popcount(c.valid))
                with m.If(c.k != last_k):
                    self.enter_phase(c.k + 1)
                with m.Elif(~c.last):
                    m.d.comb += c.step.eq(1)
                    self.next_tile(first=False)
                with m.Else():
                    m.d.sync += self.wait.eq(self.arch.neuron_pipeline_cycles - 1)
                    m.next = "TAIL"
        # the next cycle's words: the next tile's initial potentials (for TLOAD, after the
        # last boundary of a tile), the thresholds of the boundary
        nxt_t = Mux(c.boundary & ~c.last, c.t + 1, c.t)
        m.d.comb += c.bias_addr.eq(nxt_t)
        if not img.is_output:
            ncg = c.image.geometry.grid[0]
            nxt_k = Mux(c.boundary & c.commit, c.k + 1, c.k)
            row = Mux(nxt_k >= img.t_w, (nxt_k - img.t_w) * ncg + c.cg, 0)
            m.d.comb += c.thr_addr.eq(Mux(row >= ncg * img.t, 0, row))

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
    """A neuron or output layer on the output-stationary engine (docs/architecture.md §11),
    cycle for cycle as hwsim counts it (``dataflow = "output_stationary"``).

    Tiles of tc channels × th rows × tw columns run one after the other; a tile's potentials U,
    its phase's synaptic input S and the fired flags stay in the lanes' registers
    (:class:`~rtl.os_lane.OsLane`) through all phases. The source's events are first loaded from
    ``i_events`` (in any order: a producer's tile order) into the engine's event buffer and
    sorted there into buckets by phase and pixel (:class:`~rtl.os_sort.SortingBuckets`; in an
    accelerator the producer writes it during its own run and hwsim counts the sort as the
    producer's ``bucket_cycles``, so these cycles are not the layer's). Then the index reader
    walks each tile's receptive-field rows phase by phase (:class:`~rtl.os_blocks.IndexReader`),
    the event reader reads their events (:class:`~rtl.os_blocks.EventReader`), and the lanes
    take one event per cycle: its weight word (every tap of the tile's channels for the event's
    channel) is read in the cycle of the pop and added in the next by every lane the event
    reaches. The boundary, the output queue and the counters are as :class:`~rtl.LayerEngine`'s;
    the output layer's last boundary of a tile takes it into the argmax and writes its
    potentials where the host reads them.

    Parameters
    ----------
    arch : ArchConfig
        P, W, A, D_out, L_a, L_n (≥ 1).
    image : OsImage
        The layer (:func:`os_refusal` names what is refused).

    Ports
    -----
    As :class:`~rtl.LayerEngine`'s: ``start`` (then the stream is loaded, events in any
    order; the layer's cycle 0 follows the end marker, taken once the sort is over), ``busy`` (the
    layer's cycles), ``done``, ``i_events``, ``o_spikes``, the counters, and for the output
    layer ``argmax``, ``rd_addr`` (a tile) and ``rd_data`` (its P potentials, a registered
    read). Also ``error``: the event buffer dropped events (more than its capacity).

    ``linked=True`` (the engine of an accelerator, :class:`rtl.os_accel.OsAccelerator`):
    each group's event buffer takes its producer's events and end marker (the group bit says
    which buffer) whenever ``hold`` is high, while the engine is idle, and sorts them there;
    ``hold`` low (one cycle) empties the buffers for the next image. ``start`` then finds them
    sorted (one LOAD cycle, the buffers' ``sorted``) and the layer runs on them.
    ``clearing``: a buffer clears its counters (after a reset).
    """

    def __init__(self, arch: ArchConfig, image: OsImage, linked: bool = False) -> None:
        if arch.neuron_pipeline_cycles < 1:
            raise ValueError(f"neuron_pipeline_cycles must be ≥ 1, got "
                             f"{arch.neuron_pipeline_cycles!r}")  # fmt: skip
        self.arch, self.image, self.linked = arch, image, linked
        img = image.layer
        self.weight_bits = max(arch.weight_bits, img.weight_bits)
        self.tiles = self.rows = image.geometry.tiles
        ports = {
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "i_events": In(stream.Signature(SpikeEvent)),
            "o_spikes": Out(stream.Signature(SpikeEvent)),
            **{name: Out(COUNTER_BITS) for name in COUNTERS},
        }  # fmt: skip
        if linked:  # (clearing: a buffer clears its counters, after a reset)
            ports.update({"hold": In(1), "clearing": Out(1)})
        if img.is_output:
            ports["argmax"] = Out(range(max(img.n_out, 2)))
            ports["rd_addr"] = In(range(max(self.tiles, 2)))
            ports["rd_data"] = Out(data.ArrayLayout(signed(arch.potential_bits), arch.lanes))
        super().__init__(ports)

    def _memories(self, m: Module):
        """The weight, bias and threshold memories' registered read ports (thresholds: None
        for the output layer), and the output layer's potential memory."""
        img, a, p = self.image, self.arch.potential_bits, self.arch.lanes
        tc = img.geometry.tile[0]
        mems = {
            f"wgt{i}": (data.ArrayLayout(signed(self.weight_bits), w.shape[1]), w)
            for i, w in enumerate(img.weights)
        }
        mems["bias"] = (data.ArrayLayout(signed(a), p), img.bias)
        if not img.layer.is_output:
            mems["thr"] = (data.ArrayLayout(signed(a), tc), img.theta)
        ports = {}
        for name, (shape, init) in mems.items():
            m.submodules[name] = mem = memory.Memory(shape=shape, depth=max(len(init), 2),
                                                     init=init.tolist())  # fmt: skip
            ports[name] = mem.read_port(domain="sync")
        pot = None
        if img.layer.is_output:
            m.submodules.pot = pot = memory.Memory(shape=data.ArrayLayout(signed(a), p),
                                                   depth=max(self.tiles, 2), init=[])  # fmt: skip
            host = pot.read_port(domain="sync")
            m.d.comb += [host.addr.eq(self.rd_addr), self.rd_data.eq(host.data)]
        wgt = [ports[f"wgt{i}"] for i in range(len(img.weights))]
        return wgt, ports["bias"], ports.get("thr"), pot

    def _readers(self, m: Module, ctrl):
        """The event buffers (one per group, the stream's events split by their group bit),
        the index and event readers and the controller's tile walk."""
        img, g, n_in = self.image, self.image.geometry, ctrl.n_in
        item, tok, entry = layouts(img)
        bufs = []
        for i, grp in enumerate(g.groups):
            m.submodules[f"buf{i}"] = buf = SortingBuckets(img.capacity[i], n_in, grp.src_shape,
                                                           entry, max(img.capacity))  # fmt: skip
            bufs.append(buf)
        m.submodules.ir = ir = IndexReader(g, n_in, max(img.capacity),
                                           2 * g.max_reads + RUN_FIFO_SLACK)  # fmt: skip
        m.submodules.er = er = EventReader(max(img.capacity), item, tok, entry, len(bufs),
                                           TOKEN_FIFO_DEPTH)  # fmt: skip
        m.submodules.walk = walk = TileWalk(g)
        wiring.connect(m, ir.o, er.runs)
        # the stream: an event goes to its group's buffer; the end marker is taken once every
        # buffer has written its last index entry (linked: each group's buffer takes its own)
        head, taken = self.i_events.payload, Signal()
        load = self.hold if self.linked else ctrl.load
        if len(bufs) == 1:
            mine = [1]
        elif self.linked:  # each group's end marker to its own buffer
            mine = [head.group == i for i in range(len(bufs))]
        else:  # the one end marker to every buffer
            mine = [(head.group == i) | head.end for i in range(len(bufs))]
        open_ = 1 if self.linked else ~taken  # (linked: a buffer takes events until `hold` falls)
        ready_end = bufs[0].i.ready if len(bufs) == 1 else bufs[0].i.ready & bufs[1].i.ready
        ready_ev = bufs[0].i.ready if len(bufs) == 1 else Mux(head.group, bufs[1].i.ready,
                                                                bufs[0].i.ready)  # fmt: skip
        if self.linked:  # every buffer sorted: the engine's LOAD is over
            m.d.comb += [self.i_events.ready.eq(load & ready_ev),
                         self.clearing.eq(Cat(b.clearing for b in bufs).any())]  # fmt: skip
            m.d.comb += taken.eq(Cat(b.sorted for b in bufs).all())
        else:
            m.d.comb += self.i_events.ready.eq(load & ~taken &
                                               Mux(head.end, ready_end, ready_ev))  # fmt: skip
            with m.If(~load):
                m.d.sync += taken.eq(0)
            with m.Elif(self.i_events.valid & self.i_events.ready & head.end):
                m.d.sync += taken.eq(1)
        count, error = 0, 0
        for i, buf in enumerate(bufs):
            m.d.comb += [buf.i.payload.eq(head), buf.i.valid.eq(self.i_events.valid & mine[i] &
                                                                  open_),
                         buf.load.eq(load), buf.idx_a.eq(ir.idx_a), buf.idx_b.eq(ir.idx_b),
                         getattr(ir, f"run_a_{i}").eq(buf.run_a),
                         getattr(ir, f"run_b_{i}").eq(buf.run_b),
                         buf.ev_addr.eq(er.ev_addr), getattr(er, f"ev_{i}").eq(buf.ev)]  # fmt: skip
            count, error = count + buf.count, error | buf.error
        m.d.comb += [ctrl.loaded.eq(taken), ctrl.events.eq(count), self.error.eq(error),
                     ir.start.eq(ctrl.reader_start),
                     ctrl.head0.eq(er.head0), ctrl.head1.eq(er.head1),
                     ctrl.level.eq(er.level), er.pop.eq(ctrl.pop),
                     walk.restart.eq(ctrl.reader_start), walk.step.eq(ctrl.step),
                     ctrl.t.eq(walk.t), ctrl.cg.eq(walk.cg), ctrl.last.eq(walk.last),
                     ctrl.group_last.eq(walk.group_last), ctrl.rows.eq(walk.reads)]  # fmt: skip
        return walk

    def elaborate(self, platform) -> Module:
        m = Module()
        arch, img, g, p = self.arch, self.image.layer, self.image.geometry, self.arch.lanes
        wgt_r, bias_r, thr_r, pot = self._memories(m)
        m.submodules.ctrl = ctrl = OsController(arch, self.image)
        walk = self._readers(m, ctrl)
        m.submodules.oq = oq = OutputQueue(p, arch.output_queue_depth)
        wiring.connect(m, oq.o, wiring.flipped(self.o_spikes))
        m.d.comb += [ctrl.start.eq(self.start), self.busy.eq(ctrl.busy), self.done.eq(ctrl.done),
                     *(getattr(self, n).eq(getattr(ctrl, n)) for n in COUNTERS),
                     bias_r.addr.eq(ctrl.bias_addr)]  # fmt: skip
        if self.image.buffered:
            wgt_r = self._weight_buffer(m, ctrl, walk, wgt_r)
        else:
            for grp, w in zip(g.groups, wgt_r, strict=True):  # a conv group's word per channel
                m.d.comb += w.addr.eq(walk.cg if grp.depthwise else
                                      ctrl.head0.c * g.grid[0] + walk.cg)  # fmt: skip
        # the event popped last cycle: its group, channel and offset from the tile's corner
        ev = Signal.like(ctrl.head0)
        m.d.sync += ev.eq(ctrl.head0)
        offsets = []
        for i, grp in enumerate(g.groups):
            (sy, sx), (py, px) = grp.stride, grp.padding
            ry, rx = Signal(signed(16), name=f"ry{i}"), Signal(signed(16), name=f"rx{i}")
            m.d.comb += [ry.eq(ev.y + py - walk.oy0 * sy), rx.eq(ev.x + px - walk.ox0 * sx)]
            offsets.append((ry, rx))
        lanes = self._lanes(m, ctrl, walk, wgt_r, bias_r, thr_r, ev, offsets)
        (_, ho, wo), k = g.out_shape, ctrl.k
        phase = k - img.t_w if img.t_w else k
        words = []
        for i in range(p):
            slot, dy, dx = lane_place(g, i)
            idx = (walk.cg * g.tile[0] + slot) * (ho * wo) + (walk.oy0 + dy) * wo + walk.ox0 + dx
            words.append(event_word(idx, phase))
        m.d.comb += [oq.push_data.eq(Cat(*words)), oq.push_mask.eq(ctrl.fire),
                     oq.push_en.eq(ctrl.push_en & (ctrl.fire != 0)),
                     ctrl.push_ok.eq(oq.push_ok), ctrl.out_empty.eq(oq.level == 0)]  # fmt: skip
        if img.is_output:
            self._readout(m, ctrl, walk, lanes, pot)
        return m

    def _weight_buffer(self, m: Module, ctrl, walk, wgt_r) -> list:
        """The weight buffer (a memory per group, one channel group's words) and its fill:
        in FILL cycle i the parameter memory's word i of the channel group is read, and
        written into the buffer in the next cycle. Returns the buffers' read ports, which
        the lanes read instead (conv: word c_in; depthwise: word 0)."""
        img, g = self.image, self.image.geometry
        fill_d, i_d = Signal(), Signal.like(ctrl.fill_i)
        m.d.sync += [fill_d.eq(ctrl.fill_en), i_d.eq(ctrl.fill_i)]
        ports = []
        for j, (grp, w) in enumerate(zip(g.groups, wgt_r, strict=True)):
            base, words = img.fill_base(j), 1 if grp.depthwise else grp.src_shape[0]
            m.submodules[f"wbuf{j}"] = buf = memory.Memory(shape=w.data.shape(),
                                                          depth=max(words, 2), init=[])  # fmt: skip
            wr, rd = buf.write_port(), buf.read_port(domain="sync")
            word = ctrl.fill_i - base  # (this group's word, when in its range)
            m.d.comb += [w.addr.eq(walk.cg if grp.depthwise else word * g.grid[0] + walk.cg),
                         wr.addr.eq(i_d - base), wr.data.eq(w.data),
                         wr.en.eq(fill_d & (i_d < base + words) & (i_d >= base if base else 1)),
                         rd.addr.eq(0 if grp.depthwise else ctrl.head0.c)]  # fmt: skip
            ports.append(rd)
        return ports

    def _lanes(self, m, ctrl, walk, wgt_r, bias_r, thr_r, ev, offsets) -> list[OsLane]:
        """The P lanes, each with its place in the tile and its valid bit; every group's
        weight word and event offset (``offsets``: (ry, rx) per group) go to every lane."""
        arch, img, g = self.arch, self.image.layer, self.image.geometry
        (c, ho, wo), tc = g.out_shape, g.tile[0]
        lanes = []
        for i in range(arch.lanes):
            slot, dy, dx = lane_place(g, i)
            if slot >= tc:  # a lane the tile shape leaves unused
                m.d.comb += ctrl.valid[i].eq(0)
                continue
            lane = OsLane(arch.potential_bits, self.weight_bits, img.sat_limit, g.groups, tc,
                          slot, dy, dx, max(grp.src_shape[0] for grp in g.groups))  # fmt: skip
            m.submodules[f"lane{i}"] = lane
            valid = (walk.cg * tc + slot < c) & (walk.oy0 + dy < ho) & (walk.ox0 + dx < wo)
            for j, (w, (ry, rx)) in enumerate(zip(wgt_r, offsets, strict=True)):
                m.d.comb += [
                    getattr(lane, f"word_{j}").eq(w.data),
                    getattr(lane, f"ry_{j}").eq(ry),
                    getattr(lane, f"rx_{j}").eq(rx),
                ]
            m.d.comb += [ctrl.valid[i].eq(valid), lane.valid.eq(valid), lane.group.eq(ev.group),
                         lane.c_in.eq(ev.c), lane.chan0.eq(walk.cg * tc),
                         lane.load.eq(ctrl.lane_load),
                         lane.add.eq(ctrl.add), lane.negate.eq(ctrl.negate),
                         lane.boundary.eq(ctrl.boundary), lane.commit.eq(ctrl.commit),
                         lane.bias.eq(bias_r.data[i]), lane.compare.eq(ctrl.compare),
                         lane.leak.eq(ctrl.leak), lane.m.eq(ctrl.m),
                         ctrl.hits[i].eq(lane.hit), ctrl.fire[i].eq(lane.fire),
                         ctrl.compared[i].eq(lane.compared),
                         ctrl.leaked[i].eq(lane.leaked)]  # fmt: skip
            if thr_r is not None:
                m.d.comb += lane.theta.eq(thr_r.data[slot])
            lanes.append(lane)
        if thr_r is not None:
            m.d.comb += thr_r.addr.eq(ctrl.thr_addr)
        return lanes

    def _readout(self, m: Module, ctrl, walk, lanes, pot) -> None:
        """The output layer's last boundary of a tile: its V into the argmax and into the
        potential memory the host reads (a flat layer: tile t holds neurons t·P + lane)."""
        arch = self.arch
        m.submodules.readout = ro = ArgmaxReadout(self.image.layer, arch.lanes,
                                                  arch.potential_bits)  # fmt: skip
        wr = pot.write_port()
        m.d.comb += [ro.row[i].eq(lane.v) for i, lane in enumerate(lanes)]
        m.d.comb += [wr.data[i].eq(lane.v.u) for i, lane in enumerate(lanes)]
        m.d.comb += [ro.first.eq(walk.t == 0), ro.cb.eq(walk.t), ro.pix.eq(0),
                     ro.en.eq(ctrl.readout), self.argmax.eq(ro.argmax),
                     wr.addr.eq(walk.t), wr.en.eq(ctrl.readout)]  # fmt: skip
