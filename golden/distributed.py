"""Sharded evaluation on a Dask cluster: ``golden.evaluate`` and the cluster helper.

``evaluate`` splits a dataset into contiguous shards of whole batches, runs ``golden.run`` on
each shard on a Dask worker and concatenates the shards in order: every sample is run exactly
once (no padding, no duplicates, unlike torch's ``DistributedSampler``), and every batch holds
the same images as in a serial ``golden.run`` with the same ``batch_size``, so predictions,
spikes and counts equal the serial run's (int mode: bit for bit, logits included).

Dask is imported only when a client or cluster is used: ``import golden`` does not need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from converter.model import SnnModel
from golden.engine import GoldenResult, run


@dataclass
class EvalResult(GoldenResult):
    """A :class:`GoldenResult` with the dataset's labels (if it had any) and the shard count.

    ``accuracy()`` without an argument scores against those labels.
    """

    labels: torch.Tensor | None = None
    shards: int = 1

    def accuracy(self, labels: torch.Tensor | None = None) -> float:
        if labels is None:
            if self.labels is None:
                raise ValueError("the dataset had no labels: pass them to accuracy(labels)")
            labels = self.labels
        return super().accuracy(labels)


# --------------------------------------------------------------------------- cluster
@contextlib.contextmanager
def open_client(
    workers: int | None = None, scheduler: str | None = None, *, timeout: float = 10.0
) -> Iterator[Any]:
    """A ``distributed.Client``: of a running cluster at ``scheduler`` (``tcp://host:8786``),
    or of a new ``LocalCluster`` of ``workers`` processes with one thread each (default: one
    per core), closed on exit.

    Raises
    ------
    ValueError
        For both or a bad ``workers``.
    OSError
        When the scheduler cannot be reached within ``timeout`` seconds.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise ImportError(f"Dask distributed is not installed ({exc})") from None
    if workers is not None and scheduler is not None:
        raise ValueError("give either --workers or --scheduler, not both")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = (os.cpu_count() or 1) if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--workers must be a positive int, got {workers!r}")
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ": local_worker_environ()}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def local_worker_environ() -> dict[str, Any]:
    """Dask's ``distributed.nanny.pre-spawn-environ`` for our local workers: Dask's own, with
    ``MALLOC_TRIM_THRESHOLD_`` unset (a None value, Dask's documented way to unset one).

    Dask sets it to 65536 to hand freed memory back to the OS early. Setting any of glibc's
    malloc thresholds turns off glibc's dynamic mmap threshold (mallopt(3)), so every buffer
    over 128 KiB is mapped and unmapped again, page faults included: golden's batches of 256
    ResNet-20 images ran 1.8x slower (measured: 6.0 s against 3.4 s for 256 images on one
    thread, in a plain process with and without the variable). The thread-count variables
    (one thread per worker) are kept. Workers of a cluster started elsewhere take the same
    setting from a Dask config file (README, "Scale-out").
    """
    import dask
    import distributed  # noqa: F401  (loads Dask's distributed config)

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    env["MALLOC_TRIM_THRESHOLD_"] = None
    return env


def gpu_workers(client) -> int:
    """How many workers of ``client``'s cluster declare ``resources={"GPU": n}``."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return sum(1 for w in info.values() if w.get("resources", {}).get("GPU", 0) > 0)


def shared_model(client, snn: SnnModel):
    """A future of ``snn`` on the cluster, computed from its pickle (so that Dask can compute
    it again if every worker holding it dies); the key is the pickle's hash."""
    blob = pickle.dumps(snn, protocol=pickle.HIGHEST_PROTOCOL)
    key = "onespike-model-" + hashlib.sha256(blob).hexdigest()[:24]
    return client.submit(pickle.loads, blob, key=key, pure=False)


# --------------------------------------------------------------------------- evaluate
def evaluate(
    snn: SnnModel,
    dataset,
    *,
    client=None,
    batch_size: int = 256,
    mode: str = "exact",
    device: str | None = None,
    keep_spikes: bool = False,
    batches_per_shard: int = 1,
) -> EvalResult:
    """Run ``snn`` on every sample of ``dataset`` in ``mode``, sharded over ``client``'s workers.

    Parameters
    ----------
    snn : SnnModel
    dataset : Tensor, (x, y) tuple, or a map-style dataset
        Inputs (N, *input shape) as for ``golden.run``; a tuple adds labels; a dataset
        (``len`` and ``ds[i]`` → ``x_i`` or ``(x_i, y_i)``, e.g. a ``torch.utils.data.Dataset``)
        is pickled to the workers, each of which reads only its own samples.
    client : distributed.Client, optional
        None: one ``golden.run`` in this process.
    batch_size : int
        Images per ``golden.run`` batch; shards are whole batches, so each batch holds the same
        images as a serial run's.
    mode, device, keep_spikes
        As for ``golden.run``. ``device`` None: a cluster with GPU workers (those started with
        ``--resources GPU=1``) runs every shard on a GPU worker (the task requests
        ``resources={"GPU": 1}``) on ``cuda``; otherwise on the CPU. ``"cuda"`` requires GPU
        workers.
    batches_per_shard : int
        Batches per task (default 1: the most parallel; more cuts the per-task overhead).

    Returns
    -------
    EvalResult
        Equal to ``golden.run`` on the whole dataset (``counts`` summed over the shards), plus
        ``labels`` (if the dataset had them) and ``shards``.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(batches_per_shard, int) or batches_per_shard < 1:
        raise ValueError(f"batches_per_shard must be a positive int, got {batches_per_shard!r}")
    x, y, ds = _split_dataset(dataset)
    n = len(ds) if ds is not None else int(x.shape[0])
    if n == 0:
        raise ValueError("the dataset is empty")
    if client is None:
        if ds is not None:
            x, y = _materialise(ds, 0, n)
        res = run(snn, x, mode, batch_size=batch_size, device=device, keep_spikes=keep_spikes)
        return _wrap(res, y, 1)

    gpus = gpu_workers(client)
    if device is not None and str(device).startswith("cuda") and gpus == 0:
        raise ValueError("device cuda: no worker of the cluster declares resources GPU")
    use_gpu = gpus > 0 and (device is None or str(device).startswith("cuda"))
    task_device = (device or "cuda") if use_gpu else (device or "cpu")
    extra = {"resources": {"GPU": 1}} if use_gpu else {}
    model = shared_model(client, snn)
    step = batch_size * batches_per_shard
    futures = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        data = (None, ds) if ds is not None else (x[start:stop].clone(), None)  # not a view
        lo, hi = (start, stop) if ds is not None else (0, stop - start)
        futures.append(
            client.submit(
                _run_shard,
                model,
                *data,
                lo,
                hi,
                mode,
                batch_size,
                task_device,
                keep_spikes,
                key=f"onespike-shard-{mode}-{start}-{stop}-{os.urandom(4).hex()}",
                pure=False,
                **extra,
            )
        )
    parts = client.gather(futures)
    res = merge([p[0] for p in parts])
    if ds is not None:
        ys = [p[1] for p in parts]
        y = None if any(v is None for v in ys) else torch.cat(ys)
    return _wrap(res, y, len(parts))


def _run_shard(snn, x, ds, lo, hi, mode, batch_size, device, keep_spikes):
    """One shard on a worker: ``x`` (already the shard) or ``ds[lo:hi]``; returns
    (GoldenResult, labels or None)."""
    y = None
    if ds is not None:
        x, y = _materialise(ds, lo, hi)
    res = run(snn, x, mode, batch_size=batch_size, device=device, keep_spikes=keep_spikes)
    return _to_cpu(res), y


def merge(parts: list[GoldenResult]) -> GoldenResult:
    """Concatenate the results of consecutive shards (same mode and network) into one."""
    first = parts[0]
    spikes = [
        None if s is None else torch.cat([p.spikes[i] for p in parts])
        for i, s in enumerate(first.spikes)
    ]
    c0 = first.counts
    counts: dict[str, Any] = {
        k: sum((np.asarray(p.counts[k]) for p in parts[1:]), np.asarray(c0[k]).copy())
        for k in ("spikes", "adds", "ann_macs", "ann_adds")
    }
    counts["neurons"] = c0["neurons"]
    counts["names"] = c0["names"]
    counts["kinds"] = c0["kinds"]
    counts["images"] = sum(p.counts["images"] for p in parts)
    li = None if first.logits_int is None else torch.cat([p.logits_int for p in parts])
    return GoldenResult(
        first.mode,
        torch.cat([p.logits for p in parts]),
        torch.cat([p.predictions for p in parts]),
        spikes,
        counts,
        li,
    )


def _wrap(res: GoldenResult, y, shards: int) -> EvalResult:
    y = None if y is None else torch.as_tensor(y).reshape(-1)
    return EvalResult(
        res.mode, res.logits, res.predictions, res.spikes, res.counts, res.logits_int, y, shards
    )


def _to_cpu(res: GoldenResult) -> GoldenResult:
    def cpu(t):
        return None if t is None else t.cpu()

    return GoldenResult(
        res.mode,
        cpu(res.logits),
        cpu(res.predictions),
        [cpu(s) for s in res.spikes],
        res.counts,
        cpu(res.logits_int),
    )


def _split_dataset(dataset) -> tuple[torch.Tensor | None, torch.Tensor | None, Any]:
    """(x, y, None) for tensors and tuples; (None, None, ds) for a map-style dataset."""
    if isinstance(dataset, torch.Tensor | np.ndarray):
        return torch.as_tensor(dataset), None, None
    if isinstance(dataset, tuple | list) and len(dataset) == 2:
        x, y = torch.as_tensor(dataset[0]), torch.as_tensor(dataset[1]).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        return x, y, None
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        return None, None, dataset
    raise TypeError(
        f"dataset must be a tensor, an (x, y) tuple or a map-style dataset, got "
        f"{type(dataset).__name__}"
    )


def _materialise(ds, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    items = [ds[i] for i in range(lo, hi)]
    if isinstance(items[0], tuple | list):
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.int64)
        return x, y
    return torch.stack([torch.as_tensor(it) for it in items]), None
