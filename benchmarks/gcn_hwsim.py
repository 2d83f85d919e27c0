"""GCN SNNs on the hwsim accelerator: energy and latency of one whole graph next to the int8
ANN on the same memories (issue 11 §3-4).

For Cora and Citeseer (GCN, seed 0, T 16 / Q 1.3): hwsim in both dataflows (presets p16 and
os16, memories priced by CACTI 45 nm, SRAMs grown to the smallest power of two that holds the
largest layer), spike-exact against golden int (checked here), and the int8 ANN baselines of
hwsim/ann.py (dense and zero-skipping output-stationary MAC arrays on the same memories). R8
and MR (Text GCN): the sizes hwsim refuses them with.

    .venv/bin/python benchmarks/gcn_hwsim.py

Writes benchmarks/results/gcn_hwsim.json and gcn_hwsim.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

import golden
import hwsim
from converter import ConversionConfig, convert
from hwsim import eventbuf
from hwsim.report import summary
from hwsim.sim import ArchFitError
from onespike import gcn, graphs

RESULTS = Path(__file__).resolve().parent / "results"


def fitted(arch, snn):
    """``arch`` with its SRAMs doubled until every layer fits (at most 64 MiB)."""
    kib = {f: getattr(arch, f) for f in ("weight_sram_kib", "potential_sram_kib")}
    for _ in range(12):
        try:
            hwsim.check_fits(snn, dataclasses.replace(arch, **kib))
            return dataclasses.replace(arch, **kib)
        except ArchFitError as exc:
            which = "weight_sram_kib" if "parameter" in str(exc) else "potential_sram_kib"
            kib[which] *= 2
    raise ArchFitError(f"no SRAM size up to 64 MiB fits {snn.meta.get('model')}")


def trained(name: str):
    data = graphs.load_graph(name)
    if data.identity_features:
        data = graphs.resplit_validation(data, 0)
    torch.manual_seed(0)
    model, _ = gcn.train_gcn(data, gcn.build_model(data), seed=0)
    return data, model


def run_graph(name: str) -> dict:
    data, model = trained(name)
    x = data.features()
    snn = convert(model, x, ConversionConfig(), progress=False)
    ref = golden.run(snn, x, "int")
    out = {
        "nodes": data.num_nodes,
        "test_node_accuracy_int": data.accuracy(ref.logits_int.double()),
    }
    for preset in ("p16", "os16"):
        base = dataclasses.replace(hwsim.ArchConfig.preset(preset), memory_model="cacti")
        try:
            arch = fitted(base, snn)
        except ArchFitError as exc:
            out[preset] = {"refused": str(exc)}
            continue
        # event-buffer banks for the graph's events (golden int's spikes are hwsim's)
        banks, _ = eventbuf.banks_needed(snn, arch, eventbuf.event_counts(snn, ref.spikes))
        need = int(max(arch.event_buffer_banks, *banks))
        arch = dataclasses.replace(arch, event_buffer_banks=need)
        t0 = time.perf_counter()
        res = hwsim.simulate(snn, x, arch)
        seconds = time.perf_counter() - t0
        same = all(
            (a is None and b is None) or torch.equal(torch.as_tensor(a), torch.as_tensor(b))
            for a, b in zip(res.spikes[1:-1], ref.spikes[1:-1], strict=True)
        ) and torch.equal(torch.as_tensor(res.logits_int), ref.logits_int)
        s = summary(res, snn)
        b = s.get("ann_baselines", {})
        out[preset] = {
            "weight_sram_kib": arch.weight_sram_kib,
            "potential_sram_kib": arch.potential_sram_kib,
            "event_buffer_banks": arch.event_buffer_banks,
            "spikes_equal_golden_int": bool(same),
            "energy_uj": s["energy_nj_per_image"] / 1e3,
            "latency_us": s["per_image"]["image_latency_us"],  # sorts and controller included
            "area_mm2": s.get("area_mm2"),
            "ann_dense_energy_uj": b.get("dense", {}).get("energy_nj_per_image", 0) / 1e3,
            "ann_zero_skip_energy_uj": b.get("zero_skip", {}).get("energy_nj_per_image", 0) / 1e3,
            "e_ann_over_e_snn_dense": b.get("dense", {}).get("e_ann_over_e_snn"),
            "e_ann_over_e_snn_zero_skip": b.get("zero_skip", {}).get("e_ann_over_e_snn"),
            "simulation_seconds": seconds,
        }
        print(name, preset, out[preset], flush=True)
    return out


def refused(name: str) -> dict:
    """Text GCN graphs: the reason hwsim gives, with the default memories grown to 64 MiB."""
    data, model = trained(name)
    snn = convert(model, data.features(), ConversionConfig(), progress=False)
    arch = dataclasses.replace(
        hwsim.ArchConfig.preset("p16"), weight_sram_kib=65536.0, potential_sram_kib=65536.0
    )
    try:
        hwsim.check_fits(snn, arch)
        return {"nodes": data.num_nodes, "refused": None}
    except ArchFitError as exc:
        return {"nodes": data.num_nodes, "refused": str(exc)}


def markdown(res: dict, meta: dict) -> str:
    lines = [
        "# GCN SNNs on hwsim (benchmarks/gcn_hwsim.py)",
        "",
        f"{meta['machine']}, torch {meta['torch']}; GCN seed 0, T 16 / Q 1.3, INT8 weights, "
        "16-bit Â; one whole graph per run; memories priced by CACTI 45 nm, SRAMs grown to fit; "
        "latency: the engines', the output-stationary producers' counting sorts' and the "
        "controller's cycles (docs/architecture.md §11, §14).",
        "",
        "| graph | dataflow | SRAMs KiB (weights, potentials) | spikes = golden int | energy µJ | "
        "latency µs | int8 ANN dense µJ (E_ANN/E_SNN) | zero-skip µJ (E_ANN/E_SNN) |",
        "|---|---|---|---|---:|---:|---|---|",
    ]
    for name, r in res.items():
        for preset in ("p16", "os16"):
            p = r.get(preset)
            if p is None:
                continue
            if "refused" in p:
                lines.append(f"| {name} | {preset} | refused: {p['refused']} | | | | | |")
                continue
            lines.append(
                f"| {name} | {preset} | {p['weight_sram_kib']:g}, {p['potential_sram_kib']:g} | "
                f"{'yes' if p['spikes_equal_golden_int'] else 'NO'} | {p['energy_uj']:.1f} | "
                f"{p['latency_us']:,.0f} | {p['ann_dense_energy_uj']:.1f} "
                f"({p['e_ann_over_e_snn_dense']:.2f}) | {p['ann_zero_skip_energy_uj']:.1f} "
                f"({p['e_ann_over_e_snn_zero_skip']:.2f}) |"
            )
        if "refused" in r:
            lines.append(f"| {name} | p16, 64 MiB SRAMs | refused: {r['refused']} | | | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    res = {name: run_graph(name) for name in ("cora", "citeseer")}
    res |= {name: refused(name) for name in ("r8", "mr")}
    meta = {"machine": platform.machine(), "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gcn_hwsim.json").write_text(json.dumps({"meta": meta, **res}, indent=1) + "\n")
    (args.out / "gcn_hwsim.md").write_text(markdown(res, meta))
    print(markdown(res, meta))


if __name__ == "__main__":
    main()
