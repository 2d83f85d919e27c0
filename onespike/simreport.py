"""`onespike simulate`: an artifact on the hwsim accelerator model, with a per-layer report."""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

#: Data set inferred from an artifact's input shape when --data is not given.
DATA_BY_SHAPE = {(1, 8, 8): "digits", (1, 28, 28): "mnist", (3, 32, 32): "cifar10"}


def load_arch(arch: Path | None, preset: str | None):
    """The ``ArchConfig`` of ``--arch FILE`` or ``--preset NAME`` (default: ``default``)."""
    from hwsim import ArchConfig

    if arch is not None:
        if not arch.is_file():
            raise FileNotFoundError(f"no such arch file: {arch}")
        try:
            return ArchConfig.from_toml(arch)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{arch}: not valid TOML: {exc}") from None
    return ArchConfig.preset(preset or "default")


def load_images(snn, spec: str | None, images: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``images`` test images of ``spec`` (inferred from the input shape if None),
    normalised for ``snn``; returns (x, y, spec)."""
    from onespike.data import load_dataset
    from onespike.flows import normalise_for

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"--images must be a positive int, got {images!r}")
    if spec is None:
        spec = DATA_BY_SHAPE.get(tuple(snn.input_shape))
        if spec is None:
            known = ", ".join(f"{'x'.join(map(str, k))} {v}" for k, v in DATA_BY_SHAPE.items())
            raise ValueError(
                f"cannot infer the data set from the input shape "
                f"{'x'.join(map(str, snn.input_shape))} (known: {known}); pass --data"
            )
    x, y = load_dataset(spec, "test")
    if tuple(x.shape[1:]) != tuple(snn.input_shape):
        raise ValueError(
            f"--data {spec} has images of shape {tuple(x.shape[1:])}, the artifact takes "
            f"{tuple(snn.input_shape)}"
        )
    x, y = x[:images], y[:images]
    return normalise_for(snn, x), y, spec


#: Graph data set by node count, for a graph network's artifact when --data is not given.
GRAPH_BY_NODES = {2708: "cora", 3327: "citeseer", 15362: "r8", 29426: "mr"}


def load_graph_for(snn, spec: str | None):
    """The graph (onespike.graphs.GraphData) a graph network runs on: ``spec`` (cora,
    citeseer, r8, mr) or the one its node count names; returns (graph, name)."""
    from onespike import graphs

    nodes = snn.meta["graph"]["nodes"]
    name = (spec or GRAPH_BY_NODES.get(nodes) or "").strip().lower()
    if not name:
        raise ValueError(f"a graph network of {nodes} nodes: pass --data cora|citeseer|r8|mr")
    if name not in GRAPH_BY_NODES.values():
        raise ValueError(f"--data {spec}: a graph network needs cora, citeseer, r8 or mr")
    data = graphs.load_graph(name)
    if data.num_nodes != nodes:
        raise ValueError(f"--data {name} has {data.num_nodes} nodes, the artifact's graph {nodes}")
    return data, name


def simulate_with_progress(snn, x: torch.Tensor, arch, *, mode: str, stalls, progress: bool):
    """``hwsim.simulate`` with a tqdm bar over the layers (on stderr)."""
    import hwsim

    if not progress:
        return hwsim.simulate(snn, x, arch, mode=mode, stalls=stalls)
    from tqdm import tqdm

    with tqdm(total=len(snn.layers), desc="simulate", unit="layer", file=sys.stderr) as bar:

        def step(i: int, name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        return hwsim.simulate(snn, x, arch, mode=mode, stalls=stalls, progress=step)


def run_simulate(args: argparse.Namespace) -> int:
    """The ``simulate`` subcommand: load, simulate, print the table, write the report."""
    import hwsim
    from converter import load
    from hwsim.report import format_layer_table, write_report

    arch = load_arch(args.arch, args.preset)
    if not args.artifact.is_file():
        raise FileNotFoundError(f"no such artifact: {args.artifact}")
    snn = load(args.artifact)
    hwsim.check_fits(snn, arch)  # fail before loading data
    graph = None
    if snn.meta.get("graph") is not None:  # one graph: its node features, scored on test nodes
        graph, spec = load_graph_for(snn, args.data)
        x, y = graph.features(), None
    else:
        x, y, spec = load_images(snn, args.data, args.images)
    stalls = None
    if args.stall_rate:
        stalls = hwsim.stall_pattern(args.stall_seed, args.stall_rate)
    t0 = time.perf_counter()
    res = simulate_with_progress(
        snn, x, arch, mode=args.mode, stalls=stalls, progress=not args.no_progress
    )
    seconds = time.perf_counter() - t0
    extra: dict[str, Any] = {
        "artifact": str(args.artifact),
        "data": spec,
        "stall_rate": args.stall_rate,
        "stall_seed": args.stall_seed if args.stall_rate else None,
        "simulation_seconds": seconds,
    }
    if graph is not None:
        extra["test_node_accuracy"] = graph.accuracy(torch.as_tensor(res.logits_int), "test")
    summ = write_report(res, snn, args.out, labels=None if y is None else y.numpy(), extra=extra)
    ann, pi = summ["ann_mac_array"], summ["per_image"]
    acc = f", accuracy {summ['accuracy']:.2f} %" if "accuracy" in summ else ""
    if graph is not None:
        acc = f", test-node accuracy {extra['test_node_accuracy']:.2f} % (one graph)"
    print(
        f"{args.artifact}: {res.images} images of {spec} on `{arch.name}` (P = {arch.lanes}, "
        f"{arch.clock_mhz:g} MHz), {args.mode} mode{acc}; per image:"
    )
    print(format_layer_table(summ["layers"]))
    print(
        f"\nper image: {pi['image_latency_us']:,.2f} µs (engines {pi['latency_us']:,.2f}), "
        f"{pi['energy_pj'] / 1e3:,.2f} nJ; ANN on a "
        f"{arch.lanes}-lane MAC array: {ann['latency_us']:,.2f} µs, "
        f"{ann['energy_pj'] / 1e3:,.2f} nJ; E_ANN/E_SNN = {_f(ann['e_ann_over_e_snn'])} "
        f"(Eq. 6: FP32 {_f(summ['eq6']['fp32']['ratio'])}, "
        f"INT8 {_f(summ['eq6']['int8']['ratio'])})"
    )
    if "ann_baselines" in summ:  # memories priced by CACTI: the int8 MAC arrays of §12
        b = summ["ann_baselines"]
        dense = b["dense"]
        print(
            "int8 output-stationary MAC array, same memories (CACTI): dense "
            f"{dense['energy_nj_per_image']:,.2f} nJ, {dense['latency_us_per_image']:,.2f} µs "
            f"(E_ANN/E_SNN = {_f(dense['e_ann_over_e_snn'])}); zero-skipping "
            f"{b['zero_skip']['energy_nj_per_image']:,.2f} nJ "
            f"(E_ANN/E_SNN = {_f(b['zero_skip']['e_ann_over_e_snn'])})"
        )
    print(
        f"stream: first image {summ['stream']['first_image_latency_us']:,.2f} µs, "
        f"{summ['stream']['images_per_s']:,.0f} images/s; simulated in {seconds:.2f} s"
    )
    print(f"report: {args.out / 'report.md'} (layers.csv, summary.json, *.png)")
    return 0


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"
