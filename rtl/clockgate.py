"""Clock gating of the layer engines (docs/architecture.md §14): an idle engine gets no clock."""

from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class ClockGate(wiring.Component):
    """An integrated clock gate (ICG): ``clk = sync clock & en_q``, where ``en_q`` is ``en``
    sampled on the clock's falling edge.

    Sampling on the falling edge keeps the gated clock free of glitches: ``en``, computed
    from registers after a rising edge, settles while the clock is high and only reaches the
    AND gate while the clock is low. So the gated domain's registers update at the rising
    edge that ends a cycle exactly when ``en`` was high in that cycle, as a clock enable
    would make them (the same cycles and values), while a simulator evaluates nothing of a
    gated-off domain. ``en_q`` starts at 1 (no reset), so the gated domain sees reset.

    Ports
    -----
    en : In(1)
        Clock the gated domain at the end of this cycle.
    clk : Out(1)
        The gated clock.
    """

    def __init__(self) -> None:
        super().__init__({"en": In(1), "clk": Out(1)})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.domains.fall = ClockDomain(clk_edge="neg", reset_less=True, local=True)
        en_q = Signal(init=1)
        m.d.comb += ClockSignal("fall").eq(ClockSignal("sync"))
        m.d.fall += en_q.eq(self.en)
        m.d.comb += self.clk.eq(ClockSignal("sync") & en_q)
        return m
