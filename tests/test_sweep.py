"""`onespike sweep` on a LocalCluster of 2 worker processes: rows equal serial hwsim.simulate,
a worker killed in the middle loses and duplicates no point, a killed sweep resumes, and every
user error of the grid is one line with exit status 2."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

import hwsim
from converter import ConversionConfig, convert, load
from hwsim.report import summary
from onespike.cli import main
from onespike.data import load_dataset
from onespike.pareto import pareto_front
from onespike.sweep import PointStore, expand, load_grid, run_sweep

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = """
lanes = [2, 4]
output_queue_depth = [4, 8]
T_w = [4, 8]
[constraints]
fit_memories = true
"""


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A small CNN on the real digits (sklearn), converted with T = 8, INT8 weights."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    x, _ = load_dataset("digits:128", "train")
    snn = convert(net, [x], ConversionConfig(T=8, Q=1.3), name="tiny")
    return snn.save(tmp_path_factory.mktemp("art") / "tiny.safetensors")


def _grid(tmp_path, text=GRID, name="grid.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _metrics(rows):
    keys = ("energy_pj", "latency_us", "cycles", "lane_utilisation", "ann_over_snn_energy",
            "eq6_fp32", "eq6_int8", "accuracy", "area_mm2")  # fmt: skip
    return {r["config_hash"]: tuple(r[k] for k in keys) for r in rows}


def test_rows_equal_serial_simulate(artifact, client, tmp_path):
    from converter.requantize import with_wait
    from onespike.simreport import load_images

    res = run_sweep(artifact, _grid(tmp_path), tmp_path / "out", images=6, client=client)
    assert res.points == len(res.rows) == 8 and res.failed == 0 and res.ran == 8
    snn = load(artifact)
    x, y, _ = load_images(snn, None, 6)
    points, _ = expand(load_grid(_grid(tmp_path)), snn)
    by_hash = {r["config_hash"]: r for r in res.rows}
    for p in points:
        row = by_hash[p.config_hash(6, "digits")]
        assert row["status"] == "ok" and row["lanes"] == p.arch.lanes and row["T_w"] == p.t_w
        net = with_wait(snn, p.t_w)
        sim = hwsim.simulate(net, x, p.arch)  # serial, in this process
        s = summary(sim, net, labels=y.numpy())
        assert row["energy_pj"] == pytest.approx(s["per_image"]["energy_pj"], rel=1e-12)
        assert row["latency_us"] == pytest.approx(s["per_image"]["image_latency_us"], rel=1e-12)
        assert row["cycles"] == pytest.approx(s["per_image"]["cycles"]["total"], rel=1e-12)
        assert row["ann_over_snn_energy"] == pytest.approx(
            s["ann_mac_array"]["e_ann_over_e_snn"], rel=1e-12
        )
        assert row["eq6_fp32"] == s["eq6"]["fp32"]["ratio"]
        assert row["eq6_int8"] == s["eq6"]["int8"]["ratio"]
        assert row["accuracy"] == s["accuracy"]
        util = sim.counts["adds"].sum() / (p.arch.lanes * sim.adder_cycles.sum())
        assert row["lane_utilisation"] == pytest.approx(util, rel=1e-12)
    # the same sweep in this process gives the same table
    serial = run_sweep(artifact, _grid(tmp_path), tmp_path / "serial", images=6, report=False)
    assert _metrics(serial.rows) == _metrics(res.rows)
    for f in ("points.csv", "points.parquet", "report.md", "pareto.png"):
        assert (tmp_path / "out" / f).is_file()
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "points.parquet").to_pylist()
    assert _metrics(table) == _metrics(res.rows)


def test_killed_worker_loses_and_duplicates_no_point(artifact, client, tmp_path):
    text = "lanes = [1, 2, 4, 8]\noutput_queue_depth = [8, 16, 32]\n"
    pids = client.run(os.getpid)
    killed = {}

    def kill_one(row):
        if killed:
            return
        busy = {w: ks for w, ks in client.processing().items() if ks}
        worker = next(iter(busy), None) or next(iter(pids))
        killed["worker"], killed["tasks"] = worker, len(busy.get(worker, ()))
        os.kill(pids[worker], signal.SIGKILL)

    res = run_sweep(
        artifact, _grid(tmp_path, text), tmp_path / "out", images=20, client=client,
        on_result=kill_one, report=False,
    )  # fmt: skip
    assert killed and killed["tasks"] > 0  # the worker died with points in hand
    assert res.points == 12 and res.ran == 12 and res.failed == 0
    rows = PointStore(tmp_path / "out").load()
    hashes = [r["config_hash"] for r in rows]
    assert len(hashes) == len(set(hashes)) == 12
    serial = run_sweep(artifact, _grid(tmp_path, text), tmp_path / "s", images=20, report=False)
    assert _metrics(rows) == _metrics(serial.rows)


def test_killed_sweep_resumes(artifact, tmp_path):
    grid = _grid(tmp_path)
    out = tmp_path / "out"
    seen = []

    def die(row):
        seen.append(row)
        if len(seen) == 3:
            raise KeyboardInterrupt  # the sweep is killed after 3 points

    with pytest.raises(KeyboardInterrupt):
        run_sweep(artifact, grid, out, images=2, on_result=die, report=False)
    with (out / "points.csv").open("a") as f:
        f.write("7,deadbeef,abc,ok,,2,500")  # a line cut off by the kill
    res = run_sweep(artifact, grid, out, images=2)
    assert (res.resumed, res.ran, res.points) == (3, 5, 8)
    rows = PointStore(out).load()
    assert sorted(r["point"] for r in rows) == list(range(8))
    fresh = run_sweep(artifact, grid, tmp_path / "fresh", images=2, report=False)
    assert _metrics(rows) == _metrics(fresh.rows)
    # nothing left to do: a third run simulates nothing
    assert run_sweep(artifact, grid, out, images=2, report=False).ran == 0
    # another artifact (another checksum) is not taken for this one
    snn = load(artifact)
    other = replace(snn, meta={**snn.meta, "model": "other"}).save(tmp_path / "other.safetensors")
    assert run_sweep(other, grid, out, images=2, report=False).ran == 8
    assert len(PointStore(out).load()) == 16


def test_failed_point_is_recorded_and_the_sweep_goes_on(artifact, tmp_path):
    # 1 KiB of weight SRAM does not hold the network: every point of that value fails
    grid = _grid(tmp_path, "lanes = [2]\nweight_sram_kib = [1, 256]\n")
    res = run_sweep(artifact, grid, tmp_path / "out", images=1)
    status = {r["weight_sram_kib"]: (r["status"], r["error"]) for r in res.rows}
    assert status[256.0] == ("ok", "")
    assert status[1.0][0] == "error" and "ArchFitError" in status[1.0][1]
    assert "Failed points (1)" in (tmp_path / "out" / "report.md").read_text()


def test_cli_sweep(artifact, tmp_path, capsys):
    grid = _grid(tmp_path, "lanes = [2, 4]\noutput_queue_depth = [2, 8]\n")
    out = tmp_path / "out"
    assert main(["sweep", str(artifact), "--grid", str(grid), "--serial", "--no-progress",
                 "-o", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr()
    assert "3 points" in text.out  # lanes 4 with depth 2 is no configuration: left out
    assert "left out 1 combinations" in text.err
    assert (out / "report.md").is_file() and (out / "pareto.png").is_file()


@pytest.mark.parametrize(
    "text, message",
    [
        ("lanes = [4\n", "not valid TOML"),
        ("lane = [4]\n", "unknown ArchConfig field lane"),
        ("clock = [500]\n", "clock has no unit, write clock_mhz"),
        ("lanes = [0, 4]\n", "lanes = 0 gives no valid configuration: lanes must be positive"),
        ("lanes = [4.5]\n", "lanes must be an int"),
        ("lanes = []\n", "lanes is an empty list"),
        ("lanes = [4]\noutput_queue_depth = [2]\n", "output_queue_depth must be at least lanes"),
        ("lanes = [4]\n[energy]\nadd = [1]\n", "energy.add has no unit, write energy.add_pj"),
        ("lanes = [4]\n[constraints]\nmax_area = 1\n", "unknown constraint max_area"),
        ("lanes = [4]\n[constraints]\nmax_area_mm2 = -1\n", "must be a positive number"),
        ("lanes = [4]\nT_w = [-1]\n", "T_w must be a non-negative int"),
        ("name = ['a']\n", "name cannot be swept"),
        ("preset = 'p5'\nlanes = [4]\n", "unknown arch preset"),
        ("lanes = [4]\n[constraints]\nmax_area_mm2 = 0.001\n", "every combination is left out"),
    ],
)
def test_grid_errors_are_one_line_exit_2(artifact, tmp_path, capsys, text, message):
    grid = _grid(tmp_path, text)
    code = main(["sweep", str(artifact), "--grid", str(grid), "--serial", "--no-progress",
                 "-o", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("onespike sweep: error: "), err
    assert message in err, err


def test_pareto_front():
    rows = [
        {"status": "ok", "energy_pj": 1.0, "latency_us": 5.0, "area_mm2": 1.0},
        {"status": "ok", "energy_pj": 2.0, "latency_us": 2.0, "area_mm2": 1.0},
        {"status": "ok", "energy_pj": 2.0, "latency_us": 6.0, "area_mm2": 1.0},  # dominated
        {"status": "ok", "energy_pj": 3.0, "latency_us": 6.0, "area_mm2": 0.5},
        {"status": "error", "energy_pj": None, "latency_us": None, "area_mm2": None},
    ]
    assert pareto_front(rows) == [True, True, False, True, False]
    assert np.sum(pareto_front(rows, ("energy_pj", "latency_us"))) == 2
