"""HIL over loopback: the highest loop rate sustained with < 0.1% deadline misses, and round-trip latency at 1 kHz.

A 2×64 controller (n_x = 2, n_u = 1) is exported with `export.export_controller` and served by the device agent
in its own process (`python -m hil.device`, SCHED_FIFO where permitted); the host steps `double_integrator`
(a linear plant: the cheapest step, so the loop and the transport are what is measured) at a fixed rate.

1. Rate ladder: each rate runs `--seconds` (30 by default); the highest rate with a miss ratio < 0.1% before
   the first one that fails is "sustained". A miss is any tick without an on-time action (device late, lost,
   or the host itself late: overrun).
2. Latency at 1 kHz, `--repeats` runs, medians of p50 / p99 / p99.9 / max, side by side with the transport
   floor: the same loop against an echo agent that answers without running a model.
3. The C controller (`lipnet export --out controller.c` of the same checkpoint), where a C compiler is: the
   Python agent serving it through ctypes (`python -m hil.device controller.c`), and the standalone C agent
   (`hil/c/agent.c`, built by `export.c_build.build_agent`), each `--repeats` runs at 1 kHz in the same run.

Targets: ≥ 5 kHz sustained, p99 round trip ≤ 200 µs; the C agent's p99 round trip at least 30 % below the Python
(ONNX) agent's, with zero device-side misses at 1 kHz. The machine load (loadavg) is recorded with the results.

    python benchmarks/hil.py [--quick] [--seconds S] [--repeats R] [--rates 1000,2000,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plants  # noqa: E402
from hil.device import DeviceAgent, parse_address  # noqa: E402
from hil.host import INVALID, OK, TIMEOUT, UNREACHABLE, HilConfig, HilHost  # noqa: E402
from hil.stats import summary_us  # noqa: E402
from lipnet.nn import Controller  # noqa: E402
from lipnet.train.checkpoint import save_controller  # noqa: E402
from plants.fileio import atomic_write  # noqa: E402

PLANT = "double_integrator"
RATES = (200, 500, 1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 15000, 20000)
MAX_MISS = 1e-3
TARGET = {"rate_hz": 5000.0, "rtt_p99_us": 200.0, "c_agent_p99_vs_python": 0.7}


class _Echo:
    """A stand-in session that answers zeros without a model: the transport floor."""

    def __init__(self, n_x: int, n_u: int):
        self.n_x, self.n_u, self.provider = n_x, n_u, "echo"
        self._u = np.zeros(n_u, np.float32)

    def __call__(self, state):
        return self._u


def _echo_main(listen: str) -> int:
    from hil.realtime import realtime

    agent = DeviceAgent(_Echo(2, 1), parse_address(listen))
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    with realtime(True) as sched:
        print(f"hil device: listening on {agent.address[0]}:{agent.address[1]} scheduling={sched}", flush=True)
        agent.serve_forever()
    return 0


def _start(args: list[str], python: bool = True) -> tuple[subprocess.Popen, tuple[str, int], str]:
    proc = subprocess.Popen([sys.executable, *args] if python else args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"agent did not start: {line!r} {proc.stderr.read()}")
    sched = line.rsplit("scheduling=", 1)[-1].split()[0]
    return proc, parse_address(line.split("listening on ")[1].split()[0]), sched


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _model(folder: Path) -> Path:
    torch.manual_seed(0)
    ctrl = Controller(2, 1, hidden=(64, 64), u_low=[-1.0], u_high=[1.0])
    save_controller(ctrl, folder, plant=PLANT, dt=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from export import export_controller

        export_controller(folder, folder / "controller.onnx", samples=1000)
    return folder / "controller.onnx"


def _c_agents(folder: Path, plant, seconds: float, repeats: int) -> dict:
    """1 kHz runs against the C controller: the Python agent through ctypes, and the standalone C agent."""
    from export.c_build import build_agent, find_compiler
    from export.c_export import export_c

    labels = ("C via ctypes, Python agent", "C agent (hil/c/agent.c)")
    if find_compiler()[0] is None:
        return dict.fromkeys(labels, find_compiler()[1])
    source = folder / "controller.c"
    export_c(folder, source, samples=1000)
    build_agent(source, folder / "lipnet-agent")
    commands = {labels[0]: (["-m", "hil.device", str(source), "--listen", "127.0.0.1:0", "--realtime"], True),
                labels[1]: ([str(folder / "lipnet-agent"), "--listen", "127.0.0.1:0", "--realtime"], False)}
    out = {}
    for label, (cmd, python) in commands.items():
        proc, addr, _ = _start(cmd, python=python)
        try:
            out[label] = [_run(plant, addr, 1000.0, seconds) for _ in range(repeats)]
        finally:
            _stop(proc)
        r = out[label]
        print(f"  {label}: 1 kHz rtt p50 {np.median([x['rtt_us']['p50'] for x in r]):.0f} µs p99 "
              f"{np.median([x['rtt_us']['p99'] for x in r]):.0f} µs, misses {[x['misses'] for x in r]}", flush=True)
    return out


def _run(plant, addr, rate: float, seconds: float) -> dict:
    cfg = HilConfig(rate=rate, duration=seconds, realtime=True)
    with HilHost(plant, addr, cfg) as host:
        rec = host.run(np.array([1.0, -0.5]))
    miss = rec.status != OK
    overrun = rec.end_ns > rec.release_ns + 1e9 / rate
    d = np.diff(rec.start_ns)
    return {"rate_hz": rate, "seconds": seconds, "steps": len(miss), "misses": int(miss.sum()),
            "device_misses": int(np.isin(rec.status, (TIMEOUT, UNREACHABLE, INVALID)).sum()),
            "miss_ratio": float(miss.mean()), "overruns": int(overrun.sum()),
            "achieved_hz": float((len(d)) / (rec.start_ns[-1] - rec.start_ns[0]) * 1e9),
            "rtt_us": summary_us(rec.rtt_ns), "device_compute_us": summary_us(rec.compute_ns),
            "release_jitter_us": summary_us(rec.start_ns - rec.release_ns), "plant_step_us": summary_us(rec.step_ns),
            "late": rec.counters["late"], "lost": rec.counters["lost"], "scheduling": rec.counters["scheduling"]}


def _median(runs: list[dict], key: str) -> dict:
    return {q: float(np.median([r[key][q] for r in runs])) for q in ("p50", "p99", "p99.9", "max")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 s per rate, 2 repeats (development)")
    p.add_argument("--seconds", type=float, help="seconds per run (default 30; --quick 3)")
    p.add_argument("--repeats", type=int, help="1 kHz latency repeats (default 3; --quick 2)")
    p.add_argument("--rates", help=f"comma-separated ladder (default {','.join(map(str, RATES))})")
    p.add_argument("--echo-agent", help=argparse.SUPPRESS)  # internal: run the echo agent on HOST:PORT
    args = p.parse_args(argv)
    if args.echo_agent:
        return _echo_main(args.echo_agent)
    seconds = args.seconds or (3.0 if args.quick else 30.0)
    repeats = args.repeats or (2 if args.quick else 3)
    rates = [float(r) for r in args.rates.split(",")] if args.rates else list(RATES)
    torch.set_num_threads(1)
    plant = plants.load(PLANT)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = _model(Path(tmp))
        proc, addr, sched = _start(["-m", "hil.device", str(model), "--listen", "127.0.0.1:0", "--realtime"])
        try:
            ladder = []
            for rate in rates:
                r = _run(plant, addr, rate, seconds)
                ladder.append(r)
                print(f"  {rate:>7.0f} Hz: misses {r['misses']:>6} ({100 * r['miss_ratio']:.3f}%), overruns "
                      f"{r['overruns']}, rtt p50 {r['rtt_us']['p50'] or 0:.0f} µs p99 {r['rtt_us']['p99'] or 0:.0f} µs",
                      flush=True)
                if r["miss_ratio"] >= MAX_MISS:
                    break
            model_runs = [_run(plant, addr, 1000.0, seconds) for _ in range(repeats)]
        finally:
            _stop(proc)
        c_runs = _c_agents(Path(tmp), plant, seconds, repeats)
    eproc, eaddr, _ = _start([str(Path(__file__).resolve()), "--echo-agent", "127.0.0.1:0"])
    try:
        echo_runs = [_run(plant, eaddr, 1000.0, seconds) for _ in range(repeats)]
    finally:
        _stop(eproc)
    sustained = max([r["rate_hz"] for r in ladder if r["miss_ratio"] < MAX_MISS], default=None)
    rtt, rtt_echo = _median(model_runs, "rtt_us"), _median(echo_runs, "rtt_us")
    compute = _median(model_runs, "device_compute_us")
    result = {
        "benchmark": "hil", "controller": "2x64 (n_x=2, n_u=1)", "plant": PLANT, "seconds_per_run": seconds,
        "repeats": repeats, "device_scheduling": sched, "host_scheduling": model_runs[0]["scheduling"],
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "sustained_rate_hz": sustained, "ladder": ladder,
        "rtt_1khz_us": rtt, "rtt_1khz_echo_us": rtt_echo, "device_compute_1khz_us": compute,
        "misses_1khz": [r["misses"] for r in model_runs], "runs_1khz": model_runs, "runs_1khz_echo": echo_runs,
        "c": {k: v if isinstance(v, str) else {"rtt_1khz_us": _median(v, "rtt_us"),
                                               "device_compute_1khz_us": _median(v, "device_compute_us"),
                                               "misses_1khz": [r["misses"] for r in v],
                                               "device_misses_1khz": [r["device_misses"] for r in v], "runs": v}
              for k, v in c_runs.items()},
        "target": TARGET,
        "meets_target": {"rate": bool(sustained and sustained >= TARGET["rate_hz"]),
                         "rtt_p99": bool(rtt["p99"] <= TARGET["rtt_p99_us"])},
    }
    c_agent = result["c"].get("C agent (hil/c/agent.c)")
    if isinstance(c_agent, dict):
        result["meets_target"]["c_agent_p99"] = bool(
            c_agent["rtt_1khz_us"]["p99"] <= TARGET["c_agent_p99_vs_python"] * rtt["p99"])
        result["meets_target"]["c_agent_no_device_misses"] = not any(c_agent["device_misses_1khz"])
    print(f"\nHIL over loopback, 2x64 controller, {seconds:g} s per run, loadavg {load_before[0]:.1f} → "
          f"{result['loadavg_after'][0]:.1f} on {os.cpu_count()} CPUs, scheduling host {result['host_scheduling']}"
          f" / device {sched}")
    print(f"{'rate Hz':>9} {'misses':>8} {'ratio %':>9} {'overruns':>9} {'achieved':>9} {'rtt p50':>8} {'rtt p99':>8}")
    for r in ladder:
        print(f"{r['rate_hz']:>9.0f} {r['misses']:>8} {100 * r['miss_ratio']:>9.3f} {r['overruns']:>9} "
              f"{r['achieved_hz']:>9.0f} {r['rtt_us']['p50'] or 0:>8.0f} {r['rtt_us']['p99'] or 0:>8.0f}")
    print(f"sustained (< {100 * MAX_MISS:g}% misses): {sustained} Hz   (target ≥ {TARGET['rate_hz']:.0f})")
    print(f"\n1 kHz round trip, median of {repeats} runs   {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>8}  µs")
    rows = [("controller (ONNX 2x64, Python agent)", rtt)]
    for label, c in result["c"].items():
        if isinstance(c, dict):
            rows.append((f"controller ({label})", c["rtt_1khz_us"]))
    rows += [("echo (no model)", rtt_echo), ("device compute (ONNX, Python agent)", compute)]
    for label, c in result["c"].items():
        if isinstance(c, dict):
            rows.append((f"device compute ({label})", c["device_compute_1khz_us"]))
    for label, s in rows:
        print(f"  {label:<44}" + "".join(f"{s[q]:>9.1f}" for q in ("p50", "p99", "p99.9", "max")))
    print(f"  ratio controller / echo p50 {rtt['p50'] / rtt_echo['p50']:.2f}, p99 {rtt['p99'] / rtt_echo['p99']:.2f}"
          f"   (target p99 ≤ {TARGET['rtt_p99_us']:.0f} µs)")
    if isinstance(c_agent, dict):
        print(f"  C agent p99 / Python (ONNX) agent p99: {c_agent['rtt_1khz_us']['p99'] / rtt['p99']:.2f} (target ≤ "
              f"{TARGET['c_agent_p99_vs_python']:g}); device-side misses at 1 kHz {c_agent['device_misses_1khz']} "
              "(target 0)")
    for label, c in result["c"].items():
        if isinstance(c, str):
            print(f"  {label}: not run ({c})")
    out = ROOT / "benchmarks" / "results" / "hil.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
