"""Eq. 6: the ANN-to-SNN energy ratio from operation counts and a 45 nm cost table."""

from __future__ import annotations

from dataclasses import dataclass


#: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm (DESIGN 2.10), in picojoules.
@dataclass(frozen=True)
class OpEnergy:
    """Energy of one MAC and one addition, in pJ."""

    mac_pj: float
    add_pj: float


ENERGY_TABLES = {
    "fp32": OpEnergy(mac_pj=3.7 + 0.9, add_pj=0.9),
    "int8": OpEnergy(mac_pj=0.2 + 0.03, add_pj=0.03),
}


def energy_ratio(counts: dict, precision: str = "fp32") -> float:
    """E_ANN / E_SNN = Σ MAC_l · E_MAC / Σ ADD_l · E_ADD (Eq. 6) over all layers.

    ``counts`` is a :class:`golden.GoldenResult` ``counts`` dict (totals over the same images
    for both networks). ADD_l counts every addition the spikes into layer l trigger.
    """
    if precision not in ENERGY_TABLES:
        raise ValueError(f"precision must be one of {sorted(ENERGY_TABLES)}, got {precision!r}")
    t = ENERGY_TABLES[precision]
    adds = int(sum(counts["adds"]))
    if adds == 0:
        raise ValueError("the SNN performed no additions: the energy ratio is undefined")
    return float(sum(counts["ann_macs"])) * t.mac_pj / (adds * t.add_pj)
