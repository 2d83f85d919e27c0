"""cocotb bench of rtl.LinearEngine: Driver / Monitor / Model / Checker (../../shared/STYLE.md).

The pytest side (tests/test_rtl.py) writes the case to the JSON file named by
``ONESPIKE_BENCH``: per image the source events, golden ``int``'s phases of the layer (the
model) and hwsim's cycle count; the output back-pressure pattern. This bench drives the
events, applies the back-pressure, collects the spikes and writes what it measured to
``ONESPIKE_BENCH_OUT``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout

# Event word fields (rtl/events.py; this module runs inside the simulator without amaranth).
INDEX_MASK, PHASE_SHIFT, SIGN_SHIFT, END_SHIFT = (1 << 20) - 1, 20, 26, 28


def _int(sig) -> int:
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


class EventDriver:
    """Drives ``i_events`` (valid/ready) from a list of (index, phase, sign) and an end marker.

    Signals change on the falling edge; a transfer is seen in the read-only phase of the
    cycle that the next rising edge completes."""

    def __init__(self, dut, gap_rate: float = 0.0, seed: int = 0) -> None:
        self.dut = dut
        self.items: list[int] = []
        self.gap_rate = gap_rate  # probability that valid is held low in a cycle
        self.rng = random.Random(seed)
        dut.i_events__valid.value = 0
        dut.i_events__payload.value = 0

    def load(self, events: list[list[int]]) -> None:
        words = [i | (p << PHASE_SHIFT) | (s << SIGN_SHIFT) for i, p, s in events]
        self.items = [*words, 1 << END_SHIFT]

    async def run(self) -> None:
        fired = valid = False
        while True:
            await FallingEdge(self.dut.clk)
            if fired:
                self.items.pop(0)
            # a gap may only start while nothing is offered (valid never drops before ready)
            offer = bool(self.items) and (valid or self.rng.random() >= self.gap_rate)
            valid = offer
            self.dut.i_events__valid.value = int(offer)
            self.dut.i_events__payload.value = self.items[0] if self.items else 0
            await ReadOnly()
            fired = offer and _int(self.dut.i_events__ready) == 1
            valid = offer and not fired


class BackPressure:
    """``o_spikes.ready`` low in layer cycle t iff ``stalls[t % len(stalls)]`` (as hwsim)."""

    def __init__(self, dut, stalls: list[bool] | None) -> None:
        self.dut, self.stalls = dut, stalls or [False]
        dut.o_spikes__ready.value = 1

    async def run(self) -> None:
        while True:
            await FallingEdge(self.dut.clk)
            t = _int(self.dut.cycles)
            self.dut.o_spikes__ready.value = int(not self.stalls[t % len(self.stalls)])


class SpikeMonitor:
    """Collects (neuron, phase) of every transfer on ``o_spikes``."""

    def __init__(self, dut) -> None:
        self.dut = dut
        self.seen: list[tuple[int, int]] = []

    async def run(self) -> None:
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            if _int(self.dut.o_spikes__valid) and _int(self.dut.o_spikes__ready):
                w = _int(self.dut.o_spikes__payload)
                self.seen.append((w & INDEX_MASK, (w >> PHASE_SHIFT) & 63))


class Model:
    """golden ``int`` (spikes) and hwsim (cycles) for one image, computed by the pytest side."""

    def __init__(self, image: dict) -> None:
        self.spikes = [(j, p) for j, p in enumerate(image["phases"]) if p >= 0]
        self.cycles = image["hwsim_cycles"]


class Checker:
    """Compares what the monitor saw with the model; records every mismatch."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def check(
        self, n: int, model: Model, seen: list[tuple[int, int]], cycles: int, gaps: bool
    ) -> None:
        got, want = Counter(seen), Counter(model.spikes)
        if got != want:
            lost = sorted((want - got).elements())
            extra = sorted((got - want).elements())
            self.errors.append(f"image {n}: spikes lost {lost[:8]}, extra/duplicated {extra[:8]}")
        if gaps and cycles < model.cycles:  # input gaps only add cycles
            self.errors.append(f"image {n}: {cycles} RTL cycles < hwsim's {model.cycles}")
        if not gaps and cycles != model.cycles:
            self.errors.append(f"image {n}: {cycles} RTL cycles, hwsim counts {model.cycles}")


@cocotb.test()
async def linear_layer_matches_golden_and_hwsim(dut) -> None:
    """Every image of the case: spikes equal golden int, cycles equal hwsim's."""
    with open(os.environ["ONESPIKE_BENCH"]) as f:
        case = json.load(f)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    gap_rate = case.get("input_gap_rate", 0.0)
    driver, monitor = EventDriver(dut, gap_rate, seed=1), SpikeMonitor(dut)
    checker = Checker()
    dut.start.value = 0
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    cocotb.start_soon(driver.run())
    cocotb.start_soon(BackPressure(dut, case["stalls"]).run())
    cocotb.start_soon(monitor.run())
    measured, total_cycles, t0 = [], 0, time.perf_counter()
    for n, image in enumerate(case["images"]):
        while driver.items:  # the previous end marker is consumed (at a falling edge)
            await RisingEdge(dut.clk)
        driver.load(image["events"])
        monitor.seen.clear()
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        # 10 ns clock; input gaps may stretch the layer (bounded generously)
        await with_timeout(_wait_done(dut), 10 * (4 * image["hwsim_cycles"] + 1000), "ns")
        await FallingEdge(dut.clk)  # the last transfer is recorded by now
        cycles = _int(dut.cycles)
        total_cycles += cycles
        checker.check(n, Model(image), monitor.seen, cycles, gaps=gap_rate > 0)
        measured.append({"cycles": cycles, "spikes": len(monitor.seen),
                         "stalled": _int(dut.stalled), "events": _int(dut.spikes_in)})  # fmt: skip
    wall = time.perf_counter() - t0
    with open(os.environ["ONESPIKE_BENCH_OUT"], "w") as f:
        json.dump({"images": measured, "errors": checker.errors, "wall_s": wall,
                   "cycles_per_s": total_cycles / wall}, f)  # fmt: skip
    assert not checker.errors, "\n".join(checker.errors)


async def _wait_done(dut) -> None:
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if _int(dut.done):
            return
