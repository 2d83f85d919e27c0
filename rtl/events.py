"""Packed words shared by the rtl blocks, the benches and the Verilog port map."""

# No `from __future__ import annotations` here: Amaranth's data.Struct builds its layout from
# the class annotations, which must be shape objects, not strings.

from amaranth.hdl import Cat, Const, Value, signed, unsigned
from amaranth.lib import data

#: Field widths of the 32-bit event word (docs/architecture.md §1, "Event format").
INDEX_BITS = 20
PHASE_BITS = 6


class SpikeEvent(data.Struct):
    """One spike on an event stream (32 bits, LSB first).

    Fields
    ------
    index : unsigned(20)
        Source neuron (input stream) or emitting neuron (output stream), flat C·H·W order.
    phase : unsigned(6)
        Phase of the spike (input: source phase k; output: t_o).
    sign : unsigned(1)
        1 for a −1 event (signed input layers: the weights are subtracted).
    group : unsigned(1)
        Synapse group (residual layers); 0 here.
    end : unsigned(1)
        End-of-layer marker: no more events follow. Not an event; it takes one of the four
        spare bits of docs/architecture.md.
    spare : unsigned(3)
        Zero.
    """

    index: unsigned(INDEX_BITS)
    phase: unsigned(PHASE_BITS)
    sign: unsigned(1)
    group: unsigned(1)
    end: unsigned(1)
    spare: unsigned(3)


def event_word(index, phase) -> Value:
    """A :class:`SpikeEvent` as one 32-bit value (index and phase zero-extended to their field
    widths, the other fields 0), for whole-vector assignments (see rtl/engine.py)."""
    index, phase = Value.cast(index), Value.cast(phase)
    fields = []
    for v, bits in ((index, INDEX_BITS), (phase, PHASE_BITS)):
        fields.append(v[:bits] if len(v) >= bits else Cat(v, Const(0, bits - len(v))))
    return Cat(*fields, Const(0, 32 - INDEX_BITS - PHASE_BITS))


def pot_word(acc_bits: int) -> data.StructLayout:
    """One lane of a potential-SRAM row: A-bit signed potential and the fired flag."""
    return data.StructLayout({"u": signed(acc_bits), "fired": unsigned(1)})


def pack_event(index: int, phase: int, *, sign: int = 0, end: int = 0) -> int:
    """The integer value of a :class:`SpikeEvent` (for memory images and benches)."""
    return index | (phase << INDEX_BITS) | (sign << 26) | (end << 28)


def unpack_event(word: int) -> tuple[int, int, int, int]:
    """(index, phase, sign, end) of a 32-bit event word."""
    mask = (1 << INDEX_BITS) - 1
    return word & mask, (word >> INDEX_BITS) & 63, (word >> 26) & 1, (word >> 28) & 1
