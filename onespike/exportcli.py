"""`onespike export`: an artifact as a NIR graph (Neuromorphic Intermediate Representation)."""

from __future__ import annotations

import argparse
from pathlib import Path

CAVEAT_HELP = (
    "Caveat: NIR's neurons are continuous-time; a tool that simulates the file as plain IF "
    "neurons does NOT reproduce the one-spike SNN (phase coding with base Q, the per-phase "
    "multiplication of the potential by Q, initial potentials, one spike per neuron). The "
    "onespike.* metadata of the graph and its nodes carries what is needed to do so, with "
    "the integer datapath."
)


def add_parsers(sub) -> None:
    """The ``export`` subcommand of ``onespike``."""
    e = sub.add_parser(
        "export",
        help="write an artifact as a NIR graph (.nir, for snnTorch, Norse, Sinabs, Lava-DL, "
        "Rockpool, SpiNNaker2); NIR neurons are continuous-time, see --help",
        description="Write a one-spike artifact as a NIR graph (HDF5, nir.write): the input "
        "layer as Input, conv / linear / average pooling / residual shortcut synapse groups "
        "as Conv2d / Flatten+Affine / SumPool2d+Scale / 1x1 Conv2d, neuron layers as IF with "
        "the float effective weights and thresholds, the output layer as an integrator (I) "
        "read by argmax, max pooling as a SumPool2d placeholder marked onespike.op=maxpool. "
        + CAVEAT_HELP,
    )
    e.add_argument("artifact", type=Path, help="one-spike artifact (.safetensors)")
    e.add_argument("--nir", type=Path, required=True, metavar="OUT.nir", help="NIR file to write")
    e.add_argument(
        "--strict",
        action="store_true",
        help="refuse layers NIR cannot express (max pooling) instead of exporting a marked "
        "placeholder",
    )


def run_export(args: argparse.Namespace) -> int:
    """Load the artifact, write the NIR file, print one line. Raises ValueError (a bad
    artifact, a model NIR cannot express with --strict, an unwritable path) or
    FileNotFoundError (no artifact)."""
    from converter import load
    from onespike.nir_export import export_nir

    snn = load(args.artifact)
    path = export_nir(snn, args.nir, strict=bool(getattr(args, "strict", False)))
    print(
        f"wrote {path} ({len(snn.layers)} layers as NIR; a plain IF simulation does not "
        "reproduce one-spike coding: see its onespike.* metadata)"
    )
    return 0
