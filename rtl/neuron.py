"""The neuron unit: one lane's boundary arithmetic (docs/semantics.md §3)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.events import pot_word

#: Fraction bits F of the fixed-point base M = round(Q · 2^F) (docs/semantics.md §1).
FRAC_BITS = 16
#: Width of M: Q ≤ 2 gives M ≤ 2^17.
M_BITS = 18


#: The neuron unit's inputs and outputs besides its word (a :class:`~rtl.lane.Lane` passes
#: them through).
NEURON_INPUTS = ("theta", "valid", "compare", "leak", "m")
NEURON_OUTPUTS = ("fire", "compared", "leaked")


def neuron_ports(acc_bits: int) -> dict:
    """The ports :data:`NEURON_INPUTS` and :data:`NEURON_OUTPUTS` of a neuron unit."""
    ins = {"theta": In(signed(acc_bits)), "valid": In(1), "compare": In(1), "leak": In(1),
           "m": In(M_BITS)}  # fmt: skip
    return {**ins, **{name: Out(1) for name in NEURON_OUTPUTS}}


class NeuronUnit(wiring.Component):
    """One lane's neuron at a phase boundary (docs/semantics.md §3, combinational).

    If the lane is valid and not fired: if ``compare`` and U ≥ Θ, the lane fires (its flag
    is set, U is kept); otherwise, if ``leak``, U ← clamp((U·M + 2^15) >> 16, −L, L).
    Fired and invalid lanes pass through unchanged (gated). An engine has P of them, one per
    lane (:class:`~rtl.lane.Lane`).

    Parameters
    ----------
    acc_bits : int
        A, the signed potential width.
    sat_limit : int
        L, the clamp of the scaled potential (0 < L < 2^(A−1)).

    Ports
    -----
    word_in : In(pot_word(A))
        The lane's word read from the potential SRAM (A + 1 bits).
    theta : In(signed(A))
        Θq of the lane's channel for t_o = k − T_w.
    valid : In(1)
        The lane holds a neuron (the last row of a layer may be partial).
    compare, leak : In(1)
        This boundary decides t_o (k ≥ T_w); this boundary scales (k < K).
    m : In(18)
        The base M of this boundary (M_in or M_out), unsigned fixed point with 16 fraction bits.
    word_out : Out(pot_word(A))
        The word to write back.
    fire : Out(1)
        The lane fires.
    compared, leaked : Out(1)
        The lane compares U with Θq (a threshold read), the lane scales U (a multiply): the
        activity counters of docs/architecture.md §6.
    """

    def __init__(self, acc_bits: int, sat_limit: int) -> None:
        if not 0 < sat_limit < 2 ** (acc_bits - 1):
            raise ValueError(f"sat_limit must be in (0, 2^{acc_bits - 1}), got {sat_limit!r}")
        self.acc_bits, self.sat_limit = acc_bits, sat_limit
        super().__init__(
            {
                "word_in": In(pot_word(acc_bits)),
                "word_out": Out(pot_word(acc_bits)),
                **neuron_ports(acc_bits),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        lim, cur = self.sat_limit, self.word_in
        active = Signal()
        m.d.comb += active.eq(self.valid & ~cur.fired)
        # Θq is positive and ≤ L < 2^(A−1), so it is stored as a signed A-bit number
        m.d.comb += self.fire.eq(active & self.compare & (cur.u >= self.theta))
        # U·M needs A + 18 bits (+1 for M's sign extension); + 2^15 then an arithmetic shift
        # by 16 (floor) rounds the scaled potential half up
        prod = cur.u * self.m  # signed × unsigned: a signed product
        scaled = Signal(signed(self.acc_bits + M_BITS + 1))
        m.d.comb += scaled.eq((prod + (1 << (FRAC_BITS - 1))) >> FRAC_BITS)
        # saturate at ±L, so one phase of adds can never leave the A-bit range (§4)
        clamped = Mux(scaled > lim, lim, Mux(scaled < -lim, -lim, scaled))
        m.d.comb += self.leaked.eq(active & ~self.fire & self.leak)
        m.d.comb += [self.word_out.u.eq(Mux(self.leaked, clamped, cur.u)),
                     self.word_out.fired.eq(cur.fired | self.fire),
                     self.compared.eq(active & self.compare)]  # fmt: skip
        return m
