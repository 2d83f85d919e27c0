"""The layer engine's row decoders of the boundary scan and the output layer's readout (§4)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from archspec.fanout import ceil_div
from rtl.events import PHASE_BITS, SpikeEvent, event_word, pot_word


class ScanRow(wiring.Component):
    """What a boundary-scan row (pixel, channel block) at phase k addresses (combinational).

    Its lanes that hold a neuron, the spike each lane would emit (neuron index in C·H·W
    order, t_o = k − T_w), and the threshold word Θq[·, t_o] of the row read for the next
    scan cycle (the threshold memory's read is registered; docs/architecture.md §2, §4, §10).

    Parameters
    ----------
    image : LayerImage
        The layer (rtl/engine.py).
    lanes : int
        P.

    Ports
    -----
    k : In(range(K + 2))
        The phase.
    cb, pix : In(range(CB + 1)), In(range(H_out · W_out + 1))
        The row's channel block and output pixel.
    lane_valid : Out(P)
        Lanes that hold a neuron (the last channel block may be partial).
    events : Out(ArrayLayout(SpikeEvent, P))
        Per lane the output event (index, t_o), 32 bits each.
    rd_k, rd_cb : In(range(K + 2)), In(range(CB + 1))
        Spiking layers only: the phase and channel block of the row read this cycle (the
        controller's ``rd_k``, ``rd_cb``).
    theta_addr : Out(range(thresholds))
        Spiking layers only: its threshold word (rd_k − T_w) · CB + rd_cb (used when
        k ≥ T_w).
    """

    def __init__(self, image, lanes: int) -> None:
        self.image, self.p = image, lanes
        self.n_cb = ceil_div(image.out_shape[0], lanes)
        ports = {
            "k": In(range(image.last_phase + 2)),
            "cb": In(range(self.n_cb + 1)),
            "pix": In(range(image.pixels + 1)),
            "lane_valid": Out(lanes),
            "events": Out(data.ArrayLayout(SpikeEvent, lanes)),
        }
        if not image.is_output:
            ports["rd_k"] = In(range(image.last_phase + 2))
            ports["rd_cb"] = In(range(self.n_cb + 1))
            ports["theta_addr"] = Out(range(max(len(image.theta), 2)))
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        img, p, cb = self.image, self.p, self.cb
        if not img.is_output:
            m.d.comb += self.theta_addr.eq((self.rd_k - img.t_w) * self.n_cb + self.rd_cb)
        t_o = Signal(PHASE_BITS)
        m.d.comb += t_o.eq(self.k - img.t_w)
        # whole-vector assignments: Icarus turns a net driven lane by lane (or field by field)
        # into a resolved multi-driver net and re-packs all its bits for every reader on every
        # change, which made a P = 16 engine ~30× slower
        valid, events = [], []
        for lane in range(p):
            chan = cb * p + lane
            valid.append(chan < img.out_shape[0])
            events.append(event_word(chan * img.pixels + self.pix, t_o))  # C·H·W order
        m.d.comb += [self.lane_valid.eq(Cat(*valid)), self.events.eq(Cat(*events))]
        return m


class ArgmaxReadout(wiring.Component):
    """The output layer's argmax over its potentials, one row of P per cycle (§4, §10).

    Ties go to the lowest neuron index: a chain over the row's lanes, starting from the best
    of the earlier rows (registered).

    Parameters
    ----------
    image : LayerImage
        The output layer (rtl/engine.py).
    lanes : int
        P.
    acc_bits : int
        A.

    Ports
    -----
    row : In(ArrayLayout(pot_word(A), P))
        The potential row being read.
    first : In(1)
        It is the readout's first row (the running maximum starts afresh).
    cb, pix : In(range(CB + 1)), In(range(H_out · W_out + 1))
        Its channel block and output pixel.
    en : In(1)
        Take the row into the running maximum.
    argmax : Out(range(max(N, 2)))
        The index of the maximum so far (registered; the class once the readout is over).
    """

    def __init__(self, image, lanes: int, acc_bits: int) -> None:
        self.image, self.p, self.acc_bits = image, lanes, acc_bits
        self.n_cb = ceil_div(image.out_shape[0], lanes)
        super().__init__(
            {
                "row": In(data.ArrayLayout(pot_word(acc_bits), lanes)),
                "first": In(1),
                "cb": In(range(self.n_cb + 1)),
                "pix": In(range(image.pixels + 1)),
                "en": In(1),
                "argmax": Out(range(max(image.n_out, 2))),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        img, a = self.image, self.acc_bits
        run_u, run_i = Signal(signed(a)), Signal.like(self.argmax)  # best so far
        cand_u, cand_i = Signal(signed(a)), Signal.like(run_i)
        m.d.comb += [cand_u.eq(Mux(self.first, -(2 ** (a - 1)), run_u)),
                     cand_i.eq(Mux(self.first, img.n_out - 1, run_i))]  # fmt: skip
        for lane in range(self.p):
            chan = self.cb * self.p + lane
            u, idx = self.row[lane].u, chan * img.pixels + self.pix
            wins = Signal(name=f"wins{lane}")
            m.d.comb += wins.eq(
                (chan < img.out_shape[0]) & ((u > cand_u) | ((u == cand_u) & (idx < cand_i)))
            )
            next_u = Signal(signed(a), name=f"cand_u{lane}")
            next_i = Signal.like(run_i, name=f"cand_i{lane}")
            m.d.comb += [next_u.eq(Mux(wins, u, cand_u)), next_i.eq(Mux(wins, idx, cand_i))]
            cand_u, cand_i = next_u, next_i
        with m.If(self.en):
            m.d.sync += [run_u.eq(cand_u), run_i.eq(cand_i), self.argmax.eq(cand_i)]
        return m
