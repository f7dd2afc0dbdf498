"""Small problems and fixtures shared by several test modules."""

import warnings
from pathlib import Path

import torch


def quick_onnx(controller, path: Path, props: dict | None = None) -> Path:
    """A fast ONNX twin of `controller` (legacy exporter, no parity check), with optional metadata `props`.

    The full exporter (`export.export_controller`) is tested on its own; HIL and simulate tests only need a
    model file the device side can run.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(controller.eval(), (torch.zeros(1, controller.n_x),), str(path), input_names=["state"],
                          output_names=["action"], dynamo=False)
    if props:
        import onnx

        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, props)
        onnx.save(model, str(path))
    return Path(path)


def closed_loop_cost(model, x0, horizon=12, dt=0.2):
    """Double integrator x⁺ = A x + B u under the controller, cost mean Σ xᵀx + 0.1 uᵀu."""
    a = torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=x0.dtype)
    b = torch.tensor([[0.5 * dt * dt], [dt]], dtype=x0.dtype)
    x, cost = x0, 0.0
    for _ in range(horizon):
        u = model(x)
        cost = cost + (x.pow(2).sum(-1) + 0.1 * u.pow(2).sum(-1)).mean()
        x = x @ a.T + u @ b.T
    return cost / horizon
