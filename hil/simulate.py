"""The closed loop in one process: the same plant stepping and controller arithmetic as a HIL run, no network.

`simulate(plant, policy, x0, steps)` is the reference a HIL run is compared with: with an ONNX policy and no
deadline misses the two trajectories agree to float32 rounding (they run the same float32 model on the same
float32-rounded states and step the plant with the same `PlantStepper`). A non-finite action or plant state
ends the simulation there: the record keeps the finite part and says what failed (`SimRecord.failure`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hil.stepper import PlantStepper
from lipnet.exceptions import LipnetDimension, LipnetValue

__all__ = ["Policy", "load_policy", "simulate", "SimRecord"]


@dataclass
class Policy:
    """A controller as `action = policy(state)` on float32 vectors, with where it came from."""

    fn: object
    n_x: int
    n_u: int
    source: str
    kind: str                 # "onnx", "c" or "torch"
    plant_spec: str = ""      # the plant the controller was trained on, if recorded
    dt: float | None = None
    meta: dict = field(default_factory=dict)
    integrity: str = "not checked"  # an ONNX model's check against its export digest (`export.runtime`)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        return self.fn(state)


def _torch_policy(path: Path) -> Policy:
    import torch

    from lipnet.train.checkpoint import load_trained

    trained = load_trained(path)
    ctrl = trained.controller
    buf = torch.zeros(1, ctrl.n_x, dtype=torch.float32)
    view = buf.numpy()[0]

    def fn(state):
        view[:] = state
        with torch.no_grad():
            return ctrl(buf).numpy()[0].copy()

    return Policy(fn, ctrl.n_x, ctrl.n_u, str(path), "torch", trained.plant, trained.dt or None,
                  {"lipschitz_bound": ctrl.lipschitz_bound()}, "not applicable (torch checkpoint)")


def load_policy(model, provider: str = "cpu") -> Policy:
    """A `Policy` from `controller.onnx` (onnxruntime, as on the device), `controller.c` / a built `.so` (ctypes),
    or a run folder / `controller.pt`.

    An ONNX model is verified against the graph digest recorded at export (`ModelError` if it does not match)."""
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"no controller at {path}: give a run folder, a controller.onnx or a controller.c")
    if path.suffix in (".c", ".so", ".dylib"):  # a C export, compiled here and called through ctypes
        from export.c_build import load_c_policy
        from export.runtime import recorded_plant

        pol = load_c_policy(path)
        return Policy(pol, pol.n_x, pol.n_u, str(path), "c", *recorded_plant(pol.metadata), pol.metadata,
                      pol.integrity)
    if path.suffix == ".onnx":
        from export.runtime import recorded_plant, session

        sess = session(str(path), provider=provider)
        meta = dict(getattr(sess, "metadata", {}) or {})
        return Policy(sess, int(sess.n_x), int(sess.n_u), str(path), "onnx", *recorded_plant(meta), meta,
                      sess.integrity)
    return _torch_policy(path)


@dataclass
class SimRecord:
    """States `x [N+1, n_x]`, actions `u [N, n_u]` and the per-step controller and plant times (ns).

    `failure` (None on success) is `{"step", "what": "action" | "state", "message"}`: the run stopped at step
    `N = failure["step"]` and the arrays hold only its finite part.
    """

    x: np.ndarray
    u: np.ndarray
    compute_ns: np.ndarray
    step_ns: np.ndarray
    failure: dict | None = None
    steps_requested: int = 0


def _values(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(a):.6g}" for a in np.asarray(v).reshape(-1)) + "]"


def _failure(k: int, what: str, dt: float, x: np.ndarray, u: np.ndarray, bad: np.ndarray | None = None) -> dict:
    if what == "action":
        message = (f"non-finite action at step {k} (t={k * dt:.4g} s): the controller returned {_values(u)} for "
                   f"the state x_{k} = {_values(x)}")
    else:
        message = (f"non-finite plant state x_{k + 1} after step {k} (t={(k + 1) * dt:.4g} s): {_values(bad)} from "
                   f"x_{k} = {_values(x)} and the action {_values(u)}")
    return {"step": k, "what": what, "message": message}


def simulate(plant, policy, x0, steps: int, stepper: PlantStepper | None = None) -> SimRecord:
    """`steps` closed-loop steps from `x0`: `u_k = policy(float32(x_k))`, `x_{k+1} = plant.step(x_k, u_k)`.

    Stops at the first non-finite action or state (see `SimRecord.failure`); a non-finite `x0` is refused."""
    stepper = stepper or PlantStepper(plant)
    n_x, n_u = stepper.n_x, stepper.n_u
    if (policy.n_x, policy.n_u) != (n_x, n_u):
        raise LipnetDimension(f"controller {policy.source} maps {policy.n_x} states to {policy.n_u} actions but "
                              f"the plant has n_x={n_x}, n_u={n_u}")
    x = np.empty((steps + 1, n_x))
    u = np.empty((steps, n_u))
    comp, step_ns = np.zeros(steps, np.int64), np.zeros(steps, np.int64)
    x[0] = np.asarray(x0, dtype=np.float64).reshape(n_x)
    if not np.isfinite(x[0]).all():
        raise LipnetValue(f"x0 must be finite, got {x[0].tolist()}")
    state = np.empty(n_x, np.float32)
    clock, isfinite, dt = time.perf_counter_ns, np.isfinite, float(getattr(stepper.plant, "dt", 1.0))
    failure, done = None, steps
    with stepper.context(), np.errstate(over="ignore", invalid="ignore"):  # a non-finite value is reported below
        for k in range(steps):
            state[:] = x[k]  # the same float32 rounding as the wire format
            t0 = clock()
            u[k] = np.asarray(policy(state), dtype=np.float32).reshape(n_u)
            t1 = clock()
            if not isfinite(u[k]).all():
                failure, done = _failure(k, "action", dt, x[k], u[k]), k
                break
            x[k + 1] = stepper(x[k], u[k])
            comp[k], step_ns[k] = t1 - t0, clock() - t1
            if not isfinite(x[k + 1]).all():
                failure, done = _failure(k, "state", dt, x[k], u[k], x[k + 1]), k
                break
    # Only the finite part is kept (len(x) == len(u) + 1): what failed is in `failure`, with its values.
    return SimRecord(x[: done + 1].copy(), u[:done].copy(), comp[:done].copy(), step_ns[:done].copy(), failure,
                     steps)
