"""`onespike verilog ART -o DIR`: the take-away folder (rtl/package.py) — its layout, its
reports, and its FuseSoC core's lint (Verilator) and sim (Icarus) targets, run as a user would."""

from __future__ import annotations

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
    """The folder `onespike verilog` writes for the tiny net (P = 4, 2 digits images)."""
    d = tmp_path_factory.mktemp("pkg")
    art = d / f"{NAME}.safetensors"
    tiny_cnn().save(art)
    out = d / "out"
    assert main(["verilog", str(art), "--preset", "p4", "--images", "2", "-o", str(out)]) == 0
    return out


def fusesoc(pkg: Path, target: str, work: Path, env: dict | None = None):
    exe = Path(sys.executable).with_name("fusesoc")
    if not exe.exists():
        skip_or_fail("fusesoc is not installed (scripts/setup.sh installs it)")
    cmd = [str(exe), "--cores-root", str(pkg), "run", f"--target={target}",
           "--build-root", str(work / "build"), VLNV]  # fmt: skip
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
