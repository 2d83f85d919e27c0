"""hwsim dataflows: ResNet-20 on CIFAR-10 on the potential-SRAM and the output-stationary
engines, memories priced by CACTI, beside the int8 output-stationary MAC array.

For each P and dataflow: energy per image (by action, CACTI 45 nm memories sized to the
network, Horowitz logic scaled by width: ``hwsim.energy``), latency, lane use, SRAM area, and
E_ANN / E_SNN against the dense and the zero-skipping int8 MAC array with the same P, the same
memories and the same prices (``hwsim.ann``). The spikes of both dataflows are checked against
golden ``int`` on every image. Writes benchmarks/results/hwsim_dataflow.{json,md}.

    .venv/bin/python benchmarks/hwsim_dataflow.py                 # 10 images, P = 16 and 64
    .venv/bin/python benchmarks/hwsim_dataflow.py --images 2 --lanes 16 --tag small
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hwsim_design_space import setup_resnet20
from hwsim_speed import gather_reference, interleaved

import golden
import hwsim
from converter import SnnModel
from hwsim.ann import ann_array
from hwsim.energy import area_mm2, energy_by_block
from hwsim.sim import CYCLE_KINDS, memory_bits

RESULTS = Path(__file__).resolve().parent / "results"
#: (label, dataflow, with a weight buffer)
DESIGNS = (
    ("potential_sram", "potential_sram", False),
    ("output_stationary", "output_stationary", False),
    ("output_stationary + weight buffer", "output_stationary", True),
)


def sized(snn: SnnModel, arch: hwsim.ArchConfig) -> hwsim.ArchConfig:
    """``arch`` with its parameter and potential SRAMs the smallest power of two KiB that
    holds every layer (CACTI prices a memory by its size, so none is left oversized)."""
    w = p = 0
    for lay in snn.layers[1:]:
        wb, pb = memory_bits(snn, lay, arch)
        w, p = max(w, wb), max(p, pb)
    kib = [float(2 ** math.ceil(math.log2(max(b / 8192, 1)))) for b in (w, p)]
    return replace(arch, weight_sram_kib=kib[0], potential_sram_kib=kib[1])


def buffer_kib(snn: SnnModel, lanes: int) -> float:
    """The smallest power-of-two KiB that holds the largest channel-group slice of weights
    (C_in · kh · kw · min(C_out, P) 8-bit weights) of any layer."""
    need = 0
    for lay in snn.layers[1:]:
        if lay.kind not in ("neuron", "output") or len(lay.shape) != 3:
            continue
        tc = min(lay.channels, lanes)
        bits = sum(np.asarray(s.weight_q).size * tc // np.asarray(s.weight_q).shape[0]
                   * 8 * np.asarray(s.weight_q).dtype.itemsize for s in lay.synapses)  # fmt: skip
        need = max(need, bits)
    return float(2 ** math.ceil(math.log2(max(need / 8192, 1))))


def agrees(res: hwsim.SimResult, ref) -> bool:
    same = all(
        g is None or np.array_equal(s, g.numpy())
        for s, g in zip(res.spikes, ref.spikes, strict=True)
    )
    return bool(same and np.array_equal(res.logits_int, ref.logits_int.numpy()))


def point(snn, x, y, arch, ref, label, repeats: int) -> dict[str, Any]:
    res = hwsim.simulate(snn, x, arch)
    gather, _ = gather_reference(snn, res)
    speed = interleaved({"hwsim": lambda: hwsim.simulate(snn, x, arch), "gather": gather}, repeats)
    n = res.images
    energy = {k: float(v.sum() / n) for k, v in res.energy_pj().items()}
    e_snn = sum(energy.values())
    cyc = {k: float(res.cycles[k].sum() / n) for k in CYCLE_KINDS}
    # the producers' counting sorts (output-stationary, docs/architecture.md §11)
    cyc["bucketing"] = float(res.bucket_cycles.sum() / n) if res.bucket_cycles.size else 0.0
    total = float(res.image_cycles.mean())  # engines + sorts + controller
    adds = float(res.counts["adds"].sum() / n)
    ann = ann_array(snn, arch, res.spikes, n)
    flat = replace(arch, memory_model="flat")
    e_flat = float(hwsim.simulate(snn, x[:1], flat).total_energy_pj().sum())
    e_layer = res.total_energy_pj() / n / 1e3
    layers = [
        {
            "layer": res.names[i],
            "tile": res.tile_shapes[i],
            "potential_bits": int(res.potential_bits[i]),
            "potential_peak": int(res.potential_peak[i]),
            "lane_utilisation": float(res.lane_utilisation[i]),
            "cycles": float(res.total_cycles[i] / n),
            "energy_nj": float(e_layer[i]),
        }
        for i in range(len(res.names))
        if res.kinds[i] in ("neuron", "output")
    ]
    return {
        "design": label,
        "dataflow": arch.dataflow,
        "weight_buffer_kib": arch.weight_buffer_kib,
        "lanes": arch.lanes,
        "weight_sram_kib": arch.weight_sram_kib,
        "potential_sram_kib": arch.potential_sram_kib if arch.dataflow == "potential_sram" else 0,
        "event_buffer_kib": arch.event_buffer_kib,
        "cycles": cyc,
        "latency_us": total / arch.clock_mhz,
        "energy_nj": e_snn / 1e3,
        "energy_by_action_nj": {k: v / 1e3 for k, v in energy.items()},
        "energy_by_block_nj": {k: v / 1e3 for k, v in energy_by_block(res).items()},
        "energy_flat_table_nj_first_image": e_flat / 1e3,
        "adds": adds,
        "lane_utilisation_adder_cycles": float(
            res.counts["adds"].sum() / max(res.adder_cycles.sum() * arch.lanes, 1)
        ),
        "lanes_busy_all_cycles": adds / (arch.lanes * total),
        "area_mm2": area_mm2(arch, snn),
        "register_bits": (
            arch.lanes * (2 * int(res.potential_bits.max()) + 1)
            if arch.dataflow == "output_stationary"
            else 0
        ),
        "ann": ann,
        "e_ann_dense_over_e_snn": ann["dense"]["energy_pj"] / e_snn,
        "e_ann_zero_skip_over_e_snn": ann["zero_skip"]["energy_pj"] / e_snn,
        "accuracy": float(100.0 * (res.predictions == y.numpy()).mean()),
        "spikes_equal_golden_int": agrees(res, ref),
        "event_buffer_banks_peak": int(res.event_buffer_banks.max()),
        "simulate_s": speed["hwsim"],
        "gather_add_s": speed["gather"],
        "speed_vs_gather_add": speed["gather"] / speed["hwsim"],
        "layers": layers,
    }


def run(args) -> dict[str, Any]:
    t0 = time.perf_counter()
    snn, x, y = setup_resnet20(args.calib, args.images, args.artifact)
    ref = golden.run(snn, x, "int", device="cpu")
    out: dict[str, Any] = {
        "network": "ResNet-20, CIFAR-10 (T = 16, Q = 1.3, T_w = 16, 8-bit weights)",
        "images": args.images,
        "platform": platform.platform(),
        "memory_model": "CACTI 7 (45 nm, itrs-lstp, archspec/configs/cacti_45nm.csv)",
        "points": [],
    }
    for p in args.lanes:
        for label, df, wbuf in DESIGNS:
            base = hwsim.ArchConfig(
                name=f"{'os' if df == 'output_stationary' else 'p'}{p}", lanes=p,
                output_queue_depth=max(64, 2 * p), dataflow=df, memory_model="cacti",
                weight_buffer_kib=buffer_kib(snn, p) if wbuf else 0.0,
            )  # fmt: skip
            pt = point(snn, x, y, sized(snn, base), ref, label, args.repeats)
            out["points"].append(pt)
            print(
                f"P={p} {label}: {pt['energy_nj'] / 1e3:.1f} uJ, {pt['latency_us']:.0f} us, "
                f"lanes {100 * pt['lane_utilisation_adder_cycles']:.0f} %, "
                f"E_ANN/E_SNN dense {pt['e_ann_dense_over_e_snn']:.2f} zero-skip "
                f"{pt['e_ann_zero_skip_over_e_snn']:.2f}, golden {pt['spikes_equal_golden_int']}",
                flush=True,
            )
    out["tile_space"] = tile_space(args, snn, x, ref, out["points"])
    out["pareto"] = pareto(out)
    if args.agree_images:
        out["agreement"] = agreement(args, snn)
    out["seconds"] = time.perf_counter() - t0
    return out


def tile_space(args, snn: SnnModel, x, ref, points: list) -> list[dict[str, Any]]:
    """The output-stationary engine with a weight buffer at each P, every layer's tiles fixed
    at k channels (``tile_channels`` = k, powers of two up to P; 0: the per-layer choice,
    taken from that design's row of ``points``)."""
    keys = ("energy_nj", "latency_us", "lane_utilisation_adder_cycles",
            "e_ann_dense_over_e_snn", "e_ann_zero_skip_over_e_snn", "event_buffer_banks_peak",
            "spikes_equal_golden_int")  # fmt: skip
    rows = []
    for p in args.lanes:
        auto = next(q for q in points if q["lanes"] == p and q["design"] == DESIGNS[2][0])
        rows.append({"lanes": p, "tile_channels": 0, "area_mm2": auto["area_mm2"]["total_sram"],
                     **{k: auto[k] for k in keys}})  # fmt: skip
        for k in [2**i for i in range(int(math.log2(p)) + 1)]:
            base = hwsim.ArchConfig(
                name=f"os{p}", lanes=p, output_queue_depth=max(64, 2 * p), tile_channels=k,
                dataflow="output_stationary", memory_model="cacti",
                weight_buffer_kib=buffer_kib(snn, p),
            )  # fmt: skip
            arch = sized(snn, base)
            res = hwsim.simulate(snn, x, arch)
            n = res.images
            e_snn = float(res.total_energy_pj().sum() / n)
            ann = ann_array(snn, arch, res.spikes, n)
            adds = float(res.counts["adds"].sum())
            rows.append({
                "lanes": p,
                "tile_channels": k,
                "energy_nj": e_snn / 1e3,
                "latency_us": float(res.image_cycles.mean()) / arch.clock_mhz,
                "area_mm2": area_mm2(arch, snn)["total_sram"],
                "lane_utilisation_adder_cycles": adds / max(res.adder_cycles.sum() * p, 1),
                "e_ann_dense_over_e_snn": ann["dense"]["energy_pj"] / e_snn,
                "e_ann_zero_skip_over_e_snn": ann["zero_skip"]["energy_pj"] / e_snn,
                "event_buffer_banks_peak": int(res.event_buffer_banks.max()),
                "spikes_equal_golden_int": agrees(res, ref),
            })  # fmt: skip
            r = rows[-1]
            print(f"P={p} tile_channels={k}: {r['energy_nj'] / 1e3:.1f} uJ, "
                  f"{r['latency_us']:.0f} us", flush=True)  # fmt: skip
    return rows


def pareto(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The designs (every dataflow point and every tile point) that no other design beats in
    both energy and latency per image, lowest latency first."""
    cands = [{"design": p["design"], "lanes": p["lanes"], "tile_channels": 0,
              "energy_nj": p["energy_nj"], "latency_us": p["latency_us"],
              "area_mm2": p["area_mm2"]["total_sram"]} for p in res["points"]]  # fmt: skip
    cands += [{"design": "output_stationary + weight buffer", **{k: t[k] for k in (
        "lanes", "tile_channels", "energy_nj", "latency_us", "area_mm2")}}
        for t in res["tile_space"] if t["tile_channels"]]  # fmt: skip
    front = [c for c in cands if not any(
        o["energy_nj"] <= c["energy_nj"] and o["latency_us"] <= c["latency_us"]
        and (o["energy_nj"], o["latency_us"]) != (c["energy_nj"], c["latency_us"])
        for o in cands)]  # fmt: skip
    return sorted(front, key=lambda c: c["latency_us"])


def agreement(args, snn: SnnModel) -> dict[str, Any]:
    """Spikes of every layer and the output potentials of the output-stationary engine
    (P = 16 and the largest P, with weight buffers) against golden int on more images."""
    _, x, _ = setup_resnet20(args.calib, args.agree_images, args.artifact)
    ref = golden.run(snn, x, "int", device="cpu")
    out: dict[str, Any] = {"images": args.agree_images, "points": []}
    for p in sorted({16, max(args.lanes)}):
        arch = sized(snn, hwsim.ArchConfig(lanes=p, output_queue_depth=max(64, 2 * p),
                                           dataflow="output_stationary", memory_model="cacti",
                                           weight_buffer_kib=buffer_kib(snn, p)))  # fmt: skip
        res = hwsim.simulate(snn, x, arch)
        differ = neurons = 0
        for s, g in zip(res.spikes, ref.spikes, strict=True):
            if g is not None and s is not None:
                differ += int((s != g.numpy()).sum())
                neurons += int(s.size) if s.ndim else 0
        out["points"].append({
            "lanes": p,
            "neurons_compared": neurons,
            "neurons_differing": differ,
            "logits_equal": bool(np.array_equal(res.logits_int, ref.logits_int.numpy())),
            "adds_equal": bool(np.array_equal(res.counts["adds"], ref.counts["adds"])),
        })  # fmt: skip
        print(f"agreement P={p}: {differ} of {neurons} differ", flush=True)
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    """Energy against latency per image, one marker per design and P (area as its size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"potential_sram": "o", "output_stationary": "s",
              "output_stationary + weight buffer": "D"}  # fmt: skip
    for design, marker in styles.items():
        pts = [p for p in res["points"] if p["design"] == design]
        if not pts:
            continue
        ax.scatter([p["latency_us"] for p in pts], [p["energy_nj"] / 1e3 for p in pts],
                   s=[60 * p["area_mm2"]["total_sram"] for p in pts], marker=marker,
                   label=f"SNN, {design}")  # fmt: skip
        for p in pts:
            ax.annotate(f"P={p['lanes']}", (p["latency_us"], p["energy_nj"] / 1e3), fontsize=7)
    ann = [p for p in res["points"] if p["design"] == "output_stationary + weight buffer"]
    for v, marker in (("dense", "x"), ("zero_skip", "+")):
        ax.scatter([p["ann"][v]["latency_us"] for p in ann],
                   [p["ann"][v]["energy_pj"] / 1e6 for p in ann], marker=marker, color="k",
                   label=f"ANN int8 {v} (same memories)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per image (µs), 500 MHz")
    ax.set_ylabel("energy per image (µJ)")
    ax.set_title("ResNet-20, CIFAR-10 (marker area ∝ SRAM area)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_pareto(res: dict[str, Any], path: Path) -> None:
    """Energy against latency of every design and tile shape; colour: SRAM area; the Pareto
    front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(p["latency_us"], p["energy_nj"] / 1e3, p["area_mm2"]["total_sram"], p["design"],
            p["lanes"], 0) for p in res["points"]]  # fmt: skip
    pts += [(t["latency_us"], t["energy_nj"] / 1e3, t["area_mm2"], "tile", t["lanes"],
             t["tile_channels"]) for t in res["tile_space"] if t["tile_channels"]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sc = ax.scatter([q[0] for q in pts], [q[1] for q in pts], c=[q[2] for q in pts],
                    cmap="viridis", s=24)  # fmt: skip
    for q in pts:
        label = f"P{q[4]} tc{q[5]}" if q[3] == "tile" else f"P{q[4]} {q[3][:9]}"
        ax.annotate(label, (q[0], q[1]), fontsize=5)
    front = res["pareto"]
    ax.plot([f["latency_us"] for f in front], [f["energy_nj"] / 1e3 for f in front], "r-",
            lw=1, label="Pareto front (energy, latency)")  # fmt: skip
    fig.colorbar(sc, label="SRAM area (mm²)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per image (µs), 500 MHz")
    ax.set_ylabel("energy per image (µJ)")
    ax.set_title("ResNet-20: P × dataflow × tile channels (tc)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# hwsim dataflows: ResNet-20 on CIFAR-10",
        "",
        f"{res['network']}; {res['images']} test images; memories priced by "
        f"{res['memory_model']}, sized to the network (smallest power of two KiB), event "
        "buffer 64 KiB; logic: Horowitz 45 nm scaled by width (`hwsim/energy.py`); 500 MHz. "
        "ANN: the same network in int8 on an output-stationary MAC array with P multipliers, "
        "the same memories and prices (`hwsim/ann.py`). Latency: per image, the engines' "
        "cycles, the output-stationary producers' counting sorts (energy entry `bucketing`; "
        "docs/architecture.md §11) and the controller's. Command: "
        f"`.venv/bin/python benchmarks/hwsim_dataflow.py`; {res['seconds']:.0f} s on "
        f"{res['platform']}.",
        "",
        "| P | design | energy µJ | latency µs | lane use % (adder cycles) | lanes busy % (all "
        "cycles) | SRAM mm² | ANN dense µJ / µs | ANN zero-skip µJ / µs | E_ANN/E_SNN dense "
        "| E_ANN/E_SNN zero-skip | spikes = golden int | hwsim speed / gather-add |",
        "|" + "---|" * 13,
    ]
    for p in res["points"]:
        a = p["ann"]
        lines.append(
            f"| {p['lanes']} | {p['design']} | {p['energy_nj'] / 1e3:,.1f} "
            f"| {p['latency_us']:,.0f} | {100 * p['lane_utilisation_adder_cycles']:.0f} "
            f"| {100 * p['lanes_busy_all_cycles']:.0f} | {p['area_mm2']['total_sram']:.3f} "
            f"| {a['dense']['energy_pj'] / 1e6:,.1f} / {a['dense']['latency_us']:,.0f} "
            f"| {a['zero_skip']['energy_pj'] / 1e6:,.1f} / {a['zero_skip']['latency_us']:,.0f} "
            f"| {p['e_ann_dense_over_e_snn']:.2f} | {p['e_ann_zero_skip_over_e_snn']:.2f} "
            f"| {'yes' if p['spikes_equal_golden_int'] else '**no**'} "
            f"| {p['speed_vs_gather_add']:.2f} |"
        )
    lines += ["", "![energy against latency](hwsim_dataflow.png)", ""]
    if "agreement" in res:
        ag = res["agreement"]
        lines += [f"Output-stationary engine against golden int on {ag['images']} images "
                  "(every layer's spikes, output potentials, adds):", ""]  # fmt: skip
        for q in ag["points"]:
            lines.append(
                f"- P = {q['lanes']}: {q['neurons_differing']:,} of {q['neurons_compared']:,} "
                f"neuron spikes differ; output potentials equal: {q['logits_equal']}; adds "
                f"equal: {q['adds_equal']}"
            )
    lines += ["", "## Issue 9's targets (measured above)", ""]
    best = {}
    for p in res["points"]:
        lower = p["lanes"] not in best or p["energy_nj"] < best[p["lanes"]]["energy_nj"]
        if p["dataflow"] == "output_stationary" and lower:
            best[p["lanes"]] = p
    e_min = min(best.values(), key=lambda p: p["energy_nj"])
    lines.append(
        f"- energy ≤ 60 µJ per image (output-stationary): {e_min['energy_nj'] / 1e3:.1f} µJ at "
        f"P = {e_min['lanes']} ({e_min['design']}): "
        f"{'met' if e_min['energy_nj'] <= 60e3 else 'missed'}"
    )
    for p in best.values():
        d, z = p["e_ann_dense_over_e_snn"], p["e_ann_zero_skip_over_e_snn"]
        lines.append(
            f"- P = {p['lanes']} ({p['design']}): E_ANN/E_SNN {d:.2f} against the dense int8 "
            f"array (target ≥ 2.0: {'met' if d >= 2 else 'missed'}), {z:.2f} against the "
            f"zero-skipping one (target ≥ 1.0: {'met' if z >= 1 else 'missed'})"
        )
    if 64 in best:
        p = best[64]
        u = p["lane_utilisation_adder_cycles"]
        lines.append(
            f"- P = 64: lane use {100 * u:.0f} % (target ≥ 70 %: "
            f"{'met' if u >= 0.7 else 'missed'}), {p['latency_us'] / 1e3:.2f} ms per image "
            "(target ≤ 0.9 ms: "
            f"{'met' if p['latency_us'] <= 900 else 'missed'})"
        )
    slow = min(
        (p for p in res["points"] if p["dataflow"] == "output_stationary"),
        key=lambda p: p["speed_vs_gather_add"],
    )
    lines.append(
        f"- hwsim speed ≥ 0.3 of the bare gather-add: output-stationary at least "
        f"{slow['speed_vs_gather_add']:.2f} (P = {slow['lanes']}): "
        f"{'met' if slow['speed_vs_gather_add'] >= 0.3 else 'missed'}"
    )
    lines += ["", "## Energy by action (nJ per image)", ""]
    acts = list(dict.fromkeys(k for p in res["points"] for k in p["energy_by_action_nj"]))
    lines += ["| P | design | " + " | ".join(acts) + " |", "|" + "---|" * (len(acts) + 2)]
    for p in res["points"]:
        e = p["energy_by_action_nj"]
        lines.append(f"| {p['lanes']} | {p['design']} | "
                     + " | ".join(f"{e.get(k, 0.0):,.0f}" for k in acts) + " |")  # fmt: skip
    lines += ["", "## Energy by block (nJ per image; area of each SRAM, mm²)", ""]
    blocks = list(dict.fromkeys(k for p in res["points"] for k in p["energy_by_block_nj"]))
    lines += ["| P | design | " + " | ".join(blocks) + " | SRAM areas mm² |",
              "|" + "---|" * (len(blocks) + 3)]  # fmt: skip
    for p in res["points"]:
        e = p["energy_by_block_nj"]
        areas = ", ".join(f"{k} {v:.3f}" for k, v in p["area_mm2"].items() if k != "total_sram")
        cells = " | ".join(f"{e.get(k, 0.0):,.0f}" for k in blocks)
        lines.append(f"| {p['lanes']} | {p['design']} | {cells} | {areas} |")
    lines += ["", "## ANN energy by part (nJ per image)", ""]
    parts = list(dict.fromkeys(
        k for p in res["points"] for k in p["ann"]["dense"]["energy_by_part_pj"]))  # fmt: skip
    lines += ["| P | memories of | variant | " + " | ".join(parts) + " | MAC use % |",
              "|" + "---|" * (len(parts) + 4)]  # fmt: skip
    for p in res["points"]:
        if p["dataflow"] != "output_stationary":
            continue
        for v in ("dense", "zero_skip"):
            d = p["ann"][v]
            lines.append(f"| {p['lanes']} | {p['design']} | {v} | "
                         + " | ".join(f"{d['energy_by_part_pj'].get(k, 0.0) / 1e3:,.0f}"
                                      for k in parts)
                         + f" | {100 * d['mac_utilisation']:.0f} |")  # fmt: skip
    lines += ["", "## Output-stationary tiles (channels × rows × columns) and potential widths", ""]
    os_pts = [p for p in res["points"] if p["design"] == "output_stationary"]
    head = " | ".join(f"P = {p['lanes']}: tile, bits, lane use %" for p in os_pts)
    lines += [f"| layer | {head} |", "|" + "---|" * (len(os_pts) + 1)]
    for j, lay in enumerate(os_pts[0]["layers"]):
        cells = []
        for p in os_pts:
            q = p["layers"][j]
            t = "×".join(map(str, q["tile"])) if q["tile"] else "—"
            cells.append(f"{t}, {q['potential_bits']}, {100 * q['lane_utilisation']:.0f}")
        lines.append(f"| {lay['layer']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Tile shape: channels per tile fixed for every layer (output-stationary + weight "
        "buffer)",
        "",
        "tc = `tile_channels` (0: chosen per layer, §11); SRAMs sized to the network; "
        "event-buffer banks: the most live at once over the images (of 4 × 64 KiB).",
        "",
        "| P | tc | energy µJ | latency µs | lane use % | SRAM mm² | E_ANN/E_SNN dense / "
        "zero-skip | banks | spikes = golden int |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in res["tile_space"]:
        lines.append(
            f"| {t['lanes']} | {t['tile_channels'] or 'auto'} | {t['energy_nj'] / 1e3:.1f} | "
            f"{t['latency_us']:,.0f} | {100 * t['lane_utilisation_adder_cycles']:.0f} | "
            f"{t['area_mm2']:.3f} | {t['e_ann_dense_over_e_snn']:.2f} / "
            f"{t['e_ann_zero_skip_over_e_snn']:.2f} | {t['event_buffer_banks_peak']} | "
            f"{'yes' if t['spikes_equal_golden_int'] else 'NO'} |"
        )
    lines += ["", "## Pareto front (energy, latency; every design and tile shape above)", "",
              "| design | P | tc | energy µJ | latency µs | SRAM mm² |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for f in res["pareto"]:
        lines.append(f"| {f['design']} | {f['lanes']} | {f['tile_channels'] or 'auto'} | "
                     f"{f['energy_nj'] / 1e3:.1f} | {f['latency_us']:,.0f} | "
                     f"{f['area_mm2']:.3f} |")  # fmt: skip
    lines += ["", "![Pareto front](hwsim_pareto.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--calib", type=int, default=512, help="calibration images")
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--artifact", type=Path, default=None, help="cache of the converted SNN")
    ap.add_argument("--tag", default="")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (speed ratio)")
    ap.add_argument("--agree-images", type=int, default=100,
                    help="images of the golden agreement check (0: none)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = run(args)
    tag = f"_{args.tag}" if args.tag else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hwsim_dataflow{tag}.json").write_text(json.dumps(res, indent=2, default=float))
    plot(res, RESULTS / f"hwsim_dataflow{tag}.png")
    plot_pareto(res, RESULTS / f"hwsim_pareto{tag}.png")
    md = markdown(res).replace("(hwsim_dataflow.png)", f"(hwsim_dataflow{tag}.png)")
    md = md.replace("(hwsim_pareto.png)", f"(hwsim_pareto{tag}.png)")
    (RESULTS / f"hwsim_dataflow{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
