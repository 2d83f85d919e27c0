"""The graph address generator: walks a source node's CSR entries of Â (docs/architecture.md §2–§3).

A ``graph`` synapse group (aggregation Â·H over (features, nodes, 1) layers) sends the event of
source neuron (f + channel_offset, m) to (f, n) for every edge (n, m) of Â, with weight
Â[n, m]: one adder cycle per target. The layer engine (rtl/engine.py) holds Â as a CSR over the
source nodes in two memories, which this component reads:

- the **pointer memory**: per table, N + 1 row pointers (⌈log2(E + 1)⌉ bits each), node m's
  edges being entries ptr[m] … ptr[m + 1] − 1 of the edge memory;
- the **edge memory**: per edge its target node (⌈log2 N⌉ bits) and its 16-bit weight, sorted by
  source node, then target node.

That is ``hwsim.sim.graph_table_bits``'s count. A layer with two graph groups (a two-rail
source: +Â on channel offset 0, −Â on offset C) holds one table when the second group's Â is
the first's negated (it shares the table and its events subtract, :attr:`CsrImage.negate`),
otherwise two tables one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

#: Width of a graph weight (docs/semantics.md §5, ``GRAPH_WEIGHT_BITS``).
GRAPH_WEIGHT_BITS = 16


@dataclass(frozen=True)
class CsrImage:
    """The CSR tables of a layer's graph groups as the engine's memories hold them.

    Attributes
    ----------
    nodes : int
        N, the nodes of the source (and target) layer.
    ptr : int ndarray [tables, N + 1]
        Row pointers into the edge memory (absolute: table t's edges follow table t − 1's).
    target : int ndarray [E]
        Target node of each edge (all tables' edges, table by table).
    weight : int ndarray [E]
        16-bit integer weight of each edge.
    """

    nodes: int
    ptr: np.ndarray
    target: np.ndarray
    weight: np.ndarray

    @property
    def tables(self) -> int:
        return self.ptr.shape[0]

    @property
    def edges(self) -> int:
        return len(self.target)

    def empty_nodes(self, table: int) -> bool:
        """Whether some source node of ``table`` has no edge (its events reach no target)."""
        return bool((np.diff(self.ptr[table]) == 0).any())

    @staticmethod
    def from_synapses(syns, nodes: int) -> tuple[CsrImage, list[tuple[int, bool]]]:
        """The tables of the ``graph`` synapses ``syns`` and, per synapse, (table, negate): a
        synapse whose Â is an earlier one's negated shares that table and negates."""
        ptrs, targets, weights, tables, keys = [], [], [], [], []
        edges = 0
        for s in syns:
            idx = np.asarray(s.index, np.int64)
            w = np.asarray(s.weight_q, np.int64).reshape(-1)
            shared = next(
                (t for t, (i0, w0) in enumerate(keys)
                 if np.array_equal(i0, idx) and np.array_equal(w0, -w)),
                None,
            )  # fmt: skip
            if shared is not None:
                tables.append((shared, True))
                continue
            order = np.lexsort((idx[0], idx[1]))  # by source node, then target node
            deg = np.bincount(idx[1], minlength=nodes)
            ptr = np.zeros(nodes + 1, np.int64)
            np.cumsum(deg, out=ptr[1:])
            ptrs.append(ptr + edges)
            targets.append(idx[0][order])
            weights.append(w[order])
            edges += idx.shape[1]
            tables.append((len(keys), False))
            keys.append((idx, w))
        image = CsrImage(
            nodes,
            np.stack(ptrs),
            np.concatenate(targets) if targets else np.zeros(0, np.int64),
            np.concatenate(weights) if weights else np.zeros(0, np.int64),
        )
        return image, tables


class CsrWalker(wiring.Component):
    """The graph address generator: one edge of the current event per cycle.

    On ``load`` (the issue cycle of an event) it latches node ``node``'s edge range of table
    ``table`` from the pointer memory; each ``step`` (an adder cycle) moves to the next edge.
    ``last`` marks the node's last edge. ``nonempty`` tells, for the node at the input (the
    head event, before ``load``), whether it has any edge: an event of a node without edges
    costs its issue cycles only (docs/architecture.md §3).

    The edge memory's read is registered (an SRAM macro, docs/architecture.md §10): its
    address runs one edge ahead (the node's first edge in the ``load`` cycle, the next edge
    in a ``step`` cycle, the current one otherwise), so ``target`` is the current edge's in
    the adder cycle that addresses its potential row (stage 1), and ``weight``, registered
    once more, is the edge's in the cycle after it, when the PE array adds it (stage 2). The
    pointer memory stays asynchronous: hwsim's schedule addresses an event's first target in
    its issue cycle (§8), and with I = 1 the head's node is known only in that cycle.

    Parameters
    ----------
    image : CsrImage
        The tables (the memories' initial contents).

    Ports
    -----
    node : In(range(N))
        The head event's source node.
    table : In(1)
        The head event's table (0 for a single table).
    load, step : In(1)
        Latch the head's edge range; advance to the next edge.
    nonempty : Out(1)
        The head's node has at least one edge.
    target : Out(range(N))
        The current edge's target node (stage 1).
    weight : Out(signed(16))
        The weight of the edge that was current in the previous cycle (stage 2).
    last : Out(1)
        The current edge is the last of the latched node.
    """

    def __init__(self, image: CsrImage) -> None:
        if image.tables > 2:
            raise ValueError("a layer has at most two graph tables (one per synapse group)")
        self.image = image
        n = max(image.nodes, 2)
        super().__init__(
            {
                "node": In(range(n)),
                "table": In(1),
                "load": In(1),
                "step": In(1),
                "nonempty": Out(1),
                "target": Out(range(n)),
                "weight": Out(signed(GRAPH_WEIGHT_BITS)),
                "last": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        img = self.image
        rows = img.nodes + 1
        ptr_shape = unsigned(max(1, img.edges.bit_length()))
        edge = data.StructLayout(
            {"target": unsigned(max(1, (img.nodes - 1).bit_length())),
             "weight": signed(GRAPH_WEIGHT_BITS)}
        )  # fmt: skip
        # (memories of one word get two: a zero-width address is not legal Verilog)
        m.submodules.ptr = ptr = memory.Memory(
            shape=ptr_shape, depth=max(img.tables * rows, 2), init=img.ptr.reshape(-1).tolist()
        )
        init = [{"target": int(t), "weight": int(w)}
                for t, w in zip(img.target.tolist(), img.weight.tolist(), strict=True)]  # fmt: skip
        m.submodules.edges = edges = memory.Memory(shape=edge, depth=max(img.edges, 2), init=init)
        # the node's first and end pointers: two asynchronous read ports (a dual-read port,
        # or two banks of even and odd pointers, in an ASIC), read in the issue cycle
        lo_r, hi_r = ptr.read_port(domain="comb"), ptr.read_port(domain="comb")
        edge_r = edges.read_port(domain="sync")  # registered: addressed one edge ahead
        base = Signal(range(max(img.tables * rows, 2)))
        if img.tables == 2:  # table 1's pointers follow table 0's
            m.d.comb += base.eq(Mux(self.table, rows, 0) + self.node)
        else:
            m.d.comb += base.eq(self.node)
        m.d.comb += [lo_r.addr.eq(base), hi_r.addr.eq(base + 1)]
        m.d.comb += self.nonempty.eq(hi_r.data != lo_r.data)

        e = Signal(ptr_shape)  # the current edge
        e_end = Signal(ptr_shape)  # the node's end pointer
        with m.If(self.load):
            m.d.sync += [e.eq(lo_r.data), e_end.eq(hi_r.data)]
        with m.Elif(self.step):
            m.d.sync += e.eq(e + 1)
        weight = Signal(signed(GRAPH_WEIGHT_BITS))  # the edge's weight, for the adder's stage 2
        m.d.sync += weight.eq(edge_r.data.weight)
        m.d.comb += [
            edge_r.addr.eq(Mux(self.load, lo_r.data, Mux(self.step, e + 1, e))),
            self.target.eq(edge_r.data.target),
            self.weight.eq(weight),
            self.last.eq(e + 1 == e_end),
        ]
        return m
