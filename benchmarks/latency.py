"""Per-call latency of an exported controller at batch 1, one thread: the runtime factory against the baselines.

For 2×64 and 3×256 controllers (n_x=4, n_u=1): `export.session` (its default call path, and each call path
it can take), a default `InferenceSession.run`, the same with the factory's tuned options, torch eager (the
trained `Controller`, and the folded plain module that was exported; one thread, no_grad) and the numpy
reference `export.numpy_policy`. Each method is timed call by call (`perf_counter_ns`, garbage collector off)
for `--calls` calls per repeat; the methods are interleaved within each repeat and the table shows the median
over repeats of p50 / p99 / max, with the ratio of each p50 to the factory's measured in the same repeat.
Target (2×64): factory p50 ≤ 4.5 µs, p99 ≤ 10 µs.

    python benchmarks/latency.py [--quick] [--calls N] [--repeats R]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import export  # noqa: E402
from export.folded import fold_controller  # noqa: E402
from export.runtime import _options  # noqa: E402
from lipnet.nn import Controller  # noqa: E402

SIZES = {"2x64": (64, 64), "3x256": (256, 256, 256)}
TARGET = {"p50": 4.5, "p99": 10.0}


def _time(fn, states: np.ndarray, calls: int) -> np.ndarray:
    n = len(states)
    out = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(calls):
            x = states[i % n]
            t0 = clock()
            fn(x)
            out[i] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    return out / 1e3  # µs


def _methods(controller: Controller, path: Path) -> dict:
    factory = export.session(path)
    methods = {f"factory ({factory.call_path})": factory}
    for call_path in ("iobinding-c", "iobinding", "run"):
        if call_path != factory.call_path:
            try:
                methods[f"factory path {call_path}"] = export.session(path, call_path=call_path)
            except ValueError:
                pass  # not available in this onnxruntime
    default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    methods["InferenceSession.run (default options)"] = lambda x: default.run(None, {"state": x[None]})[0][0]
    tuned = ort.InferenceSession(str(path), _options(1, "all", 3), providers=["CPUExecutionProvider"])
    methods["InferenceSession.run (1 thread, tuned)"] = lambda x: tuned.run(["action"], {"state": x[None]})[0][0]
    torch.set_num_threads(1)

    def torch_eager(x):
        with torch.no_grad():
            return controller(torch.from_numpy(x)[None])[0].numpy()
    methods["torch eager (Controller)"] = torch_eager
    folded = fold_controller(controller)

    def torch_folded(x):
        with torch.no_grad():
            return folded(torch.from_numpy(x)[None])[0].numpy()
    methods["torch eager (folded plain module)"] = torch_folded
    methods["numpy reference (numpy_policy)"] = export.numpy_policy(path)
    return methods


def run(calls: int, repeats: int, out_json: Path) -> dict:
    """Time every method for every size; print the table; write the JSON; return the results."""
    rng = np.random.default_rng(0)
    results = {"calls": calls, "repeats": repeats, "python": platform.python_version(), "onnxruntime": ort.__version__,
               "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size, hidden in SIZES.items():
            torch.manual_seed(0)
            ctl = Controller(4, 1, hidden=hidden, activation="relu", u_low=-1.0, u_high=1.0).eval()
            path = Path(tmp) / f"{size}.onnx"
            export.export_controller(ctl, path, samples=2000)
            methods = _methods(ctl, path)
            states = rng.normal(size=(64, 4)).astype(np.float32)
            for fn in methods.values():  # warm up every path before timing any
                _time(fn, states, 2000)
            per = {name: [] for name in methods}
            for _ in range(repeats):
                for name, fn in methods.items():
                    t = _time(fn, states, calls)
                    per[name].append((np.percentile(t, 50), np.percentile(t, 99), t.max()))
            factory_name = next(iter(methods))
            base = np.asarray(per[factory_name])
            table = {}
            for name, rows in per.items():
                arr = np.asarray(rows)
                table[name] = {"p50_us": float(np.median(arr[:, 0])), "p99_us": float(np.median(arr[:, 1])),
                               "max_us": float(np.median(arr[:, 2])),
                               "p50_per_repeat": [float(v) for v in arr[:, 0]],
                               # ratio measured side by side in each repeat, then the median
                               "ratio_p50_to_factory": float(np.median(arr[:, 0] / base[:, 0]))}
            f = table[factory_name]
            results["sizes"][size] = {"hidden": list(hidden), "methods": table,
                                      "factory_meets_target": size != "2x64" or
                                      (f["p50_us"] <= TARGET["p50"] and f["p99_us"] <= TARGET["p99"])}
            _print(size, table)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=2))
    return results


def _print(size: str, table: dict) -> None:
    print(f"\n{size} controller (4 → {size} → 1), batch 1, 1 thread: median over repeats")
    print(f"  {'method':<42} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9} {'p50 / factory':>14}")
    for name, r in table.items():
        print(f"  {name:<42} {r['p50_us']:>8.2f} {r['p99_us']:>8.2f} {r['max_us']:>9.1f} "
              f"{r['ratio_p50_to_factory']:>14.2f}")
    if size == "2x64":
        f = next(iter(table.values()))
        ok = f["p50_us"] <= TARGET["p50"] and f["p99_us"] <= TARGET["p99"]
        print(f"  target p50 ≤ {TARGET['p50']} µs and p99 ≤ {TARGET['p99']} µs: {'met' if ok else 'NOT met'}")


def main(argv=None) -> int:
    """Command line: `--quick` (10,000 calls × 3 repeats), `--calls`, `--repeats`, `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 calls per repeat")
    parser.add_argument("--calls", type=int, default=None, help="calls per repeat and method (default 100,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json")
    args = parser.parse_args(argv)
    calls = args.calls or (10_000 if args.quick else 100_000)
    run(calls, args.repeats, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
