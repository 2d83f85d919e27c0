"""Energy and area of a simulation priced by memory size and width (``memory_model = "cacti"``).

Memories come from the CACTI 45 nm table (``archspec.memcost``); an access of b bits of a memory
whose words are B bits wide costs b/B of CACTI's energy per word access (a row of P lanes is
read or written as one word; an action counts one lane of it). A word wider than the table's
512 bits is split into ⌈B/512⌉ banks side by side, each of 1/banks of the capacity. Leakage
(CACTI's per-bank leakage power) is charged for the whole run time of each layer.

Logic keeps Horowitz's 45 nm figures (ISSCC 2014; ``archspec.config.EnergyTable``), scaled to the
width that the dataflow needs: an add or compare of b bits is interpolated linearly between
his INT8 add (0.03 pJ) and INT32 add (0.1 pJ), a multiply of a × b bits is his INT32 multiply
(3.1 pJ for 32 × 32) × a·b / 1024 (his INT8 multiply, 0.2 pJ for 8 × 8, is within 3 % of
that rule). These two scalings are this project's model, not Horowitz's numbers.

Flip-flop registers (the output-stationary lane registers) are counted in bits but not priced
in energy or area: no cited per-bit figure is in this project yet (docs/architecture.md §11).

Output-stationary, when the network is known: the memories of the producers' counting sorts
(``rtl.os_sort.SortingBuckets``: counters, write pointers, staging memory; :func:`sorters`,
:func:`sort_memories`) are SRAMs priced the same way, in the area (``sort_memories``) and the
leakage.
"""

from __future__ import annotations

import math
from dataclasses import replace as dataclass_replace

import numpy as np

from archspec.config import ArchConfig
from archspec.fanout import ceil_div
from archspec.memcost import SramCost, sram
from converter.model import SnnModel
from hwsim.sim import PREFIX_WIDTH, SortShape, sort_shapes

#: Horowitz (ISSCC 2014), 45 nm, pJ.
ADD8_PJ, ADD32_PJ, MUL32_PJ, MUL8_PJ = 0.03, 0.1, 3.1, 0.2
#: The width of the Q-scaling constant M (docs/semantics.md §1).
M_BITS = 18
#: Table limits.
MAX_WIDTH, MIN_KIB, MAX_KIB = 512, 1.0, 2048.0

# --------------------------------------------------------------------------- logic area
#: A rough 45 nm model of the area outside the SRAMs (not a synthesis): queues at register-file
#: density (1.2 µm² per bit, 32-bit events), logic at 0.8 µm² per gate (a NAND2 of Nangate45).
#: Gates per lane from the generic Yosys synthesis of ``benchmarks/results/rtl_synth.md``
#: (37,333 gates at P = 16 and 139,779 at P = 64: about 2,300 per lane at A = 32, scaled by
#: A / 32: the lane is mostly the A-bit multiply-add, adder and compares) plus 1,500 for the
#: controller.
QUEUE_UM2_PER_BIT = 1.2
GATE_UM2 = 0.8
LANE_GATES_A32 = 2300
CONTROL_GATES = 1500


def add_pj(bits: float) -> float:
    """An add (or compare) of ``bits`` bits: linear between INT8 and INT32 (Horowitz)."""
    return ADD8_PJ + (ADD32_PJ - ADD8_PJ) * (max(bits, 8) - 8) / 24


def mul_pj(a_bits: float, b_bits: float) -> float:
    """An a × b-bit multiply: Horowitz's INT32 multiply scaled by a·b / 32²."""
    return MUL32_PJ * a_bits * b_bits / 1024


def memory(kib: float, width_bits: int) -> SramCost:
    """One memory of ``kib`` KiB and ``width_bits``-bit words, built from the CACTI table's
    macros: words wider than 512 bits are split into ⌈B/512⌉ macros side by side (an access
    reads all of them); a capacity over the table's 2 MiB per macro is split into ⌈kib/2 MiB⌉
    macros stacked in depth (an access reads one; leakage and area are their sum). Below the
    table's 1 KiB it is priced as 1 KiB (an upper bound)."""
    banks = max(1, math.ceil(width_bits / MAX_WIDTH))
    width = max(8, math.ceil(width_bits / banks))
    deep = max(1, math.ceil(kib / banks / MAX_KIB))
    # CACTI found no organisation for 1 KiB of 512-bit words: such a memory is priced at 2 KiB
    per = sram(max(kib / banks / deep, MIN_KIB if width <= 256 else 2 * MIN_KIB), width)
    return SramCost(
        kib=float(kib), width_bits=int(width_bits), read_pj=per.read_pj * banks,
        write_pj=per.write_pj * banks, leakage_mw=per.leakage_mw * banks * deep,
        area_mm2=per.area_mm2 * banks * deep, access_ns=per.access_ns, cycle_ns=per.cycle_ns,
    )  # fmt: skip


def banked(bank: SramCost, banks: int) -> SramCost:
    """``banks`` copies of one SRAM, each accessed alone: an access costs one bank's energy;
    capacity, leakage and area are the banks' sum."""
    return dataclass_replace(bank, kib=bank.kib * banks, leakage_mw=bank.leakage_mw * banks,
                             area_mm2=bank.area_mm2 * banks)  # fmt: skip


def memories(arch: ArchConfig) -> dict[str, SramCost]:
    """The SRAMs of ``arch``: parameter SRAM (P·W-bit words), potential SRAM (P·(A+1)-bit
    words; potential_sram only) and the event buffer (``event_buffer_banks`` banks of 32-bit
    words)."""
    p = arch.lanes
    out = {"parameter_sram": memory(arch.weight_sram_kib, p * arch.weight_bits)}
    if arch.dataflow == "potential_sram":
        out["potential_sram"] = memory(arch.potential_sram_kib, p * (arch.potential_bits + 1))
    out["event_buffer"] = banked(memory(arch.event_buffer_kib, 32), arch.event_buffer_banks)
    if arch.dataflow == "output_stationary" and arch.weight_buffer_kib > 0:
        out["weight_buffer"] = memory(arch.weight_buffer_kib, p * arch.weight_bits)
    return out


def sorters(shapes: list[list[SortShape]]) -> list[SortShape]:
    """The counting sorters of the layer-mode machine (docs/architecture.md §11, "Bucketing a
    producer's events"), from ``shapes``, per layer its sorts (``hwsim.sim.sort_shapes``).

    One engine runs the layers one after the other and the next starts when the producer's
    sort is over (``SimResult.bucket_cycles`` is part of ``image_cycles``), so one layer
    sorts at a time and the sorters are shared by all layers; a layer's sorts run side by
    side, so there are as many sorters as the most sorts of one layer. Sorter j takes every
    layer's j-th largest sort: its buckets, capacity and entry are the largest of those (each
    memory's depth and width grows with them)."""
    out: list[SortShape] = []
    for layer in shapes:
        for j, s in enumerate(largest_first(layer)):
            if j == len(out):
                out.append(s)
            else:
                o = out[j]
                out[j] = SortShape(max(o.buckets, s.buckets), max(o.capacity, s.capacity),
                                   max(o.entry_bits, s.entry_bits))  # fmt: skip
    return out


def largest_first(layer: list[SortShape]) -> list[SortShape]:
    """A layer's sorts, most buckets first: its j-th runs on sorter j (:func:`sorters`)."""
    return sorted(layer, key=lambda s: s.buckets, reverse=True)


def sort_geometry(shape: SortShape) -> dict[str, tuple[int, int]]:
    """(depth in words, word width in bits) of the memories of one ``SortingBuckets``
    (``rtl/os_sort.py``, k = ``hwsim.sim.PREFIX_WIDTH``, at least two words as there):

    - ``counters`` and ``pointers``: ⌈B / k⌉ words of k fields of ⌈log2(E + 1)⌉ bits (a count
      or a start in 0 … E, E the capacity);
    - ``staging``: E words, the event entry and its bucket key (⌈log2 B⌉ bits).

    Its event memory and index are the event buffer's entries and index (§2, §11;
    ``hwsim.eventbuf.buffer_bits``), already in ``event_buffer``."""
    b, cap = max(shape.buckets, 1), max(shape.capacity, 2)
    words = max(ceil_div(b, PREFIX_WIDTH), 2)
    count = PREFIX_WIDTH * cap.bit_length()
    key = (max(b, 2) - 1).bit_length()
    return {"counters": (words, count), "pointers": (words, count),
            "staging": (cap, shape.entry_bits + key)}  # fmt: skip


def sort_memories(arch: ArchConfig, shapes: list[list[SortShape]]) -> dict[str, SramCost]:
    """The SRAMs of the counting sorters (:func:`sorters`, :func:`sort_geometry`), named
    ``sort<j>.<memory>``, each priced as ``memory`` prices every other SRAM (CACTI, 45 nm;
    below 1 KiB as 1 KiB); empty unless ``arch`` is output-stationary."""
    if arch.dataflow != "output_stationary":
        return {}
    out = {}
    for j, shape in enumerate(sorters(shapes)):
        for name, (depth, width) in sort_geometry(shape).items():
            out[f"sort{j}.{name}"] = memory(depth * width / 8192, width)
    return out


def sort_energy_pj(res, sort: dict[str, SramCost], event_buffer: SramCost) -> np.ndarray:
    """pJ per layer of its counting sorts' accesses (``hwsim.sim.sort_accesses``, words),
    each on its own memory: layer i's j-th largest sort on sorter j's counters, pointers and
    staging memory (``sort``: :func:`sort_memories`), its index entries as event-buffer
    writes (the index is the event buffer's, §2)."""
    from hwsim.sim import sort_accesses

    out = np.zeros(len(res.names))
    for i, shapes in enumerate(res.sort_shapes):
        for j, shape in enumerate(largest_first(shapes)):
            acc = sort_accesses(shape.buckets, int(res.bucket_events[i]), res.images)
            for name, (reads, writes) in acc.items():
                m = event_buffer if name == "index" else sort[f"sort{j}.{name}"]
                out[i] += reads * m.read_pj + writes * m.write_pj
    return out


def _network_sorts(arch: ArchConfig, snn: SnnModel | None) -> list[list[SortShape]]:
    """Per layer its sorts (``hwsim.sim.sort_shapes``): none without a network or outside the
    output-stationary dataflow."""
    if snn is None or arch.dataflow != "output_stationary":
        return []
    return [sort_shapes(snn, i) for i in range(len(snn.layers))]


def per_access_pj(arch: ArchConfig, pot_bits: int, buffered: bool = False) -> dict:
    """pJ of one of each action for a layer whose potentials are ``pot_bits`` wide (and whose
    weights come from the weight buffer if ``buffered``)."""
    p = arch.lanes
    mem = memories(arch)
    par = mem["parameter_sram"]
    ev = mem["event_buffer"]
    wb = arch.weight_bits
    word = p * wb
    cost = {
        "adds": add_pj(pot_bits),
        "weight_reads": par.read_pj * wb / word,
        "bias_reads": par.read_pj * pot_bits / word,
        "threshold_reads": par.read_pj * pot_bits / word,
        "potential_reads": 0.0,
        "potential_writes": 0.0,
        "multiplies": mul_pj(pot_bits, M_BITS),
        "compares": add_pj(pot_bits),
        "queue_pushes": ev.write_pj,
        # an output-stationary event entry is 16 bits (its pixel is known from the index)
        "queue_pops": ev.read_pj * (16 / 32 if arch.dataflow == "output_stationary" else 1),
        "index_reads": ev.read_pj,
    }
    if buffered:
        cost["weight_reads"] = mem["weight_buffer"].read_pj * wb / word
    if "potential_sram" in mem:
        pot = mem["potential_sram"]
        cost["potential_reads"] = pot.read_pj / p
        cost["potential_writes"] = pot.write_pj / p
    return cost


def leakage_mw(arch: ArchConfig, snn: SnnModel | None = None) -> float:
    """Leakage of all the SRAMs of ``arch``, mW; with the network ``snn`` (output-stationary)
    the sort memories' too (:func:`sort_memories`)."""
    mem = [*memories(arch).values(), *sort_memories(arch, _network_sorts(arch, snn)).values()]
    return float(sum(m.leakage_mw for m in mem))


def area_mm2(arch: ArchConfig, snn: SnnModel | None = None) -> dict[str, float]:
    """Area of ``arch`` in mm²: each SRAM of ``memories`` (CACTI, 45 nm); with the network
    ``snn`` on the output-stationary dataflow ``sort_memories``, the counting sorters'
    counters, pointers and staging memories (:func:`sort_memories`, sized for ``snn``);
    their sum ``total_sram``; ``queues`` (the input and output event queues, register file)
    and ``logic`` (P lanes and the controller), both from the rough model above; ``total``,
    the sum of all. Without ``snn``, or in the potential-SRAM dataflow, no sort memories
    (the machine alone). The output-stationary lane registers are not priced (module
    docstring)."""
    out = {k: m.area_mm2 for k, m in memories(arch).items()}
    sort = sort_memories(arch, _network_sorts(arch, snn))
    if sort:
        out["sort_memories"] = float(sum(m.area_mm2 for m in sort.values()))
    out["total_sram"] = float(sum(out.values()))
    queue_bits = (arch.input_queue_depth + arch.output_queue_depth) * 32
    out["queues"] = queue_bits * QUEUE_UM2_PER_BIT / 1e6
    lane_gates = arch.lanes * LANE_GATES_A32 * arch.potential_bits / 32
    out["logic"] = (CONTROL_GATES + lane_gates) * GATE_UM2 / 1e6
    out["total"] = out["total_sram"] + out["queues"] + out["logic"]
    return out


def energy_by_action(res, actions) -> dict[str, np.ndarray]:
    """pJ per action and layer of a SimResult under the CACTI model, plus ``weight_fills``
    (each weight loaded into the weight buffer: a parameter-SRAM read and a buffer write),
    ``bucketing`` (output-stationary: the counting sorts' accesses, each on its own memory,
    :func:`sort_energy_pj`) and ``leakage`` (the sorts' cycles
    included; output-stationary, the sort memories' leakage too, sized from
    ``SimResult.sort_shapes``)."""
    arch = res.arch
    nl = len(res.names)
    out = {a: np.zeros(nl) for a in actions}
    fills = res.weight_fills if res.weight_fills.size else np.zeros(nl, np.int64)
    mem = memories(arch)
    for i in range(nl):
        cost = per_access_pj(arch, int(res.potential_bits[i]), bool(fills[i]))
        for a in actions:
            out[a][i] = res.counts[a][i] * cost[a]
    if "weight_buffer" in mem:
        word = arch.lanes * arch.weight_bits
        per = (mem["parameter_sram"].read_pj + mem["weight_buffer"].write_pj) * arch.weight_bits
        out["weight_fills"] = fills * res.images * per / word
    cycles = res.total_cycles
    sort = sort_memories(arch, res.sort_shapes)
    if res.bucket_reads.size:  # output-stationary: the sorts' accesses and cycles
        out["bucketing"] = sort_energy_pj(res, sort, mem["event_buffer"])
        cycles = cycles + res.bucket_cycles.sum(0)
    leak = leakage_mw(arch) + sum(m.leakage_mw for m in sort.values())
    out["leakage"] = leak * cycles / arch.clock_mhz * 1e3  # mW·µs = nJ
    return out


#: The block each priced action of ``energy_by_action`` is spent in.
BLOCK_OF = {
    "adds": "logic",
    "multiplies": "logic",
    "compares": "logic",
    "weight_reads": "parameter_sram",  # or the weight buffer (layers that use it)
    "bias_reads": "parameter_sram",
    "threshold_reads": "parameter_sram",
    "potential_reads": "potential_sram",
    "potential_writes": "potential_sram",
    "queue_pushes": "event_buffer",
    "queue_pops": "event_buffer",
    "index_reads": "event_buffer",
    "weight_fills": "weight_buffer",  # its parameter-SRAM reads included
    "bucketing": "sort_memories",  # output-stationary: the counting sorts (index writes too)
    "leakage": "leakage",
}


def energy_by_block(res) -> dict[str, float]:
    """pJ per image by block (``BLOCK_OF``) of a SimResult priced by CACTI."""
    n = max(res.images, 1)
    energy = res.energy_pj()
    fills = res.weight_fills if res.weight_fills.size else np.zeros(len(res.names), np.int64)
    out: dict[str, float] = {}
    for action, values in energy.items():
        block = BLOCK_OF[action]
        if action == "weight_reads":
            buffered = fills > 0
            out["weight_buffer"] = out.get("weight_buffer", 0.0) + float(values[buffered].sum())
            values = values[~buffered]
        out[block] = out.get(block, 0.0) + float(values.sum())
    return {k: v / n for k, v in out.items()}
