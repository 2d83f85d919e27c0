"""Reports of a simulation: the per-layer table, the Eq. 6 estimate beside the detailed
energy, the ANN on an equally sized MAC array, and the files of ``onespike simulate``
(``layers.csv``, ``summary.json``, ``report.md``, two PNG charts).

The ANN baseline (docs/architecture.md §9) runs the ANN each SNN layer replaces on a MAC array
of P lanes with the same energy table as the simulated accelerator, so that E_ANN / E_SNN
compares two machines of equal width priced alike.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from archspec.config import COSTED_ACTIONS, ArchConfig
from converter.model import SnnModel
from converter.ops import ann_ops
from golden.energy import ENERGY_TABLES
from hwsim.sim import CYCLE_KINDS, SimResult

#: Parts of the ANN baseline's energy, in report order.
ANN_PARTS = ("multiplies", "adds", "weight_reads", "activation_reads", "output_stage")
#: Horowitz's INT8 multiply (45 nm), for the baseline's sensitivity line (8-bit operands).
INT8_MULTIPLY_PJ = 0.2


# --------------------------------------------------------------------------- ANN baseline
def ann_mac_array(
    snn: SnnModel, arch: ArchConfig, *, multiply_pj: float | None = None
) -> dict[str, Any]:
    """The ANN that ``snn`` replaces, on a MAC array of ``arch.lanes`` lanes, per image.

    Per layer l, with M_l the MACs of its conv / linear groups, A_l the additions of its
    average-pooling and residual groups (``converter.ops.ann_ops``, as golden counts them),
    C_l = outputs × window the comparisons of a max-pooling layer and O_l its outputs:

    - cycles = ⌈(M_l + A_l + C_l) / P⌉ + ⌈O_l / P⌉: every lane busy every cycle (one MAC, add
      or compare each), then the output stage writes P outputs per cycle; no pipeline fill,
      no stalls — a lower bound for the ANN;
    - energy = M_l · (multiply + add + weight read + activation read)
      + A_l · (add + activation read) + C_l · (compare + activation read)
      + O_l · (initial-potential read + multiply + compare + activation write), outputs of
      max pooling only an activation write. An activation is 8 bits read from / written to an
      SRAM like the weights' (``weight_read_pj``); the partial sum stays in the lane's
      register (output stationary), so there is no potential traffic per MAC. The SNN's
      accelerator pays a 32-bit potential read and write per add instead; both machines read
      one weight per operation (no reuse modelled on either side).

    Parameters
    ----------
    snn : SnnModel
        The converted network (its layers give the ANN's shapes).
    arch : ArchConfig
        P and the energy table.
    multiply_pj : float, optional
        Energy of one multiply (default: the table's ``multiply_pj``; ``INT8_MULTIPLY_PJ`` for
        an array of 8-bit multipliers).

    Returns
    -------
    dict
        ``macs``, ``adds``, ``compares``, ``outputs``, ``cycles``, ``energy_pj`` and
        ``energy_by_part`` (one float64 array per entry of ``ANN_PARTS``): per image and layer.
    """
    e = arch.energy
    mul = e.multiply_pj if multiply_pj is None else float(multiply_pj)
    act = e.weight_read_pj
    p = arch.lanes
    nl = len(snn.layers)
    macs, adds, cmps, outs = (np.zeros(nl, np.int64) for _ in range(4))
    out_pj = np.zeros(nl)
    for i, lay in enumerate(snn.layers):
        if lay.kind == "input":
            continue
        outs[i] = lay.size // 2 if lay.rails else lay.size  # a rail pair is one ANN output
        if lay.kind == "maxpool":
            cmps[i] = lay.size * lay.kernel[0] * lay.kernel[1]
            out_pj[i] = lay.size * act
            continue
        for s in lay.synapses:
            m, a = ann_ops(s, snn.layers[s.source], lay)
            macs[i] += m
            adds[i] += a
        out_pj[i] = outs[i] * (e.bias_read_pj + mul + e.compare_pj + act)
    cycles = np.array(
        [
            math.ceil((m + a + c) / p) + math.ceil(o / p)
            for m, a, c, o in zip(macs, adds, cmps, outs, strict=True)
        ],
        np.int64,
    )
    parts = {
        "multiplies": macs * mul,
        "adds": (macs + adds) * e.add_pj + cmps * e.compare_pj,
        "weight_reads": macs * e.weight_read_pj,
        "activation_reads": (macs + adds + cmps) * act,
        "output_stage": out_pj,
    }
    return {
        "macs": macs,
        "adds": adds,
        "compares": cmps,
        "outputs": outs,
        "cycles": cycles,
        "energy_pj": sum(parts.values()),
        "energy_by_part": parts,
    }


def eq6(res: SimResult, snn: SnnModel) -> dict[str, dict[str, Any]]:
    """Eq. 6 (``golden.energy_ratio``) from the simulated adds, per image: FP32 and INT8.

    Returns, per precision, ``e_ann_pj`` = Σ MACs · E_MAC, ``e_snn_pj`` = Σ adds · E_ADD,
    ``ratio`` and the per-layer lists ``layer_e_ann_pj`` and ``layer_e_snn_pj``.
    """
    n = max(res.images, 1)
    macs = np.array(
        [sum(ann_ops(s, snn.layers[s.source], lay)[0] for s in lay.synapses) for lay in snn.layers],
        np.float64,
    )
    adds = res.counts["adds"] / n
    out = {}
    for prec, t in ENERGY_TABLES.items():
        e_ann, e_snn = macs * t.mac_pj, adds * t.add_pj
        out[prec] = {
            "mac_pj": t.mac_pj,
            "add_pj": t.add_pj,
            "e_ann_pj": float(e_ann.sum()),
            "e_snn_pj": float(e_snn.sum()),
            "ratio": float(e_ann.sum() / e_snn.sum()) if e_snn.sum() > 0 else None,
            "layer_e_ann_pj": e_ann.tolist(),
            "layer_e_snn_pj": e_snn.tolist(),
        }
    return out


# --------------------------------------------------------------------------- tables
def layer_rows(res: SimResult, snn: SnnModel) -> list[dict[str, Any]]:
    """``SimResult.rows()`` (per image) with the ANN baseline and Eq. 6 columns added."""
    rows = res.rows()
    ann = ann_mac_array(snn, res.arch)
    eq = eq6(res, snn)
    for i, row in enumerate(rows[:-1]):
        row["ann_macs"] = int(ann["macs"][i])
        row["ann_array_cycles"] = int(ann["cycles"][i])
        row["ann_array_energy_pj"] = float(ann["energy_pj"][i])
        e = float(row["energy_pj"])
        row["ann_over_snn_energy"] = row["ann_array_energy_pj"] / e if e > 0 else None
        for prec in ("fp32", "int8"):
            row[f"eq6_{prec}_ann_pj"] = eq[prec]["layer_e_ann_pj"][i]
            row[f"eq6_{prec}_snn_pj"] = eq[prec]["layer_e_snn_pj"][i]
    tot = rows[-1]
    for key in ("ann_macs", "ann_array_cycles", "ann_array_energy_pj"):
        tot[key] = sum(r[key] for r in rows[:-1])
    for prec in ("fp32", "int8"):
        tot[f"eq6_{prec}_ann_pj"] = eq[prec]["e_ann_pj"]
        tot[f"eq6_{prec}_snn_pj"] = eq[prec]["e_snn_pj"]
    e = float(tot["energy_pj"])
    tot["ann_over_snn_energy"] = tot["ann_array_energy_pj"] / e if e > 0 else None
    return [_plain(r) for r in rows]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars → Python numbers (for JSON and CSV)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        out[k] = v
    return out


def format_layer_table(rows: list[dict[str, Any]]) -> str:
    """The per-layer Markdown table of the terminal and ``report.md`` (per image)."""
    head = (
        "| layer | kind | busy | stalled | waiting | µs | adds | spikes out | lanes % "
        "| queue peak | E_SNN nJ | E_ANN nJ (MAC array) | E_ANN/E_SNN |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ratio = r.get("ann_over_snn_energy")
        util = "" if r["layer"] == "total" else f"{100 * r['lane_utilisation']:.0f}"
        lines.append(
            f"| {r['layer']} | {r['kind']} | {r['busy_cycles']:,.0f} | {r['stalled_cycles']:,.0f} "
            f"| {r['waiting_cycles']:,.0f} | {r['latency_us']:,.2f} | {r['adds']:,.0f} "
            f"| {r['spikes_out']:,.0f} | {util} | {r['queue_peak']} "
            f"| {r['energy_pj'] / 1e3:,.2f} | {r['ann_array_energy_pj'] / 1e3:,.2f} "
            f"| {'—' if ratio is None else format(ratio, '.2f')} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- summary
def event_buffer_summary(res, snn: SnnModel) -> dict[str, Any]:
    """The event buffer's banks: configured, the most live at once in any image of ``res``,
    and the worst case over any input (docs/architecture.md §2, ``hwsim.eventbuf``)."""
    from hwsim import eventbuf

    worst, _ = eventbuf.banks_needed(snn, res.arch, eventbuf.worst_case(snn), res.mode)
    live = res.event_buffer_banks
    return {
        "bank_kib": res.arch.event_buffer_kib,
        "banks": res.arch.event_buffer_banks,
        "banks_live_peak": int(live.max()) if live.size else 0,
        "banks_worst_case": int(worst[0]),
    }


def summary(
    res: SimResult,
    snn: SnnModel,
    *,
    labels: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything ``summary.json`` holds: per-image totals, stream timing, Eq. 6 and the ANN
    baseline, the configuration, and the per-layer rows."""
    n = max(res.images, 1)
    rows = layer_rows(res, snn)
    tot = rows[-1]
    ann = ann_mac_array(snn, res.arch)
    ann8 = ann_mac_array(snn, res.arch, multiply_pj=INT8_MULTIPLY_PJ)
    e_snn = float(tot["energy_pj"])
    cyc = {k: float(res.cycles[k].sum() / n) for k in CYCLE_KINDS}
    cyc["total"] = sum(cyc.values())  # the engines' cycles (every layer)
    # layer mode: the controller's cycles between the layers (docs/architecture.md §14)
    cyc["controller"] = float(res.controller_cycles)
    # output-stationary: the producers' counting sorts of their events (§11)
    cyc["bucketing"] = float(res.bucket_cycles.sum() / n) if res.bucket_cycles.size else 0.0
    cyc["image"] = cyc["total"] + cyc["controller"] + cyc["bucketing"]
    ann_cycles = int(ann["cycles"].sum())
    energy = res.energy_pj()
    out: dict[str, Any] = dict(extra or {})
    out.update(
        {
            "network": str(snn.meta.get("model") or snn.meta.get("name") or "SNN"),
            "mode": res.mode,
            "images": res.images,
            "arch": asdict(res.arch),
            "per_image": {
                "cycles": cyc,
                "latency_us": cyc["total"] / res.arch.clock_mhz,
                "image_latency_us": cyc["image"] / res.arch.clock_mhz,
                "energy_pj": e_snn,
                "energy_by_action_pj": {a: float(v.sum() / n) for a, v in energy.items()},
                "adds": float(tot["adds"]),
                "spikes_out": float(tot["spikes_out"]),
            },
            "stream": {
                "first_image_latency_us": res.first_image_latency_us(),
                "stream_time_us": res.stream_time_us(),
                "images_per_s": res.images_per_s(),
            },
            "eq6": {
                p: {k: v for k, v in d.items() if not k.startswith("layer_")}
                for p, d in eq6(res, snn).items()
            },
            "ann_mac_array": {
                "lanes": res.arch.lanes,
                "macs": int(ann["macs"].sum()),
                "cycles": ann_cycles,
                "latency_us": ann_cycles / res.arch.clock_mhz,
                "energy_pj": float(ann["energy_pj"].sum()),
                "energy_by_part_pj": {k: float(v.sum()) for k, v in ann["energy_by_part"].items()},
                "e_ann_over_e_snn": float(ann["energy_pj"].sum()) / e_snn if e_snn else None,
                "latency_snn_over_ann": cyc["total"] / ann_cycles if ann_cycles else None,
                "int8_multiply": {
                    "multiply_pj": INT8_MULTIPLY_PJ,
                    "energy_pj": float(ann8["energy_pj"].sum()),
                    "e_ann_over_e_snn": float(ann8["energy_pj"].sum()) / e_snn if e_snn else None,
                },
            },
            "event_buffer": event_buffer_summary(res, snn),
            "predictions": res.predictions.tolist(),
        }
    )
    out["energy_nj_per_image"] = e_snn / 1e3
    out["latency_us_per_image"] = cyc["total"] / res.arch.clock_mhz
    if res.arch.memory_model == "cacti":
        from hwsim.ann import ann_array
        from hwsim.energy import area_mm2, energy_by_block

        out["area_mm2"] = area_mm2(res.arch, snn)  # output-stationary: the sorts' memories
        out["energy_nj_per_image_by_block"] = {k: v / 1e3 for k, v in energy_by_block(res).items()}
        out["ann_baselines"] = {
            k: {
                "energy_nj_per_image": v["energy_pj"] / 1e3,
                "latency_us_per_image": v["latency_us"],
                "e_ann_over_e_snn": v["energy_pj"] / e_snn if e_snn else None,
                "energy_by_part_nj": {p: e / 1e3 for p, e in v["energy_by_part_pj"].items()},
            }
            for k, v in ann_array(snn, res.arch, res.spikes, res.images).items()
        }
    if labels is not None:
        lab = np.asarray(labels)[: res.images]
        out["accuracy"] = float(100.0 * (res.predictions == lab).mean()) if res.images else None
    out["layers"] = rows
    return out


# --------------------------------------------------------------------------- files
def write_report(
    res: SimResult,
    snn: SnnModel,
    out_dir: str | Path,
    *,
    labels: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``layers.csv``, ``summary.json``, ``report.md``, ``energy_per_layer.png`` and
    ``cycles_per_layer.png`` into ``out_dir``; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = summary(res, snn, labels=labels, extra=extra)
    rows = summ["layers"]
    with (out / "layers.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summ, indent=2))
    plot_energy(res, snn, out / "energy_per_layer.png")
    plot_cycles(res, snn, out / "cycles_per_layer.png")
    (out / "report.md").write_text(markdown(summ))
    return summ


def markdown(summ: dict[str, Any]) -> str:
    """``report.md`` from a :func:`summary`."""
    a, pi, st = summ["arch"], summ["per_image"], summ["stream"]
    ann, eq = summ["ann_mac_array"], summ["eq6"]
    acc = f", accuracy {summ['accuracy']:.2f} %" if summ.get("accuracy") is not None else ""
    data = f" of {summ['data']}" if summ.get("data") else ""
    sorted_ = pi["cycles"].get("bucketing", 0.0)  # output-stationary: the counting sorts (§11)
    sorts = f", + {sorted_:,.0f} cycles of the counting sorts" if sorted_ else ""
    lines = [
        f"# hwsim report: {summ['network']}",
        "",
        f"{summ['images']} images{data}{acc}; accelerator `{a['name']}`: P = {a['lanes']} "
        f"lanes, {a['clock_mhz']:g} MHz, output queue {a['output_queue_depth']} events; "
        f"mode `{summ['mode']}`. All figures per image unless said otherwise.",
        "",
        "## Summary",
        "",
        "| quantity | SNN accelerator | ANN on a P-lane MAC array |",
        "|---|---|---|",
        f"| cycles | {pi['cycles']['total']:,.0f} (busy {pi['cycles']['busy']:,.0f}, stalled "
        f"{pi['cycles']['stalled']:,.0f}, waiting {pi['cycles']['waiting']:,.0f}; "
        f"+ {pi['cycles']['controller']:,.0f} controller cycles between the layers{sorts}) "
        f"| {ann['cycles']:,} |",
        f"| latency µs | {pi['image_latency_us']:,.2f} (engines {pi['latency_us']:,.2f}) "
        f"| {ann['latency_us']:,.2f} |",
        f"| energy nJ | {pi['energy_pj'] / 1e3:,.2f} | {ann['energy_pj'] / 1e3:,.2f} |",
        f"| operations | {pi['adds']:,.0f} adds | {ann['macs']:,} MACs |",
        "",
        f"- **E_ANN / E_SNN, like for like** (same P, same energy table): "
        f"**{_f(ann['e_ann_over_e_snn'])}**; with 8-bit multipliers in the MAC array "
        f"({ann['int8_multiply']['multiply_pj']} pJ): "
        f"{_f(ann['int8_multiply']['e_ann_over_e_snn'])}.",
        f"- **Eq. 6 estimate** (MACs · E_MAC / adds · E_ADD, arithmetic only): FP32 "
        f"{_f(eq['fp32']['ratio'])} ({eq['fp32']['mac_pj']:.2f} / {eq['fp32']['add_pj']:.2f} pJ), "
        f"INT8 {_f(eq['int8']['ratio'])} ({eq['int8']['mac_pj']:.2f} / "
        f"{eq['int8']['add_pj']:.2f} pJ). The detailed energy above also pays memory and queue "
        "traffic, which Eq. 6 leaves out.",
        *(
            [
                "- **Same memories, priced by CACTI** (docs/architecture.md §12–§13; the MAC "
                "array above uses the flat table): the int8 output-stationary MAC array, dense "
                f"{summ['ann_baselines']['dense']['energy_nj_per_image']:,.2f} nJ "
                f"(E_ANN/E_SNN {_f(summ['ann_baselines']['dense']['e_ann_over_e_snn'])}), "
                "zero-skipping "
                f"{summ['ann_baselines']['zero_skip']['energy_nj_per_image']:,.2f} nJ "
                f"(E_ANN/E_SNN {_f(summ['ann_baselines']['zero_skip']['e_ann_over_e_snn'])}); "
                f"area {summ['area_mm2']['total']:.3f} mm² (SRAMs "
                f"{summ['area_mm2']['total_sram']:.3f} mm²)."
            ]
            if "ann_baselines" in summ
            else []
        ),
        f"- Stream of {summ['images']} images ({summ['mode']} mode): first prediction after "
        f"{st['first_image_latency_us']:,.2f} µs, all after {st['stream_time_us']:,.2f} µs, "
        f"{st['images_per_s']:,.0f} images/s in steady state.",
        "",
        "## Layers",
        "",
        format_layer_table(summ["layers"]),
        "",
        "![energy per layer](energy_per_layer.png)",
        "",
        "![cycles per layer](cycles_per_layer.png)",
        "",
        "## Energy by action (SNN accelerator, pJ per image)",
        "",
        "| action | pJ | share |",
        "|---|---|---|",
        *[
            f"| {k} | {v:,.0f} | {100 * v / pi['energy_pj']:.1f} % |"
            for k, v in pi["energy_by_action_pj"].items()
            if pi["energy_pj"] > 0
        ],
        "",
        "## How the ANN baseline is counted",
        "",
        "The ANN each layer replaces runs on a MAC array of the same P lanes, priced with the "
        "same energy table (docs/architecture.md §9): ⌈(MACs + adds + compares) / P⌉ cycles "
        "plus ⌈outputs / P⌉ for the output stage (every lane busy: a lower bound); per MAC a "
        "multiply, an add, an 8-bit weight read and an 8-bit activation read (the partial sum "
        "stays in the lane's register); per output an initial-potential read, a requantising "
        "multiply, a ReLU compare and an 8-bit activation write. The SNN accelerator pays per "
        "add a weight read and a 32-bit potential read and write instead, plus its scans and "
        "queues. Per part, pJ per image:",
        "",
        "| part | pJ |",
        "|---|---|",
        *[f"| {k} | {v:,.0f} |" for k, v in ann["energy_by_part_pj"].items()],
        "",
        "Files: `layers.csv` (per-layer rows, per image), `summary.json` (all of this).",
        "",
    ]
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


# --------------------------------------------------------------------------- charts
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_energy(res: SimResult, snn: SnnModel, path: str | Path) -> None:
    """Energy per layer and image, stacked by action; the ANN baseline as black marks."""
    n = max(res.images, 1)
    energy = res.energy_pj()
    cmap = _pyplot().get_cmap("tab20")
    series = [(a, energy[a] / n / 1e3, cmap(j)) for j, a in enumerate(COSTED_ACTIONS)]
    ann = ann_mac_array(snn, res.arch)["energy_pj"] / 1e3
    title = f"energy per layer, P = {res.arch.lanes}"
    _layer_chart(res, series, ann, "energy per image (nJ)", title, path, skip_empty=True)


def plot_cycles(res: SimResult, snn: SnnModel, path: str | Path) -> None:
    """Cycles per layer and image: busy / stalled / waiting; the ANN baseline as black marks."""
    n = max(res.images, 1)
    colours = ("tab:blue", "tab:red", "tab:gray")
    series = [(k, res.cycles[k] / n, c) for k, c in zip(CYCLE_KINDS, colours, strict=True)]
    ann = ann_mac_array(snn, res.arch)["cycles"]
    title = f"cycles per layer, P = {res.arch.lanes}, {res.arch.clock_mhz:g} MHz"
    _layer_chart(res, series, ann, "cycles per image", title, path)


def _layer_chart(res: SimResult, series, ann, ylabel: str, title: str, path, *,
                 skip_empty: bool = False) -> None:  # fmt: skip
    """Bars per layer (the input layer left out) stacked from ``series`` (label, per-layer
    values, colour; with ``skip_empty``, all-zero series are left out of the chart and its
    legend), the ANN baseline ``ann`` as black marks."""
    plt = _pyplot()
    idx = [i for i, k in enumerate(res.kinds) if k != "input"]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(idx) + 3.5), 4.2))
    x = np.arange(len(idx))
    bottom = np.zeros(len(idx))
    for label, values, colour in series:
        v = np.asarray(values)[idx]
        if skip_empty and not v.any():
            continue
        ax.bar(x, v, bottom=bottom, color=colour, label=label, width=0.8)
        bottom += v
    ax.scatter(x, np.asarray(ann)[idx], color="k", marker="_", s=200, zorder=3,
               label="ANN, MAC array")  # fmt: skip
    ax.set_xticks(x, [res.names[i] for i in idx], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
