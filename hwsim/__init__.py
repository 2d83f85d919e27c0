"""hwsim: the Numba cycle-level model of the one-spike reference accelerator."""

from archspec.config import ACTIONS, DATAFLOWS, MEMORY_MODELS, ArchConfig, EnergyTable
from hwsim.sim import ArchFitError, SimResult, check_fits, simulate, stall_pattern

__all__ = [
    "ACTIONS",
    "ArchConfig",
    "ArchFitError",
    "DATAFLOWS",
    "EnergyTable",
    "MEMORY_MODELS",
    "SimResult",
    "check_fits",
    "simulate",
    "stall_pattern",
]
