"""cocotb bench of one rtl engine (layer, output or max-pool): Driver / Monitor / Model / Checker.

The host side (:mod:`rtl.cosim`) writes the case to the JSON file named by ``ONESPIKE_BENCH``:
per image the source events, the model (golden ``int``'s phases of the layer, or for the output
layer its integer potentials and class) and hwsim's cycle count; the output back-pressure
pattern, the input gap rate and an optional reset in the middle of the first image. This bench
drives the events, applies the back-pressure, collects the spikes, checks them and writes what
it measured to ``ONESPIKE_BENCH_OUT``. It runs inside the simulator and imports neither
amaranth nor torch.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout

# Event word fields (rtl/events.py); a source index of more than 20 bits (a graph network's
# input layer) carries its bits 20–22 in the spare field (rtl/engine.py WIDE_INDEX_BITS).
INDEX_MASK, PHASE_SHIFT, SIGN_SHIFT, GROUP_SHIFT, END_SHIFT = (1 << 20) - 1, 20, 26, 27, 28
SPARE_SHIFT = 29
#: Counter ports read after each image (rtl/engine.py COUNTERS).
COUNTERS = ("cycles", "stalled", "spikes_in", "spikes_out", "adds", "compares", "multiplies")


def _int(sig) -> int:
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


class EventDriver:
    """Drives ``i_events`` (valid/ready) from a list of (index, phase, sign[, group]) and an
    end marker (the group, 0 if absent, selects a residual layer's synapse group).

    Signals change on the falling edge; a transfer is seen in the read-only phase of the
    cycle that the next rising edge completes. With ``gap_rate`` > 0 the stream idles at
    random (valid never drops once offered, as the stream protocol requires)."""

    def __init__(self, dut, gap_rate: float = 0.0, seed: int = 0) -> None:
        self.dut = dut
        self.items: list[int] = []
        self.gap_rate = gap_rate
        self.rng = random.Random(seed)
        dut.i_events__valid.value = 0
        dut.i_events__payload.value = 0

    def load(self, events: list[list[int]]) -> None:
        words = []
        for i, p, s, *g in events:
            words.append(
                (i & INDEX_MASK)
                | ((i >> PHASE_SHIFT) << SPARE_SHIFT)
                | (p << PHASE_SHIFT)
                | (s << SIGN_SHIFT)
                | (sum(g) << GROUP_SHIFT)
            )
        self.items = [*words, 1 << END_SHIFT]

    async def run(self) -> None:
        fired = valid = False
        while True:
            await FallingEdge(self.dut.clk)
            if fired and self.items:
                self.items.pop(0)
            offer = bool(self.items) and (valid or self.rng.random() >= self.gap_rate)
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
        if len(self.stalls) == 1 and not self.stalls[0]:
            return  # always ready: nothing to drive
        while True:
            await FallingEdge(self.dut.clk)
            t = _int(self.dut.cycles)
            self.dut.o_spikes__ready.value = int(not self.stalls[t % len(self.stalls)])


class SpikeMonitor:
    """Collects (neuron, phase) of every transfer on ``o_spikes``, in order."""

    def __init__(self, dut) -> None:
        self.dut = dut
        self.seen: list[tuple[int, int]] = []

    async def run(self) -> None:
        while True:
            await FallingEdge(self.dut.clk)
            await ReadOnly()  # inputs change on the falling edge: these are sampled next
            if _int(self.dut.o_spikes__valid) and _int(self.dut.o_spikes__ready):
                w = _int(self.dut.o_spikes__payload)
                self.seen.append((w & INDEX_MASK, (w >> PHASE_SHIFT) & 63))


class Model:
    """golden ``int`` (spikes, output potentials, class) and hwsim (cycles) for one image."""

    def __init__(self, image: dict) -> None:
        phases = image.get("phases")
        self.spikes = None if phases is None else [(j, p) for j, p in enumerate(phases) if p >= 0]
        self.potentials = image.get("potentials")
        self.argmax = image.get("argmax")
        self.cycles = image["hwsim_cycles"]


class Checker:
    """Compares what the monitor saw with the model; records every mismatch, naming the first
    neuron and phase that differ."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def check(self, n: int, model: Model, got: dict, gaps: bool) -> None:
        if model.spikes is not None:
            seen, want = Counter(map(tuple, got["spikes"])), Counter(model.spikes)
            if seen != want:
                first = min((want - seen) | (seen - want))
                lost = sorted((want - seen).elements())
                extra = sorted((seen - want).elements())
                self.errors.append(
                    f"image {n}: first difference at neuron {first[0]} phase {first[1]}; "
                    f"lost {lost[:8]}, extra/duplicated {extra[:8]}"
                )
        if model.potentials is not None and got["potentials"] != model.potentials:
            j = next(i for i, (a, b) in enumerate(zip(got["potentials"], model.potentials,
                                                      strict=True)) if a != b)  # fmt: skip
            self.errors.append(
                f"image {n}: output potential {j} is {got['potentials'][j]}, golden "
                f"{model.potentials[j]}"
            )
        if model.argmax is not None and got["argmax"] != model.argmax:
            self.errors.append(f"image {n}: class {got['argmax']}, golden {model.argmax}")
        cycles = got["cycles"]
        if gaps and cycles < model.cycles:  # input gaps only add cycles
            self.errors.append(f"image {n}: {cycles} RTL cycles < hwsim's {model.cycles}")
        if not gaps and cycles != model.cycles:
            self.errors.append(f"image {n}: {cycles} RTL cycles, hwsim counts {model.cycles}")


async def _wait_done(dut) -> None:
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if _int(dut.done):
            return


async def _read_potentials(dut, case: dict) -> list[int]:
    """The output layer's potentials in neuron order, through the host read port."""
    lanes, bits, pixels = case["lanes"], case["potential_bits"], case["pixels"]
    n, cb = case["n_out"], case["channel_blocks"]
    channels = n // pixels
    out = [0] * n
    for row in range(case["rows"]):
        await FallingEdge(dut.clk)
        dut.rd_addr.value = row
        await RisingEdge(dut.clk)  # a registered read: the row comes out after the edge
        await ReadOnly()
        word = _int(dut.rd_data)
        pix, block = divmod(row, cb)
        for lane in range(lanes):
            c = block * lanes + lane
            if c < channels:
                out[c * pixels + pix] = _signed((word >> (lane * bits)) & ((1 << bits) - 1), bits)
    return out


@cocotb.test()
async def engine_matches_golden_and_hwsim(dut) -> None:
    """Every image of the case: spikes (or output potentials and class) equal golden int,
    cycles equal hwsim's; an optional reset in the middle of the first image comes first."""
    with open(os.environ["ONESPIKE_BENCH"]) as f:
        case = json.load(f)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    gap_rate = case.get("input_gap_rate", 0.0)
    driver, monitor = EventDriver(dut, gap_rate, seed=1), SpikeMonitor(dut)
    checker = Checker()
    dut.start.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    cocotb.start_soon(driver.run())
    cocotb.start_soon(BackPressure(dut, case["stalls"]).run())
    cocotb.start_soon(monitor.run())
    is_output = case["kind"] == "output"

    async def run_image(image: dict) -> None:
        while driver.items:  # the previous end marker is consumed
            await RisingEdge(dut.clk)
        driver.load(image["events"])
        monitor.seen.clear()
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0

    reset_after = case.get("reset_after_cycles")
    if reset_after is not None and case["images"]:  # abandon image 0 in the middle
        await run_image(case["images"][0])
        await ClockCycles(dut.clk, reset_after)
        await FallingEdge(dut.clk)
        dut.rst.value = 1
        driver.items = []
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        if _int(dut.busy) or _int(dut.done) or _int(dut.cycles):
            checker.errors.append("reset did not return the engine to idle")

    measured, total_cycles, t0 = [], 0, time.perf_counter()
    for n, image in enumerate(case["images"]):
        await run_image(image)
        limit = 10 * (4 * image["hwsim_cycles"] + 1000)  # ns; input gaps stretch the layer
        await with_timeout(_wait_done(dut), limit, "ns")
        await FallingEdge(dut.clk)  # the last transfer is recorded by now
        got = {name: _int(getattr(dut, name)) for name in COUNTERS}
        got["spikes"] = list(monitor.seen)
        if is_output:
            got["argmax"] = _int(dut.argmax)
            got["potentials"] = await _read_potentials(dut, case)
        total_cycles += got["cycles"]
        checker.check(n, Model(image), got, gaps=gap_rate > 0)
        measured.append(got)
    wall = time.perf_counter() - t0
    with open(os.environ["ONESPIKE_BENCH_OUT"], "w") as f:
        json.dump({"images": measured, "errors": checker.errors, "wall_s": wall,
                   "cycles": total_cycles, "cycles_per_s": total_cycles / max(wall, 1e-9)},
                  f)  # fmt: skip
    assert not checker.errors, "\n".join(checker.errors[:20])
