"""Graph networks on the command line: `onespike gcn` (train, convert, evaluate) and the graph
side of `onespike eval` / `onespike convert` (a graph data set name as --data / --calib)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import golden
from converter import SnnModel, convert

GRAPH_DATA = ("cora", "citeseer", "r8", "mr")
MODES = ("ann", "exact", "int", "pipelined")


def add_parser(sub, add_conversion_options) -> None:
    from onespike.cli import DEFAULTS_HELP

    g = sub.add_parser(
        "gcn",
        help="train a GCN (Cora, Citeseer) or Text GCN (R8, MR), convert and evaluate it",
        description="Train the published 2-layer model on DATA (Kipf & Welling's GCN on Cora "
        "and Citeseer, Yao et al.'s Text GCN on R8 and MR; seeded), convert it (calibration: "
        "the graph itself) and report the test-node accuracy of the ANN and of the SNN in "
        "every golden mode. Writes DIR/<data>_snn.safetensors, DIR/<data>_ann.safetensors "
        "(the trained state dict), DIR/results.json and DIR/report.md.",
    )
    g.add_argument("data", choices=GRAPH_DATA, help="the graph (../shared/data or $ONESPIKE_DATA)")
    g.add_argument("--seed", type=int, default=0, help="training seed " + DEFAULTS_HELP)
    g.add_argument("-o", "--out", type=Path, default=Path("gcn-report"), help=DEFAULTS_HELP)
    add_conversion_options(g)


def is_graph_data(spec: str) -> bool:
    return isinstance(spec, str) and spec.strip().lower() in GRAPH_DATA


def graph_features(spec: str) -> torch.Tensor:
    """The node features of a named graph (the calibration input of a graph network)."""
    from onespike import graphs

    return graphs.load_graph(spec.strip().lower()).features()


def evaluate_graph(snn: SnnModel, spec: str, modes: list[str], device=None) -> list[dict]:
    """Test-node accuracy of a graph SNN on the named graph, per golden mode."""
    from onespike import graphs

    if snn.meta.get("graph") is None:
        raise ValueError(
            f"--data {spec}: a graph data set, but the artifact is not a graph network"
        )
    data = graphs.load_graph(spec.strip().lower())
    if data.num_nodes != snn.meta["graph"]["nodes"]:
        raise ValueError(
            f"--data {spec} has {data.num_nodes} nodes, the artifact's graph "
            f"{snn.meta['graph']['nodes']}"
        )
    return _rows(snn, data, modes, None, device)


def _rows(snn, data, modes, ann_acc, device) -> list[dict]:
    x = data.features()
    rows = []
    if ann_acc is not None:
        rows.append({"mode": "ANN (PyTorch)", "accuracy": ann_acc, "seconds": None})
    for mode in modes:
        t = time.perf_counter()
        r = golden.run(snn, x, mode, device=device, keep_spikes=False)
        logits = r.logits_int.double() if mode == "int" else r.logits
        row = {"mode": mode, "accuracy": data.accuracy(logits), "seconds": time.perf_counter() - t}
        if mode != "ann":
            row["spikes_per_neuron"] = r.spikes_per_neuron()
            row["adds_per_image"] = float(sum(r.counts["adds"]))
            row["energy_ratio_fp32"] = golden.energy_ratio(r.counts, "fp32")
            row["energy_ratio_int8"] = golden.energy_ratio(r.counts, "int8")
        rows.append(row)
    refs = [r["accuracy"] for r in rows if r["mode"] in ("ANN (PyTorch)", "ann")]
    ref = refs[0] if refs else None
    for row in rows:
        row["delta"] = None if ref is None else row["accuracy"] - ref
        row["images_per_s"] = None
    return rows


def run_gcn(args: argparse.Namespace, config) -> int:
    """Train, convert, evaluate and write the report folder of `onespike gcn`."""
    from safetensors.torch import save_file

    from onespike import gcn, graphs
    from onespike.flows import format_table

    data = graphs.load_graph(args.data)
    if data.identity_features:
        data = graphs.resplit_validation(data, args.seed)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model, hist = gcn.train_gcn(data, gcn.build_model(data), seed=args.seed)
    train_s = time.perf_counter() - t0
    x = data.features()
    with torch.no_grad():
        ann_acc = data.accuracy(model(x))
    snn = convert(model, x, config, progress=False, name=type(model).__name__)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    art = snn.save(out / f"{args.data}_snn.safetensors")
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "adj"}
    save_file(state, str(out / f"{args.data}_ann.safetensors"))
    modes = [m for m in MODES if m != "int" or snn.is_quantized]
    rows = _rows(snn, data, modes, ann_acc, None)
    table = format_table(rows)
    test_nodes = int((data.labels[data.test_index] >= 0).sum())
    head = (
        f"{args.data}: {type(model).__name__}, {data.num_nodes:,} nodes, {test_nodes:,} test "
        f"nodes; trained {hist['epochs_run']} epochs in {train_s:.0f} s (seed {args.seed})"
    )
    (out / "results.json").write_text(
        json.dumps({"data": args.data, "seed": args.seed, "rows": rows}, indent=2) + "\n"
    )
    (out / "report.md").write_text(
        f"# onespike gcn {args.data}\n\n{head}\n\nAccuracy over the test nodes; the SNN runs "
        f"the whole graph.\n\n{table}\n\n{snn.summary()}\n"
    )
    print(head)
    print(table)
    print(f"wrote {art}, {out / 'report.md'}")
    return 0
