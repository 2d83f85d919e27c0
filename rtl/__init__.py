"""rtl: the one-spike accelerator's engines in Amaranth, emitted as Verilog (docs/architecture.md).

The names below are imported on first use: the cocotb bench (:mod:`rtl.bench`) runs inside
the simulator, and importing this package must not pull in Amaranth, torch or Numba there.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Lane": "rtl.lane",
    "PotentialBank": "rtl.engine_mem",
    "NeuronUnit": "rtl.neuron",
    "LayerEngine": "rtl.engine",
    "LayerImage": "rtl.engine",
    "MaxPoolEngine": "rtl.maxpool",
    "OsEngine": "rtl.os_engine",
    "OsImage": "rtl.os_engine",
    "OsLane": "rtl.os_lane",
    "SortingBuckets": "rtl.os_sort",
    "OsMaxPool": "rtl.os_pool",
    "SortedStream": "rtl.os_pool",
    "IndexReader": "rtl.os_blocks",
    "EventReader": "rtl.os_blocks",
    "TileWalk": "rtl.os_blocks",
    "PoolWindows": "rtl.maxpool",
    "OutputQueue": "rtl.queue",
    "SpikeEvent": "rtl.events",
    "pack_event": "rtl.events",
    "unpack_event": "rtl.events",
    "generate_verilog": "rtl.generate",
    "supported_layers": "rtl.generate",
    "write_package": "rtl.package",
    "cosim": "rtl.cosim",
    "Accelerator": "rtl.accelerator",
    "OsAccelerator": "rtl.os_accel",
    "EventFork": "rtl.os_link",
    "OsSequencer": "rtl.os_link",
    "OsHostInput": "rtl.os_link",
    "EventBuffer": "rtl.evbuf",
    "BufferReader": "rtl.evbuf",
    "EventMerger": "rtl.evbuf",
    "Controller": "rtl.accel_ctrl",
    "HostInput": "rtl.host",
    "DebugPort": "rtl.host",
    "RegisterBlock": "rtl.host",
    "accel_cosim": "rtl.accel_sim",
    "AccelReport": "rtl.accel_sim",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rtl' has no attribute {name!r}")
