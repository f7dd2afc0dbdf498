"""Gymnasium wrapper: `plants.gym.make(spec)` gives a `gymnasium.Env` over any plant (gymnasium imported lazily).

Observation: the raw state (float32, unbounded Box); action: the input in actuator units (Box at the actuator
limits, unbounded where the plant has none; actions are clipped to the limits before they are applied);
reward: `−stage_cost(x, u)`; an episode is truncated after `plant.horizon` steps and terminated early when the
state becomes non-finite or leaves `divergence` × the evaluation box around the equilibrium.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .base import Plant

__all__ = ["make", "PlantEnv"]


@functools.cache
def _env_class():
    import gymnasium
    from gymnasium import spaces

    class _PlantEnv(gymnasium.Env):
        """A plant as a Gymnasium environment (see the module docstring)."""

        metadata = {"render_modes": []}

        def __init__(self, plant: Plant, split: str = "train", divergence: float = 20.0):
            super().__init__()
            if split not in ("train", "eval"):
                raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
            self.plant, self.split, self.divergence = plant, split, float(divergence)
            inf = np.full(plant.n_u, np.inf, np.float32)
            low = -inf if plant.u_low is None else plant.u_low.astype(np.float32)
            high = inf if plant.u_high is None else plant.u_high.astype(np.float32)
            self.action_space = spaces.Box(low, high, (plant.n_u,), np.float32)
            self.observation_space = spaces.Box(-np.inf, np.inf, (plant.n_x,), np.float32)
            self._x = torch.as_tensor(plant.x_eq, dtype=torch.float64)[None]
            self._t = 0
            self._bound = self.divergence * np.maximum(np.asarray(plant.init_eval.scale, float), 1e-6)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            super().reset(seed=seed)
            split = (options or {}).get("split", self.split)
            gen = torch.Generator().manual_seed(int(self.np_random.integers(2 ** 62)))
            self._x = self.plant.sample_initial(1, split, generator=gen, dtype=torch.float64)
            self._t = 0
            return self._x[0].numpy().astype(np.float32), {}

        def step(self, action):
            u = torch.as_tensor(np.asarray(action, dtype=np.float64).reshape(1, self.plant.n_u))
            u = self.plant.clip(u)
            with torch.no_grad():
                reward = -float(self.plant.stage_cost(self._x, u)[0])
                self._x = self.plant.step(self._x, u)
            self._t += 1
            x = self._x[0].numpy()
            dev = np.abs(x - self.plant.x_eq)
            terminated = bool(not np.isfinite(x).all() or (dev > self._bound).any())
            truncated = bool(self._t >= self.plant.horizon and not terminated)
            return x.astype(np.float32), reward, terminated, truncated, {"u": u[0].numpy()}

    return _PlantEnv


def PlantEnv(plant: Plant, split: str = "train", divergence: float = 20.0):  # noqa: N802 (class-like factory)
    """A `gymnasium.Env` over `plant`; `split` picks the initial-state distribution used by `reset`."""
    return _env_class()(plant, split=split, divergence=divergence)


def make(spec: str | Plant, split: str = "train", divergence: float = 20.0, **overrides: Any):
    """`plants.load(spec, **overrides)` wrapped as a `gymnasium.Env`."""
    from .spec import load

    return PlantEnv(load(spec, **overrides), split=split, divergence=divergence)
