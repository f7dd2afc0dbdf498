"""Automatic optimisers (each a `torch.optim.Optimizer`) chosen by name, and the path-lifting rescaling."""

from .registry import NEEDS_LR, OPTIMIZERS, make_optimizer
from .rescale import RescaleResult, rescale

__all__ = ["OPTIMIZERS", "make_optimizer", "NEEDS_LR", "rescale", "RescaleResult"]
