"""generate_verilog(): Verilog, memory images and a port map for the layers of an SnnModel."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Value
from amaranth.lib.wiring import In

from archspec.config import ArchConfig
from converter.model import SnnModel
from rtl.engine import LayerEngine, LayerImage, _engine_layer
from rtl.maxpool import MaxPoolEngine, PoolImage
from rtl.os_engine import OsEngine, OsImage, os_refusal
from rtl.os_pool import OsMaxPool

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

#: Yosys's trigger register for `always @*` blocks: declared ``= 0`` and never written.
_TRIGGER = re.compile(
    r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) += 0;$", re.M
)


def _kick_comb_blocks(text: str) -> str:
    """Make every ``always @*`` block run at time 0 under Icarus.

    Yosys makes each combinational block read a register that is declared ``= 0``, so that
    the block runs once at start-up; but Icarus does not turn a declaration's initial value
    into an event, and a block whose inputs keep their initial values (a max-pooling
    engine's push enable, say) then stays X until one of them changes. A ``#0`` assignment
    after every process has started is such an event; it is compiled for Icarus only
    (`__ICARUS__`), so Verilator and synthesis never see a delay."""
    kick = r"\1reg \2 = 0;\n`ifdef __ICARUS__\n\1initial #0 \2 = 1;\n`endif"
    return _TRIGGER.sub(kick, text)


def supported_layers(snn: SnnModel, arch: ArchConfig | None = None) -> list[int]:
    """Indices of the layers the rtl engines can run on ``arch`` (default: the
    ``potential_sram`` dataflow): max-pooling layers, and the neuron and output layers that
    :class:`~rtl.engine.LayerEngine` runs (:func:`~rtl.engine._engine_layer`), in the
    output-stationary dataflow those that :class:`~rtl.os_engine.OsEngine` runs
    (:func:`~rtl.os_engine.os_refusal`)."""
    stationary = arch is not None and arch.dataflow == "output_stationary"

    def runs(i: int, lay) -> bool:
        if lay.kind == "maxpool":
            return True
        if not _engine_layer(lay):
            return False
        return not stationary or os_refusal(snn, i, arch) is None

    return [i for i, lay in enumerate(snn.layers) if runs(i, lay)]


def layer_image(snn: SnnModel, index: int, lanes: int) -> LayerImage | PoolImage:
    """The image of layer ``index`` for a P = ``lanes`` engine.

    Raises ValueError naming the layer when no rtl engine can run it (the input layer,
    an engine's limits on sizes, phases or latencies)."""
    if not 0 <= index < len(snn.layers):
        raise ValueError(f"layer {index} does not exist: the network has {len(snn.layers)}")
    if snn.layers[index].kind == "maxpool":
        return PoolImage.from_snn(snn, index)
    return LayerImage.from_snn(snn, index, lanes)


def engine_for(
    snn: SnnModel, index: int, arch: ArchConfig
) -> LayerEngine | MaxPoolEngine | OsEngine | OsMaxPool:
    """The engine that runs layer ``index`` on ``arch`` (see :func:`layer_image`): with
    ``dataflow = "output_stationary"`` an :class:`~rtl.os_engine.OsEngine` (max pooling
    runs the §5 engine in both dataflows, in this one behind a phase sort,
    :class:`~rtl.os_pool.OsMaxPool`). Raises ValueError naming the layer
    and the reason when no engine runs it."""
    image = layer_image(snn, index, arch.lanes)
    if isinstance(image, PoolImage):
        if arch.dataflow == "output_stationary":  # behind a phase sort (rtl.os_pool)
            return OsMaxPool(arch, image)
        return MaxPoolEngine(arch, image)
    if arch.dataflow == "output_stationary":
        return OsEngine(arch, OsImage.from_snn(snn, index, arch))  # (refuses with the reason)
    return LayerEngine(arch, image)


def generate_verilog(
    snn: SnnModel, arch: ArchConfig, out_dir: str | Path, layer: int | None = None
) -> list[Path]:
    """Write, per layer, ``layer<i>.v`` (module ``onespike_layer<i>``), the memory images
    ``layer<i>_{weights,bias,theta}.hex`` ($readmemh, one P-lane word per line, lane 0 in the
    least significant bits; none for max pooling, no thresholds for the output layer; the
    Verilog holds the same contents as ``initial`` values), ``layer<i>.json`` (ports with
    direction and width, parameters); and ``verilator.vlt``, the lint waivers
    (``verilator --lint-only -Wall verilator.vlt layer<i>.v`` is clean).

    Parameters
    ----------
    snn : SnnModel
        A quantised network.
    arch : ArchConfig
        The engine's configuration (P, W, A, D_out, latencies).
    out_dir : str or Path
        Created if missing.
    layer : int, optional
        One layer; default: every layer an rtl engine supports (:func:`supported_layers`).

    Returns
    -------
    list of Path
        The Verilog files written.
    """
    layers = supported_layers(snn, arch) if layer is None else [layer]
    if not layers:
        raise ValueError("the network has no layer the rtl engines support")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verilator.vlt").write_text(VERILATOR_WAIVERS)
    written = []
    for i in layers:
        engine = engine_for(snn, i, arch)
        image = engine.image.layer if isinstance(engine, OsEngine) else engine.image
        name = f"onespike_layer{i}"
        (out / f"layer{i}.v").write_text(_kick_comb_blocks(verilog.convert(engine, name=name)))
        params = {"kind": snn.layers[i].kind, "src_shape": image.src_shape,
                  "out_shape": image.out_shape, "kernel": image.kernel, "stride": image.stride,
                  "padding": image.padding, "t_src": image.t_src}  # fmt: skip
        if isinstance(image, LayerImage):
            mem = engine.image if isinstance(engine, OsEngine) else image  # its memory layout
            words = {"bias": (mem.bias, arch.potential_bits),
                     "theta": (mem.theta, arch.potential_bits)}  # fmt: skip
            if isinstance(engine, OsEngine):  # one weight memory per synapse group
                words.update({f"weights{j}": (w, engine.weight_bits)
                              for j, w in enumerate(mem.weights)})  # fmt: skip
            else:
                words["weights"] = (mem.weights, engine.weight_bits)
            for kind, (arr, bits) in words.items():
                if len(arr):
                    (out / f"layer{i}_{kind}.hex").write_text(_hex_image(arr, bits))
            if isinstance(engine, OsEngine):
                params.update(dataflow="output_stationary", tile=engine.image.geometry.tile,
                              tiles=engine.tiles)  # fmt: skip
            params.update(
                op=image.op, weight_bits=engine.weight_bits, rows=engine.rows, t=image.t,
                t_w=image.t_w, m_in=image.m_in, m_out=image.m_out, sat_limit=image.sat_limit,
            )  # fmt: skip
        meta = {"module": name, "layer": i, "name": snn.layers[i].name,
                "ports": _ports(engine), "arch": asdict(arch), "parameters": params}  # fmt: skip
        (out / f"layer{i}.json").write_text(json.dumps(meta, indent=2, default=str))
        written.append(out / f"layer{i}.v")
    return written


def _ports(engine: LayerEngine | MaxPoolEngine) -> list[dict[str, object]]:
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
