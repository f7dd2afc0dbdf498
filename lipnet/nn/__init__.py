"""Lipschitz-bounded layers and the `Controller` module."""

from .activations import ACTIVATIONS, SLOPE_RESTRICTED, GroupSort, make_activation
from .controller import SATURATIONS, Controller
from .layers import (
    LAYER_KINDS,
    FrobeniusLinear,
    LipschitzLinear,
    OrthogonalLinear,
    PlainLinear,
    SpectralLinear,
    make_linear,
)

__all__ = ["Controller", "SATURATIONS", "LipschitzLinear", "FrobeniusLinear", "SpectralLinear",
           "OrthogonalLinear", "PlainLinear", "make_linear", "LAYER_KINDS", "GroupSort",
           "make_activation", "ACTIVATIONS", "SLOPE_RESTRICTED"]
