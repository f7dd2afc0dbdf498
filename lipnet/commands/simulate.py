"""`lipnet simulate`: the closed loop in one process (a run folder or an ONNX model against a plant)."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_arguments", "run", "EXAMPLE", "format_summary"]

EXAMPLE = """examples:
  lipnet simulate runs/pendulum --out sim/pendulum                      # the plant recorded in the run
  lipnet simulate controller.onnx --plant pendulum --x0 0.2,0 --duration 5 --out sim/pend_onnx

The report has the layout of `lipnet hil run` (report.json, trajectory.npz, trajectory.png)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `lipnet simulate`."""
    p.add_argument("model", help="run folder (controller.pt, torch) or controller.onnx (onnxruntime)")
    p.add_argument("--plant", help="plant spec (default: the plant recorded in the model)")
    p.add_argument("--out", help="report folder (report.json, trajectory.npz, trajectory.png)")
    p.add_argument("--x0", help="initial state, comma-separated (default: one draw of the plant's eval box)")
    p.add_argument("--duration", type=float, help="plant time in seconds (default: the plant's horizon)")
    p.add_argument("--seed", type=int, default=0, help="seed of the default x0")
    p.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu",
                   help="onnxruntime provider for an ONNX model")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")


def format_summary(rep: dict) -> str:
    """A short human-readable summary of a simulation report."""
    perf, t = rep["performance"], rep["timing"]
    return "\n".join([
        f"simulate: {rep['controller']['source']} ({rep['controller']['kind']}) on "
        f"{rep['plant']['spec'] or rep['plant']['name']}, {rep['steps']} steps of {rep['plant']['dt']:g} s",
        f"cost {perf['cost']:.6g} ({perf['cost_per_step']:.4g}/step), final |x - x_eq| {perf['final_error']:.3g}, "
        f"rms {perf['rms_error']:.3g}",
        f"controller call p50 {t['controller_us']['p50']:.1f} µs, plant step p50 {t['plant_step_us']['p50']:.1f} µs",
    ])


def run(args) -> int:
    """Simulate and print the summary (or the JSON report)."""
    from hil.api import run_simulation
    from hil.simulate import load_policy
    from lipnet.exceptions import LipnetArgument

    try:
        if args.duration is not None and not args.duration > 0:
            raise ValueError(f"--duration must be > 0 s, got {args.duration}")
        policy = load_policy(args.model, args.provider)
        rep, _ = run_simulation(args.plant, policy, x0=args.x0, duration=args.duration, out=args.out,
                                seed=args.seed, plots=not args.no_plots)
    except (ValueError, FileNotFoundError) as exc:
        raise LipnetArgument(str(exc)) from None
    print(json.dumps(rep, indent=2) if args.json else format_summary(rep))
    return 0 if rep["performance"]["finite"] else 1
