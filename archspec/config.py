"""ArchConfig: the frozen, typed parameters of the reference accelerator, loaded from TOML."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: Folder of the shipped configurations (default.toml, p4.toml, p16.toml, p64.toml).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: The actions the simulator counts, in report order; ``EnergyTable`` prices each of them
#: except the two spike counters (an event costs its queue push and pop).
ACTIONS = (
    "adds",
    "weight_reads",
    "bias_reads",
    "threshold_reads",
    "potential_reads",
    "potential_writes",
    "multiplies",
    "compares",
    "queue_pushes",
    "queue_pops",
    "index_reads",
    "spikes_in",
    "spikes_out",
)
COSTED_ACTIONS = ACTIONS[:-2]
#: The ``EnergyTable`` field that prices one of each costed action.
COST_FIELD = {
    "adds": "add_pj",
    "weight_reads": "weight_read_pj",
    "bias_reads": "bias_read_pj",
    "threshold_reads": "threshold_read_pj",
    "potential_reads": "potential_read_pj",
    "potential_writes": "potential_write_pj",
    "multiplies": "multiply_pj",
    "compares": "compare_pj",
    "queue_pushes": "queue_push_pj",
    "queue_pops": "queue_pop_pj",
    "index_reads": "index_read_pj",
}
#: The dataflows of docs/architecture.md: potentials in SRAM (§4) or in lane registers (§11).
DATAFLOWS = ("potential_sram", "output_stationary")
#: How memory accesses are priced: the flat ``[energy]`` table, or CACTI by size and width.
MEMORY_MODELS = ("flat", "cacti")


@dataclass(frozen=True)
class EnergyTable:
    """Energy of one action, in pJ, 45 nm (M. Horowitz, "Computing's energy problem",
    ISSCC 2014; DESIGN 2.10).

    Horowitz's figures: INT8 add 0.03 pJ, INT32 add 0.1 pJ, INT8 multiply 0.2 pJ, INT32
    multiply 3.1 pJ, FP32 add 0.9 pJ, FP32 multiply 3.7 pJ; SRAM read of 64 bits about 10 pJ
    (8 KB), 20 pJ (32 KB), 100 pJ (1 MB); DRAM 1.3–2.6 nJ per 64 bits. An access of b bits is
    charged b/64 of the 64-bit figure; a write costs what a read costs.

    Parameters
    ----------
    add_pj : float
        One synaptic addition into an A = 32-bit potential (INT32 add, 0.1 pJ).
    weight_read_pj : float
        One 8-bit weight from the 32 KB weight SRAM (20 pJ · 8/64 = 2.5 pJ).
    bias_read_pj, threshold_read_pj : float
        One 32-bit initial potential or threshold from the parameter region (20 · 32/64 = 10 pJ).
    potential_read_pj, potential_write_pj : float
        One 32-bit potential (plus its fired flag) of the 32 KB potential SRAM (10 pJ).
    multiply_pj : float
        One Q-scaling multiply U · M (32 × 18 bits, charged as an INT32 multiply, 3.1 pJ).
    compare_pj : float
        One 32-bit comparison U ≥ Θ (a subtraction: INT32 add, 0.1 pJ).
    queue_push_pj, queue_pop_pj : float
        One 32-bit event into / out of a spike queue (the 8 KB SRAM figure as an upper bound
        for a small FIFO: 10 · 32/64 = 5 pJ).
    index_read_pj : float
        One 32-bit entry of the event buffer's per-phase position index (output-stationary
        dataflow only; 8 KB SRAM figure: 5 pJ).
    """

    add_pj: float = 0.1
    weight_read_pj: float = 2.5
    bias_read_pj: float = 10.0
    threshold_read_pj: float = 10.0
    potential_read_pj: float = 10.0
    potential_write_pj: float = 10.0
    multiply_pj: float = 3.1
    compare_pj: float = 0.1
    queue_push_pj: float = 5.0
    queue_pop_pj: float = 5.0
    index_read_pj: float = 5.0

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_number(f"energy.{f.name}", getattr(self, f.name), allow_zero=True)

    def cost_pj(self, action: str) -> float:
        """The energy of one ``action`` (one of ``COSTED_ACTIONS``), in pJ."""
        return float(getattr(self, COST_FIELD[action]))


@dataclass(frozen=True)
class ArchConfig:
    """The reference accelerator of docs/architecture.md: sizes, widths, latencies, energy.

    Parameters
    ----------
    name : str
        A label for reports.
    lanes : int
        P, the adder lanes of the PE array (and the width of the neuron unit).
    clock_mhz : float
        Clock frequency, for latencies in seconds.
    input_queue_depth, output_queue_depth : int
        Entries (events) of the input and output spike queues. The output queue takes up to P
        pushes per cycle, so it must hold at least P events.
    weight_bits : int
        Widest signed weight the weight SRAM and adders take (W).
    potential_bits : int
        Width A of the signed potential registers (at most 46: U · M must fit 64 bits).
    weight_sram_kib, potential_sram_kib : float
        Capacities of the parameter SRAM (weights, initial potentials, thresholds of one layer)
        and of the potential SRAM (potentials and fired flags of one layer), in KiB.
    event_issue_cycles : int
        Cycles to pop, decode and address one input event.
    adder_pipeline_cycles : int
        Read-add-write latency of the PE array, paid once per phase that has events.
    neuron_pipeline_cycles : int
        Read-scale-compare-write latency of the neuron unit, paid once per scan.
    energy : EnergyTable
        Energy per action (``memory_model = "flat"``; logic actions always).
    dataflow : str
        ``"potential_sram"`` (docs/architecture.md §4: potentials in an SRAM, every add a
        read-modify-write) or ``"output_stationary"`` (§11: a tile of potentials in lane
        registers for all phases of a layer).
    memory_model : str
        ``"flat"``: memory accesses priced by the ``[energy]`` table whatever the memory's
        size; ``"cacti"``: by each memory's capacity and word width from the CACTI 45 nm table
        (``archspec.memcost``), plus leakage × run time.
    event_buffer_kib : float
        Capacity of one event-buffer bank (KiB, 32-bit words). Each layer's events (and,
        output-stationary, their per-phase position index) fill whole banks of their own.
    event_buffer_banks : int
        Banks of the event buffer: the buffers live at once (docs/architecture.md §13,
        ``hwsim.eventbuf``) must fit; ``simulate`` refuses an image that would overflow.
    tile_spikes_per_neuron : float
        Output-stationary only: the spikes per source neuron the tile-shape choice assumes.
    tile_channels : int
        Output-stationary only: 0 (default) lets the tile-shape choice pick each layer's
        channels per tile; k > 0 fixes them at min(k, C) and leaves the choice the pixel
        block (docs/architecture.md §11, "Tile shape"); k must be at most ``lanes``.
    weight_buffer_kib : float
        Output-stationary only: a small weight SRAM beside the lanes that holds the weights of
        the current channel group (0: none); a layer whose group does not fit reads the
        parameter SRAM directly.
    """

    name: str = "default"
    lanes: int = 16
    clock_mhz: float = 500.0
    input_queue_depth: int = 64
    output_queue_depth: int = 64
    weight_bits: int = 8
    potential_bits: int = 32
    weight_sram_kib: float = 256.0
    potential_sram_kib: float = 256.0
    event_issue_cycles: int = 1
    adder_pipeline_cycles: int = 2
    neuron_pipeline_cycles: int = 2
    energy: EnergyTable = field(default_factory=EnergyTable)
    dataflow: str = "potential_sram"
    memory_model: str = "flat"
    event_buffer_kib: float = 64.0
    event_buffer_banks: int = 4
    tile_spikes_per_neuron: float = 0.5
    tile_channels: int = 0
    weight_buffer_kib: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {self.dataflow!r}")
        if self.memory_model not in MEMORY_MODELS:
            raise ValueError(
                f"memory_model must be one of {MEMORY_MODELS}, got {self.memory_model!r}"
            )
        for f in ("lanes", "input_queue_depth", "output_queue_depth", "weight_bits"):
            _check_int(f, getattr(self, f), 1)
        _check_int("potential_bits", self.potential_bits, 2)
        if self.potential_bits > 46:
            raise ValueError(f"potential_bits must be at most 46, got {self.potential_bits!r}")
        for f in ("event_issue_cycles", "adder_pipeline_cycles", "neuron_pipeline_cycles"):
            _check_int(f, getattr(self, f), 0)
        for f in ("clock_mhz", "weight_sram_kib", "potential_sram_kib", "event_buffer_kib",
                  "tile_spikes_per_neuron"):  # fmt: skip
            _check_number(f, getattr(self, f), allow_zero=False)
        _check_number("weight_buffer_kib", self.weight_buffer_kib, allow_zero=True)
        _check_int("tile_channels", self.tile_channels, 0)
        _check_int("event_buffer_banks", self.event_buffer_banks, 1)
        if self.tile_channels > self.lanes:
            raise ValueError(
                f"tile_channels must be at most lanes ({self.lanes}), got {self.tile_channels!r}"
            )
        if self.output_queue_depth < self.lanes:
            raise ValueError(
                f"output_queue_depth must be at least lanes ({self.lanes}), "
                f"got {self.output_queue_depth!r}"
            )
        if not isinstance(self.energy, EnergyTable):
            raise TypeError(f"energy must be an EnergyTable, got {self.energy!r}")

    @classmethod
    def from_toml(cls, path: str | Path) -> ArchConfig:
        """Load a configuration; every key must be a field name (with its unit)."""
        path = Path(path)
        with path.open("rb") as f:
            data = tomllib.load(f)
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "ArchConfig") -> ArchConfig:
        """Build from a mapping shaped like the TOML file (an ``[energy]`` table inside)."""
        data = dict(data)
        energy = data.pop("energy", {})
        if not isinstance(energy, dict):
            raise ValueError(f"{where}: energy must be a table, got {energy!r}")
        check_keys(data, [f.name for f in fields(cls) if f.name != "energy"], "", where)
        check_keys(energy, [f.name for f in fields(EnergyTable)], "energy.", where)
        try:
            return cls(**data, energy=EnergyTable(**energy))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc

    @classmethod
    def preset(cls, name: str) -> ArchConfig:
        """A shipped configuration: ``default``, ``p4``, ``p16``, ``p64``, ``os16`` or ``os64``."""
        path = CONFIG_DIR / f"{name}.toml"
        if not path.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
            raise ValueError(f"unknown arch preset {name!r}, expected one of {known}")
        return cls.from_toml(path)

    @property
    def weight_sram_bits(self) -> int:
        return int(self.weight_sram_kib * 1024 * 8)

    @property
    def potential_sram_bits(self) -> int:
        return int(self.potential_sram_kib * 1024 * 8)


def check_keys(
    data: dict[str, Any], known: list[str], prefix: str, where: str, what: str = "key"
) -> None:
    """Every key of ``data`` is in ``known``; a key missing only its unit suffix is told the
    full name (``clock`` → ``clock_mhz``). ``what`` names a key in the message."""
    for key in data:
        if key in known:
            continue
        with_unit = [k for k in known if k.startswith(f"{key}_")]
        if with_unit:
            raise ValueError(
                f"{where}: {prefix}{key} has no unit, write {prefix}{with_unit[0]} "
                f"(got {prefix}{key} = {data[key]!r})"
            )
        raise ValueError(
            f"{where}: unknown {what} {prefix}{key} = {data[key]!r}; known {what}s: "
            f"{', '.join(known)}"
        )


def _check_int(name: str, value: object, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < lo:
        what = "positive" if lo == 1 else f"at least {lo}"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _check_number(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        what = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {what}, got {value!r}")
