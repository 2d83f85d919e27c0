"""How much of the int-vs-exact accuracy gap is noise: repeat the conversion of ResNet-20 with
disjoint calibration subsets and report the spread of (exact − ANN), (int − ANN), (int − exact).

    .venv/bin/python benchmarks/int_spread.py --subsets 5
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import golden
from converter import ConversionConfig, convert
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subsets", type=int, default=5)
    p.add_argument("--calib-images", type=int, default=1024)
    args = p.parse_args()
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, yte = data.load_cifar10_subset("test")
    xtr, xte = data.normalize(xtr, mean, std), data.normalize(xte, mean, std)
    model = models.load_cifar_resnet(20)
    with torch.no_grad():
        ann = 100.0 * (model(xte).argmax(1) == yte).double().mean().item()
    rows = []
    for k in range(args.subsets):
        calib = xtr[k * args.calib_images : (k + 1) * args.calib_images]
        if len(calib) < args.calib_images:
            break
        snn = convert(
            model,
            list(calib.split(256)),
            ConversionConfig(calibration="percentile", T=16, Q=1.3, input_mean=mean, input_std=std),
            progress=False,
        )
        acc = {
            m: golden.run(snn, xte, m, keep_spikes=False).accuracy(yte) for m in ("exact", "int")
        }
        snn24 = convert(
            model,
            list(calib.split(256)),
            ConversionConfig(calibration="percentile", T=24, Q=1.2, input_mean=mean, input_std=std),
            progress=False,
        )
        acc["exact_T24"] = golden.run(snn24, xte, "exact", keep_spikes=False).accuracy(yte)
        rows.append({"subset": k, **acc})
        print(rows[-1], flush=True)

    def stats(vals):
        return {
            "mean": statistics.mean(vals),
            "stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals),
            "max": max(vals),
        }

    summary = {
        "ann": ann,
        "images": len(xte),
        "rows": rows,
        "exact_minus_ann": stats([r["exact"] - ann for r in rows]),
        "int_minus_ann": stats([r["int"] - ann for r in rows]),
        "int_minus_exact": stats([r["int"] - r["exact"] for r in rows]),
        "exact_T24_minus_ann": stats([r["exact_T24"] - ann for r in rows]),
    }
    (RESULTS / "int_spread_resnet20.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# ResNet-20: spread over calibration subsets",
        "",
        f"ANN {ann:.2f} % on {len(xte)} CIFAR-10 test images; T = 16, Q = 1.3, INT8; "
        f"{len(rows)} disjoint calibration subsets of {args.calib_images} training images.",
        "",
        "| subset | exact % | int % | exact, T = 24, Q = 1.2 % |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['subset']} | {r['exact']:.2f} | {r['int']:.2f} | {r['exact_T24']:.2f} |"
        for r in rows
    ]
    lines += ["", "| difference (points) | mean | stdev | min | max |", "|---|---|---|---|---|"]
    for key in ("exact_minus_ann", "int_minus_ann", "int_minus_exact", "exact_T24_minus_ann"):
        s = summary[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {s['mean']:+.2f} | {s['stdev']:.2f} | "
            f"{s['min']:+.2f} | {s['max']:+.2f} |"
        )
    (RESULTS / "int_spread_resnet20.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
