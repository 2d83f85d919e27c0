"""Where the conversion loses accuracy, layer by layer: the decoded activation of every hidden
layer of the SNN (exact and int mode) against the ANN's activation on the same test images.

Per layer (units: the ANN's activation, relative to its RMS over the layer):
  code   the error of one-spike coding alone: the ANN's own activation coded and decoded
         with the layer's λ (no error from earlier layers);
  exact, int   the SNN's decoded activation (λ · Q^-t of its spike, 0 without) minus the
         ANN's: relative RMS error, bias (mean error / mean activation) and spread (std of
         the error / RMS activation);
  uf     underflow: share of the positive ANN activations below the lowest threshold
         c · Q^-(T-1) · λ (coded as no spike);
  sat    saturation: share of the positive ANN activations above λ (coded as λ);
  miss   share of the neurons the ANN activates above the lowest threshold that the exact
         SNN leaves silent.
The output layer row gives the logits' error (bias relative to the logits' RMS) and the share
of images whose SNN prediction differs from the ANN's.

    .venv/bin/python benchmarks/layer_error.py --nets 20 32 44 56 --images 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import golden
from converter import ConversionConfig, convert
from converter.calibration import code
from converter.convert import _forward_raw, _raw_input
from converter.frontend import lower
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


def _decode(sp: torch.Tensor, lay) -> torch.Tensor:
    table = torch.tensor([0.0] + [lay.Q**-t for t in range(lay.T)], dtype=torch.float64)
    lam = torch.as_tensor(lay.lam, dtype=torch.float64).reshape(-1, *([1] * (sp.dim() - 2)))
    return table[(sp.long() + 1)] * lam


def _stats(d: torch.Tensor, a: torch.Tensor, logits: bool = False) -> dict:
    e = d - a
    rms = a.pow(2).mean().sqrt().item() or 1.0
    mean = rms if logits else (a.mean().item() or 1.0)
    return {
        "rel_rmse": e.pow(2).mean().sqrt().item() / rms,
        "bias": e.mean().item() / mean,
        "spread": e.std().item() / rms,
    }


def diagnose(model, calib, x, config: ConversionConfig, modes=("exact", "int")) -> dict:
    snn = convert(model, calib, config, progress=False)
    norm = (config.input_mean, config.input_std) if config.input_mean else None
    with torch.no_grad():
        raw, _ = lower(model, x[:1], norm)
        acts = [
            torch.cat(parts)
            for parts in zip(
                *[_forward_raw(raw, _raw_input(b, raw[0], config)) for b in x.split(128)],
                strict=True,
            )
        ]
    runs = {m: golden.run(snn, x, m, keep_spikes=True) for m in modes}
    ann_pred = acts[-1].reshape(len(x), -1).argmax(1)
    rows = []
    for i, lay in enumerate(snn.layers):
        if lay.kind not in ("neuron", "output"):
            continue
        a = acts[i].double()
        row = {"layer": i, "name": lay.name, "neurons": lay.size}
        if lay.kind == "output":
            for m, r in runs.items():
                s = _stats(r.logits.double().reshape(a.shape), a, logits=True)
                row[m] = {**s, "pred_differs": (r.predictions != ann_pred).double().mean().item()}
            rows.append(row)
            continue
        lam = torch.as_tensor(lay.lam, dtype=torch.float64).reshape(-1, *([1] * (a.dim() - 2)))
        v = a / lam
        pos = a > 0
        npos = max(int(pos.sum()), 1)
        low = lay.shift * lay.Q ** -(lay.T - 1)
        row["code"] = _stats(code(v, lay.T, lay.Q, lay.shift) * lam, a)
        row["uf"] = int((pos & (v < low)).sum()) / npos
        row["sat"] = int((v > 1).sum()) / npos
        for m, r in runs.items():
            row[m] = _stats(_decode(r.spikes[i], lay), a)
        sp = runs[modes[0]].spikes[i]
        act = v >= low
        row["miss"] = int((act & (sp < 0)).sum()) / max(int(act.sum()), 1)
        rows.append(row)
    acc = {m: 100.0 * (r.predictions == ann_pred).double().mean().item() for m, r in runs.items()}
    spn = {m: r.spikes_per_neuron() for m, r in runs.items()}
    return {"rows": rows, "agreement_with_ann": acc, "spikes_per_neuron": spn}


def _md_table(res: dict, modes) -> list[str]:
    head = "| layer | code err | " + " | ".join(f"{m} err | {m} bias | {m} spread" for m in modes)
    lines = [head + " | uf | sat | miss |", "|" + "---|" * (4 + 3 * len(modes))]
    for r in res["rows"]:
        if "code" not in r:
            cells = " | ".join(
                f"{r[m]['rel_rmse']:.3f} | {r[m]['bias']:+.3f} | "
                f"{r[m]['spread']:.3f} (pred ≠ ANN {100 * r[m]['pred_differs']:.1f} %)"
                for m in modes
            )
            lines.append(f"| {r['name']} (logits) | | {cells} | | | |")
            continue
        cells = " | ".join(
            f"{r[m]['rel_rmse']:.3f} | {r[m]['bias']:+.3f} | {r[m]['spread']:.3f}" for m in modes
        )
        lines.append(
            f"| {r['layer']} {r['name']} | {r['code']['rel_rmse']:.3f} | {cells} | "
            f"{100 * r['uf']:.1f} % | {100 * r['sat']:.2f} % | {100 * r['miss']:.1f} % |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", type=int, nargs="+", default=[20, 32, 44, 56])
    p.add_argument("--images", type=int, default=256, help="test images (the first N)")
    p.add_argument("--calib-images", type=int, default=1024)
    p.add_argument("--calibration", nargs="+", default=["percentile"])
    p.add_argument("--out", default="layer_error")
    args = p.parse_args()
    torch.set_num_threads(2)
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, _ = data.load_cifar10_subset("test")
    calib = list(data.normalize(xtr[: args.calib_images], mean, std).split(256))
    x = data.normalize(xte[: args.images], mean, std)
    modes = ("exact", "int")
    path = RESULTS / f"{args.out}.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    if out.get("images") != len(x) or out.get("calib_images") != args.calib_images:
        out = {}
    out.update(images=len(x), calib_images=args.calib_images, T=16, Q=1.3)
    out.setdefault("nets", {})
    for depth in args.nets:
        model = models.load_cifar_resnet(depth)
        for cal in args.calibration:
            key = f"resnet{depth}" + ("" if cal == "percentile" else f"_{cal}")
            if key in out["nets"]:
                continue
            t0 = time.time()
            cfg = ConversionConfig(T=16, Q=1.3, input_mean=mean, input_std=std, calibration=cal)
            res = diagnose(model, calib, x, cfg, modes)
            res["seconds"] = time.time() - t0
            res["depth"], res["calibration"] = depth, cal
            hidden = [r for r in res["rows"] if "code" in r]
            res["summary"] = {
                m: {
                    "last_hidden_err": hidden[-1][m]["rel_rmse"],
                    "mean_bias": sum(r[m]["bias"] for r in hidden) / len(hidden),
                    "logit_err": res["rows"][-1][m]["rel_rmse"],
                }
                for m in modes
            }
            out["nets"][key] = res
            print(key, f"{res['seconds']:.0f}s", res["agreement_with_ann"], flush=True)
            path.write_text(json.dumps(out, indent=1))
            (RESULTS / f"{args.out}.md").write_text("\n".join(render(out, modes)) + "\n")


def render(out: dict, modes) -> list[str]:
    md = [
        "# Per-layer decoded-activation error (`benchmarks/layer_error.py`)",
        "",
        f"T = 16, Q = 1.3, INT8; calibration on the first {out['calib_images']} training "
        f"images, errors on the first {out['images']} test images. Errors are relative to the "
        "layer's RMS ANN activation (err: RMS error; bias: mean error over the mean "
        "activation; spread: std of the error); code err is the error of coding the ANN's own "
        "activation (no error from earlier layers); uf / sat are shares of the positive ANN "
        "activations below the lowest threshold / above λ; miss is the share of neurons the "
        "ANN drives above the lowest threshold that exact leaves silent.",
        "",
        "## Summary",
        "",
        "| net, calibration | agree with ANN exact / int % | mean code err | "
        "last hidden err exact / int | mean bias exact | logits err exact / int |",
        "|---|---|---|---|---|---|",
    ]
    for key, res in out["nets"].items():
        hidden = [r for r in res["rows"] if "code" in r]
        code_err = sum(r["code"]["rel_rmse"] for r in hidden) / len(hidden)
        s = res["summary"]
        agree = res["agreement_with_ann"]
        md.append(
            f"| {key} | {agree['exact']:.1f} / {agree['int']:.1f} | {code_err:.3f} | "
            f"{s['exact']['last_hidden_err']:.3f} / {s['int']['last_hidden_err']:.3f} | "
            f"{s['exact']['mean_bias']:+.3f} | "
            f"{s['exact']['logit_err']:.3f} / {s['int']['logit_err']:.3f} |"
        )
    for key, res in out["nets"].items():
        md += ["", f"## {key}", ""]
        md.append(
            "Agreement of the SNN's prediction with the ANN's: "
            + ", ".join(f"{m} {v:.1f} %" for m, v in res["agreement_with_ann"].items())
            + "; spikes per neuron: "
            + ", ".join(f"{m} {v:.3f}" for m, v in res["spikes_per_neuron"].items())
            + "."
        )
        md += [""] + _md_table(res, modes)
    return md


if __name__ == "__main__":
    main()
