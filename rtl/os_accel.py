"""rtl.OsAccelerator: a whole SnnModel as one Verilog top in the output-stationary dataflow
(docs/architecture.md §14, "The output-stationary accelerator").

hwsim's **layer mode** of ``dataflow = "output_stationary"``: one engine per layer
(:class:`rtl.OsEngine`, :class:`rtl.os_pool.OsMaxPool`), run one after the other. A layer's
event buffer is its consumers' counting sorts: the producer's output queue writes every sort
that reads it while it runs (:class:`~rtl.os_link.EventFork`); when it is done the sequencer
closes its stream (the end marker, taken by each sort once it has sorted) and starts the next
engine, which finds its input sorted by (phase, pixel). Each layer's spikes are also written,
in push order, to a trace buffer that the debug port reads after an image.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, DomainRenamer, Module, Mux, ResetSignal
from amaranth.lib import wiring

from archspec.config import ArchConfig
from converter.model import SnnModel
from rtl.accelerator import host_ports, plan, register_block, register_map
from rtl.clockgate import ClockGate
from rtl.evbuf import EventBuffer
from rtl.generate import layer_image
from rtl.host import DebugPort
from rtl.maxpool import PoolImage
from rtl.os_engine import OsEngine, OsImage, os_refusal
from rtl.os_link import EventFork, OsHostInput, OsSequencer
from rtl.os_pool import END_BIT, OsMaxPool


def os_accel_refusal(snn: SnnModel, arch: ArchConfig, input_events: int | None = None):
    """Why :class:`OsAccelerator` would refuse ``snn`` on ``arch``, or None: the layer plan
    (:func:`rtl.accelerator.plan`), a layer the output-stationary engines do not run
    (:func:`rtl.os_engine.os_refusal`), or a max pooling read by a max pooling (hwsim does not
    sort such a layer's events: they already leave phase by phase)."""
    try:
        layers = plan(snn, input_events)
    except ValueError as exc:
        return str(exc)
    for p in layers[1:]:
        lay = snn.layers[p.index]
        if p.kind == "maxpool":
            if snn.layers[lay.source].kind == "maxpool":
                return f"layer {p.index} ({lay.name}): a max pooling of a max pooling"
            continue
        why = os_refusal(snn, p.index, arch)
        if why:
            return f"layer {p.index} ({lay.name}): {why}"
    return None


class OsAccelerator(wiring.Component):
    """A whole SnnModel on output-stationary engines, one per layer, run one after the other.

    Organisation (docs/architecture.md §14): hwsim's layer mode with ``dataflow =
    "output_stationary"``. Each non-input layer has its engine (:class:`rtl.OsEngine` or
    :class:`rtl.os_pool.OsMaxPool`, ``linked``: parameters in its own memories, its input
    sorts filled by its producers); each non-output layer an :class:`~rtl.os_link.EventFork`
    into the sorts of its consumers and a trace :class:`~rtl.evbuf.EventBuffer` (its spikes
    in push order, for the debug port); an :class:`~rtl.os_link.OsSequencer` starts the
    engines and closes each producer's stream; an :class:`~rtl.os_link.OsHostInput` writes
    the input's events into its consumers' sorts, which sort them before the run.

    The engines' cycle counters equal hwsim's layer-mode cycles and the sequencer's the
    image latency, ``SimResult.image_cycles`` (the engines', the sorts',
    ``bucket_cycles``, and the controller's, ``hwsim.sim.controller_cycles``).

    Parameters
    ----------
    snn : SnnModel
        A quantised network (:func:`os_accel_refusal` names what is refused).
    arch : ArchConfig
        The accelerator (``output_stationary`` dataflow).
    input_events : int, optional
        Events the input's trace buffer and sorts hold (default: size × T_in).

    Ports
    -----
    As :class:`rtl.Accelerator`'s (``rtl.accelerator.host_ports``): ``start``, ``busy``,
    ``done``, the AXI4-Stream input, ``result_class``, ``pot_addr`` / ``pot_data`` (the
    output layer's tile ``pot_addr``: its P potentials, a registered read), the debug port
    (a layer's trace buffer) and the register block. ``s_axis_tready`` is low while the
    input is sorted, in the cycle a new image starts, and while the accelerator runs.
    """

    def __init__(self, snn: SnnModel, arch: ArchConfig, input_events: int | None = None) -> None:
        if arch.dataflow != "output_stationary":
            why = f"rtl.OsAccelerator runs the output_stationary dataflow, not {arch.dataflow!r}"
        else:
            why = os_accel_refusal(snn, arch, input_events)
        if why:
            self._MustUse__silence = True  # (refused: never to be elaborated)
            raise ValueError(why)
        self.snn, self.arch, self.layers = snn, arch, plan(snn, input_events)
        self.images = {  # (a max pooling: the §5 engine's image; a neuron layer: §11's)
            p.index: layer_image(snn, p.index, arch.lanes) if p.kind == "maxpool"
            else OsImage.from_snn(snn, p.index, arch) for p in self.layers[1:]
        }  # fmt: skip
        out = self.images[self.layers[-1].index]
        self.consumers = {p.index: [] for p in self.layers}  # producer → [(consumer, group)]
        for p in self.layers[1:]:
            for g, src in enumerate(p.sources):
                self.consumers[src].append((p.index, g))
        self.registers = register_map(self.layers, self.images)
        super().__init__(host_ports(arch, out.layer.n_out, out.geometry.tiles))

    def elaborate(self, platform) -> Module:
        m = Module()
        order = [p.index for p in self.layers[1:]]
        m.submodules.seq = seq = OsSequencer(len(order))
        m.submodules.host_in = hin = OsHostInput()
        m.d.comb += [hin.tdata.eq(self.s_axis_tdata), hin.tvalid.eq(self.s_axis_tvalid),
                     hin.tlast.eq(self.s_axis_tlast), self.s_axis_tready.eq(hin.tready),
                     hin.busy.eq(seq.busy), hin.start.eq(self.start), seq.start.eq(hin.run),
                     self.busy.eq(seq.busy), self.done.eq(seq.done)]  # fmt: skip
        engines = {}
        for j, i in enumerate(order):
            img = self.images[i]
            eng = (OsMaxPool if isinstance(img, PoolImage) else OsEngine)(self.arch, img, True)
            engines[i] = eng
            m.submodules[f"engine{i}"] = self._gated(m, seq, hin, order, i, eng)
            m.d.comb += [eng.start.eq(seq.go[j]), eng.hold.eq(~hin.clear)]
        m.d.comb += [
            seq.fin.eq(Cat(e.done for e in engines.values())),
            hin.quiet.eq(~Cat(e.clearing for e in engines.values()).any()),
        ]
        traces, links = {}, {i: [] for i in order}  # consumer → the fork outputs into it
        for p in self.layers[:-1]:
            i = p.index
            m.submodules[f"trace{i}"] = traces[i] = trace = EventBuffer(p.depth)
            m.submodules[f"fork{i}"] = fork = EventFork(tuple(g for _, g in self.consumers[i]))
            for k, (c, _) in enumerate(self.consumers[i]):
                links[c].append(getattr(fork, f"o{k}"))
            if p.kind == "input":
                wiring.connect(m, hin.w, fork.i)
                m.d.comb += trace.clear.eq(hin.clear)
            else:
                j = order.index(i)
                self._close(m, engines[i], fork, seq.eos[j], seq.sealed[j])
                m.d.comb += trace.clear.eq(seq.go[j])
            m.d.comb += [
                trace.w.payload.eq(fork.i.payload),
                trace.w.valid.eq(fork.i.valid & fork.i.ready & ~fork.i.payload.end),
            ]
        for c, srcs in links.items():
            _merge(m, engines[c].i_events, srcs)
        out = engines[order[-1]]
        m.d.comb += [out.o_spikes.ready.eq(1), self.result_class.eq(out.argmax),
                     out.rd_addr.eq(self.pot_addr), self.pot_data.eq(out.rd_data)]  # fmt: skip
        self._host(m, seq, engines, traces)
        return m

    def _gated(self, m: Module, seq: OsSequencer, hin: OsHostInput, order: list[int], i: int,
               eng):  # fmt: skip
        """Engine ``eng`` (layer ``i``) in its own clock domain behind a
        :class:`~rtl.clockgate.ClockGate`, clocked in reset; during a run while it runs and
        while a producer of its sorts runs or is sealed (they collect and sort); while the
        accelerator is idle in the cycle a new image empties the sorts (``clear``), while
        its sorts clear their counters, always if the host's input goes to it (its sorts
        take and sort the input) and, for the output layer, always (the host reads its
        potentials). Otherwise nothing in it changes (its sorts hold their sorted events,
        its ``done`` stays set). Every term is a register's value (none follows the host's
        inputs combinationally), so the gate's falling-edge sample sees it settled."""
        name = f"engine{i}"
        m.domains += (dom := ClockDomain(name, local=True))
        m.submodules[f"{name}_gate"] = gate = ClockGate()
        near = seq.layer == order.index(i)
        for src in self.layers[i].sources:  # (plan: layer i at place i)
            if src in order:
                near = near | (seq.layer == order.index(src))
        idle = hin.clear | eng.clearing
        if i == order[-1] or self.layers[0].index in self.layers[i].sources:
            idle = 1
        m.d.comb += [gate.en.eq(ResetSignal() | (~seq.busy & idle) | near),
                     dom.clk.eq(gate.clk), dom.rst.eq(ResetSignal())]  # fmt: skip
        return DomainRenamer(name)(eng)

    @staticmethod
    def _close(m: Module, eng, fork: EventFork, eos, sealed) -> None:
        """The producer's output queue into its fork; while ``eos`` its end marker
        (``sealed``: every consumer has taken it)."""
        m.d.comb += [
            fork.i.valid.eq(eng.o_spikes.valid | eos),
            fork.i.payload.eq(Mux(eos, 1 << END_BIT, eng.o_spikes.payload)),
            eng.o_spikes.ready.eq(fork.i.ready & ~eos),
            sealed.eq(eos & fork.i.ready),
        ]

    def _host(self, m: Module, seq: OsSequencer, engines: dict, traces: dict) -> None:
        """Debug port (the trace buffers) and register block."""
        m.submodules.debug = dbg = DebugPort([(i, b.depth) for i, b in traces.items()])
        m.d.comb += [dbg.layer.eq(self.dbg_layer), dbg.addr.eq(self.dbg_addr),
                     dbg.busy.eq(seq.busy), self.dbg_data.eq(dbg.data),
                     self.dbg_count.eq(dbg.count)]  # fmt: skip
        for i, b in traces.items():
            m.d.comb += [
                getattr(dbg, f"b{i}_data").eq(b.rd_data),
                b.rd_addr.eq(getattr(dbg, f"b{i}_addr")),
                getattr(dbg, f"b{i}_count").eq(b.count),
            ]
        overflow = 0  # a trace buffer, or a sort (its capacity)
        for b in traces.values():
            overflow = overflow | b.overflow
        for e in engines.values():
            overflow = overflow | e.error
        register_block(m, self, seq, overflow, engines, traces)


def _merge(m: Module, sink, sources: list) -> None:
    """The fork outputs into one engine's input stream: one producer streams at a time (the
    layers run one after the other), so the first valid one is taken."""
    payload, chosen = 0, []
    for k, src in enumerate(sources):
        first = src.valid & ~Cat(s.valid for s in sources[:k]).any() if k else src.valid
        chosen.append(first)
        payload = src.payload if k == 0 else Mux(first, src.payload, payload)
    m.d.comb += [sink.valid.eq(Cat(s.valid for s in sources).any()), sink.payload.eq(payload)]
    for src, first in zip(sources, chosen, strict=True):
        m.d.comb += src.ready.eq(sink.ready & first)
