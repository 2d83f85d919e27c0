"""Train the reference MNIST CNN deterministically and save it as a safetensors checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from onespike.data import load_mnist  # noqa: E402
from onespike.models import MNIST_CHECKPOINT, MnistCNN, evaluate, fit_one_cycle  # noqa: E402

DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results" / "mnist_training.json"


def train(
    seed: int = 0, epochs: int = 3, batch_size: int = 128, max_lr: float = 3e-3
) -> tuple[MnistCNN, float, float]:
    """Train :class:`MnistCNN` on the 60,000 MNIST training images.

    Parameters
    ----------
    seed
        Seed of the weight initialisation, batch order and dropout.
    epochs
        Passes over the training set.
    batch_size
        Images per optimiser step.
    max_lr
        Peak learning rate of the one-cycle Adam schedule.

    Returns
    -------
    model, test_accuracy, seconds
        The trained model (eval mode), its accuracy on the 10,000 test images (fraction) and
        the wall-clock training time in seconds (excluding data loading and evaluation).
    """
    if epochs < 1 or batch_size < 1 or max_lr <= 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, max_lr > 0; got {epochs}, {batch_size}, {max_lr}"
        )
    x_tr, y_tr = load_mnist("train")
    x_te, y_te = load_mnist("test")
    torch.manual_seed(seed)
    model = MnistCNN()
    start = time.perf_counter()

    def report(epoch: int, loss: float) -> None:
        print(
            f"epoch {epoch + 1}/{epochs}: train loss {loss:.4f} "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )

    fit_one_cycle(
        model,
        x_tr,
        y_tr,
        epochs=epochs,
        batch_size=batch_size,
        max_lr=max_lr,
        seed=seed,
        on_epoch=report,
    )
    seconds = time.perf_counter() - start
    return model, evaluate(model, x_te, y_te), seconds


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: train, save the checkpoint, write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-lr", type=float, default=3e-3)
    parser.add_argument("--checkpoint", type=Path, default=MNIST_CHECKPOINT)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)

    # Other processes on the same cores slow CPU training several-fold; record the load.
    load_before = os.getloadavg()[0]
    model, acc, seconds = train(args.seed, args.epochs, args.batch_size, args.max_lr)
    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.checkpoint))
    size = args.checkpoint.stat().st_size
    result = {
        "model": "MnistCNN",
        "test_accuracy": round(acc, 6),
        "test_images": 10000,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_lr": args.max_lr,
        "optimizer": "Adam + OneCycleLR",
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "torch_version": torch.__version__,
        "checkpoint": str(args.checkpoint.relative_to(REPO_ROOT))
        if args.checkpoint.resolve().is_relative_to(REPO_ROOT)
        else str(args.checkpoint),
        "checkpoint_bytes": size,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"test accuracy {100 * acc:.2f} % after {args.epochs} epochs in {seconds:.1f} s")
    print(f"saved {args.checkpoint} ({size} bytes) and {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
