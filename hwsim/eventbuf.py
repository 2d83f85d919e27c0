"""The event buffer's capacity (docs/architecture.md §13, "Event buffer banks").

Each layer's output events (the input layer's spike trains) are written into a buffer of its
own that the layers reading it consume later. In layer mode (one engine, time-shared) a
buffer occupies whole banks of ``event_buffer_kib`` each, so that the engine reads one buffer
while it writes another, and is live from the start of its producer to the end of its last
consumer (a residual block's input stays until its shortcut is read); the banks live at any
time must be at most ``event_buffer_banks``. In pipelined mode every buffer is live at once
and they share the banks: their bits must fit ``event_buffer_banks`` × ``event_buffer_kib``.

A buffer of E events holds (docs/architecture.md §4, §11):

- ``potential_sram``: E 32-bit event words and a per-phase pointer table, (T + 1) pointers;
- ``output_stationary``: E 16-bit entries and the index, one pointer per (phase, source
  pixel) plus one;

pointers are ⌈log2(E_max + 1)⌉ bits, E_max the layer's worst case: one event per neuron
(one-spike coding: a neuron fires at most once; a max-pooling window too), size × T for the
input layer's trains.
"""

from __future__ import annotations

import math

import numpy as np

from archspec.config import ArchConfig
from converter.model import Layer, SnnModel


def worst_events(lay: Layer) -> int:
    """Most events a layer can write in one image (0 for the output layer)."""
    if lay.kind == "output":
        return 0
    return lay.size * (lay.T if lay.kind == "input" else 1)


def buffer_bits(lay: Layer, events: int, arch: ArchConfig) -> int:
    """Bits of one layer's buffer holding ``events`` events (0 for the output layer)."""
    if lay.kind == "output":
        return 0
    ptr = max(1, math.ceil(math.log2(worst_events(lay) + 1)))
    if arch.dataflow == "output_stationary":
        pixels = lay.size // lay.channels if len(lay.shape) == 3 else 1
        return 16 * events + (lay.T * pixels + 1) * ptr
    return 32 * events + (lay.T + 1) * ptr


def live_buffers(snn: SnnModel, mode: str = "layer") -> list[list[int]]:
    """Per layer j: the layers whose buffers are live while j runs (its sources, its own
    output and any buffer a later layer still reads; pipelined: all of them)."""
    n = len(snn.layers)
    writers = [i for i, lay in enumerate(snn.layers) if lay.kind != "output"]
    if mode != "layer":
        return [writers for _ in range(n)]
    last = {i: i for i in writers}
    for j, lay in enumerate(snn.layers):
        sources = [lay.source] if lay.kind == "maxpool" else [s.source for s in lay.synapses]
        for src in sources:
            last[src] = max(last[src], j)
    return [[i for i in writers if i <= j <= last[i]] for j in range(n)]


def event_counts(snn: SnnModel, spikes: list) -> np.ndarray:
    """Events each layer wrote per image, int64 [N, layers], from hwsim's (or golden's)
    spikes: the input layer's nonzero trains, the others' decided phases."""
    n = next(len(s) for s in spikes if s is not None)
    out = np.zeros((n, len(snn.layers)), np.int64)
    for i, (lay, s) in enumerate(zip(snn.layers, spikes, strict=True)):
        if s is None:
            continue
        s = np.asarray(s).reshape(n, -1)
        out[:, i] = (s != 0).sum(1) if lay.kind == "input" else (s >= 0).sum(1)
    return out


def banks_needed(snn: SnnModel, arch: ArchConfig, events: np.ndarray, mode: str = "layer"):
    """(banks, layer): per image [N], the most banks live at once and the layer running then;
    ``events`` int64 [N, layers] (``event_counts``, or ``worst_case`` for the bound)."""
    bank = arch.event_buffer_kib * 8192
    bits = np.zeros(events.shape, np.int64)
    for i, lay in enumerate(snn.layers):
        bits[:, i] = [buffer_bits(lay, int(e), arch) for e in events[:, i]]
    if mode == "layer":  # whole banks per buffer
        per = np.ceil(bits / bank).astype(np.int64)
        at = np.stack([per[:, idx].sum(1) for idx in live_buffers(snn, mode)], axis=1)
        return at.max(1), at.argmax(1)
    # pipelined: every buffer is live; they share the banks
    return np.ceil(bits.sum(1) / bank).astype(np.int64), np.zeros(len(bits), np.int64)


def worst_case(snn: SnnModel) -> np.ndarray:
    """int64 [1, layers]: every layer's worst-case events (``worst_events``)."""
    return np.array([[worst_events(lay) for lay in snn.layers]], np.int64)
