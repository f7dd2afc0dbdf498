"""The closed loop in one process: the same plant stepping and controller arithmetic as a HIL run, no network.

`simulate(plant, policy, x0, steps)` is the reference a HIL run is compared with: with an ONNX policy and no
deadline misses the two trajectories agree to float32 rounding (they run the same float32 model on the same
float32-rounded states and step the plant with the same `PlantStepper`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hil.stepper import PlantStepper

__all__ = ["Policy", "load_policy", "simulate", "SimRecord"]


@dataclass
class Policy:
    """A controller as `action = policy(state)` on float32 vectors, with where it came from."""

    fn: object
    n_x: int
    n_u: int
    source: str
    kind: str                 # "onnx" or "torch"
    plant_spec: str = ""      # the plant the controller was trained on, if recorded
    dt: float | None = None
    meta: dict = field(default_factory=dict)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        return self.fn(state)


def _torch_policy(path: Path) -> Policy:
    import torch

    from lipnet.train.checkpoint import load_checkpoint, load_controller

    ckpt = load_checkpoint(path)
    ctrl = load_controller(path)
    buf = torch.zeros(1, ctrl.n_x, dtype=torch.float32)
    view = buf.numpy()[0]

    def fn(state):
        view[:] = state
        with torch.no_grad():
            return ctrl(buf).numpy()[0].copy()

    dt = ckpt.get("dt")
    return Policy(fn, ctrl.n_x, ctrl.n_u, str(path), "torch", ckpt.get("plant") or "",
                  float(dt) if dt else None, {"lipschitz_bound": ctrl.lipschitz_bound()})


def load_policy(model, provider: str = "cpu") -> Policy:
    """A `Policy` from `controller.onnx` (onnxruntime, as on the device) or a run folder / `controller.pt`."""
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"no controller at {path}: give a run folder or a controller.onnx")
    if path.suffix == ".onnx":
        from export.runtime import session

        sess = session(str(path), provider=provider)
        meta = dict(getattr(sess, "metadata", {}) or {})
        try:
            dt = float(meta["lipnet.dt"]) or None
        except (KeyError, TypeError, ValueError):
            dt = None
        return Policy(sess, int(sess.n_x), int(sess.n_u), str(path), "onnx", str(meta.get("lipnet.plant") or ""), dt,
                      meta)
    return _torch_policy(path)


@dataclass
class SimRecord:
    """States `x [N+1, n_x]`, actions `u [N, n_u]` and the per-step controller and plant times (ns)."""

    x: np.ndarray
    u: np.ndarray
    compute_ns: np.ndarray
    step_ns: np.ndarray


def simulate(plant, policy, x0, steps: int, stepper: PlantStepper | None = None) -> SimRecord:
    """`steps` closed-loop steps from `x0`: `u_k = policy(float32(x_k))`, `x_{k+1} = plant.step(x_k, u_k)`."""
    stepper = stepper or PlantStepper(plant)
    n_x, n_u = stepper.n_x, stepper.n_u
    if (policy.n_x, policy.n_u) != (n_x, n_u):
        from lipnet.exceptions import LipnetDimension

        raise LipnetDimension(f"controller {policy.source} maps {policy.n_x} states to {policy.n_u} actions but "
                              f"the plant has n_x={n_x}, n_u={n_u}")
    x = np.empty((steps + 1, n_x))
    u = np.empty((steps, n_u))
    comp, step_ns = np.zeros(steps, np.int64), np.zeros(steps, np.int64)
    x[0] = np.asarray(x0, dtype=np.float64).reshape(n_x)
    state = np.empty(n_x, np.float32)
    clock = time.perf_counter_ns
    with stepper.context():
        for k in range(steps):
            state[:] = x[k]  # the same float32 rounding as the wire format
            t0 = clock()
            u[k] = np.asarray(policy(state), dtype=np.float32).reshape(n_u)
            t1 = clock()
            x[k + 1] = stepper(x[k], u[k])
            comp[k], step_ns[k] = t1 - t0, clock() - t1
    return SimRecord(x, u, comp, step_ns)
