"""cocotb bench of the whole accelerator (rtl.Accelerator), at the simulator's own speed.

The host side (:mod:`rtl.accel_sim`) writes the case to the JSON file named by
``ONESPIKE_BENCH``: the layers, the register map, the output layer's row layout and per image
the input event words, golden ``int``'s phases of every spiking layer, the output potentials
and class, hwsim's layer-mode cycles per layer and per image (the engines' and the
controller's) and hwsim's activity counts per engine over the images. Per image the bench
writes the input events through the AXI4-Stream port (one beat per cycle), pulses ``start``
and waits for ``done`` with no Python code per cycle, then reads every layer's buffered
events through the debug port, the counters through the register block and the output
potentials and checks them (the counters summed over the images); it writes what it
measured to ``ONESPIKE_BENCH_OUT``. It runs inside the simulator and imports neither
amaranth nor torch.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout

# Event word fields (rtl/events.py).
INDEX_MASK, PHASE_SHIFT, SIGN_SHIFT, END_SHIFT = (1 << 20) - 1, 20, 26, 28
#: The engines' counters (rtl/engine.py COUNTERS), as the register block holds them.
COUNTERS = ("cycles", "stalled", "spikes_in", "spikes_out", "adds", "compares", "multiplies")
PERIOD_NS = 10


def _int(sig) -> int:
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


async def load_input(dut, words: list[int]) -> None:
    """The image's input event words through the AXI4-Stream port: a beat is offered at a
    falling edge and taken at the next rising edge if ``tready`` is high then (it is read
    once the inputs have settled); one beat per cycle while ``tready`` stays high."""
    await FallingEdge(dut.clk)
    for j, w in enumerate(words):
        dut.s_axis_tdata.value = w
        dut.s_axis_tvalid.value = 1
        dut.s_axis_tlast.value = int(j == len(words) - 1)
        while True:
            await ReadOnly()
            ready = _int(dut.s_axis_tready)
            await FallingEdge(dut.clk)
            if ready:
                break
    dut.s_axis_tvalid.value = 0
    dut.s_axis_tlast.value = 0


async def read_words(dut, addr_sig, data_sig, addrs: list[int]) -> list[int]:
    """Registered reads, one word per cycle: address k is set at a falling edge, registered
    at the rising edge that follows and read at the next falling edge (where address k + 1
    is set). Call at a falling edge."""
    out = []
    for a in addrs:
        addr_sig.value = a
        await FallingEdge(dut.clk)
        out.append(_int(data_sig))
    return out


async def read_registers(dut, addrs: dict[str, int]) -> dict[str, int]:
    names = list(addrs)
    await FallingEdge(dut.clk)
    vals = await read_words(dut, dut.reg_addr, dut.reg_data, [addrs[k] for k in names])
    return dict(zip(names, vals, strict=True))


async def read_buffer(dut, layer: int) -> list[int]:
    """Every event word in layer ``layer``'s buffer, through the debug port."""
    await FallingEdge(dut.clk)
    dut.dbg_layer.value = layer
    dut.dbg_addr.value = 0
    await FallingEdge(dut.clk)
    n = _int(dut.dbg_count)
    if not n:
        return []
    return await read_words(dut, dut.dbg_addr, dut.dbg_data, list(range(n)))


async def read_potentials(dut, out: dict) -> list[int]:
    """The output layer's potentials in neuron order (rows of P lanes, §2's layout)."""
    lanes, bits, pixels = out["lanes"], out["potential_bits"], out["pixels"]
    n, cb = out["n_out"], out["channel_blocks"]
    channels, pots = n // pixels, [0] * n
    for row in range(out["rows"]):
        await FallingEdge(dut.clk)
        dut.pot_addr.value = row
        await FallingEdge(dut.clk)  # a registered read: the row came out at the rising edge
        word = _int(dut.pot_data)
        pix, block = divmod(row, cb)
        for lane in range(lanes):
            c = block * lanes + lane
            if c < channels:
                v = (word >> (lane * bits)) & ((1 << bits) - 1)
                pots[c * pixels + pix] = _signed(v, bits)
    return pots


def spike_errors(name: str, n: int, words: list[int], phases: list[int]) -> list[str]:
    """(neuron, phase) of the buffered words against golden's phases; names the first
    neuron and phase that differ."""
    seen = Counter((w & INDEX_MASK, (w >> PHASE_SHIFT) & 63) for w in words)
    want = Counter((j, p) for j, p in enumerate(phases) if p >= 0)
    if seen == want:
        return []
    first = min((want - seen) | (seen - want))
    lost, extra = sorted((want - seen).elements()), sorted((seen - want).elements())
    return [f"layer {name} image {n}: first difference at neuron {first[0]} phase {first[1]}; "
            f"lost {lost[:6]}, extra/duplicated {extra[:6]}"]  # fmt: skip


def check_image(case: dict, n: int, image: dict, got: dict) -> list[str]:
    """Every check of one image: spikes per layer, input words, potentials, class, each
    engine's cycles and the controller's total against hwsim's."""
    errors = []
    for lay in case["layers"]:
        i, name = lay["index"], f"{lay['index']} ({lay['name']})"
        if lay["kind"] == "input":
            if got["buffers"][str(i)] != image["input"]:
                errors.append(f"layer {name} image {n}: the input buffer differs from the input")
        elif lay["buffered"]:
            errors += spike_errors(name, n, got["buffers"][str(i)], image["phases"][str(i)])
        if lay["kind"] != "input":
            rtl, want = got["registers"][f"cycles@{i}"], image["hwsim_cycles"][str(i)]
            if rtl != want:
                errors.append(f"layer {name} image {n}: {rtl} RTL cycles, hwsim {want}")
    rtl, want = got["registers"]["cycles"], image["hwsim_total_cycles"]
    if rtl != want:
        errors.append(f"image {n}: the controller counted {rtl} cycles, hwsim's image latency "
                      f"is {want} (docs/architecture.md §14)")  # fmt: skip
    if got["potentials"] != image["potentials"]:
        j = next(k for k, (a, b) in enumerate(zip(got["potentials"], image["potentials"],
                                                  strict=True)) if a != b)  # fmt: skip
        errors.append(f"image {n}: output potential {j} is {got['potentials'][j]}, golden "
                      f"{image['potentials'][j]}")  # fmt: skip
    if got["registers"]["status"] & 4:
        errors.append(
            f"image {n}: an event buffer overflowed (status {got['registers']['status']})"
        )
    if got["class"] != image["argmax"]:
        errors.append(f"image {n}: class {got['class']}, golden {image['argmax']}")
    return errors


def count_errors(case: dict, measured: list[dict]) -> list[str]:
    """Each engine's activity counters (register block), summed over the images, against
    hwsim's counts of the case (``hwsim_counts``)."""
    errors = []
    names = {str(lay["index"]): f"{lay['index']} ({lay['name']})" for lay in case["layers"]}
    for i, want in case["hwsim_counts"].items():
        for k, w in want.items():
            rtl = sum(got["registers"][f"{k}@{i}"] for got in measured)
            if rtl != w:
                errors.append(f"layer {names[i]}: counter {k}: RTL {rtl}, hwsim {w} "
                              f"(over {len(measured)} images)")  # fmt: skip
    return errors


@cocotb.test()
async def accelerator_matches_golden_and_hwsim(dut) -> None:
    """Every image of the case through the whole accelerator: each layer's spikes equal
    golden int's, the output potentials and class too, each engine's cycles hwsim's, and its
    counters, over the images, hwsim's counts."""
    with open(os.environ["ONESPIKE_BENCH"]) as f:
        case = json.load(f)
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for sig in ("start", "s_axis_tvalid", "s_axis_tlast", "s_axis_tdata", "pot_addr",
                "dbg_layer", "dbg_addr", "reg_addr"):  # fmt: skip
        getattr(dut, sig).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    errors, measured = [], []
    timing = {"load_s": 0.0, "sim_s": 0.0, "readback_s": 0.0}
    for n, image in enumerate(case["images"]):
        t0 = time.perf_counter()
        await load_input(dut, image["input"])
        t1 = time.perf_counter()
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        limit = PERIOD_NS * (2 * image["hwsim_total_cycles"] + 1000)
        await with_timeout(RisingEdge(dut.done), limit, "ns")  # no Python per cycle
        t2 = time.perf_counter()
        got = {"registers": await read_registers(dut, case["registers"])}
        got["buffers"] = {str(lay["index"]): await read_buffer(dut, lay["index"])
                          for lay in case["layers"] if lay["buffered"]}  # fmt: skip
        got["potentials"] = await read_potentials(dut, case["output"])
        got["class"] = got["registers"]["class"]
        t3 = time.perf_counter()
        timing["load_s"] += t1 - t0
        timing["sim_s"] += t2 - t1
        timing["readback_s"] += t3 - t2
        errors += check_image(case, n, image, got)
        measured.append(got)
    errors += count_errors(case, measured)
    with open(os.environ["ONESPIKE_BENCH_OUT"], "w") as f:
        json.dump({"images": measured, "errors": errors, **timing}, f)
    assert not errors, "\n".join(errors[:20])
