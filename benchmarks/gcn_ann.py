"""The ANN baselines of the GCN conversion: test accuracy of the trained 2-layer GCN on Cora and
Citeseer (Kipf & Welling 2017) and of Text GCN on R8 and MR (Yao et al. 2019), over several
seeds, next to the published values, with the graph build and training times (CPU, 1 thread).

    .venv/bin/python benchmarks/gcn_ann.py --seeds 5

Seed s initialises the weights and the dropout masks; for Text GCN it also draws the
10 % validation split of the training documents (as the reference code reshuffles every run).
Writes benchmarks/results/gcn_ann.json and gcn_ann.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from onespike import gcn, graphs

RESULTS = Path(__file__).resolve().parent / "results"
#: Published test accuracies (percent): Kipf & Welling (2017) Table 2; Yao et al. (2019) Table 2.
PUBLISHED = {
    "cora": (81.5, "Kipf & Welling 2017"),
    "citeseer": (70.3, "Kipf & Welling 2017"),
    "r8": (97.07, "Yao et al. 2019 (± 0.10)"),
    "mr": (76.74, "Yao et al. 2019 (± 0.20)"),
}
#: The one-spike paper's own ANN accuracy (Table V), where it reports one.
ONESPIKE_PAPER_ANN = {"r8": 97.06, "mr": 75.93}


def run(name: str, seeds: int) -> dict:
    t0 = time.perf_counter()
    data = graphs.load_graph(name)
    build_s = time.perf_counter() - t0
    runs = []
    for seed in range(seeds):
        d = graphs.resplit_validation(data, seed) if data.identity_features else data
        torch.manual_seed(seed)
        model = gcn.build_model(d)
        _, hist = gcn.train_gcn(d, model, seed=seed)
        runs.append(
            {
                "seed": seed,
                "test_acc": hist["test_acc"],
                "val_acc_returned": hist["val_acc"][hist["returned_epoch"] - 1],
                "epochs_run": hist["epochs_run"],
                "returned_epoch": hist["returned_epoch"],
                "train_seconds": hist["seconds"],
            }
        )
        print(name, runs[-1], flush=True)
    accs = [r["test_acc"] for r in runs]
    secs = [r["train_seconds"] for r in runs]
    return {
        "nodes": data.num_nodes,
        "adj_nnz": data.info["adj_nnz"],
        "classes": data.num_classes,
        "train_val_test": [len(data.train_index), len(data.val_index), len(data.test_index)],
        "model": type(model).__name__,
        "hidden": model.lin0.out_features,
        "hyper": hist["hyper"] | {"seed": f"0..{seeds - 1}"},
        "build_seconds": build_s,
        "test_acc_mean": statistics.fmean(accs),
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "test_acc_min": min(accs),
        "test_acc_max": max(accs),
        "train_seconds_mean": statistics.fmean(secs),
        "epochs_run_mean": statistics.fmean(r["epochs_run"] for r in runs),
        "published": PUBLISHED[name][0],
        "published_source": PUBLISHED[name][1],
        "onespike_paper_ann": ONESPIKE_PAPER_ANN.get(name),
        "runs": runs,
    }


def markdown(res: dict) -> str:
    lines = [
        "# GCN ANN baselines (benchmarks/gcn_ann.py)",
        "",
        f"Measured on CPU, 1 thread ({res['machine']}), {res['seeds']} seeds per data set "
        f"(0..{res['seeds'] - 1}), torch {res['torch']}.",
        "",
        "| data set | model | nodes | Â nnz | test acc. (mean ± std) | min–max | published "
        "| build s | train s / seed (min–max) | epochs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in res["datasets"].items():
        pub = f"{r['published']:.2f}"
        if r["onespike_paper_ann"] is not None:
            pub += f" (one-spike paper: {r['onespike_paper_ann']:.2f})"
        lines.append(
            f"| {name} | {r['model']} ({r['hidden']} hidden) | {r['nodes']:,} | "
            f"{r['adj_nnz']:,} | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} | "
            f"{r['test_acc_min']:.2f}–{r['test_acc_max']:.2f} | {pub} | "
            f"{r['build_seconds']:.2f} | {r['train_seconds_mean']:.1f} "
            f"({min(x['train_seconds'] for x in r['runs']):.1f}–"
            f"{max(x['train_seconds'] for x in r['runs']):.1f}) | "
            f"{r['epochs_run_mean']:.0f} |"
        )
    lines += [
        "",
        "Published: Kipf & Welling (2017) Table 2 (Cora, Citeseer; mean of 100 random "
        "initialisations), Yao et al. (2019) Table 2 (R8, MR; mean ± std of 10 runs). "
        "GCN: 16 hidden, dropout 0.5, Adam lr 0.01, weight decay 5e-4 on the first layer, "
        "200 epochs, last epoch's weights. Text GCN: 200 hidden, dropout 0.5, Adam lr 0.02, "
        "up to 200 epochs, stop after 10 epochs without a new lowest validation loss and keep "
        "the best epoch's weights; 10 % of the training documents (drawn with the seed) "
        "validate. Build: loading the .npz (Planetoid) or building TF-IDF + PMI and Â from the "
        "text (Text GCN). Train: the training loop of one seed, validation every epoch. "
        "Times are wall-clock on a CPU shared with other jobs, so they vary from run to run.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--datasets", nargs="+", default=["cora", "citeseer", "r8", "mr"])
    p.add_argument(
        "--markdown-only", action="store_true", help="rewrite gcn_ann.md from gcn_ann.json"
    )
    args = p.parse_args()
    if args.markdown_only:
        res = json.loads((RESULTS / "gcn_ann.json").read_text())
        (RESULTS / "gcn_ann.md").write_text(markdown(res))
        return
    torch.set_num_threads(1)
    # the first torch.optim.Adam imports torch._dynamo (seconds): pay it outside the timings
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    res = {
        "seeds": args.seeds,
        "threads": 1,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "datasets": {name: run(name, args.seeds) for name in args.datasets},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gcn_ann.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "gcn_ann.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
