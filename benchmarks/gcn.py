"""GCN-to-SNN conversion on real graphs (the paper's Table V): Text GCN on R8 and MR, Kipf's
GCN on Cora and Citeseer.

For each data set and seed: train the ANN (onespike.gcn, the published hyper-parameters),
convert it (calibration: the graph itself) at (T 16, Q 1.3) and (T 24, Q 1.2), and run golden
``exact``, ``int`` (INT8 per-node weights, 16-bit Â) and ``pipelined`` (T_w = T) on the whole
graph; accuracy over the test nodes, paired with the ANN's on the same nodes. Also spikes per
neuron and Eq. 6 E_ANN/E_SNN (FP32, INT8) next to the paper's.

    .venv/bin/python benchmarks/gcn.py --seeds 3

Writes benchmarks/results/gcn.json (per data set: ``ann``, ``exact``, ``int``, ``pipelined``,
mean accuracy in percent at T 16 / Q 1.3, and every run under ``configs``) and gcn.md.
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
from converter import ConversionConfig, convert
from onespike import gcn, graphs

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = {"T16_Q1.3": (16, 1.3), "T24_Q1.2": (24, 1.2)}
MODES = ("exact", "int", "pipelined")
#: The one-spike paper, Table V (T 16, Q 1.3 as its CNN headline; ANN -> SNN accuracy and the
#: Eq. 6 ratio, FP32). Cora and Citeseer are not in the paper.
PAPER = {
    "r8": {"ann": 97.06, "snn": 96.44, "ratio_fp32": 6.59},
    "mr": {"ann": 75.93, "snn": 75.09, "ratio_fp32": 4.53},
}
#: Accuracy targets of issue 11: SNN exact within this many points of its ANN; int within 0.3
#: more than exact.
TARGET = {"r8": 0.7, "mr": 0.9, "cora": 1.0, "citeseer": 1.0}


def run_seed(data: graphs.GraphData, seed: int) -> dict:
    d = graphs.resplit_validation(data, seed) if data.identity_features else data
    torch.manual_seed(seed)
    model, hist = gcn.train_gcn(d, gcn.build_model(d), seed=seed)
    x = d.features()
    with torch.no_grad():
        ann = d.accuracy(model(x))
    out = {"seed": seed, "ann": ann, "train_seconds": hist["seconds"], "configs": {}}
    for key, (t, q) in CONFIGS.items():
        t0 = time.perf_counter()
        snn = convert(model, x, ConversionConfig(T=t, Q=q), progress=False)
        row = {"convert_seconds": time.perf_counter() - t0}
        for mode in MODES:
            t0 = time.perf_counter()
            r = golden.run(snn, x, mode, keep_spikes=False)
            logits = r.logits_int.double() if mode == "int" else r.logits
            row[mode] = d.accuracy(logits)
            row[f"{mode}_seconds"] = time.perf_counter() - t0
            if mode == "int":
                row["spikes_per_neuron"] = r.spikes_per_neuron()
                row["energy_ratio_fp32"] = golden.energy_ratio(r.counts, "fp32")
                row["energy_ratio_int8"] = golden.energy_ratio(r.counts, "int8")
                row["adds"] = int(sum(r.counts["adds"]))
                row["ann_macs"] = int(sum(r.counts["ann_macs"]))
                row["energy_ratio_fp32_sparse_x"] = _sparse_x_ratio(r.counts, snn, x)
        out["configs"][key] = row
        print(data.name, seed, key, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return out


def _sparse_x_ratio(counts: dict, snn, x: torch.Tensor) -> float:
    """Eq. 6 (FP32) against an ANN that multiplies only the nonzero features (Kipf's own code
    uses a sparse X): layer 1's MACs become nnz(X) · F_out instead of N · F_in · F_out."""
    macs = counts["ann_macs"].astype("float64").copy()
    if not snn.meta["graph"]["one_hot"]:
        f_out = snn.layers[1].channels // (2 if snn.layers[1].rails else 1)
        macs[1] = float((x.to_dense() != 0).sum()) * f_out
    t = golden.ENERGY_TABLES["fp32"]
    return float(macs.sum() * t.mac_pj / (sum(counts["adds"]) * t.add_pj))


def summarise(name: str, runs: list[dict], data: graphs.GraphData) -> dict:
    def ms(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    res = {
        "nodes": data.num_nodes,
        "test_nodes": int((data.labels[data.test_index] >= 0).sum()),
        "adj_nnz": data.info.get("adj_nnz"),
        "model": "TextGCN (200 hidden)" if data.identity_features else "GCN (16 hidden)",
        "seeds": [r["seed"] for r in runs],
        "ann": ms([r["ann"] for r in runs])[0],
        "ann_std": ms([r["ann"] for r in runs])[1],
        "paper": PAPER.get(name),
        "target_exact_loss": TARGET[name],
        "configs": {},
        "runs": runs,
    }
    for key in CONFIGS:
        rows = [r["configs"][key] for r in runs]
        c = {}
        for mode in MODES:
            c[mode], c[f"{mode}_std"] = ms([row[mode] for row in rows])
            c[f"{mode}_minus_ann"], c[f"{mode}_minus_ann_std"] = ms(
                [row[mode] - r["ann"] for row, r in zip(rows, runs, strict=True)]
            )
            c[f"{mode}_seconds"] = ms([row[f"{mode}_seconds"] for row in rows])[0]
        ratios = ("energy_ratio_fp32", "energy_ratio_int8", "energy_ratio_fp32_sparse_x")
        for k in ("spikes_per_neuron", *ratios):
            c[k] = ms([row[k] for row in rows])[0]
        res["configs"][key] = c
    d = res["configs"]["T16_Q1.3"]
    res.update(exact=d["exact"], int=d["int"], pipelined=d["pipelined"])
    res["exact_target_met"] = -d["exact_minus_ann"] <= TARGET[name]
    res["int_target_met"] = d["exact_minus_ann"] - d["int_minus_ann"] <= 0.3
    return res


def markdown(results: dict, meta: dict) -> str:
    lines = [
        "# GCN-to-SNN conversion (benchmarks/gcn.py)",
        "",
        f"Measured on {meta['device']} ({meta['machine']}), torch {meta['torch']}, "
        f"seeds {meta['seeds']}, {meta['seconds']:.0f} s in all. Accuracy in percent over the "
        "test nodes (mean ± std over seeds); differences are paired per seed on the same nodes.",
        "",
        "| data set | model | ANN | T, Q | exact − ANN | int − ANN | pipelined − ANN | "
        "spikes/neuron | E_ANN/E_SNN FP32 | INT8 | FP32, sparse-X ANN | "
        "paper (ANN → SNN, FP32 ratio) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        p = r["paper"]
        paper = f"{p['ann']} → {p['snn']}, {p['ratio_fp32']}" if p else "—"
        for key, c in r["configs"].items():
            lines.append(
                f"| {name} | {r['model']} | {r['ann']:.2f} ± {r['ann_std']:.2f} | "
                f"{key.replace('_', ', ')} | "
                + " | ".join(
                    f"{c[f'{m}_minus_ann']:+.2f} ± {c[f'{m}_minus_ann_std']:.2f}" for m in MODES
                )
                + f" | {c['spikes_per_neuron']:.3f} | {c['energy_ratio_fp32']:.2f} | "
                f"{c['energy_ratio_int8']:.2f} | {c['energy_ratio_fp32_sparse_x']:.2f} | {paper} |"
            )
    lines += [
        "",
        "Targets (issue 11, T 16 / Q 1.3): exact within 0.7 (R8), 0.9 (MR), 1.0 (Cora, "
        "Citeseer) of the ANN; int within 0.3 more than exact.",
        "",
        "| data set | exact loss | target | met | int − exact | met |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, r in results.items():
        c = r["configs"]["T16_Q1.3"]
        lines.append(
            f"| {name} | {-c['exact_minus_ann']:.2f} | {r['target_exact_loss']} | "
            f"{'yes' if r['exact_target_met'] else 'no'} | "
            f"{c['int_minus_ann'] - c['exact_minus_ann']:+.2f} | "
            f"{'yes' if r['int_target_met'] else 'no'} |"
        )
    lines += [
        "",
        "Layers: X·W0 and H·W1 are signed (no ReLU before the aggregation), so each is a "
        "two-rail layer (max(v, 0), max(−v, 0)); Â·(·) is a graph synapse layer with 16-bit Â "
        "(docs/semantics.md §5). Spikes per neuron count one neuron per value (a rail pair). "
        "Eq. 6 counts the ANN's X·W0 as dense for Planetoid features (the sparse-X column: "
        "only the nonzero features, as Kipf's code multiplies) and as a lookup (one MAC per "
        "output) for one-hot features; the aggregation as nnz(Â)·F MACs. hwsim and rtl do "
        "not model graph layers yet, so no accelerator energy is given here.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["cora", "citeseer", "r8", "mr"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.perf_counter()
    results = {}
    for name in args.data:
        data = graphs.load_graph(name)
        runs = [run_seed(data, s) for s in range(args.seeds)]
        results[name] = summarise(name, runs, data)
    meta = {
        "device": str(golden.default_device()),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "seeds": f"0..{args.seeds - 1}",
        "seconds": time.perf_counter() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gcn.json").write_text(json.dumps({"meta": meta, **results}, indent=1) + "\n")
    (args.out / "gcn.md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
