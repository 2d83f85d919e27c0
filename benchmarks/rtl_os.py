"""ResNet-20's layers on the output-stationary RTL engine (rtl.OsEngine), one run.

ResNet-20 (CIFAR-10, T = 16, Q = 1.3, the percentile calibration of the other rtl benches)
on the ``os16`` / ``os64`` presets (weight buffer included; SRAMs grown to fit): every
layer (``rtl.supported_layers`` gives every one for that dataflow) through its engine under
Verilator, each fed golden's spikes of its source, on the first ``--images`` test images.
Per layer: the tile shape, the RTL's cycles next to hwsim's, spikes equal to golden int, the
Verilator build and the simulation time. Writes benchmarks/results/rtl_os.{json,md}.

    .venv/bin/python benchmarks/rtl_os.py [--images 1] [--lanes 16 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hwsim_design_space import fitting_arch, setup_resnet20  # noqa: E402

import hwsim  # noqa: E402
from hwsim.sim import os_tile_plan  # noqa: E402
from rtl.cosim import cosim  # noqa: E402
from rtl.generate import supported_layers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUILD = Path(__file__).resolve().parents[1] / "build-rtl"


def run(snn, x, lanes: int) -> dict:
    base = hwsim.ArchConfig.preset(f"os{lanes}")
    arch = fitting_arch(snn, base)
    layers = supported_layers(snn, arch)
    rows = []

    def progress(r) -> None:
        lay = snn.layers[r.index]
        shape = (
            "-" if lay.kind == "maxpool" else "×".join(map(str, os_tile_plan(snn, lay, arch).shape))
        )
        rows.append({
            "layer": r.index, "name": r.name, "kind": r.kind, "tile": shape,
            "spikes_match": not any("first difference" in e or "potential" in e
                                    for e in r.errors),
            "spikes": r.spikes_rtl, "rtl_cycles": sum(r.rtl_cycles),
            "hwsim_cycles": sum(r.hwsim_cycles), "ok": r.ok, "errors": r.errors[:3],
            "build_s": round(r.build_s, 1), "sim_s": round(r.run_s, 2),
        })  # fmt: skip
        print(f"  P {lanes} layer {r.index} {r.name}: {'ok' if r.ok else r.errors[:1]} "
              f"({sum(r.rtl_cycles)} cycles, build {r.build_s:.0f} s, sim {r.run_s:.1f} s)",
              flush=True)  # fmt: skip

    cosim(snn, x, arch, layers=layers, sim="verilator", chain=False,
          out_dir=BUILD / f"os_resnet20_p{lanes}", progress=progress)  # fmt: skip
    hw_all = hwsim.simulate(snn, x, arch)
    return {
        "lanes": lanes,
        "layers": rows,
        "ok": all(r["ok"] for r in rows),
        "supported": len(layers),
        "of_layers": len(snn.layers) - 1,
        "rtl_cycles_supported": sum(r["rtl_cycles"] for r in rows),
        "hwsim_cycles_all": int(hw_all.cycles_per_image.sum()),
        # the producers' counting sorts (docs/architecture.md §11) and the image latency
        "hwsim_sort_cycles": int(hw_all.bucket_cycles.sum()),
        "hwsim_image_cycles": int(hw_all.image_cycles.sum()),
        "build_s": round(sum(r["build_s"] for r in rows), 1),
        "sim_s": round(sum(r["sim_s"] for r in rows), 2),
    }


def markdown(res: dict) -> str:
    lines = [
        "# ResNet-20 on the output-stationary RTL engine",
        "",
        f"ResNet-20, CIFAR-10 (T = 16, Q = 1.3, percentile calibration), {res['images']} test "
        "image(s); presets os16 / os64 (their weight buffers included; memories grown to fit), "
        "Verilator; each layer fed golden's spikes of its source, shuffled (each engine sorts "
        "its input by phase and pixel, `rtl.os_sort`). hwsim's sorts: the producers' "
        "counting sorts between the layers (docs/architecture.md §11), part of its image "
        "latency (engines + sorts + controller). "
        f"{res['machine']}, {res['date']}. Command: `{res['command']}`.",
        "",
        "| P | layers in RTL | all equal (spikes, cycles, counters) | RTL cycles of those layers "
        "| hwsim cycles, whole network | hwsim sort cycles | hwsim image latency, cycles "
        "| Verilator build s | simulation s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['lanes']} | {r['supported']} of {r['of_layers']} | "
            f"{'yes' if r['ok'] else 'NO'} | {r['rtl_cycles_supported']:,} | "
            f"{r['hwsim_cycles_all']:,} | {r.get('hwsim_sort_cycles', 0):,} | "
            f"{r.get('hwsim_image_cycles', 0):,} | {r['build_s']} | {r['sim_s']} |"
        )
    for r in res["runs"]:
        lines += ["", f"## P = {r['lanes']}", "",
                  "| layer | tile (tc×th×tw) | spikes | RTL cycles | hwsim cycles | equal | "
                  "build s | sim s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for x in r["layers"]:
            lines.append(
                f"| {x['layer']} {x['name']} | {x['tile']} | {x['spikes']} | "
                f"{x['rtl_cycles']:,} | {x['hwsim_cycles']:,} | {'yes' if x['ok'] else 'NO'} | "
                f"{x['build_s']} | {x['sim_s']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    t0 = time.perf_counter()
    snn, x, _ = setup_resnet20(512, args.images, BUILD / "resnet20.safetensors")
    runs = [run(snn, x, p) for p in args.lanes]
    res = {
        "images": args.images,
        "runs": runs,
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}",
        "date": date.today().isoformat(),
        "command": "python benchmarks/rtl_os.py " + " ".join(sys.argv[1:]),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    name = "rtl_os" + (f"_{args.tag}" if args.tag else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
