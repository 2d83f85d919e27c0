"""Plot MAPE of single-spike coding against the base Q (paper Eq. 5, Fig. 6) and tabulate optima."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from converter.analysis import mape, mape_curve, optimal_q  # noqa: E402

PHASES = (16, 24)
MODES = {"round": True, "floor": False}
Q_LO, Q_HI, N_Q = 1.05, 2.0, 381
MU, SIGMA = 0.0, 1.0


def compute() -> dict:
    """Compute the MAPE curves and the optima.

    Returns
    -------
    dict
        JSON-ready results: the Q grid, one curve per (T, mode), and one summary row each.
    """
    qs = np.linspace(Q_LO, Q_HI, N_Q)
    curves: dict[str, list[float]] = {}
    rows = []
    for t in PHASES:
        for mode, shift in MODES.items():
            curve = mape_curve(qs, t, MU, SIGMA, threshold_shift=shift)
            q_opt = optimal_q(t, MU, SIGMA, threshold_shift=shift, q_range=(Q_LO, Q_HI))
            curves[f"T{t}_{mode}"] = curve.tolist()
            rows.append(
                {
                    "T": t,
                    "mode": mode,
                    "optimal_q": q_opt,
                    "mape_at_optimum": mape(q_opt, t, MU, SIGMA, threshold_shift=shift),
                    "mape_at_q2": mape(2.0, t, MU, SIGMA, threshold_shift=shift),
                    "grid_argmin_q": float(qs[int(np.argmin(curve))]),
                }
            )
    return {
        "distribution": {"kind": "normal truncated to (0, 1]", "mu": MU, "sigma": SIGMA},
        "q_grid": qs.tolist(),
        "curves": curves,
        "optima": rows,
    }


def write_markdown(res: dict, path: Path) -> None:
    """Write the summary table as Markdown."""
    lines = [
        "# MAPE of single-spike coding against Q (Eq. 5)",
        "",
        f"p(x): N(mu={MU}, sigma={SIGMA}) truncated to (0, 1]. Round = threshold shift "
        "c_Q = (1 + 1/Q)/2; floor = naive coding. Optimum over Q in "
        f"[{Q_LO}, {Q_HI}] (grid + golden-section refine).",
        "",
        "| T | mode | optimal Q | MAPE at optimum | MAPE at Q = 2 |",
        "|---:|:---|---:|---:|---:|",
    ]
    for r in res["optima"]:
        lines.append(
            f"| {r['T']} | {r['mode']} | {r['optimal_q']:.4f} | "
            f"{100 * r['mape_at_optimum']:.3f} % | {100 * r['mape_at_q2']:.3f} % |"
        )
    lines += ["", "Floor vs round at each one's optimum:", ""]
    by = {(r["T"], r["mode"]): r for r in res["optima"]}
    for t in PHASES:
        fl, rd = by[(t, "floor")], by[(t, "round")]
        lines.append(
            f"- T = {t}: floor {100 * fl['mape_at_optimum']:.3f} % vs round "
            f"{100 * rd['mape_at_optimum']:.3f} % "
            f"(round is {fl['mape_at_optimum'] / rd['mape_at_optimum']:.2f}x lower)"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(res: dict, path: Path) -> None:
    """Plot the curves (two per T) with each optimum marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = np.asarray(res["q_grid"])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = {16: "tab:blue", 24: "tab:red"}
    styles = {"round": "-", "floor": "--"}
    for r in res["optima"]:
        t, mode = r["T"], r["mode"]
        ax.plot(
            qs,
            100 * np.asarray(res["curves"][f"T{t}_{mode}"]),
            styles[mode],
            color=colours[t],
            label=f"T = {t}, {mode}",
        )
        ax.plot(r["optimal_q"], 100 * r["mape_at_optimum"], "o", color=colours[t], ms=6)
        ax.annotate(
            f"Q* = {r['optimal_q']:.3f}",
            (r["optimal_q"], 100 * r["mape_at_optimum"]),
            textcoords="offset points",
            xytext=(6, -14 if mode == "round" else 6),
            fontsize=8,
            color=colours[t],
        )
    ax.set_xlabel("base Q")
    ax.set_ylabel("MAPE (%)")
    ax.set_title(f"Single-spike coding error, p = N({MU:g}, {SIGMA:g}) truncated to (0, 1]")
    ax.set_xlim(Q_LO, Q_HI)
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Compute, then write ``mape.json``, ``mape.md`` and ``mape_vs_q.png``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    res = compute()
    (args.out / "mape.json").write_text(json.dumps(res, indent=1) + "\n")
    write_markdown(res, args.out / "mape.md")
    plot(res, args.out / "mape_vs_q.png")
    for r in res["optima"]:
        print(
            f"T={r['T']:2d} {r['mode']:5s} Q*={r['optimal_q']:.4f} "
            f"MAPE*={100 * r['mape_at_optimum']:.3f}% MAPE(Q=2)={100 * r['mape_at_q2']:.3f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
