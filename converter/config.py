"""ConversionConfig: the frozen, validated parameters of an ANN-to-SNN conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Signed integer weights use the symmetric range [-(2^(b-1) - 1), 2^(b-1) - 1].
SUPPORTED_WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
#: Calibration modes (converter/calibration.py).
CALIBRATIONS = ("auto", "percentile", "bias", "weights", "weights_shortcut", "search")
#: Fraction bits of the fixed-point base constants M = round(Q * 2^F) (docs/semantics.md).
Q_FRAC_BITS = 16


@dataclass(frozen=True)
class ConversionConfig:
    """Parameters of a one-spike conversion (DESIGN Section 2).

    Parameters
    ----------
    T : int
        Phases of every hidden layer (timestep).
    Q : float or "auto"
        Base of the hidden layers, in (1, 2]. ``"auto"`` picks the argmin of Eq. 5 (MAPE with a
        standard Gaussian) for this ``T``.
    T_w : int or None
        Wait timestep: output phase t_o is decided after input phase t_o + T_w. ``None`` means
        ``T`` (every decision sees all inputs, "exact" behaviour in pipelined mode).
    T_in : int
        Phases (bits) of the binary input coding.
    threshold_shift : bool
        Round (c_Q = (1 + 1/Q)/2) instead of floor (c_Q = 1) when coding an activation.
    percentile : float
        Activation statistic for the normalisation λ: 100 is the maximum. The default 99.99
        (averaged over calibration batches) ignores rare outliers, which otherwise stretch λ
        and push small activations into underflow.
    per_channel : bool
        λ per output channel for convolutions (per layer for linear and pooling layers).
    weight_bits : int or None
        Integer weight width with a per-output-channel scale, or ``None`` for float weights
        (the ``int`` golden mode then is not available).
    acc_bits : int
        Width A of the signed membrane potential accumulator of the integer datapath.
    input_mean, input_std : tuple of float or None
        Per-channel normalisation the model's data pipeline applies to raw inputs in [0, 1]
        (x_model = (x_raw - mean) / std). When given, the input layer codes the raw value
        exactly and the normalisation is folded into the first layer.
    calibration : str
        ``"auto"`` (the default): ``"weights"``, the best measured choice (README,
        benchmarks/results/accuracy_spread.md), for feed-forward and residual networks;
        ``"percentile"`` for graph networks, which have no refit yet. The artifact records the
        choice made. Where a calibration changes weights or biases, the artifact keeps the
        ANN's own beside them (``Synapse.ann_weight``, ``Layer.ann_bias``) for golden's ``ann``
        mode.
        ``"percentile"``: λ from the activation percentile, biases as the ANN has them.
        ``"bias"``: the same λ, then every layer's bias corrected in network order so that
        the exact SNN's mean potential (pre-activation) per channel equals the ANN's on the
        calibration images (converter/calibration.py; after Li et al., ICML 2021).
        ``"weights"``: the same λ, then each layer's conv or linear weights and bias refitted in
        network order by least squares, so that its potential computed from the exact SNN's
        coded inputs best matches the ANN's on the calibration images.
        ``"weights_shortcut"``: as ``"weights"``, with each residual shortcut's per-channel
        weight (its gain, 1 in the ANN) fitted with them.
        ``"search"``: as ``"weights"``, with each hidden layer's λ (per channel where λ is per
        channel) chosen, in network order, among the percentile's λ times Q^(j/8),
        j = -16 … 8, to minimise the squared error of the layer's decoded output against the
        ANN's activation, up to a gain per channel, on the calibration images.
    input_scale : float or None
        The input range λ_in: an input coded by the input layer must lie in [0, λ_in). ``None``
        takes the calibration maximum (of |x|) times 2^T_in / (2^T_in - 1), which codes
        8-bit images in [0, 1] exactly.
    """

    T: int = 16
    Q: float | str = 1.3
    T_w: int | None = None
    T_in: int = 8
    threshold_shift: bool = True
    percentile: float = 99.99
    per_channel: bool = True
    weight_bits: int | None = 8
    acc_bits: int = 32
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    input_scale: float | None = None
    calibration: str = "auto"
    _q: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_int("T", self.T, 1, 64)
        _check_int("T_in", self.T_in, 1, 24)
        if self.T_w is not None:
            _check_int("T_w", self.T_w, 0, 256)
        _check_int("acc_bits", self.acc_bits, 8, 48)
        if self.weight_bits is not None and (
            isinstance(self.weight_bits, bool) or self.weight_bits not in SUPPORTED_WEIGHT_BITS
        ):
            raise ValueError(
                f"weight_bits must be one of {SUPPORTED_WEIGHT_BITS} or None, "
                f"got {self.weight_bits!r}"
            )
        if not isinstance(self.threshold_shift, bool):
            raise TypeError(f"threshold_shift must be a bool, got {self.threshold_shift!r}")
        if not isinstance(self.per_channel, bool):
            raise TypeError(f"per_channel must be a bool, got {self.per_channel!r}")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, int | float) or not 50.0 <= p <= 100.0:
            raise ValueError(f"percentile must be in [50, 100], got {p!r}")
        if self.input_scale is not None and not (
            isinstance(self.input_scale, int | float)
            and math.isfinite(self.input_scale)
            and self.input_scale > 0
        ):
            raise ValueError(f"input_scale must be a positive number, got {self.input_scale!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        self._check_normalisation()
        object.__setattr__(self, "_q", self._resolve_q())

    def _check_normalisation(self) -> None:
        mean, std = self.input_mean, self.input_std
        if (mean is None) != (std is None):
            raise ValueError("input_mean and input_std must be given together")
        if mean is None:
            return
        object.__setattr__(self, "input_mean", tuple(float(v) for v in mean))
        object.__setattr__(self, "input_std", tuple(float(v) for v in std))
        if len(self.input_mean) != len(self.input_std) or not self.input_mean:
            raise ValueError(
                f"input_mean and input_std need one value per channel, "
                f"got {len(self.input_mean)} and {len(self.input_std)}"
            )
        if any(not (s > 0 and math.isfinite(s)) for s in self.input_std):
            raise ValueError(f"input_std values must be positive, got {self.input_std!r}")

    def _resolve_q(self) -> float:
        if self.Q == "auto":
            from converter.analysis import optimal_q

            return round(float(optimal_q(self.T)), 3)
        q = self.Q
        if isinstance(q, bool) or not isinstance(q, int | float) or not 1.0 < q <= 2.0:
            raise ValueError(f"Q must be in (1, 2] or 'auto', got {q!r}")
        return float(q)

    @property
    def q(self) -> float:
        """The base actually used (``Q`` resolved when it is ``"auto"``)."""
        return self._q

    @property
    def t_w(self) -> int:
        """The wait timestep actually used (``T_w`` or, when None, ``T``)."""
        return self.T if self.T_w is None else self.T_w


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
