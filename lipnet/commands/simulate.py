"""`lipnet simulate`: the closed loop in one process (a run folder or an ONNX model against a plant)."""

from __future__ import annotations

import argparse
import json
import sys

from lipnet.train.config import seed_arg

__all__ = ["add_arguments", "run", "EXAMPLE", "format_summary"]

EXAMPLE = """examples:
  lipnet simulate runs/pendulum --out sim/pendulum                      # the plant recorded in the run
  lipnet simulate controller.onnx --plant pendulum --x0 0.2,0 --duration 5 --out sim/pend_onnx

The report has the layout of `lipnet hil run` (report.json, trajectory.npz, trajectory.png). An ONNX model
must match the graph digest recorded by `lipnet export` (a corrupted or modified file is refused).

A non-finite action or plant state stops the simulation at that step: the report is still written, with
"result": {"ok": false, "failure": ..., "step": k}, and the trajectory up to the step.

exit codes: 0 the simulation ran to the end with finite values; 1 it ran but failed (a non-finite action or
state; one line on stderr says which and where); 2 bad input (model, plant, x0, options)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `lipnet simulate`."""
    from hil.device import PROVIDERS

    p.add_argument("model", help="run folder (controller.pt, torch) or controller.onnx (onnxruntime)")
    p.add_argument("--plant", help="plant spec (default: the plant recorded in the model)")
    p.add_argument("--out", help="report folder (report.json, trajectory.npz, trajectory.png)")
    p.add_argument("--x0", help="initial state, comma-separated (default: one draw of the plant's eval box)")
    p.add_argument("--duration", type=float, help="plant time in seconds (default: the plant's horizon)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the default x0")
    p.add_argument("--provider", choices=PROVIDERS, default="cpu",
                   help="onnxruntime provider for an ONNX model")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plot")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")


def format_summary(rep: dict) -> str:
    """A short human-readable summary of a simulation report."""
    perf, t, result = rep["performance"], rep["timing"], rep.get("result", {"ok": True})
    return "\n".join([
        f"simulate: {rep['controller']['source']} ({rep['controller']['kind']}, integrity "
        f"{rep['controller'].get('integrity', '-')}) on {rep['plant']['spec'] or rep['plant']['name']}, "
        f"{rep['steps']} steps of {rep['plant']['dt']:g} s",
        f"cost {_fmt(perf['cost'], '.6g')} ({_fmt(perf['cost_per_step'], '.4g')}/step), final |x - x_eq| "
        f"{_fmt(perf['final_error'], '.3g')}, rms {_fmt(perf['rms_error'], '.3g')}",
        f"controller call p50 {_fmt(t['controller_us']['p50'], '.1f')} µs, plant step p50 "
        f"{_fmt(t['plant_step_us']['p50'], '.1f')} µs",
        "result: ok" if result["ok"] else f"result: FAILED: {result['failure']}",
    ])


def _fmt(v, spec: str) -> str:
    return "-" if v is None else f"{v:{spec}}"  # None: no step ran, or a non-finite figure


def run(args) -> int:
    """Simulate and print the summary (or the JSON report)."""
    from hil.api import run_simulation
    from hil.simulate import load_policy
    from lipnet.exceptions import LipnetValue

    if args.duration is not None and not args.duration > 0:
        raise LipnetValue(f"--duration must be > 0 s, got {args.duration}")
    policy = load_policy(args.model, args.provider)
    rep, _ = run_simulation(args.plant, policy, x0=args.x0, duration=args.duration, out=args.out,
                            seed=args.seed, plots=not args.no_plots)
    print(json.dumps(rep, indent=2) if args.json else format_summary(rep))
    if not rep["result"]["ok"]:  # ran, but failed: the report (if --out) records it; one line says why
        where = f" (report in {args.out})" if args.out else ""
        print(f"lipnet simulate: failed: {rep['result']['failure']}{where}", file=sys.stderr)
        return 1
    return 0
