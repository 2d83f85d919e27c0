"""golden: the PyTorch reference of an SnnModel (ann | exact | pipelined | int modes)."""

from golden.distributed import EvalResult, evaluate
from golden.energy import ENERGY_TABLES, energy_ratio
from golden.engine import MODES, GoldenResult, default_device, run

__all__ = [
    "ENERGY_TABLES",
    "MODES",
    "EvalResult",
    "GoldenResult",
    "default_device",
    "energy_ratio",
    "evaluate",
    "run",
]
