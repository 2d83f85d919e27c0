"""Design-space sweeps of the hwsim accelerator on a Dask cluster (``onespike sweep``).

A grid (TOML) names ArchConfig fields with lists of values; every point of their cross product
is one task: simulate the first N test images on that configuration. Results stream into
``DIR/points.csv`` (one flushed line per finished point; the table a restart resumes from) and
``DIR/points.parquet`` (rewritten atomically every few seconds and at the end); a point is keyed
by its configuration hash and the artifact's checksum, so a killed sweep restarted with the
same arguments skips the points already in the table. ``DIR/report.md`` and
``DIR/pareto.png`` show the Pareto front of energy, latency and area.

Grid file::

    preset = "default"          # optional: the configuration the grid varies
    lanes = [4, 8, 16, 32]      # any ArchConfig field: a list of values (a scalar is one)
    output_queue_depth = [64, 128]
    T_w = [8, 16]               # optional: the artifact's wait timestep (with_wait)

    [energy]                    # EnergyTable fields, lists too
    add_pj = [0.1, 0.2]

    [constraints]               # optional
    fit_memories = true         # grow each point's SRAMs (powers of two KiB) to hold the network
    max_weight_sram_kib = 1024  # points over a limit are not run
    max_potential_sram_kib = 1024
    max_area_mm2 = 10.0
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import pickle
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from archspec.config import ArchConfig, EnergyTable, check_keys

#: ArchConfig fields a grid may vary (``name`` is set per point).
ARCH_KEYS = tuple(f.name for f in fields(ArchConfig) if f.name not in ("name", "energy"))
ENERGY_KEYS = tuple(f.name for f in fields(EnergyTable))
CONSTRAINT_KEYS = ("fit_memories", "max_weight_sram_kib", "max_potential_sram_kib", "max_area_mm2")
_ARCH_TYPES = {f.name: str(f.type) for f in fields(ArchConfig)}
_FLOAT_FIELDS = {k for k, t in _ARCH_TYPES.items() if t == "float"} | set(ENERGY_KEYS)


# --------------------------------------------------------------------------- area
def area_mm2(arch: ArchConfig, snn=None) -> float:
    """Area of ``arch`` in mm²: ``hwsim.energy.area_mm2(arch, snn)["total"]`` (CACTI SRAMs plus
    a rough model of the queues and lane logic; the model ``onespike simulate`` reports). With
    the network ``snn``, an output-stationary point includes the memories of the counting
    sorts sized for it (``sort_memories``, docs/architecture.md §11)."""
    from hwsim.energy import area_mm2 as areas

    return areas(arch, snn)["total"]


# --------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Point:
    """One configuration of the sweep: ``index`` in the grid's cross product."""

    index: int
    arch: ArchConfig
    t_w: int | None
    values: dict[str, Any]  # the grid's values of this point, by axis

    def config_hash(self, images: int, data: str) -> str:
        """sha256 (16 hex digits) of everything that decides the point's result."""
        arch = asdict(self.arch)
        arch.pop("name")
        body = {"arch": arch, "T_w": self.t_w, "images": images, "data": data, "mode": "layer"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Grid:
    """A parsed grid file: the axes (in file order), the base configuration, constraints."""

    axes: dict[str, list[Any]]
    base: ArchConfig
    constraints: dict[str, Any] = field(default_factory=dict)
    where: str = "grid"

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.axes.values())


def load_grid(path: str | Path) -> Grid:
    """Parse and check a grid file; every problem is a ValueError naming the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such grid file: {path}")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return parse_grid(data, where=str(path))


def parse_grid(data: dict[str, Any], where: str = "grid") -> Grid:
    """A :class:`Grid` from the mapping of a grid file."""
    data = dict(data)
    preset = data.pop("preset", "default")
    if not isinstance(preset, str):
        raise ValueError(f"{where}: preset must be a string, got {preset!r}")
    try:
        base = ArchConfig.preset(preset)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    constraints = data.pop("constraints", {})
    energy = data.pop("energy", {})
    for name, table in (("constraints", constraints), ("energy", energy)):
        if not isinstance(table, dict):
            raise ValueError(f"{where}: {name} must be a table, got {table!r}")
    axes: dict[str, list[Any]] = {}
    known = (*ARCH_KEYS, "T_w")
    for key, value in data.items():
        if key == "name":
            raise ValueError(f"{where}: name cannot be swept (each point is named by its hash)")
        check_keys({key: value}, list(known), "", where, "ArchConfig field")
        axes[key] = _values(key, value, where)
    for key, value in energy.items():
        check_keys({key: value}, list(ENERGY_KEYS), "energy.", where, "ArchConfig field")
        axes[f"energy.{key}"] = _values(f"energy.{key}", value, where)
    for key, value in constraints.items():
        if key not in CONSTRAINT_KEYS:
            known = ", ".join(CONSTRAINT_KEYS)
            raise ValueError(f"{where}: unknown constraint {key} = {value!r}; known: {known}")
        if key == "fit_memories":
            if not isinstance(value, bool):
                raise ValueError(f"{where}: constraints.fit_memories must be true or false")
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{where}: constraints.{key} must be a positive number, got {value!r}")
    for tw in axes.get("T_w", []):
        if isinstance(tw, bool) or not isinstance(tw, int) or tw < 0:
            raise ValueError(f"{where}: T_w = {tw!r}: T_w must be a non-negative int")
    if not axes:
        raise ValueError(f"{where}: the grid names no ArchConfig field to sweep")
    return Grid(axes, base, dict(constraints), where)


def _values(key: str, value: Any, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"{where}: {key} is an empty list")
    out = []
    for v in values:
        if isinstance(v, dict | list):
            raise ValueError(f"{where}: {key} must be a list of numbers, got an element {v!r}")
        name = key.split(".")[-1]
        if name in _FLOAT_FIELDS and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)  # 500 and 500.0 are one configuration (and one hash)
        if v not in out:
            out.append(v)
    return out


def expand(grid: Grid, snn=None) -> tuple[list[Point], dict[str, int]]:
    """The grid's points, and the combinations left out (reason → count).

    A combination that is not a valid ArchConfig (e.g. output_queue_depth < lanes) or breaks a
    constraint is left out; a value that gives no valid configuration in any combination is a
    ValueError. ``snn`` is needed for ``fit_memories``; given, ``max_area_mm2`` counts the
    output-stationary sort memories sized for it (``area_mm2``).
    """
    fit = grid.constraints.get("fit_memories", False)
    if fit and snn is None:
        raise ValueError("fit_memories needs the network")
    need = _memory_need(snn) if fit else None
    keys = list(grid.axes)
    valid: dict[tuple[str, Any], bool] = {}
    first_error: dict[tuple[str, Any], str] = {}
    skipped: dict[str, int] = {}
    points = []
    base = asdict(grid.base)
    base.pop("name")
    base = {k: float(v) if k in _FLOAT_FIELDS else v for k, v in base.items()}
    base["energy"] = {k: float(v) for k, v in base["energy"].items()}
    for index, combo in enumerate(itertools.product(*(grid.axes[k] for k in keys))):
        values = dict(zip(keys, combo, strict=True))
        d = {**base, "energy": dict(base["energy"])}
        for k, v in values.items():
            if k.startswith("energy."):
                d["energy"][k.split(".", 1)[1]] = v
            elif k != "T_w":
                d[k] = v
        try:
            arch = ArchConfig.from_dict(d, where=grid.where)
        except (TypeError, ValueError) as exc:
            msg = str(exc).removeprefix(f"{grid.where}: ")
            for kv in values.items():
                first_error.setdefault(kv, msg)
            reason = f"not a valid configuration ({_generic(msg)})"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        for kv in values.items():
            valid[kv] = True
        if need is not None:
            arch = _fitted(arch, need)
        reason = _violates(arch, grid.constraints, snn)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        arch = replace(arch, name=f"point-{index}")
        points.append(Point(index, arch, values.get("T_w"), values))
    for k in keys:
        for v in grid.axes[k]:
            if not valid.get((k, v)):
                raise ValueError(
                    f"{grid.where}: {k} = {v!r} gives no valid configuration: "
                    f"{first_error.get((k, v), 'unknown error')}"
                )
    return points, skipped


def _generic(msg: str) -> str:
    """An error message without its numbers after ``got`` (to count reasons together)."""
    return msg.split(", got")[0]


def _memory_need(snn) -> Callable[[ArchConfig], tuple[int, int]]:
    from hwsim.sim import memory_bits

    def need(arch: ArchConfig) -> tuple[int, int]:
        w = p = 0
        for lay in snn.layers[1:]:
            wb, pb = memory_bits(snn, lay, arch)
            w, p = max(w, wb), max(p, pb)
        return w, p

    return need


def _fitted(arch: ArchConfig, need) -> ArchConfig:
    """``arch`` with each SRAM grown to the smallest power of two KiB holding the network."""
    w, p = need(arch)
    kib = [2 ** math.ceil(math.log2(max(b / 8192, 1))) for b in (w, p)]
    return replace(
        arch,
        weight_sram_kib=float(max(arch.weight_sram_kib, kib[0])),
        potential_sram_kib=float(max(arch.potential_sram_kib, kib[1])),
    )


def _violates(arch: ArchConfig, c: dict[str, Any], snn=None) -> str | None:
    """The first constraint of ``c`` that ``arch`` breaks, or None; the area is the
    network's (``snn``: its sort memories) when it is given."""
    if "max_weight_sram_kib" in c and arch.weight_sram_kib > c["max_weight_sram_kib"]:
        return f"weight_sram_kib over max_weight_sram_kib = {c['max_weight_sram_kib']:g}"
    if "max_potential_sram_kib" in c and arch.potential_sram_kib > c["max_potential_sram_kib"]:
        return f"potential_sram_kib over max_potential_sram_kib = {c['max_potential_sram_kib']:g}"
    if "max_area_mm2" in c and area_mm2(arch, snn) > c["max_area_mm2"]:
        return f"area over max_area_mm2 = {c['max_area_mm2']:g}"
    return None


# --------------------------------------------------------------------------- the table
#: Columns of points.csv / points.parquet, with their types.
METRICS: dict[str, type] = {
    "energy_pj": float,  # per image
    "latency_us": float,  # per image, layer mode: engines + controller + sorts (§11, §14)
    "cycles": float,  # per image, the engines' (every layer's busy + stalled + waiting)
    "area_mm2": float,
    "lane_utilisation": float,  # adds / (P · adder cycles), all layers
    "ann_over_snn_energy": float,  # the ANN on a P-lane MAC array, same table
    "eq6_fp32": float,
    "eq6_int8": float,
    "images_per_s": float,  # streamed, layer mode
    "accuracy": float,  # % on the N images
    "sim_seconds": float,
    "task_seconds": float,
    "worker": str,
}
COLUMNS: dict[str, type] = {
    "point": int,
    "config_hash": str,
    "artifact_checksum": str,
    "status": str,
    "error": str,
    **{k: {"float": float, "int": int}.get(_ARCH_TYPES[k], str) for k in ARCH_KEYS},
    **{f"energy_{k}": float for k in ENERGY_KEYS},
    "T_w": int,
    "images": int,
    "data": str,
    **METRICS,
}


class PointStore:
    """``DIR/points.csv`` (the durable table, one flushed line per point) and
    ``DIR/points.parquet`` (written from it atomically)."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.csv = self.dir / "points.csv"
        self.parquet = self.dir / "points.parquet"
        self.rows: list[dict[str, Any]] = []
        self._file = None
        self._writer = None

    def load(self) -> list[dict[str, Any]]:
        """Read the rows already written (a line cut off by a kill is dropped)."""
        self.rows = []
        if not self.csv.is_file():
            return self.rows
        raw = self.csv.read_bytes()
        if raw and not raw.endswith(b"\n"):  # the last line was cut off: drop it
            raw = raw[: raw.rfind(b"\n") + 1]
            self.csv.write_bytes(raw)
        lines = raw.decode().splitlines()
        if not lines:
            return self.rows
        header = next(csv.reader([lines[0]]))
        if header != list(COLUMNS):
            raise ValueError(
                f"{self.csv} was written with other columns (another one-spike version?): "
                "give another output folder"
            )
        for rec in csv.DictReader(lines):
            self.rows.append({k: _parse(COLUMNS[k], rec.get(k, "")) for k in COLUMNS})
        return self.rows

    def drop(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Rewrite the table without the rows ``keep`` rejects; returns how many went."""
        before = len(self.rows)
        self.rows = [r for r in self.rows if keep(r)]
        if len(self.rows) != before:
            self.close()
            tmp = self.csv.with_suffix(".csv.tmp")
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(COLUMNS))
                w.writeheader()
                w.writerows(self.rows)
            os.replace(tmp, self.csv)
        return before - len(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            new = not self.csv.is_file() or self.csv.stat().st_size == 0
            self._file = self.csv.open("a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=list(COLUMNS))
            if new:
                self._writer.writeheader()
        out = {k: row.get(k) for k in COLUMNS}
        if out["error"]:
            out["error"] = " ".join(str(out["error"]).split())  # one line
        self._writer.writerow(out)
        self._file.flush()
        self.rows.append({k: row.get(k) for k in COLUMNS})

    def write_parquet(self) -> Path | None:
        """points.parquet from the rows (None without pyarrow)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        types = {int: pa.int64(), float: pa.float64(), str: pa.string()}
        schema = pa.schema([(k, types[t]) for k, t in COLUMNS.items()])
        table = pa.Table.from_pylist(self.rows, schema=schema)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.parquet.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.parquet)
        return self.parquet

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None


def _parse(typ: type, text: str | None) -> Any:
    if text is None or text == "":
        return "" if typ is str else None
    return typ(float(text)) if typ is int else typ(text)


# --------------------------------------------------------------------------- one point
#: with_wait networks per (model pickle key, T_w), per worker process (a new network would
#: rebuild hwsim's fan-out tables, which are cached per network object).
_WAIT_CACHE: dict[tuple[int, int], Any] = {}


def simulate_point(snn, x, y, arch: ArchConfig, t_w: int | None) -> dict[str, Any]:
    """Simulate ``x`` on ``arch`` (``snn`` with wait timestep ``t_w`` if given); the metrics of
    :data:`METRICS`, or ``status = "error"`` and the error's one-line message."""
    import socket

    import hwsim

    t0 = time.perf_counter()
    row: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}"}
    try:
        net = snn
        if t_w is not None and t_w != snn.config.get("T_w_resolved"):
            key = (id(snn), t_w)
            if key not in _WAIT_CACHE:
                from converter.requantize import with_wait

                if len(_WAIT_CACHE) > 16:
                    _WAIT_CACHE.clear()
                _WAIT_CACHE[key] = (snn, with_wait(snn, t_w))  # holds snn: id stays unique
            net = _WAIT_CACHE[key][1]
        hwsim.check_fits(net, arch)
        t1 = time.perf_counter()
        res = hwsim.simulate(net, x, arch)
        row["sim_seconds"] = time.perf_counter() - t1
        row.update(point_metrics(res, net, y))
        row["status"], row["error"] = "ok", ""
    except Exception as exc:  # a failing point is recorded, the sweep goes on
        row["status"], row["error"] = "error", f"{type(exc).__name__}: {exc}"
    row["task_seconds"] = time.perf_counter() - t0
    return row


def point_metrics(res, snn, y=None) -> dict[str, Any]:
    """Per-image energy, latency and cycles, lane use, the ANN ratios and the area of one
    simulation (the figures of ``hwsim.report.summary``, without its per-layer tables)."""
    import numpy as np

    from hwsim.report import ann_mac_array, eq6

    n = max(res.images, 1)
    arch = res.arch
    e_snn = float(res.total_energy_pj().sum() / n)
    cycles = float(res.total_cycles.sum() / n)
    ann = ann_mac_array(snn, arch)
    e_ann = float(ann["energy_pj"].sum())
    adder = float(res.adder_cycles.sum())
    eq = eq6(res, snn)
    util = float(res.counts["adds"].sum()) / (arch.lanes * adder) if adder else 0.0
    out = {
        "energy_pj": e_snn,
        # the image latency: the engines', the controller's and the output-stationary sorts'
        "latency_us": float(res.image_cycles.mean()) / arch.clock_mhz if res.images else 0.0,
        "cycles": cycles,
        "area_mm2": area_mm2(arch, snn),
        "lane_utilisation": util,
        "ann_over_snn_energy": e_ann / e_snn if e_snn else None,
        "eq6_fp32": eq["fp32"]["ratio"],
        "eq6_int8": eq["int8"]["ratio"],
        "images_per_s": res.images_per_s(),
        "accuracy": None,
    }
    if y is not None:
        lab = np.asarray(y).reshape(-1)[: res.images]
        out["accuracy"] = float(100.0 * (res.predictions == lab).mean())
    return out


# --------------------------------------------------------------------------- the sweep
def artifact_checksum(path: str | Path) -> str:
    """The checksum field of an artifact's manifest (``SnnModel.save``)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    try:
        return str(json.loads(meta["onespike"])["checksum"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: the artifact's manifest has no checksum") from exc


def _base_row(p: Point, h: str, checksum: str, images: int, data: str, snn) -> dict[str, Any]:
    row: dict[str, Any] = {"point": p.index, "config_hash": h, "artifact_checksum": checksum}
    a = asdict(p.arch)
    row.update({k: a[k] for k in ARCH_KEYS})
    row.update({f"energy_{k}": a["energy"][k] for k in ENERGY_KEYS})
    row["T_w"] = p.t_w if p.t_w is not None else snn.config.get("T_w_resolved")
    row.update(images=images, data=data)
    return row


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the rows of this grid (old and new), the counts, timing."""

    rows: list[dict[str, Any]]
    points: int
    ran: int
    resumed: int
    failed: int
    skipped: dict[str, int]
    seconds: float
    out_dir: Path
    files: list[Path] = field(default_factory=list)


def run_sweep(
    artifact: str | Path,
    grid: str | Path | Grid,
    out_dir: str | Path,
    *,
    images: int = 1,
    data: str | None = None,
    client=None,
    progress: bool = False,
    retry_failed: bool = False,
    affinity: bool = True,
    report: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every point of ``grid`` not yet in ``out_dir``'s table, on ``client``'s workers (or
    in this process if None), streaming rows into the table; then write the report.

    ``affinity``: points that share fan-out tables (same lanes and T_w) are sent to the same
    worker where possible (a loose restriction: Dask moves them when the worker dies or idles),
    so that each worker builds the tables of only its share of the lanes values.
    """
    from converter import load
    from onespike.simreport import load_images

    t_start = time.perf_counter()
    say = log or (lambda s: None)
    artifact = Path(artifact)
    if not artifact.is_file():
        raise FileNotFoundError(f"no such artifact: {artifact}")
    g = grid if isinstance(grid, Grid) else load_grid(grid)
    snn = load(artifact)
    checksum = artifact_checksum(artifact)
    points, skipped = expand(g, snn)
    if not points:
        raise ValueError(f"{g.where}: every combination is left out ({_reasons(skipped)})")
    x, y, spec = load_images(snn, data, images)
    hashes = [p.config_hash(images, spec) for p in points]
    store = PointStore(out_dir)
    store.load()
    keys = {(h, checksum) for h in hashes}
    if retry_failed:
        n = store.drop(lambda r: r["status"] != "error" or _key(r) not in keys)
        if n:
            say(f"retrying {n} failed points")
    done = {_key(r) for r in store.rows}
    todo = [(p, h) for p, h in zip(points, hashes, strict=True) if (h, checksum) not in done]
    resumed = len(points) - len(todo)
    if skipped:
        say(f"left out {sum(skipped.values())} combinations: {_reasons(skipped)}")
    if resumed:
        say(f"resuming: {resumed} of {len(points)} points already in {store.csv}")
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(points), initial=resumed, desc="sweep", unit="point", file=sys.stderr)
    seen: set[str] = set()
    last_parquet = time.monotonic()

    def record(p: Point, h: str, metrics: dict[str, Any]) -> None:
        nonlocal last_parquet
        if h in seen:  # a point is written once, whatever the cluster did
            return
        seen.add(h)
        row = _base_row(p, h, checksum, images, spec, snn)
        row.update(metrics)
        store.append(row)
        if on_result is not None:
            on_result(row)
        if bar is not None:
            bar.update(1)
        if time.monotonic() - last_parquet > 10.0:
            store.write_parquet()
            last_parquet = time.monotonic()

    try:
        if client is None:
            for p, h in todo:
                record(p, h, simulate_point(snn, x, y, p.arch, p.t_w))
        elif todo:
            _run_on_cluster(client, snn, x, y, todo, checksum, record, affinity)
    finally:
        if bar is not None:
            bar.close()
        store.close()
        store.write_parquet()
    rows = [r for r in store.rows if _key(r) in keys]
    rows.sort(key=lambda r: r["point"])
    res = SweepResult(
        rows=rows,
        points=len(points),
        ran=len(seen),
        resumed=resumed,
        failed=sum(r["status"] == "error" for r in rows),
        skipped=skipped,
        seconds=time.perf_counter() - t_start,
        out_dir=Path(out_dir),
    )
    res.files = [store.csv] + ([store.parquet] if store.parquet.is_file() else [])
    if report:
        from onespike.pareto import write_report

        res.files += write_report(res, artifact=str(artifact), data=spec, images=images)
    return res


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return row["config_hash"], row["artifact_checksum"]


def _reasons(skipped: dict[str, int]) -> str:
    return "; ".join(f"{n} {r}" for r, n in skipped.items())


def _run_on_cluster(client, snn, x, y, todo, checksum, record, affinity: bool) -> None:
    from distributed import as_completed

    from golden.distributed import shared_model

    model = shared_model(client, snn)
    xb = pickle.dumps((x.clone(), y.clone()))  # a view would pickle the whole test set
    data = client.submit(
        pickle.loads, xb, key=f"onespike-images-{hashlib.sha256(xb).hexdigest()[:24]}", pure=False
    )
    owner = _assign(todo, list(client.scheduler_info(n_workers=-1)["workers"])) if affinity else {}
    futures = {}
    for p, h in todo:
        kw = {}
        if (p.arch.lanes, p.t_w) in owner:
            kw = {"workers": [owner[(p.arch.lanes, p.t_w)]], "allow_other_workers": True}
        fut = client.submit(
            _cluster_point,
            model,
            data,
            p.arch,
            p.t_w,
            key=f"onespike-point-{h}-{checksum[:12]}",
            pure=False,
            **kw,
        )
        futures[fut] = (p, h)
    try:
        for fut in as_completed(list(futures)):
            p, h = futures[fut]
            try:
                metrics = fut.result()
            except Exception as exc:  # the cluster gave up on it (e.g. KilledWorker)
                metrics = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            record(p, h, metrics)
            fut.release()
    except BaseException:
        client.cancel(list(futures))
        raise


def _cluster_point(snn, data, arch, t_w):
    x, y = data
    return simulate_point(snn, x, y, arch, t_w)


def _assign(todo, workers: list[str]) -> dict[tuple[int, int | None], str]:
    """(lanes, T_w) groups → a worker each, largest groups first onto the least loaded."""
    if len(workers) < 2:
        return {}
    sizes: dict[tuple[int, int | None], int] = {}
    for p, _ in todo:
        k = (p.arch.lanes, p.t_w)
        sizes[k] = sizes.get(k, 0) + 1
    if len(sizes) < len(workers):
        return {}  # fewer groups than workers: let Dask spread the points
    load = dict.fromkeys(workers, 0)
    out = {}
    for k, n in sorted(sizes.items(), key=lambda kv: -kv[1]):
        w = min(load, key=load.get)
        out[k] = w
        load[w] += n
    return out
