"""accel_cosim(): the whole accelerator (rtl.Accelerator) under cocotb against golden and hwsim.

Builds the accelerator's Verilog once, runs :mod:`rtl.accel_bench` on the images (input
events through the AXI4-Stream port, ``start``, a wait for ``done`` without Python per
cycle, the read-back through the debug port and the register block) and reports per layer:
the spikes against golden ``int``, the engine's cycles against
``hwsim.simulate(..., mode="layer")`` (a max-pooling layer fed by a neuron layer: against
§5's rule in the buffer's event order, :func:`maxpool_cycles`, at most one cycle from
hwsim's) and its activity counters against hwsim's counts.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from converter.model import SnnModel
from hwsim.config import ArchConfig
from hwsim.fanout import ceil_div
from rtl.accelerator import Accelerator
from rtl.cosim import CHECKED_COUNTS, CosimError, simulator_env, source_events
from rtl.engine import COUNTERS, tap_mask
from rtl.generate import VERILATOR_WAIVERS, _kick_comb_blocks
from rtl.maxpool import PoolImage
from rtl.tbgen import event_words

#: The top module's name.
TOP = "onespike_accel"
#: cocotb builds Verilator with ``--public-flat-rw`` (every signal of the design visible to
#: VPI: ~8× the C++ and a much slower model); the bench needs only the top's ports, so the
#: build turns it off (:data:`VERILATOR_ARGS`) and makes the top module public here.
PUBLIC_TOP = f"""// The bench reads and drives the top's ports only.
public_flat_rw -module "{TOP}" -var "*"
"""
VERILATOR_ARGS = ["--no-public-flat-rw"]


@dataclass
class AccelLayerReport:
    """One layer of an accelerator run (per-image lists; counters summed over the images)."""

    index: int
    name: str
    kind: str
    spikes_match: bool
    rtl_cycles: list[int]
    hwsim_cycles: list[int]
    expected_cycles: list[int]
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
    Σ engine cycles + ``gap_cycles`` (2 per layer, docs/architecture.md §14)."""

    layers: list[AccelLayerReport]
    predictions: list[int]
    total_cycles: list[int]
    gap_cycles: list[int]
    sim_seconds: float
    load_seconds: float
    readback_seconds: float
    build_seconds: float
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors and all(r.spikes_match and not r.errors for r in self.layers)

    @property
    def sim_seconds_per_image(self) -> float:
        return self.sim_seconds / max(len(self.predictions), 1)

    def to_json(self) -> dict:
        return {"layers": [{"name": r.name, "spikes_match": r.spikes_match,
                            "rtl_cycles": r.rtl_cycles, "hwsim_cycles": r.hwsim_cycles}
                           for r in self.layers],
                "sim_seconds": self.sim_seconds, "build_seconds": self.build_seconds}  # fmt: skip


def accel_case(snn: SnnModel, acc: Accelerator, x: torch.Tensor, ref, hw) -> dict:
    """The bench's case: layers, register map, output layout and per image the input words,
    golden's phases, potentials, class and hwsim's cycles."""
    arch, out_idx = acc.arch, acc.layers[-1].index
    c, h, w = acc.images[out_idx].out_shape
    cb = ceil_div(c, arch.lanes)
    images = []
    for n in range(x.shape[0]):
        images.append({
            "input": event_words(source_events(snn, ref, 0, n))[:-1],
            "phases": {str(p.index): np.asarray(ref.spikes[p.index][n]).reshape(-1).tolist()
                       for p in acc.layers[1:] if p.depth},
            "potentials": [int(v) for v in ref.logits_int[n].reshape(-1).tolist()],
            "argmax": int(ref.predictions[n]),
            "hwsim_cycles": {str(p.index): int(hw.cycles_per_image[n, p.index])
                             for p in acc.layers[1:]},
        })  # fmt: skip
        images[-1]["expected_cycles"] = {
            str(p.index): expected_cycles(snn, arch, ref, hw, p.index, n) for p in acc.layers[1:]
        }
    return {
        "layers": [{"index": p.index, "name": snn.layers[p.index].name, "kind": p.kind,
                    "buffered": bool(p.depth)} for p in acc.layers],
        "registers": {name: a for a, name in acc.registers.items()},
        "output": {"lanes": arch.lanes, "potential_bits": arch.potential_bits,
                   "pixels": h * w, "n_out": c * h * w, "channel_blocks": cb, "rows": cb * h * w},
        "images": images,
    }  # fmt: skip


def expected_cycles(snn: SnnModel, arch: ArchConfig, ref, hw, i: int, n: int) -> int:
    """The cycles layer ``i``'s engine must take on image ``n`` in the accelerator: hwsim's
    layer-mode count, except for a max-pooling layer fed by a neuron layer, whose events
    arrive in the order the source's scan pushed them (:func:`maxpool_cycles`)."""
    lay = snn.layers[i]
    if lay.kind == "maxpool" and snn.layers[lay.source].kind == "neuron":
        return maxpool_cycles(snn, arch, i, np.asarray(ref.spikes[lay.source][n]).reshape(-1))
    return int(hw.cycles_per_image[n, i])


def maxpool_cycles(snn: SnnModel, arch: ArchConfig, i: int, src_phases: np.ndarray) -> int:
    """docs/architecture.md §5 for max-pooling layer ``i`` with its source's events in the
    event buffer's order (§14): phase by phase, within a phase in the source's scan order
    (pixel, then channel), where hwsim's reader takes neuron order (channel, then pixel).

    Each event costs I + one cycle per window it belongs to, whatever the order; the order
    decides only the drain: one more cycle if the last event's last window fired (its push
    leaves the output queue one event to pop). So this count and hwsim's differ by at most
    one cycle. Assumes no back-pressure (the accelerator's buffers are always ready) and
    D_out ≥ 1, so no push stalls."""
    img = PoolImage.from_snn(snn, i)
    _, h, w = img.src_shape
    j = np.nonzero(src_phases >= 0)[0]
    pix, chan = j % (h * w), j // (h * w)
    order = j[np.lexsort((chan, pix, src_phases[j]))]  # phase, then pixel, then channel
    fired = np.zeros(img.n_out, bool)
    _, h_out, w_out = img.out_shape
    (_, kw), (sy, sx), (py, px) = img.kernel, img.stride, img.padding
    cycles, last_fired = 0, False
    for v in order.tolist():
        c, y, x = v // (h * w), (v % (h * w)) // w, v % w
        cycles += arch.event_issue_cycles
        taps = tap_mask(y, x, img.kernel, img.stride, img.padding, img.out_shape)
        for t, ok in enumerate(taps):
            if ok:
                oy, ox = (y + py - t // kw) // sy, (x + px - t % kw) // sx
                win = (c * h_out + oy) * w_out + ox
                cycles += 1
                last_fired = not fired[win]
                fired[win] = True
    return cycles + int(last_fired)


def write_accel_verilog(acc: Accelerator, out_dir: str | Path) -> Path:
    """``onespike_accel.v`` (the whole accelerator) and ``verilator.vlt`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verilator.vlt").write_text(VERILATOR_WAIVERS + PUBLIC_TOP)
    path = out / f"{TOP}.v"
    path.write_text(_kick_comb_blocks(verilog.convert(acc, name=TOP)))
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
        Per layer ``spikes_match``, ``rtl_cycles`` (the engine's counter), ``hwsim_cycles``
        and ``expected_cycles`` (what ``rtl_cycles`` is checked against); the controller's
        ``gap_cycles``; the seconds. Mismatches name the layer, the image, the first neuron
        and the phase.
    """
    from cocotb_tools.runner import get_runner

    env = simulator_env(sim)
    out = Path(out_dir).resolve()
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    acc = Accelerator(snn, arch)
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
    return _report(snn, acc, res, hw, case["images"], build_s)


def _report(snn, acc: Accelerator, res: dict, hw, case_images: list, build_s: float):
    got = res["images"]
    layers = []
    for p in acc.layers[1:]:
        i = p.index
        prefix = f"layer {i} ("
        errors = [e for e in res["errors"] if e.startswith(prefix)]
        regs = [g["registers"] for g in got]
        counters = {k: sum(r[f"{k}@{i}"] for r in regs) for k in COUNTERS}
        hw_counts = {k: int(hw.counts[k][i]) for k in CHECKED_COUNTS}
        name = snn.layers[i].name
        errors += [f"layer {i} ({name}): counter {k}: RTL {counters[k]}, hwsim {hw_counts[k]}"
                   for k in CHECKED_COUNTS if counters[k] != hw_counts[k]]  # fmt: skip
        spikes_ok = not any("first difference" in e for e in errors)
        layers.append(AccelLayerReport(
            i, snn.layers[i].name, p.kind, spikes_ok, [r[f"cycles@{i}"] for r in regs],
            [int(c) for c in hw.cycles_per_image[:, i]],
            [c["expected_cycles"][str(i)] for c in case_images], counters, hw_counts, errors,
        ))  # fmt: skip
    engine_sum = [sum(r.rtl_cycles[n] for r in layers) for n in range(len(got))]
    total = [g["registers"]["cycles"] for g in got]
    reported = tuple(f"layer {r.index} (" for r in layers)
    rest = [e for e in res["errors"] if not e.startswith(reported)]
    return AccelReport(
        layers, [g["class"] for g in got], total,
        [t - s for t, s in zip(total, engine_sum, strict=True)], res["sim_s"], res["load_s"],
        res["readback_s"], build_s, rest,
    )  # fmt: skip
