"""SRAM energy, leakage and area by size and word width, from CACTI (45 nm, ITRS LSTP cells).

The table ``configs/cacti_45nm.csv`` was generated with this module from CACTI 7.0
(HewlettPackard/cacti, the GitHub master built from source here with ``make``), one run per
(capacity, word width): a scratch-pad RAM (``cache type "ram"``, no tag array, no ECC), one
bank, one read/write port, 45 nm, ITRS low-standby-power cells and periphery (``itrs-lstp``;
32 KiB with 64-bit words reads at 17.0 pJ, the figure issue 9 quotes for Accelergy's CACTI
plug-in), 360 K, CACTI's default design objective (cycle time) and deviation. Regenerate with

    .venv/bin/python -m archspec.memcost --cacti /path/to/cacti   # writes configs/cacti_45nm.csv

Lookups interpolate log-linearly in capacity and word width between the table's points and
refuse points outside it. The logic (adders, multipliers, compares) keeps Horowitz's
figures (``archspec.config.EnergyTable``).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from archspec.config import CONFIG_DIR

TABLE = CONFIG_DIR / "cacti_45nm.csv"
#: Capacities (KiB) and word widths (bits) of the generated table.
SIZES_KIB = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
WIDTHS = (8, 16, 32, 64, 128, 256, 512)
COLUMNS = ("kib", "width_bits", "read_pj", "write_pj", "leakage_mw", "area_mm2", "access_ns",
           "cycle_ns")  # fmt: skip


@dataclass(frozen=True)
class SramCost:
    """One SRAM: energy per access of a whole word, leakage, area, timing (CACTI)."""

    kib: float
    width_bits: int
    read_pj: float
    write_pj: float
    leakage_mw: float
    area_mm2: float
    access_ns: float
    cycle_ns: float


@lru_cache(maxsize=1)
def _table() -> dict[tuple[int, int], np.ndarray]:
    out = {}
    with TABLE.open() as f:
        for row in csv.DictReader(f):
            key = (int(row["kib"]), int(row["width_bits"]))
            out[key] = np.array([float(row[c]) for c in COLUMNS[2:]])
    return out


def sram(kib: float, width_bits: int) -> SramCost:
    """The cost of an SRAM of ``kib`` KiB and ``width_bits``-bit words, interpolated
    log-linearly (in log2 capacity and log2 width) between the CACTI table's points."""
    tab = _table()
    sizes = sorted({k for k, _ in tab})
    widths = sorted({w for _, w in tab})
    if not sizes[0] <= kib <= sizes[-1]:
        raise ValueError(f"SRAM of {kib:g} KiB is outside the CACTI table ({sizes[0]}–{sizes[-1]})")
    if not widths[0] <= width_bits <= widths[-1]:
        raise ValueError(
            f"word of {width_bits} bits is outside the CACTI table ({widths[0]}–{widths[-1]})"
        )

    def bracket(grid, v):
        i = int(np.searchsorted(grid, v))
        if i < len(grid) and grid[i] == v:
            return grid[i], grid[i], 0.0
        lo, hi = grid[i - 1], grid[i]
        return lo, hi, (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))

    s0, s1, fs = bracket(sizes, kib)
    w0, w1, fw = bracket(widths, width_bits)
    for key in ((s0, w0), (s1, w0), (s0, w1), (s1, w1)):
        if key not in tab:
            raise ValueError(f"the CACTI table has no {key[0]} KiB x {key[1]}-bit point")
    v = (
        tab[s0, w0] * (1 - fs) * (1 - fw)
        + tab[s1, w0] * fs * (1 - fw)
        + tab[s0, w1] * (1 - fs) * fw
        + tab[s1, w1] * fs * fw
    )
    return SramCost(float(kib), int(width_bits), *map(float, v))


# --------------------------------------------------------------------------- generation
_FIELDS = {
    "read_pj": (r"^\s*Total dynamic read energy per access \(nJ\):\s+([\d.eE+-]+)", 1e3),
    "write_pj": (r"^\s*Total dynamic write energy per access \(nJ\):\s+([\d.eE+-]+)", 1e3),
    "leakage_mw": (r"^\s*Total leakage power of a bank \(mW\):\s+([\d.eE+-]+)", 1.0),
    "area_mm2": (r"^\s*Data array: Area \(mm2\):\s+([\d.eE+-]+)", 1.0),
    "access_ns": (r"^\s*Access time \(ns\):\s+([\d.eE+-]+)", 1.0),
    "cycle_ns": (r"^\s*Cycle time \(ns\):\s+([\d.eE+-]+)", 1.0),
}


def _config(template: str, size_bytes: int, width_bits: int) -> str:
    subs = {
        r"^-size \(bytes\) .*$": f"-size (bytes) {size_bytes}",
        r"^-block size \(bytes\) .*$": f"-block size (bytes) {width_bits // 8}",
        r"^-associativity .*$": "-associativity 1",
        r"^-technology \(u\) .*$": "-technology (u) 0.045",
        r"^-output/input bus width .*$": f"-output/input bus width {width_bits}",
        r"^-cache type .*$": '-cache type "ram"',
        r"^-Add ECC .*$": '-Add ECC - "false"',
    }
    for pat, rep in subs.items():
        template = re.sub(pat, rep, template, flags=re.M)
    return template.replace('"itrs-hp"', '"itrs-lstp"')


def run_cacti(cacti: Path, kib: int, width_bits: int) -> dict[str, float]:
    """One CACTI run (its sample ``cache.cfg`` beside the binary, edited); the parsed costs."""
    template = (cacti.parent / "cache.cfg").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(_config(template, kib * 1024, width_bits))
    out = subprocess.run([str(cacti), "-infile", f.name], capture_output=True, text=True,
                         cwd=cacti.parent, check=False).stdout  # fmt: skip
    Path(f.name).unlink()
    got = {}
    for key, (pat, scale) in _FIELDS.items():
        m = re.search(pat, out, flags=re.M)
        if m is None:
            raise RuntimeError(f"CACTI gave no {key} for {kib} KiB x {width_bits} bits")
        got[key] = float(m.group(1)) * scale
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description="Generate the CACTI SRAM table of hwsim.")
    ap.add_argument("--cacti", type=Path, required=True, help="the CACTI binary (built)")
    ap.add_argument("--out", type=Path, default=TABLE)
    args = ap.parse_args()
    rows = []
    for kib in SIZES_KIB:
        for w in WIDTHS:
            try:
                got = run_cacti(args.cacti.resolve(), kib, w)
            except RuntimeError as exc:
                print(exc, flush=True)
                continue
            rows.append({"kib": kib, "width_bits": w, **got})
            print(rows[-1], flush=True)
    with args.out.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=COLUMNS)
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
