"""`onespike gcn` (train, convert, evaluate a graph network) and the graph side of `onespike
eval` / `onespike convert`, in process, on Cora."""

from __future__ import annotations

import json

import pytest

from onespike.cli import main
from tests.conftest import _require


@pytest.fixture(scope="module")
def cora_report(tmp_path_factory):
    _require("planetoid/cora.npz")
    out = tmp_path_factory.mktemp("gcn") / "cora"
    assert main(["gcn", "cora", "-o", str(out)]) == 0
    return out


def test_gcn_writes_artifact_and_report(cora_report, capsys):
    rows = json.loads((cora_report / "results.json").read_text())["rows"]
    acc = {r["mode"]: r["accuracy"] for r in rows}
    assert set(acc) == {"ANN (PyTorch)", "ann", "exact", "int", "pipelined"}
    assert abs(acc["ann"] - acc["ANN (PyTorch)"]) < 0.2
    assert acc["exact"] > acc["ANN (PyTorch)"] - 1.5 and acc["int"] > acc["exact"] - 1.0
    assert "| exact |" in (cora_report / "report.md").read_text()
    assert (cora_report / "cora_ann.safetensors").is_file()


def test_eval_of_a_graph_artifact(cora_report, capsys, tmp_path):
    art = str(cora_report / "cora_snn.safetensors")
    out = tmp_path / "rows.json"
    assert main(["eval", art, "--data", "cora", "--mode", "int", "--json", str(out)]) == 0
    want = {
        r["mode"]: r["accuracy"]
        for r in json.loads((cora_report / "results.json").read_text())["rows"]
    }
    assert json.loads(out.read_text())[0]["accuracy"] == want["int"]
    capsys.readouterr()
    assert main(["eval", art, "--data", "mnist"]) == 2
    assert "is a graph network: --data must be one of cora" in capsys.readouterr().err
    _require("planetoid/citeseer.npz")
    assert main(["eval", art, "--data", "citeseer"]) == 2
    assert "3327 nodes, the artifact's graph 2708" in capsys.readouterr().err


def test_convert_a_users_gcn_with_a_graph_as_calibration(cora_report, tmp_path):
    from converter import load

    src = tmp_path / "mygcn.py"
    src.write_text(
        "from onespike import gcn, graphs\n"
        "def build():\n"
        "    data = graphs.load_planetoid('cora')\n"
        "    return gcn.GCN(data.adj, data.num_features, data.num_classes)\n"
    )
    art = tmp_path / "g.safetensors"
    assert main(["convert", f"{src}:build", "none", "--calib", "cora", "-o", str(art)]) == 0
    assert load(art).meta["graph"] == {"nodes": 2708, "features": 1433, "one_hot": False}


def test_simulate_a_graph_artifact(cora_report, tmp_path, capsys):
    """hwsim on Cora's SNN from the command line: the graph is found from its node count, the
    default 256 KiB SRAMs are refused by layer, 1 MiB ones fit, and the test-node accuracy is
    golden int's."""

    from archspec.config import CONFIG_DIR

    art = str(cora_report / "cora_snn.safetensors")
    capsys.readouterr()
    assert main(["simulate", art, "-o", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "layer 1 (lin0_rails) needs" in capsys.readouterr().err
    base = CONFIG_DIR / "default.toml"
    text = base.read_text().replace("= 256.0", "= 1024.0").replace("banks = 4", "banks = 16")
    (tmp_path / "big.toml").write_text(text)
    argv = ["simulate", art, "--arch", str(tmp_path / "big.toml"), "-o", str(tmp_path / "s")]
    assert main([*argv, "--no-progress"]) == 0
    rows = json.loads((cora_report / "results.json").read_text())["rows"]
    want = next(r["accuracy"] for r in rows if r["mode"] == "int")
    assert f"test-node accuracy {want:.2f} %" in capsys.readouterr().out
