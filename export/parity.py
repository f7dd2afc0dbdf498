"""Parity between the exported model and the torch `Controller`: where to sample states, how to compare.

Three regions: the training region (the plant's evaluation box of initial states when the plant spec loads,
else the controller's `state_offset ± 3·state_scale`), far outside it (the same box ×100) and the saturation
region (states at 1–1000× the box radius whose unsaturated command lies beyond an actuator limit).
The criterion is `|u_onnx − u_torch| / max(1, m(x))` with `m(x)` the largest pre-activation magnitude of any
layer at `x` (float64 forward pass, output layer included): the absolute error wherever the network works with
numbers up to 1, relative to its working magnitude above, since float32 resolves a sum of terms of size 1e3 to
about 1e-4 whatever the size of the result (an absolute 1e-5 there would reject correct graphs). The absolute
errors are reported beside it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["FLOAT32_TOLERANCE", "FP16_TOLERANCE", "training_box", "parity_states", "compare", "torch_actions",
           "working_magnitude"]

FLOAT32_TOLERANCE = 1e-5
# fp16 keeps 11 significant bits (unit roundoff 4.9e-4); a few layers of rounding stay well under 1e-2 on
# Lipschitz-bounded networks, while a wrong graph or an overflow is far above it.
FP16_TOLERANCE = 1e-2


def training_box(controller, plant_spec: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Centre and half-widths of the training region, and where they came from."""
    if plant_spec:
        try:
            import plants

            plant = plants.load(plant_spec)
            half = plant.eval_box()
            centre = np.asarray(plant.x_eq, np.float64)
            if centre.shape == (controller.n_x,) and half.shape == (controller.n_x,) and (half > 0).all():
                return centre, half, f"plant {plant_spec!r}: evaluation box of initial states"
        except Exception:  # noqa: BLE001 - plants.load may be missing or the spec not loadable here
            pass
    centre = controller.state_offset.double().cpu().numpy()
    half = 3.0 * controller.state_scale.double().cpu().numpy()
    return centre, half, "controller state_offset ± 3·state_scale"


@torch.no_grad()
def _unsaturated(controller, x: np.ndarray) -> np.ndarray:
    z = controller.features(torch.as_tensor(x, dtype=torch.float32))
    return (controller.action_offset + controller.action_scale * controller.network(z)).double().numpy()


def parity_states(controller, plant_spec: str | None = None, n: int = 10_000, seed: int = 0) -> dict:
    """`{"states": {region: float32 [n_r, n_x]}, "box": ..., "source": ...}` covering the three regions."""
    rng = np.random.default_rng(seed)
    centre, half, source = training_box(controller, plant_spec)
    n_x = controller.n_x

    def box(k, factor):
        return centre + factor * half * rng.uniform(-1.0, 1.0, size=(k, n_x))

    training = np.vstack([centre[None], box(n - 1, 1.0)])
    far = box(n, 100.0)
    regions = {"training": training, "far": far}
    if controller.has_limits and controller.saturation != "none":
        lo, hi = controller.limits()
        found = []
        for _ in range(3):  # rays at log-uniform radii; keep the states whose command would exceed a limit
            d = rng.normal(size=(4 * n, n_x))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            r = 10.0 ** rng.uniform(0.0, 3.0, size=(4 * n, 1))
            cand = centre + r * half * d * np.sqrt(n_x)
            v = _unsaturated(controller, cand)
            found.append(cand[((v < lo) | (v > hi)).any(axis=1)])
            if sum(len(f) for f in found) >= n:
                break
        regions["saturation"] = np.vstack(found)[:n]
    return {"states": {k: v.astype(np.float32) for k, v in regions.items()},
            "box": {"centre": centre.tolist(), "half_width": half.tolist()}, "source": source}


@torch.no_grad()
def torch_actions(controller, states: np.ndarray) -> np.ndarray:
    """The original `Controller`'s actions (float32) for float32 states."""
    return controller(torch.as_tensor(states, dtype=torch.float32)).numpy()


@torch.no_grad()
def working_magnitude(controller, states: np.ndarray) -> np.ndarray:
    """`m(x)`: the largest |pre-activation| of any layer (output layer included) per state, float64."""
    from lipnet.certify.empirical import network_forward
    from lipnet.certify.network import mlp_of

    pre: list[torch.Tensor] = []
    network_forward(mlp_of(controller), torch.as_tensor(np.asarray(states, dtype=np.float64)), preactivations=pre)
    return np.max([z.abs().amax(dim=-1).numpy() for z in pre], axis=0)


def compare(reference: np.ndarray, candidate: np.ndarray, scale: np.ndarray | None = None) -> dict:
    """Max absolute error and max error divided by `scale` per state (NaN or inf where reference is finite: inf)."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return {"n": int(len(reference)), "max_abs": float("inf"), "max_scaled": float("inf"),
                "note": f"shape {candidate.shape} vs {reference.shape}"}
    if reference.size == 0:
        return {"n": 0, "max_abs": 0.0, "max_scaled": 0.0}
    err = np.abs(candidate - reference)
    err = np.where(np.isfinite(err), err, np.inf)
    scaled = err if scale is None else err / np.asarray(scale, np.float64).reshape(-1, 1)
    worst = int(np.unravel_index(np.argmax(scaled), scaled.shape)[0])
    return {"n": int(len(reference)), "max_abs": float(err.max()), "max_scaled": float(scaled.max()),
            "worst_index": worst}
