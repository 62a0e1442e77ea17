"""Quantized linear layers: the `QuantMethod` seam, one method per weight format, and config parsing."""

from tokenmill.quantization.base import QuantLinear, QuantMethod, UnquantizedMethod
from tokenmill.quantization.config import QUANTIZATION_CHOICES, QuantizationConfig, resolve_quantization

__all__ = [
    "QUANTIZATION_CHOICES",
    "QuantLinear",
    "QuantMethod",
    "QuantizationConfig",
    "UnquantizedMethod",
    "resolve_quantization",
]
