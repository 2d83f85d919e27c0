"""`onespike verilog ART -o DIR`: the take-away folder (rtl/package.py) — its layout, its
reports, and its FuseSoC core's lint (Verilator) and sim (Icarus) targets, run as a user would:
the whole accelerator (the default, on the digits net) and the per-layer engines (``--all``,
``--layer N``, on a tiny net)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from converter import ConversionConfig, convert
from onespike.cli import main
from tests.conftest import require_simulator, skip_or_fail

NAME = "tiny_cnn"
VLNV = f"onespike:snn:{NAME}"
#: The accelerator package of the digits net (the artifact's name).
ACCEL = "digits_snn"
ACCEL_VLNV = f"onespike:snn:{ACCEL}"


def tiny_cnn():
    """A random conv → max pool → linear net on the digits' 1×8×8 input (so the CLI finds
    its data set): one engine of each kind (layer, max pooling, output)."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.rand(32, 1, 8, 8, generator=g)
    return convert(net, x, ConversionConfig(T=4, Q=1.5, T_w=1, T_in=3), progress=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The per-layer folder `onespike verilog --all` writes for the tiny net (P = 4, 2 digits
    images)."""
    d = tmp_path_factory.mktemp("pkg")
    art = d / f"{NAME}.safetensors"
    tiny_cnn().save(art)
    out = d / "out"
    argv = ["verilog", str(art), "--all", "--preset", "p4", "--images", "2", "-o", str(out)]
    assert main(argv) == 0
    return out


def fusesoc(pkg: Path, target: str, work: Path, env: dict | None = None, vlnv: str = VLNV):
    exe = Path(sys.executable).with_name("fusesoc")
    if not exe.exists():
        skip_or_fail("fusesoc is not installed (scripts/setup.sh installs it)")
    cmd = [str(exe), "--cores-root", str(pkg), "run", f"--target={target}",
           "--build-root", str(work / "build"), vlnv]  # fmt: skip
    full = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=full, timeout=300)


def test_layout_and_reports(package: Path) -> None:
    layers = [1, 2, 3]  # conv, max pool, output
    for i in layers:
        for f in (f"rtl/layer{i}.v", f"rtl/layer{i}.json", f"tb/cases/layer{i}.json",
                  f"tb/stim/layer{i}_events.hex", f"tb/stim/layer{i}_cycles.hex"):  # fmt: skip
            assert (package / f).is_file(), f
    for f in ("rtl/verilator.vlt", f"rtl/{NAME}_layers.v", f"tb/tb_{NAME}.v", "tb/Makefile",
              "tb/run.py", "tb/onespike_bench.py", f"{NAME}.core", "README.md",
              "mem/layer1_weights.hex", "mem/layer3_weights.hex"):  # fmt: skip
        assert (package / f).is_file(), f
    assert not list((package / "rtl").glob("*.hex"))  # moved to mem/
    make = (package / "tb" / "Makefile").read_text()
    assert "SIM ?= icarus" in make and "VERILOG_SOURCES" in make and "COCOTB_TOPLEVEL" in make
    core = (package / f"{NAME}.core").read_text()
    assert core.startswith("CAPI=2:") and "  sim:" in core and "  lint:" in core

    cycles = json.loads((package / "reports" / "estimate_cycles.json").read_text())
    assert cycles["images"] == 2 and cycles["arch"]["lanes"] == 4
    for i in layers:
        case = json.loads((package / "tb" / "cases" / f"layer{i}.json").read_text())
        want = [im["hwsim_cycles"] for im in case["images"]]
        assert cycles["layers"][i]["cycles_per_image"] == want
    energy = json.loads((package / "reports" / "estimate_energy.json").read_text())
    assert energy["energy_pj_per_image"] > 0 and len(energy["layers"]) == 4
    res = json.loads((package / "reports" / "estimate_resources.json").read_text())
    assert set(res["modules"]) == {f"onespike_layer{i}" for i in layers}
    for key in ("cells", "flip_flop_bits", "memory_bits"):
        assert res["total"][key] == sum(m[key] for m in res["modules"].values()) > 0
    assert res["modules"]["onespike_layer1"]["memory_bits"] > 0


def test_fusesoc_lint_is_clean(package: Path, tmp_path: Path) -> None:
    require_simulator("verilator")
    from rtl.cosim import simulator_env

    p = fusesoc(package, "lint", tmp_path, simulator_env("verilator"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


def test_fusesoc_sim_passes(package: Path, tmp_path: Path) -> None:
    require_simulator("icarus")
    p = fusesoc(package, "sim", tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "PASS" in p.stdout
    for i in (1, 2, 3):
        assert f"layer {i}: 2 images, 0 mismatches" in p.stdout


def test_fusesoc_sim_names_a_wrong_spike(package: Path, tmp_path: Path) -> None:
    """The Verilog bench checks: a golden phase changed in the stimulus fails the run and
    names the neuron."""
    require_simulator("icarus")
    bad = tmp_path / "bad"
    shutil.copytree(package, bad)
    f = bad / "tb" / "stim" / "layer1_phases.hex"
    lines = f.read_text().split()
    j = next(k for k, v in enumerate(lines) if v != "ff")
    lines[j] = f"{int(lines[j], 16) + 1:02x}"
    f.write_text("\n".join(lines) + "\n")
    p = fusesoc(bad, "sim", tmp_path)
    assert p.returncode != 0 and "FAIL" in p.stdout
    assert f"layer 1 image 0: first difference at neuron {j}" in p.stdout


def test_cocotb_runner_without_the_project(package: Path, tmp_path: Path) -> None:
    """tb/run.py runs the cocotb bench from the folder alone (no PYTHONPATH to this repo)."""
    require_simulator("icarus")
    tb = shutil.copytree(package, tmp_path / "away") / "tb"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "run.py", "--layer", "2", "--layer", "3"], cwd=tb,
                       capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "layer 2: 2 images" in p.stdout and "layer 3: 2 images" in p.stdout


def test_unsupported_layer_is_one_line_exit_2(package: Path, capsys) -> None:
    art = package.parent / f"{NAME}.safetensors"
    out = package.parent / "bad"
    assert main(["verilog", str(art), "--layer", "0", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("onespike verilog: error:"), err


def test_switching_kinds_leaves_no_stale_file(package: Path, tmp_path: Path) -> None:
    """The accelerator's folder over a per-layer one (and back) keeps no file of the other
    kind; --layer N packages that layer alone."""
    art, out = package.parent / f"{NAME}.safetensors", tmp_path / "pkg"
    base = ["verilog", str(art), "--preset", "p4", "--images", "1", "-o", str(out)]
    assert main([*base, "--all"]) == 0
    assert main(base) == 0
    assert (out / "rtl" / "onespike_accel.v").is_file()
    stale = [*out.glob("rtl/layer*"), *out.glob("rtl/*_layers.v"), *out.glob("tb/cases/layer*"),
             *out.glob("tb/stim/layer*"), out / "tb" / "onespike_bench.py"]  # fmt: skip
    assert not [f for f in stale if f.exists()], stale
    assert main([*base, "--layer", "2"]) == 0
    assert sorted(f.name for f in out.glob("rtl/layer*")) == ["layer2.json", "layer2.v"]
    assert not list(out.glob("rtl/onespike_accel*")) and not list(out.glob("tb/stim/accel_*"))


def test_output_stationary_packages_its_accelerator(package: Path, tmp_path: Path) -> None:
    """With the output-stationary dataflow the default package is rtl.os_accel.OsAccelerator
    (one top, each group's weights in its own memory image), and its FuseSoC sim target (the
    plain-Verilog bench, which waits on tready while the first layer's sort takes the input)
    passes: every layer against golden int, the cycles and counters against hwsim."""
    require_simulator("icarus")
    arch = tmp_path / "os.toml"
    arch.write_text('dataflow = "output_stationary"\nlanes = 4\nweight_buffer_kib = 0.0\n')
    art = package.parent / f"{NAME}.safetensors"
    out = tmp_path / "o"
    argv = ["verilog", str(art), "--arch", str(arch), "--images", "2", "-o", str(out)]
    assert main(argv) == 0
    assert (out / "rtl" / "onespike_accel.v").is_file()
    assert (out / "mem" / "layer1_weights0.hex").is_file() and not list(out.glob("rtl/layer*"))
    p = fusesoc(out, "sim", tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "PASS: every layer matches golden int" in p.stdout


def test_graph_network_packages_the_accelerator(tmp_path: Path, capsys, monkeypatch) -> None:
    """A graph network gets the whole accelerator by default (its two-rail layers' buffers
    split into rail banks), and its FuseSoC sim target passes: every layer against golden
    int, the cycles and counters against hwsim."""
    from test_rtl_graph import small_gcn

    from onespike import rtlcli

    require_simulator("icarus")
    snn, x = small_gcn()
    art = snn.save(tmp_path / "gcn.safetensors")
    monkeypatch.setattr(rtlcli, "_graph_features", lambda snn, data: x)
    out = tmp_path / "o"
    assert main(["verilog", str(art), "-o", str(out)]) == 0
    assert "per-layer" not in capsys.readouterr().err
    top = json.loads((out / "rtl" / "onespike_accel.json").read_text())
    assert [lay["rail_split"] for lay in top["layers"]] == [None, 320, None, 120, None]
    assert top["layers"][2]["source_banks"] == [0, 1]
    p = fusesoc(out, "sim", tmp_path, vlnv="onespike:snn:gcn")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "PASS: every layer matches golden int and hwsim's cycles and counts (1 images)" in (
        p.stdout
    )


def test_graph_network_too_large_packages_the_engines(tmp_path: Path, capsys, monkeypatch) -> None:
    """A graph the accelerator refuses (an input buffer beyond the debug port's 2^20
    addresses) gets the per-layer package, with the reason on stderr (write_package stubbed:
    test_rtl_graph runs the engines)."""
    from test_rtl_graph import wide_gcn

    import rtl.package
    from onespike import rtlcli

    snn, x = wide_gcn()  # every feature 1: 1.28 M input events > 2^20
    art = snn.save(tmp_path / "gcn.safetensors")
    calls = []

    def fake(snn, arch, out, x, **kw):
        calls.append(kw)
        return Path(out) / "gcn.core"

    monkeypatch.setattr(rtl.package, "write_package", fake)
    monkeypatch.setattr(rtlcli, "_graph_features", lambda snn, data: x)
    assert main(["verilog", str(art), "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "does not run this network" in err and "2^20 addresses" in err
    assert calls == [{"name": "gcn", "layer": None, "engines": True}]


# --------------------------------------------------------------------------------------------
# the default: the whole accelerator (rtl.Accelerator), on the digits net
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(snn, folder, stdout): the digits CNN (default conversion) and the folder `onespike
    verilog` writes for it by default, the whole accelerator (P = 16, 2 digits test images)."""
    from onespike.data import load_digits
    from onespike.models import train_digits_cnn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small net: one thread is faster on a busy machine
    try:
        model, _ = train_digits_cnn(seed=0)
        x_tr, _, _, _ = load_digits(seed=0)
        snn = convert(model, list(x_tr.split(256)), ConversionConfig(), name="DigitsCNN",
                      progress=False)  # fmt: skip
        d = tmp_path_factory.mktemp("accel")
        art = snn.save(d / f"{ACCEL}.safetensors")
        out, text = d / "out", io.StringIO()
        with contextlib.redirect_stdout(text):
            assert main(["verilog", str(art), "--images", "2", "-o", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return snn, out, text.getvalue()


def golden_classes(snn) -> list[int]:
    """golden int's classes of the images the CLI packaged (the first 2 digits test images)."""
    import golden
    from onespike.simreport import load_images

    x = load_images(snn, None, 2)[0]
    return golden.run(snn, x, "int", device="cpu").predictions.tolist()


def test_accelerator_layout_and_reports(digits, tmp_path: Path) -> None:
    """The default folder holds the accelerator top (no per-layer engine), its memory images
    (the per-layer engines' contents), the benches and their data, and the reports: hwsim's
    cycles as the benches expect them, Yosys's counts of the top."""
    from hwsim import ArchConfig
    from rtl.generate import generate_verilog

    snn, pkg, text = digits
    for f in ("rtl/onespike_accel.v", "rtl/onespike_accel.json", "rtl/verilator.vlt",
              f"tb/tb_{ACCEL}.v", "tb/onespike_accel_bench.py", "tb/cases/accel.json",
              "tb/Makefile", "tb/run.py", "tb/stim/accel_input.hex",
              "tb/stim/accel_layer1_phases.hex", "tb/stim/accel_potentials.hex",
              f"{ACCEL}.core", "README.md"):  # fmt: skip
        assert (pkg / f).is_file(), f
    assert not list((pkg / "rtl").glob("layer*")) and not list((pkg / "rtl").glob("*_layers.v"))
    assert "\nmodule onespike_accel(" in (pkg / "rtl" / "onespike_accel.v").read_text()
    assert "the whole accelerator (module onespike_accel)" in text
    core = (pkg / f"{ACCEL}.core").read_text()
    assert core.startswith("CAPI=2:") and "  sim:" in core and "  lint:" in core
    assert "toplevel: onespike_accel" in core and f"toplevel: tb_{ACCEL}" in core
    make = (pkg / "tb" / "Makefile").read_text()
    assert "COCOTB_TOPLEVEL = onespike_accel" in make and "cases/accel.json" in make
    meta = json.loads((pkg / "rtl" / "onespike_accel.json").read_text())
    assert {"s_axis_tdata", "start", "done", "dbg_data", "reg_data"} <= {
        p["name"] for p in meta["ports"]}  # fmt: skip
    assert [lay["kind"] for lay in meta["layers"]] == [lay.kind for lay in snn.layers]
    # mem/: the engines' memories, as rtl/generate.py writes them for layer 1's engine alone
    generate_verilog(snn, ArchConfig(), tmp_path, layer=1)
    for kind in ("weights", "bias", "theta"):
        f = f"layer1_{kind}.hex"
        assert (pkg / "mem" / f).read_text() == (tmp_path / f).read_text(), f
    assert sorted(f.name for f in (pkg / "mem").glob("layer*_weights.hex")) == [
        f"layer{i}_weights.hex" for i, lay in enumerate(snn.layers)
        if lay.kind in ("neuron", "output")]  # fmt: skip

    case = json.loads((pkg / "tb" / "cases" / "accel.json").read_text())
    assert [im["argmax"] for im in case["images"]] == golden_classes(snn)
    cycles = json.loads((pkg / "reports" / "estimate_cycles.json").read_text())
    assert cycles["images"] == 2 and cycles["mode"] == "layer" and cycles["arch"]["lanes"] == 16
    for i in range(1, len(snn.layers)):
        want = [im["hwsim_cycles"][str(i)] for im in case["images"]]
        assert cycles["layers"][i]["cycles_per_image"] == want
    assert cycles["image_cycles"] == [im["hwsim_total_cycles"] for im in case["images"]]
    energy = json.loads((pkg / "reports" / "estimate_energy.json").read_text())
    assert energy["energy_pj_per_image"] > 0 and len(energy["layers"]) == len(snn.layers)
    res = json.loads((pkg / "reports" / "estimate_resources.json").read_text())
    assert res["top"] == "onespike_accel" and set(res["modules"]) == {"onespike_accel"}
    top = res["modules"]["onespike_accel"]
    for key in ("cells", "flip_flop_bits", "memory_bits"):
        assert res["total"][key] == top[key] > 0
    # the event buffers (32-bit words, the depths of the plan) are among its memories
    buffers = 32 * sum(lay["buffer_depth"] for lay in meta["layers"])
    assert top["memory_bits"] >= buffers > 0 and top["memories"] >= 5


def test_accelerator_fusesoc_sim_passes(digits, tmp_path: Path) -> None:
    """The sim target (Icarus, the plain-Verilog bench) passes, with golden int's classes."""
    require_simulator("icarus")
    snn, pkg, _ = digits
    p = fusesoc(pkg, "sim", tmp_path, vlnv=ACCEL_VLNV)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "PASS: every layer matches golden int and hwsim's cycles and counts (2 images)" in (
        p.stdout
    )
    for n, c in enumerate(golden_classes(snn)):
        assert f"image {n}: class {c}, 0 mismatches so far" in p.stdout


@pytest.mark.parametrize("what", ["spike", "cycles", "counts"])
def test_accelerator_fusesoc_sim_names_a_mismatch(digits, tmp_path: Path, what: str) -> None:
    """The bench checks: a golden phase of layer 1 (read back through the debug port),
    hwsim's cycles of an engine, or hwsim's count of an engine's counter, changed in its data
    fails the run and names the neuron, or the layer (and the counter)."""
    require_simulator("icarus")
    snn, pkg, _ = digits
    bad = shutil.copytree(pkg, tmp_path / "bad")
    if what == "spike":
        f = bad / "tb" / "stim" / "accel_layer1_phases.hex"
        lines = f.read_text().split()
        j = next(k for k, v in enumerate(lines) if v != "ff")
        lines[j] = f"{int(lines[j], 16) + 1:02x}"
        n, k = divmod(j, snn.layers[1].size)
        want = f"layer 1 ({snn.layers[1].name}) image {n}: first difference at neuron {k} "
    elif what == "cycles":
        f = bad / "tb" / "stim" / "accel_cycles.hex"
        lines = f.read_text().split()  # image 0: the total, then engine 1, 2, ...
        lines[2] = f"{int(lines[2], 16) + 1:08x}"
        want = f"layer 2 ({snn.layers[2].name}) image 0: {int(lines[2], 16) - 1} RTL cycles"
    else:
        case = json.loads((pkg / "tb" / "cases" / "accel.json").read_text())
        first = next(iter(case["hwsim_counts"]["2"]))  # engine 2's first counter
        f = bad / "tb" / "stim" / "accel_counts.hex"
        lines = f.read_text().split()  # per engine in run order (1, 2, ...), its counters
        j = len(case["hwsim_counts"]["1"])
        lines[j] = f"{int(lines[j], 16) + 1:016x}"
        want = f"layer 2 ({snn.layers[2].name}): counter {first}: RTL {int(lines[j], 16) - 1}, "
    f.write_text("\n".join(lines) + "\n")
    p = fusesoc(bad, "sim", tmp_path, vlnv=ACCEL_VLNV)
    assert p.returncode != 0 and "FAIL: 1 mismatches" in p.stdout, p.stdout[-3000:]
    assert want in p.stdout, p.stdout[-3000:]


def test_accelerator_fusesoc_lint_is_clean(digits, tmp_path: Path) -> None:
    require_simulator("verilator")
    from rtl.cosim import simulator_env

    p = fusesoc(digits[1], "lint", tmp_path, simulator_env("verilator"), vlnv=ACCEL_VLNV)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "%Warning" not in p.stdout + p.stderr


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_accelerator_cocotb_runner_without_the_project(digits, tmp_path: Path, sim) -> None:
    """tb/run.py runs the cocotb accelerator bench from the folder alone (no PYTHONPATH to
    this repo): golden int's classes, every check passed; under Verilator only the top's
    ports are public (the Makefile turns cocotb's --public-flat-rw off)."""
    require_simulator(sim)
    snn, pkg, _ = digits
    tb = shutil.copytree(pkg, tmp_path / "away") / "tb"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "run.py", "--sim", sim], cwd=tb, capture_output=True,
                       text=True, env=env, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS" in p.stdout
    for n, c in enumerate(golden_classes(snn)):
        assert f"image {n}: class {c}," in p.stdout
    if sim == "verilator":
        # Verilator's record of its command line (for --skip-identical)
        dat = (tb / "sim_build" / "accel" / "Vtop__verFiles.dat").read_text().splitlines()
        cmds = next(line for line in dat if line.startswith('C "'))
        assert cmds.rindex("--no-public-flat-rw") > cmds.rindex("--public-flat-rw"), cmds
