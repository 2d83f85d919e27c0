"""Accuracy of the converted CIFAR ResNets over disjoint calibration sets, paired on the same
test images: for each calibration mode (ConversionConfig.calibration) and each of --subsets
disjoint sets of --calib-images training images, SNN accuracy in each golden mode; reported as
mean ± std over the sets of (SNN − ANN) and of the paired difference between the modes.

    .venv/bin/python benchmarks/accuracy_spread.py --nets 20 32 44 56 \\
        --configs percentile:16:1.3 bias:16:1.3 weights:24:1.2:99.999 --modes exact int

A config is calibration:T:Q[:percentile] (ConversionConfig's fields; the percentile of λ is
99.99 unless given).

Modes are golden's, plus ``exact_single_input``: the paper's Table VII ablation (exact mode,
the input coded with a single spike instead of binary coding; ``single_spike_inputs``).

Results accumulate in benchmarks/results/<out>.json (a rerun skips what is there) and
<out>.md; progress goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import golden
from converter import ConversionConfig
from converter import calibration as cal
from converter.convert import build, calibrate
from converter.frontend import lower
from converter.model import canonical, validate
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


def _ms(vals: list[float]) -> dict:
    return {
        "mean": statistics.mean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


def _fmt(s: dict) -> str:
    if s["n"] == 1:
        return f"{s['mean']:+.2f} (1 set)"
    return f"{s['mean']:+.2f} ± {s['std']:.2f}" + ("" if s["n"] >= 4 else f" ({s['n']} sets)")


def summarise(out: dict) -> list[str]:
    lines = [
        "# Accuracy over disjoint calibration sets (`benchmarks/accuracy_spread.py`)",
        "",
        f"{out['images']} CIFAR-10 test images (the same for every run), INT8 weights; "
        f"calibration sets: disjoint slices of {out['calib_images']} training images. Entries: "
        "mean ± std over the calibration sets of the accuracy difference in points; "
        "spikes per hidden neuron (exact mode) as mean over the sets.",
        "",
    ]
    for net, res in out["nets"].items():
        ann = res["ann"]
        lines += [f"## {net}: ANN {ann:.2f} %", ""]
        cfgs = list(res["runs"])
        modes = sorted({m for c in cfgs for r in res["runs"][c].values() for m in r["acc"]})
        modes = [m for m in ("exact", "pipelined", "int", SINGLE_INPUT) if m in modes]
        lines.append(
            "| calibration:T:Q | sets | "
            + " | ".join(f"{m} − ANN" for m in modes)
            + " | int − exact | spikes/neuron | per set (exact / int %) |"
        )
        lines.append("|" + "---|" * (len(modes) + 5))
        for c in cfgs:
            runs = [r for r in res["runs"][c].values() if r["acc"]]
            if not runs:
                continue
            cells = [
                _fmt(_ms(d)) if (d := [r["acc"][m] - ann for r in runs if m in r["acc"]]) else ""
                for m in modes
            ]
            both = [r for r in runs if "int" in r["acc"] and "exact" in r["acc"]]
            ie = _fmt(_ms([r["acc"]["int"] - r["acc"]["exact"] for r in both])) if both else ""
            spn = statistics.mean(r.get("spikes_per_neuron", 0.0) for r in runs)
            per = ", ".join(
                " / ".join(f"{r['acc'][m]:.2f}" for m in ("exact", "int") if m in r["acc"])
                for r in runs
            )
            lines.append(
                f"| {c} | {len(runs)} | " + " | ".join(cells) + f" | {ie} | {spn:.3f} | {per} |"
            )
        if len(cfgs) > 1:
            base = cfgs[0]
            lines += ["", f"Paired on the calibration set, difference to `{base}` (points):", ""]
            lines.append("| calibration:T:Q | " + " | ".join(modes) + " |")
            lines.append("|" + "---|" * (len(modes) + 1))
            for c in cfgs[1:]:
                keys = sorted(set(res["runs"][c]) & set(res["runs"][base]))
                cells = []
                for m in modes:
                    d = [
                        res["runs"][c][k]["acc"][m] - res["runs"][base][k]["acc"][m]
                        for k in keys
                        if m in res["runs"][c][k]["acc"] and m in res["runs"][base][k]["acc"]
                    ]
                    cells.append(_fmt(_ms(d)) if d else "")
                lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


#: The paper's Table VII ablation as a mode: exact mode on inputs whose binary code keeps
#: only its first (most significant) spike.
SINGLE_INPUT = "exact_single_input"


def single_spike_inputs(snn, x: torch.Tensor) -> torch.Tensor:
    """Inputs that the input layer codes with one spike: the naive single-spike approximation
    of binary coding (paper §III-A and Table VII), the T_in-bit code of each input floored to
    its highest set bit (its first spike), mapped back through the input layer's gain and
    offset so that golden's binary coding of the result is exactly that one spike (the
    float32 round trip moves v by far less than half a code step)."""
    lay = snn.layers[0]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    g = torch.as_tensor(lay.input_gain).double().reshape(shape)
    o = torch.as_tensor(lay.input_offset).double().reshape(shape)
    v = x.double() * g + o
    if not lay.signed:
        v = v.clamp(min=0)
    code = torch.round(v.abs() * 2**lay.T).clamp(max=2**lay.T - 1)
    first = torch.where(code > 0, torch.exp2(torch.floor(torch.log2(code.clamp(min=1)))), 0.0)
    return ((torch.sign(v) * first / 2**lay.T - o) / g).float()


def convert_variants(model, batches, cfgs: dict) -> dict:
    """converter.convert for several calibration modes at one (T, Q): the front end and the
    percentile statistics, which do not depend on the mode, are computed once."""
    first = next(iter(cfgs.values()))
    model.eval()
    out = {}
    with torch.no_grad():
        raw, _ = lower(model, batches[0][:1], (first.input_mean, first.input_std))
        stats, means = calibrate(raw, batches, first, False)
        for name, cfg in cfgs.items():
            lay, st = cal.correct(raw, batches, stats, cfg)
            snn = canonical(build(lay, st, means, cfg, type(model).__name__))
            validate(snn)
            out[name] = snn
    return out


def merge(out_name: str, names: list[str]) -> None:
    """Merge runs of other result files (e.g. int mode run in a second process)."""
    path = RESULTS / f"{out_name}.json"
    out = json.loads(path.read_text())
    for name in names:
        other = json.loads((RESULTS / f"{name}.json").read_text())
        assert other["images"] == out["images"] and other["calib_images"] == out["calib_images"]
        for net, res in other["nets"].items():
            dst = out["nets"].setdefault(net, {"ann": res["ann"], "runs": {}})
            for c, runs in res["runs"].items():
                for k, row in runs.items():
                    d = dst["runs"].setdefault(c, {}).setdefault(k, {"acc": {}})
                    d["acc"].update(row["acc"])
                    for key, v in row.items():
                        if key != "acc":
                            d.setdefault(key, v)
    path.write_text(json.dumps(out, indent=1))
    (RESULTS / f"{out_name}.md").write_text("\n".join(summarise(out)) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", type=int, nargs="+", default=[20, 32, 44, 56])
    p.add_argument("--configs", nargs="+", default=["percentile:16:1.3", "bias:16:1.3"])
    p.add_argument("--modes", nargs="+", default=["exact", "int"])
    p.add_argument("--subsets", type=int, default=4)
    p.add_argument("--calib-images", type=int, default=1024)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="accuracy_spread")
    p.add_argument(
        "--merge-from",
        nargs="+",
        default=[],
        help="only merge these result files (names in results/) into --out and rewrite its md",
    )
    args = p.parse_args()
    if args.merge_from:
        merge(args.out, args.merge_from)
        return
    torch.set_num_threads(args.threads)
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, yte = data.load_cifar10_subset("test")
    if args.test_images:
        xte, yte = xte[: args.test_images], yte[: args.test_images]
    xtr, xte = data.normalize(xtr, mean, std), data.normalize(xte, mean, std)
    path = RESULTS / f"{args.out}.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out.update(
        images=len(xte),
        calib_images=args.calib_images,
        machine=f"{platform.machine()}, {args.threads} CPU threads",
    )
    out.setdefault("nets", {})
    nets = {}
    for depth in args.nets:
        model = models.load_cifar_resnet(depth)
        with torch.no_grad():
            ann = 100.0 * (model(xte).argmax(1) == yte).double().mean().item()
        res = out["nets"].setdefault(f"resnet{depth}", {"ann": ann, "runs": {}})
        res["ann"] = ann
        nets[f"resnet{depth}"] = (model, res)
    # calibration set by calibration set, so that every net has as many sets as time allowed
    for k in range(args.subsets):
        calib = xtr[k * args.calib_images : (k + 1) * args.calib_images]
        if len(calib) < args.calib_images:
            print(f"only {k} calibration sets of {args.calib_images} images", flush=True)
            break
        for net, (model, res) in nets.items():
            todo = {}
            for c in args.configs:
                runs = res["runs"].setdefault(c, {})
                row = runs.setdefault(str(k), {"acc": {}})
                if [m for m in args.modes if m not in row["acc"]]:
                    todo[c] = row
            groups: dict = {}
            for c in todo:
                calname, t, q, *pct = c.split(":")  # an optional 4th field: the percentile
                cfg = ConversionConfig(
                    T=int(t), Q=float(q), input_mean=mean, input_std=std, calibration=calname,
                    **({"percentile": float(pct[0])} if pct else {}),
                )  # fmt: skip
                groups.setdefault((t, q, *pct), {})[c] = cfg
            for cfgs in groups.values():
                t0 = time.time()
                snns = convert_variants(model, list(calib.split(256)), cfgs)
                conv_s = time.time() - t0
                for c, snn in snns.items():
                    row = todo[c]
                    row["convert_s"] = conv_s
                    for m in [m for m in args.modes if m not in row["acc"]]:
                        t1 = time.time()
                        if m == SINGLE_INPUT:
                            r = golden.run(snn, single_spike_inputs(snn, xte), "exact",
                                           keep_spikes=False)  # fmt: skip
                        else:
                            r = golden.run(snn, xte, m, keep_spikes=False)
                        row["acc"][m] = r.accuracy(yte)
                        row[f"{m}_s"] = time.time() - t1
                        if m == "exact" or "spikes_per_neuron" not in row:
                            row["spikes_per_neuron"] = r.spikes_per_neuron()
                    print(net, c, k, json.dumps(row), flush=True)
                    path.write_text(json.dumps(out, indent=1))
                    (RESULTS / f"{args.out}.md").write_text("\n".join(summarise(out)) + "\n")


if __name__ == "__main__":
    main()
