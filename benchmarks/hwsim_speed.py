"""hwsim speed, as ratios measured in one run (issue 4 §6).

- simulated synaptic events (adds) per second of ``hwsim.simulate`` (end to end: input coding,
  event lists, timing, neurons, queues) and the ratio to the bare Numba gather-add kernel
  (``hwsim.kernels.gather_add``) doing the same additions on the same events and fan-out
  tables (target ≥ 0.3);
- ResNet-20, one image: hwsim time / golden ``int`` time on the CPU (target ≤ 5);
- time against images (1, 10, 100) and against the spike count (networks of different
  sizes: MNIST CNN, ResNet-20, ResNet-32), with a least-squares line and R².

Each timing is the median of --repeats runs after one warm-up, the compared sides
interleaved in the same loop. Single-threaded by default (--threads): Numba is. Writes
benchmarks/results/hwsim_speed.{json,md}.

Full run:

    .venv/bin/python benchmarks/hwsim_speed.py

Small run:

    .venv/bin/python benchmarks/hwsim_speed.py --images 2 --counts 1 2 --resnets \\
        --repeats 2 --tag small
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import golden
import hwsim
from hwsim import kernels as K
from hwsim.sim import layer_events

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hwsim_design_space import setup_resnet20  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved(fns: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each function, after one warm-up, the functions taking turns."""
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def line_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """Least squares y = a + b·x and its R²."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.size < 2 or np.ptp(xa) == 0:
        return {"intercept": float("nan"), "slope": float("nan"), "r2": float("nan")}
    b, a = np.polyfit(xa, ya, 1)
    resid = ya - (a + b * xa)
    ss = float(((ya - ya.mean()) ** 2).sum())
    return {
        "intercept": float(a),
        "slope": float(b),
        "r2": 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0,
    }


def gather_reference(snn, res: hwsim.SimResult) -> tuple[Any, int]:
    """A function running the bare gather-add over every layer's events, and its add count."""
    jobs = []
    adds = 0
    for i, lay in enumerate(snn.layers):
        if lay.kind not in ("neuron", "output"):
            continue
        fan, ptr, ids, sign, t_src = layer_events(snn, res.spikes, i, res.arch.lanes)
        adds += int(np.diff(fan.ptr)[ids].sum()) if ids.size else 0
        jobs.append((ptr, ids, sign, fan.ptr, fan.tgt, fan.w, res.images, t_src, lay.size))

    def run() -> None:
        for j in jobs:
            K.gather_add(*j)

    return run, adds


def spike_workloads(args: argparse.Namespace, resnet20, x20: torch.Tensor):
    """(name, snn, images) of networks with different spike counts, ``args.images`` each."""
    from converter import ConversionConfig, convert
    from onespike import data, models

    cfg = ConversionConfig(calibration="percentile", T=16, Q=1.3)
    out = []
    xtr, _ = data.load_mnist("train")
    xte, _ = data.load_mnist("test")
    mnist = convert(
        models.load_mnist_cnn(), list(xtr[: args.calib].split(128)), cfg, progress=False
    )
    out.append(("MNIST CNN", mnist, xte[: args.images]))
    out.append(("ResNet-20", resnet20, x20))
    if 32 in args.resnets:
        mean, std = data.CIFAR_MEAN, data.CIFAR_STD
        c = ConversionConfig(calibration="percentile", T=16, Q=1.3, input_mean=mean, input_std=std)
        xc, _ = data.load_cifar10_subset("train")
        try:
            r32 = models.load_cifar_resnet(32)
        except FileNotFoundError as exc:
            print(f"ResNet-32 skipped: {exc}")
        else:
            calib = list(data.normalize(xc[: args.calib], mean, std).split(128))
            out.append(("ResNet-32", convert(r32, calib, c, progress=False), x20))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    n_max = max([args.images, *args.counts])
    snn, x_all, _ = setup_resnet20(args.calib, n_max, args.artifact)
    arch = hwsim.ArchConfig.preset(args.preset)
    x = x_all[: args.images]
    out: dict[str, Any] = {
        "network": "ResNet-20, CIFAR-10 (T = 16, Q = 1.3)",
        "arch": arch.name,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }

    # 1. events per second, against the bare gather-add
    res = hwsim.simulate(snn, x, arch)
    gather, adds = gather_reference(snn, res)
    sim_adds = int(res.counts["adds"].sum())
    assert adds == sim_adds, (adds, sim_adds)
    t = interleaved({"hwsim": lambda: hwsim.simulate(snn, x, arch), "gather": gather}, args.repeats)
    out["events"] = {
        "images": args.images,
        "adds": sim_adds,
        "hwsim_seconds": t["hwsim"],
        "gather_seconds": t["gather"],
        "hwsim_events_per_s": sim_adds / t["hwsim"],
        "gather_events_per_s": sim_adds / t["gather"],
        "ratio": t["gather"] / t["hwsim"],
        "target": 0.3,
    }
    print(f"events/s: hwsim {sim_adds / t['hwsim']:.3g}, ratio {t['gather'] / t['hwsim']:.2f}")

    # 2. one image against golden int on the CPU
    x1 = x_all[:1]
    t = interleaved(
        {
            "hwsim": lambda: hwsim.simulate(snn, x1, arch),
            "golden_int": lambda: golden.run(snn, x1, "int", device="cpu", keep_spikes=False),
        },
        args.repeats,
    )
    out["one_image"] = {
        "hwsim_seconds": t["hwsim"],
        "golden_int_seconds": t["golden_int"],
        "ratio": t["hwsim"] / t["golden_int"],
        "target": 5.0,
    }
    print(f"one image: hwsim / golden int = {t['hwsim'] / t['golden_int']:.2f}")

    # 3. time against images
    pts = []
    for n in args.counts:
        xn = x_all[:n]
        sec = interleaved({"hwsim": lambda xn=xn: hwsim.simulate(snn, xn, arch)}, args.repeats)
        pts.append({"images": n, "seconds": sec["hwsim"], "seconds_per_image": sec["hwsim"] / n})
        print(f"N={n}: {sec['hwsim']:.3f} s", flush=True)
    out["images"] = {
        "points": pts,
        "fit": line_fit([p["images"] for p in pts], [p["seconds"] for p in pts]),
    }

    # 4. time against spikes. One-spike coding fires (at most) once per neuron whatever the
    # input, so a network's spikes per image hardly move with the input; the spike count is
    # varied with the network (MNIST CNN, ResNet-20, ResNet-32) at a fixed image count.
    pts = []
    for name, net, xs in spike_workloads(args, snn, x):
        r = hwsim.simulate(net, xs, arch)
        sec = interleaved(
            {"hwsim": lambda net=net, xs=xs: hwsim.simulate(net, xs, arch)}, args.repeats
        )
        adds = int(r.counts["adds"].sum())
        pts.append(
            {
                "network": name,
                "images": len(xs),
                "adds": adds,
                "spikes": int(r.counts["spikes_out"].sum()),
                "seconds": sec["hwsim"],
                "ns_per_add": sec["hwsim"] / adds * 1e9,
            }
        )
        print(f"{name}: {adds:,} adds, {sec['hwsim']:.3f} s", flush=True)
    out["spikes"] = {
        "images": args.images,
        "points": pts,
        "fit_adds": line_fit([p["adds"] for p in pts], [p["seconds"] for p in pts]),
    }
    return out


def markdown(res: dict[str, Any]) -> str:
    ev, one = res["events"], res["one_image"]

    def ok(v: float, target: float, lower: bool) -> str:
        return "yes" if (v <= target if lower else v >= target) else "**no**"

    lines = [
        "# hwsim speed",
        "",
        f"{res['network']} on `{res['arch']}`; {res['platform']} ({res['processor']}), "
        f"{res['threads']} torch thread(s); medians of {res['repeats']} interleaved runs.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| hwsim synaptic events / s ({ev['images']} images, {ev['adds']:,} adds) "
        f"| {ev['hwsim_events_per_s']:.3g} | | |",
        f"| bare Numba gather-add events / s | {ev['gather_events_per_s']:.3g} | | |",
        f"| hwsim / gather-add (events/s) | {ev['ratio']:.2f} | ≥ 0.3 "
        f"| {ok(ev['ratio'], 0.3, False)} |",
        f"| one image: hwsim {one['hwsim_seconds'] * 1e3:.0f} ms / golden int "
        f"{one['golden_int_seconds'] * 1e3:.0f} ms | {one['ratio']:.2f} | ≤ 5 "
        f"| {ok(one['ratio'], 5.0, True)} |",
        "",
        "## Time against images",
        "",
        "| images | seconds | seconds / image |",
        "|---|---|---|",
        *[
            f"| {p['images']} | {p['seconds']:.3f} | {p['seconds_per_image']:.4f} |"
            for p in res["images"]["points"]
        ],
        "",
        f"Line: {res['images']['fit']['intercept']:.3f} s + {res['images']['fit']['slope']:.4f} "
        f"s/image, R² = {res['images']['fit']['r2']:.4f}.",
        "",
        f"## Time against spikes ({res['spikes']['images']} images per network)",
        "",
        "One-spike coding fires at most once per neuron whatever the input, so the spike count "
        "is varied with the network.",
        "",
        "| network | adds | spikes | seconds | ns / add |",
        "|---|---|---|---|---|",
        *[
            f"| {p['network']} | {p['adds']:,} | {p['spikes']:,} | {p['seconds']:.3f} "
            f"| {p['ns_per_add']:.2f} |"
            for p in res["spikes"]["points"]
        ],
        "",
        f"Line: {res['spikes']['fit_adds']['intercept']:.3f} s + "
        f"{res['spikes']['fit_adds']['slope'] * 1e9:.2f} ns/add, "
        f"R² = {res['spikes']['fit_adds']['r2']:.4f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10, help="images of the events/s and α runs")
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument(
        "--resnets", type=int, nargs="*", default=[32], help="extra ResNets of the spike sweep"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--preset", default="p16")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--artifact", type=Path, default=None, help="cache of the converted SNN")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (golden)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = run(args)
    tag = f"_{args.tag}" if args.tag else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hwsim_speed{tag}.json").write_text(json.dumps(res, indent=2))
    md = markdown(res)
    (RESULTS / f"hwsim_speed{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
