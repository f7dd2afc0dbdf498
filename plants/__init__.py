"""Plant models: batched, differentiable simulators, loaders, LQR baselines and rollouts."""

from .base import InitialStates, Plant

__all__ = ["Plant", "InitialStates"]
