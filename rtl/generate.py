"""generate_verilog(): Verilog, memory images and a port map for the layers of an SnnModel."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Value
from amaranth.lib.wiring import In

from converter.model import SnnModel
from hwsim.config import ArchConfig
from rtl.engine import OPS, LayerEngine, LayerImage

#: Verilator lint rules waived for Yosys-written Verilog, each with its reason. The design is
#: checked in Amaranth, whose arithmetic is width-correct by construction; these rules flag
#: the way Yosys's backend prints it, not the design.
VERILATOR_WAIVERS = """`verilator_config
// Yosys relies on Verilog's implicit sign/zero extension of operands (signed adds, compares).
lint_off -rule WIDTHEXPAND
// Yosys writes `x == 0` as `!x` on multi-bit signals (a logical not, meant as such).
lint_off -rule WIDTHTRUNC
// Yosys's FSM case statements list only the encoded states; others keep the default.
lint_off -rule CASEINCOMPLETE
// Amaranth keeps every field of a data.View (struct fields, the spare bits) as a named wire.
lint_off -rule UNUSEDSIGNAL
// One file holds the engine and its submodules, named after the layer, not the module.
lint_off -rule DECLFILENAME
// Memories are initialised in `initial` blocks (their SnnModel contents).
lint_off -rule PROCASSINIT
"""


def supported_layers(snn: SnnModel) -> list[int]:
    """Indices of the layers the rtl engine can run (neuron layers with one linear or conv
    synapse group)."""
    return [
        i
        for i, lay in enumerate(snn.layers)
        if lay.kind == "neuron" and len(lay.synapses) == 1 and lay.synapses[0].op in OPS
    ]


def generate_verilog(
    snn: SnnModel, arch: ArchConfig, out_dir: str | Path, layer: int | None = None
) -> list[Path]:
    """Write, per layer, ``layer<i>.v`` (module ``onespike_layer<i>``), the memory images
    ``layer<i>_{weights,bias,theta}.hex`` ($readmemh, one P-lane word per line, lane 0 in the
    least significant bits) and ``layer<i>.json`` (ports with direction and width, parameters);
    and ``verilator.vlt``, the lint waivers (``verilator --lint-only -Wall verilator.vlt
    layer<i>.v`` is clean).

    Parameters
    ----------
    snn : SnnModel
        A quantised network.
    arch : ArchConfig
        The engine's configuration (P, W, A, D_out, latencies).
    out_dir : str or Path
        Created if missing.
    layer : int, optional
        One layer; default: every supported layer.

    Returns
    -------
    list of Path
        The Verilog files written.
    """
    layers = supported_layers(snn) if layer is None else [layer]
    if not layers:
        raise ValueError(
            "the network has no layer the rtl engine supports (linear or conv neuron layers)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verilator.vlt").write_text(VERILATOR_WAIVERS)
    written = []
    for i in layers:
        image = LayerImage.from_snn(snn, i, arch.lanes)
        engine = LayerEngine(arch, image)
        name = f"onespike_layer{i}"
        (out / f"layer{i}.v").write_text(verilog.convert(engine, name=name))
        words = {"weights": (image.weights, arch.weight_bits),
                 "bias": (image.bias, arch.potential_bits),
                 "theta": (image.theta, arch.potential_bits)}  # fmt: skip
        for kind, (arr, bits) in words.items():
            (out / f"layer{i}_{kind}.hex").write_text(_hex_image(arr, bits))
        meta = {
            "module": name,
            "layer": i,
            "name": snn.layers[i].name,
            "ports": _ports(engine),
            "arch": asdict(arch),
            "parameters": {
                "src_shape": image.src_shape, "out_shape": image.out_shape,
                "kernel": image.kernel, "stride": image.stride, "padding": image.padding,
                "rows": engine.rows,
                "t_src": image.t_src, "t": image.t, "t_w": image.t_w, "m_in": image.m_in,
                "m_out": image.m_out, "sat_limit": image.sat_limit,
            },
        }  # fmt: skip
        (out / f"layer{i}.json").write_text(json.dumps(meta, indent=2, default=str))
        written.append(out / f"layer{i}.v")
    return written


def _ports(engine: LayerEngine) -> list[dict[str, object]]:
    """Verilog port names (Amaranth joins paths with ``__``), direction and width."""
    ports: list[dict[str, object]] = [
        {"name": "clk", "direction": "input", "width": 1},
        {"name": "rst", "direction": "input", "width": 1},
    ]
    for path, member, value in engine.signature.flatten(engine):
        ports.append({
            "name": "__".join(str(p) for p in path),
            "direction": "input" if member.flow == In else "output",
            "width": len(Value.cast(value)),
        })  # fmt: skip
    return ports


def _hex_image(words: np.ndarray, bits: int) -> str:
    """One line per word: the P lanes as two's complement ``bits``-bit fields, lane 0 lowest."""
    mask = (1 << bits) - 1
    digits = -(-words.shape[1] * bits // 4)
    lines = []
    for row in words:
        v = 0
        for lane, x in enumerate(row.tolist()):
            v |= (int(x) & mask) << (lane * bits)  # two's complement of negative weights
        lines.append(f"{v:0{digits}x}")
    return "\n".join(lines) + "\n"
