"""The layer engine's issue stage and address generator (docs/architecture.md §3)."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from archspec.fanout import ceil_div
from rtl.csr import CsrWalker
from rtl.events import INDEX_BITS, SpikeEvent


def _span(n: int):
    """An unsigned shape for values 0 … n − 1 (at least one bit)."""
    return range(max(n, 2))


class EventDecoder(wiring.Component):
    """The head event's synapse group, source pixel, valid kernel taps and sign (§1, §3).

    Combinational. The flat C·H·W source index is split by each group's constant source shape;
    a two-group layer's fields are those of the group the event's ``group`` bit selects.

    Parameters
    ----------
    groups : tuple of GroupImage
        The layer's synapse groups (one or two; rtl/engine.py).
    out_shape : (C_out, H_out, W_out)
        The layer.

    Ports
    -----
    head : In(SpikeEvent)
        The event at the head of the input queue (32 bits); a source of more than 2^20
        neurons carries the index's bits 20–22 in ``spare``.
    nonempty : In(1)
        Graph layers with a node without edges only: the CSR walker's answer for the head's
        node (it has an edge).
    group : Out(1)
        The event's synapse group (0 for a one-group layer).
    c, y, x : Out(range(max C_in)), Out(range(max H)), Out(range(max W))
        The source neuron (channel, row, column) in its group's source layer; the widths are
        the widest over the groups (a graph source: y is the node).
    mask : Out(max taps)
        Per kernel tap (ky-major, bit t = tap t): the tap hits an output neuron (§3).
    neg : Out(1)
        The event subtracts: its sign, inverted for a group reading a negated graph table.
    """

    def __init__(self, groups, out_shape) -> None:
        self.groups, self.out_shape = tuple(groups), tuple(out_shape)
        self.taps = max(g.taps for g in groups)
        ports = {
            "head": In(SpikeEvent),
            "group": Out(1),
            "c": Out(_span(max(g.src_shape[0] for g in groups))),
            "y": Out(_span(max(g.src_shape[1] for g in groups))),
            "x": Out(_span(max(g.src_shape[2] for g in groups))),
            "mask": Out(self.taps),
            "neg": Out(1),
        }
        if any(g.op == "graph" and g.empty_nodes for g in groups):
            ports["nonempty"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform) -> Module:
        m = Module()
        groups, head = self.groups, self.head
        two = len(groups) == 2
        head_g = head.group if two else Const(0, 1)
        index = head.index
        if any(np.prod(g.src_shape) > 2**INDEX_BITS for g in groups):
            index = Cat(head.index, head.spare)  # the index's high bits in the spare field
        fields = [self._decode(m, gi, g, index) for gi, g in enumerate(groups)]
        m.d.comb += self.group.eq(head_g)
        for port, v0, v1 in zip((self.c, self.y, self.x, self.mask), fields[0], fields[-1],
                                strict=True):  # fmt: skip
            m.d.comb += port.eq(Mux(head_g, v1, v0) if two else v0)
        # the event's sign: a graph group sharing the other's negated table subtracts
        negates = [g.negate for g in groups]
        neg = head.sign
        if any(negates):
            neg = head.sign ^ (Mux(head_g, int(negates[-1]), int(negates[0])) if two else 1)
        m.d.comb += self.neg.eq(neg)
        return m

    def _decode(self, m: Module, gi: int, g, index):
        """(c, y, x, tap mask) of ``index`` in group ``g``'s source (constant divisors)."""
        c_in, h_in, w_in = g.src_shape
        hw = h_in * w_in
        hc = Signal.like(self.c, name=f"head_c{gi}")
        hy = Signal.like(self.y, name=f"head_y{gi}")
        hx = Signal.like(self.x, name=f"head_x{gi}")
        rem = Signal(_span(hw), name=f"head_rem{gi}")
        m.d.comb += [rem.eq(index % hw), hc.eq(index // hw), hy.eq(rem // w_in),
                     hx.eq(rem % w_in)]  # fmt: skip
        geo = window_taps(hy, hx, g.src_shape, self.out_shape, g.kernel, g.stride, g.padding)
        bits = [Const(1, 1) if ok is True else ok for ok, _, _ in geo]
        c_out = self.out_shape[0]
        if g.op == "shortcut" and c_in + g.channel_offset > c_out:
            bits = [b & (hc + g.channel_offset < c_out) for b in bits]  # no such channel
        if g.op == "graph" and g.empty_nodes:  # a node without edges: no target
            bits = [self.nonempty]
        mask = Signal(self.taps, name=f"head_mask{gi}")
        m.d.comb += mask.eq(Cat(*bits))
        return hc, hy, hx, mask


class AddressGenerator(wiring.Component):
    """The fan-out walk of one event: per adder cycle a potential row and its weight word (§3).

    ``load`` latches the decoded head event (:class:`EventDecoder`): its group, source pixel,
    the taps still to do and its sign. Each ``step`` (an adder cycle) covers one channel block
    of the lowest tap still to do, ⌈C_out / P⌉ blocks per conv tap; a depthwise tap (avgpool,
    shortcut) and a graph edge are one block whose word has the target's lane only. A graph
    layer's events walk their node's CSR entries (:class:`rtl.csr.CsrWalker`, a submodule).

    Parameters
    ----------
    image : LayerImage
        The layer (its groups, shapes and CSR tables; rtl/engine.py).
    lanes : int
        P.
    weight_bits : int
        The lane width of the weight words (max(W, the image's weight bits)).

    Ports
    -----
    head : In(SpikeEvent)
        The input queue's head event.
    load : In(1)
        Pop the head into the event registers (the event's first issue cycle).
    step : In(1)
        An adder cycle: advance to the next channel block, tap or edge.
    head_fanout : Out(1)
        The head event reaches some target.
    fanout : Out(1)
        The latched event has taps left (it reaches some target).
    last : Out(1)
        This adder cycle is the event's last.
    row : Out(range(max(R, 2)))
        The target potential row of this adder cycle (row layout of §2).
    wgt_addr : Out(range(weight words))
        The weight word of this adder cycle.
    wgt_data : In(ArrayLayout(signed(weight_bits), P))
        That word, from the weight memory's registered read: in the next cycle.
    weights : Out(ArrayLayout(signed(weight_bits), P))
        The PE array's weights, in the cycle after the adder cycle (stage 2 of
        docs/architecture.md §10): the word, or for a one-target cycle the target's lane only
        (the other lanes add 0). The event registers still hold the event then: the next
        event is latched at the end of its first issue cycle, at the earliest that cycle.
    negate : Out(1)
        The latched event subtracts its weights (stages 1 and 2 alike).
    lanes : Out(range(P + 1))
        Lanes of this cycle that hold a synapse (the ``adds`` counter).
    """

    def __init__(self, image, lanes: int, weight_bits: int) -> None:
        self.image, self.p, self.wbits = image, lanes, weight_bits
        self.n_cb = ceil_div(image.out_shape[0], lanes)  # channel blocks per pixel
        self.rows = image.pixels * self.n_cb
        self.taps = max(g.taps for g in image.groups)
        word = data.ArrayLayout(signed(weight_bits), lanes)
        super().__init__(
            {
                "head": In(SpikeEvent),
                "load": In(1),
                "step": In(1),
                "head_fanout": Out(1),
                "fanout": Out(1),
                "last": Out(1),
                "row": Out(_span(self.rows)),
                "wgt_addr": Out(_span(len(image.weights))),
                "wgt_data": In(word),
                "weights": Out(word),
                "negate": Out(1),
                "lanes": Out(range(lanes + 1)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        img, groups = self.image, self.image.groups
        m.submodules.dec = dec = EventDecoder(groups, img.out_shape)
        m.d.comb += dec.head.eq(self.head)
        csr = None
        if img.csr is not None:  # the graph address generator (rtl/csr.py)
            m.submodules.csr = csr = CsrWalker(img.csr)
            # look up the head's node (its edge range, whether it has edges) while issuing it;
            # each adder cycle of a graph event is one edge
            m.d.comb += [csr.node.eq(dec.y), csr.load.eq(self.load), csr.step.eq(self.step)]
            if img.csr.tables == 2:
                tables = [g.table for g in groups if g.op == "graph"]
                m.d.comb += csr.table.eq(Mux(dec.group, tables[-1], tables[0]))
            if "nonempty" in dec.signature.members:
                m.d.comb += dec.nonempty.eq(csr.nonempty)
        # the event being added: group, source channel and pixel, taps still to do (each
        # group has its own source shape; the registers are as wide as the widest), sign and
        # the channel block of the tap
        ev_g = Signal()
        ev_c = Signal.like(dec.c)
        ev_y = Signal.like(dec.y)
        ev_x = Signal.like(dec.x)
        todo = Signal(self.taps)
        neg = Signal()
        cb = Signal(range(self.n_cb + 1))
        # the lowest tap still to do
        tap = Signal(_span(self.taps))
        for t in reversed(range(self.taps)):
            with m.If(todo[t]):
                m.d.comb += tap.eq(t)
        ev = (ev_c, ev_y, ev_x, tap, cb, csr)
        per_group = [self._target(m, gi, g, *ev) for gi, g in enumerate(groups)]

        def by_group(j: int):
            """Field j of the event's group."""
            v0, v1 = per_group[0][j], per_group[-1][j]
            return Mux(ev_g, v1, v0) if len(groups) == 2 else v0

        last_block = Signal()
        rest = todo & ~(1 << tap)  # the taps left after this one
        m.d.comb += [self.row.eq(by_group(0)), self.wgt_addr.eq(by_group(1)),
                     self.weights.eq(by_group(2)), self.lanes.eq(by_group(3)),
                     last_block.eq(by_group(4)), self.last.eq(last_block & (rest == 0)),
                     self.head_fanout.eq(dec.mask != 0), self.fanout.eq(todo != 0),
                     self.negate.eq(neg)]  # fmt: skip
        with m.If(self.load):
            m.d.sync += [ev_g.eq(dec.group), ev_c.eq(dec.c), ev_y.eq(dec.y), ev_x.eq(dec.x),
                         todo.eq(dec.mask), neg.eq(dec.neg), cb.eq(0)]  # fmt: skip
        with m.Elif(self.step):  # one channel block of one tap
            m.d.sync += cb.eq(cb + 1)
            with m.If(last_block):
                m.d.sync += [cb.eq(0), todo.eq(rest)]
        return m

    def _target(self, m: Module, gi: int, g, ev_c, ev_y, ev_x, tap, cb, csr):
        """Group ``g``'s (row, weight address, weight word, lanes that add, last block) of
        the current tap and channel block of the latched event."""
        p, wbits, n_cb = self.p, self.wbits, self.n_cb
        c_out, _, w_out = self.image.out_shape
        geo = window_taps(ev_y, ev_x, g.src_shape, self.image.out_shape, g.kernel, g.stride,
                          g.padding)  # fmt: skip
        oy = Array(t[1] for t in geo)[tap] if len(geo) > 1 else geo[0][1]
        ox = Array(t[2] for t in geo)[tap] if len(geo) > 1 else geo[0][2]
        row_g = Signal.like(self.row, name=f"add_row{gi}")
        addr_g = Signal.like(self.wgt_addr, name=f"wgt_addr{gi}")
        word_g = Signal(p * wbits, name=f"wgt_word{gi}")
        if g.op == "graph":  # one target per CSR edge: (ev_c − offset, target node)
            f_g = Signal(_span(c_out), name=f"tgt_c{gi}")
            ev_cb = Signal(_span(n_cb), name=f"tgt_cb{gi}")
            ev_lane = Signal(_span(p), name=f"tgt_lane{gi}")
            m.d.comb += [f_g.eq(ev_c - g.channel_offset), ev_cb.eq(f_g // p),
                         ev_lane.eq(f_g % p), row_g.eq(csr.target * n_cb + ev_cb),
                         addr_g.eq(0)]  # fmt: skip
            # the edge's weight (sign-extended to the lanes) in the target's lane, 0 in the
            # others
            w_g = Signal(signed(wbits), name=f"edge_w{gi}")
            m.d.comb += w_g.eq(csr.weight)
            m.d.comb += word_g.eq(Cat(*(
                Mux(ev_lane == lane, w_g, 0)[:wbits] for lane in range(p)
            )))  # fmt: skip
            return row_g, addr_g, word_g, 1, csr.last
        if g.depthwise:  # one target: channel ev_c + offset, in its channel block
            chan_g = Signal(_span(c_out + g.src_shape[0] + g.channel_offset), name=f"tgt_c{gi}")
            ev_cb = Signal(_span(n_cb), name=f"tgt_cb{gi}")
            ev_lane = Signal(_span(p), name=f"tgt_lane{gi}")
            m.d.comb += [chan_g.eq(ev_c + g.channel_offset), ev_cb.eq(chan_g // p),
                         ev_lane.eq(chan_g % p),
                         row_g.eq((oy * w_out + ox) * n_cb + ev_cb),
                         addr_g.eq(g.base + ev_cb)]  # fmt: skip
            # only the target's lane adds (the others add 0: their potentials are unchanged);
            # one whole-word assignment
            raw = self.wgt_data.as_value()
            m.d.comb += word_g.eq(Cat(*(
                Mux(ev_lane == lane, raw[lane * wbits:(lane + 1) * wbits], 0)
                for lane in range(p)
            )))  # fmt: skip
            return row_g, addr_g, word_g, 1, Const(1, 1)
        # conv: weight words by (source channel, tap, cb); embedding (a one-hot (1, N, 1)
        # source): by (source node, cb)
        word_row = ev_y * g.src_shape[2] + ev_x if g.op == "embedding" else ev_c * g.taps + tap
        m.d.comb += [row_g.eq((oy * w_out + ox) * n_cb + cb),
                     addr_g.eq(g.base + word_row * n_cb + cb),
                     word_g.eq(self.wgt_data)]  # fmt: skip
        # the lanes of this channel block that hold a neuron
        lanes_g = Mux(cb == n_cb - 1, c_out - (n_cb - 1) * p, p)
        last_g = Const(1, 1) if n_cb == 1 else cb == n_cb - 1
        return row_g, addr_g, word_g, lanes_g, last_g


def window_taps(y, x, src_shape, out_shape, kernel, stride, padding) -> list:
    """Per kernel tap (ky-major): (valid, oy, ox) of source pixel (y, x), Values (§3).

    Conditions that are constant for the layer's shapes are folded here, so that the
    Verilog holds no constant comparisons (Verilator's UNSIGNED/CMPCONST lint)."""
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    _, h_in, w_in = src_shape
    _, h_out, w_out = out_shape
    taps = []
    for ky in range(kh):
        for kx in range(kw):
            ok_y, oy = _axis(y, py - ky, sy, h_in, h_out)
            ok_x, ox = _axis(x, px - kx, sx, w_in, w_out)
            taps.append((_and(ok_y, ok_x), oy, ox))
    return taps


def _axis(v, offset: int, stride: int, size_in: int, size_out: int):
    """One axis of a tap: (valid, output coordinate) of input coordinate ``v`` (a Value in
    [0, size_in)) for n = v + offset: n ≥ 0, n divisible by the stride, n / stride < size_out.
    ``valid`` is True where that holds for every v."""
    terms = []
    if offset < 0:
        terms.append(v >= -offset)  # the tap is above/left of the image border
        n = (v - (-offset)).as_unsigned()  # only used when v ≥ −offset
    else:
        n = v + offset
    if stride > 1:
        terms.append(n % stride == 0)  # strided: only every stride-th position has a tap
    if (size_in - 1 + offset) // stride >= size_out:
        terms.append(n // stride < size_out)  # beyond the bottom/right border
    out = n // stride if stride > 1 else n
    return _and(*terms), out


def _and(*terms):
    """Conjunction of Values, folding the constant True."""
    terms = [t for t in terms if t is not True]
    if not terms:
        return True
    out = terms[0]
    for t in terms[1:]:
        out = out & t
    return out
