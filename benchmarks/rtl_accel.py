"""The whole network through `rtl.Accelerator` (issue 10): simulation speed and checks, one run.

Digits (DigitsCNN, trained here, default conversion, P = 16): --digits-images test images
under Verilator and 2 under Icarus. ResNet-20 (CIFAR-10 subset, T 16 / Q 1.3, SRAMs grown to
fit) at P = 16 and P = 64: --r20-images images under Verilator. Every run checks every layer's
spikes against golden int, the output potentials and class, each layer's cycles and activity
counters against hwsim (rtl.accel_sim.accel_cosim); the table gives simulation seconds per
image (start to done, no Python per cycle; build excluded and reported).

Targets (issue 10): digits at most 0.1 s per image under Verilator (the per-layer bench: 0.72 s);
ResNet-20 at most 60 s per image at P = 16 and 64.

--cora adds Cora's GCN (trained 50 epochs, seed 0, default conversion; P = 16 with 1 MiB
parameter and potential memories, as benchmarks/rtl_gcn.py) on the whole accelerator under
Verilator: one graph, its two-rail layers' buffers in rail banks, its input buffer sized to
its features' events (the worst case, 31 M, exceeds the debug port's 2^20 addresses); the
row adds the test accuracy of the classes read back. Rows of nets not run are kept from the
last results.

--dataflow output_stationary runs the same nets on the output-stationary accelerator
(rtl.os_accel.OsAccelerator; presets os16 / os64, SRAMs grown to fit): its rows are kept
beside the potential-SRAM ones.

    .venv/bin/python benchmarks/rtl_accel.py [--digits-images 10] [--r20-images 1] [--cora]
        [--dataflow output_stationary]

Writes benchmarks/results/rtl_accel.json and rtl_accel.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import hwsim
from converter import ConversionConfig, convert
from onespike.data import load_digits
from onespike.models import train_digits_cnn
from rtl.accel_sim import accel_cosim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hwsim_design_space import fitting_arch, setup_resnet20  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUILD = Path(__file__).resolve().parents[1] / "build" / "rtl_accel"


def run(net: str, snn, x, arch, sim: str) -> dict:
    t0 = time.perf_counter()
    r = accel_cosim(snn, arch, x, sim=sim, out_dir=BUILD / f"{net}_{sim}_p{arch.lanes}")
    wall = time.perf_counter() - t0
    cycles_equal = all(r_.rtl_cycles == r_.hwsim_cycles for r_ in r.layers)
    row = {
        "commit": _commit(),
        "net": net,
        "dataflow": arch.dataflow,
        "lanes": arch.lanes,
        "simulator": sim,
        "images": len(r.total_cycles),
        "all_checks_pass": bool(r.ok),
        "spikes_equal_golden_int": all(layer.spikes_match for layer in r.layers),
        "layer_cycles_equal_hwsim": bool(cycles_equal),
        "errors": r.errors[:5] + [e for layer in r.layers for e in layer.errors][:5],
        "cycles_per_image": [int(c) for c in r.total_cycles],
        "gap_cycles": [int(c) for c in r.gap_cycles],
        "sim_seconds": r.sim_seconds,
        "sim_seconds_per_image": r.sim_seconds_per_image,
        "load_seconds": r.load_seconds,
        "readback_seconds": r.readback_seconds,
        "build_seconds": r.build_seconds,
        "wall_seconds": wall,
        "layers": r.to_json()["layers"],
        "predictions": r.predictions,
    }
    print({k: v for k, v in row.items() if k not in ("layers", "predictions")}, flush=True)
    return row


def run_cora() -> dict:
    """Cora's GCN on the whole accelerator under Verilator (module doc)."""
    import dataclasses

    import torch

    import golden
    from onespike import gcn, graphs

    data = graphs.load_planetoid("cora")
    torch.manual_seed(0)
    model, _ = gcn.train_gcn(data, gcn.build_model(data), seed=0, epochs=50)
    x = data.features()
    snn = convert(model, x, progress=False)
    arch = dataclasses.replace(hwsim.ArchConfig(), weight_sram_kib=1024.0,
                               potential_sram_kib=1024.0, event_buffer_banks=16)  # fmt: skip
    hwsim.check_fits(snn, arch)
    row = run("cora", snn, x, arch, "verilator")
    classes = snn.output.channels
    pred = torch.as_tensor(row.pop("predictions"))
    row["rtl_test_accuracy"] = data.accuracy(torch.nn.functional.one_hot(pred, classes).double())
    ref = golden.run(snn, x, "int", device="cpu", keep_spikes=False)
    row["golden_int_test_accuracy"] = data.accuracy(ref.logits_int.double())
    row["predictions_equal_golden_int"] = pred.tolist() == ref.predictions.tolist()
    print({k: row[k] for k in ("rtl_test_accuracy", "golden_int_test_accuracy")}, flush=True)
    return row


def _commit() -> str:
    import subprocess

    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    )
    return out.stdout.strip() or "unknown"


def _dataflow(row: dict) -> str:
    return row.get("dataflow", "potential_sram")  # (rows before the output-stationary top)


def _key(row: dict) -> tuple:
    return row["net"], _dataflow(row), row["lanes"], row["simulator"]


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# The whole network through `rtl.Accelerator` and `rtl.OsAccelerator` "
        "(benchmarks/rtl_accel.py)",
        "",
        f"{meta['machine']}, {meta['cpus']} CPUs, {meta['date']}; command: `{meta['command']}`. "
        "Simulation: start to done, per image (input written through the AXI port and spikes "
        "read back through the debug port are timed apart); build: Verilog generation and the "
        "simulator's compile.",
        "",
        "| net | dataflow | P | simulator | images | all checks | spikes = golden int | layer "
        "cycles = hwsim | cycles / image | sim s / image | build s | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cyc = sorted(set(r["cycles_per_image"]))
        cyc_s = f"{cyc[0]:,}" if len(cyc) == 1 else f"{cyc[0]:,}–{cyc[-1]:,}"
        lines.append(
            f"| {r['net']} | {_dataflow(r)} | {r['lanes']} | {r['simulator']} | {r['images']} | "
            f"{'pass' if r['all_checks_pass'] else 'FAIL'} | "
            f"{'yes' if r['spikes_equal_golden_int'] else 'NO'} | "
            f"{'yes' if r['layer_cycles_equal_hwsim'] else 'no'} | {cyc_s} | "
            f"{r['sim_seconds_per_image']:.3f} | {r['build_seconds']:.0f} | "
            f"{r.get('commit', '')} |"
        )
    for r in rows:
        if "rtl_test_accuracy" in r:
            lines += ["", f"{r['net']}: one graph; test accuracy of the classes read back "
                      f"{r['rtl_test_accuracy']:.2f} % (golden int "
                      f"{r['golden_int_test_accuracy']:.2f} %; every node's class equal: "
                      f"{'yes' if r['predictions_equal_golden_int'] else 'NO'})."]  # fmt: skip
    lines += [
        "",
        "Targets: digits ≤ 0.1 s per image under Verilator; ResNet-20 ≤ 60 s per image "
        "(P = 16 and 64). Layer cycles are the engines' own counters; the controller's "
        "hand-over cycles between layers are in `gap_cycles` (docs/architecture.md §14).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits-images", type=int, default=10)
    ap.add_argument("--r20-images", type=int, default=1)
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--skip-r20", action="store_true")
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--cora", action="store_true")
    ap.add_argument("--dataflow", choices=("potential_sram", "output_stationary"),
                    default="potential_sram")  # fmt: skip
    args = ap.parse_args()
    stationary = args.dataflow == "output_stationary"
    rows = []
    if not args.skip_digits:
        model, _ = train_digits_cnn(seed=0)
        xtr, _, xte, _ = load_digits(seed=0)
        snn = convert(
            model, list(xtr.split(256)), ConversionConfig(calibration="percentile"), progress=False
        )
        arch = hwsim.ArchConfig.preset("os16") if stationary else hwsim.ArchConfig()
        rows.append(run("digits", snn, xte[: args.digits_images], arch, "verilator"))
        rows.append(run("digits", snn, xte[:2], arch, "icarus"))
    if args.cora:
        rows.append(run_cora())
    if not args.skip_r20:
        BUILD.mkdir(parents=True, exist_ok=True)
        snn, x, _ = setup_resnet20(512, args.r20_images, BUILD / "resnet20.safetensors")
        for p in args.lanes:
            base = hwsim.ArchConfig(lanes=p, output_queue_depth=64)
            if stationary:
                base = hwsim.ArchConfig.preset(f"os{p}")
            arch = fitting_arch(snn, base)
            rows.append(run("resnet20", snn, x, arch, "verilator"))
    # keep the rows of earlier runs (each names its commit) for the nets and P not run now
    old = RESULTS / "rtl_accel.json"
    done = {_key(r) for r in rows}
    if old.is_file():
        rows += [r for r in json.loads(old.read_text())["runs"] if _key(r) not in done]
    meta = {
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "date": str(date.today()),
        "command": "python benchmarks/rtl_accel.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rtl_accel.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=1))
    (RESULTS / "rtl_accel.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
