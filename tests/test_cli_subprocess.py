"""The installed `onespike` command as a user runs it: a subprocess in a scratch folder, with
relative paths, exactly as the README writes the commands; and every subcommand's user errors
(one line on stderr, exit status 2, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import require_simulator, skip_or_fail

#: The console script of the environment running the tests (scripts/setup.sh installs it).
ONESPIKE = str(Path(sys.executable).with_name("onespike"))
ARTIFACT = "demo-report/digits_snn.safetensors"


def run(cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's shell
    return subprocess.run(
        [ONESPIKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def check_ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`onespike demo` run in a scratch folder (README's first command, after set-up)."""
    require_simulator(os.environ.get("SIM", "icarus"))
    cwd = tmp_path_factory.mktemp("user")
    return cwd, run(cwd, "demo")


def test_demo_from_another_folder(demo) -> None:
    cwd, p = demo
    out = check_ok(p)
    assert "| exact |" in out and "| int |" in out
    assert "every layer matches golden int and hwsim" in out
    res = json.loads((cwd / "demo-report" / "results.json").read_text())
    table = {row["mode"]: row for row in res["table"]}
    assert table["exact"]["accuracy"] > 90.0
    assert res["rtl"]["ok"] is True and "error" not in res["rtl"]
    for name in ("report.md", "accuracy_vs_tw.png", "digits_snn.safetensors"):
        assert (cwd / "demo-report" / name).stat().st_size > 0
    assert len(list((cwd / "demo-report" / "rtl" / "verilog").glob("layer*.v"))) == 5


def test_readme_commands_from_another_folder(demo) -> None:
    """The README's verilog, simulate, cosim (and info, export) on the demo's artifact, from
    the folder the demo ran in and from a sibling folder."""
    cwd, p = demo
    check_ok(p)
    check_ok(run(cwd, "verilog", ARTIFACT, "--preset", "p16", "-o", "verilog/"))
    assert (cwd / "verilog" / "rtl" / "onespike_accel.v").is_file()  # the whole accelerator
    assert (cwd / "verilog" / "digits_snn.core").is_file()
    assert (cwd / "verilog" / "reports" / "estimate_cycles.json").is_file()
    out = check_ok(run(cwd, "simulate", ARTIFACT, "--preset", "p16", "--images", "2", "-o", "sim/"))
    assert (cwd / "sim" / "summary.json").is_file() and "output" in out
    out = check_ok(run(cwd, "cosim", ARTIFACT, "--images", "1"))  # the whole accelerator
    assert "MISMATCH" not in out and "every layer matches golden int and hwsim" in out
    assert (cwd / "build-rtl" / "cosim" / "accel" / "verilog" / "onespike_accel.v").is_file()
    elsewhere = cwd / "elsewhere"
    elsewhere.mkdir()
    rel = f"../{ARTIFACT}"
    assert "output" in check_ok(run(elsewhere, "info", rel))
    check_ok(run(elsewhere, "cosim", rel, "--images", "1", "--layer", "1", "-o", "c"))
    assert (elsewhere / "c" / "layer1" / "result.json").is_file()
    check_ok(run(elsewhere, "export", rel, "--nir", "net.nir"))
    assert (elsewhere / "net.nir").stat().st_size > 0


HELPER = """
import torch.nn as nn


def head(n):
    return nn.Linear(16 * 2 * 2, n)
"""

NETS = """
import torch.nn as nn
from helper import head  # a module beside this file


def build():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), head(10))
"""


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A user's folder: a model file importing a helper beside it, the same as a package, and
    checkpoints in the layouts training scripts write."""
    d = tmp_path_factory.mktemp("mine")
    (d / "helper.py").write_text(HELPER)
    (d / "nets.py").write_text(NETS)
    (d / "mypkg").mkdir()
    (d / "mypkg" / "__init__.py").write_text("")
    (d / "mypkg" / "helper.py").write_text(HELPER)
    (d / "mypkg" / "nets.py").write_text(NETS.replace("from helper", "from mypkg.helper"))
    sys.path.insert(0, str(d))
    try:
        import nets  # noqa: PLC0415

        state = nets.build().state_dict()
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("nets", None)
        sys.modules.pop("helper", None)
    torch.save(
        {"net": {f"module.{k}": v for k, v in state.items()}, "acc": 91.2, "epoch": 7},
        d / "dataparallel.pth",
    )
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, d / "compiled.pt")
    bad = dict(state)
    bad["0.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(bad, d / "wrong_shape.pt")
    (d / "notes.pt").write_text("not a checkpoint")
    (d / "fake.onnx").write_text("not an onnx file")
    return d


@pytest.mark.parametrize(
    "spec, ckpt, calib",
    [("nets.py:build", "dataparallel.pth", "percentile"),
     ("mypkg.nets:build", "compiled.pt", "weights")],
    ids=["py-file-dataparallel-checkpoint", "dotted-module-compiled-checkpoint-weights"],
)  # fmt: skip
def test_convert_and_eval_users_files(user_folder: Path, spec: str, ckpt: str, calib: str):
    out = check_ok(
        run(
            user_folder,
            "convert",
            spec,
            ckpt,
            "--calib",
            "digits:64",
            "--T",
            "8",
            "-o",
            "net.safetensors",
            "--calibration",
            calib,
        )  # fmt: skip
    )
    assert "wrote net.safetensors" in out
    out = check_ok(run(user_folder, "eval", "net.safetensors", "--data", "digits:40", "--mode",
                       "exact"))  # fmt: skip
    assert "| exact |" in out


def test_convert_an_onnx_model(user_folder: Path) -> None:
    """`onespike convert model.onnx none ...` (legacy exporter, opset 17), then eval."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        skip_or_fail("the [onnx] extra is not installed (scripts/setup.sh installs it)")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).eval()  # fmt: skip
    torch.onnx.export(model, torch.rand(1, 1, 8, 8), str(user_folder / "m.onnx"), dynamo=False,
                      opset_version=17)  # fmt: skip
    out = check_ok(run(user_folder, "convert", "m.onnx", "none", "--calib", "digits:64", "-o",
                       "m.safetensors"))  # fmt: skip
    assert "wrote m.safetensors" in out
    assert "| ann |" in check_ok(run(user_folder, "eval", "m.safetensors", "--data", "digits:20",
                                     "--mode", "ann"))  # fmt: skip


#: (subcommand and arguments, a fragment the one-line message must contain)
USER_ERRORS = [
    (["convert", "nocolon", "none", "--calib", "digits", "-o", "a.st"], "MODULE:FACTORY"),
    (["convert", "missing.py:build", "none", "--calib", "digits", "-o", "a.st"], "no such model"),
    (["convert", "nets.py:nothere", "none", "--calib", "digits", "-o", "a.st"], "no callable"),
    (
        ["convert", "nets.py:build", "wrong_shape.pt", "--calib", "digits", "-o", "a.st"],
        "does not fit the model",
    ),
    (
        ["convert", "nets.py:build", "notes.pt", "--calib", "digits", "-o", "a.st"],
        "cannot be read with weights_only=True",
    ),
    (["convert", "nets.py:build", "compiled.pt", "--calib", "nosuch", "-o", "a.st"], "nosuch"),
    (
        ["convert", "nets.py:build", "compiled.pt", "--calib", "digits", "--T", "0", "-o", "a.st"],
        "T must be in",
    ),
    (
        ["convert", "nets.py:build", "compiled.pt", "--calib", "digits", "--T", "x", "-o", "a.st"],
        "invalid int value",
    ),
    (["eval", "notes.pt", "--data", "digits"], "not a one-spike artifact"),
    (["eval", "nothere.safetensors", "--data", "digits"], "no such artifact"),
    (["info", "notes.pt"], "not a one-spike artifact"),
    (["simulate", "notes.pt", "-o", "s"], "not a one-spike artifact"),
    (["verilog", "notes.pt", "-o", "v"], "not a one-spike artifact"),
    (["cosim", "notes.pt"], "not a one-spike artifact"),
    (["export", "notes.pt", "--nir", "n.nir"], "not a one-spike artifact"),
    (["demo", "-o", "notes.pt"], "notes.pt"),
    (["convert", "fake.onnx", "none", "--calib", "digits", "-o", "a.st"], "not an ONNX model"),
    (["bogus"], "invalid choice"),
]


@pytest.mark.parametrize("args, fragment", USER_ERRORS, ids=lambda v: "-".join(v)[:40]
                         if isinstance(v, list) else None)  # fmt: skip
def test_user_errors_are_one_line_exit_2(user_folder: Path, args: list[str], fragment: str):
    p = run(user_folder, *args, timeout=300)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"onespike {args[0]}: error: ") or args[0] == "bogus", lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in p.stderr
