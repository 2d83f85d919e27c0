"""Co-simulation speed of the digits network under Icarus Verilog and Verilator, one run.

The built-in example (the digits CNN, trained and converted here) goes end to end through the
generated engines (``rtl.cosim.cosim``: every layer in turn, fed the RTL spikes of its source)
on the same test images under both simulators, at the default accelerator (P = 16) unless
``--preset`` says otherwise. Per simulator and layer it records the bench set-up (Verilog
generation and the simulator's build: compile, for Verilator the C++ build), the bench run
(the cocotb loop over the images: driving events, collecting spikes, checking) and the rest
(simulator start, golden and hwsim references, file traffic); from the run time, simulated
cycles per second and seconds per image. Target (issue 5 §5): one digits image end to end in
at most 2 s under Verilator, set-up excluded. Writes benchmarks/results/rtl_speed.{json,md}.

    .venv/bin/python benchmarks/rtl_speed.py [--images 5] [--preset default]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import hwsim
from converter import ConversionConfig, convert
from onespike.data import load_digits
from onespike.models import train_digits_cnn
from rtl.cosim import cosim

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def run_one(snn, x, arch, sim: str) -> dict:
    """Co-simulate every layer under ``sim``; per layer: set-up, run, rest (seconds)."""
    marks = [time.perf_counter()]
    layers = []

    def progress(r) -> None:
        marks.append(time.perf_counter())
        total = marks[-1] - marks[-2]
        layers.append({
            "layer": r.index, "name": r.name, "kind": r.kind, "ok": r.ok, "errors": r.errors[:3],
            "cycles": sum(r.rtl_cycles), "hwsim_cycles": sum(r.hwsim_cycles),
            "setup_s": r.build_s, "run_s": r.run_s, "rest_s": total - r.build_s - r.run_s,
            "cycles_per_s": r.cycles_per_s,
        })  # fmt: skip

    cosim(snn, x, arch, sim=sim, out_dir=ROOT / "build-rtl" / f"speed_{sim}", progress=progress)
    n = x.shape[0]
    cycles = sum(layer["cycles"] for layer in layers)
    run = sum(layer["run_s"] for layer in layers)
    return {
        "simulator": sim,
        "ok": all(layer["ok"] for layer in layers),
        "layers": layers,
        "cycles_per_image": cycles / n,
        "setup_s": sum(layer["setup_s"] for layer in layers),
        "run_s": run,
        "rest_s": sum(layer["rest_s"] for layer in layers),
        "cycles_per_s": cycles / run,
        "run_s_per_image": run / n,
    }


def markdown(res: dict) -> str:
    lines = [
        "# rtl co-simulation speed: the digits network end to end",
        "",
        f"{res['images']} digits test images through every layer's generated engine "
        f"(P = {res['lanes']}, output queue {res['output_queue_depth']}), each layer fed the "
        "RTL spikes of its source; spikes, output potentials, classes, cycles and activity "
        f"counters checked against golden int and hwsim. {res['machine']}, {res['date']}. "
        f"Command: `{res['command']}`.",
        "",
        "| simulator | all checks | cycles / image | cycles / s | run s / image | set-up s "
        "(all layers) | rest s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['simulator']} | {'pass' if r['ok'] else 'FAIL'} | {r['cycles_per_image']:,.0f}"
            f" | {r['cycles_per_s']:,.0f} | {r['run_s_per_image']:.2f} | {r['setup_s']:.1f} | "
            f"{r['rest_s']:.1f} |"
        )
    if len(res["runs"]) == 2:
        a, b = res["runs"]
        lines += ["", f"Verilator / Icarus run-time speed-up: {a['run_s'] / b['run_s']:.1f}×."]
    lines += ["", "Per layer (run seconds for all images; cycles per second):", ""]
    head = "| layer | kind | cycles | " + " | ".join(
        f"{r['simulator']} run s | {r['simulator']} cycles/s | {r['simulator']} set-up s"
        for r in res["runs"]
    )
    lines += [head + " |", "|---|---|---|" + "---|---|---|" * len(res["runs"])]
    for i, layer in enumerate(res["runs"][0]["layers"]):
        cells = [f"{layer['layer']} {layer['name']}", layer["kind"], f"{layer['cycles']:,}"]
        for r in res["runs"]:
            lr = r["layers"][i]
            cells += [f"{lr['run_s']:.2f}", f"{lr['cycles_per_s']:,.0f}", f"{lr['setup_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Where the time goes: *set-up* is Verilog generation plus the simulator's build "
        "(Icarus: iverilog; Verilator: Verilog to C++ and the C++ compile), once per layer "
        "and engine configuration; *run* is the cocotb loop over the images, in which the "
        "driver and the monitor coroutines wake twice per clock cycle (falling edge, then the "
        "read-only phase) around the simulator's own evaluation (this benchmark does not "
        "separate the two); *rest* is the simulator start, loading cocotb and the case, and "
        "the golden and hwsim references computed once per layer.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--preset", default="default", help="hwsim preset (default: P = 16)")
    ap.add_argument("--sims", nargs="+", default=["icarus", "verilator"])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    model, _ = train_digits_cnn(seed=0)
    x_tr, _, x_te, _ = load_digits(seed=0)
    snn = convert(model, list(x_tr.split(256)), ConversionConfig(calibration="percentile"),
                  name="DigitsCNN", progress=False)  # fmt: skip
    arch = hwsim.ArchConfig.preset(args.preset)
    x = x_te[: args.images]
    runs = [run_one(snn, x, arch, sim) for sim in args.sims]
    res = {
        "images": args.images, "lanes": arch.lanes,
        "output_queue_depth": arch.output_queue_depth, "runs": runs,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "date": date.today().isoformat(),
        "command": "python benchmarks/rtl_speed.py " + f"--images {args.images} --preset "
        f"{args.preset}",
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rtl_speed.json").write_text(json.dumps(res, indent=2))
    (args.out / "rtl_speed.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
