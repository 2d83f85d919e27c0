"""The `onespike` command line: demo, convert, eval, info, simulate, verilog, cosim, export,
sweep."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULTS_HELP = "(default: %(default)s)"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _q(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Q must be a number in (1, 2] or 'auto', got {text!r}"
        ) from None


def _add_conversion_options(p: argparse.ArgumentParser) -> None:
    from converter.config import CALIBRATIONS

    g = p.add_argument_group("conversion (DESIGN Section 2)")
    g.add_argument(
        "--T", type=int, default=16, help="phases of every hidden layer " + DEFAULTS_HELP
    )
    g.add_argument(
        "--Q",
        type=_q,
        default=1.3,
        help="base in (1, 2], or 'auto' for the argmin of Eq. 5 " + DEFAULTS_HELP,
    )
    g.add_argument(
        "--T-w",
        dest="T_w",
        type=int,
        default=None,
        help="wait timestep: phase t is decided after input phase t + T_w "
        "(default: T, every decision sees all inputs)",
    )
    g.add_argument(
        "--T-in",
        dest="T_in",
        type=int,
        default=8,
        help="bits (phases) of the binary input coding " + DEFAULTS_HELP,
    )
    g.add_argument(
        "--no-threshold-shift",
        action="store_true",
        help="floor instead of round when coding an activation (ablation)",
    )
    g.add_argument(
        "--percentile",
        type=float,
        default=99.99,
        help="activation percentile for λ; 100 = maximum " + DEFAULTS_HELP,
    )
    g.add_argument(
        "--per-layer",
        action="store_true",
        help="one λ per layer instead of per channel for convolutions",
    )
    g.add_argument(
        "--weight-bits",
        type=int,
        default=8,
        help="integer weight width; 0 keeps float weights (no int mode) " + DEFAULTS_HELP,
    )
    g.add_argument(
        "--acc-bits",
        type=int,
        default=32,
        help="signed membrane potential width of the integer datapath " + DEFAULTS_HELP,
    )
    g.add_argument(
        "--input-mean",
        type=_floats,
        default=None,
        help="per-channel mean the model's inputs are normalised with, e.g. "
        "0.485,0.456,0.406 (raw data in [0, 1] are normalised before use and "
        "the normalisation is folded into the first layer)",
    )
    g.add_argument(
        "--input-std", type=_floats, default=None, help="per-channel std matching --input-mean"
    )
    g.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        default="auto",
        help="auto: weights for CNNs, percentile for graph networks; percentile: λ from the "
        "activation percentile; bias: then each layer's bias corrected in network order on "
        "the SNN; weights: then each layer's weights and bias refitted by least squares on the "
        "SNN's coded inputs (ResNets at T 16: up to +1.6 points exact, +2.6 int; the "
        "artifact keeps the ANN's own weights for golden ann mode); weights_shortcut: also each "
        "residual shortcut's per-channel gain (measured no better than weights); search: "
        "weights, with each layer's λ searched for the least decoded-output error " + DEFAULTS_HELP,
    )
    g.add_argument(
        "--input-scale",
        type=float,
        default=None,
        help="input range λ_in (default: calibration max × 2^T_in/(2^T_in − 1))",
    )


def _config(args):
    from converter import ConversionConfig

    return ConversionConfig(
        T=args.T,
        Q=args.Q,
        T_w=args.T_w,
        T_in=args.T_in,
        threshold_shift=not args.no_threshold_shift,
        percentile=args.percentile,
        per_channel=not args.per_layer,
        weight_bits=args.weight_bits or None,
        acc_bits=args.acc_bits,
        input_mean=args.input_mean,
        input_std=args.input_std,
        input_scale=args.input_scale,
        calibration=args.calibration,
    )


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``onespike <command>: error: ...``,
    exit status 2; ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="onespike",
        description="Convert a pretrained ReLU network into a one-spike SNN (single-spike "
        "phase coding with base manipulation) and evaluate it.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        help="the built-in example: train a digits CNN, convert, evaluate, write a report folder",
    )
    d.add_argument(
        "-o", "--out", type=Path, default=Path("demo-report"), help="report folder " + DEFAULTS_HELP
    )
    d.add_argument("--seed", type=int, default=0, help="training seed " + DEFAULTS_HELP)
    _add_conversion_options(d)

    c = sub.add_parser(
        "convert",
        help="convert your own model into an SnnModel artifact",
        description="Convert MODULE:FACTORY (a dotted module or a .py file "
        "and a function returning the nn.Module) with CHECKPOINT "
        "into a one-spike artifact.",
    )
    c.add_argument("model", help="MODULE:FACTORY, e.g. mynets.py:resnet20")
    c.add_argument(
        "checkpoint",
        help="state dict: .safetensors, or a torch file readable "
        "with weights_only=True; 'none' if the factory loads it",
    )
    c.add_argument(
        "--calib",
        required=True,
        help="calibration data: digits | mnist | cifar10 (train split, raw [0, 1]) "
        "or a .npz with x (and y), optionally with :N for the first N; cora | citeseer | r8 "
        "| mr: the node features of that graph, for a graph network",
    )
    c.add_argument(
        "--calib-batch", type=int, default=256, help="calibration batch size " + DEFAULTS_HELP
    )
    c.add_argument("-o", "--out", type=Path, required=True, help="artifact path (.safetensors)")
    _add_conversion_options(c)

    e = sub.add_parser("eval", help="accuracy, spikes and Eq. 6 energy of an artifact")
    e.add_argument("artifact", type=Path)
    e.add_argument(
        "--data",
        required=True,
        help="test data: digits | mnist | cifar10 (test split) or a .npz, with :N "
        "for the first N; raw [0, 1] data are normalised with the artifact's "
        "input mean/std; cora | citeseer | r8 | mr for a graph network (its test nodes)",
    )
    e.add_argument(
        "--mode",
        default="all",
        help="ann | exact | pipelined | int | all (comma-separated allowed) " + DEFAULTS_HELP,
    )
    e.add_argument("--model", help="MODULE:FACTORY of the ANN, to report its own accuracy")
    e.add_argument("--checkpoint", help="checkpoint for --model")
    e.add_argument("--batch-size", type=int, default=256, help=DEFAULTS_HELP)
    e.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    e.add_argument("--json", type=Path, help="also write the table as JSON here")
    from onespike.sweepcli import add_eval_options

    add_eval_options(e)

    from onespike.gcncli import add_parser as add_gcn

    add_gcn(sub, _add_conversion_options)

    i = sub.add_parser("info", help="print an artifact's layers and configuration")
    i.add_argument("artifact", type=Path)

    s = sub.add_parser(
        "simulate",
        help="cycles, queues and energy per layer on the hwsim accelerator model",
        description="Run an artifact on the cycle-level model of the one-spike accelerator "
        "(docs/architecture.md) and write a per-layer report: layers.csv, summary.json, "
        "report.md and PNG charts, with the Eq. 6 estimate and the ANN on an equally sized "
        "MAC array beside the detailed energy.",
    )
    s.add_argument("artifact", type=Path)
    arch = s.add_mutually_exclusive_group()
    arch.add_argument("--arch", type=Path, help="accelerator configuration (.toml)")
    arch.add_argument(
        "--preset",
        default=None,
        help="a shipped configuration: default | p4 | p16 | p64 | os16 | os64 (default: default)",
    )
    s.add_argument("--images", type=int, default=10, help="images to simulate " + DEFAULTS_HELP)
    s.add_argument(
        "--data",
        default=None,
        help="digits | mnist | cifar10 (test split) or a .npz; default: inferred from the "
        "input shape (1x8x8 digits, 1x28x28 mnist, 3x32x32 cifar10); raw [0, 1] data are "
        "normalised with the artifact's input mean/std",
    )
    s.add_argument(
        "--mode",
        choices=("layer", "pipelined"),
        default="layer",
        help="one engine for all layers, or one per layer " + DEFAULTS_HELP,
    )
    s.add_argument(
        "--stall-rate",
        type=float,
        default=0.0,
        help="output-queue back-pressure: probability that a cycle cannot pop " + DEFAULTS_HELP,
    )
    s.add_argument("--stall-seed", type=int, default=0, help=DEFAULTS_HELP)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("-o", "--out", type=Path, required=True, help="report folder")

    from onespike.rtlcli import add_parsers

    add_parsers(sub)
    from onespike.exportcli import add_parsers as add_export_parsers

    add_export_parsers(sub)
    from onespike.sweepcli import add_parsers as add_sweep_parsers

    add_sweep_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {
            "demo": _demo,
            "convert": _convert,
            "eval": _eval,
            "info": _info,
            "simulate": _simulate,
            "verilog": _verilog,
            "cosim": _cosim,
            "export": _export,
            "sweep": _sweep,
            "gcn": _gcn,
        }[args.command](args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        # a user error (bad file, model, parameter): one line, exit status 2
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"onespike {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _demo(args) -> int:
    from onespike.flows import demo, format_table

    res = demo(args.out, _config(args), seed=args.seed)
    print(f"one-spike demo: {res['example']}, {res['test_images']} test images")
    print(format_table(res["table"]))
    from hwsim.report import format_layer_table
    from onespike.flows import _hwsim_line

    print("\nOn the reference accelerator (hwsim, P = 16), 10 test images:")
    print(format_layer_table(res["hwsim"]["layers"]))
    print(_hwsim_line(res["hwsim"]))
    rtl = res["rtl"]
    print(f"\nVerilog (P = 16): {len(rtl['verilog'])} modules in {Path(rtl['verilog'][0]).parent}")
    if "error" not in rtl:
        print(rtl["table"])
        verdict = "every layer matches golden int and hwsim" if rtl["ok"] else "MISMATCH"
        print(f"co-simulation of {rtl['images']} image: {rtl['seconds']:.0f} s, {verdict}")
    print(
        f"\nreport: {args.out / 'report.md'} (artifact, results.json, accuracy_vs_tw.png, "
        "hwsim/, rtl/)"
    )
    if "error" in rtl:  # the proof step did not run: the demo failed
        print(f"onespike demo: error: co-simulation failed: {rtl['error']}", file=sys.stderr)
        return 1
    if not rtl["ok"]:
        print("onespike demo: error: the RTL does not match golden int / hwsim", file=sys.stderr)
        return 1
    return 0


def _convert(args) -> int:
    from converter import convert
    from onespike.data import load_dataset
    from onespike.flows import load_user_model, normalise_for
    from onespike.gcncli import graph_features, is_graph_data

    cfg = _config(args)
    ckpt = None if args.checkpoint.lower() == "none" else args.checkpoint
    model = load_user_model(args.model, ckpt)
    if is_graph_data(args.calib):  # a graph network calibrates on its graph's node features
        snn = convert(model, graph_features(args.calib), cfg, name=args.model)
        print(snn.summary())
        print(f"wrote {snn.save(args.out)} (graph network, T={cfg.T}, Q={cfg.q})")
        return 0
    x, _ = load_dataset(args.calib, "train")
    x = normalise_for(cfg, x)
    snn = convert(model, list(x.split(args.calib_batch)), cfg, name=args.model)
    path = snn.save(args.out)
    print(snn.summary())
    print(f"wrote {path} ({len(snn.layers)} layers, T={cfg.T}, Q={cfg.q}, T_w={cfg.t_w})")
    return 0


def _eval(args) -> int:
    import contextlib

    import golden
    from converter import load
    from golden.distributed import open_client
    from onespike.data import load_dataset
    from onespike.flows import evaluate, format_table, load_user_model, normalise_for

    snn = load(args.artifact)
    modes = list(golden.MODES) if args.mode == "all" else args.mode.split(",")
    if not snn.is_quantized and "int" in modes and args.mode == "all":
        modes.remove("int")
    from onespike.gcncli import evaluate_graph, is_graph_data

    if snn.meta.get("graph") is not None or is_graph_data(args.data):
        if not is_graph_data(args.data):
            raise ValueError(
                f"{args.artifact} is a graph network: --data must be one of cora, citeseer, r8, mr"
            )
        if args.model or args.workers is not None or args.scheduler is not None:
            raise ValueError("--model, --workers and --scheduler are for image data sets")
        rows = evaluate_graph(snn, args.data, modes, args.device)
        print(f"{args.artifact}: the test nodes of {args.data}")
        print(format_table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 0
    x, y = load_dataset(args.data, "test")
    x = normalise_for(snn, x)
    ann = load_user_model(args.model, args.checkpoint) if args.model else None
    sharded = args.workers is not None or args.scheduler is not None
    where = ""
    with open_client(args.workers, args.scheduler) if sharded else contextlib.nullcontext() as c:
        if c is not None:  # each mode sharded over the workers by whole batches
            where = f", sharded over {len(c.scheduler_info(n_workers=-1)['workers'])} Dask workers"
        rows = evaluate(
            snn, x, y, modes, ann=ann, batch_size=args.batch_size, device=args.device, client=c
        )
    print(f"{args.artifact}: {len(x)} images of {args.data}{where}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _gcn(args) -> int:
    from onespike.gcncli import run_gcn

    return run_gcn(args, _config(args))


def _info(args) -> int:
    from converter import load

    snn = load(args.artifact)
    print(snn.summary())
    for note in snn.meta.get("notes", []):  # what the conversion changed (converter.lower)
        print(f"note: {note}")
    print(json.dumps(snn.config, indent=2))
    return 0


def _simulate(args) -> int:
    from onespike.simreport import run_simulate

    return run_simulate(args)


def _verilog(args) -> int:
    from onespike.rtlcli import run_verilog

    return run_verilog(args)


def _cosim(args) -> int:
    from onespike.rtlcli import run_cosim

    return run_cosim(args)


def _export(args) -> int:
    from onespike.exportcli import run_export

    return run_export(args)


def _sweep(args) -> int:
    from onespike.sweepcli import run_sweep

    return run_sweep(args)


if __name__ == "__main__":
    sys.exit(main())
