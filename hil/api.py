"""High-level entry points: one HIL run or one simulation, from plant + controller to a report folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hil.host import HilConfig, HilHost, HilRecord
from hil.report import hil_report, sim_report, write_report
from hil.simulate import Policy, SimRecord, load_policy, simulate
from lipnet.exceptions import LipnetValue

__all__ = ["load_plant", "initial_state", "run_hil", "run_simulation"]


def load_plant(plant):
    """A `plants.Plant` from a spec string (`plants.load`) or the plant itself."""
    if isinstance(plant, str):
        import plants

        return plants.load(plant)
    return plant


def initial_state(plant, x0=None, seed: int = 0) -> np.ndarray:
    """`x0` as a float64 vector (a string `"a,b,..."` or a sequence), or one draw of the plant's eval box."""
    if x0 is None:
        import torch

        gen = torch.Generator().manual_seed(int(seed))
        return plant.sample_initial(1, split="eval", generator=gen, dtype=torch.float64)[0].numpy().copy()
    if isinstance(x0, str):
        try:
            x0 = [float(v) for v in x0.replace(" ", "").split(",") if v]
        except ValueError:
            raise LipnetValue(f"--x0 {x0!r}: give {plant.n_x} comma-separated numbers") from None
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x0.size != plant.n_x or not np.isfinite(x0).all():
        raise LipnetValue(f"x0 must be {plant.n_x} finite numbers (the plant's state), got {x0.tolist()}")
    return x0


def _hil_arrays(rec: HilRecord, dt: float, ref: SimRecord | None) -> dict:
    out = {"t": np.arange(len(rec.x)) * dt, "x": rec.x, "u": rec.u, "status": rec.status,
           "release_ns": rec.release_ns, "start_ns": rec.start_ns, "end_ns": rec.end_ns, "rtt_ns": rec.rtt_ns,
           "apply_ns": rec.apply_ns, "compute_ns": rec.compute_ns, "step_ns": rec.step_ns}
    if ref is not None:
        out.update(x_sim=ref.x, u_sim=ref.u)
    return out


def run_hil(plant, device: tuple[str, int], config: HilConfig, x0=None, out=None, model=None, plots: bool = True):
    """Connect, run the loop, simulate the reference (if `model` is given) and write the report to `out`.

    Returns `(report, record, reference)`.
    """
    plant = load_plant(plant)
    x0 = initial_state(plant, x0, config.seed)
    policy = model if isinstance(model, Policy) or model is None else load_policy(model)
    with HilHost(plant, device, config) as host:
        host.connect()
        record = host.run(x0)
    reference = simulate(plant, policy, x0, len(record.u)) if policy is not None else None
    report = hil_report(record, plant, reference)
    if policy is not None:
        report["controller"]["reference_model"] = policy.source
        report["controller"]["reference_integrity"] = policy.integrity
    if out is not None:
        latency = {"round-trip time": record.rtt_ns, "release jitter": record.start_ns - record.release_ns,
                   "plant step (host)": record.step_ns}
        write_report(out, report, _hil_arrays(record, plant.dt, reference), plant, reference, latency, plots)
    return report, record, reference


def run_simulation(plant, model, x0=None, duration: float | None = None, steps: int | None = None, out=None,
                   seed: int = 0, plots: bool = True):
    """Simulate the controller `model` (ONNX or run folder) on `plant`; writes the report to `out` if given.

    Returns `(report, record)`.
    """
    policy = model if isinstance(model, Policy) else load_policy(model)
    if plant is None:
        if not policy.plant_spec:
            raise LipnetValue(f"{model} does not record its plant; give --plant SPEC")
        plant = policy.plant_spec
    plant = load_plant(plant)
    x0 = initial_state(plant, x0, seed)
    if steps is None:
        from plants import MAX_HORIZON

        if duration is not None and not (math.isfinite(duration) and 0 < duration / plant.dt <= MAX_HORIZON):
            raise LipnetValue(f"duration must be > 0 s and at most {MAX_HORIZON} steps of dt = {plant.dt:g} s "
                             f"({MAX_HORIZON * plant.dt:g} s), got {duration}")
        steps = max(1, round(duration / plant.dt)) if duration is not None else int(plant.horizon)
    sim = simulate(plant, policy, x0, steps)
    report = sim_report(sim, plant, policy, x0)
    if out is not None:
        arrays = {"t": np.arange(len(sim.x)) * plant.dt, "x": sim.x, "u": sim.u,
                  "status": np.zeros(len(sim.u), np.int8), "compute_ns": sim.compute_ns, "step_ns": sim.step_ns}
        write_report(Path(out), report, arrays, plant, None,
                     {"controller call": sim.compute_ns, "plant step": sim.step_ns}, plots)
    return report, sim
