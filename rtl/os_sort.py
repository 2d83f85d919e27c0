"""The producer's side of an output-stationary event buffer: a counting sort in hardware
(docs/architecture.md §11, "Bucketing a producer's events").

An output-stationary layer decides its spikes tile by tile, and within a tile phase by phase,
so its events leave in (tile, phase) order; its consumers read them by (phase, source pixel)
(an index entry per (phase, pixel): its run of events). :class:`SortingBuckets` takes the
events in any order and buckets them with a counting sort over n = phases · pixels buckets,
whose counters and write pointers are kept k to a word (k = ``hwsim.sim.PREFIX_WIDTH``) and
whose index is k banks (bucket j in bank j mod k):

- **collect** (while the events arrive, one per cycle, no extra cycle): each event is written
  to a staging memory, and its (phase, pixel) counter is incremented (a read-modify-write of
  its word, the read transparent to the previous event's write);
- **prefix** (⌈n / k⌉ + 1 cycles): counter word w is read, cleared for the next image, and
  for its k buckets the runs [start, start + count) written to the index banks and the
  starts to the pointer word (a k-input prefix sum);
- **scatter** (E + 2 cycles for E events): event e is read from the staging memory, its
  bucket's write pointer read and incremented, and the event written where it pointed.

So the sort costs ``⌈n / k⌉ + E + 3`` cycles after the last event
(``hwsim.sim.bucket_cycles``), and the index and the event memory end up as a stream already
in (phase, pixel) order would have written them: the same runs, each run's events in arrival
order.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from archspec.fanout import ceil_div
from hwsim.sim import PREFIX_WIDTH
from rtl.events import SpikeEvent
from rtl.os_blocks import run_layout


class SortingBuckets(wiring.Component):
    """One synapse group's source events of one image, bucketed by phase and pixel with the
    index, from a stream in any order: a counting sort (module docstring). The index has two
    registered read ports (a and b: a row's run x0..x1 is [a.start, b.end), the one 32-bit
    index read of §11), the event memory one.

    While ``load`` is high the stream ``i`` is taken, one event per cycle; events of phases
    ≥ ``phases`` are dropped (the consumer never reads them). The end marker starts the sort
    and is acknowledged (``i.ready``) when it is over; ``sort_cycles`` then holds its length
    (``⌈n / k⌉ + E + 3``). ``error``: more than ``capacity`` events (the extra ones are
    dropped). ``error``, ``count`` and ``sort_cycles`` are cleared with ``load``. The event
    entry (``entry``) holds the channel ``c``, the column ``x`` and the ``sign``, and the
    ``phase`` where it has that field (a reader that streams the sorted events out in order,
    :class:`rtl.os_pool.SortedStream`, has no index run to tell it). After a
    reset, and after an image abandoned (``load`` low) before its prefix pass, the counters
    are cleared first (⌈n / k⌉ cycles, the stream held). ``sorted``: the sort is over (the
    end marker acknowledged) and its results stay readable until ``load`` falls;
    ``clearing``: the counters are being cleared (after a reset or an abandoned image).
    ``run_capacity``: the index entries
    are sized for this many events (the largest buffer's, so that every buffer's entries
    have one layout). ``width``: k, the buckets per counter word (a power of two).

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
    load : In(1); sorted, clearing : Out(1); error : Out(1); count : Out(range(capacity + 1))
    sort_cycles : Out(32)
    idx_a, idx_b : In(range(phases · pixels)); run_a, run_b : Out(run_layout)
    ev_addr : In(range(capacity)); ev : Out(event_entry)
    """

    def __init__(self, capacity: int, phases: int, src_shape: tuple[int, int, int],
                 entry: data.StructLayout, run_capacity: int | None = None,
                 width: int = PREFIX_WIDTH) -> None:  # fmt: skip
        if width < 1 or width & (width - 1):
            raise ValueError(f"width must be a power of two, got {width!r}")
        self.capacity, self.phases, self.src_shape = max(capacity, 1), max(phases, 1), src_shape
        self.entries = self.phases * src_shape[1] * src_shape[2]
        self.width, self.words = width, ceil_div(self.entries, width)
        self.entry = entry
        self.run = run_layout(max(run_capacity or 0, self.capacity))
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)), "load": In(1), "sorted": Out(1),
            "clearing": Out(1),
            "error": Out(1), "count": Out(range(self.capacity + 1)), "sort_cycles": Out(32),
            "idx_a": In(range(max(self.entries, 2))), "idx_b": In(range(max(self.entries, 2))),
            "run_a": Out(self.run), "run_b": Out(self.run),
            "ev_addr": In(range(max(self.capacity, 2))), "ev": Out(self.entry),
        })  # fmt: skip

    def elaborate(self, platform) -> Module:
        m = Module()
        cap, k, words = max(self.capacity, 2), self.width, max(self.words, 2)
        staged = data.StructLayout({"ev": self.entry, "key": range(max(self.entries, 2))})
        counts = data.ArrayLayout(range(cap + 1), k)  # k counters (or pointers) per word
        m.submodules.stage = stage = memory.Memory(shape=staged, depth=cap, init=[])
        m.submodules.cnt = cnt = memory.Memory(shape=counts, depth=words, init=[])
        m.submodules.ptr = ptr = memory.Memory(shape=counts, depth=words, init=[])
        m.submodules.evm = evm = memory.Memory(shape=self.entry, depth=cap, init=[])
        ports = {
            "stage_w": stage.write_port(), "stage_r": stage.read_port(domain="sync"),
            "cnt_w": cnt.write_port(), "ptr_w": ptr.write_port(), "ev_w": evm.write_port(),
        }  # fmt: skip
        ports["cnt_r"] = cnt.read_port(domain="sync", transparent_for=(ports["cnt_w"],))
        ports["ptr_r"] = ptr.read_port(domain="sync", transparent_for=(ports["ptr_w"],))
        ports["idx_w"] = self._index(m)
        ev_r = evm.read_port(domain="sync")
        m.d.comb += [ev_r.addr.eq(self.ev_addr), self.ev.eq(ev_r.data)]
        j = Signal(range(max(words, cap) + 3))  # the clear's and prefix's word, the event
        got, at = Signal(), Signal()  # the scatter's staging read, then pointer read, last cycle
        with m.FSM(init="CLEAR") as fsm:
            with m.State("CLEAR"):  # after a reset, or an image abandoned before its sort
                m.d.comb += self.clearing.eq(1)
                m.d.comb += [ports["cnt_w"].addr.eq(j), ports["cnt_w"].data.eq(0),
                             ports["cnt_w"].en.eq(1)]  # fmt: skip
                m.d.sync += j.eq(j + 1)
                with m.If(j == words - 1):
                    m.d.sync += j.eq(0)
                    m.next = "COLLECT"
            with m.State("COLLECT"):
                self._collect(m, ports, j)
                self._reset(m, "CLEAR", self.count != 0)
            with m.State("PREFIX"):
                self._prefix(m, ports, j)
                self._reset(m, "CLEAR")
            with m.State("SCATTER"):
                self._scatter(m, ports, j, (got, at))
                self._reset(m, "COLLECT")
            with m.State("DONE"):  # the end marker is acknowledged
                m.d.comb += [self.i.ready.eq(self.load), self.sorted.eq(1)]
                self._reset(m, "COLLECT")
        with m.If(fsm.ongoing("PREFIX") | fsm.ongoing("SCATTER")):
            m.d.sync += self.sort_cycles.eq(self.sort_cycles + 1)
        with m.If(~self.load):  # ready for the next image
            m.d.sync += [self.count.eq(0), self.error.eq(0), self.sort_cycles.eq(0),
                         got.eq(0), at.eq(0)]  # fmt: skip
            with m.If(~fsm.ongoing("CLEAR")):
                m.d.sync += j.eq(0)
        return m

    def _index(self, m: Module) -> list:
        """The index in k banks (bucket j: bank j mod k, word j // k), each with two
        registered read ports (a and b), the bank of each read remembered for its data.
        Returns the banks' write ports."""
        k, words = self.width, max(self.words, 2)
        writes, data_a, data_b = [], [], []
        for b in range(k):
            m.submodules[f"idx{b}"] = bank = memory.Memory(shape=self.run, depth=words, init=[])
            writes.append(bank.write_port())
            ra, rb = bank.read_port(domain="sync"), bank.read_port(domain="sync")
            m.d.comb += [ra.addr.eq(self._word(self.idx_a)), rb.addr.eq(self._word(self.idx_b))]
            data_a.append(ra.data)
            data_b.append(rb.data)
        lane_a, lane_b = Signal(range(k)), Signal(range(k))
        m.d.sync += [lane_a.eq(self._lane(self.idx_a)), lane_b.eq(self._lane(self.idx_b))]
        m.d.comb += [self.run_a.eq(Array(data_a)[lane_a]), self.run_b.eq(Array(data_b)[lane_b])]
        return writes

    def _word(self, key):
        """The counter word (and index-bank word) of bucket ``key``: key // k."""
        return key >> (self.width.bit_length() - 1)

    def _lane(self, key):
        """The place of bucket ``key`` in its word (its index bank): key mod k."""
        return key & (self.width - 1)

    def _reset(self, m: Module, to: str, when=1) -> None:
        """``load`` low: the next image (or a reset in the middle) starts in ``to``: CLEAR
        where some counters may hold counts (an image abandoned before its prefix pass has
        cleared them), else COLLECT."""
        with m.If(~self.load & when):
            m.next = to

    def _bump(self, m: Module, write, read, key: Signal) -> None:
        """Write back the word just read with bucket ``key``'s entry incremented."""
        m.d.comb += [write.addr.eq(self._word(key)), write.en.eq(1)]
        for b in range(self.width):
            m.d.comb += write.data[b].eq(read.data[b] + (self._lane(key) == b))

    def _collect(self, m: Module, p: dict, j: Signal) -> None:
        """Events into the staging memory, one per cycle; their counters incremented (the
        write lands in the next cycle)."""
        _, h, w = self.src_shape
        head = self.i.payload
        pix = Signal(range(h * w + 1))
        key = Signal.like(p["stage_w"].data.key)
        m.d.comb += [pix.eq(head.index % (h * w)), key.eq(head.phase * (h * w) + pix)]
        pend, pend_key = Signal(), Signal.like(key)  # the counter read last cycle
        m.d.sync += pend.eq(0)
        with m.If(pend):
            self._bump(m, p["cnt_w"], p["cnt_r"], pend_key)
        with m.If(self.load & self.i.valid & head.end):
            m.d.sync += j.eq(0)
            m.next = "PREFIX"
        with m.Elif(self.load & self.i.valid):
            m.d.comb += self.i.ready.eq(1)
            with m.If(head.phase < self.phases):
                with m.If(self.count < self.capacity):
                    m.d.comb += [p["stage_w"].addr.eq(self.count), p["stage_w"].en.eq(1),
                                 p["stage_w"].data.key.eq(key),
                                 p["stage_w"].data.ev.c.eq(head.index // (h * w)),
                                 p["stage_w"].data.ev.x.eq(pix % w),
                                 p["stage_w"].data.ev.sign.eq(head.sign),
                                 p["cnt_r"].addr.eq(self._word(key))]  # fmt: skip
                    if "phase" in self.entry.members:  # a reader that streams them out
                        m.d.comb += p["stage_w"].data.ev.phase.eq(head.phase)
                    m.d.sync += [self.count.eq(self.count + 1), pend.eq(1), pend_key.eq(key)]
                with m.Else():
                    m.d.sync += self.error.eq(1)

    def _prefix(self, m: Module, p: dict, j: Signal) -> None:
        """Counter word j read in cycle j; in cycle j + 1 cleared, and for each of its k
        buckets the run [start, start + count) written to its index bank and start to the
        pointer word (start: the counts of every bucket before it)."""
        start = Signal(range(self.capacity + 1))
        m.d.comb += p["cnt_r"].addr.eq(j)
        m.d.sync += j.eq(j + 1)
        with m.If(j == 0):
            m.d.sync += start.eq(0)
        with m.Else():
            m.d.comb += [p["cnt_w"].addr.eq(j - 1), p["cnt_w"].data.eq(0), p["cnt_w"].en.eq(1),
                         p["ptr_w"].addr.eq(j - 1), p["ptr_w"].en.eq(1)]  # fmt: skip
            s = start
            for b, idx_w in enumerate(p["idx_w"]):
                c = p["cnt_r"].data[b]
                m.d.comb += [idx_w.addr.eq(j - 1), idx_w.data.start.eq(s),
                             idx_w.data.end.eq(s + c), idx_w.en.eq(1),
                             p["ptr_w"].data[b].eq(s)]  # fmt: skip
                s = s + c
            m.d.sync += start.eq(s)
        with m.If(j == self.words):
            m.d.sync += j.eq(0)
            m.next = "SCATTER"

    def _scatter(self, m: Module, p: dict, j: Signal, stages: tuple[Signal, Signal]) -> None:
        """Event j's staging read in cycle j, its pointer read in j + 1, its write in j + 2
        (the pointer read is transparent to the previous event's pointer write)."""
        got, at = stages
        item = Signal.like(p["stage_r"].data)  # the event read from the staging memory
        m.d.comb += p["stage_r"].addr.eq(j)
        m.d.sync += [j.eq(j + 1), got.eq(j < self.count), at.eq(got), item.eq(p["stage_r"].data)]
        with m.If(got):
            m.d.comb += p["ptr_r"].addr.eq(self._word(p["stage_r"].data.key))
        with m.If(at):
            where = p["ptr_r"].data[self._lane(item.key)]
            m.d.comb += [p["ev_w"].addr.eq(where), p["ev_w"].data.eq(item.ev),
                         p["ev_w"].en.eq(1)]  # fmt: skip
            self._bump(m, p["ptr_w"], p["ptr_r"], item.key)
        with m.If(j == self.count + 1):
            m.next = "DONE"
