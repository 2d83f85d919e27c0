"""converter: any pretrained ReLU network (PyTorch) → a one-spike SNN (SnnModel artifact)."""

from converter.config import ConversionConfig
from converter.convert import CalibrationError, convert
from converter.frontend import UnsupportedModelError, supported_ops
from converter.model import ArtifactError, Layer, SnnModel, Synapse, load

__all__ = [
    "ArtifactError",
    "CalibrationError",
    "ConversionConfig",
    "Layer",
    "SnnModel",
    "Synapse",
    "UnsupportedModelError",
    "convert",
    "load",
    "supported_ops",
]
