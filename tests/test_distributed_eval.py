"""golden.evaluate sharded over a LocalCluster of 2 worker processes equals golden.run (int
mode bit for bit), runs every sample exactly once, and `onespike eval --scheduler` agrees with
the serial `onespike eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import golden
from converter import ConversionConfig, convert
from onespike.cli import main
from onespike.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def snn_and_data(tmp_path_factory):
    """A small CNN converted on the real digits (sklearn); the 450 test digits."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(96, 24), nn.ReLU(), nn.Linear(24, 10),
    ).eval()  # fmt: skip
    xtr, _ = load_dataset("digits:128", "train")
    snn = convert(net, [xtr], ConversionConfig(T=8, Q=1.3), name="tiny")
    path = snn.save(tmp_path_factory.mktemp("art") / "tiny.safetensors")
    x, y = load_dataset("digits", "test")
    return snn, path, x, y


def _same_counts(a, b):
    for k in ("spikes", "adds", "ann_macs", "ann_adds", "neurons"):
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), k
    assert a["images"] == b["images"] and a["names"] == b["names"]


def test_int_mode_sharded_equals_serial_bit_for_bit(snn_and_data, client):
    snn, _, x, y = snn_and_data
    serial = golden.run(snn, x, "int", batch_size=64, device="cpu")
    res = golden.evaluate(snn, (x, y), client=client, batch_size=64, mode="int", keep_spikes=True)
    assert res.shards == 8 and res.counts["images"] == len(x) == 450  # 7 x 64 + 2: no padding
    assert torch.equal(res.logits_int, serial.logits_int)
    assert torch.equal(res.logits, serial.logits)
    assert torch.equal(res.predictions, serial.predictions)
    for a, b in zip(res.spikes, serial.spikes, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    _same_counts(res.counts, serial.counts)
    assert res.accuracy() == serial.accuracy(y)
    assert res.spikes_per_neuron() == serial.spikes_per_neuron()


def test_exact_mode_and_dataset_input(snn_and_data, client):
    snn, _, x, y = snn_and_data
    serial = golden.run(snn, x, "exact", batch_size=100, device="cpu", keep_spikes=False)
    ds = torch.utils.data.TensorDataset(x, y)  # a map-style dataset: workers read their part
    res = golden.evaluate(snn, ds, client=client, batch_size=100, mode="exact", batches_per_shard=2)
    assert res.shards == 3 and torch.equal(res.labels, y)
    assert torch.equal(res.predictions, serial.predictions)
    torch.testing.assert_close(res.logits, serial.logits)
    _same_counts(res.counts, serial.counts)
    assert res.accuracy() == serial.accuracy(y)
    # without a client: the serial run itself
    local = golden.evaluate(snn, x[:50], batch_size=16, mode="exact")
    assert local.shards == 1 and local.labels is None
    with pytest.raises(ValueError, match="no labels"):
        local.accuracy()


def test_cli_eval_on_a_running_cluster_equals_serial(snn_and_data, client, tmp_path, capsys):
    _, path, _, _ = snn_and_data
    args = ["eval", str(path), "--data", "digits", "--mode", "exact,int", "--device", "cpu"]
    assert main([*args, "--json", str(tmp_path / "serial.json")]) == 0
    addr = client.scheduler.address
    assert main([*args, "--scheduler", addr, "--json", str(tmp_path / "dist.json")]) == 0
    assert "sharded over 2 Dask workers" in capsys.readouterr().out
    serial = json.loads((tmp_path / "serial.json").read_text())
    dist = json.loads((tmp_path / "dist.json").read_text())
    keys = ("mode", "accuracy", "spikes_per_neuron", "adds_per_image", "energy_ratio_int8")
    assert [{k: r[k] for k in keys} for r in dist] == [{k: r[k] for k in keys} for r in serial]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "0"], "--workers must be a positive int"),
        (["--mode", "fast", "--workers", "1"], "mode must be one of"),
    ],
)
def test_cli_eval_errors(snn_and_data, capsys, extra, message):
    _, path, _, _ = snn_and_data
    assert main(["eval", str(path), "--data", "digits:10", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_cli_eval_workers_and_scheduler_exclusive(snn_and_data, capsys):
    _, path, _, _ = snn_and_data
    with pytest.raises(SystemExit) as e:
        main(["eval", str(path), "--data", "digits", "--workers", "2", "--scheduler", "tcp://x:1"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def _worker_environ() -> dict:
    import os

    keys = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
    return {k: os.environ.get(k) for k in keys}


def test_local_workers_keep_glibcs_dynamic_mmap_threshold():
    """open_client's workers run without Dask's MALLOC_TRIM_THRESHOLD_ (it fixes glibc's mmap
    threshold and made golden 1.8x slower in a worker) and still with one thread each."""
    from golden.distributed import open_client

    with open_client(1) as c:
        env = c.submit(_worker_environ, pure=False).result()
    assert env == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}
