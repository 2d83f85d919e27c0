"""rtl: the one-spike layer engine in Amaranth, emitted as Verilog (docs/architecture.md)."""

from __future__ import annotations

from rtl.engine import LayerEngine, LayerImage
from rtl.events import SpikeEvent, pack_event, unpack_event
from rtl.generate import generate_verilog
from rtl.neuron import AdderArray, NeuronUnit
from rtl.queue import OutputQueue

__all__ = [
    "AdderArray",
    "LayerEngine",
    "LayerImage",
    "NeuronUnit",
    "OutputQueue",
    "SpikeEvent",
    "generate_verilog",
    "pack_event",
    "unpack_event",
]
