"""The event buffer's capacity (docs/architecture.md §2 "Event buffer", ``hwsim.eventbuf``):
buffer sizes, which buffers are live while each layer runs, the banks an image needs, and
the refusal of an image whose live buffers overflow the banks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_hwsim import make_snn

import golden
import hwsim
from hwsim import eventbuf
from hwsim.report import summary
from hwsim.sim import ArchFitError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def residual_net():
    """input (2,8,8) T 8 → conv (4,8,8) → maxpool (4,4,4) → conv → conv + shortcut(pool)
    → linear (12,) → output (4,)."""
    return make_snn(3, dict(c=4, stride=1, pad=1, pool="max", residual=True), dict(T=5))


def test_buffer_bits_by_dataflow(residual_net) -> None:
    snn, _ = residual_net
    ps = hwsim.ArchConfig()
    os_ = dataclasses.replace(ps, dataflow="output_stationary")
    conv = snn.layers[1]  # (4, 8, 8), T 5: worst case 256 events, 9-bit pointers
    assert eventbuf.worst_events(conv) == 256
    assert eventbuf.buffer_bits(conv, 100, ps) == 32 * 100 + 6 * 9
    assert eventbuf.buffer_bits(conv, 100, os_) == 16 * 100 + (5 * 64 + 1) * 9
    inp = snn.layers[0]  # (2, 8, 8) trains of T 8: 1024 events at most, 11-bit pointers
    assert eventbuf.worst_events(inp) == 1024
    assert eventbuf.buffer_bits(inp, 0, ps) == 9 * 11
    assert eventbuf.buffer_bits(snn.layers[-1], 5, ps) == 0  # the output layer writes none


def test_live_buffers_keep_the_shortcut_source(residual_net) -> None:
    """The pool's buffer stays live until the residual layer (4) has read its shortcut; the
    maxpool's own source counts as read by it; pipelined mode keeps every buffer."""
    snn, _ = residual_net
    live = eventbuf.live_buffers(snn)
    assert live[1] == [0, 1]
    assert live[2] == [1, 2]
    assert live[3] == [2, 3]
    assert live[4] == [2, 3, 4]
    assert live[6] == [5]
    assert eventbuf.live_buffers(snn, "pipelined")[0] == [0, 1, 2, 3, 4, 5]


def test_banks_counted_from_the_image_and_refused_by_name(residual_net) -> None:
    snn, x = residual_net
    g = golden.run(snn, x, "int", device="cpu")
    events = eventbuf.event_counts(snn, g.spikes)
    assert events[0, 1] == int((np.asarray(g.spikes[1][0]) >= 0).sum())
    assert events[0, 0] == int((np.asarray(g.spikes[0][0]) != 0).sum())
    # banks of 1 KiB: whole banks per live buffer
    arch = dataclasses.replace(hwsim.ArchConfig(), event_buffer_kib=1.0, event_buffer_banks=64)
    res = hwsim.simulate(snn, x, arch)
    banks, at = eventbuf.banks_needed(snn, arch, events)
    np.testing.assert_array_equal(res.event_buffer_banks, banks)
    rep = summary(res, snn)["event_buffer"]
    assert rep["banks_live_peak"] == banks.max() and rep["banks"] == 64
    k = int(banks.argmax())
    per = [
        -(-eventbuf.buffer_bits(lay, int(e), arch) // 8192)
        for lay, e in zip(snn.layers, events[k], strict=True)
    ]
    assert banks[k] == sum(per[i] for i in eventbuf.live_buffers(snn)[at[k]])
    tight = dataclasses.replace(arch, event_buffer_banks=int(banks.max()) - 1)
    j = int(at[k])
    msg = rf"image {k}: while layer {j} \({snn.layers[j].name}\) runs.* {banks[k]} banks"
    with pytest.raises(ArchFitError, match=msg):
        hwsim.simulate(snn, x, tight)
    # pipelined: all buffers share the banks, counted in bits
    pipe = hwsim.simulate(snn, x, arch, mode="pipelined")
    bits = sum(
        eventbuf.buffer_bits(lay, int(e), arch)
        for lay, e in zip(snn.layers, events[0], strict=True)
    )
    assert pipe.event_buffer_banks[0] == -(-bits // 8192)


def test_worst_case_bounds_every_image(residual_net) -> None:
    snn, x = residual_net
    arch = dataclasses.replace(hwsim.ArchConfig(), event_buffer_kib=1.0, event_buffer_banks=64)
    worst, _ = eventbuf.banks_needed(snn, arch, eventbuf.worst_case(snn))
    assert (hwsim.simulate(snn, x, arch).event_buffer_banks <= worst[0]).all()


def test_tile_channels_fixes_the_channels_per_tile(residual_net) -> None:
    """tile_channels = k: every 3-D layer's tiles hold min(k, C) channels; spikes unchanged."""
    snn, x = residual_net
    base = hwsim.ArchConfig.preset("os16")
    auto = hwsim.simulate(snn, x[:2], base)
    for k in (1, 2):
        res = hwsim.simulate(snn, x[:2], dataclasses.replace(base, tile_channels=k))
        for lay, shape in zip(snn.layers, res.tile_shapes, strict=True):
            if shape is not None and len(lay.shape) == 3 and lay.kind != "maxpool":
                assert shape[0] == min(k, lay.channels), (lay.name, shape)
        for a, b in zip(auto.spikes, res.spikes, strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)
    with pytest.raises(ValueError, match="tile_channels must be at most lanes"):
        dataclasses.replace(base, tile_channels=32)
