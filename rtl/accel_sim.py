"""accel_cosim(): the whole accelerator (rtl.Accelerator) under cocotb against golden and hwsim.

Builds the accelerator's Verilog once, runs :mod:`rtl.accel_bench` on the images (input
events through the AXI4-Stream port, ``start``, a wait for ``done`` without Python per
cycle, the read-back through the debug port and the register block) and reports per layer:
the spikes against golden ``int`` (and their order in the event buffer against the order
hwsim's reader takes, ``hwsim.sim.emission_order``), the engine's cycles against
``hwsim.simulate(..., mode="layer")`` and its activity counters against hwsim's counts; and
the controller's total cycles against hwsim's image latency (``SimResult.image_cycles``: the
engines' cycles plus ``controller_cycles``, docs/architecture.md §14).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from amaranth.back import verilog

import golden
import hwsim
from archspec.config import ArchConfig
from archspec.fanout import ceil_div
from converter.model import SnnModel
from hwsim.sim import emission_order, os_emission_order
from rtl.accelerator import Accelerator
from rtl.cosim import CHECKED_COUNTS, CosimError, simulator_env, source_events
from rtl.engine import COUNTERS
from rtl.events import INDEX_BITS
from rtl.generate import VERILATOR_WAIVERS, _kick_comb_blocks
from rtl.tbgen import event_words

#: The top module's name.
TOP = "onespike_accel"
#: cocotb builds Verilator with ``--public-flat-rw`` (every signal of the design visible to
#: VPI: ~8× the C++ and a much slower model); the bench needs only the top's ports, so the
#: build turns it off (:data:`VERILATOR_ARGS`) and makes just those public
#: (:func:`public_ports`). (Every variable of the top module public, its internal nets
#: included, made ResNet-20's model at P = 64 about 10 % slower.)
VERILATOR_ARGS = ["--no-public-flat-rw"]


def public_ports(verilog_text: str) -> str:
    """Verilator configuration lines that make the top module's ports, and only those,
    visible to VPI (the bench reads and drives nothing else)."""
    m = re.search(rf"^module {TOP}\(([^)]*)\);", verilog_text, re.MULTILINE)
    if m is None:
        raise ValueError(f"no module {TOP} in the generated Verilog")
    ports = [name.strip() for name in m.group(1).split(",")]
    lines = [f'public_flat_rw -module "{TOP}" -var "{name}"' for name in ports]
    return "// The bench reads and drives the top's ports only.\n" + "\n".join(lines) + "\n"


@dataclass
class AccelLayerReport:
    """One layer of an accelerator run (per-image lists; counters summed over the images)."""

    index: int
    name: str
    kind: str
    spikes_match: bool
    rtl_cycles: list[int]
    hwsim_cycles: list[int]
    counters: dict[str, int] = field(default_factory=dict)
    hwsim_counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class AccelReport:
    """The whole run: per-layer reports, the controller's cycles, the seconds it took.

    ``sim_seconds`` is the simulation from ``start`` to ``done`` (all images);
    ``load_seconds`` the AXI input beats and ``readback_seconds`` the debug / register
    reads (both Python-driven, one cycle per word); ``build_seconds`` Verilog generation
    and the simulator's build. ``total_cycles`` per image is the controller's count, which is
    Σ engine cycles + ``gap_cycles`` (2 per engine + 1, docs/architecture.md §14), checked
    against ``hwsim_total_cycles`` (hwsim's ``image_cycles``). ``predictions``: the class
    of each image, or of each node of a graph network (one graph: one entry in the per-image
    lists)."""

    layers: list[AccelLayerReport]
    predictions: list[int]
    total_cycles: list[int]
    gap_cycles: list[int]
    sim_seconds: float
    load_seconds: float
    readback_seconds: float
    build_seconds: float
    errors: list[str]
    hwsim_total_cycles: list[int] = field(default_factory=list)
    sim: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.spikes_match and not r.errors for r in self.layers)

    @property
    def sim_seconds_per_image(self) -> float:
        return self.sim_seconds / max(len(self.total_cycles), 1)

    def first_error(self) -> str | None:
        """The first mismatch (a layer's, else the run's), or None."""
        for r in self.layers:
            if r.errors:
                return r.errors[0]
        return self.errors[0] if self.errors else None

    def to_json(self) -> dict:
        """``layers`` (per layer ``name``, ``spikes_match``, ``rtl_cycles``, ``hwsim_cycles``,
        and ``index``, ``kind``, ``errors``), ``sim_seconds`` (simulation only),
        ``build_seconds``, and the rest of the run (cycles per image, seconds, class)."""
        return {
            "layers": [{"index": r.index, "name": r.name, "kind": r.kind,
                        "spikes_match": r.spikes_match, "rtl_cycles": r.rtl_cycles,
                        "hwsim_cycles": r.hwsim_cycles, "errors": r.errors}
                       for r in self.layers],
            "sim_seconds": self.sim_seconds, "build_seconds": self.build_seconds,
            "load_seconds": self.load_seconds, "readback_seconds": self.readback_seconds,
            "sim": self.sim, "images": len(self.total_cycles), "ok": self.ok,
            "total_cycles": self.total_cycles, "hwsim_total_cycles": self.hwsim_total_cycles,
            "gap_cycles": self.gap_cycles, "predictions": self.predictions,
            "errors": self.errors,
        }  # fmt: skip


def accel_case(snn: SnnModel, acc: Accelerator, x: torch.Tensor, ref, hw) -> dict:
    """The bench's case: layers, register map, output layout, per image the input words,
    golden's phases, potentials, class and hwsim's cycles, and hwsim's activity counts per
    engine over the images (``hwsim_counts``: layer → counter → count)."""
    arch, out_idx = acc.arch, acc.layers[-1].index
    if arch.dataflow == "output_stationary":  # a flat output layer, one word per tile
        c, h, w = snn.layers[out_idx].size, 1, 1
        cb = acc.images[out_idx].geometry.tiles
    else:
        c, h, w = acc.images[out_idx].out_shape
        cb = ceil_div(c, arch.lanes)
    images = []
    for n in range(n_inputs(snn, x)):
        if is_graph(snn):  # one graph: (nodes, classes) logits, in neuron (class-major) order
            pot = np.asarray(ref.logits_int).T.reshape(-1)
            argmax = int(np.argmax(pot))  # the engine's argmax over all of them
        else:
            pot, argmax = ref.logits_int[n].reshape(-1), int(ref.predictions[n])
        images.append({
            "input": event_words(source_events(snn, ref, 0, n))[:-1],
            "phases": {str(p.index): np.asarray(ref.spikes[p.index][n]).reshape(-1).tolist()
                       for p in acc.layers[1:] if p.depth},
            "potentials": [int(v) for v in pot.tolist()],
            "argmax": argmax,
            "hwsim_cycles": {str(p.index): int(hw.cycles_per_image[n, p.index])
                             for p in acc.layers[1:]},
            "hwsim_total_cycles": int(hw.image_cycles[n]),
        })  # fmt: skip
    # hwsim's activity counts of each engine, summed over the images (as hwsim counts them)
    counts = {str(p.index): {k: int(hw.counts[k][p.index]) for k in CHECKED_COUNTS}
              for p in acc.layers[1:]}  # fmt: skip
    return {
        "layers": [{"index": p.index, "name": snn.layers[p.index].name, "kind": p.kind,
                    "buffered": bool(p.depth)} for p in acc.layers],
        "registers": {name: a for a, name in acc.registers.items()},
        "output": {"lanes": arch.lanes, "potential_bits": arch.potential_bits,
                   "pixels": h * w, "n_out": c * h * w, "channel_blocks": cb, "rows": cb * h * w},
        "images": images,
        "hwsim_counts": counts,
    }  # fmt: skip


def is_graph(snn: SnnModel) -> bool:
    """A graph network: one graph, a class per node."""
    return snn.meta.get("graph") is not None


def n_inputs(snn: SnnModel, x: torch.Tensor) -> int:
    """The runs of ``x``: its images, or 1 for a graph network's node features."""
    return 1 if is_graph(snn) else x.shape[0]


def input_capacity(snn: SnnModel, x: torch.Tensor) -> int | None:
    """The input buffer's depth for running ``x``: None (the worst case, size × T_in) where
    that fits the debug port's 2^20 addresses, else the most events one input of ``x``
    has (a graph's node features: Cora's worst case is 31 M events, its features 184 k)."""
    from golden.engine import encode_input

    lay = snn.layers[0]
    if lay.size * lay.T <= 2**INDEX_BITS:
        return None
    if is_graph(snn):
        from converter.graph_frontend import layer_input

        graph = snn.meta["graph"]
        x = layer_input(x, graph["one_hot"], graph["nodes"], graph["features"])
    trains = encode_input(x, lay)
    return max(1, int((trains != 0).reshape(trains.shape[0], -1).sum(1).max()))


def write_accel_verilog(acc: Accelerator, out_dir: str | Path) -> Path:
    """``onespike_accel.v`` (the whole accelerator) and ``verilator.vlt`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = _kick_comb_blocks(verilog.convert(acc, name=TOP))
    (out / "verilator.vlt").write_text(VERILATOR_WAIVERS + public_ports(text))
    path = out / f"{TOP}.v"
    path.write_text(text)
    return path


def accel_cosim(
    snn: SnnModel,
    arch: ArchConfig,
    x: torch.Tensor,
    sim: str = "icarus",
    out_dir: str | Path = "build-rtl/accel",
) -> AccelReport:
    """Run images ``x`` through the whole accelerator under ``sim`` and check every layer.

    Parameters
    ----------
    snn : SnnModel
        A quantised network whose layers the rtl engines support.
    arch : ArchConfig
        The accelerator's configuration; hwsim runs with the same one (layer mode).
    x : Tensor (N, *input shape)
        Images in the ANN's input format.
    sim : {"icarus", "verilator"}
    out_dir : path
        Verilog, simulator build, case and result files.

    Returns
    -------
    AccelReport
        Per layer ``spikes_match``, ``rtl_cycles`` (the engine's counter) and
        ``hwsim_cycles`` (what it must equal); the controller's ``total_cycles`` (checked
        against ``hwsim_total_cycles``) and ``gap_cycles``; the seconds. Mismatches name the
        layer, the image, the first neuron and the phase.
    """
    from cocotb_tools.runner import get_runner

    env = simulator_env(sim)
    out = Path(out_dir).resolve()
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    acc = accelerator_for(snn, arch, input_capacity(snn, x))
    vfile = write_accel_verilog(acc, out / "verilog")
    ref = golden.run(snn, x, "int", device="cpu")
    hw = hwsim.simulate(snn, x, arch, mode="layer")
    case = accel_case(snn, acc, x, ref, hw)
    (out / "case.json").write_text(json.dumps(case))
    runner = get_runner(sim)
    with mock.patch.dict(os.environ, env):
        sources = [vfile, vfile.parent / "verilator.vlt"] if sim == "verilator" else [vfile]
        runner.build(sources=sources, hdl_toplevel=TOP, build_dir=out / "sim", always=True,
                     timescale=("1ns", "1ps"), log_file=out / "build.log",
                     build_args=VERILATOR_ARGS if sim == "verilator" else [])  # fmt: skip
        build_s = time.perf_counter() - t0
        with contextlib.suppress(SystemExit):  # a failing bench: its result file says why
            runner.test(
                test_module="rtl.accel_bench", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                build_dir=out / "sim", test_dir=out, log_file=out / "sim.log",
                extra_env={"ONESPIKE_BENCH": str(out / "case.json"),
                           "ONESPIKE_BENCH_OUT": str(out / "result.json"),
                           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                          os.environ.get("PYTHONPATH", "")])},
            )  # fmt: skip
    if not (out / "result.json").exists():
        raise CosimError(f"the accelerator bench wrote no result; see {out / 'sim.log'}")
    res = json.loads((out / "result.json").read_text())
    return _report(snn, acc, res, hw, build_s, sim)


def accelerator_for(snn: SnnModel, arch: ArchConfig, input_events: int | None = None):
    """The whole accelerator of ``arch``'s dataflow: :class:`rtl.Accelerator`
    (``potential_sram``) or :class:`rtl.os_accel.OsAccelerator` (``output_stationary``).
    Raises ValueError with the reason a network is refused."""
    if arch.dataflow == "output_stationary":
        from rtl.os_accel import OsAccelerator

        return OsAccelerator(snn, arch, input_events)
    return Accelerator(snn, arch, input_events)


def order_errors(
    snn: SnnModel, i: int, n: int, words: list[int], hw, split: int | None = None,
    arch: ArchConfig | None = None,
) -> list[str]:  # fmt: skip
    """Layer ``i``'s buffered event words of image ``n`` against the order hwsim's reader
    takes them (``hwsim.sim.emission_order`` of hwsim's spikes; a rail-banked buffer,
    ``split`` its second rail's first neuron, reads back bank 0's events, then bank 1's;
    an output-stationary neuron layer, ``arch`` given, its push order,
    ``hwsim.sim.os_emission_order``): the first place that differs. (Spikes that differ are
    reported by the bench; this checks the order only.)"""
    rank = hw.emit_rank[i][n] if hw.emit_rank[i] is not None else None
    if arch is not None and arch.dataflow == "output_stationary" and rank is None:
        want = os_emission_order(snn, i, arch, hw.spikes[i][n])
    else:
        want = emission_order(snn, i, hw.spikes[i][n], rank)
    if split is not None:
        want = np.concatenate([want[want < split], want[want >= split]])
    got = [w & ((1 << 20) - 1) for w in words]
    if len(got) != len(want) or got == want.tolist():
        return []
    k = next(k for k, (a, b) in enumerate(zip(got, want.tolist(), strict=True)) if a != b)
    return [f"layer {i} ({snn.layers[i].name}) image {n}: event {k} of the buffer is neuron "
            f"{got[k]}, hwsim's reader takes neuron {int(want[k])} there"]  # fmt: skip


def _report(snn, acc: Accelerator, res: dict, hw, build_s: float, sim: str) -> AccelReport:
    got = res["images"]
    layers = []
    for p in acc.layers[1:]:
        i = p.index
        prefix = f"layer {i} ("
        errors = [e for e in res["errors"] if e.startswith(prefix)]
        regs = [g["registers"] for g in got]
        counters = {k: sum(r[f"{k}@{i}"] for r in regs) for k in COUNTERS}
        hw_counts = {k: int(hw.counts[k][i]) for k in CHECKED_COUNTS}  # (the bench checks)
        if p.depth:
            for n, g in enumerate(got):
                errors += order_errors(snn, i, n, g["buffers"][str(i)], hw, p.split, acc.arch)
        spikes_ok = not any("first difference" in e for e in errors)
        layers.append(AccelLayerReport(
            i, snn.layers[i].name, p.kind, spikes_ok, [r[f"cycles@{i}"] for r in regs],
            [int(c) for c in hw.cycles_per_image[:, i]], counters, hw_counts, errors,
        ))  # fmt: skip
    engine_sum = [sum(r.rtl_cycles[n] for r in layers) for n in range(len(got))]
    total = [g["registers"]["cycles"] for g in got]
    reported = tuple(f"layer {r.index} (" for r in layers)
    rest = [e for e in res["errors"] if not e.startswith(reported)]
    gaps = [t - s for t, s in zip(total, engine_sum, strict=True)]
    want = (hw.image_cycles - hw.cycles_per_image.sum(1)).tolist()  # controller (and sorts)
    rest += [f"image {n}: {g} cycles beside the engines', hwsim's controller_cycles and sorts "
             f"{w}" for n, (g, w) in enumerate(zip(gaps, want, strict=True))
             if g != w]  # fmt: skip
    if is_graph(snn):  # per node: the argmax over the classes of the potentials read back
        out = snn.layers[acc.layers[-1].index]
        pot = np.asarray(got[0]["potentials"]).reshape(out.channels, -1)
        predictions = pot.argmax(0).tolist()
    else:
        predictions = [g["class"] for g in got]
    return AccelReport(
        layers, predictions, total, gaps, res["sim_s"], res["load_s"],
        res["readback_s"], build_s, rest, [int(c) for c in hw.image_cycles], sim,
    )  # fmt: skip


def format_accel_report(rep: AccelReport, arch: ArchConfig) -> str:
    """A per-layer table (spikes matched, RTL cycles next to hwsim's, over all images), the
    controller's total next to hwsim's image latency, the seconds, and the first mismatch."""
    n = len(rep.total_cycles)
    lines = [
        f"the whole accelerator under {rep.sim or '?'}, P = {arch.lanes}, {n} "
        f"image{'' if n == 1 else 's'}",
        f"{'layer':<22}{'kind':<8}{'spikes':>8}{'RTL cycles':>12}{'hwsim cycles':>14}  result",
    ]
    for r in rep.layers:
        spikes = "-" if r.kind == "output" else ("equal" if r.spikes_match else "DIFFER")
        lines.append(
            f"{r.index:>2} {r.name:<19}{r.kind:<8}{spikes:>8}{sum(r.rtl_cycles):>12}"
            f"{sum(r.hwsim_cycles):>14}  " + ("ok" if not r.errors else "MISMATCH")
        )
    lines.append(
        f"{'total (controller)':<38}{sum(rep.total_cycles):>12}{sum(rep.hwsim_total_cycles):>14}"
        f"  (of which {sum(rep.gap_cycles)} between the layers, §14)"
    )
    lines.append(
        f"simulation {rep.sim_seconds:.2f} s ({rep.sim_seconds_per_image:.3f} s per image), "
        f"input {rep.load_seconds:.2f} s, read-back {rep.readback_seconds:.2f} s, "
        f"build {rep.build_seconds:.1f} s"
    )
    if rep.ok:
        lines.append("every layer matches golden int and hwsim")
    else:
        errors = [e for r in rep.layers for e in r.errors] + rep.errors
        lines += [f"MISMATCH: {e}" for e in errors[:5]]
    return "\n".join(lines)
