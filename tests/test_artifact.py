"""Tests of the SnnModel artifact (safetensors + JSON manifest): lossless round trip and
exact errors for missing, truncated, foreign, tampered and pickled files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.numpy import save_file

import golden
from converter import ArtifactError, ConversionConfig, SnnModel, convert, load

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    """conv → BN → ReLU → max pool → residual block → linear: every layer kind and op."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.c1(x))))
        x = self.relu2(self.c2(x) + x)
        return self.fc(self.avg(x).flatten(1))


def make_snn(**cfg) -> SnnModel:
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.weight[1] = -0.8
    return convert(net, torch.rand(16, 2, 8, 8), ConversionConfig(**cfg), progress=False)


@pytest.fixture(scope="module")
def snn() -> SnnModel:
    return make_snn()


@pytest.fixture
def saved(snn: SnnModel, tmp_path: Path) -> Path:
    return snn.save(tmp_path / "net.onespike.safetensors")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def check_same_snn(a: SnnModel, b: SnnModel, *, dtypes: bool = True) -> None:
    """Every field of every layer and synapse equal (arrays bit for bit, with dtype)."""
    assert (a.config, a.weight_bits, a.acc_bits, a.meta) == (
        b.config,
        b.weight_bits,
        b.acc_bits,
        b.meta,
    )
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        check_same_fields(la, lb, dtypes)
        assert len(la.synapses) == len(lb.synapses)
        for sa, sb in zip(la.synapses, lb.synapses, strict=True):
            check_same_fields(sa, sb, dtypes)


def check_same_fields(a, b, dtypes: bool) -> None:
    for f in dataclasses.fields(a):
        if f.name == "synapses":
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            assert va is not None and vb is not None, f.name
            assert np.array_equal(va, vb), f"{a.name if hasattr(a, 'name') else ''}.{f.name}"
            if dtypes:
                assert va.dtype == vb.dtype, f"{f.name}: {va.dtype} vs {vb.dtype}"
        else:
            assert va == vb and type(va) is type(vb), f.name


def read_safetensors(path: Path) -> tuple[dict, bytes]:
    """(header, data): the 8-byte little-endian header length, the JSON header, the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_safetensors(path: Path, header: dict, data: bytes) -> None:
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)


def edit_manifest(path: Path, edit) -> None:
    header, data = read_safetensors(path)
    manifest = json.loads(header["__metadata__"]["onespike"])
    edit(manifest)
    header["__metadata__"]["onespike"] = json.dumps(manifest)
    write_safetensors(path, header, data)


def check_load_error(path: Path, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        load(path)


def where(path: Path) -> str:
    return re.escape(str(path))


# --------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------


def test_round_trip_of_loaded_model_is_lossless(saved: Path, tmp_path: Path) -> None:
    once = load(saved)
    twice = load(once.save(tmp_path / "again.safetensors"))
    check_same_snn(once, twice)
    x = torch.rand(16, 2, 8, 8)
    for mode in golden.MODES:
        a, b = golden.run(once, x, mode, device="cpu"), golden.run(twice, x, mode, device="cpu")
        assert torch.equal(a.logits, b.logits), mode
        assert torch.equal(a.predictions, b.predictions), mode


def test_round_trip_keeps_integer_fields_and_int_logits(snn: SnnModel, saved: Path) -> None:
    back = load(saved)
    assert [lay.name for lay in back.layers] == [lay.name for lay in snn.layers]
    for la, lb in zip(snn.layers, back.layers, strict=True):
        for f in ("bias_q", "threshold_q", "scale"):
            va, vb = getattr(la, f), getattr(lb, f)
            assert (va is None and vb is None) or (np.array_equal(va, vb) and va.dtype == vb.dtype)
        for sa, sb in zip(la.synapses, lb.synapses, strict=True):
            # residual shortcut groups carry 16-bit weights, every other group INT8
            want = np.int16 if sa.op == "shortcut" and len(la.synapses) > 1 else np.int8
            assert sa.weight_q.dtype == sb.weight_q.dtype == want
            assert np.array_equal(sa.weight_q, sb.weight_q)
            assert np.array_equal(sa.weight, sb.weight)
    x = torch.rand(32, 2, 8, 8)
    a, b = golden.run(snn, x, "int", device="cpu"), golden.run(back, x, "int", device="cpu")
    assert torch.equal(a.logits_int, b.logits_int)
    assert torch.equal(a.logits, b.logits)


def test_round_trip_float_weights(tmp_path: Path) -> None:
    snn = load(make_snn(weight_bits=None).save(tmp_path / "f.safetensors"))
    assert snn.weight_bits is None and all(
        s.weight_q is None for lay in snn.layers for s in lay.synapses
    )
    check_same_snn(snn, load(snn.save(tmp_path / "g.safetensors")))


def test_round_trip_of_converted_model_is_lossless(snn: SnnModel, saved: Path) -> None:
    check_same_snn(snn, load(saved))


def test_round_trip_keeps_input_coding_at_rounding_boundaries(snn: SnnModel, saved: Path) -> None:
    back = load(saved)
    g = float(snn.layers[0].input_gain[0])
    cands = []
    for m in range(1, 255):  # float32 inputs next to the boundary (m + 1/2) / 2^T_in
        x = np.float32((m + 0.5) / 2 ** snn.layers[0].T / g)
        for _ in range(3):
            cands += [x, np.nextafter(x, np.float32(1)), np.nextafter(x, np.float32(0))]
            x = np.nextafter(x, np.float32(1))
    x = torch.zeros(len(cands), 2, 8, 8)
    x[:, 0, 3, 3] = torch.tensor(np.array(cands, dtype=np.float32))
    a, b = golden.run(snn, x, "int", device="cpu"), golden.run(back, x, "int", device="cpu")
    assert torch.equal(a.spikes[0], b.spikes[0])


# --------------------------------------------------------------------------------------------
# unreadable and foreign files
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    check_load_error(path, FileNotFoundError, f"^no such artifact: {where(path)}$")


def test_directory_is_not_an_artifact(tmp_path: Path) -> None:
    check_load_error(tmp_path, FileNotFoundError, f"^no such artifact: {where(tmp_path)}$")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _header_only(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:6])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _json_text(path: Path) -> None:
    path.write_text(json.dumps({"format": "one-spike-snn", "schema_version": 1}))


@pytest.mark.parametrize("spoil", [_truncated, _header_only, _random_bytes, _empty, _json_text])
def test_unreadable_file(saved: Path, spoil) -> None:
    spoil(saved)
    pattern = f"^{where(saved)} is not a one-spike artifact \\(unreadable safetensors: "
    check_load_error(saved, ArtifactError, pattern)


def test_safetensors_without_manifest(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros((2, 3), np.float32)}, str(path), metadata={"other": "x"})
    pattern = f"^{where(path)} is a safetensors file without a one-spike manifest$"
    check_load_error(path, ArtifactError, pattern)


class _Trap:
    """Unpickling this creates the file ``marker``: proof that load() unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_torch_pickle_is_rejected_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    torch.save({"state": torch.zeros(3), "trap": _Trap(str(marker))}, path)
    pattern = f"^{where(path)} is not a one-spike artifact"
    check_load_error(path, ArtifactError, pattern)
    assert not marker.exists()
    assert not os.path.exists(str(marker))


# --------------------------------------------------------------------------------------------
# tampered artifacts
# --------------------------------------------------------------------------------------------


def _flip_tensor_byte(path: Path, name: str = "layers.1.threshold_q") -> None:
    header, data = read_safetensors(path)
    start, stop = header[name]["data_offsets"]
    buf = bytearray(data)
    buf[(start + stop) // 2] ^= 0x10
    write_safetensors(path, header, bytes(buf))


def test_flipped_tensor_byte_fails_checksum(saved: Path) -> None:
    _flip_tensor_byte(saved)
    pattern = f"^{where(saved)}: checksum mismatch \\(the file was modified or corrupted\\)$"
    check_load_error(saved, ArtifactError, pattern)


@pytest.mark.parametrize("name", ["layers.0.lam", "layers.1.syn.0.weight_q", "layers.5.bias"])
def test_flipped_byte_in_any_tensor_fails_checksum(saved: Path, name: str) -> None:
    header, _ = read_safetensors(saved)
    assert name in header
    _flip_tensor_byte(saved, name)
    check_load_error(saved, ArtifactError, "checksum mismatch")


def _schema_99(m: dict) -> None:
    m["schema_version"] = 99


def _format(m: dict) -> None:
    m["format"] = "something-else"


def _q_frac_bits(m: dict) -> None:
    m["q_frac_bits"] = 8


def _shape(m: dict) -> None:
    m["tensors"]["layers.1.threshold_q"]["shape"] = [4, 15]


def _dtype(m: dict) -> None:
    m["tensors"]["layers.1.syn.0.weight_q"]["dtype"] = "int16"


def _undeclared(m: dict) -> None:
    del m["tensors"]["layers.1.bias_q"]


def _threshold_edit(m: dict) -> None:
    m["layers"][1]["T"] = 15


def _shift_edit(m: dict) -> None:
    m["layers"][1]["shift"] = 1.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _schema_99,
            ": schema version 99 is not supported (this one-spike reads version 1)",
        ),
        (_format, ": manifest format is not 'one-spike-snn'"),
        (_q_frac_bits, ": q_frac_bits 8 != 16"),
        (
            _shape,
            ": tensor layers.1.threshold_q is int64[4, 16], the manifest declares int64[4, 15]",
        ),
        (
            _dtype,
            ": tensor layers.1.syn.0.weight_q is int8[4, 2, 3, 3], the manifest declares "
            "int16[4, 2, 3, 3]",
        ),
        (_undeclared, ": tensors missing [] / undeclared ['layers.1.bias_q']"),
        (_threshold_edit, ": checksum mismatch (the file was modified or corrupted)"),
        (_shift_edit, ": checksum mismatch (the file was modified or corrupted)"),
    ],
)
def test_edited_manifest(saved: Path, edit, message: str) -> None:
    edit_manifest(saved, edit)
    check_load_error(saved, ArtifactError, f"^{where(saved)}{re.escape(message)}$")


def test_manifest_that_is_not_json(saved: Path) -> None:
    header, data = read_safetensors(saved)
    header["__metadata__"]["onespike"] = "{not json"
    write_safetensors(saved, header, data)
    pattern = f"^{where(saved)}: the manifest is not valid JSON \\("
    check_load_error(saved, ArtifactError, pattern)


def test_untouched_rewrite_still_loads(snn: SnnModel, saved: Path) -> None:
    """Guards the tamper helpers: re-writing the header unchanged gives a loadable file."""
    edit_manifest(saved, lambda m: None)
    check_same_snn(load(saved), load(saved))
    assert [lay.name for lay in load(saved).layers] == [lay.name for lay in snn.layers]
