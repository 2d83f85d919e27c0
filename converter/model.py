"""SnnModel: the immutable converted network, and its safetensors + JSON artifact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from converter.config import Q_FRAC_BITS, SUPPORTED_WEIGHT_BITS

SCHEMA_VERSION = 1
FORMAT_NAME = "one-spike-snn"
LAYER_KINDS = ("input", "neuron", "maxpool", "output")
SYNAPSE_OPS = ("conv", "linear", "avgpool", "shortcut", "graph", "embedding")

# Array fields of a layer / synapse and the dtypes they are stored with.
_LAYER_ARRAYS = {
    "lam": "float32",
    "bias": "float32",
    "threshold": "float32",
    "scale": "float32",
    "bias_q": "int64",
    "threshold_q": "int64",
    "input_gain": "float32",
    "input_offset": "float32",
    "act_mean": "float32",
    "ann_bias": "float32",
}
_SYNAPSE_ARRAYS = {
    "weight": "float32",
    "weight_q": None,  # int8/16
    "index": "int32",
    "ann_weight": "float32",
}
_INT_WEIGHT_DTYPES = ("int8", "int16")


class ArtifactError(ValueError):
    """A file that is not a valid one-spike artifact (corrupt, truncated, tampered, too new)."""


@dataclass(frozen=True, eq=False)
class Synapse:
    """One synapse group: how the spikes of ``source`` reach the neurons of a layer.

    ``weight`` holds the effective float weights (ANN weight × λ of the presynaptic channel,
    BN folded where a residual add follows), ``weight_q`` the integers of the datapath with the
    layer's per-output-channel ``scale`` (weight ≈ weight_q × scale). Shapes by ``op``:
    conv ``[C_out, C_in, kh, kw]``; linear ``[N_out, N_in]`` over the flattened source;
    avgpool ``[C]`` (one weight per channel, the window is ``kernel``); shortcut ``[C_out]``
    (output channel c reads source channel c − ``channel_offset`` every ``stride`` pixels).

    Graph layers are laid out (features, nodes, 1) (docs/semantics.md §5). ``graph``: the
    aggregation Â·H, ``weight`` ``[nnz]`` the values of Â and ``index`` ``[2, nnz]`` (int32) their
    (target node, source node), sorted by target then source; output channel c reads source
    channel c + ``channel_offset`` (the negative rail of a two-rail source). ``embedding``: the
    per-node linear map of one-hot features (X = I), ``weight`` ``[C_out, N]``: output (c, n)
    receives ``weight[c, n]`` from node n's one input neuron.

    ``ann_weight``: where the calibration refitted ``weight`` (``calibration="weights"``,
    ``"search"``, converter/calibration.py), the ANN's own effective weight, shaped as
    ``weight``, which golden's ``ann`` mode runs; ``None`` where ``weight`` is the ANN's.
    """

    source: int
    op: str
    weight: np.ndarray
    weight_q: np.ndarray | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    channel_offset: int = 0
    index: np.ndarray | None = None
    ann_weight: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer of the SNN (see docs/semantics.md for how each field is used).

    A spike of this layer at phase t stands for ``lam[c] * Q**-t`` (for the input layer,
    ``Q = 2`` and ``lam`` is half the input range, so bit t+1 of the input is phase t).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    T: int = 0
    Q: float = 2.0
    lam: np.ndarray | None = None
    synapses: tuple[Synapse, ...] = ()
    bias: np.ndarray | None = None
    threshold: np.ndarray | None = None
    shift: float = 1.0
    T_w: int = 0
    scale: np.ndarray | None = None
    bias_q: np.ndarray | None = None
    threshold_q: np.ndarray | None = None
    sat_limit: int = 0
    source: int = -1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    input_gain: np.ndarray | None = None
    input_offset: np.ndarray | None = None
    signed: bool = False
    act_mean: np.ndarray | None = None
    #: a two-rail signed layer (graph networks, docs/semantics.md §5): channels [0, C/2) code
    #: max(v, 0) and [C/2, C) code max(−v, 0) of one signed value v with C/2 channels
    rails: bool = False
    #: where the calibration changed ``bias`` (``calibration`` other than ``"percentile"``),
    #: the ANN's own folded bias, shaped as ``bias``, which golden's ``ann`` mode runs
    ann_bias: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True, eq=False)
class SnnModel:
    """A converted one-spike SNN: layers in topological order, layer 0 is the input."""

    layers: tuple[Layer, ...]
    config: dict[str, Any]
    weight_bits: int | None
    acc_bits: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input(self) -> Layer:
        return self.layers[0]

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.layers[0].shape

    @property
    def num_classes(self) -> int:
        return self.layers[-1].size

    @property
    def is_quantized(self) -> bool:
        return self.weight_bits is not None

    def source_of(self, layer: Layer) -> Layer:
        """The layer whose spikes feed ``layer`` (all synapse groups share its T and Q)."""
        src = layer.source if layer.kind == "maxpool" else layer.synapses[0].source
        return self.layers[src]

    def summary(self) -> str:
        """A one-line-per-layer description."""
        rows = []
        for i, lay in enumerate(self.layers):
            srcs = [s.source for s in lay.synapses] or ([lay.source] if lay.source >= 0 else [])
            ops = "+".join(s.op for s in lay.synapses) or lay.kind
            rows.append(
                f"{i:3d} {lay.name:<24} {lay.kind:<7} {ops:<16} {str(lay.shape):<16} "
                f"T={lay.T:<3} Q={lay.Q:<5g} from {srcs}"
            )
        return "\n".join(rows)

    # ------------------------------------------------------------------ artifact
    def save(self, path: str | Path) -> Path:
        """Write the artifact: one safetensors file with the JSON manifest in its metadata."""
        from safetensors.numpy import save_file

        tensors, manifest = _to_tensors_and_manifest(self)
        manifest["checksum"] = _checksum(manifest, tensors)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"onespike": json.dumps(manifest)})
        return path


def load(path: str | Path) -> SnnModel:
    """Load and validate an artifact written by :meth:`SnnModel.save` (never unpickles)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such artifact: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for a broken header
        raise ArtifactError(
            f"{path} is not a one-spike artifact (unreadable safetensors: {exc})"
        ) from exc
    if "onespike" not in metadata:
        raise ArtifactError(f"{path} is a safetensors file without a one-spike manifest")
    try:
        manifest = json.loads(metadata["onespike"])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: the manifest is not valid JSON ({exc})") from exc
    return _from_tensors_and_manifest(manifest, tensors, str(path))


def _to_tensors_and_manifest(snn: SnnModel) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    tensors: dict[str, np.ndarray] = {}
    layers = []
    for i, lay in enumerate(snn.layers):
        entry: dict[str, Any] = {}
        for f in fields(Layer):
            value = getattr(lay, f.name)
            if f.name in _LAYER_ARRAYS:
                if value is not None:
                    tensors[f"layers.{i}.{f.name}"] = np.ascontiguousarray(
                        value, dtype=_LAYER_ARRAYS[f.name]
                    )
            elif f.name == "synapses":
                entry["synapses"] = [
                    _synapse_entry(s, f"layers.{i}.syn.{g}", tensors) for g, s in enumerate(value)
                ]
            else:
                entry[f.name] = list(value) if isinstance(value, tuple) else value
        layers.append(entry)
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "weight_bits": snn.weight_bits,
        "acc_bits": snn.acc_bits,
        "q_frac_bits": Q_FRAC_BITS,
        "config": snn.config,
        "meta": snn.meta,
        "layers": layers,
        "tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()},
    }
    return tensors, manifest


def _synapse_entry(s: Synapse, prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for f in fields(Synapse):
        value = getattr(s, f.name)
        if f.name in _SYNAPSE_ARRAYS:
            if value is not None:
                tensors[f"{prefix}.{f.name}"] = np.ascontiguousarray(value)
        else:
            entry[f.name] = list(value) if isinstance(value, tuple) else value
    return entry


def _checksum(manifest: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    h.update(json.dumps(body, sort_keys=True).encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(np.ascontiguousarray(tensors[name]).tobytes())
    return h.hexdigest()


def _from_tensors_and_manifest(
    manifest: dict[str, Any], tensors: dict[str, np.ndarray], where: str
) -> SnnModel:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{where}: manifest format is not {FORMAT_NAME!r}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: schema version {version!r} is not supported (this one-spike reads "
            f"version {SCHEMA_VERSION})"
        )
    if manifest.get("q_frac_bits") != Q_FRAC_BITS:
        raise ArtifactError(
            f"{where}: q_frac_bits {manifest.get('q_frac_bits')!r} != {Q_FRAC_BITS}"
        )
    declared = manifest.get("tensors", {})
    if not isinstance(declared, dict) or not all(
        isinstance(s, dict) and isinstance(s.get("dtype"), str) and isinstance(s.get("shape"), list)
        for s in declared.values()
    ):
        raise ArtifactError(f"{where}: manifest field 'tensors' must map names to dtype and shape")
    if set(declared) != set(tensors):
        missing = sorted(set(declared) - set(tensors))
        extra = sorted(set(tensors) - set(declared))
        raise ArtifactError(f"{where}: tensors missing {missing} / undeclared {extra}")
    for name, spec in declared.items():
        t = tensors[name]
        if str(t.dtype) != spec["dtype"] or list(t.shape) != spec["shape"]:
            raise ArtifactError(
                f"{where}: tensor {name} is {t.dtype}{list(t.shape)}, "
                f"the manifest declares {spec['dtype']}{spec['shape']}"
            )
    if manifest.get("checksum") != _checksum(manifest, tensors):
        raise ArtifactError(f"{where}: checksum mismatch (the file was modified or corrupted)")
    _check_layout(manifest, where)
    try:
        layers = tuple(_layer_from(i, e, tensors) for i, e in enumerate(manifest["layers"]))
        snn = SnnModel(
            layers=layers,
            config=manifest["config"],
            weight_bits=manifest["weight_bits"],
            acc_bits=manifest["acc_bits"],
            meta=manifest.get("meta", {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{where}: malformed manifest ({exc!r})") from exc
    unused = sorted(set(tensors) - _tensor_names(snn))
    if unused:
        raise ArtifactError(f"{where}: tensors {unused} are not fields of any layer or synapse")
    validate(snn, where)
    _check_derived(snn, where)
    return snn


_LAYER_KEYS = frozenset(f.name for f in fields(Layer) if f.name not in _LAYER_ARRAYS)
#: Keys added to schema version 1 after its first release, with their value when absent.
_OPTIONAL_KEYS = {"rails": False}
_SYNAPSE_KEYS = frozenset(f.name for f in fields(Synapse) if f.name not in _SYNAPSE_ARRAYS)
_TOP_KEYS = {"weight_bits": None, "acc_bits": None, "config": dict, "meta": dict, "layers": list}


def _check_layout(manifest: dict[str, Any], where: str) -> None:
    """Every manifest entry present, of the right container type and without unknown keys,
    so that building the model cannot fail deep inside (values are checked by validate)."""
    for key, kind in _TOP_KEYS.items():
        if key not in manifest:
            raise ArtifactError(f"{where}: manifest field {key!r} is missing")
        if kind is not None and not isinstance(manifest[key], kind):
            raise ArtifactError(
                f"{where}: manifest field {key!r} must be a {kind.__name__}, "
                f"got {type(manifest[key]).__name__}"
            )
    for i, entry in enumerate(manifest["layers"]):
        _check_keys(entry, _LAYER_KEYS, f"layer {i}", where)
        if not isinstance(entry["synapses"], list):
            raise ArtifactError(f"{where}: layer {i} field 'synapses' must be a list")
        for g, syn in enumerate(entry["synapses"]):
            _check_keys(syn, _SYNAPSE_KEYS, f"layer {i} synapse {g}", where)


def _check_keys(entry: Any, keys: frozenset[str], at: str, where: str) -> None:
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where}: {at} must be a JSON object, got {type(entry).__name__}")
    missing = keys - set(entry) - set(_OPTIONAL_KEYS)
    if missing:
        raise ArtifactError(f"{where}: {at} field {sorted(missing)[0]!r} is missing")
    if set(entry) - keys:
        raise ArtifactError(f"{where}: {at} has unknown field {sorted(set(entry) - keys)[0]!r}")


def _tensor_names(snn: SnnModel) -> set[str]:
    """The tensor names :meth:`SnnModel.save` writes for ``snn``."""
    names = set()
    for i, lay in enumerate(snn.layers):
        names |= {f"layers.{i}.{k}" for k in _LAYER_ARRAYS if getattr(lay, k) is not None}
        for g, s in enumerate(lay.synapses):
            names |= {
                f"layers.{i}.syn.{g}.{k}" for k in _SYNAPSE_ARRAYS if getattr(s, k) is not None
            }
    return names


def _layer_from(i: int, entry: dict[str, Any], tensors: dict[str, np.ndarray]) -> Layer:
    kwargs: dict[str, Any] = {}
    for f in fields(Layer):
        if f.name in _LAYER_ARRAYS:
            kwargs[f.name] = tensors.get(f"layers.{i}.{f.name}")
        elif f.name == "synapses":
            kwargs["synapses"] = tuple(
                _synapse_from(e, f"layers.{i}.syn.{g}", tensors)
                for g, e in enumerate(entry["synapses"])
            )
        else:
            v = entry.get(f.name, _OPTIONAL_KEYS.get(f.name))
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return Layer(**kwargs)


def _synapse_from(entry: dict[str, Any], prefix: str, tensors: dict[str, np.ndarray]) -> Synapse:
    kwargs: dict[str, Any] = {}
    for f in fields(Synapse):
        if f.name in _SYNAPSE_ARRAYS:
            kwargs[f.name] = tensors.get(f"{prefix}.{f.name}")
        else:
            v = entry[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return Synapse(**kwargs)


def validate(snn: SnnModel, where: str = "SnnModel") -> None:
    """Check every field: types and ranges by layer kind (docs/semantics.md, the bounds of
    converter/config.py), shapes, geometry and the structural invariants every consumer
    relies on; raise ArtifactError naming the layer and the field."""

    def bad(msg: str) -> ArtifactError:
        return ArtifactError(f"{where}: {msg}")

    _validate_model_fields(snn, bad)
    if not snn.layers or snn.layers[0].kind != "input" or snn.layers[-1].kind != "output":
        raise bad("the first layer must be the input and the last the output layer")
    for i, lay in enumerate(snn.layers):
        if lay.kind not in LAYER_KINDS:
            raise bad(f"layer {i} has unknown kind {lay.kind!r}")
        if (lay.kind == "input") != (i == 0) or (lay.kind == "output") != (
            i == len(snn.layers) - 1
        ):
            raise bad(
                f"layer {i} is an {lay.kind} layer: only layer 0 is the input and only "
                "the last layer the output"
            )
        if not isinstance(lay.name, str) or not lay.name:
            raise bad(f"layer {i} name must be a non-empty string, got {lay.name!r}")

        def fail(msg: str, at: str = f"layer {i} ({lay.name})") -> ArtifactError:
            return bad(f"{at} {msg}")

        _validate_scalars(snn, i, lay, fail)
        _validate_arrays(snn, lay, fail)
        if lay.kind in ("neuron", "output"):
            _validate_neuron_layer(snn, i, lay, fail)
        elif lay.synapses != ():
            raise fail(f"synapses must be empty in a {lay.kind} layer")
    _validate_config(snn, bad)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _pair(v: Any, lo: int) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) and x >= lo for x in v)


def _validate_model_fields(snn: SnnModel, bad) -> None:
    wb, acc = snn.weight_bits, snn.acc_bits
    if wb is not None and not (_is_int(wb) and wb in SUPPORTED_WEIGHT_BITS):
        raise bad(f"weight_bits must be one of {SUPPORTED_WEIGHT_BITS} or None, got {wb!r}")
    if not (_is_int(acc) and 8 <= acc <= 48):
        raise bad(f"acc_bits must be an int in [8, 48], got {acc!r}")
    for name in ("config", "meta"):
        if not isinstance(getattr(snn, name), dict):
            raise bad(f"{name} must be a dict, got {type(getattr(snn, name)).__name__}")
    if not isinstance(snn.layers, tuple):
        raise bad(f"layers must be a tuple, got {type(snn.layers).__name__}")


#: Phases T by layer kind (T_in ∈ [1, 24], T ∈ [1, 64] as in ConversionConfig; maxpool: its
#: source's T), and the largest wait timestep (T_w ∈ [0, 256]; 0 where there is no decision).
_T_RANGE = {"input": (1, 24), "neuron": (1, 64), "output": (0, 0)}
_T_W_MAX = {"neuron": 256}


def _validate_scalars(snn: SnnModel, i: int, lay: Layer, fail) -> None:
    if not (
        isinstance(lay.shape, tuple) and lay.shape and all(_is_int(d) and d > 0 for d in lay.shape)
    ):
        raise fail(f"shape must be a tuple of positive ints, got {lay.shape!r}")
    for name, lo in (("kernel", 1), ("stride", 1), ("padding", 0)):
        if not _pair(getattr(lay, name), lo):
            raise fail(f"{name} must be a pair of ints >= {lo}, got {getattr(lay, name)!r}")
    if not isinstance(lay.signed, bool) or (lay.signed and lay.kind != "input"):
        raise fail(f"signed must be a bool (True only for the input layer), got {lay.signed!r}")
    if not isinstance(lay.rails, bool) or (
        lay.rails and (lay.kind != "neuron" or lay.shape[0] % 2)
    ):
        raise fail(
            f"rails must be a bool (True only for neuron layers of even C), got {lay.rails!r}"
        )
    if not _is_int(lay.sat_limit) or lay.sat_limit < 0:
        raise fail(f"sat_limit must be an int >= 0, got {lay.sat_limit!r}")
    top = _T_W_MAX.get(lay.kind, 0)
    if not _is_int(lay.T_w) or not 0 <= lay.T_w <= top:
        raise fail(f"T_w must be {f'an int in [0, {top}]' if top else '0'}, got {lay.T_w!r}")
    if not _is_int(lay.source) or lay.source != -1 and lay.kind != "maxpool":
        raise fail(f"source must be -1 (only a maxpool layer reads a source), got {lay.source!r}")
    if not _is_int(lay.T):
        raise fail(f"T must be an int, got {lay.T!r}")
    if not _is_number(lay.Q):
        raise fail(f"Q must be a number, got {lay.Q!r}")
    if not _is_number(lay.shift) or not np.isfinite(lay.shift):
        raise fail(f"shift must be a finite number, got {lay.shift!r}")
    if lay.kind == "maxpool":
        _validate_maxpool(snn, i, lay, fail)
    else:
        lo, hi = _T_RANGE[lay.kind]
        if not lo <= lay.T <= hi:
            raise fail(f"T must be {lo if lo == hi else f'in [{lo}, {hi}]'}, got {lay.T!r}")
    if lay.kind == "input" and lay.Q != 2.0:
        raise fail(f"Q must be 2 (binary input coding), got {lay.Q!r}")
    if lay.kind == "neuron" and not 1.0 < lay.Q <= 2.0:
        raise fail(f"Q must be in (1, 2], got {lay.Q!r}")
    c_q = (1 + 1 / lay.Q) / 2 if lay.kind == "neuron" else 1.0
    if lay.shift != 1.0 and not np.isclose(lay.shift, c_q, rtol=1e-12, atol=0):
        allowed = f"1 or (1 + 1/Q)/2 = {c_q!r}" if lay.kind == "neuron" else "1"
        raise fail(f"shift must be {allowed}, got {lay.shift!r}")


def _validate_maxpool(snn: SnnModel, i: int, lay: Layer, fail) -> None:
    if not 0 <= lay.source < i or snn.layers[lay.source].kind not in ("neuron", "maxpool"):
        raise fail(f"source must be an earlier neuron or maxpool layer, got {lay.source!r}")
    src = snn.layers[lay.source]
    if (lay.T, lay.Q) != (src.T, src.Q):
        raise fail(f"T, Q must be those of its source ({src.T}, {src.Q}), got ({lay.T}, {lay.Q})")
    if any(2 * p > k for p, k in zip(lay.padding, lay.kernel, strict=True)):
        raise fail(f"padding {lay.padding} must be at most half the kernel {lay.kernel}")
    expect = _window_shape(src.shape, src.channels, lay.kernel, lay.stride, lay.padding)
    if lay.shape != expect:
        raise fail(f"shape {lay.shape} does not follow from its source and window: {expect}")


def _window_shape(src: tuple[int, ...], c: int, kernel, stride, padding) -> tuple[int, ...]:
    """(c, H', W') of a sliding window over a (C, H, W) source, floor mode; () if not 2-D."""
    if len(src) != 3:
        return ()
    hw = tuple(
        (n + 2 * p - k) // s + 1
        for n, k, s, p in zip(src[1:], kernel, stride, padding, strict=True)
    )
    return (c, *hw)


#: Array fields: the layer kinds that need them (others must leave them None; ``act_mean`` is
#: optional), whether only integer models need them, the dtype kind, the shape, and whether
#: every value must be positive.
_ARRAY_RULES = {
    "lam": (LAYER_KINDS, False, "f", lambda lay: (lay.channels,), True),
    "bias": (("neuron", "output"), False, "f", lambda lay: lay.shape, False),
    "threshold": (("neuron",), False, "f", lambda lay: (lay.channels,), True),
    "scale": (("neuron", "output"), True, "f", lambda lay: (lay.channels,), True),
    "bias_q": (("neuron", "output"), True, "i", lambda lay: lay.shape, False),
    "threshold_q": (("neuron",), True, "i", lambda lay: (lay.channels, lay.T), True),
    "input_gain": (("input",), False, "f", lambda lay: (lay.channels,), False),
    "input_offset": (("input",), False, "f", lambda lay: (lay.channels,), False),
    "act_mean": (None, False, "f", lambda lay: (lay.channels,), False),
    "ann_bias": (None, False, "f", lambda lay: lay.shape, False),
}


def _validate_arrays(snn: SnnModel, lay: Layer, fail) -> None:
    for name, (kinds, quant, dkind, shape_of, positive) in _ARRAY_RULES.items():
        v = getattr(lay, name)
        needed = kinds is not None and lay.kind in kinds and (snn.is_quantized or not quant)
        if v is None:
            if needed:
                raise fail(f"{name} is missing")
            continue
        if kinds is not None and not needed:
            weights = "integer" if snn.is_quantized else "float"
            raise fail(f"{name} must be None here ({lay.kind} layer, {weights} weights)")
        if not isinstance(v, np.ndarray) or v.dtype.kind != dkind:
            what = f"{v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
            kind = "a float" if dkind == "f" else "an integer"
            raise fail(f"{name} must be {kind} array, got {what}")
        if v.shape != shape_of(lay):
            raise fail(f"{name} must have shape {shape_of(lay)}, got {v.shape}")
        if dkind == "f" and not np.isfinite(v).all():
            raise fail(f"{name} must be finite")
        if positive and not (v > 0).all():
            raise fail(f"{name} must be > 0, got {v.min().item()!r}")
    if lay.kind == "maxpool" and not np.array_equal(lay.lam, snn.layers[lay.source].lam):
        raise fail("lam must be its source's lam")
    if lay.kind == "output" and lay.scale is not None and np.ptp(lay.scale) != 0:
        raise fail("scale must be one value for the whole output layer (integer argmax)")


def _validate_neuron_layer(snn: SnnModel, i: int, lay: Layer, fail) -> None:
    if not isinstance(lay.synapses, tuple) or not lay.synapses:
        raise fail("has no synapses")
    for g, s in enumerate(lay.synapses):
        if not isinstance(s, Synapse):
            raise fail(f"synapse {g} is a {type(s).__name__}, not a Synapse")
        if not (_is_int(s.source) and 0 <= s.source < i) or snn.layers[s.source].kind == "output":
            raise fail(f"synapse {g} source must be an earlier layer, got {s.source!r}")
    srcs = {(snn.layers[s.source].T, snn.layers[s.source].Q) for s in lay.synapses}
    if len(srcs) != 1:
        raise fail(f"must read earlier layers sharing one (T, Q), got {sorted(srcs)}")
    src = snn.source_of(lay)
    if lay.kind == "output" and lay.Q != src.Q:
        raise fail(f"Q must be the Q of its source ({src.Q!r}), got {lay.Q!r}")
    residual = any(s.op != "shortcut" for s in lay.synapses)
    for g, s in enumerate(lay.synapses):
        _validate_synapse(snn, lay, s, residual, lambda m, g=g: fail(f"synapse {g} {m}"))
    if snn.is_quantized:
        top = 2 ** (snn.acc_bits - 1) - 1 - max_phase_input(lay.synapses)
        if not 1 <= lay.sat_limit <= top:
            raise fail(
                f"sat_limit must be in [1, {top}] (2^(acc_bits-1) - 1 - Smax), "
                f"got {lay.sat_limit!r}"
            )
        if ((lay.bias_q < -lay.sat_limit) | (lay.bias_q > lay.sat_limit)).any():
            raise fail(f"bias_q must be within ±sat_limit = ±{lay.sat_limit}")
        if lay.threshold_q is not None and lay.threshold_q.max() > lay.sat_limit:
            raise fail(f"threshold_q must be <= sat_limit = {lay.sat_limit}")


def _validate_synapse(snn: SnnModel, lay: Layer, s: Synapse, residual: bool, fail) -> None:
    if s.op not in SYNAPSE_OPS:
        raise fail(f"has unknown op {s.op!r}")
    for name, lo in (("kernel", 1), ("stride", 1), ("padding", 0)):
        if not _pair(getattr(s, name), lo):
            raise fail(f"{name} must be a pair of ints >= {lo}, got {getattr(s, name)!r}")
    if not _is_int(s.channel_offset) or s.channel_offset < 0:
        raise fail(f"channel_offset must be an int >= 0, got {s.channel_offset!r}")
    src = snn.layers[s.source]
    if s.op in ("graph", "embedding"):
        _validate_graph_synapse(src, lay, s, fail)
    elif s.index is not None:
        raise fail(f"index must be None for a {s.op} synapse")
    elif s.op != "linear":
        _validate_window(src, lay, s, fail)
    expect = _expected_weight_shape(src, lay, s)
    w = s.weight
    if not isinstance(w, np.ndarray) or w.dtype.kind != "f":
        raise fail(f"{s.op} weight must be a float array")
    if tuple(w.shape) != expect:
        raise fail(f"{s.op} weight has shape {tuple(w.shape)}, expected {expect}")
    if not np.isfinite(w).all():
        raise fail(f"{s.op} weight must be finite")
    a = s.ann_weight
    if a is not None and (
        not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.shape != w.shape
    ):
        raise fail(f"ann_weight must be a float array shaped as the weight, {expect}")
    if a is not None and not np.isfinite(a).all():
        raise fail("ann_weight must be finite")
    if not snn.is_quantized:
        if s.weight_q is not None:
            raise fail("weight_q must be None in a float-weight model")
        return
    wq = s.weight_q
    if not isinstance(wq, np.ndarray) or wq.shape != w.shape:
        raise fail(f"weight_q: lacks integer weights of shape {expect}")
    if str(wq.dtype) not in _INT_WEIGHT_DTYPES:
        raise fail(f"weight_q has dtype {wq.dtype}, not one of {_INT_WEIGHT_DTYPES}")
    bits = 16 if (s.op == "shortcut" and residual) or s.op == "graph" else snn.weight_bits
    top = 2 ** (bits - 1) - 1
    if wq.size and np.abs(wq.astype(np.int64)).max() > top:
        raise fail(f"weight_q must be within ±{top} ({bits}-bit weights)")


def _validate_graph_synapse(src: Layer, lay: Layer, s: Synapse, fail) -> None:
    """graph, embedding: (features, nodes, 1) layers over the same nodes; a graph synapse's
    index holds (target, source) node pairs, sorted, each pair once."""
    if len(src.shape) != 3 or len(lay.shape) != 3 or src.shape[2:] != (1,) or lay.shape[2:] != (1,):
        raise fail(f"{s.op} needs (features, nodes, 1) layers, got {src.shape} -> {lay.shape}")
    n = lay.shape[1]
    if src.shape[1] != n:
        raise fail(f"{s.op} joins layers of {src.shape[1]} and {n} nodes")
    if s.op == "embedding":
        if src.kind != "input" or src.channels != 1 or s.index is not None:
            raise fail("embedding must read a one-hot input layer of shape (1, nodes, 1)")
        return
    if s.channel_offset + lay.channels > src.channels:
        raise fail(
            f"reads source channels {s.channel_offset}..{s.channel_offset + lay.channels - 1}, "
            f"the source has {src.channels}"
        )
    ix = s.index
    if not isinstance(ix, np.ndarray) or ix.dtype != np.int32 or ix.ndim != 2 or ix.shape[0] != 2:
        raise fail("index must be an int32 array of shape (2, nnz)")
    if ix.size and (ix.min() < 0 or ix.max() >= n):
        raise fail(f"index has node numbers outside [0, {n})")
    key = ix[0].astype(np.int64) * n + ix[1]
    if (np.diff(key) <= 0).any():
        raise fail("index must be sorted by (target, source) with no pair twice")


def _validate_window(src: Layer, lay: Layer, s: Synapse, fail) -> None:
    """conv, avgpool: floor-mode sliding window; shortcut: every stride-th pixel."""
    if len(src.shape) != 3 or len(lay.shape) != 3:
        raise fail(f"{s.op} needs (C, H, W) layers, got {src.shape} -> {lay.shape}")
    if s.op == "shortcut":
        hw = tuple(-(-n // st) for n, st in zip(src.shape[1:], s.stride, strict=True))
        expect = (lay.channels, *hw)
        if s.channel_offset >= lay.channels:
            raise fail(f"channel_offset {s.channel_offset} >= {lay.channels} channels")
    else:
        c = lay.channels if s.op == "conv" else src.channels
        expect = _window_shape(src.shape, c, s.kernel, s.stride, s.padding)
    if lay.shape != expect:
        raise fail(f"{s.op} from {src.shape} gives shape {expect}, the layer has {lay.shape}")


def max_phase_input(synapses) -> int:
    """Smax (docs/semantics.md §4): the largest |S(k)| one phase can add to a potential.

    Each source neuron spikes at most once per phase, so Smax = max over output channels of
    Σ |weight_q| over the channel's whole fan-in (all synapse groups, all kernel taps; an
    average-pooling weight counts once per window tap). Groups whose per-channel rows do not
    line up (a malformed artifact under validation) give the bound Σ of their maxima.
    """
    per = []
    for s in synapses:
        w = np.abs(s.weight_q.astype(np.int64))
        if s.op == "graph":  # the heaviest target node's in-edges, the same for every channel
            row = np.bincount(s.index[0], weights=w).max(initial=0).reshape(1).astype(np.int64)
        elif s.op == "embedding":  # one synapse per neuron
            row = w.max(axis=1)
        else:
            row = w.reshape(w.shape[0], -1).sum(1) if w.ndim > 1 else w
        per.append(row * (s.kernel[0] * s.kernel[1] if s.op == "avgpool" else 1))
    if len({p.shape for p in per}) == 1:
        return int(np.sum(per, axis=0).max())
    return int(sum(p.max() for p in per))


def _expected_weight_shape(src: Layer, lay: Layer, s: Synapse) -> tuple[int, ...]:
    if s.op == "graph":
        return (s.index.shape[1],) if isinstance(s.index, np.ndarray) and s.index.ndim == 2 else ()
    if s.op == "embedding":
        return (lay.channels, src.shape[1])
    if s.op == "conv":
        return (lay.channels, src.channels, *s.kernel)
    if s.op == "linear":
        return (lay.size, src.size)
    return (lay.channels,)


def _validate_config(snn: SnnModel, bad) -> None:
    """The conversion parameters the config records (when it does) are the layers' own."""
    cfg = snn.config
    hidden = [lay for lay in snn.layers if lay.kind == "neuron"]
    checks = [
        ("T_in", [("the input layer T", snn.layers[0].T)]),
        ("T", [(f"layer {lay.name} T", lay.T) for lay in hidden]),
        ("Q_resolved", [(f"layer {lay.name} Q", lay.Q) for lay in hidden]),
        ("T_w_resolved", [(f"layer {lay.name} T_w", lay.T_w) for lay in hidden]),
        ("weight_bits", [("weight_bits", snn.weight_bits)]),
        ("acc_bits", [("acc_bits", snn.acc_bits)]),
    ]
    for key, values in checks:
        for at, v in values:
            if key in cfg and (v != cfg[key] or isinstance(cfg[key], bool)):
                raise bad(f"config {key}={cfg[key]!r} disagrees with {at}: {v!r}")
    if "threshold_shift" in cfg:
        for lay in hidden:
            want = (1 + 1 / lay.Q) / 2 if cfg["threshold_shift"] else 1.0
            if not np.isclose(lay.shift, want, rtol=1e-12, atol=0):
                raise bad(
                    f"config threshold_shift={cfg['threshold_shift']!r} disagrees with "
                    f"layer {lay.name} shift {lay.shift!r}"
                )


def _check_derived(snn: SnnModel, where: str) -> None:
    """Load only: the integers a converter derives are those of the float parameters, so an
    artifact whose T, T_w, Q, shift, threshold or scale was edited without them is rejected
    (hand-built models in memory may choose other thresholds and saturation limits)."""
    if not snn.is_quantized:
        return
    from converter.quantize import threshold_table

    for i, lay in enumerate(snn.layers):
        if lay.kind not in ("neuron", "output"):
            continue
        at = f"{where}: layer {i} ({lay.name})"
        top = 2 ** (snn.acc_bits - 1) - 1 - max_phase_input(lay.synapses)
        if lay.sat_limit != top:
            raise ArtifactError(
                f"{at} sat_limit {lay.sat_limit} != 2^(acc_bits-1) - 1 - Smax = {top}"
            )
        if lay.kind == "output":
            continue
        src = snn.source_of(lay)
        want = np.maximum(
            threshold_table(
                lay.threshold.astype(np.float64),
                lay.shift,
                lay.T,
                lay.T_w,
                src.T,
                src.Q,
                lay.Q,
                lay.scale.astype(np.float64),
            ),
            1,
        )
        # stored float32 threshold and scale: a relative error of a few 2^-24
        if (np.abs(lay.threshold_q - want) > 1 + 1e-6 * want).any():
            raise ArtifactError(
                f"{at} threshold_q is not the threshold table of its threshold, shift, T, "
                "T_w, Q and scale (docs/semantics.md §3)"
            )


def canonical(snn: SnnModel) -> SnnModel:
    """The model with every array in its storage dtype, so that memory equals the artifact."""
    layers = []
    for lay in snn.layers:
        arrays = {
            k: np.ascontiguousarray(getattr(lay, k), dtype=dt)
            for k, dt in _LAYER_ARRAYS.items()
            if getattr(lay, k) is not None
        }
        syns = tuple(
            replace(
                s,
                weight=np.ascontiguousarray(s.weight, dtype=np.float32),
                ann_weight=None
                if s.ann_weight is None
                else np.ascontiguousarray(s.ann_weight, dtype=np.float32),
            )
            for s in lay.synapses
        )
        layers.append(replace(lay, synapses=syns, **arrays))
    return replace(snn, layers=tuple(layers))


def with_layers(snn: SnnModel, layers: list[Layer]) -> SnnModel:
    """A copy of ``snn`` with other layers (SnnModel is immutable)."""
    return replace(snn, layers=tuple(layers))
