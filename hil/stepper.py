"""Single-state plant stepping for fixed-rate loops: `plant.step` at batch 1 in float64, without autograd.

The HIL host and `simulate` share this class, so both integrate the plant with exactly the same arithmetic
(the parity check between them depends on it).
"""

from __future__ import annotations

import numpy as np
import torch

from plants.errors import PlantSpecError

__all__ = ["PlantStepper"]


class PlantStepper:
    """`x_next = stepper(x, u)` on float64 numpy vectors, through preallocated `[1, n]` tensors.

    The plant is stepped in float64 when it supports it (falls back to float32 otherwise: see `dtype`);
    callers run the loop inside `stepper.context()` (`torch.no_grad()`), so no graph is recorded. Not
    `inference_mode`: plants cache constant tensors, and inference tensors in that cache would break later
    autograd users of the same plant (e.g. `plants.lqr`).
    """

    def __init__(self, plant):
        self.plant = plant
        self.n_x, self.n_u = int(plant.n_x), int(plant.n_u)
        self.dtype = torch.float64
        for dtype in (torch.float64, torch.float32):
            self._x = torch.zeros(1, self.n_x, dtype=dtype)
            self._u = torch.zeros(1, self.n_u, dtype=dtype)
            try:
                with torch.no_grad():
                    y = plant.step(self._x, self._u)
            except (RuntimeError, TypeError):  # a plant with float32-only constants
                continue
            if tuple(y.shape) != (1, self.n_x):
                raise PlantSpecError(f"plant {getattr(plant, 'name', plant)!r}.step returned shape "
                                     f"{tuple(y.shape)} for a batch of one; expected (1, {self.n_x})")
            self.dtype = dtype
            break
        else:
            raise PlantSpecError(f"plant {getattr(plant, 'name', plant)!r}.step fails on [1, n_x] float tensors")
        self._xn, self._un = self._x.numpy()[0], self._u.numpy()[0]  # numpy views sharing memory
        self._step = plant.step

    @staticmethod
    def context():
        """The context to run stepping loops in (no autograd bookkeeping)."""
        return torch.no_grad()

    def __call__(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One sample period from state `x` with action `u` held; returns a new float64 `[n_x]` array."""
        self._xn[:] = x
        self._un[:] = u
        return self._step(self._x, self._u).numpy()[0].astype(np.float64)
