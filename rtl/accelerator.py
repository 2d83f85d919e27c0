"""rtl.Accelerator: a whole SnnModel as one Verilog top (docs/architecture.md §14).

First version: hwsim's **layer mode** (the layers run one after the other), each layer on its
own engine of today's ``potential_sram`` dataflow (:class:`rtl.LayerEngine`,
:class:`rtl.MaxPoolEngine`); the output-stationary dataflow (§11) is not in the RTL yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import (
    Cat,
    ClockDomain,
    Const,
    DomainRenamer,
    Module,
    ResetSignal,
    Value,
    signed,
)
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from archspec.config import ArchConfig
from archspec.fanout import ceil_div, read_channels
from converter.model import SnnModel
from rtl.accel_ctrl import Controller
from rtl.clockgate import ClockGate
from rtl.engine import COUNTERS, LayerEngine, LayerImage
from rtl.evbuf import BufferReader, EventBuffer, EventMerger, RailBuffer
from rtl.events import INDEX_BITS
from rtl.generate import layer_image
from rtl.host import ADDR_BITS, DebugPort, HostInput, RegisterBlock
from rtl.maxpool import MaxPoolEngine, PoolImage

#: Register map (word addresses of the register block, docs/architecture.md §14).
REG_STATUS, REG_CLASS, REG_CYCLES, REG_LAYERS = 0, 1, 2, 3
#: Layer i's registers start at REG_LAYER_BASE + REG_LAYER_STRIDE · i: the engine's counters
#: (COUNTERS order), then the events in its buffer (REG_EVENTS).
REG_LAYER_BASE, REG_LAYER_STRIDE, REG_EVENTS = 16, 8, 7


def layer_register(layer: int, name: str) -> int:
    """The word address of layer ``layer``'s register ``name`` (a counter or ``"events"``)."""
    j = REG_EVENTS if name == "events" else COUNTERS.index(name)
    return REG_LAYER_BASE + REG_LAYER_STRIDE * layer + j


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the accelerator: its sources (one per synapse group), buffer depth (0: no
    buffer, the output layer), the last source phase its engine reads (None: all), the
    first neuron of its second rail where its buffer is a :class:`~rtl.evbuf.RailBuffer`
    (None: one bank) and, per source, the rail bank its group reads (None: the whole
    buffer)."""

    index: int
    kind: str
    sources: tuple[int, ...]
    depth: int
    last_phase: int | None
    split: int | None = None
    banks: tuple[int | None, ...] = ()


def plan(snn: SnnModel, input_events: int | None = None) -> list[LayerPlan]:
    """The layers in the order they run, with their buffers (every non-output layer keeps its
    events: worst case one spike per neuron; the input layer size × T_in, or
    ``input_events`` where given: an input of more events overflows, status bit 2). A source
    whose consumer reads its two rails with two graph groups is split into rail banks
    (:func:`rail_banks`).

    Raises
    ------
    ValueError
        The input layer not first or not alone, the output layer not last, two synapse
        groups reading one source other than as the two rails of a graph layer, a buffer
        deeper than the debug port's 2^20 addresses, or ``input_events`` not a positive
        int."""
    if input_events is not None and (
        isinstance(input_events, bool) or not isinstance(input_events, int) or input_events < 1
    ):
        raise ValueError(f"input_events must be a positive int, got {input_events!r}")
    srcs_of, banks_of, split = {}, {}, {}
    for i, lay in enumerate(snn.layers):
        if lay.kind == "input":
            srcs: tuple[int, ...] = ()
        elif lay.kind == "maxpool":
            srcs = (lay.source,)
        else:
            srcs = tuple(s.source for s in lay.synapses)
        banks: tuple[int | None, ...] = (None,) * len(srcs)
        if len(set(srcs)) != len(srcs):
            boundary, banks = rail_banks(snn, i)
            split[srcs[0]] = boundary
        srcs_of[i], banks_of[i] = srcs, banks
    out = []
    for i, lay in enumerate(snn.layers):
        readers = [j for j, s in srcs_of.items() if i in s]
        if i in split and len(readers) > 1:
            raise ValueError(f"layer {i} ({lay.name}): its rails are read by layer "
                             f"{readers[-1]} as well as split by {readers[0]}; the accelerator "
                             "reads a rail-banked buffer from one consumer")  # fmt: skip
        depth = 0 if lay.kind == "output" else lay.size * (lay.T if lay.kind == "input" else 1)
        if lay.kind == "input" and input_events is not None:
            depth = input_events
        if depth > 2**INDEX_BITS:
            raise ValueError(f"layer {i} ({lay.name}): a buffer of {depth} events exceeds the "
                             f"debug port's 2^{INDEX_BITS} addresses")  # fmt: skip
        last = None
        if lay.kind in ("neuron", "output"):
            src = snn.layers[srcs_of[i][0]]
            last = src.T - 1 if lay.kind == "output" else lay.T - 1 + lay.T_w
        out.append(LayerPlan(i, lay.kind, srcs_of[i], depth, last, split.get(i), banks_of[i]))
    if out[0].kind != "input" or sum(p.kind == "input" for p in out) != 1:
        raise ValueError("the accelerator needs exactly one input layer, the first")
    if out[-1].kind != "output":
        raise ValueError("the accelerator needs the output layer last")
    return out


def refusal(snn: SnnModel, arch: ArchConfig, input_events: int | None = None) -> str | None:
    """Why the accelerator of ``arch``'s dataflow would refuse ``snn`` (:func:`plan`'s reason;
    output-stationary: :func:`rtl.os_accel.os_accel_refusal`), or None. The potential-SRAM
    engines check their layers when the accelerator is built."""
    if arch.dataflow == "output_stationary":
        from rtl.os_accel import os_accel_refusal

        return os_accel_refusal(snn, arch, input_events)
    try:
        plan(snn, input_events)
    except ValueError as exc:
        return str(exc)
    return None


def rail_banks(snn: SnnModel, i: int) -> tuple[int, tuple[int, int]]:
    """Layer ``i`` reads one source with two synapse groups: that is only supported for a
    graph layer reading a two-rail source, each group one rail (channels [0, h) and [h, 2h),
    docs/architecture.md §3). Returns the first neuron of the second rail and the bank each
    group reads; raises ValueError otherwise."""
    lay = snn.layers[i]
    syns = lay.synapses
    src = snn.layers[syns[0].source]
    if len(syns) != 2 or any(s.op != "graph" for s in syns) or src.kind != "neuron":
        raise ValueError(f"layer {i} ({lay.name}): two synapse groups read one source, and "
                         "they are not a graph layer's two rails")  # fmt: skip
    ranges = [read_channels(s, src, lay) for s in syns]
    h = src.channels // 2
    if sorted(ranges) != [(0, h), (h, src.channels)] or h == 0:
        raise ValueError(f"layer {i} ({lay.name}): its two graph groups read channels "
                         f"{ranges} of layer {syns[0].source}, not its two rails")  # fmt: skip
    banks = tuple(0 if lo == 0 else 1 for lo, _ in ranges)
    return h * (src.size // src.channels), banks  # (channel-major: rail 1 starts at h · pixels)


class Accelerator(wiring.Component):
    """A whole SnnModel: one engine per layer, run one after the other, with event buffers.

    Organisation (docs/architecture.md §14): hwsim's layer mode. Each non-input layer has its
    engine (:class:`rtl.LayerEngine` or :class:`rtl.MaxPoolEngine`: today's potential_sram
    dataflow, parameters in its own memories; its clock gated while neither it nor the engine
    before it runs, :class:`~rtl.clockgate.ClockGate`); each non-output layer an
    :class:`~rtl.evbuf.EventBuffer` written from its output queue (a
    :class:`~rtl.evbuf.RailBuffer`, one bank per rail, where a graph layer reads its two
    rails with two groups); each consumer reads its sources through
    :class:`~rtl.evbuf.BufferReader`\\ s and an
    :class:`~rtl.evbuf.EventMerger`; the :class:`~rtl.accel_ctrl.Controller` starts layer i
    when layer i − 1 is done. The engines' cycle counters equal hwsim's layer-mode cycles;
    the controller adds 2 cycles per layer, plus 1 per run.

    Parameters
    ----------
    snn : SnnModel
        A quantised network whose layers the rtl engines run.
    arch : ArchConfig
        The accelerator (``potential_sram`` dataflow).
    input_events : int, optional
        Events the input buffer holds (default: the worst case, size × T_in). A graph's
        input can exceed the debug port's 2^20 addresses in the worst case while its real
        features fit (Cora: 31 M against 184 k); an input of more events sets status bit 2.

    Ports
    -----
    start : In(1)
        Pulse while idle: run the image in the input buffer.
    busy, done : Out(1)
        Running; high from the end of a run until the next ``start``.
    s_axis_tdata, s_axis_tvalid, s_axis_tlast : In; s_axis_tready : Out
        The input events (AXI4-Stream, :class:`~rtl.host.HostInput`).
    result_class : Out
        The output layer's argmax.
    pot_addr : In; pot_data : Out(P signed A-bit lanes)
        Row ``pot_addr`` of the output layer's potential SRAM (§2's layout), a registered
        read: ``pot_data`` is the row ``pot_addr`` named in the previous cycle.
    dbg_layer : In(8), dbg_addr : In(20); dbg_data, dbg_count : Out(32)
        :class:`~rtl.host.DebugPort`: a layer's buffered event words (one cycle later) and
        their number.
    reg_addr : In(16); reg_data : Out(32)
        :class:`~rtl.host.RegisterBlock` (status, class, cycles, per-layer counters).
    """

    def __init__(self, snn: SnnModel, arch: ArchConfig, input_events: int | None = None) -> None:
        if arch.dataflow != "potential_sram":
            self._MustUse__silence = True  # (refused: never to be elaborated)
            raise ValueError(
                "rtl.Accelerator runs the potential_sram dataflow (docs/architecture.md §14); "
                f"dataflow {arch.dataflow!r} runs on rtl.os_accel.OsAccelerator"
            )
        self.snn, self.arch, self.layers = snn, arch, plan(snn, input_events)
        # the engines' images (each layer checked here); the engines are built by elaborate
        self.images = {p.index: layer_image(snn, p.index, arch.lanes) for p in self.layers[1:]}
        out = self.images[self.layers[-1].index]
        rows = out.pixels * ceil_div(out.out_shape[0], arch.lanes)
        self.registers = register_map(self.layers, self.images)
        super().__init__(host_ports(arch, out.n_out, rows))

    def elaborate(self, platform) -> Module:
        m = Module()
        order = [p.index for p in self.layers[1:]]
        m.submodules.ctrl = ctrl = Controller(len(order))
        m.d.comb += [ctrl.start.eq(self.start), self.busy.eq(ctrl.busy), self.done.eq(ctrl.done)]
        go = {i: ctrl.go[j] for j, i in enumerate(order)}
        bufs = self._buffers(m, go)
        addrs: dict[tuple, list] = {}  # (buffer, port) → the read addresses to OR there
        engines = {i: _engine(self.arch, self.images[i]) for i in order}
        for j, i in enumerate(order):
            m.submodules[f"engine{i}"] = self._gated(m, ctrl, j, f"engine{i}", engines[i])
            eng = engines[i]
            m.d.comb += eng.start.eq(go[i])
            if i in bufs:
                wiring.connect(m, eng.o_spikes, bufs[i].w)
            else:
                m.d.comb += eng.o_spikes.ready.eq(1)
            self._feed(m, self.layers[i], eng, bufs, ctrl.pre[j], addrs)
        # whole-vector assignments (a vector driven bit by bit is slow in Icarus, §10)
        m.d.comb += [ctrl.fin.eq(Cat(e.done for e in engines.values())),
                     ctrl.run.eq(Cat(e.busy for e in engines.values()))]  # fmt: skip
        self._host(m, ctrl, engines, bufs, addrs)
        for (i, port), sources in addrs.items():
            total = 0
            for a in sources:
                total = total | a
            m.d.comb += getattr(bufs[i], "rd_addr" if port is None else f"r{port}_addr").eq(total)
        return m

    def _gated(self, m: Module, ctrl: Controller, j: int, name: str, eng):
        """Engine ``eng`` (the j-th to run) in its own clock domain, gated by a
        :class:`~rtl.clockgate.ClockGate`: clocked while the accelerator is idle or in reset,
        and during a run while it or the engine before it runs (its readers and merger
        start while the engine before it drains); otherwise it sits in IDLE with ``done``
        set and its clock changes nothing."""
        m.domains += (dom := ClockDomain(name, local=True))
        m.submodules[f"{name}_gate"] = gate = ClockGate()
        near = ctrl.layer == j if j == 0 else (ctrl.layer == j) | (ctrl.layer == j - 1)
        m.d.comb += [gate.en.eq(ResetSignal() | ~ctrl.busy | near), dom.clk.eq(gate.clk),
                     dom.rst.eq(ResetSignal())]  # fmt: skip
        return DomainRenamer(name)(eng)

    def _buffers(self, m: Module, go: dict) -> dict[int, EventBuffer | RailBuffer]:
        """One event buffer per non-output layer (rail banks where its consumer reads them
        with two groups), cleared when its producer starts."""
        bufs = {}
        for p in self.layers:
            if p.depth:
                buf = EventBuffer(p.depth) if p.split is None else RailBuffer(p.depth, p.split)
                bufs[p.index] = m.submodules[f"buffer{p.index}"] = buf
                if p.index in go:
                    m.d.comb += bufs[p.index].clear.eq(go[p.index])
        return bufs

    def _feed(self, m: Module, p: LayerPlan, eng, bufs: dict, go, addrs: dict) -> None:
        """Layer p's readers (one per source) and merger, into the engine's input stream;
        ``go``: their start, one cycle before the engine's (the controller's ``pre``)."""
        m.submodules[f"merge{p.index}"] = merge = EventMerger(len(p.sources))
        m.d.comb += merge.start.eq(go)
        for g, (src, bank) in enumerate(zip(p.sources, p.banks, strict=True)):
            buf = bufs[src]
            if bank is None:  # the whole buffer
                depth, count, data = buf.depth, buf.count, buf.rd_data
            else:  # one rail bank of a RailBuffer
                depth, count = buf.banks[bank], getattr(buf, f"r{bank}_count")
                data = getattr(buf, f"r{bank}_data")
            rd = BufferReader(depth, p.last_phase)
            m.submodules[f"read{p.index}_{g}"] = rd
            m.d.comb += [rd.start.eq(go), rd.stop.eq(merge.finished), rd.count.eq(count),
                         rd.data.eq(data), getattr(merge, f"ex{g}").eq(rd.exhausted)]  # fmt: skip
            wiring.connect(m, rd.o, getattr(merge, f"i{g}"))
            addrs.setdefault((src, bank), []).append(rd.addr)
        wiring.connect(m, merge.o, eng.i_events)

    def _host(self, m: Module, ctrl: Controller, engines: dict, bufs: dict, addrs: dict) -> None:
        """AXI input, output class and potentials, debug port, register block."""
        m.submodules.host_in = hin = HostInput()
        m.d.comb += [hin.tdata.eq(self.s_axis_tdata), hin.tvalid.eq(self.s_axis_tvalid),
                     hin.tlast.eq(self.s_axis_tlast), self.s_axis_tready.eq(hin.tready),
                     hin.busy.eq(ctrl.busy), hin.start.eq(self.start)]  # fmt: skip
        first = self.layers[0].index
        wiring.connect(m, hin.w, bufs[first].w)
        m.d.comb += bufs[first].clear.eq(hin.clear)
        out = engines[self.layers[-1].index]
        m.d.comb += [self.result_class.eq(out.argmax), out.rd_addr.eq(self.pot_addr),
                     self.pot_data.eq(out.rd_data)]  # fmt: skip
        m.submodules.debug = dbg = DebugPort([(i, b.depth) for i, b in bufs.items()])
        m.d.comb += [dbg.layer.eq(self.dbg_layer), dbg.addr.eq(self.dbg_addr),
                     dbg.busy.eq(ctrl.busy), self.dbg_data.eq(dbg.data),
                     self.dbg_count.eq(dbg.count)]  # fmt: skip
        for i, b in bufs.items():
            m.d.comb += [getattr(dbg, f"b{i}_data").eq(b.rd_data),
                         getattr(dbg, f"b{i}_count").eq(b.count)]  # fmt: skip
            addrs.setdefault((i, None), []).append(getattr(dbg, f"b{i}_addr"))
        overflow = 0
        for b in bufs.values():
            overflow = overflow | b.overflow
        register_block(m, self, ctrl, overflow, engines, bufs)


def register_block(m: Module, top, ctrl, overflow, engines: dict, bufs: dict) -> None:
    """The register block of ``top`` (its ``registers``, ``reg_addr`` / ``reg_data``,
    ``result_class`` and ``layers``): ``ctrl``'s busy, done and cycles, ``overflow`` (status
    bit 2), the engines' counters and the buffers' event counts (:func:`register_value`)."""
    m.submodules.regs = regs = RegisterBlock(list(top.registers))
    m.d.comb += [regs.addr.eq(top.reg_addr), top.reg_data.eq(regs.data)]
    status = ctrl.busy | (ctrl.done << 1) | (overflow << 2)
    words = [register_value(name, status, top.result_class, ctrl.cycles, len(top.layers),
                            engines, bufs) for name in top.registers.values()]  # fmt: skip
    m.d.comb += regs.values.eq(Cat(_word(v) for v in words))


def host_ports(arch: ArchConfig, n_out: int, rows: int) -> dict:
    """The top's ports (docs/architecture.md §14, "Host interface"): ``n_out`` output
    neurons (``result_class``), ``rows`` words of P potentials that ``pot_addr`` reads."""
    return {
        "start": In(1), "busy": Out(1), "done": Out(1),
        "s_axis_tdata": In(32), "s_axis_tvalid": In(1), "s_axis_tlast": In(1),
        "s_axis_tready": Out(1),
        "result_class": Out(range(max(n_out, 2))),  # (as the engines' ports)
        "pot_addr": In(range(max(rows, 2))),
        "pot_data": Out(data.ArrayLayout(signed(arch.potential_bits), arch.lanes)),
        "dbg_layer": In(8), "dbg_addr": In(INDEX_BITS), "dbg_data": Out(32), "dbg_count": Out(32),
        "reg_addr": In(ADDR_BITS), "reg_data": Out(32),
    }  # fmt: skip


def register_map(layers: list[LayerPlan], engines) -> dict[int, str]:
    """Word address → register name (``status``, ``class``, ``cycles``, ``layers``,
    ``<counter>@<layer>`` for each layer in ``engines``, ``events@<layer>`` for each layer
    with a buffer), docs/architecture.md §14."""
    regs = {REG_STATUS: "status", REG_CLASS: "class", REG_CYCLES: "cycles", REG_LAYERS: "layers"}
    for p in layers:
        if p.index in engines:
            regs.update({layer_register(p.index, c): f"{c}@{p.index}" for c in COUNTERS})
        if p.depth:
            regs[layer_register(p.index, "events")] = f"events@{p.index}"
    return regs


def register_value(name: str, status, result_class, cycles, layers: int, engines: dict,
                   bufs: dict):  # fmt: skip
    """The value of register ``name`` (:func:`register_map`): ``status`` (bit 0 busy, bit 1
    done, bit 2 a buffer overflowed), the class, the run's cycles, the number of layers, an
    engine's counter or the events in a layer's buffer."""
    fixed = {"status": status, "class": result_class, "cycles": cycles, "layers": layers}
    if name in fixed:
        return fixed[name]
    what, layer = name.split("@")
    if what == "events":
        return bufs[int(layer)].count
    return getattr(engines[int(layer)], what)


def _word(v) -> Value:
    """``v`` (an int or an unsigned Value of at most 32 bits) as a 32-bit value."""
    if isinstance(v, int):
        return Const(v, 32)
    v = Value.cast(v)
    return Cat(v, Const(0, 32 - len(v))) if len(v) < 32 else v[:32]


def _engine(arch: ArchConfig, image: LayerImage | PoolImage) -> LayerEngine | MaxPoolEngine:
    return MaxPoolEngine(arch, image) if isinstance(image, PoolImage) else LayerEngine(arch, image)
