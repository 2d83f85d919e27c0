"""Cross-check of the int8 ANN baseline (``hwsim.ann.ann_array``, dense) against SCALE-Sim 3.0.

ResNet-20's conv and linear layers (shapes from the converted artifact, as in
``benchmarks/hwsim_design_space.py::setup_resnet20``) on an output-stationary array of P MACs,
P = 16 and 64, per layer: cycles, SRAM weight (filter) reads, activation (ifmap) reads and
output (ofmap) writes, with the ratio hwsim / SCALE-Sim. SCALE-Sim runs in a venv of its own
(it needs numpy < 2), created and filled by this script under ``build/scalesim-venv``; its
inputs and reports are kept under ``build/scalesim_check``. Two SCALE-Sim mappings per P:

- ``matched``: the array shape of hwsim's tile, rows = pixels, columns = output channels:
  tc = min(C_out, P) columns × P / tc rows (P = 16: 1 × 16; P = 64: 4 × 16, 2 × 32, 1 × 64 for
  C_out = 16, 32, 64; the linear layer 1 × P);
- ``square``: the textbook √P × √P array (4 × 4, 8 × 8).

Writes benchmarks/results/scalesim_check.{json,md}.

    .venv/bin/python benchmarks/scalesim_check.py                  # P = 16 and 64, 2 jobs
    .venv/bin/python benchmarks/scalesim_check.py --lanes 16 --jobs 1

Sources: SCALE-Sim (Samajdar et al., "A Systematic Methodology for Characterizing Scalability
of DNN Accelerators using SCALE-Sim", ISPASS 2020; v3: Raj et al., 2025), PyPI ``scalesim``
(github.com/scalesim-project/scale-sim-v3); the model compared: docs/architecture.md §12 and
``hwsim/ann.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hwsim_design_space import setup_resnet20

import hwsim
from hwsim import ann

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VENV = ROOT / "build" / "scalesim-venv"
WORK = ROOT / "build" / "scalesim_check"
SCALESIM_VERSION = "3.0.0"
PIP_SPEC = [f"scalesim=={SCALESIM_VERSION}", "numpy<2"]
#: SRAMs large enough for any layer (kB) and an interface bandwidth (words / cycle) that
#: never stalls: the run is compute-bound, as hwsim's array (which has no DRAM) is
SRAM_KB, BANDWIDTH = 1024, 1000
CONFIG = """[general]
run_name = {name}

[run_presets]
InterfaceBandwidth = USER
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {kb}
FilterSramSzkB = {kb}
OfmapSramSzkB = {kb}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Bandwidth = {bw}
Dataflow = os
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40
"""
HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"  # noqa: E501
#: SCALE-Sim's own CLI (scalesim/scale.py) ignores its save-trace flag; the class is called
#: directly with save_disk_space=True so no per-cycle traces are written
DRIVER = (
    "import sys; from scalesim.scale_sim import scalesim; "
    "s = scalesim(save_disk_space=True, verbose=False, config=sys.argv[1], "
    "topology=sys.argv[2], layout=sys.argv[3], input_type_gemm=False); "
    "s.run_scale(top_path=sys.argv[4])"
)


def ensure_venv() -> str:
    """The side venv's python with ``scalesim==SCALESIM_VERSION`` and numpy < 2 installed."""
    py = VENV / "bin" / "python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    ask = "import importlib.metadata as m; print(m.version('scalesim'), m.version('numpy'))"
    got = subprocess.run([str(py), "-c", ask], capture_output=True, text=True)
    if got.returncode or got.stdout.split()[0] != SCALESIM_VERSION:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PIP_SPEC], check=True)
        got = subprocess.run([str(py), "-c", ask], capture_output=True, text=True, check=True)
    return got.stdout.strip()


def gemm_layers(snn) -> list[dict[str, Any]]:
    """The conv and linear groups of ``snn`` as SCALE-Sim conv rows. SCALE-Sim has no padding
    (ofmap = ⌈(H − kh + s) / s⌉), so the IFMAP is given as the padded extent the outputs
    touch, (H_out − 1) · s + kh: the ofmap then has hwsim's H_out × W_out."""
    out = []
    for i, lay in enumerate(snn.layers):
        for s in lay.synapses:
            if s.op == "conv":
                co, ho, wo = lay.shape
                ci = snn.layers[s.source].shape[0]
                (kh, kw), (sy, sx) = s.kernel, s.stride
                assert sy == sx, "SCALE-Sim's topology has one stride"
                row = ((ho - 1) * sy + kh, (wo - 1) * sx + kw, kh, kw, ci, co, sy)
            elif s.op == "linear":
                row = (1, 1, 1, 1, snn.layers[s.source].size, lay.size, 1)
            else:
                continue
            out.append({"index": i, "name": f"L{i:02d}_{s.op}", "op": s.op, "row": row})
    return out


def ann_layer(snn, i: int, arch) -> dict[str, float]:
    """hwsim's dense ANN array on layer ``i``'s conv / linear group alone: ``ann_array`` on a
    copy of the model in which every other layer is an input (skipped) and layer i keeps only
    that group (its shortcut add, which SCALE-Sim does not model, is dropped). Reads and
    writes are ``ann_array``'s counts of 8-bit elements."""
    lays = []
    for j, lay in enumerate(snn.layers):
        if j == i:
            keep = tuple(s for s in lay.synapses if s.op in ("conv", "linear"))
            lays.append(replace(lay, synapses=keep))
        else:
            lays.append(replace(lay, kind="input"))
    trim = replace(snn, layers=tuple(lays))
    spikes = [np.zeros((1, 1, lay.size)) for lay in lays]  # (only zero_skip reads them)
    d = ann.ann_array(trim, arch, spikes, 1)["dense"]
    return {
        "cycles": d["cycles"],
        "macs": d["macs"],
        "weight_reads": d["weight_reads"],
        "activation_reads": d["activation_reads"],
        "output_writes": d["output_writes"],
        "mac_utilisation": d["mac_utilisation"],
    }


def matched_shape(layer: dict[str, Any], p: int) -> tuple[int, int]:
    """hwsim's tile as an array: P / tc pixel rows × tc = min(C_out, P) channel columns (a
    linear layer: 1 × P, hwsim's tile of P outputs)."""
    if layer["op"] == "linear":
        return 1, p
    tc = min(layer["row"][5], p)
    return p // tc, tc


def matched_run(layer: dict[str, Any], p: int) -> str:
    """The SCALE-Sim run of ``layer`` on its matched array (the linear layer on its own)."""
    r, c = matched_shape(layer, p)
    return f"p{p}_matched_{r}x{c}" + ("_linear" if layer["op"] == "linear" else "")


def square_shape(p: int) -> tuple[int, int]:
    r = 2 ** (int(math.log2(p)) // 2)
    return r, p // r


def start_run(py: str, name: str, rows: int, cols: int, layers: list[dict[str, Any]]):
    """Write the topology, layout and config of one SCALE-Sim run and start it (None: the
    reports of a run of the same inputs are there already, and are reused)."""
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    topo = HEADER + "".join(f"{ly['name']}, " + ", ".join(map(str, ly["row"])) + ",\n"
                            for ly in layers)  # fmt: skip
    cfg = CONFIG.format(name=name, rows=rows, cols=cols, kb=SRAM_KB, bw=BANDWIDTH)
    old = [d / "topology.csv", d / "scale.cfg", d / "reports" / name / "COMPUTE_REPORT.csv"]
    if all(f.is_file() for f in old) and [f.read_text() for f in old[:2]] == [topo, cfg]:
        return None
    (d / "topology.csv").write_text(topo)
    (d / "layout.csv").write_text(HEADER)  # default layouts (no custom layout)
    (d / "scale.cfg").write_text(cfg)
    cmd = [py, "-c", DRIVER, str(d / "scale.cfg"), str(d / "topology.csv"),
           str(d / "layout.csv"), str(d / "reports")]  # fmt: skip
    log = (d / "log.txt").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=d)


def read_report(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0]]
    return [{h: float(v) for h, v in zip(head, r, strict=False) if h}
            for r in rows[1:] if r]  # fmt: skip


def parse_run(name: str, layers: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    rep = WORK / name / "reports" / name
    comp = read_report(rep / "COMPUTE_REPORT.csv")
    acc = read_report(rep / "DETAILED_ACCESS_REPORT.csv")
    out = {}
    for ly, c, a in zip(layers, comp, acc, strict=True):
        out[ly["name"]] = {
            "cycles": c["Total Cycles"],
            "cycles_incl_prefetch": c["Total Cycles (incl. prefetch)"],
            "stall_cycles": c["Stall Cycles"],
            "compute_util_pct": c["Compute Util %"],
            "mapping_efficiency_pct": c["Mapping Efficiency %"],
            "weight_reads": a["SRAM Filter Reads"],
            "activation_reads": a["SRAM IFMAP Reads"],
            "output_writes": a["SRAM OFMAP Writes"],
            "dram_ofmap_writes": a["DRAM OFMAP Writes"],
        }
    return out


DIFFERENCES = """## Systematic differences (read off the tables)

- **Zero padding.** SCALE-Sim has no padding: the IFMAP is the padded extent, every window
  tap is a MAC, an ifmap read and (per fold) a filter read. hwsim skips taps in the padding,
  so its weight and activation reads (and MACs) fall below SCALE-Sim's by the padded taps'
  share: most on the small 8 × 8 maps, least with multi-pixel tiles (P = 64, C_out < 64),
  where a step is skipped only if every pixel's tap is padding (per-layer ratios below). The
  linear layer has no padding: there the reads must agree exactly.
- **Pipeline fill and drain.** SCALE-Sim's OS fold takes T + R + C − 2 cycles (operands
  skew in over R rows and C columns, outputs drain); hwsim's tile takes its valid steps + 1
  output cycle. hwsim's cycles are therefore below SCALE-Sim's, most on the layers with short
  windows (the first conv, T = 27; the linear layer) and on 1 × 64 arrays.
- **Output writes.** SCALE-Sim's `SRAM OFMAP Writes` adds R + C per fold to the R · C
  outputs (`systolic_compute_os.create_ofmap_demand_mat`); its DRAM OFMAP writes, the
  outputs themselves, equal hwsim's output writes exactly in every run.
- **Array shape (square runs).** A √P × √P array maps √P pixels × √P filters: each
  activation is read once per column fold and each weight once per row fold, so its weight
  reads are ~¼ (P = 16) or ~⅛ (P = 64) of hwsim's broadcast of a tc-wide weight word to
  one pixel, and its activation reads 4-8 × larger. The matched runs (hwsim's tile as the
  array) remove this: the remaining gaps are the two items above.
- **Units.** Both count one 8-bit element per access; hwsim reads a P-wide weight word per
  step and prices tc/P of it, SCALE-Sim one word per PE column per cycle: same count.
"""

METRICS = ("cycles", "weight_reads", "activation_reads", "output_writes")


def run(args) -> dict[str, Any]:
    t0 = time.perf_counter()
    versions = ensure_venv()
    py = str(VENV / "bin" / "python")
    snn, _, _ = setup_resnet20(args.calib, 1, args.artifact)
    layers = gemm_layers(snn)
    # the SCALE-Sim runs: (name, rows, cols, layers)
    runs = []
    for p in args.lanes:
        r, c = square_shape(p)
        runs.append((f"p{p}_square_{r}x{c}", r, c, layers))
        groups: dict[str, list] = {}
        for ly in layers:
            groups.setdefault(matched_run(ly, p), []).append(ly)
        for name, lys in groups.items():
            runs.append((name, *matched_shape(lys[0], p), lys))
    scalesim: dict[str, dict[str, dict[str, float]]] = {}
    pending = list(runs)
    reused: list[str] = []
    run_seconds: dict[str, float | None] = {}
    active: list = []
    t_ss = time.perf_counter()
    while pending or active:
        while pending and len(active) < args.jobs:
            name, r, c, lys = pending.pop(0)
            proc = start_run(py, name, r, c, lys)
            if proc is None:
                reused.append(name)
            active.append((name, lys, proc, time.perf_counter()))
        time.sleep(0.5)
        for item in list(active):
            name, lys, proc, started = item
            if proc is not None and proc.poll() is None:
                continue
            active.remove(item)
            if proc is not None and proc.returncode:
                raise RuntimeError(f"SCALE-Sim run {name} failed: see {WORK / name / 'log.txt'}")
            if proc is not None:  # measured now; kept beside the reports for reruns
                (WORK / name / "seconds.txt").write_text(f"{time.perf_counter() - started}\n")
            secs = WORK / name / "seconds.txt"
            run_seconds[name] = float(secs.read_text()) if secs.is_file() else None
            scalesim[name] = parse_run(name, lys)
            print(f"SCALE-Sim {name}: done ({time.perf_counter() - t_ss:.0f} s)", flush=True)
    t_ss = time.perf_counter() - t_ss
    out: dict[str, Any] = {
        "network": "ResNet-20, CIFAR-10: its 19 conv layers and the final linear layer",
        "scalesim": {
            "version": versions,
            "pip": PIP_SPEC,
            "venv": str(VENV.relative_to(ROOT)),
            "sram_kb": SRAM_KB,
            "bandwidth_words_per_cycle": BANDWIDTH,
            "dataflow": "os",
            "seconds": t_ss,
            "reused_runs": reused,
            "run_seconds": run_seconds,
        },  # fmt: skip
        "command": "build/scalesim-venv/bin/python -c '" + DRIVER + "' <cfg> <topology> "
        "<layout> <reports>",
        "benchmark_command": "  ".join(["python benchmarks/scalesim_check.py", *sys.argv[1:]]),
        "platform": platform.platform(),
        "points": [],
    }
    for p in args.lanes:
        arch = hwsim.ArchConfig(lanes=p)
        whole = ann.ann_array(snn, arch, [np.zeros((1, 1, ly.size)) for ly in snn.layers], 1)
        sq = square_shape(p)
        pt: dict[str, Any] = {
            "lanes": p,
            "square_array": list(sq),
            "layers": [],
            "hwsim_whole_network_dense_cycles": whole["dense"]["cycles"],
        }
        for ly in layers:
            hw = ann_layer(snn, ly["index"], arch)
            mr, mc = matched_shape(ly, p)
            m = scalesim[matched_run(ly, p)][ly["name"]]
            s = scalesim[f"p{p}_square_{sq[0]}x{sq[1]}"][ly["name"]]
            pt["layers"].append({
                "layer": ly["name"], "topology_row": list(ly["row"]),
                "matched_array": [mr, mc], "hwsim": hw, "scalesim_matched": m,
                "scalesim_square": s,
                "ratio_matched": {k: hw[k] / m[k] for k in METRICS},
                "ratio_square": {k: hw[k] / s[k] for k in METRICS},
            })  # fmt: skip
        tot = {}
        for key in ("hwsim", "scalesim_matched", "scalesim_square"):
            tot[key] = {k: float(sum(lay[key][k] for lay in pt["layers"]))
                        for k in (*METRICS, "dram_ofmap_writes", "stall_cycles", "macs")
                        if k in pt["layers"][0][key]}  # fmt: skip
        tot["ratio_matched"] = {k: tot["hwsim"][k] / tot["scalesim_matched"][k] for k in METRICS}
        tot["ratio_square"] = {k: tot["hwsim"][k] / tot["scalesim_square"][k] for k in METRICS}
        pt["total"] = tot
        out["points"].append(pt)
        ratios = ", ".join(f"{k} {v:.3f}" for k, v in tot["ratio_matched"].items())
        print(f"P={p}: hwsim/SCALE-Sim (matched) {ratios}", flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _reused_time(ss: dict[str, Any]) -> str:
    """The measured time of the reused runs when they ran (``seconds.txt`` beside them)."""
    secs = [ss["run_seconds"].get(n) for n in ss["reused_runs"]]
    if not secs or None in secs:
        return ""
    return f" (they took {sum(secs) / 60:.1f} min of SCALE-Sim time when they ran)"


def markdown(res: dict[str, Any]) -> str:
    ss = res["scalesim"]
    lines = [
        "# hwsim's int8 ANN baseline against SCALE-Sim 3.0: ResNet-20",
        "",
        f"{res['network']}; hwsim: `hwsim.ann.ann_array`, dense variant, per layer (the conv "
        "or linear group alone); SCALE-Sim "
        f"{ss['version'].split()[0]} (numpy {ss['version'].split()[1]}, in `{ss['venv']}`), "
        f"output-stationary (`os`), SRAMs {ss['sram_kb']} kB each, interface bandwidth "
        f"{ss['bandwidth_words_per_cycle']} words/cycle (no stalls). SCALE-Sim figures are its "
        "COMPUTE_REPORT `Total Cycles` and DETAILED_ACCESS_REPORT `SRAM Filter Reads`, "
        "`SRAM IFMAP Reads`, `SRAM OFMAP Writes` (words = bytes in int8; hwsim's counts are 8-bit "
        "weights, 8-bit activations and 8-bit outputs too). Ratios are hwsim / SCALE-Sim. "
        f"Command: `.venv/bin/python benchmarks/scalesim_check.py`; {res['seconds']:.0f} s "
        f"({ss['seconds']:.0f} s in SCALE-Sim) on {res['platform']}. SCALE-Sim was run as "
        f"`{res['command']}`.",
        "",
        f"Reports reused from an earlier run of the same inputs: {ss['reused_runs'] or 'none'}"
        f"{_reused_time(ss)}.",
        "",
        "Arrays: *matched* = hwsim's tile (rows = P / tc pixels, columns = tc = min(C_out, P) "
        "output channels), *square* = √P × √P.",
        "",
        "## Totals (conv + linear layers)",
        "",
        "| P | SCALE-Sim array | cycles hwsim / SCALE-Sim (ratio) | weight reads | "
        "activation reads | output writes (SCALE-Sim SRAM; its DRAM writes) |",
        "|---|---|---|---|---|---|",
    ]
    for pt in res["points"]:
        t = pt["total"]
        h = t["hwsim"]
        sq = "×".join(map(str, pt["square_array"]))
        for key, label in (("matched", "matched"), ("square", sq)):
            s, r = t[f"scalesim_{key}"], t[f"ratio_{key}"]
            cells = [f"{_n(h[k])} / {_n(s[k])} ({r[k]:.3f})" for k in METRICS]
            cells[-1] += f"; {_n(s['dram_ofmap_writes'])}"
            lines.append(f"| {pt['lanes']} | {label} | " + " | ".join(cells) + " |")
    lines += ["", DIFFERENCES, ""]
    for pt in res["points"]:
        lines += [
            f"## P = {pt['lanes']}: per layer, matched array",
            "",
            f"hwsim's whole network (with the residual adds, average pooling and output "
            f"stages of every layer): {_n(pt['hwsim_whole_network_dense_cycles'])} cycles.",
            "",
            "| layer | IFMAP H, W, kh, kw, C_in, C_out, s | array | cycles hwsim / SS (ratio) "
            "| SS util % | weight reads | activation reads | output writes (SS SRAM) "
            "| ratios vs square array (cyc, w, a, o) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for ly in pt["layers"]:
            h, m, r, rs = (
                ly["hwsim"],
                ly["scalesim_matched"],
                ly["ratio_matched"],
                ly["ratio_square"],
            )
            cells = [f"{_n(h[k])} / {_n(m[k])} ({r[k]:.3f})" for k in METRICS]
            cells.insert(1, f"{m['compute_util_pct']:.1f}")
            sq = ", ".join(f"{rs[k]:.3f}" for k in METRICS)
            lines.append(
                f"| {ly['layer']} | {', '.join(map(str, ly['topology_row']))} "
                f"| {ly['matched_array'][0]}×{ly['matched_array'][1]} | "
                + " | ".join(cells)
                + f" | {sq} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--calib", type=int, default=512, help="calibration images")
    ap.add_argument("--artifact", type=Path, default=ROOT / "build/sweep/resnet20.safetensors",
                    help="the converted SNN (converted and cached there if missing)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=2, help="SCALE-Sim runs at once")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    res = run(args)
    tag = f"_{args.tag}" if args.tag else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scalesim_check{tag}.json").write_text(json.dumps(res, indent=2, default=float))
    md = markdown(res)
    (RESULTS / f"scalesim_check{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
