"""docs/semantics.md §8: the worked example, replayed through golden's integer neuron."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from converter.model import Layer, SnnModel, Synapse, with_layers
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


def int_reaches(k: int, theta: int) -> bool:
    """Whether golden int's potential U(k) of the example reaches ``theta``: the decision at
    step k (t_o = k − T_w) gets threshold ``theta``, every other decision one out of reach."""
    t_w = 0 if k < 2 else 2
    snn = example_model(T_w=t_w)
    tq = np.full((1, 4), 2**40, dtype=np.int64)
    tq[0, k - t_w] = theta
    lay = dataclasses.replace(snn.layers[2], threshold_q=tq)
    return int_phase(with_layers(snn, [*snn.layers[:2], lay, snn.layers[3]])) == k - t_w


def test_worked_example_potential_trace() -> None:
    """Replays the table: U = 52, 83, 108, 230, 299, 389 by hand (§3), and golden int's own
    potential at every step k equals it (it reaches U(k) and not U(k) + 1)."""
    m, u, hand = 85197, 12, []
    for k, s in enumerate([40, 15, 0, 90, 0, 0]):
        if k:
            u = (u * m + 32768) >> 16
        u += s
        hand.append(u)
    assert hand == [52, 83, 108, 230, 299, 389]
    for k, u in enumerate(hand):
        assert int_reaches(k, u) and not int_reaches(k, u + 1), (k, u)


def test_value_form_gives_the_same_phase_in_exact_mode() -> None:
    v = (12 + 40 + 15 / Q + 90 / Q**3) * 0.01 / 1.5
    lay = example_model().layers[2]
    assert int(_encode_hidden(torch.tensor([v]), lay)[0]) == 1


def test_a_lower_bias_delays_the_spike() -> None:
    # With B = 0: U(3) = 203 < 224, U(4) = 264 ≥ 224: fires at t_o = 2.
    assert int_phase(example_model(bias_q=0)) == 2


# ---------------------------------------------------------------------------------------------
# int mode against a plain, slow reading of docs/semantics.md §3–§5 (numpy int64, one layer at a
# time, fed with golden's own spikes of the source layers).
def reference_int_layer(snn: SnnModel, i: int, spikes: list) -> np.ndarray:
    import torch.nn.functional as F

    from converter.ops import synapse_forward

    lay = snn.layers[i]
    src = snn.source_of(lay)
    n = spikes[lay.synapses[0].source].shape[0]
    s_k = np.zeros((src.T, n, *lay.shape), dtype=np.int64)
    for syn in lay.synapses:
        sp = spikes[syn.source]
        w = torch.as_tensor(syn.weight_q.astype(np.float64))
        for k in range(src.T):
            mask = sp[:, k] if snn.layers[syn.source].kind == "input" else (sp == k)
            y = synapse_forward(mask.to(torch.float64), syn, w, lay)
            s_k[k] += np.rint(y.numpy()).astype(np.int64)
    del F
    m_in, m_out, lim = fixed_base(src.Q), fixed_base(lay.Q), lay.sat_limit
    u = np.broadcast_to(lay.bias_q, (n, *lay.shape)).astype(np.int64).copy()
    phase = np.full(u.shape, -1, dtype=np.int64)
    last = src.T - 1 if lay.kind == "output" else lay.T - 1 + lay.T_w
    chan = (slice(None), *([None] * (len(lay.shape) - 1)))
    for k in range(last + 1):
        if k > 0:
            m = m_in if k <= src.T - 1 else m_out
            u = np.clip((u * m + (1 << 15)) >> 16, -lim, lim)
        if k < src.T:
            u = u + s_k[k]
        if lay.kind == "neuron" and k >= lay.T_w:
            t_o = k - lay.T_w
            fire = (phase < 0) & (u >= lay.threshold_q[:, t_o][chan])
            phase[fire] = t_o
    return u if lay.kind == "output" else phase


def test_int_mode_equals_the_reference_reading_of_the_spec() -> None:
    import torch.nn as nn

    from converter import ConversionConfig, convert
    from golden import run

    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)
            self.c2, self.b2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(6 * 3 * 3, 5)

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            h = torch.relu(self.b2(self.c2(h)) + h)
            return self.fc(self.pool(h).flatten(1))

    net = Net().eval()
    for b in (net.b1, net.b2):
        b.running_var.uniform_(0.5, 2.0)
        b.weight.data.uniform_(-0.5, 1.5)
    x = torch.randn(12, 2, 6, 6)
    for t_w in (0, 3, 8, 12):
        snn = convert(net, x, ConversionConfig(T=8, Q=1.4, T_w=t_w, T_in=6), progress=False)
        res = run(snn, x, "int", device="cpu")
        for i, lay in enumerate(snn.layers):
            if lay.kind == "neuron":
                ref = reference_int_layer(snn, i, res.spikes)
                assert np.array_equal(ref, res.spikes[i].numpy()), (t_w, lay.name)
        ref_out = reference_int_layer(snn, len(snn.layers) - 1, res.spikes)
        assert np.array_equal(ref_out, res.logits_int.numpy()), t_w
