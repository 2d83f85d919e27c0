"""SnnModel: the immutable converted network, and its safetensors + JSON artifact."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from converter.config import Q_FRAC_BITS

SCHEMA_VERSION = 1
FORMAT_NAME = "one-spike-snn"
LAYER_KINDS = ("input", "neuron", "maxpool", "output")
SYNAPSE_OPS = ("conv", "linear", "avgpool", "shortcut")

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
}
_SYNAPSE_ARRAYS = {"weight": "float32", "weight_q": None}  # weight_q: int8 or int16
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
    """

    source: int
    op: str
    weight: np.ndarray
    weight_q: np.ndarray | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    channel_offset: int = 0


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
    try:
        layers = tuple(_layer_from(i, e, tensors) for i, e in enumerate(manifest["layers"]))
        snn = SnnModel(
            layers=layers,
            config=manifest["config"],
            weight_bits=manifest["weight_bits"],
            acc_bits=manifest["acc_bits"],
            meta=manifest.get("meta", {}),
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{where}: malformed manifest ({exc!r})") from exc
    validate(snn, where)
    return snn


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
            v = entry[f.name]
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
    """Check the structural invariants every consumer relies on; raise ArtifactError."""

    def bad(msg: str) -> ArtifactError:
        return ArtifactError(f"{where}: {msg}")

    if not snn.layers or snn.layers[0].kind != "input" or snn.layers[-1].kind != "output":
        raise bad("the first layer must be the input and the last the output layer")
    for i, lay in enumerate(snn.layers):
        if lay.kind not in LAYER_KINDS:
            raise bad(f"layer {i} has unknown kind {lay.kind!r}")
        if lay.lam is None or lay.lam.shape != (lay.channels,):
            raise bad(f"layer {i} ({lay.name}) needs lam of shape ({lay.channels},)")
        if lay.kind == "maxpool" and not 0 <= lay.source < i:
            raise bad(f"layer {i} ({lay.name}) reads layer {lay.source}, not an earlier one")
        if lay.kind in ("neuron", "output"):
            _validate_neuron_layer(snn, i, lay, bad)


def _validate_neuron_layer(snn: SnnModel, i: int, lay: Layer, bad) -> None:
    if not lay.synapses:
        raise bad(f"layer {i} ({lay.name}) has no synapses")
    if lay.bias is None or lay.bias.shape != lay.shape:
        raise bad(f"layer {i} ({lay.name}) bias must have shape {lay.shape}")
    if lay.kind == "neuron" and (lay.threshold is None or lay.threshold.shape != (lay.channels,)):
        raise bad(f"layer {i} ({lay.name}) threshold must have shape ({lay.channels},)")
    srcs = {
        (snn.layers[s.source].T, snn.layers[s.source].Q) for s in lay.synapses if 0 <= s.source < i
    }
    if len(srcs) != 1 or any(not 0 <= s.source < i for s in lay.synapses):
        raise bad(f"layer {i} ({lay.name}) must read earlier layers sharing one (T, Q)")
    for s in lay.synapses:
        if s.op not in SYNAPSE_OPS:
            raise bad(f"layer {i} ({lay.name}) has unknown synapse op {s.op!r}")
        expect = _expected_weight_shape(snn.layers[s.source], lay, s)
        if tuple(s.weight.shape) != expect:
            raise bad(
                f"layer {i} ({lay.name}) {s.op} weight has shape {tuple(s.weight.shape)}, "
                f"expected {expect}"
            )
        if snn.is_quantized:
            if s.weight_q is None or s.weight_q.shape != s.weight.shape:
                raise bad(f"layer {i} ({lay.name}) lacks integer weights of shape {expect}")
            if str(s.weight_q.dtype) not in _INT_WEIGHT_DTYPES:
                raise bad(f"layer {i} ({lay.name}) integer weights have dtype {s.weight_q.dtype}")
    if snn.is_quantized:
        if lay.bias_q is None or lay.bias_q.shape != lay.shape:
            raise bad(f"layer {i} ({lay.name}) lacks integer initial potentials")
        if lay.kind == "neuron" and (
            lay.threshold_q is None or lay.threshold_q.shape != (lay.channels, lay.T)
        ):
            raise bad(
                f"layer {i} ({lay.name}) threshold_q must have shape ({lay.channels}, {lay.T})"
            )


def _expected_weight_shape(src: Layer, lay: Layer, s: Synapse) -> tuple[int, ...]:
    if s.op == "conv":
        return (lay.channels, src.channels, *s.kernel)
    if s.op == "linear":
        return (lay.size, src.size)
    return (lay.channels,)


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
            replace(s, weight=np.ascontiguousarray(s.weight, dtype=np.float32))
            for s in lay.synapses
        )
        layers.append(replace(lay, synapses=syns, **arrays))
    return replace(snn, layers=tuple(layers))


def with_layers(snn: SnnModel, layers: list[Layer]) -> SnnModel:
    """A copy of ``snn`` with other layers (SnnModel is immutable)."""
    return replace(snn, layers=tuple(layers))
