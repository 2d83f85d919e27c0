"""Export a one-spike SnnModel as a NIR graph (Neuromorphic Intermediate Representation).

NIR (PyPI ``nir``) is read by snnTorch, Norse, Sinabs, Lava-DL, Rockpool and SpiNNaker2.
:func:`to_nir` maps the artifact's layer graph onto NIR nodes; :func:`export_nir` writes it
as a NIR HDF5 file with ``nir.write``.

**Caveat: NIR's neurons are continuous-time.** A reader that simulates this graph as plain
IF neurons (dv/dt = R·I, fire when v > v_threshold, reset) does NOT reproduce the one-spike
SNN. The one-spike network is phase coded: a spike of layer l at phase t stands for
``lam[c] · Q**-t``; a neuron's potential starts at its initial potential (``Layer.bias``), is
multiplied by Q once per phase (Q_in while its inputs arrive, Q_out after), decides output
phase t_o after input phase t_o + T_w against ``c_Q · threshold · Q_out**-t_o`` (>=, not >),
and fires at most once; the input layer codes each value in binary (T_in phases, Q = 2).
NIR has no field for any of this. Everything that is needed to reproduce the network (and
the bit-exact integer datapath of docs/semantics.md) is carried in namespaced metadata:
keys prefixed ``onespike.`` on the graph and on every node.

Mapping (artifact -> NIR node), node names in brackets:

========================================  ===================================================
input layer                               ``nir.Input`` [``input``], coding in metadata
conv synapse group                        ``nir.Conv2d`` [``layer<i>_syn<g>_conv``]: the
                                          float effective weights, stride, padding,
                                          dilation 1, groups 1, bias zeros
linear synapse group                      ``nir.Flatten`` (start_dim 0, only where the source
                                          is (C, H, W)) + ``nir.Affine`` (bias zeros)
avgpool synapse group (one weight per     ``nir.SumPool2d`` (kernel, stride, padding) +
channel)                                  ``nir.Scale`` (the channel's weight broadcast to
                                          the output shape): sum of the window × weight[c]
shortcut synapse group (identity,         ``nir.Conv2d`` 1x1 with the shortcut's stride:
strided, channel offset)                  W[c, c - channel_offset] = weight[c], else 0
max pooling layer                         NIR has no max pooling of spikes: a ``nir.SumPool2d``
                                          placeholder [``layer<i>_maxpool``] with the right
                                          kernel/stride/padding and ``onespike.op =
                                          "maxpool"`` (its real rule: the earliest input
                                          spike of the window). ``strict=True`` refuses.
neuron layer                              ``nir.IF`` [``layer<i>``]: r = ones, v_threshold =
                                          the per-channel threshold broadcast to the layer's
                                          shape, v_reset = zeros
output layer (integrates, read by         ``nir.I`` [``layer<i>``] (an integrator: no firing,
argmax, no spikes)                        r = ones) followed by ``nir.Output`` [``output``]
========================================  ===================================================

Several synapse groups into one layer (a residual block) are several edges into the same
IF node; NIR sums incoming edges. Synapse nodes carry no bias: the artifact's ``Layer.bias``
is an *initial potential* (per neuron, position dependent in the first layer), not a
constant current, so it is in the neuron node's metadata (``onespike.v_init``) instead.
Shapes exclude the batch dimension, as NIR's type checker expects.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from converter.config import Q_FRAC_BITS
from converter.model import FORMAT_NAME, SCHEMA_VERSION, Layer, SnnModel, Synapse, validate

#: Version of this mapping (bump when node names, types or metadata keys change).
NIR_MAPPING_VERSION = 1
#: Prefix of every metadata key this exporter writes.
PREFIX = "onespike."

CAVEAT = (
    "NIR neurons are continuous-time. Simulating this graph as plain IF neurons does NOT "
    "reproduce the one-spike SNN (single-spike phase coding with base Q, a per-phase "
    "multiplication of the potential by Q, initial potentials, thresholds c_Q*theta*Q^-t "
    "compared with >=, at most one spike per neuron, binary-coded input). The onespike.* "
    "metadata carries what is needed to do so (docs/semantics.md of one-spike)."
)

DYNAMICS = (
    "Value form per neuron j of layer l (docs/semantics.md section 3 and 7): a spike of "
    "layer l at phase t (t = 0..T-1) stands for lam[c] * Q**-t (input layer: Q = 2, "
    "lam = lambda_in / 2, binary code of v = x * input_gain + input_offset with T_in bits, "
    "phase 0 = most significant bit). The NIR synapse weights already include lam of the "
    "source channel, so a source spike at phase t contributes weight * Q_in**-t. "
    "V_j(k) = v_init_j + sum_{t <= min(k, T_src - 1)} Q_in**-t * S_j(t), S_j(t) = sum over "
    "all incoming edges of the synapse outputs for the phase-t spikes. Phase form: "
    "U(-1) = v_init; U <- U * Q_in per phase while inputs arrive (k <= T_src - 1), "
    "U * Q_out afterwards; U += S(k). Output phase t_o is decided after input phase "
    "k = t_o + T_w: the neuron fires at t_o iff it has not fired and "
    "V(t_o + T_w) >= shift * threshold[c] * Q_out**-t_o (shift = c_Q, the threshold-shift "
    "constant). It fires at most once. Output layer: no spikes; the class is the argmax of "
    "V_j(T_src - 1), lowest index on ties. Integer datapath: weight_q, scale, bias_q, "
    "threshold_q, sat_limit, M = round(Q * 2**16), acc_bits (docs/semantics.md section 3-5)."
)


class NirExportError(ValueError):
    """The model cannot be exported (as asked) to NIR, or the file cannot be written."""


def to_nir(snn: SnnModel, *, strict: bool = False):
    """The SnnModel as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    NIR's neurons are continuous-time: a reader that simulates the returned graph as plain IF
    neurons does NOT reproduce the one-spike SNN (phase coding with base Q, the per-phase
    multiplication of the potential by Q, initial potentials, a single spike per neuron). The
    ``onespike.*`` metadata of the graph and of each node carries what is needed to do so,
    including the integer datapath (``weight_q``, ``scale``, ``bias_q``, ``threshold_q``).

    Weights are the float effective weights (``Synapse.weight``: ANN weight × λ of the
    presynaptic channel), thresholds the float ``Layer.threshold``, unchanged (float32).

    ``strict=True`` raises :class:`NirExportError` for what NIR cannot express (max pooling
    of spikes) instead of exporting a ``SumPool2d`` placeholder marked ``onespike.op =
    "maxpool"``. Raises ``converter.ArtifactError`` (a ValueError) for an invalid model.
    """
    import nir

    validate(snn, "to_nir")
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    layer_nodes: dict[int, str] = {}

    for i, lay in enumerate(snn.layers):
        if lay.kind == "input":
            nodes["input"] = nir.Input(
                input_type=np.array(lay.shape), metadata=_input_metadata(i, lay)
            )
            layer_nodes[i] = "input"
        elif lay.kind == "maxpool":
            if strict:
                raise NirExportError(
                    f"layer {i} ({lay.name}) is a max pooling layer: NIR has no max pooling "
                    "of spikes (export without strict to get a marked SumPool2d placeholder)"
                )
            name = f"layer{i}_maxpool"
            nodes[name] = nir.SumPool2d(
                kernel_size=np.array(lay.kernel),
                stride=np.array(lay.stride),
                padding=np.array(lay.padding),
                metadata=_maxpool_metadata(snn, i, lay),
            )
            edges.append((layer_nodes[lay.source], name))
            layer_nodes[i] = name
        else:
            name = f"layer{i}"
            nodes[name] = _neuron_node(nir, snn, i, lay)
            layer_nodes[i] = name
            for g, syn in enumerate(lay.synapses):
                chain = [layer_nodes[syn.source], *_synapse_nodes(nir, snn, i, g, syn, nodes)]
                edges.extend(zip(chain, [*chain[1:], name], strict=True))

    out = snn.output
    nodes["output"] = nir.Output(
        output_type=np.array(out.shape),
        metadata={
            PREFIX + "readout": "argmax of the output layer's potentials after the last "
            "input phase (lowest index on ties); dequantised logit = "
            "U * scale / q_in**(T_src - 1) in the integer datapath"
        },
    )
    edges.append((layer_nodes[len(snn.layers) - 1], "output"))
    try:
        return nir.NIRGraph(
            nodes=nodes,
            edges=edges,
            metadata=_graph_metadata(snn, layer_nodes),
            type_check=True,
        )
    except (ValueError, AssertionError) as exc:  # nir's type checker
        raise NirExportError(f"NIR rejected the exported graph: {exc}") from exc


def export_nir(snn: SnnModel, path: str | Path, *, strict: bool = False) -> Path:
    """Write the SnnModel as a NIR HDF5 file (``nir.write``) and return its path.

    The same caveat as :func:`to_nir`: NIR's neurons are continuous-time, and a reader that
    simulates the file as plain IF neurons does NOT reproduce the one-spike SNN; the
    ``onespike.*`` metadata carries what is needed to do so.
    """
    import nir

    graph = to_nir(snn, strict=strict)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        nir.write(path, graph)
    except OSError as exc:
        raise NirExportError(f"cannot write {path}: {exc}") from exc
    return path


# ------------------------------------------------------------------------------ nodes


def _neuron_node(nir, snn: SnnModel, i: int, lay: Layer):
    ones = np.ones(lay.shape, dtype=np.float32)
    meta = _neuron_metadata(snn, i, lay)
    if lay.kind == "output":
        return nir.I(r=ones, metadata=meta)
    theta = np.asarray(lay.threshold, dtype=np.float32)
    v_th = np.broadcast_to(theta.reshape(-1, *([1] * (len(lay.shape) - 1))), lay.shape)
    return nir.IF(
        r=ones,
        v_threshold=np.ascontiguousarray(v_th, dtype=np.float32),
        v_reset=np.zeros(lay.shape, dtype=np.float32),
        metadata=meta,
    )


def _synapse_nodes(
    nir,
    snn: SnnModel,
    i: int,
    g: int,
    syn: Synapse,
    nodes: dict[str, Any],
) -> list[str]:
    """Add the node(s) of one synapse group; return their names, in signal order."""
    src, lay = snn.layers[syn.source], snn.layers[i]
    base = f"layer{i}_syn{g}"
    meta = _synapse_metadata(snn, i, g, syn)
    w = np.asarray(syn.weight, dtype=np.float32)
    if syn.op == "conv":
        name = f"{base}_conv"
        nodes[name] = nir.Conv2d(
            input_shape=tuple(src.shape[1:]),
            weight=np.ascontiguousarray(w),
            stride=tuple(syn.stride),
            padding=tuple(syn.padding),
            dilation=(1, 1),
            groups=1,
            bias=np.zeros(lay.channels, dtype=np.float32),
            metadata=meta,
        )
        return [name]
    if syn.op == "linear":
        name = f"{base}_affine"
        nodes[name] = nir.Affine(
            weight=np.ascontiguousarray(w),
            bias=np.zeros(lay.size, dtype=np.float32),
            metadata=meta,
        )
        if len(src.shape) == 1:
            return [name]
        flat = f"{base}_flatten"
        nodes[flat] = nir.Flatten(
            input_type={"input": np.array(src.shape)},
            start_dim=0,
            end_dim=-1,
            metadata={PREFIX + "layer": i, PREFIX + "group": g, PREFIX + "op": "flatten"},
        )
        return [flat, name]
    if syn.op == "avgpool":
        pool, scale = f"{base}_sumpool", f"{base}_scale"
        nodes[pool] = nir.SumPool2d(
            kernel_size=np.array(syn.kernel),
            stride=np.array(syn.stride),
            padding=np.array(syn.padding),
            metadata={PREFIX + "layer": i, PREFIX + "group": g, PREFIX + "op": "avgpool"},
        )
        per = np.broadcast_to(w.reshape(-1, *([1] * (len(lay.shape) - 1))), lay.shape)
        nodes[scale] = nir.Scale(scale=np.ascontiguousarray(per, dtype=np.float32), metadata=meta)
        return [pool, scale]
    if syn.op == "shortcut":
        name = f"{base}_shortcut"
        nodes[name] = nir.Conv2d(
            input_shape=tuple(src.shape[1:]),
            weight=shortcut_matrix(syn, src.channels),
            stride=tuple(syn.stride),
            padding=(0, 0),
            dilation=(1, 1),
            groups=1,
            bias=np.zeros(lay.channels, dtype=np.float32),
            metadata=meta,
        )
        return [name]
    raise NirExportError(f"layer {i} ({lay.name}): unknown synapse op {syn.op!r}")


def shortcut_matrix(syn: Synapse, src_channels: int) -> np.ndarray:
    """The 1x1 convolution weights [C_out, C_in, 1, 1] of a ``shortcut`` synapse group.

    Output channel c reads source channel c − ``channel_offset`` (where it exists) with the
    group's weight[c]; channels outside the source (option-A zero padding) get nothing.
    """
    w = np.asarray(syn.weight, dtype=np.float32)
    m = np.zeros((w.shape[0], src_channels, 1, 1), dtype=np.float32)
    for c in range(w.shape[0]):
        s = c - syn.channel_offset
        if 0 <= s < src_channels:
            m[c, s, 0, 0] = w[c]
    return m


# ----------------------------------------------------------------------------- metadata


def _m(**kv: Any) -> dict[str, Any]:
    """Namespaced metadata that h5py can store: None dropped, tuples as int arrays."""
    out: dict[str, Any] = {}
    for k, v in kv.items():
        if v is None:
            continue
        if isinstance(v, tuple | list):
            v = np.asarray(v)
        elif isinstance(v, np.ndarray):
            v = np.ascontiguousarray(v)
        out[PREFIX + k] = v
    return out


def _source_tq(snn: SnnModel, lay: Layer) -> tuple[int, float]:
    src = snn.source_of(lay)
    return src.T, src.Q


def _input_metadata(i: int, lay: Layer) -> dict[str, Any]:
    return _m(
        layer=i,
        name=lay.name,
        kind="input",
        coding="binary: code = min(round(|v| * 2**T_in), 2**T_in - 1) of "
        "v = x * input_gain[c] + input_offset[c]; spike at phase t iff bit T_in-1-t of code "
        "is set; signed layers carry sign(v) with the spike, unsigned clamp v at 0",
        T_in=lay.T,
        Q=lay.Q,
        lam=lay.lam,
        input_gain=lay.input_gain,
        input_offset=lay.input_offset,
        signed=bool(lay.signed),
        act_mean=lay.act_mean,
    )


def _maxpool_metadata(snn: SnnModel, i: int, lay: Layer) -> dict[str, Any]:
    return _m(
        layer=i,
        name=lay.name,
        kind="maxpool",
        op="maxpool",
        placeholder="NIR has no max pooling of spikes: this SumPool2d only carries the "
        "window; the real rule is that the output neuron spikes at the earliest phase of any "
        "input spike in its window (no spike if none), i.e. the max of the decoded values",
        source=lay.source,
        kernel=lay.kernel,
        stride=lay.stride,
        padding=lay.padding,
        T=lay.T,
        Q=lay.Q,
        lam=lay.lam,
        act_mean=lay.act_mean,
    )


def _neuron_metadata(snn: SnnModel, i: int, lay: Layer) -> dict[str, Any]:
    t_src, q_in = _source_tq(snn, lay)
    out = lay.kind == "output"
    return _m(
        layer=i,
        name=lay.name,
        kind=lay.kind,
        sources=[s.source for s in lay.synapses],
        T=lay.T,
        Q=lay.Q,
        T_src=t_src,
        Q_in=q_in,
        T_w=lay.T_w,
        shift=lay.shift,
        lam=lay.lam,
        v_init=lay.bias,
        threshold=None if out else lay.threshold,
        leak_per_phase_in=q_in,
        leak_per_phase_out=None if out else lay.Q,
        fire_at_most_once=not out,
        fires=not out,
        compare=">=",
        M_in=int(round(q_in * 2**Q_FRAC_BITS)),
        M_out=None if out else int(round(lay.Q * 2**Q_FRAC_BITS)),
        scale=lay.scale,
        bias_q=lay.bias_q,
        threshold_q=lay.threshold_q,
        sat_limit=lay.sat_limit if snn.is_quantized else None,
        act_mean=lay.act_mean,
    )


def _synapse_metadata(snn: SnnModel, i: int, g: int, syn: Synapse) -> dict[str, Any]:
    per_channel = syn.op in ("avgpool", "shortcut")
    return _m(
        layer=i,
        group=g,
        op=syn.op,
        source=syn.source,
        kernel=syn.kernel,
        stride=syn.stride,
        padding=syn.padding,
        channel_offset=syn.channel_offset,
        weight=syn.weight if per_channel else None,  # the artifact's [C] vector
        weight_q=syn.weight_q,
        weight_q_dtype=None if syn.weight_q is None else str(syn.weight_q.dtype),
    )


def _graph_metadata(snn: SnnModel, layer_nodes: dict[int, str]) -> dict[str, Any]:
    cfg = snn.config
    hidden = [lay for lay in snn.layers if lay.kind == "neuron"]
    return _m(
        format=FORMAT_NAME,
        schema_version=SCHEMA_VERSION,
        nir_mapping_version=NIR_MAPPING_VERSION,
        caveat=CAVEAT,
        dynamics=DYNAMICS,
        T=cfg.get("T"),
        Q=cfg.get("Q_resolved", cfg.get("Q") if not isinstance(cfg.get("Q"), str) else None),
        T_w=cfg.get("T_w_resolved", cfg.get("T_w")),
        T_in=snn.input.T,
        Q_in_input=snn.input.Q,
        shift=hidden[0].shift if hidden else None,
        threshold_shift=cfg.get("threshold_shift"),
        fire_at_most_once=True,
        quantized=snn.is_quantized,
        weight_bits=snn.weight_bits,
        acc_bits=snn.acc_bits,
        q_frac_bits=Q_FRAC_BITS,
        config_json=json.dumps(cfg, sort_keys=True),
        meta_json=json.dumps(snn.meta, sort_keys=True),
        layer_nodes_json=json.dumps({str(k): v for k, v in layer_nodes.items()}),
        output_readout="argmax",
    )
