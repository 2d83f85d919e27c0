"""hwsim design space: ResNet-20 on CIFAR-10 images on the one-spike accelerator model.

Latency and energy per image against the adder lanes P, the output queue depth (with and
without back-pressure) and the wait timestep T_w, each beside the ANN on an equally sized MAC
array (docs/architecture.md §9); layer vs pipelined throughput for 1, 10 and 100 images.
Writes benchmarks/results/hwsim_design_space.{json,md} and hwsim_*.png.

Full run (a few minutes on a free 2-core machine):

    .venv/bin/python benchmarks/hwsim_design_space.py

Small run:

    .venv/bin/python benchmarks/hwsim_design_space.py --images 1 --lanes 4 16 \\
        --depths 16 64 --waits 0 16 --stream 1 4 --tag small
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

import torch

import hwsim
from converter import ConversionConfig, SnnModel, convert, load
from converter.requantize import with_wait
from hwsim.report import ann_mac_array
from hwsim.sim import memory_bits
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


def setup_resnet20(calib: int, images: int, artifact: Path | None = None):
    """(snn, x, y): ResNet-20 converted with T = 16, Q = 1.3 (or loaded from ``artifact``) and
    the first ``images`` CIFAR-10 test images, normalised."""
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    if artifact is not None and artifact.is_file():
        snn = load(artifact)
    else:
        xtr, _ = data.load_cifar10_subset("train")
        model = models.load_cifar_resnet(20)
        cfg = ConversionConfig(
            calibration="percentile", T=16, Q=1.3, input_mean=mean, input_std=std
        )
        calib_x = data.normalize(xtr[:calib], mean, std)
        snn = convert(model, list(calib_x.split(128)), cfg, progress=False)
        if artifact is not None:
            snn.save(artifact)
    xte, yte = data.load_cifar10_subset("test")
    return snn, data.normalize(xte[:images], mean, std), yte[:images]


def fitting_arch(snn: SnnModel, base: hwsim.ArchConfig, **changes: Any) -> hwsim.ArchConfig:
    """``base`` with ``changes``, its SRAMs grown (to a power of two KiB) until every layer
    fits. The energy table is kept: SRAM access energy is not rescaled with the size."""
    arch = replace(base, **changes)
    w = p = 0
    for lay in snn.layers[1:]:
        wb, pb = memory_bits(snn, lay, arch)
        w, p = max(w, wb), max(p, pb)
    kib = [2 ** math.ceil(math.log2(max(b / 8192, 1))) for b in (w, p)]
    return replace(
        arch,
        weight_sram_kib=float(max(arch.weight_sram_kib, kib[0])),
        potential_sram_kib=float(max(arch.potential_sram_kib, kib[1])),
    )


def point(res: hwsim.SimResult, snn: SnnModel, y: torch.Tensor) -> dict[str, Any]:
    """Per-image latency (layer mode), cycles by kind, energy, the ANN baseline, accuracy."""
    n = max(res.images, 1)
    ann = ann_mac_array(snn, res.arch)
    e_snn = float(res.total_energy_pj().sum() / n)
    cyc = {k: float(res.cycles[k].sum() / n) for k in hwsim.sim.CYCLE_KINDS}
    return {
        "lanes": res.arch.lanes,
        "output_queue_depth": res.arch.output_queue_depth,
        "weight_sram_kib": res.arch.weight_sram_kib,
        "potential_sram_kib": res.arch.potential_sram_kib,
        "cycles": cyc,
        "latency_us": sum(cyc.values()) / res.arch.clock_mhz,
        "energy_nj": e_snn / 1e3,
        "adds": float(res.counts["adds"].sum() / n),
        "lane_utilisation": float(
            res.counts["adds"].sum() / max(res.adder_cycles.sum() * res.arch.lanes, 1)
        ),
        "ann_latency_us": float(ann["cycles"].sum() / res.arch.clock_mhz),
        "ann_energy_nj": float(ann["energy_pj"].sum() / 1e3),
        "e_ann_over_e_snn": float(ann["energy_pj"].sum() / e_snn),
        "accuracy": float(100.0 * (res.predictions == y.numpy()).mean()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    n_max = max(args.images, max(args.stream))
    snn, x_all, y_all = setup_resnet20(args.calib, n_max, args.artifact)
    x, y = x_all[: args.images], y_all[: args.images]
    base = hwsim.ArchConfig()
    out: dict[str, Any] = {
        "network": "ResNet-20, CIFAR-10 (T = 16, Q = 1.3, T_w = 16, 8-bit weights)",
        "images": args.images,
        "platform": platform.platform(),
        "base_arch": base.name,
        "note": "SRAMs grown to fit each P (energy table unchanged); layer-mode latency",
    }
    lanes = []
    for p in args.lanes:
        arch = fitting_arch(snn, base, name=f"p{p}", lanes=p, output_queue_depth=max(64, p))
        lanes.append(point(hwsim.simulate(snn, x, arch), snn, y))
        print(
            f"P={p}: {lanes[-1]['latency_us']:.1f} us, {lanes[-1]['energy_nj']:.0f} nJ", flush=True
        )
    out["lanes"] = lanes

    depths = []
    stall = hwsim.stall_pattern(0, args.stall_rate)
    for d in args.depths:
        arch = fitting_arch(snn, base, lanes=args.depth_lanes, output_queue_depth=d)
        for rate, pattern in ((0.0, None), (args.stall_rate, stall)):
            pt = point(hwsim.simulate(snn, x, arch, stalls=pattern), snn, y)
            depths.append({"stall_rate": rate, **pt})
        print(f"depth={d}: stalled {depths[-2]['cycles']['stalled']:.0f} cycles", flush=True)
    out["depths"] = {"lanes": args.depth_lanes, "points": depths}

    waits = []
    arch = fitting_arch(snn, base, lanes=args.depth_lanes)
    for tw in args.waits:
        s = with_wait(snn, tw)
        pt = point(hwsim.simulate(s, x, arch), s, y)
        pipe = hwsim.simulate(s, x, arch, mode="pipelined")
        pt["T_w"] = tw
        pt["pipelined_first_latency_us"] = pipe.first_image_latency_us()
        waits.append(pt)
        print(f"T_w={tw}: {pt['latency_us']:.1f} us, acc {pt['accuracy']:.0f} %", flush=True)
    out["waits"] = {"lanes": args.depth_lanes, "points": waits}

    stream = []
    for n in args.stream:
        row: dict[str, Any] = {"images": n}
        for mode in ("layer", "pipelined"):
            r = hwsim.simulate(snn, x_all[:n], arch, mode=mode)
            row[mode] = {
                "first_image_latency_us": r.first_image_latency_us(),
                "stream_time_us": r.stream_time_us(),
                "images_per_s": r.images_per_s(),
            }
        row["pipelined_speedup"] = (
            row["layer"]["stream_time_us"] / row["pipelined"]["stream_time_us"]
        )
        stream.append(row)
        print(f"N={n}: pipelined speed-up {row['pipelined_speedup']:.2f}x", flush=True)
    out["stream"] = {"lanes": args.depth_lanes, "points": stream}
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- output
def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# hwsim design space: ResNet-20 on CIFAR-10",
        "",
        f"{res['network']}; {res['images']} test images; {res['note']}. "
        "ANN: the same network on a MAC array of the same P lanes and energy table "
        "(docs/architecture.md §9). Command: `.venv/bin/python benchmarks/hwsim_design_space.py`"
        f"; {res['seconds']:.0f} s on {res['platform']}.",
        "",
        "## Adder lanes P",
        "",
        "| P | latency µs | busy | stalled | waiting | lanes % | energy nJ | ANN µs | ANN nJ "
        "| E_ANN/E_SNN | SRAM KiB (param / potential) |",
        "|" + "---|" * 11,
    ]
    for p in res["lanes"]:
        c = p["cycles"]
        lines.append(
            f"| {p['lanes']} | {p['latency_us']:,.1f} | {c['busy']:,.0f} | {c['stalled']:,.0f} "
            f"| {c['waiting']:,.0f} | {100 * p['lane_utilisation']:.0f} | {p['energy_nj']:,.0f} "
            f"| {p['ann_latency_us']:,.1f} | {p['ann_energy_nj']:,.0f} "
            f"| {p['e_ann_over_e_snn']:.2f} | {p['weight_sram_kib']:g} / "
            f"{p['potential_sram_kib']:g} |"
        )
    lines += [
        "",
        "![latency and energy against P](hwsim_lanes.png)",
        "",
        f"## Output queue depth (P = {res['depths']['lanes']})",
        "",
        "| depth | back-pressure | latency µs | stalled cycles | energy nJ |",
        "|---|---|---|---|---|",
    ]
    for p in res["depths"]["points"]:
        lines.append(
            f"| {p['output_queue_depth']} | {p['stall_rate']:.0%} | {p['latency_us']:,.1f} "
            f"| {p['cycles']['stalled']:,.0f} | {p['energy_nj']:,.0f} |"
        )
    lines += [
        "",
        "![queue depth](hwsim_queue_depth.png)",
        "",
        f"## Wait timestep T_w (P = {res['waits']['lanes']})",
        "",
        "| T_w | latency µs (layer) | waiting cycles | first image µs (pipelined) | energy nJ "
        "| accuracy % |",
        "|---|---|---|---|---|---|",
    ]
    for p in res["waits"]["points"]:
        lines.append(
            f"| {p['T_w']} | {p['latency_us']:,.1f} | {p['cycles']['waiting']:,.0f} "
            f"| {p['pipelined_first_latency_us']:,.1f} | {p['energy_nj']:,.0f} "
            f"| {p['accuracy']:.1f} |"
        )
    lines += [
        "",
        "![T_w](hwsim_wait.png)",
        "",
        f"## Layer vs pipelined mode (P = {res['stream']['lanes']})",
        "",
        "| images | layer: images/s | pipelined: images/s | layer: first µs | pipelined: first µs "
        "| stream speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for p in res["stream"]["points"]:
        lay, pip = p["layer"], p["pipelined"]
        lines.append(
            f"| {p['images']} | {lay['images_per_s']:,.0f} | {pip['images_per_s']:,.0f} "
            f"| {lay['first_image_latency_us']:,.1f} | {pip['first_image_latency_us']:,.1f} "
            f"| {p['pipelined_speedup']:.2f}× |"
        )
    lines += ["", "![throughput](hwsim_stream.png)", ""]
    return "\n".join(lines)


def plots(res: dict[str, Any], tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(RESULTS / f"hwsim_{name}{tag}.png", dpi=130)
        plt.close(fig)

    lp = res["lanes"]
    p = [q["lanes"] for q in lp]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    a1.loglog(p, [q["latency_us"] for q in lp], "o-", label="SNN accelerator")
    a1.loglog(p, [q["ann_latency_us"] for q in lp], "s--", label="ANN, MAC array")
    a1.set_xlabel("lanes P")
    a1.set_ylabel("latency per image (µs)")
    a1.legend()
    a2.semilogx(p, [q["energy_nj"] / 1e3 for q in lp], "o-", label="SNN accelerator")
    a2.semilogx(p, [q["ann_energy_nj"] / 1e3 for q in lp], "s--", label="ANN, MAC array")
    a2.set_xlabel("lanes P")
    a2.set_ylabel("energy per image (µJ)")
    a2.set_ylim(bottom=0)
    a2.legend()
    save(fig, "lanes")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for rate in sorted({q["stall_rate"] for q in res["depths"]["points"]}):
        pts = [q for q in res["depths"]["points"] if q["stall_rate"] == rate]
        ax.semilogx(
            [q["output_queue_depth"] for q in pts],
            [q["latency_us"] for q in pts],
            "o-",
            base=2,
            label=f"back-pressure {rate:.0%}",
        )
    ax.set_xlabel("output queue depth (events)")
    ax.set_ylabel("latency per image (µs)")
    ax.set_title(f"P = {res['depths']['lanes']}")
    ax.legend()
    save(fig, "queue_depth")

    w = res["waits"]["points"]
    fig, a1 = plt.subplots(figsize=(5.5, 3.6))
    tw = [q["T_w"] for q in w]
    a1.plot(tw, [q["latency_us"] for q in w], "o-", label="layer mode, per image")
    a1.plot(tw, [q["pipelined_first_latency_us"] for q in w], "s-", label="pipelined, first image")
    a1.set_xlabel("wait timestep T_w")
    a1.set_ylabel("latency (µs)")
    a2 = a1.twinx()
    a2.plot(tw, [q["accuracy"] for q in w], "k^:", label="accuracy")
    a2.set_ylabel("accuracy (%)")
    a1.legend(loc="upper left", fontsize=8)
    save(fig, "wait")

    s = res["stream"]["points"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    n = [q["images"] for q in s]
    for mode in ("layer", "pipelined"):
        ax.semilogx(n, [q[mode]["images_per_s"] for q in s], "o-", label=mode)
    ax.set_xlabel("images in the stream")
    ax.set_ylabel("images / s")
    ax.set_ylim(bottom=0)
    ax.legend()
    save(fig, "stream")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10, help="images per design point")
    ap.add_argument("--calib", type=int, default=512, help="calibration images")
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--depths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--depth-lanes", type=int, default=16, help="P of the depth/T_w/stream runs")
    ap.add_argument("--stall-rate", type=float, default=0.5, help="back-pressure of the depth run")
    ap.add_argument("--waits", type=int, nargs="+", default=[0, 2, 4, 8, 12, 16])
    ap.add_argument("--stream", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--artifact", type=Path, default=None, help="cache of the converted SNN")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--tag", default="", help="suffix of the output names (e.g. small)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = run(args)
    tag = f"_{args.tag}" if args.tag else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hwsim_design_space{tag}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    if tag:
        md = md.replace(".png)", f"{tag}.png)")
    (RESULTS / f"hwsim_design_space{tag}.md").write_text(md)
    plots(res, tag)
    print(md)


if __name__ == "__main__":
    main()
