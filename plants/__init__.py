"""Plant models: batched, differentiable simulators, the plant spec resolver, LQR baselines and rollouts.

`plants.load(spec)` resolves every plant spec (built-in names, `.npz` files, `module:function`,
`path/file.py:function`, with `?key=value` options); `linearize`, `lqr`, `rollout` and `CompiledRollout`
work on any `Plant`;
`plants.gym.make(spec)` wraps one as a Gymnasium environment (gymnasium is imported only there).
"""

from . import gym
from .analysis import LQR, LQRPolicy, linearize, lqr
from .base import InitialStates, Plant
from .compiled import CompiledRollout
from .errors import PlantSpecError
from .library import BallBeam, CartPole, DCMotor, MassSpringDamper, Pendulum, Quadrotor2D, VanDerPol
from .linear import DEFAULT_DT, LinearPlant, c2d_zoh, from_lti, save_npz
from .ode import FunctionPlant, ODEPlant, rk4_step
from .rollout import Rollout, rollout
from .spec import builtin_names, load

c2d = c2d_zoh  # field-standard short name

__all__ = [
    "gym", "Plant", "InitialStates", "PlantSpecError", "load", "builtin_names",
    "LinearPlant", "from_lti", "save_npz", "c2d_zoh", "c2d", "DEFAULT_DT",
    "ODEPlant", "FunctionPlant", "rk4_step",
    "Pendulum", "CartPole", "Quadrotor2D", "DCMotor", "MassSpringDamper", "VanDerPol", "BallBeam",
    "linearize", "lqr", "LQR", "LQRPolicy", "rollout", "Rollout", "CompiledRollout",
]
