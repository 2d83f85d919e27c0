"""The layer engine's potential SRAM: a registered read with write-to-read forwarding (§10)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import pot_word


class PotentialSram(wiring.Component):
    """R rows of P potential words (docs/architecture.md §2) as an SRAM macro reads them.

    One read port with a one-cycle registered read, one write port (docs/architecture.md §10,
    "Registered reads"). The macro reads the old contents of a row it writes in the same
    cycle (read-first), so the engine's read-modify-write pipeline needs one bypass: when
    the write of cycle t hits the row read in cycle t, the row comes out of a register
    holding that write's data instead of the macro in cycle t + 1. That is the only hazard:
    a row is written in the cycle after its read (stage 2), and a read of cycle t + 1 sees
    every write up to cycle t in the macro.

    Parameters
    ----------
    lanes : int
        P.
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
    rd_data : Out(ArrayLayout(pot_word(A), P))
        The row named by ``rd_addr`` in the previous cycle, with that cycle's write
        forwarded.
    wr_addr, wr_data, wr_en : In
        The write port: row ``wr_addr`` holds ``wr_data`` from the next cycle on.
    host_addr, host_data : In(range(max(R, 2))), Out(ArrayLayout(pot_word(A), P))
        ``host`` only: the host's read port (a second registered read, outside the engine's
        pipeline): ``host_data`` is the row ``host_addr`` named in the previous cycle. The
        host reads after the run, when nothing writes.
    """

    def __init__(self, lanes: int, acc_bits: int, rows: int, host: bool = False) -> None:
        self.rows, self.host = max(rows, 2), host
        self.row = data.ArrayLayout(pot_word(acc_bits), lanes)
        ports = {
            "rd_addr": In(range(self.rows)),
            "rd_data": Out(self.row),
            "wr_addr": In(range(self.rows)),
            "wr_data": In(self.row),
            "wr_en": In(1),
        }
        if host:
            ports.update(host_addr=In(range(self.rows)), host_data=Out(self.row))
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.row, depth=self.rows, init=[])
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
