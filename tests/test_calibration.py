"""Tests of converter.calibration: the closed-form one-spike code equals golden's, and the
SNN-side bias correction (ConversionConfig(calibration="bias")) removes the mean error that
percentile calibration leaves, in exact and int mode, without changing the artifact format."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import golden
from converter import ConversionConfig, convert
from converter.calibration import code
from converter.model import validate

pytestmark = pytest.mark.usefixtures("one_thread")


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class SmallResNet(nn.Module):
    """Stem, four residual blocks, global average pool, linear: 10 coded layers in depth."""

    def __init__(self, c: int = 8, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.blocks = nn.Sequential(*[Block(c) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = SmallResNet()
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    model = _net()
    gen = torch.Generator().manual_seed(1)
    calib = torch.rand(256, 3, 8, 8, generator=gen)
    test = torch.rand(256, 3, 8, 8, generator=gen)
    with torch.no_grad():
        want = model(test)
    cfg = dict(T=8, Q=1.5)  # a coarse code: large coding errors, so the test has a signal
    snns = {
        cal: convert(model, calib, ConversionConfig(calibration=cal, **cfg), progress=False)
        for cal in ("percentile", "bias", "weights", "weights_shortcut", "search")
    }
    return model, test, want, snns


def assert_int_equals_hwsim(snn, x) -> None:
    """golden int and the accelerator model (hwsim) give the same spikes in every layer and
    the same output potentials."""
    import numpy as np

    import hwsim

    g = golden.run(snn, x, "int", device="cpu")
    r = hwsim.simulate(snn, x)
    for i, lay in enumerate(snn.layers):
        if g.spikes[i] is not None:
            np.testing.assert_array_equal(r.spikes[i], g.spikes[i].numpy(), err_msg=lay.name)
    np.testing.assert_array_equal(r.logits_int, g.logits_int.numpy())


def test_code_equals_golden_exact_coding():
    from converter.model import Layer
    from golden.engine import _decode, _encode_hidden

    lay = Layer("h", "neuron", (1,), T=16, Q=1.3, shift=(1 + 1 / 1.3) / 2)
    v = torch.cat([torch.rand(5000) * 1.5, torch.tensor([0.0, 1.0, 0.8846, 1e-3])]).double()
    for t, q in ((16, 1.3), (8, 1.5), (5, 2.0)):
        lay = Layer("h", "neuron", (1,), T=t, Q=q, shift=(1 + 1 / q) / 2)
        want = _decode(_encode_hidden(v, lay), lay, torch.float64)
        assert torch.equal(code(v, t, q, lay.shift), want)


def test_calibration_mode_is_validated():
    with pytest.raises(ValueError, match="calibration must be one of"):
        ConversionConfig(calibration="magic")
    assert ConversionConfig().calibration == "auto"


def test_auto_calibration_is_weights_for_a_cnn(setup):
    """The default calibration refits a CNN (the best measured choice) and the artifact
    records the choice made, not "auto"."""
    model, _, _, snns = setup
    gen = torch.Generator().manual_seed(1)
    snn = convert(model, torch.rand(256, 3, 8, 8, generator=gen), ConversionConfig(T=8, Q=1.5),
                  progress=False)  # fmt: skip
    assert snn.config["calibration"] == "weights"
    for la, lw in zip(snn.layers, snns["weights"].layers, strict=True):
        for sa, sw in zip(la.synapses, lw.synapses, strict=True):
            assert (sa.weight == sw.weight).all()


def test_refitted_artifact_keeps_the_anns_own_weights(setup, tmp_path):
    """golden ann mode of a refitted artifact is the user's ANN (the refit is kept beside it),
    through save / load and a change of T_w; the percentile artifact stores no copy."""
    from converter.model import load
    from converter.requantize import with_wait

    model, test, want, snns = setup
    assert not any(
        s.ann_weight is not None for lay in snns["percentile"].layers for s in lay.synapses
    )
    assert all(lay.ann_bias is None for lay in snns["percentile"].layers)
    for cal in ("bias", "weights", "search"):
        snn = snns[cal]
        kept = [s for lay in snn.layers for s in lay.synapses if s.ann_weight is not None]
        assert (len(kept) > 0) == (cal != "bias"), cal
        assert any(lay.ann_bias is not None for lay in snn.layers), cal
        back = load(snn.save(tmp_path / f"{cal}.safetensors"))
        for variant in (snn, back, with_wait(back, 3)):
            got = golden.run(variant, test, "ann", keep_spikes=False).logits
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        # the SNN modes run the refit, not the copy
        ref = golden.run(snns["percentile"], test[:4], "exact", keep_spikes=False).logits
        assert not torch.equal(golden.run(back, test[:4], "exact").logits, ref)
        assert torch.equal(
            golden.run(back, test[:4], "int").logits_int,
            golden.run(snn, test[:4], "int").logits_int,
        )


def test_artifact_with_a_misshaped_ann_weight_is_refused(setup, tmp_path):
    import dataclasses

    from converter.model import ArtifactError, load, with_layers

    snn = setup[3]["weights"]
    i = next(
        i
        for i, lay in enumerate(snn.layers)
        if lay.synapses and lay.synapses[0].ann_weight is not None
    )
    lay = snn.layers[i]
    bad = dataclasses.replace(lay.synapses[0], ann_weight=lay.synapses[0].ann_weight[:1])
    bad_snn = with_layers(
        snn,
        [
            *snn.layers[:i],
            dataclasses.replace(lay, synapses=(bad, *lay.synapses[1:])),
            *snn.layers[i + 1 :],
        ],
    )
    with pytest.raises(ArtifactError, match="ann_weight must be a float array shaped as"):
        validate(bad_snn)
    path = bad_snn.save(tmp_path / "bad.safetensors")
    with pytest.raises(ArtifactError, match="ann_weight must be a float array shaped as"):
        load(path)


def test_weights_mode_refits_only_layers_its_data_determines():
    """With fewer calibration samples than twice a layer's unknowns, that layer gets the bias
    correction instead of a refit (the classifier here: 8 images, fan-in 8 + 1 unknowns)."""
    model = _net()
    gen = torch.Generator().manual_seed(3)
    snn = convert(model, torch.rand(8, 3, 8, 8, generator=gen),
                  ConversionConfig(T=8, Q=1.5, calibration="weights"), progress=False)  # fmt: skip
    out = snn.layers[-1]
    assert out.synapses[0].ann_weight is None  # not refitted
    assert out.ann_bias is not None  # bias-corrected
    assert any(s.ann_weight is not None for lay in snn.layers[:-1] for s in lay.synapses)


def test_bias_mode_changes_only_biases(setup):
    _, _, _, snns = setup
    p, b = snns["percentile"], snns["bias"]
    validate(b)
    assert b.config["calibration"] == "bias"
    changed = 0
    for lp, lb in zip(p.layers, b.layers, strict=True):
        assert (lp.kind, lp.T, lp.Q, lp.shift) == (lb.kind, lb.T, lb.Q, lb.shift)
        if lp.lam is not None:
            assert (lp.lam == lb.lam).all()
        if lp.threshold is not None:
            assert (lp.threshold == lb.threshold).all()
        for sp, sb in zip(lp.synapses, lb.synapses, strict=True):
            assert (sp.weight == sb.weight).all()
        if lp.bias is not None:
            changed += int(not (lp.bias == lb.bias).all())
    assert changed >= 8  # every coded layer and the output layer get a correction


@pytest.mark.parametrize("mode", ["exact", "int"])
def test_bias_mode_lowers_logit_error(setup, mode):
    """On held-out inputs, the corrected SNN's logits are closer to the ANN's: the mean
    error (bias) per class and the RMS error both drop below percentile calibration's."""
    _, test, want, snns = setup
    err = {}
    for cal, snn in snns.items():
        got = golden.run(snn, test, mode, keep_spikes=False).logits.double()
        e = got - want.double()
        err[cal] = (e.mean(0).abs().mean().item(), e.pow(2).mean().sqrt().item())
    assert err["bias"][0] < 0.5 * err["percentile"][0], err
    assert err["bias"][1] < err["percentile"][1], err
    # least-squares weights also cut the spread: lower RMS error than the bias correction
    assert err["weights"][0] < 0.5 * err["percentile"][0], err
    assert err["weights"][1] < err["bias"][1], err


def test_weights_mode_keeps_format_and_geometry(setup):
    """Weight calibration refits conv/linear weights and biases only; λ, thresholds and the
    residual shortcut weights stay, and the artifact validates and runs in int mode."""
    _, test, _, snns = setup
    p, w = snns["percentile"], snns["weights"]
    validate(w)
    refit = 0
    for lp, lw in zip(p.layers, w.layers, strict=True):
        if lp.threshold is not None:
            assert (lp.threshold == lw.threshold).all()
        for sp, sw in zip(lp.synapses, lw.synapses, strict=True):
            assert (sp.op, sp.weight.shape, sp.weight_q.dtype) == (
                sw.op,
                sw.weight.shape,
                sw.weight_q.dtype,
            )
            if sp.op == "shortcut":
                assert (sp.weight == sw.weight).all()
            elif sp.op in ("conv", "linear"):
                refit += int(not (sp.weight == sw.weight).all())
    assert refit == 10  # the stem, eight block convolutions and the classifier
    r = golden.run(w, test[:8], "int", keep_spikes=False)
    assert r.predictions.shape == (8,)


def test_weights_mode_int_is_spike_exact_in_hwsim(setup):
    """The refitted artifact keeps golden int and the accelerator model spike for spike."""
    _, test, _, snns = setup
    assert_int_equals_hwsim(snns["weights"], test[:4])


def test_least_squares_gain_is_each_channels_least_squares():
    """The joint fit of conv weights, bias and shortcut gain solves, per output channel, the
    least-squares problem on [unfolded inputs, 1, shortcut value] (a negligible ridge)."""
    from converter.calibration import _features, _least_squares_gain

    class G:  # the fields of a raw conv group the fit reads
        op, kernel, padding, stride = "conv", (3, 3), (1, 1), (1, 1)
        weight = torch.zeros(3, 2, 3, 3)

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 2, 5, 5, generator=gen)
    sc = torch.rand(20, 3, 5, 5, generator=gen)
    sc[:, 2] = 0  # a channel the shortcut does not reach: gain 0
    y = torch.randn(20, 3, 5, 5, generator=gen)
    w, b, gain = _least_squares_gain(x, sc, y, G, ridge=1e-10)
    f = _features(x, G)
    for c in range(2):
        s = sc[:, c].reshape(-1, 1).double()
        a = torch.cat([f, torch.ones_like(s), s], 1)
        want = torch.linalg.lstsq(a, y[:, c].reshape(-1, 1).double()).solution.squeeze(1)
        torch.testing.assert_close(w[c].reshape(-1), want[:-2], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(b[c], want[-2], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gain[c], want[-1], rtol=1e-5, atol=1e-7)
    assert gain[2] == 0


def test_weights_shortcut_mode_fits_gains_and_stays_spike_exact(setup):
    """calibration="weights_shortcut" changes the residual shortcuts' weights (and nothing of
    the format); the artifact validates and golden int equals hwsim spike for spike."""
    _, test, _, snns = setup
    p, w = snns["percentile"], snns["weights_shortcut"]
    validate(w)
    moved = [
        not torch.equal(torch.as_tensor(sp.weight), torch.as_tensor(sw.weight))
        for lp, lw in zip(p.layers, w.layers, strict=True)
        for sp, sw in zip(lp.synapses, lw.synapses, strict=True)
        if sp.op == "shortcut"
    ]
    assert len(moved) == 4 and all(moved)
    assert_int_equals_hwsim(w, test[:4])


def test_search_scale_is_the_argmin_of_the_gain_free_error():
    """search_scale returns, per channel, the candidate α whose decoded output has the least
    squared error against the target after the best gain; one α for all channels when λ is
    per layer."""
    from converter.calibration import LAMBDA_RANGE, LAMBDA_STEPS, search_scale

    T, Q, shift = 8, 1.5, (1 + 1 / 1.5) / 2
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(64, 3, 4, 4, generator=gen) ** 3
    target[:, 0] *= 0.1  # far below λ: mostly underflow at α = 1, a smaller λ codes it
    target[:, 2] *= 3.0  # above λ: saturates at α = 1
    lam = torch.tensor([1.0, 1.0, 1.0])
    v = target / lam.reshape(1, 3, 1, 1)
    alpha = search_scale(v, target, lam, True, T, Q, shift)

    def err(a):
        o = code(v / a, T, Q, shift).double() * a
        oo, ot = o.pow(2).sum((0, 2, 3)), (o * target.double()).sum((0, 2, 3))
        return target.double().pow(2).sum((0, 2, 3)) - torch.where(oo > 0, ot * ot / oo, 0.0)

    cands = [Q ** (j / LAMBDA_STEPS) for j in LAMBDA_RANGE]
    errs = torch.stack([err(a) for a in cands])  # (candidates, C)
    for c in range(3):
        assert err(alpha[c].item())[c] == pytest.approx(errs[:, c].min().item(), rel=1e-12)
    assert alpha[0] < 1 and alpha[2] > 1
    one = search_scale(v, target, lam, False, T, Q, shift)
    assert torch.all(one == one[0])
    total = torch.stack([err(a).sum() for a in cands])
    assert err(one[0].item()).sum() == pytest.approx(total.min().item(), rel=1e-12)


def test_search_mode_moves_lambda_and_stays_spike_exact(setup):
    """calibration="search" changes λ of some hidden layers (the weights are refitted to
    it), lowers the logits' RMS error below percentile calibration's, and the artifact keeps
    golden int and hwsim spike for spike."""
    import numpy as np

    _, test, want, snns = setup
    p, s = snns["percentile"], snns["search"]
    validate(s)
    moved = [
        not np.array_equal(lp.lam, ls.lam)
        for lp, ls in zip(p.layers, s.layers, strict=True)
        if lp.kind == "neuron"
    ]
    assert any(moved)
    err = {}
    for cal in ("percentile", "search"):
        got = golden.run(snns[cal], test, "exact", keep_spikes=False).logits.double()
        err[cal] = (got - want.double()).pow(2).mean().sqrt().item()
    assert err["search"] < err["percentile"], err
    assert_int_equals_hwsim(s, test[:4])
