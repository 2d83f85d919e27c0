"""Tests of the SnnModel artifact (safetensors + JSON manifest): lossless round trip and
exact errors for missing, truncated, foreign, tampered and pickled files."""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.numpy import save_file

import golden
from converter import ArtifactError, ConversionConfig, SnnModel, convert, load
from converter.model import _checksum

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
    return convert(
        net,
        torch.rand(16, 2, 8, 8),
        ConversionConfig(calibration="percentile", **cfg),
        progress=False,
    )


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


def test_round_trip_of_loaded_model_is_lossless(snn: SnnModel, saved: Path, tmp_path: Path) -> None:
    once = load(saved)
    twice = load(once.save(tmp_path / "again.safetensors"))
    check_same_snn(snn, twice)
    x = torch.rand(16, 2, 8, 8)
    for mode in golden.MODES:
        a, b = golden.run(snn, x, mode, device="cpu"), golden.run(twice, x, mode, device="cpu")
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
    original = make_snn(weight_bits=None)
    back = load(original.save(tmp_path / "f.safetensors"))
    assert back.weight_bits is None and all(
        s.weight_q is None for lay in back.layers for s in lay.synapses
    )
    check_same_snn(original, back)


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
    check_same_snn(snn, load(saved))


# --------------------------------------------------------------------------------------------
# deliberate edits: the checksum is re-computed, so only validation at load can catch them
# --------------------------------------------------------------------------------------------


def resave(path: Path, edit) -> None:
    """Apply ``edit(manifest, tensors)`` as a deliberate editor would: re-declare the tensors,
    re-compute the checksum and rewrite the file."""
    with safe_open(str(path), framework="numpy") as f:
        manifest = json.loads(f.metadata()["onespike"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    edit(manifest, tensors)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    manifest["tensors"] = {
        k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()
    }
    manifest["checksum"] = _checksum(manifest, tensors)
    save_file(tensors, str(path), metadata={"onespike": json.dumps(manifest)})


def test_resave_without_edit_still_loads(snn: SnnModel, saved: Path) -> None:
    """Guards the helper below: re-checksumming an unchanged artifact loses nothing."""
    resave(saved, lambda m, t: None)
    check_same_snn(snn, load(saved))


def _layer(i: int, **fields):
    def edit(m, t):
        m["layers"][i].update(fields)

    return edit


def _syn(i: int, g: int, **fields):
    def edit(m, t):
        m["layers"][i]["synapses"][g].update(fields)

    return edit


def _top(**fields):
    def edit(m, t):
        m.update(fields)

    return edit


def _config(**fields):
    def edit(m, t):
        m["config"].update(fields)

    return edit


def _tensor(name: str, fn):
    """Replace tensor ``name`` by ``fn(old)`` (fn may edit a copy in place and return None)."""

    def edit(m, t):
        old = t[name].copy()
        new = fn(old)
        t[name] = old if new is None else new

    return edit


def _set(index, value):
    def fn(a):
        a[index] = value

    return fn


def _both(*edits):
    def edit(m, t):
        for e in edits:
            e(m, t)

    return edit


def _every_hidden(**fields):
    def edit(m, t):
        for lay in m["layers"]:
            if lay["kind"] == "neuron":
                lay.update(fields)

    return edit


def _del_layer_field(i: int, name: str):
    def edit(m, t):
        del m["layers"][i][name]

    return edit


def _add_tensor(m, t):
    t["layers.1.extra"] = np.zeros(2, np.float32)


def _del_tensor(name: str):
    def edit(m, t):
        del t[name]

    return edit


def _del_top(name: str):
    def edit(m, t):
        del m[name]

    return edit


TOP = 2**31 - 1  # the largest 32-bit potential
# (edit, the message after "<path>: "); layers of make_snn(): 0 input, 1 relu (conv),
# 2 pool (maxpool), 3 relu2 (conv + 16-bit shortcut), 4 avg (avgpool), 5 output (linear)
EDITS = {
    # ---- manifest layout and value types
    "config not a dict": (_top(config=[1]), "manifest field 'config' must be a dict, got list"),
    "layers not a list": (_top(layers={}), "manifest field 'layers' must be a list, got dict"),
    "acc_bits missing": (_del_top("acc_bits"), "manifest field 'acc_bits' is missing"),
    "layer field missing": (_del_layer_field(1, "T_w"), "layer 1 field 'T_w' is missing"),
    "layer field unknown": (_layer(1, gain=2), "layer 1 has unknown field 'gain'"),
    "synapse field unknown": (_syn(1, 0, bits=8), "layer 1 synapse 0 has unknown field 'bits'"),
    "synapses not a list": (_layer(1, synapses=3), "layer 1 field 'synapses' must be a list"),
    "layer not an object": (
        lambda m, t: m["layers"].__setitem__(2, "pool"),
        "layer 2 must be a JSON object, got str",
    ),
    "extra tensor": (
        _add_tensor,
        "tensors ['layers.1.extra'] are not fields of any layer or synapse",
    ),
    "T a string": (_layer(1, T="16"), "layer 1 (relu) T must be an int, got '16'"),
    "T a bool": (_layer(0, T=True), "layer 0 (input) T must be an int, got True"),
    "Q a string": (_layer(1, Q="1.3"), "layer 1 (relu) Q must be a number, got '1.3'"),
    "shift a string": (
        _layer(1, shift="c_Q"),
        "layer 1 (relu) shift must be a finite number, got 'c_Q'",
    ),
    "sat_limit a float": (
        _layer(1, sat_limit=2.5),
        "layer 1 (relu) sat_limit must be an int >= 0, got 2.5",
    ),
    "name empty": (_layer(1, name=""), "layer 1 name must be a non-empty string, got ''"),
    "kind unknown": (_layer(1, kind="dense"), "layer 1 has unknown kind 'dense'"),
    "kind output inside": (
        _layer(4, kind="output"),
        "layer 4 is an output layer: only layer 0 is the input and only the last layer the output",
    ),
    "shape a string": (
        _layer(1, shape="4x8x8"),
        "layer 1 (relu) shape must be a tuple of positive ints, got '4x8x8'",
    ),
    "shape zero": (
        _layer(1, shape=[4, 0, 8]),
        "layer 1 (relu) shape must be a tuple of positive ints, got (4, 0, 8)",
    ),
    "signed not bool": (
        _layer(0, signed="no"),
        "layer 0 (input) signed must be a bool (True only for the input layer), got 'no'",
    ),
    "signed hidden": (
        _layer(1, signed=True),
        "layer 1 (relu) signed must be a bool (True only for the input layer), got True",
    ),
    "source of a neuron": (
        _layer(1, source=0),
        "layer 1 (relu) source must be -1 (only a maxpool layer reads a source), got 0",
    ),
    # ---- model fields
    "weight_bits 9": (
        _top(weight_bits=9),
        "weight_bits must be one of (2, 3, 4, 5, 6, 7, 8, 16) or None, got 9",
    ),
    "acc_bits 64": (_top(acc_bits=64), "acc_bits must be an int in [8, 48], got 64"),
    "acc_bits a string": (_top(acc_bits="32"), "acc_bits must be an int in [8, 48], got '32'"),
    # ---- T, Q, T_w, shift by layer kind
    "input T 30": (_layer(0, T=30), "layer 0 (input) T must be in [1, 24], got 30"),
    "neuron T 65": (_layer(1, T=65), "layer 1 (relu) T must be in [1, 64], got 65"),
    "neuron T 0": (_layer(1, T=0), "layer 1 (relu) T must be in [1, 64], got 0"),
    "output T 3": (_layer(5, T=3), "layer 5 (output) T must be 0, got 3"),
    "maxpool T": (
        _layer(2, T=8),
        "layer 2 (pool) T, Q must be those of its source (16, 1.3), got (8, 1.3)",
    ),
    "input Q": (_layer(0, Q=1.5), "layer 0 (input) Q must be 2 (binary input coding), got 1.5"),
    "neuron Q 7": (_layer(1, Q=7.0), "layer 1 (relu) Q must be in (1, 2], got 7.0"),
    "neuron Q 1": (_layer(1, Q=1.0), "layer 1 (relu) Q must be in (1, 2], got 1.0"),
    "neuron Q NaN": (_layer(1, Q=float("nan")), "layer 1 (relu) Q must be in (1, 2], got nan"),
    "output Q": (
        _layer(5, Q=1.4),
        "layer 5 (output) Q must be the Q of its source (1.3), got 1.4",
    ),
    "T_w 300": (_layer(1, T_w=300), "layer 1 (relu) T_w must be an int in [0, 256], got 300"),
    "T_w negative": (_layer(1, T_w=-1), "layer 1 (relu) T_w must be an int in [0, 256], got -1"),
    "output T_w": (_layer(5, T_w=2), "layer 5 (output) T_w must be 0, got 2"),
    "shift 1.5": (
        _layer(1, shift=1.5),
        f"layer 1 (relu) shift must be 1 or (1 + 1/Q)/2 = {(1 + 1 / 1.3) / 2!r}, got 1.5",
    ),
    "output shift": (_layer(5, shift=0.9), "layer 5 (output) shift must be 1, got 0.9"),
    # ---- float arrays
    "lam negative": (
        _tensor("layers.1.lam", _set(0, -1.0)),
        "layer 1 (relu) lam must be > 0, got -1.0",
    ),
    "lam missing": (_del_tensor("layers.3.lam"), "layer 3 (relu2) lam is missing"),
    "bias NaN": (_tensor("layers.3.bias", _set(0, np.nan)), "layer 3 (relu2) bias must be finite"),
    "threshold zero": (
        _tensor("layers.1.threshold", _set(2, 0.0)),
        "layer 1 (relu) threshold must be > 0, got 0.0",
    ),
    "threshold missing": (_del_tensor("layers.4.threshold"), "layer 4 (avg) threshold is missing"),
    "scale infinite": (
        _tensor("layers.1.scale", _set(1, np.inf)),
        "layer 1 (relu) scale must be finite",
    ),
    "output scale per class": (
        _tensor("layers.5.scale", lambda a: a * np.array([1, 2, 1], np.float32)),
        "layer 5 (output) scale must be one value for the whole output layer (integer argmax)",
    ),
    "input_gain shape": (
        _tensor("layers.0.input_gain", lambda a: np.ones(3, np.float32)),
        "layer 0 (input) input_gain must have shape (2,), got (3,)",
    ),
    "input_offset infinite": (
        _tensor("layers.0.input_offset", _set(0, -np.inf)),
        "layer 0 (input) input_offset must be finite",
    ),
    "act_mean shape": (
        _tensor("layers.1.act_mean", lambda a: a[:2]),
        "layer 1 (relu) act_mean must have shape (4,), got (2,)",
    ),
    "maxpool lam": (
        _tensor("layers.2.lam", lambda a: a * 2),
        "layer 2 (pool) lam must be its source's lam",
    ),
    "threshold on the output layer": (
        lambda m, t: t.__setitem__("layers.5.threshold", np.ones(3, np.float32)),
        "layer 5 (output) threshold must be None here (output layer, integer weights)",
    ),
    # ---- integer arrays and the accumulator
    "bias_q float": (
        _tensor("layers.1.bias_q", lambda a: a.astype(np.float64)),
        "layer 1 (relu) bias_q must be an integer array, got float64",
    ),
    "bias_q beyond L": (
        _tensor("layers.1.bias_q", _set((0, 0, 0), 2**40)),
        "layer 1 (relu) bias_q must be within ±sat_limit = ±2147482259",
    ),
    "bias_q int64 min": (
        _tensor("layers.1.bias_q", _set((0, 0, 0), np.iinfo(np.int64).min)),
        "layer 1 (relu) bias_q must be within ±sat_limit = ±2147482259",
    ),
    "threshold_q zero": (
        _tensor("layers.1.threshold_q", _set((0, 3), 0)),
        "layer 1 (relu) threshold_q must be > 0, got 0",
    ),
    "threshold_q beyond L": (
        _tensor("layers.1.threshold_q", _set((0, 3), 2**33)),
        "layer 1 (relu) threshold_q must be <= sat_limit = 2147482259",
    ),
    "threshold_q shape": (
        _tensor("layers.1.threshold_q", lambda a: a[:, :8]),
        "layer 1 (relu) threshold_q must have shape (4, 16), got (4, 8)",
    ),
    "sat_limit negative": (
        _layer(1, sat_limit=-5),
        "layer 1 (relu) sat_limit must be an int >= 0, got -5",
    ),
    "sat_limit past the accumulator": (
        _layer(1, sat_limit=TOP),
        f"layer 1 (relu) sat_limit must be in [1, 2147482259] (2^(acc_bits-1) - 1 - Smax), "
        f"got {TOP}",
    ),
    "sat_limit zero": (
        _layer(5, sat_limit=0),
        "layer 5 (output) sat_limit must be in [1, 2147482873] (2^(acc_bits-1) - 1 - Smax), got 0",
    ),
    "acc_bits narrower": (
        _both(_top(acc_bits=24), _config(acc_bits=24)),
        "layer 1 (relu) sat_limit must be in [1, 8387219] (2^(acc_bits-1) - 1 - Smax), "
        "got 2147482259",
    ),
    # ---- synapses and weights
    "weight_q beyond INT8": (
        _tensor("layers.1.syn.0.weight_q", _set((0, 0, 0, 0), -128)),
        "layer 1 (relu) synapse 0 weight_q must be within ±127 (8-bit weights)",
    ),
    "weight_bits 4": (
        _both(_top(weight_bits=4), _config(weight_bits=4)),
        "layer 1 (relu) synapse 0 weight_q must be within ±7 (4-bit weights)",
    ),
    "shortcut beyond INT16": (
        _tensor("layers.3.syn.1.weight_q", _set(0, -32768)),
        "layer 3 (relu2) synapse 1 weight_q must be within ±32767 (16-bit weights)",
    ),
    "weight_q int32": (
        _tensor("layers.1.syn.0.weight_q", lambda a: a.astype(np.int32)),
        "layer 1 (relu) synapse 0 weight_q has dtype int32, not one of ('int8', 'int16')",
    ),
    "weight_q missing": (
        _del_tensor("layers.4.syn.0.weight_q"),
        "layer 4 (avg) synapse 0 weight_q: lacks integer weights of shape (4,)",
    ),
    "weight NaN": (
        _tensor("layers.5.syn.0.weight", _set((1, 3), np.nan)),
        "layer 5 (output) synapse 0 linear weight must be finite",
    ),
    "weight integer": (
        _tensor("layers.5.syn.0.weight", lambda a: a.astype(np.int8)),
        "layer 5 (output) synapse 0 linear weight must be a float array",
    ),
    "synapse op": (_syn(1, 0, op="deconv"), "layer 1 (relu) synapse 0 has unknown op 'deconv'"),
    "synapse source later": (
        _syn(1, 0, source=5),
        "layer 1 (relu) synapse 0 source must be an earlier layer, got 5",
    ),
    "synapse source a string": (
        _syn(1, 0, source="0"),
        "layer 1 (relu) synapse 0 source must be an earlier layer, got '0'",
    ),
    "kernel zero": (
        _syn(1, 0, kernel=[0, 3]),
        "layer 1 (relu) synapse 0 kernel must be a pair of ints >= 1, got (0, 3)",
    ),
    "kernel a string": (
        _syn(1, 0, kernel="3x3"),
        "layer 1 (relu) synapse 0 kernel must be a pair of ints >= 1, got '3x3'",
    ),
    "stride zero": (
        _syn(4, 0, stride=[2, 0]),
        "layer 4 (avg) synapse 0 stride must be a pair of ints >= 1, got (2, 0)",
    ),
    "padding negative": (
        _syn(1, 0, padding=[-1, 1]),
        "layer 1 (relu) synapse 0 padding must be a pair of ints >= 0, got (-1, 1)",
    ),
    "channel_offset negative": (
        _syn(3, 1, channel_offset=-1),
        "layer 3 (relu2) synapse 1 channel_offset must be an int >= 0, got -1",
    ),
    "channel_offset past the channels": (
        _syn(3, 1, channel_offset=4),
        "layer 3 (relu2) synapse 1 channel_offset 4 >= 4 channels",
    ),
    "conv geometry": (
        _syn(1, 0, padding=[0, 0]),
        "layer 1 (relu) synapse 0 conv from (2, 8, 8) gives shape (4, 6, 6), the layer has "
        "(4, 8, 8)",
    ),
    "avgpool geometry": (
        _syn(4, 0, stride=[1, 1]),
        "layer 4 (avg) synapse 0 avgpool from (4, 4, 4) gives shape (4, 3, 3), the layer has "
        "(4, 2, 2)",
    ),
    "shortcut geometry": (
        _syn(3, 1, stride=[2, 2]),
        "layer 3 (relu2) synapse 1 shortcut from (4, 4, 4) gives shape (4, 2, 2), the layer "
        "has (4, 4, 4)",
    ),
    "conv kernel vs weight": (
        _syn(1, 0, kernel=[1, 1], padding=[0, 0]),
        "layer 1 (relu) synapse 0 conv weight has shape (4, 2, 3, 3), expected (4, 2, 1, 1)",
    ),
    # ---- max pooling
    "maxpool source": (
        _layer(2, source=0),
        "layer 2 (pool) source must be an earlier neuron or maxpool layer, got 0",
    ),
    "maxpool kernel": (
        _layer(2, kernel=[3, 3]),
        "layer 2 (pool) shape (4, 4, 4) does not follow from its source and window: (4, 3, 3)",
    ),
    "maxpool stride": (
        _layer(2, stride=[0, 2]),
        "layer 2 (pool) stride must be a pair of ints >= 1, got (0, 2)",
    ),
    "maxpool padding": (
        _layer(2, padding=[2, 2]),
        "layer 2 (pool) padding (2, 2) must be at most half the kernel (2, 2)",
    ),
    # ---- config against the layers
    "config T": (_config(T=12), "config T=12 disagrees with layer relu T: 16"),
    "config T_in": (_config(T_in=6), "config T_in=6 disagrees with the input layer T: 8"),
    "config Q": (
        _config(Q_resolved=1.25),
        "config Q_resolved=1.25 disagrees with layer relu Q: 1.3",
    ),
    "T_w 200": (_layer(1, T_w=200), "config T_w_resolved=16 disagrees with layer relu T_w: 200"),
    "config weight_bits": (
        _config(weight_bits=16),
        "config weight_bits=16 disagrees with weight_bits: 8",
    ),
    "config threshold_shift": (
        _config(threshold_shift=False),
        f"config threshold_shift=False disagrees with layer relu shift {(1 + 1 / 1.3) / 2!r}",
    ),
    # ---- the derived integers: consistent edits of the float parameters are still caught
    "T_w 200 everywhere": (
        _both(_every_hidden(T_w=200), _config(T_w=200, T_w_resolved=200)),
        "layer 1 (relu) threshold_q is not the threshold table of its threshold, shift, T, T_w, "
        "Q and scale (docs/semantics.md §3)",
    ),
    "threshold edited": (
        _tensor("layers.3.threshold", lambda a: a * 1.5),
        "layer 3 (relu2) threshold_q is not the threshold table of its threshold, shift, T, "
        "T_w, Q and scale (docs/semantics.md §3)",
    ),
    "threshold_q edited": (
        _tensor("layers.4.threshold_q", lambda a: a + 5),
        "layer 4 (avg) threshold_q is not the threshold table of its threshold, shift, T, "
        "T_w, Q and scale (docs/semantics.md §3)",
    ),
    "sat_limit lowered": (
        _layer(4, sat_limit=2147483138),
        "layer 4 (avg) sat_limit 2147483138 != 2^(acc_bits-1) - 1 - Smax = 2147483139",
    ),
}


@pytest.mark.parametrize(("edit", "message"), EDITS.values(), ids=EDITS.keys())
def test_deliberate_edit_is_rejected(saved: Path, edit, message: str) -> None:
    resave(saved, edit)
    check_load_error(saved, ArtifactError, f"^{where(saved)}: {re.escape(message)}$")


def test_edit_to_golden_int_needs_a_loadable_artifact(snn: SnnModel, saved: Path) -> None:
    """The example of the brief: Q = 7 on the first hidden layer ran in golden int before."""
    resave(saved, _every_hidden(Q=7.0))
    with pytest.raises(ArtifactError, match=r"layer 1 \(relu\) Q must be in \(1, 2\], got 7\.0"):
        load(saved)
