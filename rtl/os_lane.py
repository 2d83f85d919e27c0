"""One lane of the output-stationary PE array (docs/architecture.md §11)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import pot_word
from rtl.neuron import NEURON_INPUTS, NEURON_OUTPUTS, NeuronUnit, neuron_ports


class OsLane(wiring.Component):
    """Lane i of the tile: the registers U, S and the fired flag of its neuron, the tap
    select of each synapse group, the adder and the neuron unit.

    The lane's neuron is channel slot ``slot`` of the tile's channel group (channel
    ``chan0`` + slot), at (``dy``, ``dx``) in its pixel block. An event of group g at source
    (y, x) reaches it through tap (ky, kx) = (ry_g − dy·s_y, rx_g − dx·s_x), where (ry_g,
    rx_g) = (y + p_y − oy0·s_y, x + p_x − ox0·s_x) is the event's offset from the tile in
    that group's window (shared by the lanes); it does if the tap is in the kernel and, for
    a depthwise group (average pooling, shortcut), the event's channel plus the group's
    offset is the lane's channel (``hit``). Its weight is element (ky·kw + kx)·tc + slot of
    the group's weight word (every tap of the tile's channels for the event's channel: the
    tap banks), or, depthwise, element ``slot`` (one weight per channel).

    ``load``: U ← ``bias``, S ← 0, fired ← 0. ``add``: S ← S ± w (a hit). ``boundary``:
    V = U + S (+ this cycle's add, a forward) goes through the neuron unit; with ``commit``
    U ← its result, S ← 0, the flag updated; without (the output queue is full) S keeps
    this cycle's add. A fired lane's adds go on into S, never used (docs/architecture.md §11).

    Parameters
    ----------
    acc_bits, weight_bits, sat_limit : int
        A (U and V; S has A + 1 bits), the weight width, L.
    groups : list of OsGroup
    tc : int
        Channels per tile.
    slot, dy, dx : int
        The lane's place in the tile.

    Ports
    -----
    word_<g> : In(ArrayLayout(signed(weight_bits), kh·kw·tc, or tc depthwise))
    ry_<g>, rx_<g> : In(signed(16)); group : In(1); c_in, chan0 : In
    load, add, negate, boundary, commit : In(1)
    bias, theta : In(signed(A)); valid, compare, leak, m : In
    hit : Out(1); v : Out(pot_word(A)); fire, compared, leaked : Out(1)
    """

    def __init__(self, acc_bits: int, weight_bits: int, sat_limit: int, groups, tc: int,
                 slot: int, dy: int, dx: int, channels: int) -> None:  # fmt: skip
        self.acc_bits, self.sat_limit, self.groups, self.tc = acc_bits, sat_limit, groups, tc
        self.slot, self.dy, self.dx = slot, dy, dx
        ports = {"group": In(1), "c_in": In(range(max(channels, 2))), "chan0": In(16),
                 "load": In(1), "add": In(1), "negate": In(1), "boundary": In(1),
                 "commit": In(1), "bias": In(signed(acc_bits)), "hit": Out(1),
                 "v": Out(pot_word(acc_bits)), **neuron_ports(acc_bits)}  # fmt: skip
        for i, g in enumerate(groups):
            elems = tc if g.depthwise else g.kernel[0] * g.kernel[1] * tc
            ports.update({f"word_{i}": In(data.ArrayLayout(signed(weight_bits), elems)),
                          f"ry_{i}": In(signed(16)), f"rx_{i}": In(signed(16))})  # fmt: skip
        super().__init__(ports)

    def _tap(self, m: Module, i: int, g):
        """(hit, weight) of group i for the event of this cycle."""
        (kh, kw), (sy, sx) = g.kernel, g.stride
        ky, kx = Signal(signed(16), name=f"ky{i}"), Signal(signed(16), name=f"kx{i}")
        m.d.comb += [ky.eq(getattr(self, f"ry_{i}") - self.dy * sy),
                     kx.eq(getattr(self, f"rx_{i}") - self.dx * sx)]  # fmt: skip
        hit = (ky >= 0) & (ky < kh) & (kx >= 0) & (kx < kw)
        word = getattr(self, f"word_{i}")
        # (an element selected by a Value is an unsigned bit slice: reinterpret it as signed)
        weight = Signal(word.shape().elem_shape, name=f"w{i}")
        if g.depthwise:
            hit = hit & (self.c_in + g.offset == self.chan0 + self.slot)
            m.d.comb += weight.eq(word[self.slot])
        else:
            tap = Signal(range(kh * kw * self.tc + 1), name=f"tap{i}")
            m.d.comb += [tap.eq((ky * kw + kx)[:16] * self.tc + self.slot),
                         weight.eq(word[tap])]  # fmt: skip
        return hit, weight

    def elaborate(self, platform) -> Module:
        m = Module()
        a = self.acc_bits
        m.submodules.nu = nu = NeuronUnit(a, self.sat_limit)
        taps = [self._tap(m, i, g) for i, g in enumerate(self.groups)]
        hit_g, weight = taps[0]
        if len(taps) == 2:
            hit_g = Mux(self.group, taps[1][0], taps[0][0])
            weight = Mux(self.group, taps[1][1], taps[0][1])
        m.d.comb += self.hit.eq(self.add & self.valid & hit_g)
        u, s, fired = Signal(signed(a)), Signal(signed(a + 1)), Signal()
        w = Signal(signed(a + 1))
        m.d.comb += w.eq(Mux(self.hit, Mux(self.negate, -weight, weight), 0))
        s_now = Signal(signed(a + 2))
        m.d.comb += s_now.eq(s + w)
        m.d.comb += [self.v.u.eq((u + s_now)[:a]), self.v.fired.eq(fired), nu.word_in.eq(self.v)]
        m.d.comb += [getattr(nu, n).eq(getattr(self, n)) for n in NEURON_INPUTS]
        m.d.comb += [getattr(self, n).eq(getattr(nu, n) & self.boundary) for n in NEURON_OUTPUTS]
        with m.If(self.load):
            m.d.sync += [u.eq(self.bias), s.eq(0), fired.eq(0)]
        with m.Elif(self.boundary & self.commit):
            m.d.sync += [u.eq(nu.word_out.u), fired.eq(nu.word_out.fired), s.eq(0)]
        with m.Elif(self.hit):
            m.d.sync += s.eq(s_now[: a + 1])
        return m
