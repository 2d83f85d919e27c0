"""`onespike sweep` and the cluster options of `onespike eval` (Dask distributed)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _add_cluster_options(p: argparse.ArgumentParser, default_help: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="K",
        help=f"a local Dask cluster of K worker processes ({default_help})",
    )
    g.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDR",
        help="use a running Dask cluster, e.g. tcp://host:8786 (`dask scheduler`)",
    )


def add_parsers(sub) -> None:
    """The ``sweep`` subcommand of ``onespike``."""
    from onespike.cli import DEFAULTS_HELP

    s = sub.add_parser(
        "sweep",
        help="design-space sweep of the hwsim accelerator on a Dask cluster",
        description="Simulate an artifact on every configuration of a grid (a TOML file of "
        "ArchConfig fields with lists of values, an optional [energy] table, T_w and "
        "[constraints]), one Dask task per point. Rows stream into DIR/points.csv and "
        "DIR/points.parquet; a restart with the same arguments skips the points already "
        "there; DIR/report.md and DIR/pareto.png show the Pareto front of energy, latency "
        "and area.",
    )
    s.add_argument("artifact", type=Path)
    s.add_argument("--grid", type=Path, required=True, help="the grid (.toml)")
    s.add_argument("--images", type=int, default=1, help="test images per point " + DEFAULTS_HELP)
    s.add_argument(
        "--data", default=None, help="digits | mnist | cifar10 | .npz (default: from the shape)"
    )
    _add_cluster_options(s, f"default: one per core, here {os.cpu_count()}")
    s.add_argument("--serial", action="store_true", help="no cluster: every point in this process")
    s.add_argument(
        "--retry-failed", action="store_true", help="run the points that failed before again"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("-o", "--out", type=Path, required=True, help="output folder")


def add_eval_options(e: argparse.ArgumentParser) -> None:
    """``--workers`` / ``--scheduler`` of ``onespike eval``."""
    _add_cluster_options(e, "default: no cluster, one process")


def run_sweep(args: argparse.Namespace) -> int:
    from golden.distributed import open_client
    from onespike.sweep import load_grid, run_sweep

    if args.serial and (args.workers is not None or args.scheduler):
        raise ValueError("--serial runs without a cluster: drop --workers / --scheduler")
    if isinstance(args.images, bool) or args.images < 1:
        raise ValueError(f"--images must be a positive int, got {args.images!r}")
    grid = load_grid(args.grid)  # a bad grid fails before a cluster starts
    if not args.artifact.is_file():
        raise FileNotFoundError(f"no such artifact: {args.artifact}")

    def go(client):
        return run_sweep(
            args.artifact,
            grid,
            args.out,
            images=args.images,
            data=args.data,
            client=client,
            progress=not args.no_progress,
            retry_failed=args.retry_failed,
            log=lambda s: print(s, file=sys.stderr),
        )

    if args.serial:
        res = go(None)
        where = "this process"
    else:
        with open_client(args.workers, args.scheduler) as client:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            where = f"{n} Dask workers" + (f" at {args.scheduler}" if args.scheduler else "")
            res = go(client)
    print(
        f"{args.artifact}: {res.points} points on {where}: {res.ran} simulated now, "
        f"{res.resumed} already in the table, {res.failed} failed; {res.seconds:.1f} s"
    )
    print(f"table: {', '.join(str(f) for f in res.files if f.suffix in ('.csv', '.parquet'))}")
    print(f"report: {res.out_dir / 'report.md'} (pareto.png)")
    return 0
