"""docs/semantics.md §8: the worked example, replayed through golden's integer neuron."""

from __future__ import annotations

import numpy as np
import torch

from converter.model import Layer, SnnModel, Synapse
from converter.quantize import fixed_base, threshold_table
from golden.engine import _encode_hidden, _Engine

Q, C_Q = 1.3, (1 + 1 / 1.3) / 2
WEIGHTS = np.array([[40, 25, -10, 90]], dtype=np.int8)
PHASES = torch.tensor([[0, 1, 1, 3]], dtype=torch.int16)  # one image, four source neurons


def example_model(T_w: int = 2, bias_q: int = 12) -> SnnModel:
    scale = np.array([0.01], dtype=np.float32)
    theta = np.array([1.5])
    tq = threshold_table(theta, C_Q, 4, T_w, 4, Q, Q, scale.astype(np.float64))
    ones = np.ones(4, np.float32)
    src = Layer("src", "neuron", (4,), T=4, Q=Q, lam=ones)
    syn = Synapse(1, "linear", WEIGHTS.astype(np.float32) * 0.01, WEIGHTS)
    lay = Layer(
        "n",
        "neuron",
        (1,),
        T=4,
        Q=Q,
        lam=np.ones(1, np.float32),
        synapses=(syn,),
        bias=np.array([0.12], np.float32),
        threshold=theta.astype(np.float32),
        shift=C_Q,
        T_w=T_w,
        scale=scale,
        bias_q=np.array([bias_q]),
        threshold_q=tq.astype(np.int64),
        sat_limit=2**31 - 1 - 165,
    )
    inp = Layer("input", "input", (4,), T=8, Q=2.0, lam=ones)
    out = Layer("output", "output", (1,), lam=np.ones(1, np.float32))
    return SnnModel((inp, src, lay, out), {}, 8, 32)


def int_phase(snn: SnnModel) -> int:
    eng = _Engine(snn, "int", torch.device("cpu"))
    spikes = [None, PHASES, None, None]
    phase, _ = eng._int_layer(snn.layers[2], snn.layers[1], spikes)
    return int(phase[0, 0])


def test_constants_of_the_example() -> None:
    assert fixed_base(Q) == 85197
    tq = example_model().layers[2].threshold_q
    assert tq.tolist() == [[224, 224, 224, 224]]


def test_worked_example_fires_at_phase_1() -> None:
    assert int_phase(example_model()) == 1


def test_worked_example_potential_trace() -> None:
    """Replays the table: U = 52, 83, 108, 230 (fires at t_o = 1 since T_w = 2)."""
    m, u, trace = 85197, 12, []
    for k, s in enumerate([40, 15, 0, 90]):
        if k:
            u = (u * m + 32768) >> 16
        u += s
        trace.append(u)
    assert trace == [52, 83, 108, 230]


def test_value_form_gives_the_same_phase_in_exact_mode() -> None:
    v = (12 + 40 + 15 / Q + 90 / Q**3) * 0.01 / 1.5
    lay = example_model().layers[2]
    assert int(_encode_hidden(torch.tensor([v]), lay)[0]) == 1


def test_a_lower_bias_delays_the_spike() -> None:
    # With B = 0: U(3) = 203 < 224, U(4) = 264 ≥ 224: fires at t_o = 2.
    assert int_phase(example_model(bias_q=0)) == 2
