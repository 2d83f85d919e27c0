"""Accuracy of the one-spike SNN against its ANN on real data (the paper's tables, our nets).

For each network: ANN accuracy; SNN accuracy in exact, int (INT8) and pipelined mode at
(T 16, Q 1.3) and (T 24, Q 1.2); a T_w sweep like Table VIII; ablations Q = 2 (no base
manipulation) and floor instead of round (no threshold shift); spikes per neuron; Eq. 6
E_ANN/E_SNN for FP32 and INT8. Writes benchmarks/results/accuracy_<net>.{json,md}.

    .venv/bin/python benchmarks/accuracy.py --nets digits mnist resnet20 resnet32
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import golden
from converter import ConversionConfig, convert
from converter.requantize import with_wait
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Bench:
    name: str
    model: torch.nn.Module
    calib: list[torch.Tensor]
    x: torch.Tensor
    y: torch.Tensor
    norm: tuple | None
    note: str


def setup(name: str, calib_images: int) -> Bench:
    if name == "digits":
        model, _ = models.train_digits_cnn(seed=0)
        xtr, _, xte, yte = data.load_digits(seed=0)
        return Bench(
            name,
            model,
            list(xtr.split(256)),
            xte,
            yte,
            None,
            "scikit-learn digits, DigitsCNN trained in-process (seed 0)",
        )
    if name == "mnist":
        xtr, _ = data.load_mnist("train")
        xte, yte = data.load_mnist("test")
        return Bench(
            name,
            models.load_mnist_cnn(),
            list(xtr[:calib_images].split(256)),
            xte,
            yte,
            None,
            "MNIST test set (10,000), MnistCNN from benchmarks/train_mnist.py",
        )
    depth = int(name.removeprefix("resnet"))
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, yte = data.load_cifar10_subset("test")
    xtr, xte = data.normalize(xtr[:calib_images], mean, std), data.normalize(xte, mean, std)
    return Bench(
        name,
        models.load_cifar_resnet(depth),
        list(xtr.split(256)),
        xte,
        yte,
        (mean, std),
        f"CIFAR-10 test subset (1017 images), pretrained ResNet-{depth}",
    )


def ann_accuracy(b: Bench) -> float:
    with torch.no_grad():
        pred = torch.cat([b.model(xb).argmax(1) for xb in b.x.split(512)])
    return 100.0 * (pred == b.y).double().mean().item()


def run_mode(snn, b: Bench, mode: str) -> dict:
    t = time.perf_counter()
    r = golden.run(snn, b.x, mode, batch_size=256, keep_spikes=False)
    row = {"mode": mode, "accuracy": r.accuracy(b.y), "seconds": time.perf_counter() - t}
    if mode != "ann":
        row |= {
            "spikes_per_neuron": r.spikes_per_neuron(),
            "adds_per_image": float(sum(r.counts["adds"])) / len(b.x),
            "macs_per_image": float(sum(r.counts["ann_macs"])) / len(b.x),
            "energy_ratio_fp32": golden.energy_ratio(r.counts, "fp32"),
            "energy_ratio_int8": golden.energy_ratio(r.counts, "int8"),
        }
    return row


def config(b: Bench, **kw) -> ConversionConfig:
    mean, std = b.norm if b.norm else (None, None)
    # the recorded tables were measured with the percentile calibration (the default then)
    kw.setdefault("calibration", "percentile")
    return ConversionConfig(input_mean=mean, input_std=std, **kw)


def spike_identity(snn, b: Bench, n: int = 100) -> float:
    """Fraction of hidden neurons whose pipelined spike (T_w = T) equals the exact one."""
    e = golden.run(snn, b.x[:n], "exact")
    p = golden.run(snn, b.x[:n], "pipelined")
    same = total = 0
    for lay, se, sp in zip(snn.layers, e.spikes, p.spikes, strict=True):
        if lay.kind in ("neuron", "maxpool"):
            same += int((se == sp).sum())
            total += se.numel()
    return same / total


def bench(name: str, args) -> dict:
    b = setup(name, args.calib_images)
    ann = ann_accuracy(b)
    print(f"[{name}] ANN {ann:.2f} %  ({b.note})", flush=True)
    out: dict = {
        "net": name,
        "note": b.note,
        "images": len(b.x),
        "ann_accuracy": ann,
        "calibration_images": sum(len(c) for c in b.calib),
        "configs": [],
    }
    for T, Q in ((16, 1.3), (24, 1.2)):
        t0 = time.perf_counter()
        snn = convert(b.model, b.calib, config(b, T=T, Q=Q), progress=False)
        entry = {
            "T": T,
            "Q": Q,
            "T_w": T,
            "convert_seconds": time.perf_counter() - t0,
            "modes": [run_mode(snn, b, m) for m in ("exact", "int", "pipelined")],
        }
        entry["pipelined_equals_exact_spike_fraction"] = spike_identity(snn, b)
        out["configs"].append(entry)
        _print_entry(name, entry, ann)
        if T == 16:
            out["wait_sweep"] = sweep(snn, b, args.sweep, name in args.sweep_int)
            print(f"[{name}] T_w sweep {out['wait_sweep']}", flush=True)
    out["ablations"] = []
    for label, kw in (
        ("Q = 2 (no base manipulation)", {"Q": 2.0}),
        ("floor (no threshold shift)", {"Q": 1.3, "threshold_shift": False}),
    ):
        snn = convert(b.model, b.calib, config(b, T=16, **kw), progress=False)
        entry = {
            "label": label,
            "T": 16,
            **kw,
            "modes": [run_mode(snn, b, m) for m in ("exact", "int")],
        }
        out["ablations"].append(entry)
        _print_entry(name, entry, ann)
    return out


def sweep(snn, b: Bench, values: list[int], with_int: bool) -> dict:
    res: dict = {"T_w": values, "pipelined": [], "int": []}
    for tw in values:
        s = with_wait(snn, tw)
        res["pipelined"].append(run_mode(s, b, "pipelined")["accuracy"])
        if with_int:
            res["int"].append(run_mode(s, b, "int")["accuracy"])
    return res


def _print_entry(name: str, entry: dict, ann: float) -> None:
    head = entry.get("label") or f"T={entry['T']} Q={entry['Q']}"
    for r in entry["modes"]:
        print(
            f"[{name}] {head:<32} {r['mode']:<9} {r['accuracy']:6.2f} % "
            f"(Δ {r['accuracy'] - ann:+.2f})  spikes/neuron {r['spikes_per_neuron']:.3f}  "
            f"E_ANN/E_SNN {r['energy_ratio_fp32']:.2f} (FP32) {r['energy_ratio_int8']:.2f} "
            f"(INT8)  {r['seconds']:.1f} s",
            flush=True,
        )


def markdown(res: dict) -> str:
    ann = res["ann_accuracy"]
    lines = [
        f"# Accuracy: {res['net']}",
        "",
        f"{res['note']}; calibration on "
        f"{res['calibration_images']} training images; INT8 weights, A = 32; measured "
        f"on {res['machine']}.",
        "",
        f"ANN: **{ann:.2f} %**",
        "",
        "| T | Q | T_w | mode | accuracy % | Δ vs ANN | spikes/neuron | adds/image "
        "| E_ANN/E_SNN FP32 | INT8 |",
        "|" + "---|" * 10,
    ]
    for c in res["configs"]:
        for r in c["modes"]:
            lines.append(_md_row(str(c["T"]), str(c["Q"]), str(c["T_w"]), r, ann))
    lines += [
        "",
        "Pipelined (T_w = T) against exact, hidden-neuron spikes identical: "
        + ", ".join(
            f"T={c['T']}: {100 * c['pipelined_equals_exact_spike_fraction']:.3f} %"
            for c in res["configs"]
        )
        + " (first 100 images).",
        "",
        "## Ablations (T = 16)",
        "",
        "| ablation | mode | accuracy % | Δ vs ANN | spikes/neuron | E_ANN/E_SNN FP32 |",
        "|---|---|---|---|---|---|",
    ]
    for a in res["ablations"]:
        for r in a["modes"]:
            lines.append(
                f"| {a['label']} | {r['mode']} | {r['accuracy']:.2f} | "
                f"{r['accuracy'] - ann:+.2f} | {r['spikes_per_neuron']:.3f} | "
                f"{r['energy_ratio_fp32']:.2f} |"
            )
    sw = res.get("wait_sweep")
    if sw:
        lines += [
            "",
            "## Accuracy against the wait timestep (T = 16, Q = 1.3; Table VIII)",
            "",
            "| T_w | " + " | ".join(map(str, sw["T_w"])) + " |",
            "|---|" + "---|" * len(sw["T_w"]),
        ]
        for m in ("pipelined", "int"):
            if sw[m]:
                lines.append(f"| {m} | " + " | ".join(f"{a:.2f}" for a in sw[m]) + " |")
    return "\n".join(lines) + "\n"


def _md_row(T, Q, T_w, r, ann) -> str:
    return (
        f"| {T} | {Q} | {T_w} | {r['mode']} | {r['accuracy']:.2f} | "
        f"{r['accuracy'] - ann:+.2f} | {r['spikes_per_neuron']:.3f} | "
        f"{r['adds_per_image']:,.0f} | {r['energy_ratio_fp32']:.2f} | "
        f"{r['energy_ratio_int8']:.2f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["digits", "resnet20", "mnist", "resnet32"])
    p.add_argument("--calib-images", type=int, default=1024)
    p.add_argument("--sweep", type=int, nargs="+", default=[4, 6, 8, 10, 12, 14, 16])
    p.add_argument(
        "--sweep-int",
        nargs="*",
        default=["digits", "resnet20"],
        help="nets whose T_w sweep also runs int mode (slow)",
    )
    args = p.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.nets:
        t0 = time.perf_counter()
        res = bench(name, args)
        res["machine"] = (
            f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}"
        )
        res["seconds"] = time.perf_counter() - t0
        (RESULTS / f"accuracy_{name}.json").write_text(json.dumps(res, indent=2))
        (RESULTS / f"accuracy_{name}.md").write_text(markdown(res))
        print(f"[{name}] done in {res['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
