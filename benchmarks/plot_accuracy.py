"""Plot accuracy against the wait timestep T_w from benchmarks/results/accuracy_<net>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def plot(net: str) -> Path:
    res = json.loads((RESULTS / f"accuracy_{net}.json").read_text())
    sw = res["wait_sweep"]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for mode in ("pipelined", "int"):
        if sw[mode]:
            ax.plot(sw["T_w"], sw[mode], marker="o", label=f"SNN {mode}")
    ax.axhline(res["ann_accuracy"], color="k", ls="--", lw=1, label="ANN")
    ax.set_xlabel("wait timestep T_w")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{net}: T = 16, Q = 1.3 ({res['images']} images)")
    ax.legend()
    fig.tight_layout()
    out = RESULTS / f"accuracy_vs_tw_{net}.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or ["resnet20"]:
        print(plot(name))
