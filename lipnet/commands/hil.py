"""`lipnet hil serve|run`: the device agent, and the plant-side fixed-rate loop that talks to it over UDP."""

from __future__ import annotations

import argparse
import json
import sys

from lipnet.train.config import seed_arg

__all__ = ["add_arguments", "run", "EXAMPLE", "format_summary"]

EXAMPLE = """examples:
  lipnet hil serve controller.onnx --listen 127.0.0.1:9870 --provider cpu
  lipnet hil run --plant pendulum?dt=0.005 --device 127.0.0.1:9870 --rate 200 --duration 5 --out hil/pendulum \\
      --model controller.onnx --fallback lqr

On a board without torch: pip install numpy onnxruntime && pip install --no-deps . ; then
  python -m hil.device controller.onnx --listen 0.0.0.0:9870
A C export (lipnet export RUN --out controller.c) is served the same way, through ctypes (no onnxruntime):
  lipnet hil serve controller.c --listen 127.0.0.1:9870       (or a built controller.so)
and without Python by the C agent: make -C hil/c CONTROLLER=$PWD/controller.c (see hil/PROTOCOL.md).

serve refuses a model whose graph does not match the digest recorded by `lipnet export` (corrupted or
modified: re-export it); a foreign ONNX model without lipnet metadata is served with a warning (unverified).

run's rule: a miss applies the fallback and the loop goes on; an outage the device recovers from is not a
failure. The run fails when the device is not answering at the end (every tick of the last --stall seconds,
or of the whole run, missed), when the plant state becomes non-finite, or when the miss ratio is above
--max-miss-ratio. The report is written either way; report.json's "result" says {"ok", "failure"}.

exit codes: 0 the run passed; 1 it ran but failed (one line on stderr says why, e.g. "device stopped
answering at t=1.23 s: ..."); 2 it could not run (bad option, plant or model, no device at the handshake)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve` and `run` subcommands."""
    from hil.device import build_parser

    sub = parser.add_subparsers(dest="hil_command", metavar="{serve,run}")
    serve = sub.add_parser("serve", help="serve controller.onnx (or controller.c) on a UDP port (the device agent)",
                           description="Answer each state datagram with the controller's action (onnxruntime, or "
                                       "the compiled C controller through ctypes).",
                           epilog="example: lipnet hil serve controller.onnx --listen 127.0.0.1:9870")
    build_parser(serve)
    r = sub.add_parser("run", help="step a plant at a fixed rate against a serving device",
                       description="Plant-side loop: fixed rate, deadline per step, fallback on a miss, report.",
                       epilog="example: lipnet hil run --plant double_integrator --device 127.0.0.1:9870 "
                              "--rate 200 --duration 5 --out hil/di --model controller.onnx")
    r.add_argument("--plant", required=True, help="plant spec (e.g. pendulum?dt=0.005)")
    r.add_argument("--device", default="127.0.0.1:9870", help="HOST:PORT of the agent (default %(default)s)")
    r.add_argument("--rate", type=float, help="loop rate in Hz (default 1/plant dt: real time)")
    r.add_argument("--duration", type=float, default=5.0, help="seconds of wall-clock time (default %(default)s)")
    r.add_argument("--out", required=True, help="report folder (report.json, trajectory.npz, PNG plots)")
    r.add_argument("--model", help="the served controller (ONNX or run folder): reference simulation + parity")
    r.add_argument("--fallback", choices=("hold", "zero", "lqr"), default="hold",
                   help="action on a deadline miss (default %(default)s)")
    r.add_argument("--deadline-ms", type=float, help="deadline after each release (default 70%% of the period)")
    r.add_argument("--loss", type=float, default=0.0, help="inject loss: drop each state datagram with this "
                                                         "probability")
    r.add_argument("--delay-ms", type=float, default=0.0, help="inject delay: hold every reply this long")
    r.add_argument("--x0", help="initial state, comma-separated (default: one draw of the plant's eval box)")
    r.add_argument("--seed", type=seed_arg, default=0, help="seed of the loss draws and the default x0")
    r.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="run the loop as SCHED_FIFO (or nice -10) where permitted (default on; the report says "
                        "what was granted)")
    r.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for the device")
    r.add_argument("--max-miss-ratio", type=float, help="fail (exit 1) if the deadline-miss ratio is above this "
                                                        "(default: no limit; an outage at the end fails anyway)")
    r.add_argument("--stall", type=float, default=1.0,
                   help="seconds of consecutive misses at the end of the run after which the device counts as "
                        "stopped and the run fails (default %(default)s)")
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.add_argument("--json", action="store_true", help="print report.json to stdout")


def _fmt(v, nd=1) -> str:
    """`v` with `nd` decimals (or a format spec such as `.3g`); "-" for None (a non-finite figure in the report)."""
    if v is None:
        return "-"
    return f"{v:{nd}}" if isinstance(nd, str) else f"{v:.{nd}f}"


def format_summary(rep: dict) -> str:
    """A short human-readable table of a HIL report."""
    t, m, p = rep["timing"], rep["misses"], rep["packets"]
    lines = [f"hil run: {rep['plant']['spec'] or rep['plant']['name']}  {rep['steps']} steps at "
             f"{t['rate_hz']:g} Hz (achieved {_fmt(t['rate_hz_achieved'])} Hz), device provider "
             f"{rep['controller']['device'].get('provider', '?')}",
             f"{'µs':<22}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>9}"]
    for key in ("rtt_us", "release_jitter_us", "device_compute_us", "plant_step_us"):
        s = t[key]
        lines.append(f"{key[:-3]:<22}" + "".join(f"{_fmt(s[q]):>9}" for q in ("p50", "p99", "p99.9", "max")))
    lines.append(f"misses {m['count']} ({100 * m['ratio']:.3f}%), longest burst {m['longest_burst']}, by reason "
                 + ", ".join(f"{k}={v}" for k, v in m["by_reason"].items() if v))
    lines.append(f"packets sent {p['sent']}, on time {p['on_time']}, late {p['late']}, invalid action "
                 f"{p.get('invalid', 0)}, lost {p['lost']}, injected loss {p['injected_loss']}; host overruns "
                 f"{t['overruns']}")
    perf = rep["performance"]
    lines.append(f"cost {_fmt(perf['cost'], '.6g')}, final |x - x_eq| {_fmt(perf['final_error'], '.3g')}")
    if "reference" in rep:
        par = rep["reference"]["parity"]
        line = f"vs simulate: cost {_fmt(rep['reference']['performance']['cost'], '.6g')}; "
        if par["equal"] is None:
            line += "parity not checked (the first tick missed its deadline)"
        else:
            line += (f"parity over {par['compared_steps']} steps (until the first miss): max |dx| "
                     f"{_fmt(par['max_abs_diff_x'], '.3g')}, {'equal' if par['equal'] else 'DIFFERENT'} to float32 "
                     "rounding")
        lines.append(line)
    result = rep.get("result", {"ok": True})
    lines.append("result: ok" if result["ok"] else f"result: FAILED: {result['failure']}")
    return "\n".join(lines)


def _run_loop(args) -> int:
    from hil.api import load_plant, run_hil
    from hil.device import parse_address
    from hil.host import HilConfig
    from lipnet.exceptions import LipnetValue

    try:
        device = parse_address(args.device)  # the device side's parser: a plain ValueError
    except ValueError as exc:
        raise LipnetValue(str(exc)) from None
    plant = load_plant(args.plant)
    rate = args.rate if args.rate else 1.0 / plant.dt
    cfg = HilConfig(rate=rate, duration=args.duration, fallback=args.fallback, loss=args.loss,
                    delay=args.delay_ms / 1e3, seed=args.seed, connect_timeout=args.connect_timeout,
                    realtime=args.realtime, stall=args.stall, max_miss_ratio=args.max_miss_ratio,
                    deadline=None if args.deadline_ms is None else args.deadline_ms / 1e3)
    rep, _, _ = run_hil(plant, device, cfg, x0=args.x0, out=args.out, model=args.model, plots=not args.no_plots)
    if abs(cfg.rate * plant.dt - 1) > 1e-9:
        print(f"note: plant dt {plant.dt:g} s at {cfg.rate:g} Hz runs plant time {cfg.rate * plant.dt:g}x real time",
              file=sys.stderr)
    print(json.dumps(rep, indent=2) if args.json else format_summary(rep))
    if not rep["result"]["ok"]:  # ran, but failed: the report is written; one line says why
        print(f"lipnet hil run: failed: {rep['result']['failure']} (report in {args.out})", file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    """Dispatch `serve` / `run`."""
    if args.hil_command == "serve":
        from hil.device import serve

        return serve(args)
    if args.hil_command == "run":
        return _run_loop(args)
    print("lipnet hil: give a subcommand, serve or run (see lipnet hil --help)", file=sys.stderr)
    return 2
