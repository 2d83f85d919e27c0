"""The Pareto front of a sweep (energy, latency, area: all minimised), its chart and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OBJECTIVES = ("energy_pj", "latency_us", "area_mm2")


def pareto_front(rows: list[dict[str, Any]], keys: tuple[str, ...] = OBJECTIVES) -> list[bool]:
    """For each row, whether no other row is at least as good in every ``keys`` and better in
    one (rows with an error or a missing value are never on the front)."""
    vals = [
        None
        if r.get("status") != "ok" or any(r.get(k) is None for k in keys)
        else tuple(float(r[k]) for k in keys)
        for r in rows
    ]
    out = []
    for v in vals:
        if v is None:
            out.append(False)
            continue
        dominated = any(
            w is not None and w != v and all(a <= b for a, b in zip(w, v, strict=True))
            for w in vals
        )
        out.append(not dominated)
    return out


def plot_pareto(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Energy against latency per image, area as colour; the energy–latency front drawn."""
    from hwsim.report import _pyplot

    plt = _pyplot()
    ok = [r for r in rows if r.get("status") == "ok"]
    fig, ax = plt.subplots(figsize=(7, 5))
    if ok:
        lat = [r["latency_us"] for r in ok]
        en = [r["energy_pj"] / 1e6 for r in ok]
        sc = ax.scatter(lat, en, c=[r["area_mm2"] for r in ok], cmap="viridis", s=22)
        fig.colorbar(sc, ax=ax, label="area, mm² (estimate)")
        front = [r for r, f in zip(ok, pareto_front(ok, OBJECTIVES[:2]), strict=True) if f]
        front.sort(key=lambda r: r["latency_us"])
        ax.plot(
            [r["latency_us"] for r in front],
            [r["energy_pj"] / 1e6 for r in front],
            "r-",
            lw=1,
            label="energy–latency front",
        )
        ax.legend()
        ax.set_xscale("log")
    ax.set_xlabel("latency per image, µs")
    ax.set_ylabel("energy per image, µJ")
    ax.set_title(f"sweep: {len(ok)} points")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown(res, *, artifact: str, data: str, images: int) -> str:
    """``report.md``: what ran, the front of energy, latency and area, the failed points."""
    rows = res.rows
    ok = [r for r in rows if r["status"] == "ok"]
    front = [r for r, f in zip(ok, pareto_front(ok), strict=True) if f]
    front.sort(key=lambda r: r["latency_us"])
    axes = _varied(rows)
    lines = [
        f"# Sweep of {artifact}",
        "",
        f"{res.points} points ({len(ok)} simulated, {res.failed} failed), {images} image(s) of "
        f"{data} each; this run simulated {res.ran} and found {res.resumed} in the table. "
        f"Area is `hwsim.energy.area_mm2` (CACTI 45 nm SRAMs, output-stationary points with "
        "their counting sorts' memories sized for the network, plus a rough model of the "
        "queues and lane logic; not a synthesis).",
    ]
    if res.skipped:
        lines += ["", "Left out of the grid:", ""]
        lines += [f"- {n} combinations: {r}" for r, n in res.skipped.items()]
    lines += [
        "",
        f"## Pareto front of energy, latency and area ({len(front)} points)",
        "",
        "| point | " + " | ".join(axes) + " | µJ/image | µs/image | mm² | lanes used % "
        "| E_ANN/E_SNN (MAC array) | Eq. 6 FP32 | Eq. 6 INT8 |",
        "|" + "---|" * (len(axes) + 8),
    ]
    for r in front:
        lines.append(
            f"| {r['point']} | "
            + " | ".join(f"{r[a]:g}" if isinstance(r[a], float) else str(r[a]) for a in axes)
            + f" | {r['energy_pj'] / 1e6:.2f} | {r['latency_us']:,.1f} | {r['area_mm2']:.3f} "
            f"| {100 * r['lane_utilisation']:.0f} | {_f(r['ann_over_snn_energy'])} "
            f"| {_f(r['eq6_fp32'])} | {_f(r['eq6_int8'])} |"
        )
    failed = [r for r in rows if r["status"] == "error"]
    if failed:
        lines += ["", f"## Failed points ({len(failed)})", ""]
        lines += [f"- point {r['point']} ({r['config_hash']}): {r['error']}" for r in failed[:50]]
        if len(failed) > 50:
            lines.append(f"- ... and {len(failed) - 50} more (points.csv)")
    lines += ["", "All points: `points.csv`, `points.parquet`; chart: `pareto.png`.", ""]
    return "\n".join(lines)


def write_report(res, *, artifact: str, data: str, images: int) -> list[Path]:
    """Write ``report.md`` and ``pareto.png`` into ``res.out_dir``; return their paths."""
    out = Path(res.out_dir)
    md = out / "report.md"
    md.write_text(markdown(res, artifact=artifact, data=data, images=images))
    return [md, plot_pareto(res.rows, out / "pareto.png")]


def _varied(rows: list[dict[str, Any]]) -> list[str]:
    from onespike.sweep import ARCH_KEYS, ENERGY_KEYS

    keys = [*ARCH_KEYS, *(f"energy_{k}" for k in ENERGY_KEYS), "T_w"]
    return [k for k in keys if len({r[k] for r in rows}) > 1]


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"
