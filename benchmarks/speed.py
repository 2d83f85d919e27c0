"""Golden-model speed as ratios to the ANN's forward time on the same batch, in one run.

Targets (issue 3): exact ≤ 1.5x the ANN; pipelined and int ≤ (T + 1)x. Each timing is the
median of --repeats runs after one warm-up; the ANN is timed in the same loop, interleaved,
so machine noise hits both sides alike. Writes benchmarks/results/speed.{json,md}.

The allocator is held steady first (``steady_allocator``): glibc's default maps each large
block afresh once a freed one has been returned to the system, so a convolution's 16 MB
output page-faults on every call or on none, depending on the process's history. On
ResNet-20 (256 images, 2 threads) that moved the ANN's time between 0.09 and 0.15 s in one
session, and exact mode's from 0.30 to 0.35 s. ``--allocator default`` keeps glibc's.

    .venv/bin/python benchmarks/speed.py --nets digits mnist resnet20
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import golden
import golden.native
from converter import ConversionConfig, convert
from converter.requantize import with_wait
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


def steady_allocator() -> str:
    """Fix glibc's mmap threshold at its maximum (32 MiB) and its trim threshold at 2 GiB
    (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD), which also stops their dynamic
    adjustment: freed tensors stay in the heap and are reused without page faults. Returns
    how the allocator runs, for the results' machine line."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 32 << 20) == 1 and libc.mallopt(-1, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    return "glibc mmap/trim thresholds 32 MiB / 2 GiB" if ok else "allocator defaults"


def setup(name: str, batch: int):
    if name == "digits":
        model, _ = models.train_digits_cnn(seed=0)
        xtr, _, xte, _ = data.load_digits(seed=0)
        return model, xtr, xte[:batch], None
    if name == "mnist":
        xtr, _ = data.load_mnist("train")
        xte, _ = data.load_mnist("test")
        return models.load_mnist_cnn(), xtr[:1024], xte[:batch], None
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, _ = data.load_cifar10_subset("test")
    model = models.load_cifar_resnet(int(name.removeprefix("resnet")))
    return (
        model,
        data.normalize(xtr[:1024], mean, std),
        data.normalize(xte[:batch], mean, std),
        (mean, std),
    )


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def bench(name: str, batch: int, repeats: int, device: str) -> dict:
    model, calib, x, norm = setup(name, batch)
    mean, std = norm if norm else (None, None)
    cfg = ConversionConfig(calibration="percentile", T=16, Q=1.3, input_mean=mean, input_std=std)
    snn = convert(model, list(calib.split(256)), cfg, progress=False)
    snn_w4 = with_wait(snn, 4)
    model = model.to(device)
    xd = x.to(device)

    def ann():
        with torch.no_grad():
            model(xd)
        if device == "cuda":
            torch.cuda.synchronize()

    def mode(s, m):
        return lambda: golden.run(s, xd, m, batch_size=batch, device=device, keep_spikes=False)

    cases = {
        "ann (PyTorch)": ann,
        "exact": mode(snn, "exact"),
        "pipelined T_w=16": mode(snn, "pipelined"),
        "pipelined T_w=4": mode(snn_w4, "pipelined"),
        "int": mode(snn, "int"),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # interleaved: each round times every case once
        for k, fn in cases.items():
            times[k] += timed(fn, 1)
    base = statistics.median(times["ann (PyTorch)"])
    rows = []
    for k, ts in times.items():
        med = statistics.median(ts)
        limit = 1.5 if k == "exact" else (None if k.startswith("ann") else cfg.T + 1)
        rows.append(
            {
                "case": k,
                "seconds": med,
                "images_per_s": batch / med,
                "ratio_to_ann": med / base,
                "target_ratio": limit,
                "meets_target": None if limit is None else med / base <= limit,
            }
        )
    return {"net": name, "batch": batch, "device": device, "repeats": repeats, "rows": rows}


def markdown(results: list[dict], machine: str) -> str:
    lines = [
        "# Golden-model speed",
        "",
        f"Measured on {machine}; median of the repeats, the ANN "
        "timed in the same interleaved loop. T = 16, Q = 1.3.",
        "",
        "| net | device | batch | case | s / batch | images/s | × ANN | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["rows"]:
            tgt = "—" if r["target_ratio"] is None else f"≤ {r['target_ratio']:g}×"
            met = {None: "—", True: "yes", False: "**no**"}[r["meets_target"]]
            lines.append(
                f"| {res['net']} | {res['device']} | {res['batch']} | {r['case']} | "
                f"{r['seconds']:.4f} | {r['images_per_s']:,.0f} | "
                f"{r['ratio_to_ann']:.2f} | {tgt} | {met} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["digits", "mnist", "resnet20"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="speed", help="results file stem " + "(default: speed)")
    p.add_argument(
        "--allocator",
        choices=["steady", "default"],
        default="steady",
        help="hold glibc's thresholds fixed (steady_allocator) or keep its defaults",
    )
    args = p.parse_args()
    alloc = steady_allocator() if args.allocator == "steady" else "allocator defaults"
    why = golden.native.status()
    coding = "exact pass native (C, AVX-512)" if golden.native.library() else f"Numba ({why})"
    machine = (
        f"{platform.machine()} {args.device}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, {alloc}, {coding}"
    )
    if args.device == "cuda":
        machine += f", {torch.cuda.get_device_name()}"
    results = [bench(n, args.batch, args.repeats, args.device) for n in args.nets]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    (RESULTS / f"{args.out}.md").write_text(markdown(results, machine))
    print(markdown(results, machine))


if __name__ == "__main__":
    main()
