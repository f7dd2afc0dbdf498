"""Sweep benchmark: the same trials on Ray (every core of this machine) and one after another, in one run.

8 trials of the double integrator (seeds 0-7, the default training configuration with --steps 200), each a
full `lipnet sweep` trial (training, report, run folder). "one after another" is
`--backend local` (this process, one trial at a time); "ray" is the embedded local Ray with 1 CPU per trial,
its start-up and shutdown included. Both give each trial 1 torch thread and the same seeds, so the results must
agree; the table says whether they do. Target: ray / one after another <= 0.6 on 2 cores. Prints a table and
writes `benchmarks/results/sweep.json`.

    python benchmarks/sweep.py                 # about 5 minutes on 2 cores
    python benchmarks/sweep.py --trials 4 --steps 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

from lipnet.sweep import SweepSpec, run_sweep

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.6


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--plant", default="double_integrator")
    ap.add_argument("--steps", type=int, default=200, help="training steps (0: the training default)")
    ap.add_argument("--hidden", default="", help="hidden widths, e.g. 64,64 (default: the training default)")
    ap.add_argument("--order", choices=["sequential-first", "ray-first"], default="sequential-first")
    args = ap.parse_args()
    base = {"plant": args.plant}
    if args.steps:
        base["steps"] = args.steps
    if args.hidden:
        base["hidden"] = [int(h) for h in args.hidden.split(",")]
    spec = SweepSpec(base=base, grids=[{"seed": list(range(args.trials))}])
    results = {}
    order = ["local", "ray"] if args.order == "sequential-first" else ["ray", "local"]
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in order:
            t0 = time.perf_counter()
            res = run_sweep(spec, Path(tmp) / backend, backend=backend, cpus_per_trial=1, progress=False,
                            log=lambda *a: None)
            wall = time.perf_counter() - t0
            results[backend] = {"wall_s": wall, "done": res.done, "failed": res.failed,
                                "trial_seconds": [r.get("seconds") for r in res.rows],
                                "trial_wall_seconds": [r.get("wall_seconds") for r in res.rows],
                                "costs": [r.get("cost_vs_lqr_optimum") for r in res.rows],
                                "nodes": sorted({str(r.get("node")) for r in res.rows})}
            print(f"{backend:>6}: {wall:7.1f} s for {res.done} trials ({res.failed} failed)", flush=True)
    seq, ray = results["local"], results["ray"]
    ratio = ray["wall_s"] / seq["wall_s"]
    same = all(a is not None and b is not None and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-9)
               for a, b in zip(seq["costs"], ray["costs"], strict=True))
    cores = os.cpu_count()
    print(f"\n| {args.trials} trials of {args.plant} on {cores} cores | wall s | s per trial (mean trial time) |")
    print("|---|---|---|")
    for name, r in (("one after another (--backend local)", seq), ("Ray, local, 1 CPU per trial", ray)):
        per = [s for s in r["trial_wall_seconds"] if s is not None]
        print(f"| {name} | {r['wall_s']:.1f} | {r['wall_s'] / args.trials:.1f} ({sum(per) / max(1, len(per)):.1f}) |")
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"\nratio ray / one after another: {ratio:.3f} (target <= {TARGET}: {verdict}); same results: "
          f"{'yes' if same else 'NO'}; load average before {load_before}, after {_load()}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "sweep.json"
    path.write_text(json.dumps({"args": vars(args), "cores": cores, "machine": platform.machine(),
                                "ratio": ratio, "target": TARGET, "met": ratio <= TARGET, "same_results": same,
                                "load_before": load_before, "load_after": _load(), "results": results},
                               indent=1, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
