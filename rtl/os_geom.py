"""The output-stationary engine's geometry (docs/architecture.md §11): its synapse groups'
windows, the tiling, and the tile walk that gives each tile's receptive fields."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from archspec.fanout import ceil_div


@dataclass(frozen=True)
class OsGroup:
    """One synapse group as the engine reads it: its source (C_in, H, W), its window, and for
    a depthwise group (average pooling, shortcut: one weight per output channel, source
    channel c reaching output channel c + ``offset``) its offset. A linear group is a 1 × 1
    convolution of a 1 × 1 image."""

    src_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    depthwise: bool = False
    offset: int = 0

    @property
    def pixels(self) -> int:
        return self.src_shape[1] * self.src_shape[2]

    @property
    def sparse(self) -> bool:
        """A 1 × 1 window under a stride > 1 (a strided shortcut or projection): its
        receptive field is every s-th pixel of every s-th row, each pixel its own run (one
        index read each); every other window here is at least its stride (a rectangle)."""
        return self.kernel == (1, 1) and self.stride != (1, 1)


@dataclass(frozen=True)
class OsGeometry:
    """A layer's groups and tiling. Tiles of tc channels × th rows × tw columns run channel
    group by channel group, then row-major over the pixel blocks (``archspec.tiles.tile_map``)."""

    groups: tuple[OsGroup, ...]
    out_shape: tuple[int, int, int]
    tile: tuple[int, int, int]  # (tc, th, tw)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(channel groups, pixel-block rows, pixel-block columns)."""
        (c, h, w), (tc, th, tw) = self.out_shape, self.tile
        return ceil_div(c, tc), ceil_div(h, th), ceil_div(w, tw)

    @property
    def tiles(self) -> int:
        g = self.grid
        return g[0] * g[1] * g[2]

    def fields(self, t: int) -> list[tuple[int, int, int, int]]:
        """Tile t's receptive field in each group: source rows y0..y1, columns x0..x1."""
        (_, ho, wo), (_, th, tw), (_, nby, nbx) = self.out_shape, self.tile, self.grid
        by, bx = divmod(t % (nby * nbx), nbx)
        oy0, ox0 = by * th, bx * tw
        oy1, ox1 = min(oy0 + th, ho) - 1, min(ox0 + tw, wo) - 1
        out = []
        for g in self.groups:
            (_, h, w), (kh, kw), (sy, sx), (py, px) = g.src_shape, g.kernel, g.stride, g.padding
            out.append((max(0, oy0 * sy - py), min(h - 1, oy1 * sy - py + kh - 1),
                        max(0, ox0 * sx - px), min(w - 1, ox1 * sx - px + kw - 1)))  # fmt: skip
        return out

    def active(self, t: int, i: int) -> bool:
        """Whether group i reaches tile t: a depthwise group only its channels
        [offset, offset + C_in); every other group every tile."""
        g = self.groups[i]
        if not g.depthwise:
            return True
        (c, _, _), tc, (_, nby, nbx) = self.out_shape, self.tile[0], self.grid
        lo = t // (nby * nbx) * tc
        return lo < g.offset + g.src_shape[0] and min(lo + tc, c) > g.offset

    def index_reads(self, t: int) -> int:
        """r of tile t: its receptive fields' runs of pixels within a source row (a
        rectangle's rows; a sparse group's pixels), summed over the groups it reaches."""
        total = 0
        for i, (g, (y0, y1, x0, x1)) in enumerate(zip(self.groups, self.fields(t), strict=True)):
            if not self.active(t, i):
                continue
            if g.sparse:
                (sy, sx) = g.stride
                total += ((y1 - y0) // sy + 1) * ((x1 - x0) // sx + 1)
            else:
                total += y1 - y0 + 1
        return total

    @property
    def max_reads(self) -> int:
        return max(map(self.index_reads, range(self.tiles)))


class TileWalk(wiring.Component):
    """The current tile of the walk and its receptive fields (combinational from three
    counters: channel group, pixel-block row and column).

    Ports
    -----
    restart, step : In(1)
        Go to tile 0; go to the next tile (in the next cycle).
    t, cg, oy0, ox0 : Out
        The tile, its channel group and its first output row and column.
    y0, y1, x0, x1 : Out, one per group (``y0_0``, ``y0_1``, ...)
        Its receptive field's source rows and columns in the group (inclusive).
    act_<g> : Out(1)
        Group g reaches the tile (:meth:`OsGeometry.active`).
    reads : Out
        r: the index reads of the groups that reach it (:meth:`OsGeometry.index_reads`).
    last : Out(1)
        It is the last tile.
    group_last : Out(1)
        It is the last tile of its channel group (the next one starts a group).
    """

    def __init__(self, g: OsGeometry) -> None:
        self.g = g
        (_, ho, wo), n = g.out_shape, g.tiles
        ports = {"restart": In(1), "step": In(1), "t": Out(range(n + 1)),
                 "cg": Out(range(n + 1)), "oy0": Out(range(ho + 1)), "ox0": Out(range(wo + 1)),
                 "reads": Out(range(g.max_reads + 2)), "last": Out(1),
                 "group_last": Out(1)}  # fmt: skip
        for i, grp in enumerate(g.groups):
            _, h, w = grp.src_shape
            ports.update({f"y0_{i}": Out(range(h + 1)), f"y1_{i}": Out(range(h + 1)),
                          f"x0_{i}": Out(range(w + 1)), f"x1_{i}": Out(range(w + 1)),
                          f"act_{i}": Out(1)})  # fmt: skip
        super().__init__(ports)

    def field(self, i: int):
        """(y0, y1, x0, x1) of group i."""
        return tuple(getattr(self, f"{n}_{i}") for n in ("y0", "y1", "x0", "x1"))

    def elaborate(self, platform) -> Module:
        m = Module()
        g = self.g
        (_, ho, wo), (_, th, tw), (_, nby, nbx) = g.out_shape, g.tile, g.grid
        by, bx = Signal(range(nby + 1)), Signal(range(nbx + 1))
        m.d.comb += [self.oy0.eq(by * th), self.ox0.eq(bx * tw),
                     self.last.eq(self.t == g.tiles - 1),
                     self.group_last.eq((by == nby - 1) & (bx == nbx - 1))]  # fmt: skip
        oy1 = Mux(by == nby - 1, ho - 1, by * th + th - 1)
        ox1 = Mux(bx == nbx - 1, wo - 1, bx * tw + tw - 1)
        reads = 0
        for i, grp in enumerate(g.groups):
            (_, h, w), (kh, kw), (sy, sx), (py, px) = (grp.src_shape, grp.kernel, grp.stride,
                                                       grp.padding)  # fmt: skip
            y0, y1, x0, x1 = self.field(i)
            lo_y, hi_y, lo_x, hi_x = (Signal(signed(16), name=f"{n}{i}") for n in
                                      ("lo_y", "hi_y", "lo_x", "hi_x"))  # fmt: skip
            m.d.comb += [lo_y.eq(self.oy0 * sy - py), hi_y.eq(oy1 * sy - py + kh - 1),
                         lo_x.eq(self.ox0 * sx - px), hi_x.eq(ox1 * sx - px + kw - 1),
                         y0.eq(Mux(lo_y < 0, 0, lo_y)), y1.eq(Mux(hi_y > h - 1, h - 1, hi_y)),
                         x0.eq(Mux(lo_x < 0, 0, lo_x)),
                         x1.eq(Mux(hi_x > w - 1, w - 1, hi_x))]  # fmt: skip
            act = getattr(self, f"act_{i}")
            if grp.depthwise:  # its channels [offset, offset + C_in) meet the tile's
                lo, c = self.cg * g.tile[0], g.out_shape[0]
                m.d.comb += act.eq((lo < grp.offset + grp.src_shape[0]) &
                                   (lo + g.tile[0] > grp.offset) & (grp.offset < c))  # fmt: skip
            else:
                m.d.comb += act.eq(1)
            n = (y1 - y0 + 1) if not grp.sparse else \
                ((y1 - y0) // sy + 1) * ((x1 - x0) // sx + 1)  # fmt: skip
            reads = reads + Mux(act, n, 0)
        m.d.comb += self.reads.eq(reads)
        with m.If(self.restart):
            m.d.sync += [self.t.eq(0), self.cg.eq(0), by.eq(0), bx.eq(0)]
        with m.Elif(self.step):
            m.d.sync += self.t.eq(self.t + 1)
            with m.If(bx != nbx - 1):
                m.d.sync += bx.eq(bx + 1)
            with m.Elif(by != nby - 1):
                m.d.sync += [bx.eq(0), by.eq(by + 1)]
            with m.Else():
                m.d.sync += [bx.eq(0), by.eq(0), self.cg.eq(self.cg + 1)]
        return m
