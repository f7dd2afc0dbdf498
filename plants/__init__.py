"""Plant models: batched, differentiable simulators, the plant spec resolver, LQR baselines and rollouts.

`plants.load(spec)` resolves every plant spec (built-in names, `.npz` files, `module:function`,
`path/file.py:function`, with `?key=value` options); `linearize`, `lqr`, `rollout` and `CompiledRollout`
work on any `Plant`;
`plants.gym.make(spec)` wraps one as a Gymnasium environment, and `import plants.gym` registers the ids
`lipnet/<Plant>-v0` and `lipnet/Plant-v0` with gymnasium (imported only then: `plants.gym` loads on first use).
"""

import importlib

from .base import InitialStates, Plant
from .compiled import CompiledRollout
from .errors import PlantRuntimeError, PlantSpecError
from .library import BallBeam, CartPole, DCMotor, MassSpringDamper, Pendulum, Quadrotor2D, VanDerPol
from .linear import DEFAULT_DT, LinearPlant, c2d_zoh, from_lti, save_npz
from .lqr_design import LQR, LQRPolicy, linearize, lqr
from .ode import FunctionPlant, ODEPlant, rk4_step
from .options import MAX_HORIZON, MAX_SUBSTEPS
from .rollout import Rollout, rollout
from .spec import builtin_names, load

c2d = c2d_zoh  # field-standard short name

__all__ = [
    "gym", "Plant", "InitialStates", "PlantSpecError", "PlantRuntimeError", "load", "builtin_names",
    "MAX_HORIZON", "MAX_SUBSTEPS",
    "LinearPlant", "from_lti", "save_npz", "c2d_zoh", "c2d", "DEFAULT_DT",
    "ODEPlant", "FunctionPlant", "rk4_step",
    "Pendulum", "CartPole", "Quadrotor2D", "DCMotor", "MassSpringDamper", "VanDerPol", "BallBeam",
    "linearize", "lqr", "LQR", "LQRPolicy", "rollout", "Rollout", "CompiledRollout",
]


def __getattr__(name: str):
    # `plants.gym` on first use only: importing gymnasium (and registering the ids) costs ~0.15 s per process.
    if name == "gym":
        return importlib.import_module(".gym", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
