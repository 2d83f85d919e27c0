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
        help="Verilog of the accelerator's engines for an artifact's layers",
        description="Write, per layer, the engine as Verilog (module onespike_layer<i>), its "
        "memory images ($readmemh hex) and a JSON of ports and parameters, plus the "
        "Verilator lint waivers (docs/architecture.md, rtl/).",
    )
    v.add_argument("artifact", type=Path)
    _arch_options(v)
    which = v.add_mutually_exclusive_group()
    which.add_argument("--layer", type=int, help="one layer (index, see `onespike info`)")
    which.add_argument("--all", action="store_true", help="every supported layer (default)")
    v.add_argument("-o", "--out", type=Path, required=True, help="output folder")

    c = sub.add_parser(
        "cosim",
        help="co-simulate the Verilog against golden int (spikes) and hwsim (cycles)",
        description="Run every layer of an artifact through its generated engine under "
        "cocotb, each fed the RTL spikes of its source, and check per layer that the spikes "
        "(output layer: potentials and class) equal golden int and the cycles equal hwsim's. "
        "A mismatch names the first neuron and phase that differ. WAVES=1 writes waveforms.",
    )
    c.add_argument("artifact", type=Path)
    _arch_options(c)
    c.add_argument("--images", type=int, default=2, help="test images " + DEFAULTS_HELP)
    c.add_argument(
        "--data", default=None, help="digits | mnist | cifar10 | .npz (default: from the shape)"
    )
    c.add_argument("--layer", type=int, action="append", help="only these layers (repeatable)")
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
        help="output back-pressure: probability that a cycle cannot pop " + DEFAULTS_HELP,
    )
    c.add_argument("--stall-seed", type=int, default=0, help=DEFAULTS_HELP)
    c.add_argument("-o", "--out", type=Path, default=Path("build-rtl/cosim"),
                   help="work folder " + DEFAULTS_HELP)  # fmt: skip
    c.add_argument("--json", type=Path, help="also write the per-layer reports as JSON here")


def _arch_options(p: argparse.ArgumentParser) -> None:
    arch = p.add_mutually_exclusive_group()
    arch.add_argument("--arch", type=Path, help="accelerator configuration (.toml)")
    arch.add_argument("--preset", default=None, help="default | p4 | p16 | p64 (default: default)")


def run_verilog(args: argparse.Namespace) -> int:
    from converter import load
    from rtl.generate import generate_verilog

    snn = load(args.artifact)
    arch = load_arch(args.arch, args.preset)
    files = generate_verilog(snn, arch, args.out, layer=args.layer)
    for f in files:
        meta = json.loads(f.with_suffix(".json").read_text())
        print(f"{f}  layer {meta['layer']} ({meta['name']}, {meta['parameters']['kind']})")
    print(f"P = {arch.lanes}; waivers: {args.out / 'verilator.vlt'}")
    return 0


def run_cosim(args: argparse.Namespace) -> int:
    import os

    import hwsim
    from converter import load
    from rtl.cosim import CosimError, cosim, format_reports

    snn = load(args.artifact)
    arch = load_arch(args.arch, args.preset)
    x, _, _ = load_images(snn, args.data, args.images)
    sim = args.sim or os.environ.get("SIM", "icarus")
    stalls = None
    if args.stall_rate:
        stalls = hwsim.stall_pattern(seed=args.stall_seed, rate=args.stall_rate)

    def progress(r) -> None:
        state = "ok" if r.ok else "MISMATCH"
        print(f"  layer {r.index} ({r.name}): {state}", file=sys.stderr, flush=True)

    try:
        reports = cosim(snn, x, arch, layers=args.layer, sim=sim, out_dir=args.out,
                        stalls=stalls, waves=bool(os.environ.get("WAVES")),
                        progress=progress)  # fmt: skip
    except CosimError as exc:  # no simulator, or it could not build or run the bench
        print(f"onespike cosim: error: {exc}", file=sys.stderr)
        return 2
    print(format_reports(reports, arch, sim))
    for r in reports:
        for e in r.errors[:5]:
            print(f"layer {r.index}: {e}")
    if args.json:
        args.json.write_text(json.dumps([_report_json(r) for r in reports], indent=2))
    return 0 if all(r.ok for r in reports) else 1


def _report_json(r) -> dict:
    from dataclasses import asdict

    return {**asdict(r), "ok": r.ok, "cycles_per_s": r.cycles_per_s}
