"""Cora's GCN through the rtl engines under Verilator, every layer (issue 11 §3), one run.

Cora's 2-layer GCN (trained here: ``onespike.gcn.train_gcn``, seed 0, 50 epochs), converted with
the default config, goes end to end through the generated layer engines (``rtl.cosim.cosim``:
every layer in turn, fed the RTL spikes of its source) on the potential-SRAM engine with
memories sized for it (1 MiB of parameters and 1 MiB of potentials: the rails layer needs
385 KiB of parameters, hwsim ``check_fits``). Per layer: the spikes against golden ``int``
(the output layer: its integer potentials), the RTL cycles against hwsim's, the Verilog
generation + Verilator build seconds and the bench's run seconds. Writes
benchmarks/results/rtl_gcn.{json,md}. Needs the shared data (planetoid/cora.npz).

    .venv/bin/python benchmarks/rtl_gcn.py [--sim verilator]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import golden
import hwsim
from converter import convert
from onespike import gcn, graphs
from rtl.cosim import cosim

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    ap.add_argument("--epochs", type=int, default=50)
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = graphs.load_planetoid("cora")
    torch.manual_seed(0)
    model, _ = gcn.train_gcn(data, gcn.build_model(data), seed=0, epochs=args.epochs)
    x = data.features()
    snn = convert(model, x, progress=False)
    prepare_s = time.perf_counter() - t0
    arch = dataclasses.replace(hwsim.ArchConfig(), weight_sram_kib=1024.0,
                               potential_sram_kib=1024.0, event_buffer_banks=16)  # fmt: skip
    hwsim.check_fits(snn, arch)

    rows = []

    def progress(r) -> None:
        rows.append({
            "layer": r.index, "name": r.name, "kind": r.kind,
            "ops": [s.op for s in snn.layers[r.index].synapses],
            "shape": list(snn.layers[r.index].shape),
            "spikes_match": r.ok if r.kind == "output" else
            (r.ok and r.spikes_rtl == r.spikes_golden),
            "spikes_rtl": r.spikes_rtl, "spikes_golden": r.spikes_golden,
            "events_in": r.counters["spikes_in"],
            "rtl_cycles": sum(r.rtl_cycles), "hwsim_cycles": sum(r.hwsim_cycles),
            "cycles_match": r.rtl_cycles == r.hwsim_cycles,
            "build_s": round(r.build_s, 2), "sim_s": round(r.run_s, 2),
            "cycles_per_s": round(r.cycles_per_s),
            "ok": r.ok, "errors": r.errors[:3],
        })  # fmt: skip
        print(f"layer {r.index} ({r.name}): {'ok' if r.ok else r.errors[:2]}  "
              f"{sum(r.rtl_cycles)} cycles (hwsim {sum(r.hwsim_cycles)}), "
              f"build {r.build_s:.1f} s, sim {r.run_s:.1f} s", flush=True)  # fmt: skip

    t1 = time.perf_counter()
    reports = cosim(snn, x, arch, sim=args.sim, out_dir=ROOT / "build-rtl" / "rtl_gcn",
                    progress=progress)  # fmt: skip
    cosim_s = time.perf_counter() - t1
    out = reports[-1]
    ref = golden.run(snn, x, "int", device="cpu", keep_spikes=False)
    pred = torch.as_tensor(np.asarray(out.predictions))
    logits = torch.nn.functional.one_hot(pred, snn.output.channels).double()
    result = {
        "date": date.today().isoformat(),
        "machine": platform.machine(),
        "simulator": args.sim,
        "data": "cora",
        "nodes": data.num_nodes,
        "epochs": args.epochs,
        "arch": {
            "lanes": arch.lanes,
            "weight_sram_kib": arch.weight_sram_kib,
            "potential_sram_kib": arch.potential_sram_kib,
        },  # fmt: skip
        "ok": all(r.ok for r in reports),
        "rtl_test_accuracy": data.accuracy(logits),
        "golden_int_test_accuracy": data.accuracy(ref.logits_int.double()),
        "rtl_cycles": sum(row["rtl_cycles"] for row in rows),
        "hwsim_cycles": sum(row["hwsim_cycles"] for row in rows),
        "train_convert_s": round(prepare_s, 1),
        "cosim_s": round(cosim_s, 1),
        "layers": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rtl_gcn.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "rtl_gcn.md").write_text(markdown(result))
    print(markdown(result))


def markdown(res: dict) -> str:
    lines = [
        f"# Cora's GCN on the rtl engines ({res['simulator']}, {res['date']})",
        "",
        f"Cora ({res['nodes']} nodes), GCN trained {res['epochs']} epochs (seed 0), default "
        f"conversion; P = {res['arch']['lanes']}, {res['arch']['weight_sram_kib']:g} KiB "
        f"parameter and {res['arch']['potential_sram_kib']:g} KiB potential memory. Every "
        "layer fed the RTL spikes of its source (`benchmarks/rtl_gcn.py`).",
        "",
        "| layer | ops | shape | spikes RTL / golden int | spikes match | RTL cycles | "
        "hwsim cycles | build s | sim s | cycles/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["layers"]:
        spikes = (
            "(potentials)" if r["kind"] == "output" else f"{r['spikes_rtl']} / {r['spikes_golden']}"
        )
        lines.append(
            f"| {r['layer']} {r['name']} | {', '.join(r['ops'])} | "
            f"{'x'.join(map(str, r['shape']))} | {spikes} | "
            f"{'yes' if r['spikes_match'] else 'NO'} | "
            f"{r['rtl_cycles']:,} | {r['hwsim_cycles']:,} | {r['build_s']:.1f} | "
            f"{r['sim_s']:.1f} | {r['cycles_per_s']:,} |"
        )
    lines += [
        "",
        f"All checks {'passed' if res['ok'] else 'did NOT pass'} (spikes = golden int, output "
        "potentials = golden int, cycles and activity counters = hwsim). Test accuracy from "
        f"the RTL's output potentials: {res['rtl_test_accuracy']:.2f} % (golden int "
        f"{res['golden_int_test_accuracy']:.2f} %). Co-simulation {res['cosim_s']:.0f} s in all "
        f"(training and conversion {res['train_convert_s']:.0f} s).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
