"""hwsim against golden int (DESIGN Section 4): spikes of every layer, predictions, output
potentials and addition counts on real images. Writes benchmarks/results/hwsim_agreement.*.

    .venv/bin/python benchmarks/hwsim_agreement.py --images 100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import golden
import hwsim
from converter import ConversionConfig, convert
from onespike import data, models

RESULTS = Path(__file__).resolve().parent / "results"


def networks(n: int):
    model, _ = models.train_digits_cnn(seed=0)
    xtr, _, xte, _ = data.load_digits(seed=0)
    yield "DigitsCNN, digits", model, xtr, xte[:n], ConversionConfig(calibration="percentile")
    xtr, _ = data.load_mnist("train")
    xte, _ = data.load_mnist("test")
    yield (
        "MnistCNN, MNIST",
        models.load_mnist_cnn(),
        xtr[:512],
        xte[:n],
        ConversionConfig(calibration="percentile"),
    )
    mean, std = data.CIFAR_MEAN, data.CIFAR_STD
    xtr, _ = data.load_cifar10_subset("train")
    xte, _ = data.load_cifar10_subset("test")
    cfg = ConversionConfig(calibration="percentile", input_mean=mean, input_std=std)
    yield (
        "ResNet-20, CIFAR-10",
        models.load_cifar_resnet(20),
        data.normalize(xtr[:512], mean, std),
        data.normalize(xte[:n], mean, std),
        cfg,
    )


def compare(snn, x) -> dict:
    g = golden.run(snn, x, "int", device="cpu")
    r = hwsim.simulate(snn, x, hwsim.ArchConfig())
    layers = [i for i, lay in enumerate(snn.layers) if lay.kind in ("neuron", "maxpool")]
    same = sum(int(np.array_equal(r.spikes[i], g.spikes[i].numpy())) for i in layers)
    neurons = sum(g.spikes[i].numel() for i in layers)
    differ = sum(int((r.spikes[i] != g.spikes[i].numpy()).sum()) for i in layers)
    return {
        "images": len(x),
        "spiking_layers": len(layers),
        "layers_identical": same,
        "neurons_compared": neurons,
        "neurons_differing": differ,
        "predictions_identical": bool(np.array_equal(r.predictions, g.predictions.numpy())),
        "output_potentials_identical": bool(np.array_equal(r.logits_int, g.logits_int.numpy())),
        "adds_equal": bool(np.array_equal(r.counts["adds"], g.counts["adds"])),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100)
    args = p.parse_args()
    rows = []
    for name, model, calib, x, cfg in networks(args.images):
        snn = convert(model, list(calib.split(256)), cfg, progress=False)
        rows.append({"network": name, **compare(snn, x)})
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hwsim_agreement.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "# hwsim against golden int",
        "",
        "Default architecture (P = 16); T = 16, Q = 1.3, INT8.",
        "",
        "| network | images | spiking layers identical | neurons differing "
        "| predictions | output potentials | adds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['images']} | {r['layers_identical']} / {r['spiking_layers']} "
            f"| {r['neurons_differing']} of {r['neurons_compared']:,} | "
            f"{'identical' if r['predictions_identical'] else 'DIFFER'} | "
            f"{'identical' if r['output_potentials_identical'] else 'DIFFER'} | "
            f"{'equal' if r['adds_equal'] else 'DIFFER'} |"
        )
    (RESULTS / "hwsim_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
