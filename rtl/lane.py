"""One lane of the layer engine: its potential bank, its adder and its neuron unit (§1, §10)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.engine_mem import PotentialBank
from rtl.events import pot_word
from rtl.neuron import NEURON_INPUTS, NEURON_OUTPUTS, NeuronUnit, neuron_ports


class Lane(wiring.Component):
    """Lane i of the P lanes (docs/architecture.md §1): the PE (one adder), the neuron unit
    and the lane's bank of the potential SRAM, with the write-back select.

    Every lane of an engine gets the same addresses, enables and selects; only its weight,
    initial potential, threshold and ``valid`` are its own (lane i of the weight, bias and
    threshold words). A read-modify-write row is the P lanes' words at one address.

    Parameters
    ----------
    acc_bits : int
        A.
    weight_bits : int
        The lane's weight width (W, or 16 for a residual layer's shortcut weights).
    sat_limit : int
        L (:class:`~rtl.neuron.NeuronUnit`).
    rows : int
        R, the rows of the potential SRAM.
    host : bool
        The output layer: the bank gets the host's read port.

    Ports
    -----
    rd_addr, wr_addr, wr_en : In
        The bank's read (registered) and write ports (:class:`~rtl.engine_mem.PotentialBank`).
    init, add : In(1)
        What is written: the initial potential ``bias`` with the fired flag clear (``init``),
        else the adder's sum (``add``), else the neuron unit's word.
    weight : In(signed(weight_bits)), negate : In(1)
        The adder's weight and its sign (a −1 event of a signed input layer subtracts); the
        sum is truncated to A bits, exact for an unfired lane (no overflow, docs/semantics.md
        §4); a fired lane's sum is a don't-care the neuron unit never reads.
    bias, theta : In(signed(A))
        The lane's initial potential (B) and threshold Θq (spiking layers).
    valid, compare, leak, m : In
        The neuron unit's inputs (:class:`~rtl.neuron.NeuronUnit`).
    word : Out(pot_word(A))
        The word read (the row named by ``rd_addr`` in the previous cycle, forwarded).
    fire, compared, leaked : Out(1)
        The neuron unit's outputs.
    host_addr, host_u : ``host`` only: the host's read port (In), the potential read (Out).
    """

    def __init__(self, acc_bits: int, weight_bits: int, sat_limit: int, rows: int,
                 host: bool = False) -> None:  # fmt: skip
        self.acc_bits, self.sat_limit, self.host = acc_bits, sat_limit, host
        self.bank = PotentialBank(acc_bits, rows, host)
        addr = range(self.bank.rows)
        ports = {
            "rd_addr": In(addr),
            "wr_addr": In(addr),
            "wr_en": In(1),
            "init": In(1),
            "add": In(1),
            "weight": In(signed(weight_bits)),
            "negate": In(1),
            "bias": In(signed(acc_bits)),
            "word": Out(pot_word(acc_bits)),
            **neuron_ports(acc_bits),
        }
        if host:
            ports.update(host_addr=In(addr), host_u=Out(signed(acc_bits)))
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.bank = bank = self.bank
        m.submodules.nu = nu = NeuronUnit(self.acc_bits, self.sat_limit)
        cur = bank.rd_data
        m.d.comb += [bank.rd_addr.eq(self.rd_addr), bank.wr_addr.eq(self.wr_addr),
                     bank.wr_en.eq(self.wr_en), self.word.eq(cur), nu.word_in.eq(cur)]  # fmt: skip
        m.d.comb += [getattr(nu, n).eq(getattr(self, n)) for n in NEURON_INPUTS]
        m.d.comb += [getattr(self, n).eq(getattr(nu, n)) for n in NEURON_OUTPUTS]
        # the PE: U ± w, truncated back to A bits
        total = Mux(self.negate, cur.u - self.weight, cur.u + self.weight)
        with m.If(self.init):
            m.d.comb += [bank.wr_data.u.eq(self.bias), bank.wr_data.fired.eq(0)]
        with m.Elif(self.add):
            m.d.comb += [bank.wr_data.u.eq(total[: self.acc_bits]),
                         bank.wr_data.fired.eq(cur.fired)]  # fmt: skip
        with m.Else():
            m.d.comb += bank.wr_data.eq(nu.word_out)
        if self.host:
            m.d.comb += [bank.host_addr.eq(self.host_addr), self.host_u.eq(bank.host_data.u)]
        return m
