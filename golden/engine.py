"""The golden model: float (ann, exact, pipelined) and bit-exact integer (int) modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from converter.config import Q_FRAC_BITS
from converter.model import Layer, SnnModel, Synapse, max_phase_input
from converter.ops import (
    ann_ops,
    conv_cover,
    count_adds,
    graph_matrix,
    maxpool_phase,
    synapse_at,
    synapse_forward,
)
from converter.quantize import fixed_base, gain, quantized_base
from golden import kernels, native

MODES = ("ann", "exact", "pipelined", "int")
#: The leak's rounding constants (docs/semantics.md §3): ⌊(U·M + 2^(F-1)) · 2^-F⌋.
ROUND_HALF, SHIFT_INV = float(1 << (Q_FRAC_BITS - 1)), 1.0 / (1 << Q_FRAC_BITS)


@dataclass
class GoldenResult:
    """What one golden run produced.

    Attributes
    ----------
    logits : Tensor (N, classes), float32
        Output-layer potentials in the ANN's logit units (int mode: dequantised).
    predictions : Tensor (N,), int64
        argmax of the logits (int mode: of the integer potentials; ties go to the lower index).
    spikes : list of Tensor or None, one per layer
        Input layer: the signed spike trains (N, T_in, *shape), int8 in {-1, 0, 1}. Spiking
        and max-pool layers: the phase of each neuron's spike (N, *shape), int16, −1 for none.
        Output layer (and every layer in ``ann`` mode, or with ``keep_spikes=False``): None.
    counts : dict of per-layer int64 arrays (totals over the N images)
        ``spikes`` emitted, ``adds`` (synaptic additions the incoming spikes trigger: each spike
        times its fan-out), ``ann_macs`` and ``ann_adds`` of the ANN op the layer replaces,
        ``neurons`` per image; plus ``names``, ``kinds`` and ``images``.
    logits_int : Tensor or None
        int mode only: the output layer's integer potentials.
    """

    mode: str
    logits: torch.Tensor
    predictions: torch.Tensor
    spikes: list[torch.Tensor | None]
    counts: dict = field(default_factory=dict)
    logits_int: torch.Tensor | None = None

    def accuracy(self, labels: torch.Tensor) -> float:
        """Percentage of predictions equal to ``labels``."""
        labels = torch.as_tensor(labels).reshape(-1).cpu()
        if labels.shape != self.predictions.shape:
            raise ValueError(
                f"{labels.shape[0]} labels for {self.predictions.shape[0]} predictions"
            )
        return 100.0 * (self.predictions == labels).double().mean().item()

    def spikes_per_neuron(self) -> float:
        """Mean spikes per hidden spiking neuron per image (≤ 1 by construction)."""
        c = self.counts
        hidden = [i for i, k in enumerate(c["kinds"]) if k == "neuron"]
        n = sum(int(c["neurons"][i]) for i in hidden) * c["images"]
        return float(sum(int(c["spikes"][i]) for i in hidden) / max(n, 1))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(
    snn: SnnModel,
    inputs: torch.Tensor,
    mode: str = "exact",
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    keep_spikes: bool = True,
) -> GoldenResult:
    """Run the SNN on ``inputs`` (N, *input shape) taken exactly as the ANN takes them.

    A graph network (``snn.meta["graph"]``) takes its node features (nodes, F) instead, one
    graph without a batch axis (the (N, N) identity for one-hot features), and returns logits
    (nodes, C) and one prediction per node; its spikes keep the layers' (1, C, nodes, 1).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "int" and not snn.is_quantized:
        raise ValueError("int mode needs integer weights: convert with weight_bits=8")
    graph = snn.meta.get("graph")
    if graph is not None:
        from converter.graph_frontend import layer_input

        inputs = layer_input(inputs, graph["one_hot"], graph["nodes"], graph["features"])
    inputs = torch.as_tensor(inputs)
    if tuple(inputs.shape[1:]) != snn.input_shape:
        raise ValueError(
            f"inputs have shape {tuple(inputs.shape)}, the SNN takes (N, "
            f"{', '.join(map(str, snn.input_shape))})"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dev = torch.device(device) if device is not None else default_device()
    engine = _Engine(snn, mode, dev)
    parts = [
        engine.batch(inputs[i : i + batch_size].to(dev, torch.float32), keep_spikes)
        for i in range(0, inputs.shape[0], batch_size)
    ]
    return _merge(snn, mode, parts, inputs.shape[0], keep_spikes)


def _merge(snn, mode, parts, n, keep_spikes) -> GoldenResult:
    logits = torch.cat([p[0] for p in parts])
    preds = torch.cat([p[1] for p in parts])
    spikes = [None] * len(snn.layers)
    if keep_spikes and mode != "ann":
        spikes = [
            None if parts[0][2][i] is None else torch.cat([p[2][i] for p in parts])
            for i in range(len(snn.layers))
        ]
    counts = {k: sum(p[3][k] for p in parts) for k in ("spikes", "adds")}
    counts["ann_macs"] = np.array([m for m, _ in _ann_counts(snn)], dtype=np.int64) * n
    counts["ann_adds"] = np.array([a for _, a in _ann_counts(snn)], dtype=np.int64) * n
    # a two-rail layer codes one value per pair of neurons (at most one of them fires)
    counts["neurons"] = np.array(
        [lay.size // 2 if lay.rails else lay.size for lay in snn.layers], dtype=np.int64
    )
    counts["names"] = [lay.name for lay in snn.layers]
    counts["kinds"] = [lay.kind for lay in snn.layers]
    counts["images"] = n
    li = torch.cat([p[4] for p in parts]) if parts[0][4] is not None else None
    return GoldenResult(mode, logits, preds, spikes, counts, li)


def _ann_counts(snn: SnnModel) -> list[tuple[int, int]]:
    out = []
    for lay in snn.layers:
        ops = [ann_ops(s, snn.layers[s.source], lay) for s in lay.synapses]
        out.append((sum(m for m, _ in ops), sum(a for _, a in ops)))
    return out


class _Engine:
    """Runs batches through the layers; one instance per run (weights on the device)."""

    def __init__(self, snn: SnnModel, mode: str, device: torch.device):
        self.snn, self.mode, self.dev = snn, mode, device
        self.cpu = _kernels_for(device)
        self.f = _engine_dtype(snn, mode, self.cpu)
        self.recomputed = 0  # neurons recomputed in float64 (_exact_phases, _pipelined_cpu)
        self.w_events: dict[
            int, Any
        ] = {}  # conv weights for kernels.int_events / _pipelined_events
        self.dec64: dict[tuple, torch.Tensor] = {}  # float64 decodes of this batch
        # exact mode: each source's decoded spikes in the engine's dtype, kept until its last
        # reader has run (the CPU coding kernel writes them beside the phases)
        self.dec: dict[int, torch.Tensor] = {}
        self.sq: dict[int, torch.Tensor] = {}  # and their Σ_c x², (N, 1, *spatial)
        self.fired: dict[int, torch.Tensor] = {}  # and their spikes per pixel, (N, pixels)
        self.single: dict[tuple, torch.Tensor] = {}  # a layer's shortcut products w · x
        self.conv_consts: dict[int, dict] = {}  # kernels.exact_conv_code's arrays per layer
        self.input_counts: dict[int, torch.Tensor] = {}  # the input's spikes per neuron
        self.fired_cols: dict[int, np.ndarray] = {}  # self.fired summed over the images
        self.last_reader = _last_readers(snn)
        self.w = [
            [
                _weight(s, torch.as_tensor(_weight_of(s, mode)), lay, device, self.f)
                for s in lay.synapses
            ]
            for lay in snn.layers
        ]
        self.bias = [_bias_of(lay, mode, device) for lay in snn.layers]
        # float32 passes (exact mode; pipelined on the CPU): |w| for the rounding bound Σ|w|·|x|
        rounded = mode == "exact" or (mode == "pipelined" and self.f == torch.float32)
        self.w_abs = [[_abs(w) for w in ws] for ws in self.w] if rounded else None
        self.w_norm = (
            [[_row_norm(s, lay, mode, device) for s in lay.synapses] for lay in snn.layers]
            if rounded
            else None
        )
        if self.cpu:
            kernels.follow_torch_threads()

    # ---------------------------------------------------------------- per batch
    def batch(self, x: torch.Tensor, keep: bool):
        snn = self.snn
        self.dec64, self.dec, self.sq, self.fired = {}, {}, {}, {}
        self.input_counts, self.fired_cols = {}, {}
        nl = len(snn.layers)
        spikes: list[torch.Tensor | None] = [None] * nl
        counts = {"spikes": np.zeros(nl, np.int64), "adds": np.zeros(nl, np.int64)}
        vals: list[torch.Tensor | None] = [None] * nl  # ann mode: activations / λ
        logits_int = None
        for i, lay in enumerate(snn.layers):
            if lay.kind == "input":
                if self.mode == "ann":
                    vals[i] = 2 * self._input_value(x, lay)
                else:
                    spikes[i] = self._encode_input(x, lay, keep)
            elif self.mode == "ann":
                vals[i] = self._ann_layer(lay, vals)
            elif lay.kind == "maxpool":
                spikes[i] = self._maxpool(spikes[lay.source], lay)
            else:
                spikes[i], out = self._spiking_layer(lay, spikes)
                if lay.kind == "output":
                    vals[i], logits_int = out
                # a hidden layer's last decision is at phase T − 1 + T_w: inputs after it are
                # never added (docs/semantics.md §3, §6)
                upto = None if lay.kind == "output" else lay.T - 1 + lay.T_w
                counts["adds"][i] = sum(
                    self._adds(s, lay, spikes[s.source], upto) for s in lay.synapses
                )
            if i in self.fired:  # (the exact coding kernel's count)
                counts["spikes"][i] = int(self._fired_per_pixel(i).sum())
            elif i in self.input_counts:  # (the input coding kernel's)
                counts["spikes"][i] = int(self.input_counts[i].sum())
            elif spikes[i] is not None:
                counts["spikes"][i] = _count_spikes(spikes[i], lay)
            for j in [j for j in self.dec if self.last_reader[j] <= i]:
                del self.dec[j]
                self.sq.pop(j, None)
                self.fired.pop(j, None)
                self.fired_cols.pop(j, None)
        logits = self._rows(vals[-1]).float().cpu()
        li = self._rows(logits_int).cpu() if logits_int is not None else None
        preds = (li if li is not None else logits).argmax(1)
        kept = [s.cpu() if keep and s is not None else None for s in spikes]
        kept[-1] = None
        return logits, preds, kept, counts, li

    def _maxpool(self, sp: torch.Tensor, lay: Layer) -> torch.Tensor:
        """``maxpool_phase``; on the CPU in one kernel pass (``kernels.maxpool_phases``)."""
        if not self.cpu or sp.dim() != 4:
            return maxpool_phase(sp, lay, lay.T)
        out = torch.empty((sp.shape[0], *lay.shape), dtype=sp.dtype)
        kernels.maxpool_phases(sp.contiguous().numpy(), *lay.kernel, *lay.stride, *lay.padding,
                               out.numpy())  # fmt: skip
        return out

    def _rows(self, v: torch.Tensor) -> torch.Tensor:
        """Output potentials as rows to classify: (N, classes); a graph's (1, C, nodes, 1)
        as (nodes, C), one row per node."""
        if self.snn.meta.get("graph") is not None:
            return v.reshape(v.shape[1], -1).t()
        return v.reshape(v.shape[0], -1)

    def _input_value(self, x: torch.Tensor, lay: Layer) -> torch.Tensor:
        return input_value(x, lay, self.dev)

    def _encode_input(self, x: torch.Tensor, lay: Layer, keep: bool) -> torch.Tensor:
        """``encode_input``; on the CPU (T_in ≤ 24) in one kernel pass
        (``kernels.encode_binary``) that also writes the input's spike counts
        (``self.input_counts``) and, in exact mode, its float32 decodes (``self.dec``). In
        exact mode, where the spikes are not kept and every reader takes the decodes and
        the counts (``_trains_unread``), the trains themselves are not written: the layer's
        spikes are then an empty (N, 0) tensor, which no reader can take for trains."""
        if not self.cpu or lay.T > 24:
            return encode_input(x, lay, self.dev)
        v = input_value(x, lay, self.dev)
        n = v.shape[0]
        i = self.snn.layers.index(lay)
        exact = self.mode == "exact" and self.f == torch.float32
        write = keep or not exact or not _trains_unread(self.snn, i)
        trains = torch.empty((n, lay.T, *v.shape[1:]) if write else (n, 0), dtype=torch.int8)
        dec = torch.empty(v.shape, dtype=torch.float32)
        counts = torch.empty(v.shape, dtype=torch.float32)
        size = dec[0].numel()
        flat = trains.numpy().reshape(n, -1 if write else 0, size)
        kernels.encode_binary(v.contiguous().numpy().reshape(n, size), lay.T, bool(lay.signed),
                              write, flat, dec.numpy().reshape(n, size),
                              counts.numpy().reshape(n, size))  # fmt: skip
        self.input_counts[i] = counts
        if exact:
            self.dec[i] = dec
        return trains

    def _ann_layer(self, lay: Layer, vals) -> torch.Tensor:
        if lay.kind == "maxpool":
            return torch.nn.functional.max_pool2d(
                vals[lay.source], lay.kernel, lay.stride, lay.padding
            )
        z = self._preact_float(lay, [vals[s.source] for s in lay.synapses])
        if lay.kind == "output":
            return z
        return z.clamp(min=0) / self._chan(lay.threshold, lay)

    def _chan(self, v, lay: Layer) -> torch.Tensor:
        return torch.as_tensor(v, device=self.dev, dtype=self.f).reshape(
            -1, *([1] * (len(lay.shape) - 1))
        )

    def _preact_float(self, lay: Layer, xs: list[torch.Tensor], dtype=None) -> torch.Tensor:
        """The layer's potentials from its inputs ``xs``, in the engine's dtype or ``dtype``
        (the weights then converted from the SnnModel's, as an engine of that dtype has them)."""
        i = self.snn.layers.index(lay)
        f = self.f if dtype is None else dtype
        ws = self.w[i]
        if f != self.f:
            ws = [
                _weight(s, torch.as_tensor(_weight_of(s, self.mode)), lay, self.dev, f)
                for s in lay.synapses
            ]
        z = None
        for j, (s, w, x) in enumerate(zip(lay.synapses, ws, xs, strict=True)):
            y = synapse_forward(x.to(f), s, w, lay)
            if self.mode == "exact" and s.op in SINGLE_PRODUCT and f == self.f:
                self.single[(i, j)] = y  # its magnitudes are its bound's (_magnitude_parts)
                y = y.clone() if z is None else y
            z = y if z is None else z.add_(y)
        return z.add_(self.bias[i].to(f))

    # ---------------------------------------------------------------- spiking layers
    def _spiking_layer(self, lay: Layer, spikes):
        src = self.snn.source_of(lay)
        if self.mode == "int":
            return self._int_layer(lay, src, spikes)
        if self.mode == "pipelined" and self.cpu and self.f == torch.float32:
            groups = _event_groups(self.snn, lay)
            if groups is not None and len(_partial_phases(lay, src)) >= EVENTS_MIN_PARTIALS:
                return self._pipelined_events(lay, src, spikes, groups), None
        if self.mode == "exact" and self.cpu and self.f == torch.float32 and FUSED_EXACT:
            groups = _fused_groups(self.snn, lay) if lay.kind != "output" else None
            if groups is not None:
                return self._exact_conv_layer(lay, spikes, groups), None
        # pipelined logits are float64 on every device (the CPU engine's passes are float32)
        f = torch.float64 if lay.kind == "output" and self.mode == "pipelined" else self.f
        decoded = [self._decoded(spikes, s.source, f) for s in lay.synapses]
        z = self._preact_float(lay, decoded, f)
        if lay.kind == "output":
            return None, (z, None)
        theta = self._chan(lay.threshold, lay)
        if self.mode == "exact":
            return self._exact_phases(lay, spikes, decoded, z, theta), None
        return self._pipelined(lay, src, spikes, decoded, z, theta), None

    def _adds(self, syn, lay: Layer, sp: torch.Tensor, upto: int | None) -> int:
        """``_group_adds``; for a source whose per-pixel spike counts the exact coding kernel
        wrote (every phase counted), a convolution's as C_out · Σ fired · cover and an
        identity shortcut's as Σ fired."""
        src = self.snn.layers[syn.source]
        every = upto is None or upto >= src.T - 1  # every phase of the source counts
        if syn.source in self.input_counts and every:
            return int(count_adds(self.input_counts[syn.source], syn, lay).sum())
        fired = self.fired.get(syn.source)
        if fired is None or not every:
            return _group_adds(self.snn, syn, lay, sp, upto)
        if syn.op == "shortcut" and _identity(syn, src, lay):  # one addition per spike
            return int(self._fired_per_pixel(syn.source).sum())
        if syn.op != "conv":
            return _group_adds(self.snn, syn, lay, sp, upto)
        cover = conv_cover(tuple(sp.shape[2:]), syn.kernel, syn.stride, syn.padding,
                           tuple(lay.shape[1:]))  # fmt: skip
        per_pixel = self._fired_per_pixel(syn.source)  # summed over the images first
        return lay.channels * int(per_pixel @ cover.reshape(-1).numpy().astype(np.int64))

    def _fired_per_pixel(self, src: int) -> np.ndarray:
        """Source ``src``'s spikes per pixel summed over the batch's images, int64 (OH·OW,):
        from the coding kernel's spikes per pixel, once per batch."""
        if src not in self.fired_cols:
            self.fired_cols[src] = self.fired[src].numpy().sum(0, dtype=np.int64)
        return self.fired_cols[src]

    def _decoded(self, spikes, src: int, f: torch.dtype) -> torch.Tensor:
        """Source ``src``'s spikes decoded in dtype ``f`` (``_decode``); in exact mode once
        per batch, kept in ``self.dec`` for its other readers."""
        if self.mode != "exact" or f != self.f:
            return _decode(spikes[src], self.snn.layers[src], f)
        if src not in self.dec:
            self.dec[src] = _decode(spikes[src], self.snn.layers[src], f)
        return self.dec[src]

    def _exact_phases(self, lay: Layer, spikes, decoded, z, theta) -> torch.Tensor:
        """Eq. 4 decided as in float64, at float32 speed.

        z comes from float32 sums of n = fan-in products (decoded spikes and weights), whose
        rounding error is at most about (n + 1) · 2^-24 · (Σ|w|·|x| + |B|) in any summation
        order (Higham, Accuracy and Stability of Numerical Algorithms, §3.1); Σ|w|·|x| is
        bounded from above by ``_magnitude_parts`` (Cauchy–Schwarz for convolutions). A neuron
        whose z / θ lies within twice that bound of a coding threshold is recomputed in
        float64 from its own fan-in (ops.synapse_at) and coded from that value, so a
        potential on a threshold (an average pooling of equal spikes under floor coding) is
        decided as Eq. 4 in float64 decides it. On ResNet-20 about 0.2 % of the neurons are
        recomputed (104,514 of 48 M on 256 CIFAR images; 45,512 with the exact Σ|w|·|x|,
        which cost a second convolution). On the CPU the coding kernel also writes the
        decoded spikes and their Σ_c x², which the next layers read (``self.dec``,
        ``self.sq``).
        """
        parts = self._magnitude_parts(lay, decoded)
        gamma = (fan_in(lay) + 2) * EXACT_ROUNDING
        th = _thresholds(lay, z.dtype, z.device).flip(0).contiguous()  # ascending
        dec = sq = fired = None
        if self.cpu and z.dtype == torch.float32:  # the kernel's float32 test
            phase, near, dec, sq, fired = self._exact_code_cpu(lay, z, parts, theta, th, gamma)
        else:
            mag = self._sum_parts(lay, parts)
            r = z / theta
            idx = torch.searchsorted(th, r.contiguous(), right=True)
            lut = torch.tensor([-1, *range(lay.T - 1, -1, -1)], dtype=torch.int16, device=r.device)
            phase = lut[idx]
            tol = mag.mul_(gamma).div_(theta).add_(r.abs(), alpha=4 * EXACT_ROUNDING)
            pad = torch.cat([th.new_tensor([-float("inf")]), th, th.new_tensor([float("inf")])])
            near = ((r - pad[idx]) <= tol) | ((pad[idx + 1] - r) <= tol)
        if self.cpu:  # NumPy's nonzero is several times faster than torch's on the CPU
            flat = torch.from_numpy(np.flatnonzero(near.numpy().reshape(-1)))
        else:
            flat = torch.nonzero(near.reshape(-1)).squeeze(1)
        self.recomputed += int(flat.numel())
        if flat.numel():
            z64 = self._potential64_at(lay, spikes, flat)
            per = lay.size // lay.channels
            th64 = torch.as_tensor(lay.threshold, device=self.dev).double()
            phase.view(-1)[flat] = _encode_hidden(z64 / th64[(flat // per) % lay.channels], lay)
            if dec is not None:  # the kernel's decodes and Σ_c x² of the recomputed pixels
                dec.view(-1)[flat] = torch.from_numpy(_phase_table(lay, dec.dtype))[
                    phase.view(-1)[flat].long() + 1
                ]
                rows = dec.reshape(dec.shape[0], lay.channels, -1)
                b, q = flat // lay.size, flat % per
                sq.reshape(dec.shape[0], -1)[b, q] = rows[b, :, q].square().sum(1)
                ph = phase.reshape(dec.shape[0], lay.channels, -1)
                fired[b, q] = (ph[b, :, q] >= 0).sum(1).to(fired.dtype)
        if dec is not None:
            i = self.snn.layers.index(lay)
            self.dec[i], self.sq[i] = dec, sq.reshape(dec.shape[0], 1, *lay.shape[1:])
            self.fired[i] = fired
        return phase

    def _exact_conv_layer(self, lay: Layer, spikes, groups) -> torch.Tensor:
        """Exact mode on the CPU for a convolution layer with at most one shortcut
        (``_fused_groups``): PyTorch's float32 convolution, then one pass, the native one
        (``golden.native``, C) where it runs here, else ``kernels.exact_conv_code``
        (Numba), which adds the shortcut and the bias, bounds the
        rounding as ``_magnitude_parts`` does, recomputes in float64 the neurons the bound
        cannot decide (as ``_exact_phases``) and writes the phases, the decodes, their Σ_c x²
        and the spikes per pixel. Its phases are ``_exact_phases``'s (the tests compare
        them); it saves that path's separate passes over the layer (ResNet-20, 256 images:
        the shortcut, bias and bound tensors, the box-sum convolutions, the flagged neurons'
        index lists)."""
        i = self.snn.layers.index(lay)
        cj, sj = groups
        cs = lay.synapses[cj]
        x = self._decoded(spikes, cs.source, self.f)
        zc = synapse_forward(x, cs, self.w[i][cj], lay).contiguous()
        sq_src = self.sq.get(cs.source)
        if sq_src is None:
            sq_src = x.square().sum(1)
        n, (c, oh, ow) = zc.shape[0], lay.shape
        per = oh * ow
        k = self._conv_consts(i, lay, groups)
        if sj is None:
            dec2, sp2 = torch.zeros(0, 1, 1, 1), torch.zeros(0, 1, 1, 1, dtype=torch.int16)
        else:
            dec2 = self._decoded(spikes, lay.synapses[sj].source, self.f).contiguous()
            sp2 = spikes[lay.synapses[sj].source].contiguous()
        if self.snn.layers[cs.source].kind == "input":  # recomputed from its values
            x64 = self._decoded64(spikes, cs.source).contiguous()
            sp = torch.zeros((0, 1, 1, 1), dtype=torch.int16)
        else:  # from its phases
            x64 = torch.zeros((0, 1, 1, 1), dtype=torch.float64)
            sp = spikes[cs.source].contiguous()
        phase = torch.empty((n, c, oh, ow), dtype=torch.int16)
        dec = torch.empty((n, c, oh, ow), dtype=self.f)
        sq = torch.empty((n, per), dtype=self.f)
        fired = torch.empty((n, per), dtype=torch.int32)
        nrec = np.zeros(n, np.int64)
        gamma = (fan_in(lay) + 2) * EXACT_ROUNDING
        conv_first = sj is None or cj < sj  # (the float64 sum's order)
        sq_np = sq_src.contiguous().numpy().reshape(n, sq_src.shape[-2], sq_src.shape[-1])
        if NATIVE_EXACT and native.library() is not None:
            self._exact_conv_native(zc, k, sq_np, cs, dec2, sp, x64, sp2, gamma, conv_first,
                                    phase, dec, sq, fired, nrec)  # fmt: skip
        else:
            kernels.exact_conv_code(
                zc.numpy().reshape(n, c, per), k["bias"], k["babs"], (oh, ow), sq_np,
                tuple(cs.kernel), k["margin"], k["wn"], dec2.numpy(), k["w2"], k["s2"],
                k["off2"], k["theta"], k["th"], gamma, 4 * EXACT_ROUNDING, k["table"],
                conv_first, sp.numpy(), x64.numpy(), k["table64"], k["w64"], k["geo"],
                sp2.numpy(), k["table2_64"], k["w2_64"], k["bias64"], k["theta64"],
                k["th64"], phase.numpy().reshape(n, c, per), dec.numpy().reshape(n, c, per),
                sq.numpy(), fired.numpy(), nrec,
            )  # fmt: skip
        self.recomputed += int(nrec.sum())
        self.dec[i], self.sq[i], self.fired[i] = dec, sq.reshape(n, 1, oh, ow), fired
        return phase

    def _exact_conv_native(self, zc, k, sq_np, cs, dec2, sp, x64, sp2, gamma, conv_first,
                           phase, dec, sq, fired, nrec) -> None:  # fmt: skip
        """``kernels.exact_conv_code`` as the native pass (``golden.native``): the same
        outputs."""
        n, c, per = zc.shape[0], phase.shape[1], phase.shape[2] * phase.shape[3]
        theta = k["theta"]
        widen = kernels.SLACK * (1.0 + 5 * 2.0**-23)  # exact_conv_code's, one norm group
        g = (gamma / theta.astype(np.float64) * widen).astype(np.float32)
        e = float(np.float32(4 * EXACT_ROUNDING * kernels.SLACK))
        native.exact_conv_rows(
            torch.get_num_threads(), zc.numpy().reshape(n, c, per), k["bias"], k["babs"],
            sq_np, tuple(cs.kernel), k["geo"], k["margin"], k["wn"], dec2.numpy(), k["w2"], k["s2"],
            k["off2"], theta, g, e, k["pad"], k["tabk"], k["phk"], phase.numpy(),
            dec.numpy(), sq.numpy(), fired.numpy(), nrec, sp.numpy(), x64.numpy(),
            k["table64"], k["w64"], sp2.numpy(), k["table2_64"], k["w2_64"], k["bias64"],
            k["theta64"], k["th64"], conv_first,
        )  # fmt: skip

    def _conv_consts(self, i: int, lay: Layer, groups) -> dict:
        """The per-layer arrays of ``kernels.exact_conv_code`` (once per run)."""
        if i in self.conv_consts:
            return self.conv_consts[i]
        cj, sj = groups
        cs, src = lay.synapses[cj], self.snn.layers[lay.synapses[cj].source]
        c, per = lay.channels, lay.size // lay.channels
        b = self.bias[i] if self.bias[i] is not None else torch.zeros(lay.shape)
        b = b.cpu().expand(lay.shape).reshape(c, per)
        f = self.f
        k = {
            "bias": b.to(f).contiguous().numpy(),
            "babs": b.to(f).abs().contiguous().numpy(),
            "bias64": b.double().contiguous().numpy(),
            "margin": _norm_margin(int(np.prod(cs.weight.shape[1:]))),
            "wn": self.w_norm[i][cj].reshape(-1).contiguous().numpy(),
            "theta": self._chan(lay.threshold, lay).reshape(-1).contiguous().numpy(),
            "theta64": torch.as_tensor(lay.threshold).double().reshape(-1).numpy(),
            "th": _thresholds(lay, f, "cpu").flip(0).contiguous().numpy(),
            "th64": _thresholds(lay, torch.float64, "cpu").flip(0).contiguous().numpy(),
            "table": _phase_table(lay, f),
            "table64": _phase_table(src, torch.float64) if src.kind != "input" else np.zeros(1),
            "w64": torch.as_tensor(cs.weight).double().permute(0, 2, 3, 1).contiguous().numpy(),
            "geo": (*cs.stride, *cs.padding),
            "w2": np.zeros(c, np.float32), "s2": (1, 1), "off2": 0,
            "table2_64": np.zeros(1), "w2_64": np.zeros(c),
        }  # fmt: skip
        nt = lay.T  # the native pass's tables: thresholds around r, and by k reached
        k["pad"] = np.concatenate([[-np.inf], k["th"], [np.inf]]).astype(np.float32)
        k["tabk"] = np.concatenate([k["table"][:1], k["table"][1:][::-1]]).astype(np.float32)
        k["phk"] = np.array([-1, *range(nt - 1, -1, -1)], np.int32)
        if sj is not None:
            ss = lay.synapses[sj]
            k["w2"] = self.w[i][sj].reshape(-1).contiguous().numpy()
            k["s2"], k["off2"] = tuple(ss.stride), int(ss.channel_offset)
            k["table2_64"] = _phase_table(self.snn.layers[ss.source], torch.float64)
            k["w2_64"] = torch.as_tensor(ss.weight).double().reshape(-1).numpy()
        self.conv_consts[i] = k
        return k

    def _magnitude(self, lay: Layer, decoded) -> torch.Tensor:
        """An upper bound of Σ|w|·|x| + |B| per neuron, shaped as the layer's potentials
        (N, *lay.shape): ``_magnitude_parts`` summed."""
        return self._sum_parts(lay, self._magnitude_parts(lay, decoded))

    def _magnitude_parts(self, lay: Layer, decoded):
        """An upper bound of Σ|w|·|x| + |B| per neuron, the size of the float32 sum that
        bounds its rounding (``_exact_phases``), in parts: (pix, wn, extra).

        A convolution group takes Cauchy–Schwarz, Σ|w|·|x| ≤ ‖w_o‖₂ · ‖x_patch‖₂ with
        ‖x_patch‖₂² a box sum of the source's Σ_c x² (one channel, which the coding kernel of
        the source wrote beside its decodes); a linear group feeding a flat layer the same with
        the whole input. Each such group g gives pix[g] (N, neurons per channel), ‖x_patch‖₂,
        and wn[g] (C,), ‖w_o‖₂: no second full convolution with |w|. The bound is looser than
        Σ|w|·|x| (on ResNet-20 it sends 2.3x as many neurons to the float64 recomputation,
        0.2 % of them) and its float32 rounding is covered by ``_norm_margin``. The other
        groups (pooling, shortcut, graph, embedding, a linear group into a 3-D layer) take
        |w| on |x| exactly, in ``extra`` (N, *lay.shape) or None, taken by its magnitude: a
        shortcut or embedding group alone gives its own products w · x, which
        ``_preact_float`` kept (``self.single``), several groups the sum of their
        magnitudes. Their sums are short or their weights ≥ 0. |B| is added by
        ``_sum_parts`` or the kernel.
        """
        i = self.snn.layers.index(lay)
        per = lay.size // lay.channels
        pix, wn, extras = [], [], []
        for j, (s, w, x) in enumerate(zip(lay.synapses, self.w_abs[i], decoded, strict=True)):
            norm = self.w_norm[i][j]
            if norm is not None and (s.op == "conv" or per == 1):
                pn = self._patch_norm(s, x, lay)
                pix.append(pn.reshape(pn.shape[0], -1).expand(pn.shape[0], per))
                wn.append(norm.reshape(-1))
                continue
            single = self.single.pop((i, j), None)  # w · x of one product: |w| · |x| = |w · x|
            if single is not None:
                extras.append(single)
                continue
            # decoded spikes of a spiking source are ≥ 0; only the input layer's are signed
            xa = x.abs() if self.snn.layers[s.source].kind == "input" else x
            extras.append(synapse_forward(xa, s, w, lay))
        if len(extras) > 1:  # one tensor of magnitudes
            extras = [sum(e.abs() for e in extras)]
        return pix, wn, extras[0] if extras else None

    def _sum_parts(self, lay: Layer, parts) -> torch.Tensor:
        """``_magnitude_parts`` as one tensor (N, *lay.shape): |B| + Σ_g pix·wn + |extra|."""
        pix, wn, extra = parts
        i = self.snn.layers.index(lay)
        mag = self.bias[i].to(self.f).abs()
        spread = (lay.channels, *([1] * (len(lay.shape) - 1)))
        for pn, w in zip(pix, wn, strict=True):
            mag = mag + pn.reshape(pn.shape[0], 1, *lay.shape[1:]) * w.reshape(spread)
        return mag if extra is None else mag + extra.abs()

    def _patch_norm(self, syn, x: torch.Tensor, lay: Layer) -> torch.Tensor:
        """‖x_patch‖₂ of every output pixel of a convolution group, (N, 1, H', W'), or of
        every image of a linear group, (N,): the input's factor of the Cauchy–Schwarz bound
        of ``_magnitude_parts``, rounded up by ``_norm_margin``. The source's Σ_c x² comes
        from ``self.sq`` (exact mode) or is computed here."""
        sq = self.sq.get(syn.source) if self.mode == "exact" else None
        if sq is None:
            sq = x.square().sum(1, keepdim=True)
            if self.mode == "exact":
                self.sq[syn.source] = sq
        if syn.op == "linear":
            total = sq.reshape(sq.shape[0], -1).sum(1)
            return total.sqrt_().mul_(_norm_margin(x[0].numel()))
        box = torch.ones(1, 1, *syn.kernel, dtype=x.dtype, device=x.device)
        sq = torch.nn.functional.conv2d(sq, box, stride=syn.stride, padding=syn.padding)
        n = x.shape[1] * syn.kernel[0] * syn.kernel[1]
        return sq.clamp_(min=0).sqrt_().mul_(_norm_margin(n))

    def _potential64_at(self, lay: Layer, spikes, flat, upto: int | None = None):
        """The potential in float64 of the neurons ``flat`` (flat indices into
        (N, *lay.shape)) from their own fan-in; ``upto``: only input phases ≤ upto."""
        i = self.snn.layers.index(lay)
        z64 = self.bias[i].double().reshape(-1)[flat % lay.size]
        for s in lay.synapses:
            w64 = torch.as_tensor(s.weight, device=self.dev).double()
            src = self.snn.layers[s.source]
            if self.cpu and s.op == "conv" and src.kind != "input":
                z64 = z64 + self._conv_at_cpu(spikes[s.source], src, s, w64, lay, flat, upto)
                continue
            if s.op == "shortcut" and src.kind != "input":
                z64 = z64 + _shortcut_at(spikes[s.source], src, s, w64, lay, flat, upto)
                continue
            x64 = self._decoded64(spikes, s.source, upto)
            z64 = z64 + synapse_at(x64, s, w64, lay, flat)
        return z64

    def _exact_code_cpu(self, lay: Layer, z, parts, theta, th, gamma):
        """``kernels.exact_code`` on CPU tensors: (phase, near, decoded), shaped as z, the
        decodes' Σ_c x² and the spikes per pixel (N, neurons per channel)."""
        z = z.contiguous()
        n, per = z.shape[0], lay.size // lay.channels
        pix, wn, extra = parts
        pix = torch.stack(pix).reshape(len(pix), -1) if pix else z.new_zeros((0, n * per))
        wn = torch.stack(wn) if wn else z.new_zeros((0, lay.channels))
        extra = extra.expand_as(z).contiguous().reshape(-1) if extra is not None else z.new_zeros(0)
        bias = self.bias[self.snn.layers.index(lay)].to(z.dtype).abs()
        phase = torch.empty(z.shape, dtype=torch.int16)
        near = torch.empty(z.shape, dtype=torch.bool)
        dec = torch.empty(z.shape, dtype=z.dtype)
        sq = z.new_empty((n, per))
        fired = torch.empty((n, per), dtype=torch.int32)
        kernels.exact_code(
            z.numpy().reshape(-1), pix.contiguous().numpy(), wn.contiguous().numpy(),
            bias.expand(lay.shape).contiguous().numpy().reshape(-1), extra.numpy(),
            theta.reshape(-1).contiguous().numpy(), th.numpy(), float(gamma),
            4 * EXACT_ROUNDING, per, _phase_table(lay, z.dtype),
            phase.numpy().reshape(-1), near.numpy().reshape(-1), dec.numpy().reshape(-1),
            sq.numpy().reshape(-1), fired.numpy().reshape(-1),
        )  # fmt: skip
        return phase, near, dec, sq, fired

    @staticmethod
    def _conv_at_cpu(sp, src: Layer, syn, w64, lay: Layer, flat, upto=None) -> torch.Tensor:
        """``kernels.conv_at``: ``synapse_at`` of a convolution, read from the phases (only
        those ≤ ``upto`` when given)."""
        last = src.T - 1 if upto is None else upto
        q = [src.Q**-t if t <= last else 0.0 for t in range(src.T)]
        table = torch.tensor([0.0, *q], dtype=torch.float64)
        out = torch.empty(flat.numel(), dtype=torch.float64)
        kernels.conv_at(sp.contiguous().numpy(), table.numpy(), w64.contiguous().numpy(),
                        *syn.stride, *syn.padding, lay.shape[1], lay.shape[2],
                        flat.contiguous().numpy(), out.numpy())  # fmt: skip
        return out

    def _decoded64(self, spikes, src: int, upto: int | None = None) -> torch.Tensor:
        """Source ``src``'s decoded spikes in float64 (of phases ≤ ``upto`` when given;
        once per batch)."""
        lay = self.snn.layers[src]
        if upto is None and lay.kind == "input" and lay.T <= 24 and src in self.dec:
            # multiples of 2^-(T−1) below 2: the float32 decode is exact
            return self.dec[src].double()
        if (src, upto) not in self.dec64:
            self.dec64[(src, upto)] = _decode(
                spikes[src], self.snn.layers[src], torch.float64, upto=upto
            )
        return self.dec64[(src, upto)]

    def _phase_input(self, lay: Layer, spikes, k: int) -> torch.Tensor:
        """S(k) of every neuron (integer values in the engine's float dtype)."""
        i = self.snn.layers.index(lay)
        out = None
        for s, w in zip(lay.synapses, self.w[i], strict=True):
            sp = spikes[s.source]
            if self.snn.layers[s.source].kind == "input":
                mask = sp[:, k].to(self.f)
            elif self.cpu:
                mask = torch.empty(sp.shape, dtype=self.f)
                kernels.phase_mask(sp.contiguous().numpy().reshape(-1), k, mask.numpy().reshape(-1))
            else:
                mask = (sp == k).to(self.f)
            y = synapse_forward(mask, s, w, lay)
            out = y if out is None else out.add_(y)
        # exact integers already unless a transform-based convolution added tiny errors
        # (kernels.int_phase rounds them itself)
        return out if self.cpu else out.round_()

    def _int_phases_cpu(self, lay: Layer, src: Layer, spikes, u, phase, theta, lim, m_in):
        """The phases with input of a hidden layer on the CPU kernels (``u``, ``phase`` in
        place). A convolution of a spiking source, with or without a shortcut group (a
        ResNet layer), takes ``kernels.int_events``: each phase's S(k) from the spikes'
        fan-out, every phase in one pass per image, instead of a dense convolution of each
        phase's mostly-zero mask; any other layer runs phase by phase (``_phase_input``,
        ``kernels.int_phase``)."""
        groups = _event_groups(self.snn, lay)
        if groups is not None:
            i = self.snn.layers.index(lay)
            conv, short = groups
            sc = lay.synapses[conv]
            if i not in self.w_events:  # (C_out, C_in, kh, kw) → output channel innermost
                self.w_events[i] = self.w[i][conv].permute(1, 2, 3, 0).contiguous().numpy()
            if short is None:
                sp2, s2, off2 = np.zeros((0, 1, 1, 1), np.int16), (1, 1), 0
                w2 = self.w_events[i][0, 0, :1]  # (unused)
            else:
                ss = lay.synapses[short]
                sp2 = spikes[ss.source].contiguous().numpy()
                w2 = self.w[i][short].reshape(1, -1).contiguous().numpy()
                s2, off2 = ss.stride, int(ss.channel_offset)
            kernels.int_events(
                spikes[sc.source].contiguous().numpy(), self.w_events[i], *sc.stride,
                *sc.padding, sp2, w2, *s2, off2, src.T, m_in, ROUND_HALF, SHIFT_INV, lim,
                theta.numpy(), lay.T_w, u.numpy(), phase.numpy(),
            )  # fmt: skip
            return
        per = lay.size // lay.channels
        for k in range(src.T):
            t_o = k - lay.T_w if lay.T_w <= k < lay.T_w + lay.T else -1
            s = self._phase_input(lay, spikes, k)
            self._int_phase_cpu(u, s, k > 0, m_in, lim, theta.numpy(), t_o, per,
                                phase.numpy().reshape(-1))  # fmt: skip

    def _pipelined(self, lay, src, spikes, decoded, z_full, theta) -> torch.Tensor:
        """DESIGN 2.6 in value form: t_o is decided on V(t_o + T_w).

        V(k) = B + Σ_{t≤k} Q_in^-t S(t) is U(k) / Q_in^k; the threshold in this form is
        c · θ · Q_out^-t_o. Once k ≥ T_src − 1 every input is in and V is the exact potential.
        Decided as in float64: on other devices the potentials are float64; on the CPU they
        are float32 passes with exact mode's rounding test on every compare, and the neurons
        it flags are recomputed in float64 (``_pipelined_cpu``).
        """
        needed = _partial_phases(lay, src)
        th = _thresholds(lay, self.f, self.dev)
        partial = self._partial_potentials(lay, spikes, needed)
        if self.cpu:
            return self._pipelined_cpu(lay, spikes, decoded, partial, z_full, theta, th)
        r_full = z_full / theta
        phase = torch.full(z_full.shape, -1, dtype=torch.int16, device=self.dev)
        for t_o in range(lay.T):
            k = t_o + lay.T_w
            rk = partial[k] / theta if k in partial else r_full  # k ≥ T_src − 1: all inputs in
            fire = (phase < 0) & (rk >= th[t_o])
            phase[fire] = t_o
        return phase

    def _pipelined_cpu(self, lay: Layer, spikes, decoded, partial: dict, z_full, theta, th):
        """``kernels.pipelined_code`` on CPU tensors: the phases of ``_pipelined``; a float32
        compare within its rounding bound (``_exact_phases``; the full input's Σ|w|·|x| + |B|
        bounds every partial sum's) sends the neuron to float64."""
        ks = sorted(partial)
        part = torch.stack([partial[k] for k in ks]) if ks else z_full.new_zeros((1, 1))
        sel = [ks.index(t + lay.T_w) if t + lay.T_w in partial else -1 for t in range(lay.T)]
        phase = torch.empty(z_full.shape, dtype=torch.int16)
        near = np.zeros(z_full.numel(), dtype=np.bool_)
        mag = self._magnitude(lay, decoded)  # (the CPU engine's pipelined dtype is float32)
        gamma, eps = (fan_in(lay) + 2) * EXACT_ROUNDING, 4 * EXACT_ROUNDING
        kernels.pipelined_code(
            part.contiguous().numpy().reshape(part.shape[0], -1),
            z_full.contiguous().numpy().reshape(-1), np.array(sel, dtype=np.int64),
            theta.reshape(-1).contiguous().numpy(), th.numpy(), lay.size // lay.channels,
            mag.expand_as(z_full).contiguous().numpy().reshape(-1), gamma, eps,
            phase.numpy().reshape(-1), near,
        )  # fmt: skip
        self._pipelined_recompute(lay, spikes, ks, phase, near)
        return phase

    def _pipelined_recompute(self, lay: Layer, spikes, ks: list[int], phase, near) -> None:
        """The neurons ``near`` (flat bool) of a float32 pipelined pass decided again in
        float64 from their own fan-in: V(k) for the partial phases ``ks`` and the full
        potential (``phase`` in place)."""
        flat = torch.from_numpy(np.flatnonzero(near))
        self.recomputed += int(flat.numel())
        if flat.numel():
            v64, full64 = self._partial64_at(lay, spikes, flat, ks)
            per = lay.size // lay.channels
            chan = (flat // per) % lay.channels
            theta64 = torch.as_tensor(lay.threshold, device=self.dev).double()[chan]
            th64 = _thresholds(lay, torch.float64, self.dev)
            got = torch.full((flat.numel(),), -1, dtype=torch.int16)
            for t_o in range(lay.T):
                k = t_o + lay.T_w
                fire = (got < 0) & (v64.get(k, full64) / theta64 >= th64[t_o])
                got[fire] = t_o
            phase.view(-1)[flat] = got

    def _partial64_at(self, lay: Layer, spikes, flat, ks: list[int]):
        """({k: V(k)} for the partial phases ``ks``, the full potential) in float64 at the
        neurons ``flat``: ``_potential64_at`` for each; a convolution of a spiking source on
        the CPU in one pass over each neuron's fan-in for all of them
        (``kernels.conv_at_partial``)."""
        groups = _event_groups(self.snn, lay) if self.cpu else None
        if groups is None:
            v64 = {k: self._potential64_at(lay, spikes, flat, upto=k) for k in ks}
            return v64, self._potential64_at(lay, spikes, flat)
        i = self.snn.layers.index(lay)
        conv, short = groups
        sc = lay.synapses[conv]
        src = self.snn.layers[sc.source]
        out = np.empty((len(ks) + 1, flat.numel()))
        kernels.conv_at_partial(
            spikes[sc.source].contiguous().numpy(), _phase_table(src, torch.float64),
            torch.as_tensor(sc.weight).double().contiguous().numpy(), *sc.stride, *sc.padding,
            lay.shape[1], lay.shape[2], flat.contiguous().numpy(), np.asarray(ks, np.int64), out,
        )  # fmt: skip
        b64 = self.bias[i].double().reshape(-1)[flat % lay.size]
        res = []
        for j, k in enumerate([*ks, None]):
            z64 = b64 + torch.from_numpy(out[j])
            if short is not None:
                ss = lay.synapses[short]
                w64 = torch.as_tensor(ss.weight, device=self.dev).double()
                z64 = z64 + _shortcut_at(spikes[ss.source], self.snn.layers[ss.source], ss, w64,
                                         lay, flat, k)  # fmt: skip
            res.append(z64)
        return dict(zip(ks, res[:-1], strict=True)), res[-1]

    def _pipelined_events(self, lay: Layer, src: Layer, spikes, groups) -> torch.Tensor:
        """``_pipelined`` on the CPU for a convolution with or without a shortcut group
        (``kernels.pipelined_events``: the partial potentials V(k) of every phase from the
        spikes' fan-out, image by image, instead of one convolution per decision phase),
        then the float64 recomputation of the neurons its rounding test flags."""
        i = self.snn.layers.index(lay)
        conv, short = groups
        sc = lay.synapses[conv]
        f = self.f
        if i not in self.w_events:  # (C_out, C_in, kh, kw) → output channel innermost
            self.w_events[i] = tuple(
                w[conv].permute(1, 2, 3, 0).contiguous().numpy() for w in (self.w[i], self.w_abs[i])
            )
        w, wabs = self.w_events[i]
        n = spikes[sc.source].shape[0]
        if short is None:
            sp2, table2 = np.zeros((0, 1, 1, 1), np.int16), np.zeros(1, np.float32)
            w2, s2, off2 = np.zeros((2, lay.channels), np.float32), (1, 1), 0
        else:
            ss = lay.synapses[short]
            sp2 = spikes[ss.source].contiguous().numpy()
            table2 = _phase_table(self.snn.layers[ss.source], f)
            w2 = torch.stack([self.w[i][short], self.w_abs[i][short]]).contiguous().numpy()
            s2, off2 = ss.stride, int(ss.channel_offset)
        bias = self.bias[i].to(f).expand(lay.shape).contiguous()
        phase = torch.empty((n, *lay.shape), dtype=torch.int16)
        near = np.zeros((n, *lay.shape), dtype=np.bool_)
        kernels.pipelined_events(
            spikes[sc.source].contiguous().numpy(), _phase_table(src, f), w, wabs, *sc.stride,
            *sc.padding, sp2, table2, w2, *s2, off2, bias.numpy(), bias.abs().numpy(),
            self._chan(lay.threshold, lay).reshape(-1).contiguous().numpy(),
            _thresholds(lay, f, self.dev).numpy(), lay.T_w, (fan_in(lay) + 2) * EXACT_ROUNDING,
            4 * EXACT_ROUNDING, phase.numpy(), near,
        )  # fmt: skip
        self._pipelined_recompute(lay, spikes, _partial_phases(lay, src), phase, near.reshape(-1))
        return phase

    def _partial_potentials(self, lay: Layer, spikes, ks: list[int]) -> dict[int, torch.Tensor]:
        """V(k) for each k in ``ks``: the layer applied to the inputs of phases ≤ k.

        V(k) = B + Σ_{t≤k} Q_in^-t S(t) is linear in the inputs, so one synapse pass over the
        decoded inputs truncated at phase k gives it: len(ks) passes instead of T_src.
        """
        if not ks:
            return {}
        i = self.snn.layers.index(lay)
        n = spikes[lay.synapses[0].source].shape[0]
        v = None
        for s, w in zip(lay.synapses, self.w[i], strict=True):
            src = self.snn.layers[s.source]
            xs = torch.cat([_decode(spikes[s.source], src, self.f, upto=k) for k in ks])
            y = synapse_forward(xs, s, w, lay)
            v = y if v is None else v + y
        v = v.reshape(len(ks), n, *lay.shape) + self.bias[i].to(self.f)
        return {k: v[j] for j, k in enumerate(ks)}

    def _int_layer(self, lay: Layer, src: Layer, spikes):
        """docs/semantics.md §3: integer leak, clamped A-bit potential, threshold table.

        The integers are held in float64, which represents every value of the datapath
        exactly (|U · M| < 2^49): ⌊(U·M + 2^15) / 2^16⌋ is the arithmetic shift of §3.
        """
        lim = float(lay.sat_limit)  # |U| ≤ L after each scaling: a phase of adds cannot overflow
        half, inv = ROUND_HALF, SHIFT_INV
        m_in, m_out = float(fixed_base(src.Q)), float(fixed_base(lay.Q))
        i = self.snn.layers.index(lay)
        n = spikes[lay.synapses[0].source].shape[0]
        u = (
            self.bias[i]
            .to(torch.float64)
            .unsqueeze(0)
            .expand(n, *lay.shape)
            .clone(memory_format=torch.contiguous_format)
        )

        def leak(v: torch.Tensor, m: float) -> torch.Tensor:  # round half up, then clamp
            return v.mul_(m).add_(half).mul_(inv).floor_().clamp_(-lim, lim)

        if lay.kind == "output":
            none = (np.zeros((1, 1)), -1, 1, np.zeros(0, np.int16))
            for k in range(src.T):
                if self.cpu:
                    self._int_phase_cpu(
                        u, self._phase_input(lay, spikes, k), k > 0, m_in, lim, *none
                    )
                    continue
                u = leak(u, m_in) if k else u
                u.add_(self._phase_input(lay, spikes, k))
            g = gain(src.T - 1, src.T, quantized_base(src.Q), quantized_base(src.Q))
            scale = self._chan(lay.scale, lay).to(torch.float64)
            return None, ((u * scale / g).float(), u.to(torch.int64))
        theta = torch.as_tensor(lay.threshold_q, device=self.dev, dtype=torch.float64)
        view = (-1, *([1] * (len(lay.shape) - 1)))
        phase = torch.full(u.shape, -1, dtype=torch.int16, device=self.dev)
        if self.cpu:
            self._int_phases_cpu(lay, src, spikes, u, phase, theta, lim, m_in)
        for k in range(src.T) if not self.cpu else ():  # phases with input: every neuron
            t_o = k - lay.T_w if lay.T_w <= k < lay.T_w + lay.T else -1
            u = leak(u, m_in) if k else u
            u.add_(self._phase_input(lay, spikes, k))
            if t_o >= 0:
                fire = (u >= theta[:, t_o].reshape(view)) & (phase < 0)
                phase.masked_fill_(fire, t_o)
        self._int_tail(lay, src, u, phase, theta, leak, m_out)
        return phase, None

    @staticmethod
    def _int_phase_cpu(u, s, leak, m, lim, theta, t_o, per, phase) -> None:
        """``kernels.int_phase`` on CPU tensors: u (contiguous float64) and phase in place."""
        half, inv = ROUND_HALF, SHIFT_INV
        kernels.int_phase(u.numpy().reshape(-1), s.contiguous().numpy().reshape(-1), leak,
                          m, half, inv, lim, theta, t_o, per, phase)  # fmt: skip

    def _int_tail(self, lay, src, u, phase, theta, leak, m_out) -> None:
        """Phases after the last input: only unfired neurons with U > 0 can still fire (a
        non-positive potential never grows under the leak), so only those are iterated."""
        first = max(src.T, lay.T_w)
        last = lay.T - 1 + lay.T_w
        if last < src.T:
            return
        if self.cpu:
            half, inv = ROUND_HALF, SHIFT_INV
            kernels.int_tail(u.numpy().reshape(-1), phase.numpy().reshape(-1), theta.numpy(),
                             m_out, half, inv, float(lay.sat_limit), src.T, first, last,
                             lay.T_w, lay.size // lay.channels)  # fmt: skip
            return
        flat_u, flat_p = u.reshape(-1), phase.reshape(-1)
        idx = torch.nonzero((flat_p < 0) & (flat_u > 0)).squeeze(1)
        cu = flat_u[idx]
        chan = (idx // (lay.size // lay.channels)) % lay.channels
        cp = torch.full_like(cu, -1.0)
        for k in range(src.T, last + 1):
            cu = leak(cu, m_out)
            if k >= first:
                t_o = k - lay.T_w
                fire = (cu >= theta[chan, t_o]) & (cp < 0)
                cp.masked_fill_(fire, float(t_o))
        flat_p[idx] = cp.to(torch.int16)


def input_value(x: torch.Tensor, lay: Layer, device) -> torch.Tensor:
    """v = x · gain + offset: the input as a fraction of the input range λ_in (float64)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    g = torch.as_tensor(lay.input_gain, device=device).reshape(shape)
    o = torch.as_tensor(lay.input_offset, device=device).reshape(shape)
    v = x.to(device).double() * g + o
    return v if lay.signed else v.clamp(min=0)


def encode_input(x: torch.Tensor, lay: Layer, device="cpu") -> torch.Tensor:
    """The input layer ``lay``'s spike trains of images ``x`` (N, *input shape): binary phase
    coding, the nearest T_in-bit fraction of ``input_value``, bit t + 1 firing at phase t.
    Returns int8 (N, T_in, *shape), the sign of each spike (0: none)."""
    v = input_value(x, lay, device)
    top = 2**lay.T - 1
    code = torch.round(v.abs() * 2**lay.T).clamp(max=top).to(torch.int64)
    sign = torch.sign(v).to(torch.int8) if lay.signed else torch.ones_like(code, dtype=torch.int8)
    bits = [((code >> (lay.T - 1 - t)) & 1).to(torch.int8) * sign for t in range(lay.T)]
    return torch.stack(bits, dim=1)


# --------------------------------------------------------------------------- helpers
#: Run the element-wise work of CPU tensors in golden.kernels (Numba); False: PyTorch's
#: expressions, as on other devices (the tests compare the two).
USE_KERNELS = True


def _event_groups(snn: SnnModel, lay: Layer) -> tuple[int, int | None] | None:
    """int mode on the CPU: (the convolution group, the shortcut group or None) of a layer
    that ``kernels.int_events`` and ``kernels.pipelined_events`` run: one convolution and
    at most one shortcut, both of spiking (one phase per neuron) sources of the same T;
    None for any other layer."""
    ops = [s.op for s in lay.synapses]
    srcs = [snn.layers[s.source] for s in lay.synapses]
    spiking = all(src.kind != "input" and src.T == srcs[0].T for src in srcs)
    if len(lay.shape) != 3 or not spiking or sorted(ops) not in (["conv"], ["conv", "shortcut"]):
        return None
    conv = ops.index("conv")
    return conv, (1 - conv if len(ops) == 2 else None)


def _fused_groups(snn: SnnModel, lay: Layer) -> tuple[int, int | None] | None:
    """exact mode on the CPU: (the convolution group, the shortcut group or None) of a layer
    that ``kernels.exact_conv_code`` runs: one convolution, of a spiking source or the
    input, and at most one shortcut, of a spiking source; None for any other layer."""
    ops = [s.op for s in lay.synapses]
    if len(lay.shape) != 3 or sorted(ops) not in (["conv"], ["conv", "shortcut"]):
        return None
    conv = ops.index("conv")
    short = 1 - conv if len(ops) == 2 else None
    if short is not None and snn.layers[lay.synapses[short].source].kind == "input":
        return None
    return conv, short


def _weight_of(s: Synapse, mode: str) -> np.ndarray:
    """The weights ``mode`` runs: int the integers, ann the ANN's own (``ann_weight`` where
    the calibration refitted them), the other modes the SNN's float weights."""
    if mode == "int":
        return s.weight_q
    if mode == "ann" and s.ann_weight is not None:
        return s.ann_weight
    return s.weight


def _bias_of(lay: Layer, mode: str, device: torch.device) -> torch.Tensor | None:
    """The bias ``mode`` runs (as :func:`_weight_of`)."""
    if lay.bias is None:
        return None
    if mode == "int":
        b = lay.bias_q
    else:
        b = lay.ann_bias if mode == "ann" and lay.ann_bias is not None else lay.bias
    return torch.as_tensor(b).to(device)


def _kernels_for(device: torch.device) -> bool:
    return USE_KERNELS and torch.device(device).type == "cpu"


#: Exact mode on the CPU runs a convolution layer with at most one shortcut (``_fused_groups``)
#: in one kernel (``_Engine._exact_conv_layer``); False: through ``_exact_phases`` as the
#: other layers (the tests compare the two).
FUSED_EXACT = True

#: ... and with the native pass (``golden.native``: C, AVX-512) where it builds and runs
#: here; False: the Numba kernel (the tests compare the two).
NATIVE_EXACT = True

#: Synapse ops of one product per neuron (w · x): their magnitudes are |w| · |x|.
SINGLE_PRODUCT = ("shortcut", "embedding")

#: Exact mode's rounding unit for the float32 pass: twice float32's 2^-24 (a factor 2 of
#: safety on the first-order error bound); 0 turns the float64 recomputation off.
EXACT_ROUNDING = 2.0**-23


def fan_in(lay: Layer) -> int:
    """The largest number of products one neuron of ``lay`` sums (all synapse groups)."""
    n = 0
    for s in lay.synapses:
        if s.op == "conv":
            n += int(np.prod(s.weight.shape[1:]))
        elif s.op == "linear":
            n += s.weight.shape[1]
        elif s.op == "avgpool":
            n += s.kernel[0] * s.kernel[1]
        elif s.op == "graph":
            n += int(np.bincount(s.index[0]).max(initial=0))
        else:  # shortcut, embedding: one product
            n += 1
    return n


def _abs(w: torch.Tensor) -> torch.Tensor:
    """|w| of a dense or sparse CSR weight."""
    if w.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(
            w.crow_indices(), w.col_indices(), w.values().abs(), w.shape, check_invariants=False
        )
    return w.abs()


def _norm_margin(n: int) -> float:
    """The factor that keeps a float32 Cauchy–Schwarz bound (``_patch_norm`` times
    ``_row_norm``) above its real value: each of its sums of n ≥ 0 terms, the square root and
    the product round by at most n · 2^-24 relative (Higham, §3.1); doubled, as
    ``EXACT_ROUNDING`` is."""
    return 1.0 + (n + 8) * 2.0**-23


def _row_norm(syn, lay: Layer, mode: str, device) -> torch.Tensor | None:
    """‖w_o‖₂ of each output channel o of a convolution or linear group (the weights of
    ``mode``), shaped to broadcast on (N, *lay.shape), rounded up by ``_norm_margin``; None
    for other groups."""
    if syn.op not in ("conv", "linear"):
        return None
    w = torch.as_tensor(_weight_of(syn, mode), dtype=torch.float64)
    norm = w.reshape(w.shape[0], -1).norm(dim=1) * _norm_margin(w[0].numel())
    shape = (1, -1, 1, 1) if syn.op == "conv" else (1, *lay.shape)
    return norm.to(device, torch.float32).reshape(shape)


def _weight(syn, w: torch.Tensor, lay: Layer, device, dtype) -> torch.Tensor:
    """A synapse group's weights on the device; a graph aggregation's as its CSR Â."""
    w = w.to(device, dtype)
    return graph_matrix(syn, w, lay.shape[1]) if syn.op == "graph" else w


def _decode(sp: torch.Tensor, src: Layer, dtype, upto: int | None = None) -> torch.Tensor:
    """Normalised values of a source's spikes: Σ sign · Q^-t (in units of its λ).

    ``upto``: only the spikes of phases ≤ upto (the input seen by phase ``upto``).
    """
    last = src.T - 1 if upto is None else upto
    if src.kind == "input":
        w = torch.tensor(
            [2.0**-t if t <= last else 0.0 for t in range(src.T)], device=sp.device, dtype=dtype
        )
        return (sp.to(dtype) * w.reshape(1, -1, *([1] * (sp.dim() - 2)))).sum(1)
    # a table lookup: entry 0 is "no spike" (phase −1) and every phase after ``last``
    table = torch.tensor(
        [0.0] + [src.Q**-t if t <= last else 0.0 for t in range(src.T)],
        device=sp.device,
        dtype=dtype,
    )
    if _kernels_for(sp.device):
        out = torch.empty(sp.shape, dtype=dtype)
        kernels.decode_phases(
            sp.contiguous().numpy().reshape(-1), table.numpy(), out.numpy().reshape(-1)
        )
        return out
    return table[(sp + 1).long()]


#: Pipelined mode on the CPU takes ``kernels.pipelined_events`` for a layer that needs at
#: least this many partial potentials (T_w < T_src − 2); with fewer, the convolutions of the
#: decoded inputs (one per partial potential, plus the full one and its rounding bound's) are
#: faster than the event pass. Measured on ResNet-20 (benchmarks/speed.py): T_w = 16 (none)
#: 6.0x the ANN's time by convolutions, 12.0x by events; T_w = 4 (11) 53x and 17x.
EVENTS_MIN_PARTIALS = 3


def _partial_phases(lay: Layer, src: Layer) -> list[int]:
    """The phases k < T_src − 1 whose partial potential V(k) a pipelined layer decides on
    (k = t_o + T_w); from T_src − 1 on every input is in."""
    return sorted({t_o + lay.T_w for t_o in range(lay.T)} & set(range(src.T - 1)))


def _shortcut_at(sp, src: Layer, syn, w64, lay: Layer, flat, upto: int | None) -> torch.Tensor:
    """``synapse_at`` of a shortcut group, read from its spiking source's phases at the
    neurons ``flat`` only (phases ≤ ``upto`` when given): the values of decoding the whole
    source in float64 first, without that decode."""
    b, j = flat // lay.size, flat % lay.size
    hw = lay.shape[1] * lay.shape[2]
    c, oy, ox = j // hw, (j % hw) // lay.shape[2], j % lay.shape[2]
    ci = c - syn.channel_offset
    ok = (ci >= 0) & (ci < sp.shape[1])
    sy, sx = syn.stride
    ph = sp[b, ci.clamp(0, sp.shape[1] - 1), oy * sy, ox * sx].long()
    last = src.T - 1 if upto is None else upto
    table = torch.tensor([0.0] + [src.Q**-t if t <= last else 0.0 for t in range(src.T)],
                         dtype=torch.float64, device=sp.device)  # fmt: skip
    v = table[ph + 1] * w64[c]
    return torch.where(ok, v, torch.zeros_like(v))


def _trains_unread(snn: SnnModel, src: int) -> bool:
    """Exact mode on the CPU reads input layer ``src`` only through its decodes and spike
    counts: no max pooling reads it, and every layer that does counts all its phases (a
    hidden layer's last decision, T − 1 + T_w, is at or after the input's last phase)."""
    t_in = snn.layers[src].T
    for lay in snn.layers:
        if lay.kind == "maxpool" and lay.source == src:
            return False
        reads = any(s.source == src for s in lay.synapses) and lay.kind != "output"
        if reads and lay.T - 1 + lay.T_w < t_in - 1:
            return False
    return True


def _identity(syn, src: Layer, lay: Layer) -> bool:
    """A shortcut group that passes every source neuron to one output neuron: stride 1, no
    channel offset, the same pixels, and no more channels than the output."""
    return (
        tuple(syn.stride) == (1, 1)
        and int(syn.channel_offset) == 0
        and tuple(src.shape[1:]) == tuple(lay.shape[1:])
        and src.shape[0] <= lay.shape[0]
    )


def _last_readers(snn: SnnModel) -> list[int]:
    """For each layer, the index of the last layer that reads it (a synapse group or a max
    pooling); −1 for none."""
    out = [-1] * len(snn.layers)
    for i, lay in enumerate(snn.layers):
        srcs = [s.source for s in lay.synapses]
        if lay.kind == "maxpool":
            srcs.append(lay.source)
        for j in srcs:
            out[j] = max(out[j], i)
    return out


def _phase_table(src: Layer, dtype) -> np.ndarray:
    """The values of a spiking source's phases, as ``_decode`` takes them: entry 0 for no
    spike, entry t + 1 = Q^-t."""
    return torch.tensor([0.0] + [src.Q**-t for t in range(src.T)], dtype=dtype).numpy()


def _group_adds(snn: SnnModel, syn, lay: Layer, sp: torch.Tensor, upto: int | None) -> int:
    """The synaptic additions of group ``syn`` of ``lay`` in a batch: each spike of its
    source (of phases ≤ ``upto`` when given) times its fan-out (``count_adds``; a
    convolution or shortcut of a spiking source on the CPU in one kernel pass,
    ``kernels.conv_fanout``, ``kernels.shortcut_fanout``)."""
    src = snn.layers[syn.source]
    spatial = len(lay.shape) == 3 and sp.dim() == 4
    if syn.op == "shortcut" and spatial and src.kind != "input" and _kernels_for(sp.device):
        last = np.iinfo(np.int16).max if upto is None else upto
        hits = np.empty(sp.shape[0], np.int64)
        kernels.shortcut_fanout(sp.contiguous().numpy(), *syn.stride, *lay.shape[1:],
                                int(syn.channel_offset), lay.channels, last, hits)  # fmt: skip
        return int(hits.sum())
    if syn.op == "conv" and src.kind != "input" and _kernels_for(sp.device):
        cover = conv_cover(tuple(sp.shape[2:]), syn.kernel, syn.stride, syn.padding,
                           tuple(lay.shape[1:]))  # fmt: skip
        last = np.iinfo(np.int16).max if upto is None else upto
        hits = np.empty(sp.shape[0], np.int64)
        kernels.conv_fanout(sp.contiguous().numpy(), last, cover.numpy().astype(np.int64), hits)
        return lay.channels * int(hits.sum())
    return int(count_adds(_spike_counts(sp, src, upto), syn, lay).sum())


def _spike_counts(sp: torch.Tensor, lay: Layer, upto: int | None = None) -> torch.Tensor:
    """Spikes per neuron of ``lay`` (only those of phases ≤ ``upto`` when given)."""
    if lay.kind == "input":  # signs −1, 0, 1 of each bit
        if _kernels_for(sp.device):
            out = torch.empty((sp.shape[0], *sp.shape[2:]), dtype=torch.float32)
            last = sp.shape[1] - 1 if upto is None else upto
            kernels.count_trains(sp.contiguous().numpy().reshape(sp.shape[0], sp.shape[1], -1),
                                 last, out.numpy().reshape(sp.shape[0], -1))  # fmt: skip
            return out
        return torch.count_nonzero(sp[:, : None if upto is None else upto + 1], 1).float()
    if _kernels_for(sp.device):
        out = torch.empty(sp.shape, dtype=torch.float32)
        last = np.iinfo(np.int16).max if upto is None else upto
        kernels.fired_mask(sp.contiguous().numpy().reshape(-1), last, out.numpy().reshape(-1))
        return out
    fired = sp >= 0 if upto is None else (sp >= 0) & (sp <= upto)
    return fired.to(torch.float32)


def _count_spikes(sp: torch.Tensor, lay: Layer) -> int:
    """All spikes of ``lay`` in a batch."""
    if lay.kind != "input" and _kernels_for(sp.device):
        return int(kernels.count_fired(sp.contiguous().numpy().reshape(-1)))
    return int(_spike_counts(sp, lay).sum())


def _encode_hidden(v: torch.Tensor, lay: Layer) -> torch.Tensor:
    """Eq. 4: t* = min{t : v ≥ c · Q^-t}; −1 when no phase fits (underflow)."""
    th = _thresholds(lay, v.dtype, v.device)
    # idx = how many thresholds are ≤ v; the phase is T − idx, and idx = 0 means no spike
    idx = torch.searchsorted(th.flip(0).contiguous(), v.contiguous(), right=True, out_int32=True)
    lut = torch.tensor([-1, *range(lay.T - 1, -1, -1)], dtype=torch.int16, device=v.device)
    return lut[idx]


def _thresholds(lay: Layer, dtype, device) -> torch.Tensor:
    """c · Q^-t for t = 0 … T−1 (decreasing), the coding thresholds in units of θ."""
    return torch.tensor([lay.shift * lay.Q**-t for t in range(lay.T)], dtype=dtype, device=device)


def _engine_dtype(snn: SnnModel, mode: str, cpu_kernels: bool) -> torch.dtype:
    """The dtype of a mode's potentials, decoded spikes, weights, bias and thresholds.

    ``pipelined`` decides as in float64: a potential can land exactly on a coding threshold
    c · Q^-t (an average pooling of equal spikes under floor coding does), and float32
    rounding would then move the spike a phase. It works in float64 on other devices; with
    the CPU kernels (``cpu_kernels``; PyTorch's float64 convolution is about 12x slower than
    its float32 one) it runs float32 passes and recomputes in float64 the neurons that
    rounding could move, as ``exact`` does everywhere (``_Engine._exact_phases``). ``ann``
    stays float32 (the PyTorch model's precision), ``int`` carries integers
    (``_int_conv_dtype``).
    """
    if mode == "int":
        return _int_conv_dtype(snn)
    return torch.float64 if mode == "pipelined" and not cpu_kernels else torch.float32


def _int_conv_dtype(snn: SnnModel) -> torch.dtype:
    """float32 carries the integer synaptic sums exactly while every sum stays below 2^22.

    The largest |S| of a neuron is Σ|weight_q| over its fan-in (each input neuron spikes at
    most once per phase). Below 2^22 even a reordered float32 accumulation is exact and the
    final rounding removes any error of a transform-based convolution; otherwise float64.
    """
    worst = max((max_phase_input(lay.synapses) for lay in snn.layers if lay.synapses), default=0)
    return torch.float32 if worst < 2**22 else torch.float64
