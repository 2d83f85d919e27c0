"""One lane of the output-stationary PE array (docs/architecture.md §11)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.events import pot_word
from rtl.neuron import NEURON_INPUTS, NEURON_OUTPUTS, NeuronUnit, neuron_ports


class OsLane(wiring.Component):
    """Lane i of the tile: the registers U, S and the fired flag of its neuron, the tap
    select, the adder and the neuron unit.

    The lane's neuron is channel slot ``slot`` of the tile's channel group, at (``dy``,
    ``dx``) in its pixel block. An event at source (y, x) reaches it through tap (ky, kx) =
    (ry − dy·s_y, rx − dx·s_x), where (ry, rx) = (y + p_y − oy0·s_y, x + p_x − ox0·s_x) is
    the event's offset from the tile (shared by the lanes); it does if the tap is in the
    kernel (``hit``), and then its weight is element (ky·kw + kx)·tc + slot of the event's
    weight word (all taps of the tile's channels for the event's channel: the tap banks).

    ``load``: U ← ``bias``, S ← 0, fired ← 0. ``add``: S ← S ± w (a hit). ``boundary``:
    V = U + S (+ this cycle's add, a forward) goes through the neuron unit; with ``commit``
    U ← its result, S ← 0, the flag updated; without (the output queue is full) S keeps
    this cycle's add. A fired lane's adds go on into S, never used (docs/architecture.md §11).

    Parameters
    ----------
    acc_bits, weight_bits, sat_limit : int
        A (U and V; S has A + 1 bits), the weight width, L.
    kernel, stride : (int, int)
    tc : int
        Channels per tile (the weight word's slots per tap).
    slot, dy, dx : int
        The lane's place in the tile.

    Ports
    -----
    word : In(ArrayLayout(signed(weight_bits), kh·kw·tc))
    ry, rx : In(signed(16))
    load, add, negate, boundary, commit : In(1)
    bias, theta : In(signed(A)); valid, compare, leak, m : In
    hit : Out(1); v : Out(pot_word(A)); fire, compared, leaked : Out(1)
    """

    def __init__(self, acc_bits: int, weight_bits: int, sat_limit: int, kernel, stride,
                 tc: int, slot: int, dy: int, dx: int) -> None:  # fmt: skip
        self.acc_bits, self.sat_limit = acc_bits, sat_limit
        self.kernel, self.stride, self.tc = tuple(kernel), tuple(stride), tc
        self.slot, self.dy, self.dx = slot, dy, dx
        taps = self.kernel[0] * self.kernel[1]
        super().__init__({
            "word": In(data.ArrayLayout(signed(weight_bits), taps * tc)),
            "ry": In(signed(16)), "rx": In(signed(16)),
            "load": In(1), "add": In(1), "negate": In(1), "boundary": In(1), "commit": In(1),
            "bias": In(signed(acc_bits)), "hit": Out(1), "v": Out(pot_word(acc_bits)),
            **neuron_ports(acc_bits),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        a, (kh, kw), (sy, sx) = self.acc_bits, self.kernel, self.stride
        m.submodules.nu = nu = NeuronUnit(a, self.sat_limit)
        ky, kx = Signal(signed(16)), Signal(signed(16))
        m.d.comb += [ky.eq(self.ry - self.dy * sy), kx.eq(self.rx - self.dx * sx)]
        m.d.comb += self.hit.eq(self.add & self.valid & (ky >= 0) & (ky < kh) & (kx >= 0) &
                                (kx < kw))  # fmt: skip
        tap = Signal(range(kh * kw * self.tc + 1))
        m.d.comb += tap.eq((ky * kw + kx)[:16] * self.tc + self.slot)
        # (an element selected by a Value is an unsigned bit slice: reinterpret it as signed)
        weight = Signal(self.word.shape().elem_shape)
        m.d.comb += weight.eq(self.word[tap])
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
