"""Tests of converter.analysis: single-spike decoding, MAPE (Eq. 5) and the optimal base Q."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter.analysis import (
    decode_single_spike,
    encode_phase,
    mape,
    mape_curve,
    optimal_q,
    phase_thresholds,
    phase_values,
    relative_error_bound,
)

# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize(("q", "t"), [(2.0, 8), (1.3, 16), (1.2, 24), (1.0001, 5), (1.7, 1)])
def test_decode_exact_at_thresholds(q: float, t: int, shift: bool) -> None:
    thr = phase_thresholds(q, t, shift)
    vals = phase_values(q, t)
    np.testing.assert_array_equal(encode_phase(thr, q, t, shift), np.arange(t))
    np.testing.assert_array_equal(decode_single_spike(thr, q, t, shift), vals)
    # the next float below a threshold belongs to the next phase (or underflows)
    below = np.nextafter(thr, -np.inf)
    expect = np.append(vals[1:], 0.0)
    np.testing.assert_array_equal(decode_single_spike(below, q, t, shift), expect)


def test_threshold_tables() -> None:
    np.testing.assert_array_equal(phase_values(2.0, 4), [1.0, 0.5, 0.25, 0.125])
    np.testing.assert_array_equal(phase_thresholds(2.0, 4), [0.75, 0.375, 0.1875, 0.09375])
    np.testing.assert_array_equal(phase_thresholds(2.0, 4, False), phase_values(2.0, 4))


def test_decode_known_values_q2() -> None:
    x = np.array([1.0, 0.8, 0.75, 0.7, 0.5, 0.4, 0.375, 0.3, 0.1, 0.09375, 0.09])
    np.testing.assert_array_equal(
        decode_single_spike(x, 2.0, 4),
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.125, 0.125, 0.0],
    )
    np.testing.assert_array_equal(
        decode_single_spike(x, 2.0, 4, threshold_shift=False),
        [1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.0, 0.0, 0.0],
    )


@pytest.mark.parametrize("shift", [True, False])
def test_underflow(shift: bool) -> None:
    q, t = 1.3, 16
    last = phase_thresholds(q, t, shift)[-1]
    x = np.array([0.0, -0.0, -1.0, -np.inf, 1e-300, last * (1 - 1e-12), np.nextafter(last, 0)])
    np.testing.assert_array_equal(decode_single_spike(x, q, t, shift), np.zeros(x.size))
    np.testing.assert_array_equal(encode_phase(x, q, t, shift), np.full(x.size, -1))
    assert decode_single_spike(last, q, t, shift) == q ** -(t - 1)


@pytest.mark.parametrize("shift", [True, False])
def test_saturation(shift: bool) -> None:
    x = np.array([1.0, 1.0 + 1e-12, 1.5, 7.0, 1e300, np.inf])
    np.testing.assert_array_equal(decode_single_spike(x, 1.3, 16, shift), np.ones(x.size))
    np.testing.assert_array_equal(encode_phase(x, 1.3, 16, shift), np.zeros(x.size))


def test_round_mode_saturates_from_c_q() -> None:
    q = 1.3
    c = (1 + 1 / q) / 2
    assert decode_single_spike(c, q, 16) == 1.0
    assert decode_single_spike(np.nextafter(c, 0), q, 16) == 1 / q
    # floor mode: everything below 1 is at most 1/Q
    assert decode_single_spike(np.nextafter(1.0, 0), q, 16, threshold_shift=False) == 1 / q


def test_floor_vs_round_differ_in_the_upper_half_of_each_bin() -> None:
    q, t = 1.5, 10
    vals = phase_values(q, t)
    c = (1 + 1 / q) / 2
    for k in range(1, t):
        x = 0.5 * (c * q * vals[k] + q * vals[k])  # above the round threshold, below Q^-(k-1)
        assert decode_single_spike(x, q, t) == vals[k - 1]
        assert decode_single_spike(x, q, t, threshold_shift=False) == vals[k]
        y = 0.5 * (vals[k] + c * vals[k - 1])  # lower half: both give Q^-k
        assert decode_single_spike(y, q, t) == decode_single_spike(y, q, t, False) == vals[k]


def test_decode_shapes_and_nan() -> None:
    out = decode_single_spike(0.5, 2.0, 4)
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float64
    x = np.full((2, 3, 4), 0.3)
    assert decode_single_spike(x, 1.3, 16).shape == (2, 3, 4)
    assert np.isnan(decode_single_spike(np.nan, 1.3, 16))
    assert encode_phase(np.nan, 1.3, 16) == -1


# --------------------------------------------------------------------------------------------
# relative error bound (property)
# --------------------------------------------------------------------------------------------
#
# Round mode, phase k >= 1: x in [c Q^-k, c Q^-(k-1)), x_hat = Q^-k, c = (Q+1)/(2Q).
#   at x = c Q^-k:        (x_hat - x)/x = (1 - c)/c = (Q-1)/(Q+1)   (reached)
#   as x -> c Q^-(k-1):   (x - x_hat)/x -> (cQ - 1)/(cQ) = (Q-1)/(Q+1)   (approached)
# and the relative error is monotone on either side of x = Q^-k, so the bound is (Q-1)/(Q+1).
# Phase 0, x in [c, 1]: (1 - x)/x <= (1 - c)/c, the same bound.
# Floor mode: x in [Q^-k, Q^-(k-1)), x_hat = Q^-k <= x, (x - x_hat)/x < 1 - 1/Q (not reached).

_Q = st.floats(min_value=1.0, max_value=2.0, exclude_min=True, allow_nan=False)
_T = st.integers(min_value=1, max_value=48)
_U = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(q=_Q, t=_T, u=_U)
def test_round_mode_relative_error_bound(q: float, t: int, u: float) -> None:
    lo = phase_thresholds(q, t)[-1]
    x = lo * (1.0 / lo) ** u  # log-uniform over the representable range [lo, 1]
    x = min(max(x, lo), 1.0)
    xh = float(decode_single_spike(x, q, t))
    assert xh > 0.0
    bound = relative_error_bound(q)
    assert bound == pytest.approx((q - 1) / (q + 1), rel=1e-15)
    assert abs(x - xh) <= x * bound * (1 + 1e-9) + 1e-300


@settings(max_examples=400, deadline=None)
@given(q=_Q, t=_T, u=_U)
def test_floor_mode_relative_error_bound(q: float, t: int, u: float) -> None:
    lo = phase_thresholds(q, t, False)[-1]
    x = min(max(lo * (1.0 / lo) ** u, lo), 1.0)
    xh = float(decode_single_spike(x, q, t, threshold_shift=False))
    assert 0.0 < xh <= x
    assert x - xh <= x * relative_error_bound(q, False) * (1 + 1e-9)


@pytest.mark.parametrize("q", [1.05, 1.3, 2.0])
def test_round_bound_is_tight(q: float) -> None:
    t = 12
    thr = phase_thresholds(q, t)
    rel = np.abs(thr - decode_single_spike(thr, q, t)) / thr
    np.testing.assert_allclose(rel, (q - 1) / (q + 1), rtol=1e-9)
    below = np.nextafter(thr[:-1], 0)
    rel_below = np.abs(below - decode_single_spike(below, q, t)) / below
    np.testing.assert_allclose(rel_below, (q - 1) / (q + 1), rtol=1e-9)


# --------------------------------------------------------------------------------------------
# MAPE
# --------------------------------------------------------------------------------------------


def _reference_mape(q: float, t: int, shift: bool, mu: float, sigma: float) -> float:
    """Composite Simpson on every interval between breakpoints (independent of mape())."""
    bps = np.concatenate(([0.0, 1.0], phase_thresholds(q, t, shift), phase_values(q, t)))
    bps = np.unique(bps[(bps >= 0) & (bps <= 1)])
    n = 2001
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4, 2
    num = den = 0.0
    for a, b in zip(bps[:-1], bps[1:], strict=True):
        x = np.linspace(a, b, n)
        p = np.exp(-0.5 * ((x - mu) / sigma) ** 2)
        xh = float(decode_single_spike(0.5 * (a + b), q, t, shift))
        f = p if xh == 0.0 else np.abs(x - xh) / x * p
        h = (b - a) / (n - 1) / 3
        num += h * (w @ f)
        den += h * (w @ p)
    return num / den


@pytest.mark.parametrize(
    ("q", "t", "shift", "mu", "sigma"),
    [
        (1.3, 16, True, 0.0, 1.0),
        (1.3, 16, False, 0.0, 1.0),
        (1.2, 24, True, 0.0, 1.0),
        (2.0, 8, False, 0.0, 1.0),
        (1.5, 8, True, 0.5, 0.01),
        (1.9, 4, False, 0.3, 0.05),
        (1.3, 16, True, 3.0, 1.0),
        (1.05, 3, True, -2.0, 0.3),
    ],
)
def test_mape_matches_reference(q: float, t: int, shift: bool, mu: float, sigma: float) -> None:
    assert mape(q, t, mu, sigma, shift) == pytest.approx(
        _reference_mape(q, t, shift, mu, sigma), rel=1e-10
    )


def test_mape_matches_uniform_grid_loosely() -> None:
    x = np.linspace(0.0, 1.0, 1_000_001)[1:]
    p = np.exp(-0.5 * x * x)
    for shift in (True, False):
        f = np.abs(x - decode_single_spike(x, 1.3, 16, shift)) / x * p
        ref = np.trapezoid(f, x) / np.trapezoid(p, x)
        assert mape(1.3, 16, threshold_shift=shift) == pytest.approx(ref, rel=1e-4)


def test_mape_limits() -> None:
    # T = 1 in floor mode: only x = 1 is coded, everything else underflows -> MAPE = 1
    assert mape(1.5, 1, threshold_shift=False) == pytest.approx(1.0, abs=1e-15)
    # more phases never hurt (the extra phases only shrink the underflow region)
    assert mape(1.3, 24) < mape(1.3, 16) < mape(1.3, 8)
    # round beats floor
    for q in (1.1, 1.3, 1.6, 2.0):
        assert mape(q, 16) < mape(q, 16, threshold_shift=False)


def test_mape_curve() -> None:
    qs = np.array([[1.2, 1.3], [1.5, 2.0]])
    out = mape_curve(qs, 16)
    assert out.shape == (2, 2)
    assert out[0, 1] == mape(1.3, 16)
    np.testing.assert_array_equal(
        mape_curve([1.3, 2.0], 24, threshold_shift=False),
        [mape(1.3, 24, threshold_shift=False), mape(2.0, 24, threshold_shift=False)],
    )


# --------------------------------------------------------------------------------------------
# optimal Q (paper Fig. 6)
# --------------------------------------------------------------------------------------------


def test_optimal_q_paper_targets() -> None:
    q16 = optimal_q(16)
    q24 = optimal_q(24)
    assert q16 == pytest.approx(1.30, abs=0.05)
    assert q24 == pytest.approx(1.20, abs=0.05)
    assert q16 == pytest.approx(1.3146, abs=1e-3)  # DESIGN.md: about 1.32
    assert q24 == pytest.approx(1.2196, abs=1e-3)  # DESIGN.md: about 1.22


@pytest.mark.parametrize(("t", "shift"), [(16, True), (24, True), (16, False), (24, False)])
def test_optimal_q_is_a_minimum(t: int, shift: bool) -> None:
    q = optimal_q(t, threshold_shift=shift)
    assert optimal_q(t, threshold_shift=shift) == q  # deterministic
    m = mape(q, t, threshold_shift=shift)
    grid = np.linspace(1.01, 2.0, 500)
    assert m <= mape_curve(grid, t, threshold_shift=shift).min() + 1e-12
    for dq in (1e-3, -1e-3):
        assert m <= mape(q + dq, t, threshold_shift=shift)


def test_optimal_q_respects_range() -> None:
    q = optimal_q(16, q_range=(1.5, 2.0))
    assert q == pytest.approx(1.5, abs=1e-6)


# --------------------------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1.0, 0.5, 2.5, -1.0, float("nan"), "1.3", True, None])
def test_bad_q(q: object) -> None:
    msg = re.escape(f"Q must be in (1, 2], got {q!r}")
    with pytest.raises(ValueError, match=msg):
        decode_single_spike(0.5, q, 16)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=msg):
        mape(q, 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("t", [0, -3, 1.5, 16.0, "16", True, None])
def test_bad_t(t: object) -> None:
    msg = re.escape(f"T must be a positive int, got {t!r}")
    with pytest.raises(ValueError, match=msg):
        decode_single_spike(0.5, 1.3, t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=msg):
        mape(1.3, t)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=msg):
        optimal_q(t)  # type: ignore[arg-type]


def test_numpy_integer_t_and_float_q_accepted() -> None:
    assert mape(np.float64(1.3), np.int64(16)) == mape(1.3, 16)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma(sigma: float) -> None:
    msg = re.escape(f"sigma must be > 0, got {sigma!r}")
    with pytest.raises(ValueError, match=msg):
        mape(1.3, 16, sigma=sigma)
    with pytest.raises(ValueError, match=msg):
        optimal_q(16, sigma=sigma)


def test_bad_mu_and_empty_mass() -> None:
    with pytest.raises(ValueError, match=re.escape("mu must be a finite real number, got nan")):
        mape(1.3, 16, mu=float("nan"))
    with pytest.raises(ValueError, match="no representable probability mass"):
        mape(1.3, 16, mu=60.0, sigma=1.0)


@pytest.mark.parametrize("rng", [(1.0, 2.0), (1.5, 1.2), (1.2, 2.5), (1.2,), "ab"])
def test_bad_q_range(rng: object) -> None:
    msg = re.escape(f"q_range must be (low, high) with 1 < low < high <= 2, got {rng!r}")
    with pytest.raises(ValueError, match=msg):
        optimal_q(16, q_range=rng)  # type: ignore[arg-type]
