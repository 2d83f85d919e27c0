"""One lane's bank of the potential SRAM: a registered read with write-to-read forwarding (§10)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import pot_word


class PotentialBank(wiring.Component):
    """Lane i's column of the potential SRAM: R words (potential and fired flag) as an SRAM
    macro reads them (docs/architecture.md §2, §10).

    The P banks of an engine share their addresses and enables (a P-word row is one address
    in every bank), so together they are the row-wide SRAM of §2; one bank per lane keeps
    every signal one word wide (a simulator evaluates a P·(A+1)-bit row as wide-integer code,
    which made Verilator 4x slower at P = 64).

    One read port with a one-cycle registered read, one write port (docs/architecture.md
    §10, "Registered reads"). The macro reads the old contents of a word it writes in the
    same cycle (read-first), so the engine's read-modify-write pipeline needs one bypass:
    when the write of cycle t hits the row read in cycle t, the word comes out of a register
    holding that write's data instead of the macro in cycle t + 1. That is the only hazard:
    a row is written in the cycle after its read (stage 2), and a read of cycle t + 1 sees
    every write up to cycle t in the macro.

    Parameters
    ----------
    acc_bits : int
        A.
    rows : int
        R (a memory of one row gets two: a zero-width address is not legal Verilog).
    host : bool
        Add the host's read port (the output layer's potentials).

    Ports
    -----
    rd_addr : In(range(max(R, 2)))
        The row to read (stage 1); it comes out in the next cycle.
    rd_data : Out(pot_word(A))
        The word of the row named by ``rd_addr`` in the previous cycle, with that cycle's
        write forwarded.
    wr_addr, wr_data, wr_en : In
        The write port: row ``wr_addr`` holds ``wr_data`` from the next cycle on.
    host_addr, host_data : In(range(max(R, 2))), Out(pot_word(A))
        ``host`` only: the host's read port (a second registered read, outside the engine's
        pipeline): ``host_data`` is the word of the row ``host_addr`` named in the previous
        cycle. The host reads after the run, when nothing writes.
    """

    def __init__(self, acc_bits: int, rows: int, host: bool = False) -> None:
        self.rows, self.host = max(rows, 2), host
        self.word = pot_word(acc_bits)
        ports = {
            "rd_addr": In(range(self.rows)),
            "rd_data": Out(self.word),
            "wr_addr": In(range(self.rows)),
            "wr_data": In(self.word),
            "wr_en": In(1),
        }
        if host:
            ports.update(host_addr=In(range(self.rows)), host_data=Out(self.word))
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.word, depth=self.rows, init=[])
        rd = mem.read_port(domain="sync")  # read-first: not transparent for the write port
        wr = mem.write_port()
        m.d.comb += [rd.addr.eq(self.rd_addr), wr.addr.eq(self.wr_addr),
                     wr.data.eq(self.wr_data), wr.en.eq(self.wr_en)]  # fmt: skip
        # the bypass: this cycle's write hits the row being read; its data, for the next cycle
        hit = Signal()
        fwd = Signal(len(self.wr_data.as_value()))
        m.d.sync += hit.eq(self.wr_en & (self.wr_addr == self.rd_addr))
        with m.If(self.wr_en):
            m.d.sync += fwd.eq(self.wr_data)
        m.d.comb += self.rd_data.eq(Mux(hit, fwd, rd.data))
        if self.host:
            host = mem.read_port(domain="sync")
            m.d.comb += [host.addr.eq(self.host_addr), self.host_data.eq(host.data)]
        return m
