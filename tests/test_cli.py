"""The command line: demo, convert → eval → info round trip, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onespike.cli import main
from onespike.models import DigitsCNN, train_digits_cnn

MODEL_FILE = """
from onespike.models import DigitsCNN


def build():
    return DigitsCNN()
"""


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> tuple[Path, Path]:
    """A user's model file and its checkpoint (.safetensors), as `convert` expects them."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("user")
    model, _ = train_digits_cnn(seed=0, epochs=5)
    (d / "nets.py").write_text(MODEL_FILE)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "ckpt.safetensors")
    return d / "nets.py", d / "ckpt.safetensors"


def test_demo_writes_report(tmp_path: Path, capsys) -> None:
    assert main(["demo", "-o", str(tmp_path / "r"), "--T", "8", "--Q", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "| exact |" in out and "| int |" in out
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    table = {row["mode"]: row for row in res["table"]}
    assert table["exact"]["accuracy"] > 90.0
    for name in ("report.md", "accuracy_vs_tw.png", "digits_snn.safetensors"):
        assert (tmp_path / "r" / name).stat().st_size > 0
    # the demo ends with the Verilog of every layer and a co-simulation of one digit
    assert "every layer matches golden int and hwsim" in out
    assert len(list((tmp_path / "r" / "rtl" / "verilog").glob("layer*.v"))) == 5


def test_verilog_and_cosim_commands(tmp_path: Path, capsys, monkeypatch) -> None:
    from converter import ConversionConfig, convert
    from onespike.data import load_digits

    model, _ = train_digits_cnn(seed=0, epochs=5)
    x_tr, _, _, _ = load_digits(seed=0)
    art = convert(model, [x_tr[:256]], ConversionConfig(T=6), progress=False).save(
        tmp_path / "a.safetensors"
    )
    out = tmp_path / "v"
    assert main(["verilog", str(art), "--preset", "p4", "--layer", "5", "-o", str(out)]) == 0
    meta = json.loads((out / "rtl" / "layer5.json").read_text())
    assert meta["parameters"]["kind"] == "output" and meta["arch"]["lanes"] == 4
    check_error(["verilog", str(art), "--layer", "0", "-o", str(out)], "(input, input)", capsys)
    check_error(["verilog", str(art), "--layer", "9", "-o", str(out)], "does not exist", capsys)
    check_error(["cosim", str(art), "--images", "0"], "--images must be a positive int", capsys)
    monkeypatch.setenv("SIM", "modelsim")
    check_error(["cosim", str(art), "-o", str(tmp_path / "c")], "simulator must be one of",
                capsys)  # fmt: skip


def test_convert_eval_info_round_trip(user_model, tmp_path: Path, capsys) -> None:
    nets, ckpt = user_model
    art = tmp_path / "d.safetensors"
    assert (
        main(["convert", f"{nets}:build", str(ckpt), "--calib", "digits:400", "-o", str(art)]) == 0
    )
    assert (
        main(
            [
                "eval",
                str(art),
                "--data",
                "digits:200",
                "--mode",
                "exact,int",
                "--model",
                f"{nets}:build",
                "--checkpoint",
                str(ckpt),
                "--json",
                str(tmp_path / "t.json"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["mode"] for r in rows] == ["ANN (PyTorch)", "exact", "int"]
    assert abs(rows[1]["delta"]) < 3.0
    assert main(["info", str(art)]) == 0
    assert "features_2" in capsys.readouterr().out


def check_error(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_eval_of_a_corrupt_artifact_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not an artifact at all")
    check_error(["eval", str(bad), "--data", "digits"], "is not a one-spike artifact", capsys)


def test_convert_refuses_pickled_checkpoints(user_model, tmp_path: Path, capsys) -> None:
    nets, _ = user_model
    pt = tmp_path / "evil.pt"
    torch.save({"state_dict": DigitsCNN().state_dict(), "obj": object()}, pt)
    check_error(
        [
            "convert",
            f"{nets}:build",
            str(pt),
            "--calib",
            "digits:64",
            "-o",
            str(tmp_path / "x.safetensors"),
        ],
        "weights_only=True",
        capsys,
    )


def test_convert_bad_model_spec(tmp_path: Path, capsys) -> None:
    check_error(
        ["convert", "no_colon", "none", "--calib", "digits", "-o", str(tmp_path / "x")],
        "model must be MODULE:FACTORY",
        capsys,
    )


def test_convert_bad_parameter(user_model, tmp_path: Path, capsys) -> None:
    nets, ckpt = user_model
    check_error(
        [
            "convert",
            f"{nets}:build",
            str(ckpt),
            "--calib",
            "digits:64",
            "--Q",
            "2.5",
            "-o",
            str(tmp_path / "x"),
        ],
        "Q must be in (1, 2] or 'auto', got 2.5",
        capsys,
    )


def test_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    for opt in (
        "--T ",
        "--Q ",
        "--T-w",
        "--T-in",
        "--no-threshold-shift",
        "--percentile",
        "--per-layer",
        "--weight-bits",
        "--acc-bits",
        "--input-mean",
        "--input-std",
        "--input-scale",
        "--calib",
    ):
        assert opt in out
