"""End-to-end flows behind the command line: evaluate an SNN against its ANN, the demo."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import golden
from converter import ConversionConfig, SnnModel, convert


# --------------------------------------------------------------------------- evaluation
def evaluate(
    snn: SnnModel,
    x: torch.Tensor,
    y: torch.Tensor,
    modes: list[str],
    *,
    ann: nn.Module | None = None,
    batch_size: int = 256,
    device: str | None = None,
    client=None,
) -> list[dict[str, Any]]:
    """Accuracy, spikes, additions and Eq. 6 energy ratios of ``snn`` in each mode.

    The first row is the ANN: the given ``ann`` module if any, else golden's ``ann`` mode
    (the folded network, equal to the ANN up to float rounding). With a Dask ``client``, each
    mode is sharded over its workers by whole batches (:func:`golden.evaluate`).
    """
    for m in modes:
        if m not in golden.MODES:
            raise ValueError(f"mode must be one of {golden.MODES} or all, got {m!r}")
    rows = []
    ann_acc = None
    if ann is not None:
        t = time.perf_counter()
        with torch.no_grad():
            preds = torch.cat([ann(xb).argmax(1) for xb in x.split(batch_size)])
        ann_acc = 100.0 * (preds == y).double().mean().item()
        rows.append(_row("ANN (PyTorch)", ann_acc, None, time.perf_counter() - t, len(x)))
    for mode in modes:
        t = time.perf_counter()
        if client is None:
            r = golden.run(snn, x, mode, batch_size=batch_size, device=device, keep_spikes=False)
        else:
            r = golden.evaluate(snn, (x, y), client=client, batch_size=batch_size, mode=mode,
                                device=device)  # fmt: skip
        dt = time.perf_counter() - t
        acc = r.accuracy(y)
        if ann_acc is None and mode == "ann":
            ann_acc = acc
        rows.append(_row(mode, acc, r if mode != "ann" else None, dt, len(x)))
    for row in rows:
        row["delta"] = None if ann_acc is None else row["accuracy"] - ann_acc
    return rows


def _row(mode: str, acc: float, r, seconds: float, n: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mode": mode,
        "accuracy": acc,
        "seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 else None,
    }
    if r is not None:
        row["spikes_per_neuron"] = r.spikes_per_neuron()
        row["adds_per_image"] = float(sum(r.counts["adds"])) / n
        row["macs_per_image"] = float(sum(r.counts["ann_macs"])) / n
        row["energy_ratio_fp32"] = golden.energy_ratio(r.counts, "fp32")
        row["energy_ratio_int8"] = golden.energy_ratio(r.counts, "int8")
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`evaluate` rows."""
    head = (
        "| mode | accuracy % | Δ vs ANN | spikes/neuron | adds/image | E_ANN/E_SNN FP32 "
        "| INT8 | images/s |"
    )
    lines = [head, "|" + "---|" * 8]

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['accuracy']:.2f} | {f(r.get('delta'), '+.2f')} | "
            f"{f(r.get('spikes_per_neuron'), '.3f')} | {f(r.get('adds_per_image'), ',.0f')} | "
            f"{f(r.get('energy_ratio_fp32'), '.2f')} | {f(r.get('energy_ratio_int8'), '.2f')} | "
            f"{f(r.get('images_per_s'), ',.0f')} |"
        )
    return "\n".join(lines)


def sweep_wait(
    snn: SnnModel, x, y, values: list[int], modes=("pipelined", "int"), batch_size: int = 256
) -> dict[str, list[float]]:
    """Accuracy against the wait timestep T_w (same weights, thresholds re-derived)."""
    from converter.requantize import with_wait

    out: dict[str, list[float]] = {m: [] for m in modes}
    for tw in values:
        s = with_wait(snn, tw)
        for m in modes:
            out[m].append(golden.run(s, x, m, batch_size=batch_size, keep_spikes=False).accuracy(y))
    return out


# --------------------------------------------------------------------------- user models
def load_user_model(spec: str, checkpoint: str | None) -> nn.Module:
    """``MODULE:FACTORY`` (a dotted module importable from the current folder, or a .py file),
    or an ``.onnx`` file, and an optional checkpoint.

    A .py file may import modules beside it (its folder goes first on ``sys.path`` while it
    loads). Checkpoints: ``.safetensors`` (a state dict), or a torch file read with
    ``weights_only=True`` (plain tensors and dicts only: nothing is unpickled) in the usual
    layouts: a bare state dict, or one under ``state_dict``, ``model_state_dict``, ``model``,
    ``net``, ... beside training metadata; keys may carry DataParallel's ``module.`` or
    torch.compile's ``_orig_mod.`` prefixes.

    Raises
    ------
    ValueError, FileNotFoundError, TypeError, ImportError
        One line naming the problem (bad spec, a factory that fails, a checkpoint that does not
        fit the model).
    """
    if spec.endswith(".onnx"):
        from onespike.onnx_import import load_onnx_model

        if checkpoint:
            raise ValueError("an .onnx model holds its weights: give 'none' as the checkpoint")
        return load_onnx_model(spec)
    if ":" not in spec:
        raise ValueError(
            f"model must be MODULE:FACTORY (e.g. mypkg.nets:resnet20 or nets.py:resnet20) or "
            f"an .onnx file, got {spec!r}"
        )
    mod_name, factory_name = spec.rsplit(":", 1)
    module = _import_user_module(mod_name)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"{mod_name} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:
        raise ValueError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    if checkpoint:
        _load_into(model, _read_state_dict(Path(checkpoint)), checkpoint)
    return model.eval()


def _import_user_module(mod_name: str):
    """Import a .py file (its folder first on sys.path) or a dotted module (the current folder
    first on sys.path, as ``python -m`` does and a console script does not)."""
    if mod_name.endswith(".py"):
        path = Path(mod_name).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no such model file: {mod_name}")
        folder, name = str(path.parent), path.stem
    else:
        folder, name = str(Path.cwd()), mod_name
    sys.path.insert(0, folder)
    try:
        if mod_name.endswith(".py"):
            sp = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(sp)
            sp.loader.exec_module(module)
            return module
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ImportError(f"cannot import {mod_name}: {exc}") from exc
    except SyntaxError as exc:
        raise ValueError(f"{mod_name}: syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise ValueError(f"importing {mod_name} raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(folder)


#: Where training scripts keep the state dict inside a checkpoint dict.
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "model_state",
               "state", "weights", "params", "ema")  # fmt: skip
#: Key prefixes added by wrappers: DataParallel / DistributedDataParallel, torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path} is not a readable .safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(
                f"{path} cannot be read with weights_only=True (not a torch file, or it needs "
                f"unpickling, which one-spike refuses for safety; save a state_dict or "
                f".safetensors): {type(exc).__name__}: {first}"
            ) from exc
    return _find_state_dict(state, path)


def _find_state_dict(state, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: itself, or under one of ``_STATE_KEYS``; keys
    stripped of wrapper prefixes."""
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k in _STATE_KEYS if isinstance(state.get(k), dict)]
        if not inner:
            raise ValueError(
                f"{path} holds a dict with keys {sorted(state)[:8]} and none of them is a state "
                f"dict (looked for {', '.join(_STATE_KEYS)})"
            )
        state = state[inner[0]]
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: '{inner[0]}' does not hold only tensors")
    out = {}
    for k, v in state.items():
        while k.startswith(_PREFIXES):  # wrappers nest: module._orig_mod.<key>
            k = next(k.removeprefix(p) for p in _PREFIXES if k.startswith(p))
        out[k] = v
    return out


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)``, its failures as one line."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        missing, extra = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict()
        if missing or extra:
            raise ValueError(
                f"checkpoint {where} does not fit the model: missing {sorted(missing)[:5]}"
                f"{' …' if len(missing) > 5 else ''}, unexpected {sorted(extra)[:5]}"
                f"{' …' if len(extra) > 5 else ''}"
            ) from exc
        sizes = [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in model.state_dict().items()
            if k in state and state[k].shape != v.shape
        ]
        raise ValueError(
            f"checkpoint {where} does not fit the model: shape mismatch "
            + "; ".join(sizes[:3] or [str(exc).splitlines()[0]])
        ) from exc


def normalise_for(snn_or_config, x: torch.Tensor) -> torch.Tensor:
    """Raw [0, 1] data → the model's input, with the conversion's input_mean/std if any."""
    cfg = snn_or_config.config if isinstance(snn_or_config, SnnModel) else None
    mean = cfg.get("input_mean") if cfg else snn_or_config.input_mean
    std = cfg.get("input_std") if cfg else snn_or_config.input_std
    if mean is None:
        return x
    from onespike.data import normalize

    return normalize(x, tuple(mean), tuple(std))


# --------------------------------------------------------------------------- demo
def demo(out_dir: Path, config: ConversionConfig | None = None, seed: int = 0) -> dict:
    """The built-in example: digits CNN trained here, converted, evaluated, reported."""
    from onespike.data import load_digits
    from onespike.models import train_digits_cnn

    out_dir.mkdir(parents=True, exist_ok=True)
    config = config or ConversionConfig()
    t0 = time.perf_counter()
    model, _ = train_digits_cnn(seed=seed)
    t_train = time.perf_counter() - t0
    x_tr, _, x_te, y_te = load_digits(seed=seed)
    snn = convert(model, list(x_tr.split(256)), config, name="DigitsCNN")
    path = snn.save(out_dir / "digits_snn.safetensors")
    rows = evaluate(snn, x_te, y_te, ["exact", "pipelined", "int"], ann=model)
    t_ws = list(range(0, config.T + 1, 2))
    sweep = sweep_wait(snn, x_te, y_te, t_ws)
    _plot_sweep(out_dir / "accuracy_vs_tw.png", t_ws, sweep, rows[0]["accuracy"], config)
    result = {
        "example": "scikit-learn digits (8x8), DigitsCNN trained in-process",
        "train_seconds": t_train,
        "test_images": len(x_te),
        "config": snn.config,
        "table": rows,
        "wait_sweep": {"T_w": t_ws, **sweep},
        "artifact": str(path),
        "layers": snn.summary().splitlines(),
    }
    result["hwsim"] = simulate_demo(snn, x_te[:10], y_te[:10], out_dir / "hwsim")
    result["rtl"] = rtl_demo(snn, x_te[:1], out_dir / "rtl")
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    (out_dir / "report.md").write_text(_demo_markdown(result))
    return result


def simulate_demo(snn: SnnModel, x: torch.Tensor, y: torch.Tensor, out_dir: Path) -> dict:
    """The cost on the reference accelerator (hwsim, default P = 16 preset): the report folder
    of ``onespike simulate`` for these images."""
    import hwsim
    from hwsim.report import write_report

    arch = hwsim.ArchConfig()
    res = hwsim.simulate(snn, x, arch)
    return write_report(res, snn, out_dir, labels=y.numpy())


def rtl_demo(snn: SnnModel, x: torch.Tensor, out_dir: Path) -> dict:
    """The hardware: Verilog of every layer's engine (default accelerator, P = 16) and a
    short co-simulation of ``x`` against golden int and hwsim (Icarus, or ``$SIM``)."""
    import os

    import hwsim
    from rtl.cosim import CosimError, cosim, format_reports
    from rtl.generate import generate_verilog

    arch = hwsim.ArchConfig()
    files = generate_verilog(snn, arch, out_dir / "verilog")
    sim = os.environ.get("SIM", "icarus")
    res: dict[str, Any] = {"verilog": [str(f) for f in files], "simulator": sim,
                           "images": int(x.shape[0])}  # fmt: skip
    t0 = time.perf_counter()
    try:
        reports = cosim(snn, x, arch, sim=sim, out_dir=out_dir / "cosim")
    except CosimError as exc:  # no simulator, or the bench could not run: a failed step
        res["ok"], res["error"] = False, str(exc)
        return res
    res["seconds"] = time.perf_counter() - t0
    res["ok"] = all(r.ok for r in reports)
    res["table"] = format_reports(reports, arch, sim)
    res["layers"] = [{"layer": r.index, "name": r.name, "ok": r.ok, "errors": r.errors[:3],
                      "rtl_cycles": sum(r.rtl_cycles), "hwsim_cycles": sum(r.hwsim_cycles)}
                     for r in reports]  # fmt: skip
    return res


def _demo_markdown(res: dict) -> str:
    tw = res["wait_sweep"]
    sweep = ["| T_w | " + " | ".join(map(str, tw["T_w"])) + " |", "|---|" + "---|" * len(tw["T_w"])]
    for m in ("pipelined", "int"):
        sweep.append(f"| {m} | " + " | ".join(f"{a:.2f}" for a in tw[m]) + " |")
    cfg = res["config"]
    return "\n".join(
        [
            "# one-spike demo report",
            "",
            f"{res['example']}; {res['test_images']} test images; T={cfg['T']}, "
            f"Q={cfg['Q_resolved']}, T_w={cfg['T_w_resolved']}, T_in={cfg['T_in']}, "
            f"weights {cfg['weight_bits']} bit.",
            "",
            format_table(res["table"]),
            "",
            "## Accuracy against the wait timestep T_w",
            "",
            *sweep,
            "",
            "![accuracy vs T_w](accuracy_vs_tw.png)",
            "",
            "## On the reference accelerator (hwsim, P = 16, 10 images)",
            "",
            _hwsim_line(res["hwsim"]),
            "",
            "Per layer: [hwsim/report.md](hwsim/report.md).",
            "",
            "## The hardware (Verilog, P = 16) and its co-simulation",
            "",
            *_rtl_lines(res["rtl"]),
            "",
            "## Layers",
            "",
            "```",
            *res["layers"],
            "```",
            "",
        ]
    )


def _rtl_lines(rtl: dict) -> list[str]:
    lines = [f"Verilog of {len(rtl['verilog'])} engines: `rtl/verilog/` (with `.hex` memory "
             "images, a JSON of ports per layer and the Verilator lint waivers)."]  # fmt: skip
    if "error" in rtl:
        return [*lines, "", f"Co-simulation FAILED: {rtl['error']}."]
    return [*lines, "", "```", rtl["table"], "```"]


def _hwsim_line(summ: dict) -> str:
    pi, ann = summ["per_image"], summ["ann_mac_array"]
    return (
        f"Per image: {pi['latency_us']:,.2f} µs, {pi['energy_pj'] / 1e3:,.2f} nJ; the ANN on a "
        f"MAC array of the same width: {ann['latency_us']:,.2f} µs, "
        f"{ann['energy_pj'] / 1e3:,.2f} nJ (E_ANN/E_SNN = {ann['e_ann_over_e_snn']:.2f}; Eq. 6: "
        f"FP32 {summ['eq6']['fp32']['ratio']:.2f}, INT8 {summ['eq6']['int8']['ratio']:.2f})."
    )


def _plot_sweep(path: Path, t_ws, sweep, ann_acc: float, config: ConversionConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for m, acc in sweep.items():
        ax.plot(t_ws, acc, marker="o", label=f"SNN {m}")
    ax.axhline(ann_acc, color="k", ls="--", lw=1, label="ANN")
    ax.set_xlabel("wait timestep T_w")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"T={config.T}, Q={config.q}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
