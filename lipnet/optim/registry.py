"""Optimisers by name (`agd`, `sphere-newton`, `sphere-mm`, `manifold-adam`, `adam`, `sgd`).

Convention for every lipnet optimiser: a class with `from_model(model, **options)`; `step(closure)`.
If the class sets `wants_loss_closure = True`, its closure returns the loss *with its graph and without
calling backward* (the optimiser differentiates it itself, e.g. for second-order information); otherwise
the closure follows torch's contract (zero grads, backward, return the loss).
"""

from __future__ import annotations

import importlib

import torch

__all__ = ["OPTIMIZERS", "make_optimizer", "optimizer_class", "NEEDS_LR"]

OPTIMIZERS = {
    "agd": "lipnet.optim.agd:AGD",
    "sphere-newton": "lipnet.optim.sphere:SphereNewton",
    "sphere-mm": "lipnet.optim.sphere:SphereMM",
    "manifold-adam": "lipnet.optim.manifold_adam:ManifoldAdam",
    "adam": "torch.optim:Adam",
    "sgd": "torch.optim:SGD",
}
NEEDS_LR = {"adam": 1e-3, "sgd": 1e-2}


def optimizer_class(name: str) -> type:
    """The class registered under `name` (a clear error for an unknown or unavailable one)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    mod_name, cls_name = OPTIMIZERS[name].split(":")
    try:
        return getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError):
        raise ValueError(f"optimizer {name!r} is not available in this version of lipnet") from None


def make_optimizer(name: str, model: torch.nn.Module, lr: float | None = None, **options) -> torch.optim.Optimizer:
    """Build the named optimiser over `model`; `lr` only for the baselines (`adam`, `sgd`) and `manifold-adam`."""
    cls = optimizer_class(name)
    if name in NEEDS_LR:
        return cls(model.parameters(), lr=NEEDS_LR[name] if lr is None else lr, **options)
    if lr is not None:
        options["lr"] = lr
    return cls.from_model(model, **options)
