"""Automatic optimisers (each a `torch.optim.Optimizer`) chosen by name; the contract in `base.py`."""

from .registry import NEEDS_LR, OPTIMIZERS, make_optimizer

__all__ = ["OPTIMIZERS", "make_optimizer", "NEEDS_LR"]
