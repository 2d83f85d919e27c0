"""`onespike verilog` and `onespike cosim`: the accelerator as Verilog, proven against golden."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onespike.simreport import load_arch, load_images


def add_parsers(sub) -> None:
    """The ``verilog`` and ``cosim`` subcommands of ``onespike``."""
    from onespike.cli import DEFAULTS_HELP

    v = sub.add_parser(
        "verilog",
        help="the accelerator's Verilog for an artifact, as a folder to take away",
        description="Write one self-contained folder: rtl/ (the whole accelerator, "
        "rtl.Accelerator, or rtl.OsAccelerator for the output_stationary dataflow, as one "
        "Verilog top onespike_accel with its memories initialised, a "
        "JSON of its ports and register map, the Verilator lint waivers), mem/ (memory images, "
        "$readmemh hex), tb/ (a self-checking Verilog bench that streams each image's input "
        "events through the AXI4-Stream port and checks every layer's spikes, the potentials, "
        "the class and the cycles, with its data files; the cocotb bench with its case, a "
        "Makefile and run.py), reports/ (hwsim's cycle and energy estimates, Yosys's cell, "
        "flip-flop and memory-bit counts of the top) and a FuseSoC core <name>.core with "
        "targets sim (Icarus) and lint (Verilator). With --layer N or --all: the per-layer "
        "engines instead (module onespike_layer<i> each, a wrapper holding them, per-layer "
        "benches; also the package of a graph network the accelerator refuses) "
        "(docs/architecture.md §10 and §14, rtl/package.py).",
    )
    v.add_argument("artifact", type=Path)
    _arch_options(v)
    which = v.add_mutually_exclusive_group()
    which.add_argument(
        "--layer", type=int, help="one layer's engine alone (index, see `onespike info`)"
    )
    which.add_argument(
        "--all",
        action="store_true",
        help="every supported layer's engine on its own (the per-layer package; default: the "
        "whole accelerator)",
    )
    v.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    v.add_argument("--images", type=int, default=2, help="images of the benches " + DEFAULTS_HELP)
    v.add_argument(
        "--data",
        default=None,
        help="digits | mnist | cifar10 | .npz (default: from the shape, else random images); "
        "cora | citeseer | r8 | mr: a graph network's node features (default: from its node "
        "count)",
    )
    v.add_argument("--name", default=None, help="core and wrapper name (default: the artifact's)")

    c = sub.add_parser(
        "cosim",
        help="co-simulate the Verilog against golden int (spikes) and hwsim (cycles)",
        description="Run the images through the whole accelerator (rtl.Accelerator, or "
        "rtl.OsAccelerator for the output_stationary dataflow; one "
        "Verilog top: the input events through its AXI4-Stream port, one wait for done, every "
        "layer's spikes read back through its debug port) under cocotb, and check per layer "
        "that the spikes (output layer: potentials and class) equal golden int and the engine "
        "cycles and counters equal hwsim's, and the controller's total cycles hwsim's image "
        "latency (docs/architecture.md §14). With --layer, run those layers one by one on "
        "their own engines instead, each fed the RTL spikes of its source (also the flow of "
        "graph networks the accelerator refuses; WAVES=1 writes waveforms). A "
        "mismatch names the layer, the first neuron and the phase that differ (exit status 1).",
    )
    c.add_argument("artifact", type=Path)
    _arch_options(c)
    c.add_argument("--images", type=int, default=2, help="test images " + DEFAULTS_HELP)
    c.add_argument(
        "--data",
        default=None,
        help="digits | mnist | cifar10 | .npz (default: from the shape); cora | citeseer | r8 "
        "| mr: a graph network's node features, one graph (default: from its node count)",
    )
    c.add_argument(
        "--layer",
        type=int,
        action="append",
        help="co-simulate this layer on its own engine (repeatable), not the whole accelerator",
    )
    c.add_argument(
        "--sim",
        choices=("icarus", "verilator"),
        default=None,
        help="simulator (default: $SIM, else icarus)",
    )
    c.add_argument(
        "--stall-rate",
        type=float,
        default=0.0,
        help="output back-pressure: probability that a cycle cannot pop (per-layer engines "
        "only: the accelerator's buffers never back-pressure) " + DEFAULTS_HELP,
    )
    c.add_argument("--stall-seed", type=int, default=0, help=DEFAULTS_HELP)
    c.add_argument("-o", "--out", type=Path, default=Path("build-rtl/cosim"),
                   help="work folder " + DEFAULTS_HELP)  # fmt: skip
    c.add_argument(
        "--json",
        type=Path,
        help="also write the result as one JSON object here: layers (per layer name, "
        "spikes_match, rtl_cycles, hwsim_cycles, ...), sim_seconds (simulation only), "
        "build_seconds, ...",
    )


def _arch_options(p: argparse.ArgumentParser) -> None:
    arch = p.add_mutually_exclusive_group()
    arch.add_argument("--arch", type=Path, help="accelerator configuration (.toml)")
    arch.add_argument("--preset", default=None, help="default | p4 | p16 | p64 (default: default)")


def run_verilog(args: argparse.Namespace) -> int:
    from converter import load
    from rtl.package import package_name, write_package

    snn = load(args.artifact)
    arch = load_arch(args.arch, args.preset)
    x = _bench_images(snn, args.data, args.images)
    name = package_name(args.name or args.artifact.stem)
    engines = args.all or args.layer is not None
    if not engines and (why := _accel_refused(snn, arch, x)):
        print(f"note: the accelerator ({_top_name(arch)}) does not run this network ({why}): "
              "packaging the per-layer engines", file=sys.stderr)  # fmt: skip
        engines = True
    core = write_package(snn, arch, args.out, x, name=name, layer=args.layer, engines=engines)
    for f in sorted((args.out / "rtl").glob("layer*.json"), key=lambda p: int(p.stem[5:])):
        meta = json.loads(f.read_text())
        print(f"{f.with_suffix('.v')}  layer {meta['layer']} ({meta['name']}, "
              f"{meta['parameters']['kind']})")  # fmt: skip
    top = args.out / "rtl" / "onespike_accel.json"
    if not engines and top.is_file():
        layers = json.loads(top.read_text())["layers"]
        print(
            f"{top.with_suffix('.v')}  the whole accelerator (module onespike_accel): "
            + ", ".join(f"{lay['index']} {lay['name']} ({lay['kind']})" for lay in layers)
        )
    print(f"P = {arch.lanes}; core: {core} (fusesoc --cores-root {args.out} run "
          f"--target=sim onespike:snn:{name}); reports: {args.out / 'reports'}; "
          f"see {args.out / 'README.md'}")  # fmt: skip
    return 0


def _accel_refused(snn, arch, x) -> str | None:
    """Why the accelerator does not run ``snn`` on inputs ``x``, or None: a graph network too
    large for its buffers, say, or on the output-stationary accelerator a layer its engines do
    not run (graph and embedding layers); the commands then fall back to the per-layer
    engines. Other refusals of the potential-SRAM accelerator are errors, not a fallback."""
    from rtl.accel_sim import input_capacity
    from rtl.accelerator import refusal

    if snn.meta.get("graph") is None and arch.dataflow != "output_stationary":
        return None
    return refusal(snn, arch, input_capacity(snn, x))


def _top_name(arch) -> str:
    return "rtl.OsAccelerator" if arch.dataflow == "output_stationary" else "rtl.Accelerator"


def _graph_features(snn, data: str | None):
    """A graph network's input: the node features (nodes, F) of ``data`` (cora, citeseer, r8,
    mr) or of the graph its node count names (onespike.simreport.load_graph_for)."""
    from onespike.simreport import load_graph_for

    graph, _ = load_graph_for(snn, data)
    return graph.features()


def _bench_images(snn, data: str | None, images: int):
    """The benches' images: ``data`` (or the data set of the input shape), else ``images``
    uniform random images in [0, 1) (seed 0), with a note on stderr; a graph network's node
    features (one graph)."""
    import torch

    from onespike.simreport import DATA_BY_SHAPE

    if snn.meta.get("graph") is not None:
        return _graph_features(snn, data)

    if data is not None or tuple(snn.input_shape) in DATA_BY_SHAPE:
        return load_images(snn, data, images)[0]
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"--images must be a positive int, got {images!r}")
    shape = "x".join(map(str, snn.input_shape))
    print(f"note: no data set for the input shape {shape}: the benches use {images} random "
          "images (--data for real ones)", file=sys.stderr)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    return torch.rand(images, *snn.input_shape, generator=g)


def run_cosim(args: argparse.Namespace) -> int:
    import os

    import hwsim
    from converter import load
    from rtl.cosim import CosimError

    snn = load(args.artifact)
    arch = load_arch(args.arch, args.preset)
    graph = snn.meta.get("graph") is not None
    if graph:  # one graph: its node features
        x = _graph_features(snn, args.data)
    else:
        x, _, _ = load_images(snn, args.data, args.images)
    sim = args.sim or os.environ.get("SIM", "icarus")
    stalls = None
    if args.stall_rate:
        stalls = hwsim.stall_pattern(seed=args.stall_seed, rate=args.stall_rate)
    per_layer = args.layer is not None
    if not per_layer and (why := _accel_refused(snn, arch, x)):
        print(f"note: the accelerator ({_top_name(arch)}) does not run this network ({why}): "
              "co-simulating layer by layer on the per-layer engines", file=sys.stderr)  # fmt: skip
        per_layer = True
    elif not per_layer and stalls is not None:
        print("note: --stall-rate back-pressures the per-layer engines (the accelerator's "
              "buffers never do): co-simulating layer by layer", file=sys.stderr)  # fmt: skip
        per_layer = True
    try:
        if per_layer:
            return _cosim_layers(args, snn, arch, x, sim, stalls)
        return _cosim_accelerator(args, snn, arch, x, sim)
    except CosimError as exc:  # no simulator, or it could not build or run the bench
        print(f"onespike cosim: error: {exc}", file=sys.stderr)
        return 2


def _cosim_accelerator(args, snn, arch, x, sim: str) -> int:
    """The whole accelerator (rtl.accel_cosim) in ``args.out``/accel."""
    from rtl.accel_sim import accel_cosim, format_accel_report
    from rtl.cosim import simulator_env

    simulator_env(sim)  # an unknown simulator: one line, before the build
    print(f"co-simulating the whole accelerator under {sim}: one build, then {x.shape[0]} "
          f"image{'' if x.shape[0] == 1 else 's'}", file=sys.stderr, flush=True)  # fmt: skip
    rep = accel_cosim(snn, arch, x, sim=sim, out_dir=args.out / "accel")
    print(format_accel_report(rep, arch))
    if args.json:
        args.json.write_text(json.dumps({"flow": "accelerator", **rep.to_json()}, indent=2))
    return 0 if rep.ok else 1


def _cosim_layers(args, snn, arch, x, sim: str, stalls) -> int:
    """Layer by layer on the per-layer engines (rtl.cosim)."""
    import os

    from rtl.cosim import cosim, format_reports

    def progress(r) -> None:
        state = "ok" if r.ok else "MISMATCH"
        print(f"  layer {r.index} ({r.name}): {state}", file=sys.stderr, flush=True)

    reports = cosim(snn, x, arch, layers=args.layer, sim=sim, out_dir=args.out,
                    stalls=stalls, waves=bool(os.environ.get("WAVES")),
                    progress=progress)  # fmt: skip
    print(format_reports(reports, arch, sim))
    for r in reports:
        for e in r.errors[:5]:
            print(f"layer {r.index} ({r.name}): {e}")
    if args.json:
        obj = {
            "flow": "layers",
            "layers": [_report_json(r) for r in reports],
            "sim_seconds": sum(r.run_s for r in reports),
            "build_seconds": sum(r.build_s for r in reports),
            "sim": sim,
            "ok": all(r.ok for r in reports),
        }
        args.json.write_text(json.dumps(obj, indent=2))
    return 0 if all(r.ok for r in reports) else 1


#: The per-layer bench's messages for wrong spikes, potentials or class (rtl/bench.py).
_SPIKE_ERRORS = ("first difference", "output potential", ": class ")


def _report_json(r) -> dict:
    """One per-layer report: the accelerator's layer fields (``name``, ``spikes_match``,
    ``rtl_cycles``, ``hwsim_cycles``) and the rest of the report."""
    from dataclasses import asdict

    match = not any(k in e for e in r.errors for k in _SPIKE_ERRORS)
    return {**asdict(r), "spikes_match": match, "ok": r.ok, "cycles_per_s": r.cycles_per_s}
