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


def seal_onnx(path: Path, props: dict | None = None) -> Path:
    """Mark the ONNX file at `path` as `lipnet export` does for integrity: `lipnet.format` and the graph hash.

    `props` are added too (JSON-encoded, as the exporter writes them). For models built by other means than
    the exporter (`quick_onnx`, `onnx.helper`), so that the runtime's integrity check treats them as exports.
    """
    import onnx

    from export.metadata import FORMAT, set_metadata
    from export.runtime import DIGEST_KEY, graph_digest

    model = onnx.load(str(path))
    set_metadata(model, {"lipnet.format": FORMAT, **(props or {})})
    props = {p.key: p.value for p in model.metadata_props if p.key != DIGEST_KEY}
    set_metadata(model, {DIGEST_KEY: graph_digest(model.SerializeToString(), props)})
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


def random_controller(seed: int = 0, **kwargs):
    """A `Controller` with N(0, 1) weights and biases, whose outputs span the saturation (export parity tests)."""
    from lipnet.nn import Controller

    ctl = Controller(**kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ctl.parameters():
            p.normal_(0.0, 1.0, generator=g)
    return ctl.eval()


def blocked_agent_script(*modules: str) -> str:
    """Python source that runs `hil.device` with `modules` made unimportable (what a bare board lacks)."""
    return ("import sys, runpy\n"
            f"for m in {tuple(modules)!r}:\n"
            "    sys.modules[m] = None\n"
            "sys.argv = ['hil.device'] + sys.argv[1:]\n"
            "runpy.run_module('hil.device', run_name='__main__', alter_sys=True)\n")


def exchange(sock, data: bytes, timeout: float = 2.0) -> bytes | None:
    """Send one datagram to an agent and return its reply, or None after `timeout` seconds."""
    from hil import wire

    sock.send(data)
    sock.settimeout(timeout)
    try:
        return sock.recv(wire.MAX_DATAGRAM)
    except TimeoutError:
        return None
