"""`onespike simulate`: the report files, their columns, totals equal to hwsim.simulate, and the
error messages of bad accelerator configurations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import hwsim
from archspec.config import CONFIG_DIR, COSTED_ACTIONS
from converter import ConversionConfig, convert, load
from hwsim.report import ann_mac_array
from onespike.cli import main
from onespike.data import load_digits
from onespike.models import train_digits_cnn
from onespike.simreport import load_images

FILES = ("layers.csv", "summary.json", "report.md", "energy_per_layer.png", "cycles_per_layer.png")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """The digits CNN (5 epochs), converted with the defaults and saved."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = train_digits_cnn(seed=0, epochs=5)
        x_tr, _, _, _ = load_digits(seed=0)
        snn = convert(model, list(x_tr[:512].split(256)), ConversionConfig(), progress=False)
    finally:
        torch.set_num_threads(before)
    return snn.save(tmp_path_factory.mktemp("sim") / "digits.safetensors")


def test_simulate_writes_report_equal_to_hwsim(artifact: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rep"
    argv = ["simulate", str(artifact), "--images", "3", "--preset", "p4", "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| total |" in text and "E_ANN/E_SNN" in text
    for name in FILES:
        assert (out / name).stat().st_size > 0, name

    snn = load(artifact)
    arch = hwsim.ArchConfig.preset("p4")
    x, y, spec = load_images(snn, None, 3)
    assert spec == "digits"
    res = hwsim.simulate(snn, x, arch)

    with (out / "layers.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == [*res.names, "total"]
    for col in (
        "busy_cycles",
        "stalled_cycles",
        "waiting_cycles",
        "latency_us",
        "adds",
        "spikes_out",
        "energy_pj",
        *(f"{a}_pj" for a in COSTED_ACTIONS),
        "lane_utilisation",
        "queue_peak",
        "ann_macs",
        "ann_array_cycles",
        "ann_array_energy_pj",
        "ann_over_snn_energy",
        "eq6_fp32_ann_pj",
        "eq6_int8_snn_pj",
    ):
        assert col in rows[0], col
    for i, r in enumerate(rows[:-1]):
        assert float(r["adds"]) == pytest.approx(res.counts["adds"][i] / 3)
        assert float(r["busy_cycles"]) == pytest.approx(res.cycles["busy"][i] / 3)
    assert float(rows[-1]["energy_pj"]) == pytest.approx(res.total_energy_pj().sum() / 3)

    summ = json.loads((out / "summary.json").read_text())
    pi = summ["per_image"]
    assert pi["cycles"]["total"] == pytest.approx(res.total_cycles.sum() / 3)
    assert pi["energy_pj"] == pytest.approx(res.total_energy_pj().sum() / 3)
    assert pi["adds"] == pytest.approx(res.counts["adds"].sum() / 3)
    assert summ["predictions"] == res.predictions.tolist()
    assert summ["accuracy"] == pytest.approx(100.0 * float(np.mean(res.predictions == y.numpy())))
    assert summ["arch"]["lanes"] == 4 and summ["images"] == 3
    ann = ann_mac_array(snn, arch)
    assert summ["ann_mac_array"]["energy_pj"] == pytest.approx(ann["energy_pj"].sum())
    assert summ["ann_mac_array"]["e_ann_over_e_snn"] == pytest.approx(
        ann["energy_pj"].sum() / pi["energy_pj"]
    )
    macs = ann["macs"].sum()
    assert summ["eq6"]["fp32"]["ratio"] == pytest.approx(
        macs * (3.7 + 0.9) / (pi["adds"] * 0.9), rel=1e-9
    )
    assert "E_ANN / E_SNN, like for like" in (out / "report.md").read_text()


def test_simulate_pipelined_arch_file(artifact: Path, tmp_path: Path) -> None:
    arch_file = tmp_path / "a.toml"
    arch_file.write_text((CONFIG_DIR / "p16.toml").read_text().replace('"p16"', '"mine"'))
    out = tmp_path / "rep"
    argv = ["simulate", str(artifact), "--arch", str(arch_file), "--images", "2"]
    assert main([*argv, "--mode", "pipelined", "--data", "digits", "-o", str(out)]) == 0
    summ = json.loads((out / "summary.json").read_text())
    snn = load(artifact)
    x, _, _ = load_images(snn, "digits", 2)
    res = hwsim.simulate(snn, x, hwsim.ArchConfig.from_toml(arch_file), mode="pipelined")
    assert summ["arch"]["name"] == "mine" and summ["mode"] == "pipelined"
    assert summ["stream"]["first_image_latency_us"] == pytest.approx(res.first_image_latency_us())
    assert summ["stream"]["images_per_s"] == pytest.approx(res.images_per_s())


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("lanes = 0\n", "lanes must be positive, got 0"),
        ("lanes = 4\nclock = 500.0\n", "clock has no unit, write clock_mhz"),
        ("lanes = 4\nbogus_kib = 1.0\n", "unknown key bogus_kib"),
        ("lanes = [\n", "a.toml"),
        ("potential_sram_kib = 0.01\n", "KiB of potential memory, potential_sram_kib = 0.01"),
    ],
)
def test_simulate_bad_arch(artifact: Path, tmp_path: Path, capsys, toml: str, message: str):
    arch_file = tmp_path / "a.toml"
    arch_file.write_text(toml)
    argv = ["simulate", str(artifact), "--arch", str(arch_file), "-o", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("onespike simulate: error:") and message in err, err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_simulate_errors(artifact: Path, tmp_path: Path, capsys) -> None:
    out = ["-o", str(tmp_path / "r")]
    assert main(["simulate", str(tmp_path / "none.safetensors"), *out]) == 2
    assert "no such artifact" in capsys.readouterr().err
    assert main(["simulate", str(artifact), "--arch", str(tmp_path / "no.toml"), *out]) == 2
    assert "no such arch file" in capsys.readouterr().err
    assert main(["simulate", str(artifact), "--preset", "p3", *out]) == 2
    assert "unknown arch preset 'p3'" in capsys.readouterr().err
    assert main(["simulate", str(artifact), "--images", "0", *out]) == 2
    assert "--images must be a positive int" in capsys.readouterr().err
