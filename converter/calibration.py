"""Calibration beyond the percentile λ: the one-spike code in closed form, and the SNN-side
corrections done layer by layer in network order (after Li et al., ICML 2021): bias
correction (``calibration="bias"``) and least-squares weight calibration
(``calibration="weights"``; ``"weights_shortcut"`` fits each residual shortcut's per-channel
gain too; ``"search"`` also chooses each layer's λ by the error of its decoded output).
benchmarks/layer_error.py shows why: the error that grows with depth is mostly spread, which
a bias cannot remove.

The code of a hidden layer (Eq. 4, DESIGN 2.3): a neuron whose normalised potential is
v = a / λ fires at t* = min{t : v ≥ c · Q^-t} and stands for Q^-t*; no phase fits (v below
c · Q^-(T-1)) means no spike, i.e. 0 (underflow); everything above 1 stands for 1 (saturation).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

#: λ candidates of ``calibration="search"``: the percentile's λ times Q^(j / LAMBDA_STEPS) for
#: j in LAMBDA_RANGE, i.e. from Q^-2 (more saturation, less underflow) to Q^+1, in eighths of
#: one phase step (the code's error depends on where values fall on the grid Q^-t).
LAMBDA_STEPS = 8
LAMBDA_RANGE = range(-2 * LAMBDA_STEPS, LAMBDA_STEPS + 1)


class Fix(NamedTuple):
    """One layer's correction by :func:`refine`."""

    bias: torch.Tensor
    #: group index -> refitted weight
    weights: dict
    #: per channel, the factor by which λ is multiplied (None: λ unchanged)
    lam_scale: torch.Tensor | None = None


def correct(raw, batches, stats, config) -> tuple[list, list]:
    """The SNN-side corrections ``config.calibration`` asks for: the raw layers with their
    corrected biases and weights, and the λ statistics (``stats`` of
    converter.convert.calibrate) with the searched λ where ``"search"``. ``"percentile"``
    returns both unchanged."""
    if config.calibration == "percentile":
        return raw, stats
    from converter.convert import _lambdas

    fixes = refine(
        raw,
        batches,
        _lambdas(raw, stats, config),
        config,
        weights=config.calibration != "bias",
        shortcut_gain=config.calibration == "weights_shortcut",
        search_lambda=config.calibration == "search",
    )
    stats = [
        s if f is None or f.lam_scale is None else s * f.lam_scale.to(s.dtype)
        for s, f in zip(stats, fixes, strict=True)
    ]
    return apply(raw, fixes), stats


def search_scale(
    v: torch.Tensor, target: torch.Tensor, lam: torch.Tensor, per_channel: bool, T: int,
    Q: float, shift: float,
) -> torch.Tensor:  # fmt: skip
    """The λ factor α, per channel (or one for the layer), among Q^(j / LAMBDA_STEPS) for j in
    LAMBDA_RANGE, whose decoded output o = α λ · code(v / α) best matches the ANN's activation
    up to a gain per channel: it minimises min_g Σ (g · o − target)² = Σ t² − (Σ o t)² / Σ o²
    over the calibration samples (summed over the channels where λ is per layer); ties keep
    α = 1. The gain is free because the next layer's least-squares refit has a weight per
    input channel and absorbs any scale; what λ decides is the code's underflow, saturation
    and where values fall on the grid Q^-t. (Plain squared error, gain fixed at 1, was
    measured worse: ResNet-32, T 24, Q 1.2, first calibration set, exact 91.74 % against
    92.13 % without the search and 92.72 % with the gain free.)

    v : (N, C, ...) the SNN's potential normalised by the current λ (a / λ, ≥ 0).
    target : (N, C, ...) the ANN's activation, in the units of λ · v.
    lam : (C,) the current λ. Returns α, shape (C,), float64.
    """
    c = v.shape[1]
    dims = [0] + list(range(2, v.dim()))
    lam = lam.reshape((1, c) + (1,) * (v.dim() - 2)).to(v.dtype)
    t = target.double()
    tt = t.pow(2).sum(dims)
    best = torch.ones(c, dtype=torch.float64)
    best_err = None
    for j in [0] + [j for j in LAMBDA_RANGE if j != 0]:
        alpha = Q ** (j / LAMBDA_STEPS)
        out = (code(v / alpha, T, Q, shift) * (alpha * lam)).double()
        oo, ot = out.pow(2).sum(dims), (out * t).sum(dims)
        err = tt - torch.where(oo > 0, ot * ot / oo.clamp(min=1e-300), 0.0)
        if not per_channel:
            err = err.sum().expand(c)
        if best_err is None:
            best_err = err
            continue
        better = err < best_err
        best = torch.where(better, alpha, best)
        best_err = torch.where(better, err, best_err)
    return best


def code(v: torch.Tensor, T: int, Q: float, shift: float) -> torch.Tensor:
    """The decoded one-spike value of ``v`` (in units of λ): Q^-t* or 0."""
    th = torch.tensor([shift * Q**-t for t in range(T)], dtype=v.dtype, device=v.device)
    levels = torch.tensor([0.0] + [Q**-t for t in range(T - 1, -1, -1)], dtype=v.dtype)
    # idx = how many thresholds are ≤ v: 0 is no spike, T is phase 0
    idx = torch.searchsorted(th.flip(0).contiguous(), v.contiguous(), right=True)
    return levels.to(v.device)[idx]


def _last_use(raw) -> list[int]:
    """For each layer, the index of the last layer that reads it."""
    last = list(range(len(raw)))
    for i, lay in enumerate(raw):
        srcs = [lay.source] if lay.kind == "maxpool" else [g.source for g in lay.groups]
        for s in srcs:
            last[s] = max(last[s], i)
    return last


def _code_input(x: torch.Tensor, lam: torch.Tensor, t_in: int, signed: bool) -> torch.Tensor:
    """The input as the binary input code carries it: the nearest T_in-bit fraction of λ_in."""
    lam = lam.reshape(1, -1, *([1] * (x.dim() - 2)))
    v = x / lam
    if not signed:
        v = v.clamp(min=0)
    top = 2**t_in - 1
    q = torch.round(v.abs() * 2**t_in).clamp(max=top) / 2**t_in
    return q * torch.sign(v) * lam if signed else q * lam


def _features(x: torch.Tensor, g) -> torch.Tensor:
    """The inputs one output position of a conv or linear group sees: (samples, fan-in)."""
    if g.op == "linear":
        return x.reshape(x.shape[0], -1).double()
    cols = torch.nn.functional.unfold(x, g.kernel, padding=g.padding, stride=g.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]).double()


#: The weight calibration refits a layer only where its calibration data gives at least this
#: many samples (images × output positions) per unknown (fan-in + 1); elsewhere the layer
#: gets the bias correction (a fit with fewer samples than unknowns follows the calibration
#: images, not the ANN).
MIN_SAMPLES_PER_UNKNOWN = 2


def _determined(g, za: torch.Tensor) -> bool:
    """Whether the calibration data determines group ``g``'s refit (MIN_SAMPLES_PER_UNKNOWN)."""
    fan_in = g.weight[0].numel()
    samples = za.shape[0] * (1 if g.op == "linear" else za[0, 0].numel())
    return samples >= MIN_SAMPLES_PER_UNKNOWN * (fan_in + 1)


def _least_squares(xs: torch.Tensor, ys: torch.Tensor, g, ridge: float) -> tuple:
    """Weights and bias minimising Σ (W·x + b − y)² over the calibration samples (ridge
    regularised towards nothing but numerical safety), by the normal equations in float64."""
    feats, xtx, xty = None, None, None
    for xb, yb in zip(xs.split(128), ys.split(128), strict=True):
        f = _features(xb, g)
        f = torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype)], 1)
        y = yb.double().reshape(yb.shape[0], yb.shape[1], -1).transpose(1, 2)
        y = y.reshape(-1, yb.shape[1])
        xtx = f.T @ f if xtx is None else xtx + f.T @ f
        xty = f.T @ y if xty is None else xty + f.T @ y
        feats = f.shape[1]
    reg = ridge * xtx.diagonal()[:-1].mean().clamp(min=1e-12)
    eye = torch.eye(feats, dtype=torch.float64)
    eye[-1, -1] = 0.0
    sol = torch.linalg.solve(xtx + reg * eye, xty)  # (fan-in + 1, C_out)
    w, b = sol[:-1].T, sol[-1]
    return w.reshape(g.weight.shape), b


def _least_squares_gain(xs, sc, ys, g, ridge: float) -> tuple:
    """:func:`_least_squares` with one more input per output channel c: the layer's shortcut
    value s_c (``sc``, the shortcut group applied with unit weights, shaped as ``ys``), whose
    weight (the per-channel gain of the residual shortcut) is fitted with the conv's weights
    and bias. Each channel has its own normal equations (the conv's columns are shared):
    [F 1 s_c]ᵀ[F 1 s_c] θ_c = [F 1 s_c]ᵀ y_c, solved in float64; the ridge term covers the
    weights and the gain (a channel the shortcut does not reach gets gain 0), not the bias.

    Returns (weight, bias, gain (C_out,)).
    """
    ftf = fts = fty = None
    sts = sty = None
    for xb, sb, yb in zip(xs.split(128), sc.split(128), ys.split(128), strict=True):
        f = _features(xb, g)
        f = torch.cat([f, torch.ones(f.shape[0], 1, dtype=f.dtype)], 1)

        def rows(t):
            t = t.double().reshape(t.shape[0], t.shape[1], -1).transpose(1, 2)
            return t.reshape(-1, t.shape[-1])

        y, s = rows(yb), rows(sb)
        parts = (f.T @ f, f.T @ s, f.T @ y, (s * s).sum(0), (s * y).sum(0))
        if ftf is None:
            ftf, fts, fty, sts, sty = parts
        else:
            ftf, fts, fty, sts, sty = (
                a + b for a, b in zip((ftf, fts, fty, sts, sty), parts, strict=True)
            )
    d, c = ftf.shape[0], fts.shape[1]
    reg = ridge * ftf.diagonal()[:-1].mean().clamp(min=1e-12)
    a = torch.zeros(c, d + 1, d + 1, dtype=torch.float64)
    a[:, :d, :d] = ftf
    a[:, :d, d] = fts.T
    a[:, d, :d] = fts.T
    a[:, d, d] = sts
    ridge_diag = torch.full((d + 1,), float(reg), dtype=torch.float64)
    ridge_diag[d - 1] = 0.0  # the bias
    a += torch.diag(ridge_diag)
    rhs = torch.cat([fty.T, sty.reshape(-1, 1)], 1).unsqueeze(-1)  # (C, d + 1, 1)
    sol = torch.linalg.solve(a, rhs).squeeze(-1)  # (C, d + 1): weights, bias, gain
    return sol[:, : d - 1].reshape(g.weight.shape), sol[:, d - 1], sol[:, d]


def refine(
    raw,
    batches,
    lams,
    config,
    weights: bool = False,
    ridge: float = 1e-3,
    shortcut_gain: bool = False,
    search_lambda: bool = False,
) -> list:
    """SNN-side correction in network order (after Li et al., ICML 2021).

    Layer by layer, the calibration images run through the ANN and, in parallel, through the
    exact-mode SNN whose earlier layers are already corrected.

    ``weights=False`` (bias correction): the coding errors of the earlier layers shift the
    mean of each neuron's potential (the pre-activation): underflow and saturation both take
    value away, so the shift is not zero. Its mean per channel over the calibration images
    and positions, E[z_ANN − z_SNN], is added to the layer's bias. The correction targets the
    pre-activation, not the coded output: a coded output moves by a whole phase step when its
    potential crosses a threshold, so matching its mean would oscillate on channels of low
    variance (a pooled feature), while the pre-activation error is linear in the inputs'.

    ``weights=True`` (weight calibration): the conv or linear group of each layer is refitted,
    with its bias, by least squares so that its pre-activation computed from the SNN's coded
    inputs best matches the ANN's pre-activation computed from the ANN's inputs (the other
    groups, e.g. a residual shortcut, keep their weights and are subtracted from the target).
    This also removes the spread that is predictable from the coded inputs, not only the mean.
    A layer whose calibration data has fewer than MIN_SAMPLES_PER_UNKNOWN samples per
    unknown gets the bias correction instead.
    With ``shortcut_gain``, a residual shortcut's per-channel weight is fitted with them
    (:func:`_least_squares_gain`) instead of kept. Layers without such a group get the bias
    correction.

    ``search_lambda``: each hidden layer's λ is then chosen by :func:`search_scale` (per
    channel where λ is per channel), so that its decoded output best matches the ANN's
    activation; the later layers are fitted to the SNN with that λ.

    Returns, per layer, None or a :class:`Fix`.
    """
    from converter.convert import _chan, _preactivation, _raw_input, lambda_per_channel
    from converter.ops import synapse_forward

    shift = (1 + 1 / config.q) / 2 if config.threshold_shift else 1.0
    last = _last_use(raw)
    x = torch.cat(batches).double()
    ann: list[torch.Tensor | None] = [None] * len(raw)
    snn: list[torch.Tensor | None] = [None] * len(raw)
    out: list = [None] * len(raw)
    for i, lay in enumerate(raw):
        if lay.kind == "input":
            ann[i] = _raw_input(x, lay, config).float()
            lam_in = torch.as_tensor(lams[i], dtype=torch.float64)
            snn[i] = _code_input(ann[i].double(), lam_in, config.T_in, lay.signed).float()
        elif lay.kind == "maxpool":
            pool = torch.nn.functional.max_pool2d
            ann[i] = pool(ann[lay.source], lay.kernel, lay.stride, lay.padding)
            snn[i] = pool(snn[lay.source], lay.kernel, lay.stride, lay.padding)
        else:
            za = _preactivation(raw, lay, ann)
            shape = (lay.shape[0], *([1] * (len(lay.shape) - 1)))
            fit = [k for k, g in enumerate(lay.groups) if g.op in ("conv", "linear")]
            new_w = {}
            if weights and len(fit) == 1 and _determined(lay.groups[fit[0]], za):
                k = fit[0]
                g = lay.groups[k]
                target = za.double()
                shortcuts = [j for j, h in enumerate(lay.groups) if h.op == "shortcut"]
                gain_j = shortcuts[0] if shortcut_gain and shortcuts else None
                fixed = [j for j in range(len(lay.groups)) if j not in (k, gain_j)]
                for j in fixed:
                    h = lay.groups[j]
                    syn = _syn_of(h)
                    target = (
                        target
                        - synapse_forward(
                            snn[h.source], syn, h.weight.float(), _layer_of(lay)
                        ).double()
                    )
                if gain_j is not None:
                    h = lay.groups[gain_j]
                    ones = torch.ones_like(h.weight, dtype=torch.float32)
                    sc = synapse_forward(snn[h.source], _syn_of(h), ones, _layer_of(lay))
                    w, b, gain = _least_squares_gain(snn[g.source], sc, target, g, ridge)
                    new_w[gain_j] = gain.to(h.weight.dtype)
                else:
                    w, b = _least_squares(snn[g.source], target, g, ridge)
                new_w[k] = w.to(g.weight.dtype)
                bias = b.reshape(shape).expand(*lay.shape).clone()
                lay = _with(lay, new_w, bias)
                zs = _preactivation(raw, lay, snn)
            else:
                zs = _preactivation(raw, lay, snn)
                dims = [0] + list(range(2, za.dim()))
                d = (za - zs).double().mean(dims)
                bias = lay.bias.double() + d.reshape(shape)
                zs = zs + d.float().reshape(shape)
            scale = None
            if lay.kind != "output":
                theta = _chan(lay.theta_unit.float(), lay.shape)
                lam = _chan(torch.as_tensor(lams[i], dtype=torch.float32), lay.shape)
                ann[i] = za.clamp(min=0) / theta
                v = zs.clamp(min=0) / theta / lam
                if search_lambda:
                    per_channel = lambda_per_channel(lay, config) and not lay.rails
                    scale = search_scale(v, ann[i], lam.reshape(-1), per_channel, config.T,
                                         config.q, shift)  # fmt: skip
                    alpha = _chan(scale.float(), lay.shape)
                    v, lam = v / alpha, lam * alpha
                snn[i] = code(v, config.T, config.q, shift) * lam
            out[i] = Fix(bias, new_w, scale)
            del za, zs
        for j in range(1, i):
            if last[j] == i:
                ann[j] = snn[j] = None
    return out


def _syn_of(g):
    from converter.convert import _syn

    return _syn(g)


def _layer_of(lay):
    from converter.convert import _as_layer

    return _as_layer(lay)


def _with(lay, new_w: dict, bias: torch.Tensor):
    """A copy of raw layer ``lay`` with some groups' weights and its bias replaced."""
    groups = [replace(g, weight=new_w[k]) if k in new_w else g for k, g in enumerate(lay.groups)]
    return replace(lay, groups=groups, bias=bias.to(lay.bias.dtype))


def apply(raw, refined) -> list:
    """The raw layers with the corrections of :func:`refine`."""
    return [
        lay if r is None else _with(lay, r.weights, r.bias)
        for lay, r in zip(raw, refined, strict=True)
    ]
