"""The neuron unit and the PE array: the two arithmetic blocks of the layer engine."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import pot_word

#: Fraction bits F of the fixed-point base M = round(Q · 2^F) (docs/semantics.md §1).
FRAC_BITS = 16
#: Width of M: Q ≤ 2 gives M ≤ 2^17.
M_BITS = 18


class NeuronUnit(wiring.Component):
    """One row of P neurons at a phase boundary (docs/semantics.md §3, combinational).

    Per lane that is valid and not fired: if ``compare`` and U ≥ Θ, the lane fires (its
    flag is set, U is kept); otherwise, if ``leak``, U ← clamp((U·M + 2^15) >> 16, −L, L).
    Fired and invalid lanes pass through unchanged (gated).

    Parameters
    ----------
    lanes : int
        P.
    acc_bits : int
        A, the signed potential width.
    sat_limit : int
        L, the clamp of the scaled potential (0 < L < 2^(A−1)).

    Ports
    -----
    row_in : In(ArrayLayout(pot_word(A), P))
        The row read from the potential SRAM (P · (A + 1) bits).
    theta : In(ArrayLayout(signed(A), P))
        Θq of each lane's channel for t_o = k − T_w (P · A bits).
    lane_valid : In(P)
        Lanes that hold a neuron (the last row of a layer may be partial).
    compare, leak : In(1)
        This boundary decides t_o (k ≥ T_w); this boundary scales (k < K).
    m : In(18)
        The base M of this boundary (M_in or M_out), unsigned fixed point with 16 fraction bits.
    row_out : Out(ArrayLayout(pot_word(A), P))
        The row to write back.
    fire : Out(P)
        Lanes that fire in this row.
    compared, leaked : Out(P)
        Lanes that compare U with Θq (a threshold read), lanes that scale U (a multiply): the
        activity counters of docs/architecture.md §6.
    """

    def __init__(self, lanes: int, acc_bits: int, sat_limit: int) -> None:
        if not 0 < sat_limit < 2 ** (acc_bits - 1):
            raise ValueError(f"sat_limit must be in (0, 2^{acc_bits - 1}), got {sat_limit!r}")
        self.lanes, self.acc_bits, self.sat_limit = lanes, acc_bits, sat_limit
        row = data.ArrayLayout(pot_word(acc_bits), lanes)
        super().__init__(
            {
                "row_in": In(row),
                "theta": In(data.ArrayLayout(signed(acc_bits), lanes)),
                "lane_valid": In(lanes),
                "compare": In(1),
                "leak": In(1),
                "m": In(M_BITS),
                "row_out": Out(row),
                "fire": Out(lanes),
                "compared": Out(lanes),
                "leaked": Out(lanes),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        lim = self.sat_limit
        lanes_out, fire, compared, leaked = [], [], [], []
        for lane in range(self.lanes):
            cur = self.row_in[lane]
            # named wires: an expression used twice would be emitted (and evaluated) twice
            active, fires = Signal(name=f"active{lane}"), Signal(name=f"fires{lane}")
            m.d.comb += active.eq(self.lane_valid[lane] & ~cur.fired)
            # Θq is positive and ≤ L < 2^(A−1), so it is stored as a signed A-bit number
            m.d.comb += fires.eq(active & self.compare & (cur.u >= self.theta[lane]))
            # U·M needs A + 18 bits (+1 for M's sign extension); + 2^15 then an arithmetic
            # shift by 16 (floor) rounds the scaled potential half up
            prod = cur.u * self.m  # signed × unsigned: a signed product
            scaled = Signal(signed(self.acc_bits + M_BITS + 1), name=f"scaled{lane}")
            m.d.comb += scaled.eq((prod + (1 << (FRAC_BITS - 1))) >> FRAC_BITS)
            # saturate at ±L, so one phase of adds can never leave the A-bit range (§4)
            clamped = Mux(scaled > lim, lim, Mux(scaled < -lim, -lim, scaled))
            leaks = Signal(name=f"leaks{lane}")
            m.d.comb += leaks.eq(active & ~fires & self.leak)
            u = Mux(leaks, clamped, cur.u)
            lanes_out.append(Cat(u[: self.acc_bits], cur.fired | fires))
            fire.append(fires)
            compared.append(active & self.compare)
            leaked.append(leaks)
        # one assignment of the whole row: Icarus evaluates it faster than P part-assignments
        # of the wide net (about 1.5× at P = 16)
        m.d.comb += [self.row_out.eq(Cat(*lanes_out)), self.fire.eq(Cat(*fire)),
                     self.compared.eq(Cat(*compared)), self.leaked.eq(Cat(*leaked))]  # fmt: skip
        return m


class AdderArray(wiring.Component):
    """The P-lane PE array: one row of potentials plus (or minus) one weight word.

    Parameters
    ----------
    lanes : int
        P.
    weight_bits : int
        W, the signed weight width.
    acc_bits : int
        A. The sum cannot overflow: |U| ≤ L = 2^(A−1) − 1 − Smax before a phase's adds
        (docs/semantics.md §4); fired lanes are don't-cares and wrap.

    Ports
    -----
    row_in : In(ArrayLayout(pot_word(A), P))
        The target potentials (P · (A + 1) bits).
    weights : In(ArrayLayout(signed(W), P))
        The weight word (P · W bits).
    negate : In(1)
        Subtract the weights (a −1 event of a signed input layer).
    row_out : Out(ArrayLayout(pot_word(A), P))
        The potentials to write back (fired flags unchanged).
    """

    def __init__(self, lanes: int, weight_bits: int, acc_bits: int) -> None:
        self.lanes = lanes
        row = data.ArrayLayout(pot_word(acc_bits), lanes)
        super().__init__(
            {
                "row_in": In(row),
                "weights": In(data.ArrayLayout(signed(weight_bits), lanes)),
                "negate": In(1),
                "row_out": Out(row),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        lanes_out = []
        for lane in range(self.lanes):
            cur, w = self.row_in[lane], self.weights[lane]
            # truncation back to A bits is exact for unfired lanes (no overflow, §4)
            u = Mux(self.negate, cur.u - w, cur.u + w)
            lanes_out.append(Cat(u[: len(cur.u)], cur.fired))
        m.d.comb += self.row_out.eq(Cat(*lanes_out))  # one assignment: see NeuronUnit
        return m
