"""simulate(): run an SnnModel on the cycle-level model of the reference accelerator."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from archspec.config import ACTIONS, COSTED_ACTIONS, ArchConfig
from archspec.fanout import (
    FanOut,
    ceil_div,
    maxpool_fanout,
    read_channels,
    synapse_fanout,
    table_entries,
)
from archspec.tiles import TilePlan, choose_plan, source_pixels
from converter.model import Layer, SnnModel
from converter.quantize import fixed_base
from hwsim import eventbuf
from hwsim import kernels as K

MODES = ("layer", "pipelined")
CYCLE_KINDS = ("busy", "stalled", "waiting")
#: The most synapses the simulator expands into one layer's fan-out tables (8 bytes each):
#: a graph group's table is C × nnz(Â) (R8's hidden aggregation: 200 × 3.45 M).
MAX_TABLE_ENTRIES = 2**28
#: Layer mode: the controller cycles of one image besides the engines' own (rtl.Accelerator,
#: docs/architecture.md §14): per engine its start cycle (the cycle the controller sees the
#: previous engine's ``done`` and pulses ``go``) and the last cycle of its drain (in which its
#: output queue is found empty and no engine is busy), plus the run's first cycle (the
#: readers of the first engine start one cycle ahead of it).
CONTROLLER_CYCLES_PER_ENGINE = 2
CONTROLLER_CYCLES_PER_RUN = 1
#: Layer mode, output-stationary (rtl.os_accel.OsAccelerator, docs/architecture.md §14): the
#: sequencer's cycles per neuron engine besides the engine's own: its ``go`` cycle, its LOAD
#: cycle (its sorts are found sorted), its last DRAIN cycle (output queue empty, not busy)
#: and the cycle the sequencer sees its ``done``.
OS_CYCLES_PER_ENGINE = 4
#: ... per max-pooling engine (rtl.os_pool.OsMaxPool): its ``go`` cycle, the two cycles until
#: its sorted stream's first event (in the second the §5 engine is started), the engine's
#: last DRAIN cycle, the cycle OsMaxPool registers the engine's ``done`` and the cycle the
#: sequencer sees it.
OS_CYCLES_PER_POOL = 6
#: ... per producer whose events are sorted, besides its sort (``bucket_cycles``): the cycle
#: the sorts see the end marker and the cycle they acknowledge it.
OS_CYCLES_PER_SORT = 2
#: Output-stationary: the cycles of a producer's counting sort (``rtl.os_sort``) besides one
#: per counter word and one per event: the prefix pass's last write and the scatter pass's
#: two-stage pipeline (docs/architecture.md §11, "Bucketing a producer's events").
SORT_OVERHEAD = 3
#: Output-stationary: the buckets whose counters the sort's prefix pass reads per cycle (a
#: word of k counters, the index in k banks; ``rtl.os_sort``).
PREFIX_WIDTH = 8


def controller_cycles(snn: SnnModel, arch: ArchConfig | None = None) -> int:
    """Layer mode: the controller's cycles per image between and around the engines
    (every layer but the input is one engine; docs/architecture.md §14): 2 · E + 1 for the
    potential-SRAM accelerator (``rtl.Accelerator``); for the output-stationary one
    (``rtl.os_accel.OsAccelerator``, ``arch.dataflow``) 4 per neuron engine, 6 per
    max-pooling engine and 2 per producer whose events are sorted (:func:`bucketings`; the
    input's are sorted while the host loads them, before the run)."""
    if arch is None or arch.dataflow != "output_stationary":
        return CONTROLLER_CYCLES_PER_ENGINE * (len(snn.layers) - 1) + CONTROLLER_CYCLES_PER_RUN
    out = 0
    for i, lay in enumerate(snn.layers[1:], start=1):
        out += OS_CYCLES_PER_POOL if lay.kind == "maxpool" else OS_CYCLES_PER_ENGINE
        out += OS_CYCLES_PER_SORT if bucketings(snn, i) else 0
    return out


def bucket_cycles(buckets: int, events: int) -> int:
    """Cycles of one counting sort of ``events`` events into ``buckets`` (phase, pixel)
    buckets, after the producer's last event: ⌈buckets / k⌉ + events + ``SORT_OVERHEAD``,
    k = ``PREFIX_WIDTH`` (docs/architecture.md §11, "Bucketing a producer's events";
    ``rtl.os_sort``)."""
    return ceil_div(buckets, PREFIX_WIDTH) + events + SORT_OVERHEAD


def sort_accesses(buckets: int, events: int, images: int) -> dict[str, tuple[int, int]]:
    """(reads, writes) of each memory a counting sort accesses (``counters``, ``pointers``,
    ``staging``, and ``index``, the consumers' index in the event buffer) for ``images``
    counting sorts into ``buckets`` buckets of ``events`` events in all
    (``rtl.os_sort.SortingBuckets``;
    docs/architecture.md §11), in words: counters and pointers k = ``PREFIX_WIDTH`` to a word,
    one index entry per bucket. Per event: the counter word's read-modify-write (collect),
    the staging write and read, the pointer word's read-modify-write (scatter); per image and
    counter word: its read and its clear (prefix), the pointer word's write; per image and
    bucket: its index entry. The event's own write to the event memory is its
    ``queue_pushes``."""
    words = images * ceil_div(buckets, PREFIX_WIDTH)
    return {"counters": (events + words, events + words), "pointers": (events, events + words),
            "staging": (events, events), "index": (0, images * buckets)}  # fmt: skip


def bucketings(snn: SnnModel, index: int) -> list[int]:
    """Output-stationary: the buckets per image into which layer ``index``'s events are
    sorted, one entry per distinct way its consumers read them: T · H · W for a 3-D layer
    read by a convolution, pooling, shortcut or graph group (its pixels, a graph layer's
    nodes), T for a linear group, a flat layer or a max-pooling reader (one bucket per
    phase: the §5 engine takes a phase's events in any order, but phase after phase). Empty
    for the input layer (the host sends its events in order), the output layer, and a
    max-pooling layer read only by max pooling (its events already leave phase by phase)."""
    lay = snn.layers[index]
    if lay.kind in ("input", "output"):
        return []
    out = set()
    for other in snn.layers:
        if other.kind == "maxpool":
            if other.source == index and lay.kind != "maxpool":
                out.add(lay.T)
            continue
        for syn in other.synapses:
            if syn.source == index:
                flat = syn.op == "linear" or len(lay.shape) != 3
                out.add(lay.T * (1 if flat else lay.shape[1] * lay.shape[2]))
    return sorted(out)


@dataclass(frozen=True)
class SortShape:
    """What sizes the memories of one counting sort of a producer's events
    (``rtl.os_sort.SortingBuckets``; docs/architecture.md §11, "Bucketing a producer's
    events"): ``buckets`` B (:func:`bucketings`), ``capacity`` the most events it takes per
    image (``hwsim.eventbuf.worst_events``: one per neuron), ``entry_bits`` the event entry
    (channel, column, sign: ``rtl.os_blocks.event_entry``)."""

    buckets: int
    capacity: int
    entry_bits: int


def sort_shapes(snn: SnnModel, index: int) -> list[SortShape]:
    """Output-stationary: one :class:`SortShape` per sort of layer ``index`` (per entry of
    :func:`bucketings`, in its order). The entry is the one the RTL stores: the channel
    (⌈log2 C⌉ bits), the column (⌈log2 W⌉) and the sign, both at least a bit; a sort of one
    bucket per phase reads the layer as flat, as a linear group does (``rtl.engine``: source
    (size, 1, 1)), so its channel is the neuron (⌈log2 size⌉ bits) and its column one bit;
    where a max pooling reads it, the entry also holds the phase (⌈log2 T⌉ bits:
    ``rtl.os_pool.pool_entry``, streamed out in order without an index run)."""
    lay = snn.layers[index]
    cap = eventbuf.worst_events(lay)
    c, w = (lay.shape[0], lay.shape[2]) if len(lay.shape) == 3 else (lay.size, 1)
    pooled = any(o.kind == "maxpool" and o.source == index for o in snn.layers)
    out = []
    for b in bucketings(snn, index):
        if b == lay.T:
            bits = _bits(lay.size) + 1 + 1 + (_bits(lay.T) if pooled else 0)
        else:
            bits = _bits(c) + _bits(w) + 1
        out.append(SortShape(b, cap, bits))
    return out


def _bits(values: int) -> int:
    """Bits of an unsigned field holding 0 … values − 1, at least one (Amaranth's
    ``range(max(values, 2))``)."""
    return (max(values, 2) - 1).bit_length()


class ArchFitError(ValueError):
    """A network that the configured accelerator cannot hold (memories, widths)."""


@dataclass
class SimResult:
    """What one simulation produced (totals over the N images unless said otherwise).

    Attributes
    ----------
    names, kinds : list of str
        Per layer.
    cycles : dict of int64 [layers]
        ``busy`` (issue, adder, scan and pipeline cycles), ``stalled`` (output queue full, and
        the final drain of the output queue) and ``waiting`` (scans of phases with no input
        and no decision yet, T_src ≤ k < T_w).
    cycles_per_image : int64 [N, layers]
        busy + stalled + waiting of each image in each layer.
    counts : dict of int64 [layers]
        Every action of ``archspec.config.ACTIONS``.
    queue_peak : int64 [layers]
        Largest output-queue occupancy seen (events).
    queue_mean : float64 [layers]
        Output-queue occupancy averaged over the layer's cycles.
    lane_utilisation : float64 [layers]
        adds / (P · adder cycles); 0 where the layer has no adds.
    spikes : list
        As golden's: input layer (N, T_in, *shape) int8 signed trains; spiking and max-pool
        layers (N, *shape) int16 phases, −1 for none; the output layer None.
    predictions : int64 [N]
        argmax of the output potentials, lowest index on ties; of a graph network (one graph,
        N = 1) one per node, as golden's: int64 [nodes].
    logits_int : int64 [N, classes]
        The output layer's integer potentials; of a graph network [nodes, classes].
    arch : ArchConfig
        The configuration simulated.
    images : int
        N.
    adder_cycles : int64 [layers]
        Cycles the PE array spent adding (the event phases without issue and pipeline cycles).
    mode : str
        ``"layer"`` or ``"pipelined"``.
    stream_end_cycles : int64 [N]
        The cycle at which each image's prediction is out, images streamed back to back
        (layer mode: the running sum of ``image_cycles``, controller cycles included).
    potential_bits : int64 [layers]
        Width of the potentials each layer stores: A (``potential_sram``), or the layer's
        integer bound (``output_stationary``, :func:`potential_bound`); 0 for max pooling
        and the input layer.
    potential_peak : int64 [layers]
        Largest |U| of an unfired neuron seen in the simulation (output-stationary only;
        it never exceeds the bound behind ``potential_bits``).
    tile_shapes : list
        Output-stationary: the (channels, rows, columns) tile of each neuron layer, else None.
    weight_fills : int64 [layers]
        Output-stationary with a weight buffer: weights loaded into it per image (every weight
        of a layer whose channel-group slice fits and is reused by several tiles), else 0;
        such a layer's ``weight_reads`` are reads of the buffer.
    event_buffer_banks : int64 [N]
        Per image, the most event-buffer banks live at once (``hwsim.eventbuf``; at most
        ``arch.event_buffer_banks``, else ``simulate`` raises ArchFitError).
    bucket_cycles : int64 [N, layers]
        Output-stationary: per image, the cycles of each layer's counting sort of its events
        into the buckets its consumers read (:func:`bucketings`, :func:`bucket_cycles`; the
        longest where there are several, which run side by side), after its engine's last
        cycle; 0 elsewhere. Part of ``image_cycles`` and the stream timing; not of any
        layer's ``cycles``.
    bucket_reads, bucket_writes : int64 [layers]
        Output-stationary: the sorts' memory accesses over all images, in words
        (:func:`sort_accesses` summed over the memories and the layer's sorts); the flat
        energy table prices each as a 32-bit event-buffer access, ``hwsim.energy`` each on
        its own memory (energy entry ``bucketing``).
    bucket_events : int64 [layers]
        Output-stationary: the events each layer's sorts take, over all images (its spikes;
        0 for a layer not sorted).
    sort_shapes : list
        Output-stationary: per layer, its sorts' :class:`SortShape` (:func:`sort_shapes`;
        empty for a layer not sorted), which size the sort memories whose leakage
        ``hwsim.energy`` charges; empty in the potential-SRAM dataflow.
    controller_cycles : int
        Per image, the controller's cycles besides the engines' (layer mode:
        :func:`controller_cycles`, 2 · E + 1 for E engines; pipelined mode: 0). Part of
        ``image_cycles``, the latencies and the stream timing; not of any layer's cycles.
    emit_rank : list
        Per layer: for a max-pooling layer int32 [N, size], each window's place in the order
        its engine pushed the spikes of the image (−1: never fired); None for the others, which
        emit each phase in their scan order (:func:`scan_order`). Consumers read each phase's
        events in this order (:func:`emission_order`; docs/architecture.md §14).
    """

    names: list[str]
    kinds: list[str]
    cycles: dict[str, np.ndarray]
    cycles_per_image: np.ndarray
    counts: dict[str, np.ndarray]
    queue_peak: np.ndarray
    queue_mean: np.ndarray
    lane_utilisation: np.ndarray
    spikes: list
    predictions: np.ndarray
    logits_int: np.ndarray
    arch: ArchConfig
    images: int = 0
    adder_cycles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mode: str = "layer"
    stream_end_cycles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    potential_bits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    potential_peak: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tile_shapes: list = field(default_factory=list)
    weight_fills: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    event_buffer_banks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    controller_cycles: int = 0
    emit_rank: list = field(default_factory=list)
    bucket_cycles: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    bucket_reads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bucket_writes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    bucket_events: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sort_shapes: list = field(default_factory=list)

    @property
    def image_cycles(self) -> np.ndarray:
        """int64 [N]: each image's latency in cycles, the engines' cycles of every layer plus
        the controller's (``controller_cycles``) and the sorts' (``bucket_cycles``)."""
        out = self.cycles_per_image.sum(1) + self.controller_cycles
        return out + self.bucket_cycles.sum(1) if self.bucket_cycles.size else out

    def first_image_latency_us(self) -> float:
        """Time until the first image's prediction, in µs (either mode)."""
        return float(self.stream_end_cycles[0]) / self.arch.clock_mhz

    def stream_time_us(self) -> float:
        """Time until the last image's prediction, in µs (images back to back)."""
        return float(self.stream_end_cycles[-1]) / self.arch.clock_mhz

    def images_per_s(self) -> float:
        """Steady-state throughput: images after the first per second (all images per second
        for a single image)."""
        end = self.stream_end_cycles
        span, count = (end[-1] - end[0], end.size - 1) if end.size > 1 else (end[0], 1)
        return float(count / span * self.arch.clock_mhz * 1e6) if span > 0 else float("inf")

    @property
    def total_cycles(self) -> np.ndarray:
        """busy + stalled + waiting per layer (all images)."""
        return sum(self.cycles[k] for k in CYCLE_KINDS)

    def energy_pj(self) -> dict[str, np.ndarray]:
        """Energy per action and layer, in pJ: counts × the config's table
        (``memory_model = "flat"``), or priced by memory size and width with a ``leakage``
        entry (``"cacti"``, ``hwsim.energy``)."""
        if self.arch.memory_model == "cacti":
            from hwsim.energy import energy_by_action

            return energy_by_action(self, COSTED_ACTIONS)
        out = {
            a: self.counts[a].astype(np.float64) * self.arch.energy.cost_pj(a)
            for a in COSTED_ACTIONS
        }
        if self.bucket_reads.size:  # output-stationary: each a 32-bit event-buffer access
            e = self.arch.energy
            out["bucketing"] = (
                self.bucket_reads * e.index_read_pj + self.bucket_writes * e.queue_push_pj
            )
        return out

    def total_energy_pj(self) -> np.ndarray:
        """Energy per layer summed over the actions, in pJ."""
        return sum(self.energy_pj().values())

    def latency_us(self) -> np.ndarray:
        """Time per layer at ``arch.clock_mhz`` (all images, one engine), in µs."""
        return self.total_cycles / self.arch.clock_mhz

    def latency_per_image_us(self) -> np.ndarray:
        """Time of each image through the whole network (layer mode), in µs: the engines'
        cycles and the controller's (``image_cycles``)."""
        return self.image_cycles / self.arch.clock_mhz

    def rows(self) -> list[dict[str, object]]:
        """One dict per layer plus a ``total`` row, per image (totals ÷ N): the report table."""
        n = max(self.images, 1)
        energy = self.energy_pj()
        out = []
        for i, (name, kind) in enumerate(zip(self.names, self.kinds, strict=True)):
            row: dict[str, object] = {"layer": name, "kind": kind}
            row.update({f"{k}_cycles": self.cycles[k][i] / n for k in CYCLE_KINDS})
            row["latency_us"] = self.latency_us()[i] / n
            row.update({a: self.counts[a][i] / n for a in ACTIONS})
            row.update({f"{a}_pj": energy[a][i] / n for a in COSTED_ACTIONS})
            for extra in sorted(energy.keys() - set(COSTED_ACTIONS)):  # cacti: leakage, fills
                row[f"{extra}_pj"] = energy[extra][i] / n
            row["energy_pj"] = self.total_energy_pj()[i] / n
            row["lane_utilisation"] = float(self.lane_utilisation[i])
            row["queue_peak"] = int(self.queue_peak[i])
            row["queue_mean"] = float(self.queue_mean[i])
            out.append(row)
        total: dict[str, object] = {"layer": "total", "kind": ""}
        for key in out[0]:
            if key not in ("layer", "kind", "lane_utilisation", "queue_peak", "queue_mean"):
                total[key] = sum(r[key] for r in out)
        total["queue_peak"] = int(self.queue_peak.max()) if self.queue_peak.size else 0
        return [*out, total]


@dataclass(frozen=True)
class _Plan:
    """What one layer needs on the engine: fan-out table, groups, scan geometry."""

    fan: FanOut
    offsets: tuple[int, ...]  # first fan-out row of each synapse group
    rows: int
    row: np.ndarray
    chan: np.ndarray


# --------------------------------------------------------------------------- checks
def check_fits(snn: SnnModel, arch: ArchConfig) -> None:
    """Raise ArchFitError naming the layer and sizes if ``snn`` does not fit ``arch``."""
    if not snn.is_quantized:
        raise ArchFitError("hwsim needs integer weights: convert with weight_bits=8")
    if snn.weight_bits > arch.weight_bits:
        raise ArchFitError(
            f"the network has {snn.weight_bits}-bit weights, the accelerator takes "
            f"weight_bits = {arch.weight_bits}"
        )
    if snn.acc_bits > arch.potential_bits:
        raise ArchFitError(
            f"the network needs {snn.acc_bits}-bit potentials (acc_bits), the accelerator has "
            f"potential_bits = {arch.potential_bits}"
        )
    for i, lay in enumerate(snn.layers):
        if lay.kind == "input":
            continue
        wbits, pbits = memory_bits(snn, lay, arch)
        if wbits > arch.weight_sram_bits:
            graph = graph_bits(lay)
            part = (
                f" ({graph / 8192:.2f} KiB of it Â's CSR: "
                f"{max(s.index.shape[1] for s in lay.synapses if s.op == 'graph'):,} edges, "
                "16-bit weights)"
                if graph
                else ""
            )
            raise ArchFitError(
                f"layer {i} ({lay.name}) needs {wbits / 8192:.2f} KiB of parameter memory{part}, "
                f"weight_sram_kib = {arch.weight_sram_kib:g}"
            )
        if pbits > arch.potential_sram_bits:
            raise ArchFitError(
                f"layer {i} ({lay.name}) needs {pbits / 8192:.2f} KiB of potential memory, "
                f"potential_sram_kib = {arch.potential_sram_kib:g}"
            )
        entries = sum(table_entries(s, snn.layers[s.source], lay) or 0 for s in lay.synapses)
        if entries > MAX_TABLE_ENTRIES:
            raise ArchFitError(
                f"layer {i} ({lay.name}): its fan-out tables would hold {entries:,} synapses "
                f"(the simulator expands them per source neuron), more than hwsim's limit of "
                f"{MAX_TABLE_ENTRIES:,}"
            )


def check_event_buffer(snn: SnnModel, arch: ArchConfig, spikes: list, mode: str) -> np.ndarray:
    """Event-buffer banks live at once, per image (int64 [N]); raise ArchFitError naming the
    first image and the layer whose live buffers need more than ``event_buffer_banks``."""
    if not any(s is not None and len(s) for s in spikes):
        return np.zeros(0, np.int64)
    banks, at = eventbuf.banks_needed(snn, arch, eventbuf.event_counts(snn, spikes), mode)
    over = np.flatnonzero(banks > arch.event_buffer_banks)
    if over.size:
        k, j = int(over[0]), int(at[over[0]])
        raise ArchFitError(
            f"image {k}: while layer {j} ({snn.layers[j].name}) runs, the live event buffers "
            f"need {int(banks[k])} banks of {arch.event_buffer_kib:g} KiB, "
            f"event_buffer_banks = {arch.event_buffer_banks}"
        )
    return banks


def graph_table_bits(syn, nodes: int) -> int:
    """Bits of a ``graph`` group's CSR of Â in the parameter SRAM (docs/architecture.md §2):
    per edge its weight (16-bit) and its target node (⌈log2 nodes⌉ bits), per source node a
    pointer into the edge list (⌈log2(nnz + 1)⌉ bits)."""
    nnz = int(np.asarray(syn.index).shape[1])
    wbits = 8 * np.asarray(syn.weight_q).dtype.itemsize
    return nnz * (wbits + max(1, (nodes - 1).bit_length())) + (nodes + 1) * max(1, nnz.bit_length())


def graph_bits(lay: Layer) -> int:
    """Parameter-SRAM bits of a layer's graph groups (a −Â group shares its +Â's CSR)."""
    syns = lay.synapses
    return sum(
        graph_table_bits(s, lay.shape[1])
        for j, s in enumerate(syns)
        if s.op == "graph" and not _shares_table(s, syns[:j])
    )


def _shares_table(syn, earlier) -> bool:
    """A graph group whose Â is an earlier group's negated (the −Â group reading the negative
    rail) uses that group's CSR: the adder subtracts."""
    return any(
        e.op == "graph"
        and np.array_equal(e.index, syn.index)
        and np.array_equal(np.asarray(e.weight_q, np.int64), -np.asarray(syn.weight_q, np.int64))
        for e in earlier
    )


def memory_bits(snn: SnnModel, lay: Layer, arch: ArchConfig) -> tuple[int, int]:
    """(parameter SRAM bits, potential SRAM bits) of one layer (docs/architecture.md)."""
    p, wb, ab = arch.lanes, arch.weight_bits, arch.potential_bits
    rows = scan_rows(lay, p)
    if lay.kind == "maxpool":
        return 0, rows * p  # fired flags only
    words = 0
    for s in lay.synapses:
        if s.op == "conv":
            cout, cin, kh, kw = s.weight_q.shape
            words += cin * kh * kw * ceil_div(cout, p)
        elif s.op == "linear":
            words += snn.layers[s.source].size * ceil_div(lay.size, p)
        elif s.op == "embedding":  # word (n, ⌊c/P⌋): W[c, n] for P consecutive c
            words += snn.layers[s.source].size * ceil_div(lay.channels, p)
        elif s.op == "graph":  # Â as a CSR with 16-bit values, counted in bits (graph_bits)
            pass
        else:
            words += ceil_div(lay.channels, p)
    # a residual layer's int16 shortcut weights widen all its weight lanes (rtl/engine.py)
    widths = [8 * np.asarray(s.weight_q).dtype.itemsize for s in lay.synapses if s.op != "graph"]
    wb = max(wb, *widths) if widths else wb
    thresholds = 0 if lay.kind == "output" else lay.channels * lay.T * ab
    # output stationary: the potentials live in the lane registers, not in an SRAM
    pot = 0 if arch.dataflow == "output_stationary" else rows * p * (ab + 1)
    return words * p * wb + graph_bits(lay) + rows * p * ab + thresholds, pot


def scan_rows(lay: Layer, lanes: int) -> int:
    """Words of P potentials: pixel-major, channels padded to a multiple of P."""
    pixels = lay.size // lay.channels if len(lay.shape) == 3 else 1
    per = ceil_div(lay.channels if len(lay.shape) == 3 else lay.size, lanes)
    return pixels * per


# --------------------------------------------------------------------------- simulate
def simulate(
    snn: SnnModel,
    inputs: torch.Tensor | np.ndarray,
    arch: ArchConfig | None = None,
    *,
    mode: str = "layer",
    stalls: np.ndarray | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> SimResult:
    """Simulate ``inputs`` (N, *input shape), taken as the ANN takes them, on ``arch``.

    Parameters
    ----------
    snn : SnnModel
        A quantised network (``weight_bits`` set).
    inputs : Tensor or ndarray
        The images, as for ``golden.run``; a graph network (``snn.meta["graph"]``) takes its
        node features (nodes, F) (the identity for one-hot features), one graph.
    arch : ArchConfig, optional
        The accelerator (default: ``ArchConfig()``, the same as ``archspec/configs/default.toml``).
    mode : str
        ``"layer"``: one engine runs the layers in turn (image after image);
        ``"pipelined"``: one engine per layer (DESIGN 2.9, Fig. 10): a layer's phase k starts
        once its source has decided its phase-k spikes (docs/architecture.md §7). Spikes,
        counts and per-layer engine cycles are the same in both modes; the stream timing
        (``stream_end_cycles``) differs.
    stalls : bool ndarray, optional
        Output-queue back-pressure: in cycle t of a layer the queue cannot pop if
        ``stalls[t % len(stalls)]`` (see :func:`stall_pattern`).
    progress : callable, optional
        Called as ``progress(i, name)`` after layer ``i`` has been simulated (for a progress
        bar); it does not change the result.
    """
    arch = ArchConfig() if arch is None else arch
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    graph = snn.meta.get("graph")
    if graph is not None:  # the node features (nodes, F), as golden.run takes them
        from converter.graph_frontend import layer_input

        inputs = layer_input(inputs, graph["one_hot"], graph["nodes"], graph["features"])
    inputs = torch.as_tensor(inputs)
    if tuple(inputs.shape[1:]) != snn.input_shape:
        raise ValueError(
            f"inputs have shape {tuple(inputs.shape)}, the SNN takes (N, "
            f"{', '.join(map(str, snn.input_shape))})"
        )
    check_fits(snn, arch)
    blocked = np.zeros(0, np.bool_) if stalls is None else np.asarray(stalls, np.bool_).ravel()
    if stalls is not None and (blocked.size == 0 or blocked.all()):
        raise ValueError("stalls must leave the output queue at least one unblocked cycle")
    n = inputs.shape[0]
    nl = len(snn.layers)
    lat = np.array(
        [
            arch.event_issue_cycles,
            arch.adder_pipeline_cycles,
            arch.neuron_pipeline_cycles,
            arch.lanes,
            arch.output_queue_depth,
        ],
        np.int64,
    )
    counts = np.zeros((nl, n, K.N_ACTIONS), np.int64)
    stats = np.zeros((nl, n, K.N_STATS), np.int64)
    pot_bits = np.zeros(nl, np.int64)
    fills = np.zeros(nl, np.int64)
    peaks = np.zeros(nl, np.int64)
    shapes: list = [None] * nl
    stationary = arch.dataflow == "output_stationary"
    ph_cyc: list[np.ndarray | None] = [None] * nl
    adder_cycles = np.zeros(nl, np.int64)
    spikes: list = [None] * nl
    ranks: list = [None] * nl  # max pooling: the push order of each image (emit_rank)
    logits = np.zeros((n, snn.num_classes), np.int64)
    for i, lay in enumerate(snn.layers):
        if lay.kind == "input":
            spikes[i] = encode_input(inputs, lay)
            if progress is not None:
                progress(i, lay.name)
            continue
        phase = np.zeros((n, lay.size), np.int16)
        if lay.kind == "maxpool":
            t_src = snn.layers[lay.source].T
            ph_cyc[i] = np.zeros((n, t_src, 2), np.int64)
            fan = _maxpool_plan(snn, lay)
            whole = (lay.source, 0, 0, snn.layers[lay.source].size)
            # output-stationary: the source's events as its phase sort leaves them, each
            # phase's in the order the source's engine pushed them (tile, then lane)
            keys = {lay.source: os_emission_key(snn, lay.source, arch)} if stationary else None
            ptr, ids, _ = _events(snn, spikes, [whole], n, ranks, keys)
            K.maxpool_layer(
                ptr, ids, fan.ptr, fan.tgt, t_src, lat, blocked, phase, counts[i], stats[i],
                ph_cyc[i],
            )  # fmt: skip
            ranks[i] = _push_rank(fan, ptr, ids, n, t_src, lay.size)
        elif stationary:
            u, adder_cycles[i], pot_bits[i], peaks[i], shapes[i], fills[i] = _run_os_layer(
                snn, lay, (spikes, ranks), arch, lat, blocked, phase, counts[i], stats[i]
            )
            if lay.kind == "output":
                logits = u
        else:
            last = snn.source_of(lay).T if lay.kind == "output" else lay.T + lay.T_w
            ph_cyc[i] = np.zeros((n, last, 2), np.int64)
            pot_bits[i] = arch.potential_bits
            u, adder_cycles[i] = _run_neuron_layer(
                snn, lay, (spikes, ranks), arch, lat, blocked, phase, counts[i], stats[i],
                ph_cyc[i],
            )  # fmt: skip
            if lay.kind == "output":
                logits = u
        spikes[i] = None if lay.kind == "output" else phase.reshape(n, *lay.shape)
        if progress is not None:
            progress(i, lay.name)
    if graph is not None:  # one row per node, as golden returns them: (nodes, classes)
        out = snn.output
        logits = logits.reshape(out.channels, -1).T.copy()
    res = _result(snn, arch, spikes, logits, counts, stats, adder_cycles, n)
    res.mode = mode
    res.event_buffer_banks = check_event_buffer(snn, arch, spikes, mode)
    res.potential_bits, res.potential_peak, res.tile_shapes = pot_bits, peaks, shapes
    res.weight_fills, res.emit_rank = fills, ranks
    if stationary:
        _bucketing(snn, spikes, res)
    if mode == "layer":
        res.controller_cycles = controller_cycles(snn, arch)
        res.stream_end_cycles = np.cumsum(res.image_cycles)
    elif stationary:
        res.stream_end_cycles = _pipeline_os(snn, stats, res.bucket_cycles, n)
    else:
        res.stream_end_cycles = _pipeline(snn, arch, stats, ph_cyc, n)
    return res


def _bucketing(snn: SnnModel, spikes: list, res: SimResult) -> None:
    """Output-stationary: each layer's counting sorts (``bucket_cycles``, ``bucket_reads``,
    ``bucket_writes`` of ``res``)."""
    n, nl = res.images, len(snn.layers)
    res.bucket_cycles = np.zeros((n, nl), np.int64)
    res.bucket_reads, res.bucket_writes = np.zeros(nl, np.int64), np.zeros(nl, np.int64)
    res.bucket_events = np.zeros(nl, np.int64)
    res.sort_shapes = [sort_shapes(snn, i) for i in range(nl)]
    for i in range(nl):
        sorts = [s.buckets for s in res.sort_shapes[i]]
        if not sorts:
            continue
        events = (spikes[i].reshape(n, -1) >= 0).sum(1).astype(np.int64)
        res.bucket_cycles[:, i] = [bucket_cycles(max(sorts), int(e)) for e in events]
        e_all = res.bucket_events[i] = int(events.sum())
        for b in sorts:
            acc = sort_accesses(b, e_all, n).values()
            res.bucket_reads[i] += sum(r for r, _ in acc)
            res.bucket_writes[i] += sum(w for _, w in acc)


def _pipeline_os(snn: SnnModel, stats, sort_cycles, n: int) -> np.ndarray:
    """Pipelined mode of the output-stationary engines: an engine starts an image once it has
    finished the previous one and every source engine has finished the image and sorted its
    events (``sort_cycles`` [N, layers]; a tile needs all phases of its receptive field;
    max-pooling engines are treated the same way). An engine's sort holds it: the staging
    memory takes the next image's events."""
    done: list[np.ndarray] = [np.zeros(n, np.int64)]
    end = np.zeros(n, np.int64)
    for i, lay in enumerate(snn.layers[1:], start=1):
        srcs = [lay.source] if lay.kind == "maxpool" else [s.source for s in lay.synapses]
        ready = np.max(np.stack([done[s] for s in srcs]), axis=0)
        # the whole layer, its output-queue drain included (part of the stalled cycles)
        work = stats[i, :, K.BUSY] + stats[i, :, K.STALLED] + stats[i, :, K.WAITING]
        work = work + sort_cycles[:, i]
        out = np.zeros(n, np.int64)
        free = 0
        for b in range(n):
            out[b] = max(free, int(ready[b])) + int(work[b])
            free = out[b]
        done.append(out)
        end = out
    return end


def _pipeline(snn: SnnModel, arch: ArchConfig, stats, ph_cyc, n: int) -> np.ndarray:
    """Compose the engines' phase durations into the stream timing of pipelined mode."""
    ready: list[np.ndarray] = [np.zeros((n, snn.layers[0].T), np.int64)]
    end = np.zeros(n, np.int64)
    for i, lay in enumerate(snn.layers[1:], start=1):
        srcs = [lay.source] if lay.kind == "maxpool" else [s.source for s in lay.synapses]
        ready_src = np.max(np.stack([ready[s] for s in srcs]), axis=0)
        if lay.kind == "maxpool":
            init, t_w, t_out = 0, 0, lay.T
        else:
            init = scan_rows(lay, arch.lanes) + arch.neuron_pipeline_cycles
            t_w, t_out = (0, 0) if lay.kind == "output" else (lay.T_w, lay.T)
        end, r = K.schedule_layer(
            ready_src, init, ph_cyc[i], stats[i, :, K.DRAIN].copy(), ready_src.shape[1], t_w,
            t_out,
        )  # fmt: skip
        ready.append(r)
    return end


def _run_neuron_layer(snn, lay, sources, arch, lat, blocked, phase, counts, stats, ph_cyc):
    """``sources``: (spikes, ranks) of the layers simulated so far."""
    n = phase.shape[0]
    src = snn.source_of(lay)
    plan = _plan(snn, lay, arch.lanes)
    ptr, ids, sign = _events(snn, sources[0], _groups(snn, lay, plan), n, sources[1])
    out = lay.kind == "output"
    theta = np.zeros((1, 1), np.int64) if out else np.asarray(lay.threshold_q, np.int64)
    u = np.zeros((n, lay.size), np.int64)
    K.neuron_layer(
        ptr, ids, sign, plan.fan.ptr, plan.fan.tgt, plan.fan.w, plan.fan.cycles,
        np.asarray(lay.bias_q, np.int64).reshape(-1), theta, plan.chan, plan.row, plan.rows,
        src.T, lay.T, lay.T_w, fixed_base(src.Q), fixed_base(lay.Q), int(lay.sat_limit), out,
        bool(out or theta.min() >= 1), lat, blocked, phase, u, counts, stats, ph_cyc,
    )  # fmt: skip
    adder = int(plan.fan.cycles[ids].sum()) if ids.size else 0
    return u, adder


def potential_bound(snn: SnnModel, lay: Layer, fan: FanOut) -> int:
    """The largest |U| an unfired neuron of ``lay`` can hold (docs/semantics.md §3–§4), by
    interval arithmetic over its phases: |B| ≤ L at the start, each scaling at most
    ⌈|U| · M / 2^16⌉ and clamped to L, each input phase adds at most Smax (the largest Σ |w|
    into one neuron). The output-stationary lane registers are this wide (plus a sign bit)."""
    src = snn.source_of(lay)
    lim = int(lay.sat_limit)
    s_in = np.bincount(fan.tgt, np.abs(fan.w.astype(np.float64)), minlength=lay.size)
    smax = int(s_in.max()) if s_in.size else 0
    hi = int(np.abs(np.asarray(lay.bias_q, np.int64)).max()) if lay.size else 0
    m_in, m_out = fixed_base(src.Q), fixed_base(lay.Q)
    last = src.T - 1 if lay.kind == "output" else lay.T - 1 + lay.T_w
    peak = hi
    for k in range(last + 1):
        if k > 0:
            m = m_in if k <= src.T - 1 else m_out
            hi = min(lim, (hi * m + 65535) >> 16)  # round half up of U·M/2^16, then clamp
        if k < src.T:
            hi += smax
        peak = max(peak, hi)
    return peak


def _run_os_layer(snn, lay, sources, arch, lat, blocked, phase, counts, stats):
    """A neuron or output layer on the output-stationary engine (docs/architecture.md §11);
    ``sources``: (spikes, ranks) of the layers simulated so far.
    Returns (final potentials, adder cycles, potential width, peak |U|, tile shape, weights
    loaded into the weight buffer per image)."""
    n = phase.shape[0]
    src = snn.source_of(lay)
    plan = _plan(snn, lay, arch.lanes)
    tiles = _os_plan(snn, lay, arch)
    ptr, ids, sign = _events(snn, sources[0], _groups(snn, lay, plan), n, sources[1])
    out = lay.kind == "output"
    theta = np.zeros((1, 1), np.int64) if out else np.asarray(lay.threshold_q, np.int64)
    u = np.zeros((n, lay.size), np.int64)
    peak = np.zeros(n, np.int64)
    buffered = weight_buffered(lay, tiles, arch)
    pre = np.zeros(tiles.tiles, np.int64)
    if buffered:
        pre[:: tiles.tiles // tiles.groups] = fill_words(lay)
    fill = sum(np.asarray(s.weight_q).size for s in lay.synapses) if buffered else 0
    K.os_neuron_layer(
        ptr, ids, sign, plan.fan.ptr, plan.fan.tgt, plan.fan.w, tiles.src_pix, tiles.pt_ptr,
        tiles.pt_tile, np.asarray(lay.bias_q, np.int64).reshape(-1), theta, plan.chan,
        tiles.tile_of, tiles.tile_idx, tiles.tile_chans, pre, _reloads(theta, lay, src), src.T,
        lay.T, lay.T_w,
        fixed_base(src.Q), fixed_base(lay.Q), int(lay.sat_limit), out, lat, blocked, phase, u,
        counts, stats, peak,
    )  # fmt: skip
    cache = _PLANS.setdefault(snn, {})
    key = (snn.layers.index(lay), "bound")
    if key not in cache:
        cache[key] = potential_bound(snn, lay, plan.fan)
    bits = max(2, cache[key].bit_length() + 1)
    return u, int(counts[:, K.POP].sum()), bits, int(peak.max(initial=0)), tiles.shape, fill


def weight_buffered(lay: Layer, tiles: TilePlan, arch: ArchConfig) -> bool:
    """Whether an output-stationary layer uses the weight buffer: it holds one channel
    group's weights (all groups' of the layer) when they fit and several pixel tiles reuse
    them (3-D layers; graph and embedding weights are each used by one node block)."""
    graphy = any(s.op in ("graph", "embedding") for s in lay.synapses)
    if len(lay.shape) != 3 or tiles.tiles <= tiles.groups or graphy:
        return False
    tc = tiles.shape[0]
    slice_w = sum(-(-np.asarray(s.weight_q).size * tc // np.asarray(s.weight_q).shape[0])
                  for s in lay.synapses)  # fmt: skip
    wbits = max(8 * np.asarray(s.weight_q).dtype.itemsize for s in lay.synapses)
    return 0 < slice_w * wbits <= arch.weight_buffer_kib * 8192


def group_fill_words(lay: Layer) -> list[int]:
    """Per synapse group, the words of one channel group's weights in the weight buffer, one
    filled per cycle: a tap-bank word (all kh·kw taps of the group's tc channels for one
    source channel, the width of an event's weight read), C_in of them for a conv (or
    linear) group, one (tc weights) for a depthwise group."""
    return [1 if s.op in ("avgpool", "shortcut") else int(np.asarray(s.weight_q).shape[1])
            for s in lay.synapses]  # fmt: skip


def fill_words(lay: Layer) -> int:
    """Cycles to fill the weight buffer with one channel group's weights
    (:func:`group_fill_words`, summed)."""
    return sum(group_fill_words(lay))


def _reloads(theta: np.ndarray, lay: Layer, src: Layer) -> np.ndarray:
    """Per boundary k: whether the tile's threshold registers are (re)loaded, i.e. k is the
    first compare (k = T_w) or Θq[·, k − T_w] differs from the previous column."""
    last = src.T if lay.kind == "output" else lay.T + lay.T_w
    out = np.zeros(last, np.bool_)
    if lay.kind == "output":
        return out
    for k in range(lay.T_w, last):
        t_o = k - lay.T_w
        out[k] = t_o == 0 or bool(np.any(theta[:, t_o] != theta[:, t_o - 1]))
    return out


def os_tile_plan(snn: SnnModel, lay: Layer, arch: ArchConfig) -> TilePlan:
    """Layer ``lay``'s tile plan on ``arch`` in the output-stationary dataflow (cached per
    network; the RTL engine walks the same tiles)."""
    return _os_plan(snn, lay, arch)


def _os_plan(snn: SnnModel, lay: Layer, arch: ArchConfig) -> TilePlan:
    cache = _PLANS.setdefault(snn, {})
    key = (snn.layers.index(lay), arch.lanes, "os", arch.tile_spikes_per_neuron,
           arch.neuron_pipeline_cycles, arch.tile_channels)  # fmt: skip
    if key not in cache:
        plan = _plan(snn, lay, arch.lanes)
        pix, row, per_pix = source_pixels(snn.layers, lay, lay.synapses)
        src = snn.source_of(lay)
        n_ph = src.T if lay.kind == "output" else lay.T + lay.T_w
        cache[key] = choose_plan(lay, plan.fan, pix, row, per_pix, arch.lanes,
                                 arch.tile_spikes_per_neuron, min(src.T, n_ph), n_ph,
                                 arch.neuron_pipeline_cycles, arch.tile_channels)  # fmt: skip
    return cache[key]


# Fan-out tables per (network, layer, P): a network is immutable, so its tables are built once
# and dropped with it.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan(snn: SnnModel, lay: Layer, lanes: int) -> _Plan:
    cache = _PLANS.setdefault(snn, {})
    key = (snn.layers.index(lay), lanes)
    if key not in cache:
        cache[key] = _build_plan(snn, lay, lanes)
    return cache[key]


def _maxpool_plan(snn: SnnModel, lay: Layer) -> FanOut:
    cache = _PLANS.setdefault(snn, {})
    key = (snn.layers.index(lay), 0)
    if key not in cache:
        cache[key] = maxpool_fanout(lay, snn.layers[lay.source])
    return cache[key]


def _build_plan(snn: SnnModel, lay: Layer, lanes: int) -> _Plan:
    fans = [synapse_fanout(s, snn.layers[s.source], lay, lanes) for s in lay.synapses]
    offsets, start = [], 0
    for f in fans:
        offsets.append(start)
        start += f.cycles.size
    fan = (
        fans[0]
        if len(fans) == 1
        else FanOut(
            ptr=np.concatenate(
                [[0]] + [f.ptr[1:] + sum(g.tgt.size for g in fans[:j]) for j, f in enumerate(fans)]
            ).astype(np.int64),
            tgt=np.concatenate([f.tgt for f in fans]),
            w=np.concatenate([f.w for f in fans]),
            cycles=np.concatenate([f.cycles for f in fans]),
        )
    )
    j = np.arange(lay.size)
    per_chan = lay.size // lay.channels
    chan = (j // per_chan).astype(np.int64)
    if len(lay.shape) == 3:
        row = (j % per_chan) * ceil_div(lay.channels, lanes) + chan // lanes
    else:
        row = j // lanes
    return _Plan(fan, tuple(offsets), scan_rows(lay, lanes), row.astype(np.int64), chan)


def layer_events(
    snn: SnnModel, spikes: list, index: int, lanes: int, ranks: list | None = None
) -> tuple[FanOut, np.ndarray, np.ndarray, np.ndarray, int]:
    """The data the PE array of a neuron or output layer works on: its fan-out table and the
    events of its sources, bucketed by image · T_src + phase.

    For the speed benchmark's bare gather-add reference (``kernels.gather_add``).

    Parameters
    ----------
    snn : SnnModel
        The simulated network.
    spikes : list
        ``SimResult.spikes`` (or golden's, in the same layout).
    index : int
        A neuron or output layer.
    lanes : int
        P.
    ranks : list, optional
        ``SimResult.emit_rank``: a max-pooling source's events in its push order (without
        it, in neuron order; the order changes no add).

    Returns
    -------
    fan, ev_ptr, ev_id, ev_sign, t_src
        The fan-out table, the events (CSR over image · T_src + phase) and T_src.
    """
    lay = snn.layers[index]
    if lay.kind not in ("neuron", "output"):
        raise ValueError(f"layer {index} ({lay.name}) is a {lay.kind} layer, it has no adds")
    plan = _plan(snn, lay, lanes)
    n = spikes[0].shape[0]
    ptr, ids, sign = _events(snn, spikes, _groups(snn, lay, plan), n, ranks)
    return plan.fan, ptr, ids, sign, snn.source_of(lay).T


def _groups(snn: SnnModel, lay: Layer, plan: _Plan) -> list[tuple[int, int, int, int]]:
    """(source layer, fan-out row offset, first and end source neuron it reads) per synapse
    group. A graph group reading one rail of a two-rail source gets only that rail's events:
    the writer tags each event with the group that reads its channel (the event's group bit),
    so the other rail's events are not issued to it (docs/architecture.md §3)."""
    out = []
    for s, off in zip(lay.synapses, plan.offsets, strict=True):
        src = snn.layers[s.source]
        lo, hi = read_channels(s, src, lay)
        per = src.size // src.channels
        out.append((s.source, off, lo * per, hi * per))
    return out


def _events(snn, spikes, groups, n, ranks=None, keys=None):
    """Events of the sources of a layer, bucketed by image · T_src + phase (CSR), each bucket
    in group order, then in the order the source emitted them (:func:`emission_order`: the
    input layer's trains in neuron order, a neuron layer's phase in its scan order, a
    max-pooling layer's in its push order, ``ranks[src]``; without ``ranks``, neuron order;
    ``keys[src]``, where given: a neuron layer's phase in the order of that key per neuron,
    :func:`os_emission_key`). ``groups``: (source layer, id offset, first and end source
    neuron read) per synapse group. Returns (ptr, ids, signs)."""
    out = None
    for src, off, lo, hi in groups:
        sp = spikes[src]
        lay = snn.layers[src]
        whole = lo == 0 and hi == lay.size
        if lay.kind == "input":
            tr = sp.reshape(n, sp.shape[1], -1)
            tr = tr if whole else np.ascontiguousarray(tr[:, :, lo:hi])
            ev = K.events_from_trains(tr, off + lo)
        else:
            ph = sp.reshape(n, -1)
            ph = ph if whole else ph[:, lo:hi]
            rank = None if ranks is None else ranks[src]
            key = None if keys is None else keys.get(src)
            if key is not None:  # an output-stationary source: its push order
                perm = np.argsort(np.asarray(key)[lo:hi], kind="stable")
                p, ids, sign = K.events_from_phases(np.ascontiguousarray(ph[:, perm]), lay.T, 0)
                ev = (p, perm[ids] + (off + lo), sign)
            elif rank is not None:  # max pooling: each image's push order
                r = rank.reshape(n, -1)[:, lo:hi]
                order = np.argsort(r, axis=1, kind="stable")  # never fired (−1) first
                p, ids, sign = K.events_from_phases(
                    np.ascontiguousarray(np.take_along_axis(ph, order, 1)), lay.T, 0
                )
                img = np.repeat(np.arange(n), np.diff(p[:: lay.T]))
                ev = (p, order[img, ids] + (off + lo), sign)
            elif lay.kind != "maxpool" and lay.size > lay.channels:  # 3-D: the scan order
                per = lay.size // lay.channels
                perm = _scan_perm((hi - lo) // per, per)
                p, ids, sign = K.events_from_phases(np.ascontiguousarray(ph[:, perm]), lay.T, 0)
                ev = (p, perm[ids] + (off + lo), sign)
            else:  # flat: the scan order is neuron order
                ev = K.events_from_phases(np.ascontiguousarray(ph), lay.T, off + lo)
        out = ev if out is None else K.merge_events(*out, *ev)
    return out


def _scan_perm(channels: int, pixels: int) -> np.ndarray:
    """Neurons (channel-major index c · pixels + pixel) in the boundary scan's order: pixel by
    pixel, each pixel's channels in order (rows of channel blocks, lanes in order)."""
    c, pix = np.arange(channels, dtype=np.int64), np.arange(pixels, dtype=np.int64)
    return (c[None, :] * pixels + pix[:, None]).reshape(-1)


def scan_order(lay: Layer) -> np.ndarray:
    """The neurons of a neuron layer in the order its engine emits one phase's spikes: the
    boundary scan walks the rows (pixel y · W + x, then channel block) and the output queue
    takes a row's spikes in lane order, so pixel by pixel, then channel; a flat layer's in
    neuron order (docs/architecture.md §14)."""
    if lay.kind in ("input", "maxpool"):
        raise ValueError(f"layer {lay.name} is a {lay.kind} layer: it has no boundary scan")
    return _scan_perm(lay.channels, lay.size // lay.channels)


def os_emission_key(snn: SnnModel, index: int, arch: ArchConfig) -> np.ndarray:
    """Output-stationary: the place of each neuron of layer ``index`` (a neuron layer) in its
    engine's push order within a phase, int64 [neurons]: tile by tile (``TilePlan.tile_of``,
    the order the tiles run), within a tile lane by lane (lane = slot · th · tw + dy · tw +
    dx for the neuron's channel slot and offsets in its tile of tc × th × tw; the output queue
    takes a boundary's spikes in lane order, ``rtl.os_engine.lane_place``). The engine
    emits tile after tile, each tile's phases in order, so its stream is in (tile, phase,
    lane) order, and a phase sort that keeps the arrival order within a phase
    (``rtl.os_pool``) leaves (phase, tile, lane)."""
    lay = snn.layers[index]
    plan = _os_plan(snn, lay, arch)
    tc, th, tw = plan.shape
    c, h, w = lay.shape if len(lay.shape) == 3 else (lay.size, 1, 1)
    j = np.arange(lay.size, dtype=np.int64)
    ch, y, x = j // (h * w), (j // w) % h, j % w
    lane = (ch % tc) * th * tw + (y % th) * tw + x % tw
    return np.asarray(plan.tile_of, np.int64) * (tc * th * tw) + lane


def os_emission_order(snn: SnnModel, index: int, arch: ArchConfig, phases) -> np.ndarray:
    """Output-stationary: the spiking neurons of neuron layer ``index`` in one image
    (``phases``: −1 for none) in the order its engine pushes them: (tile, phase, lane)
    (:func:`os_emission_key`)."""
    ph = np.asarray(phases).reshape(-1)
    key = os_emission_key(snn, index, arch)
    tile = key // int(np.prod(_os_plan(snn, snn.layers[index], arch).shape))
    j = np.nonzero(ph >= 0)[0]
    return j[np.lexsort((key[j], ph[j], tile[j]))]


def emission_order(snn: SnnModel, index: int, phases: np.ndarray, rank=None) -> np.ndarray:
    """The spiking neurons of layer ``index`` in one image (``phases``: the image's spike
    phases, −1 for none) in the order its engine emits them, which is the order its event
    buffer holds them and its consumers read them: phase by phase; within a phase the scan
    order (:func:`scan_order`) of a neuron layer, the push order of a max-pooling layer
    (``rank``: ``SimResult.emit_rank[index][image]``, required for one)."""
    lay = snn.layers[index]
    ph = np.asarray(phases).reshape(-1)
    if lay.kind == "maxpool":
        if rank is None:
            raise ValueError(
                f"layer {index} ({lay.name}): a max-pooling layer's order needs its rank"
            )
        key = np.asarray(rank).reshape(-1)
    else:
        key = np.empty(lay.size, np.int64)
        key[scan_order(lay)] = np.arange(lay.size)
    j = np.nonzero(ph >= 0)[0]
    return j[np.lexsort((key[j], ph[j]))]


def _push_rank(fan: FanOut, ptr, ids, n: int, t_src: int, n_out: int) -> np.ndarray:
    """A max-pooling layer's push order (docs/architecture.md §5): walking the events in
    order and each event's windows in fan-out (tap) order, a window is pushed at its first
    visit. Returns int32 [N, n_out]: each window's place among the image's pushes, −1 none."""
    rank = np.full((n, n_out), -1, np.int32)
    cnt = (fan.ptr[ids + 1] - fan.ptr[ids]).astype(np.int64)
    total = int(cnt.sum())
    if total == 0:
        return rank
    ends = np.cumsum(cnt)
    visit = np.repeat(fan.ptr[ids] - (ends - cnt), cnt) + np.arange(total)
    img = np.repeat(np.repeat(np.arange(n), np.diff(ptr[::t_src])), cnt)
    key = img * n_out + fan.tgt[visit].astype(np.int64)
    uniq, first = np.unique(key, return_index=True)
    key = uniq[np.argsort(first, kind="stable")]  # windows in push order, image by image
    im = key // n_out
    rank[im, key % n_out] = np.arange(key.size) - np.searchsorted(im, im)
    return rank


def encode_input(x: torch.Tensor, lay: Layer) -> np.ndarray:
    """docs/semantics.md §2: the signed T_in-bit binary trains (N, T_in, *shape), int8."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    g = torch.as_tensor(lay.input_gain).reshape(shape)
    o = torch.as_tensor(lay.input_offset).reshape(shape)
    v = x.to(torch.float32).double() * g + o
    v = v if lay.signed else v.clamp(min=0)
    top = 2**lay.T - 1
    # round half to even (torch.round), saturate at the largest T_in-bit code
    code = torch.round(v.abs() * 2**lay.T).clamp(max=top).to(torch.int64).numpy()
    sign = np.sign(v.numpy()).astype(np.int8) if lay.signed else np.ones(code.shape, np.int8)
    bits = [((code >> (lay.T - 1 - t)) & 1).astype(np.int8) * sign for t in range(lay.T)]
    return np.stack(bits, axis=1)


def _result(snn, arch, spikes, logits, counts, stats, adder_cycles, n) -> SimResult:
    tot = counts.sum(1)  # [layers, actions]
    st = stats.sum(1)
    cyc = {
        "busy": st[:, K.BUSY],
        "stalled": st[:, K.STALLED],
        "waiting": st[:, K.WAITING],
    }
    per_image = stats[:, :, K.BUSY] + stats[:, :, K.STALLED] + stats[:, :, K.WAITING]
    total = cyc["busy"] + cyc["stalled"] + cyc["waiting"]
    adds = tot[:, K.ADDS]
    util = np.where(adder_cycles > 0, adds / np.maximum(adder_cycles * arch.lanes, 1), 0.0)
    return SimResult(
        names=[lay.name for lay in snn.layers],
        kinds=[lay.kind for lay in snn.layers],
        cycles=cyc,
        cycles_per_image=per_image.T.copy(),
        counts={a: tot[:, j].copy() for j, a in enumerate(ACTIONS)},
        queue_peak=stats[:, :, K.PEAK].max(1) if n else np.zeros(len(snn.layers), np.int64),
        queue_mean=np.where(total > 0, st[:, K.OCC_SUM] / np.maximum(total, 1), 0.0),
        lane_utilisation=util,
        spikes=spikes,
        predictions=logits.argmax(1) if n else np.zeros(0, np.int64),
        logits_int=logits,
        arch=arch,
        images=n,
        adder_cycles=adder_cycles,
    )


def stall_pattern(seed: int, rate: float, length: int = 4096) -> np.ndarray:
    """A reproducible back-pressure pattern: each cycle blocked with probability ``rate``."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate!r}")
    if length < 1:
        raise ValueError(f"length must be positive, got {length!r}")
    return np.random.default_rng(seed).random(length) < rate
