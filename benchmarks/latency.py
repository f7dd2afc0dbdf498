"""Per-call latency of an exported controller at batch 1, one thread: the runtime factory against the baselines.

For 2×64 and 3×256 controllers (n_x=4, n_u=1): `export.session` (its default call path, and each call path
it can take), a default `InferenceSession.run`, the same with the factory's tuned options, torch eager (the
trained `Controller`, and the folded plain module that was exported; one thread, no_grad), the numpy
reference `export.numpy_policy`, and the C export (`lipnet export --out controller.c`, built with the system
compiler at `-std=c99 -O2`): called from Python through ctypes (`export.c_build.CPolicy`, what `lipnet hil
serve controller.c` runs), and timed in C by a small C program (`clock_gettime` around each call, its own
p50 / p99 / max; the clock pair's own cost, printed beside, is included). Each Python method is timed call by
call (`perf_counter_ns`, garbage collector off) for `--calls` calls per repeat; the methods (the C program
too) are interleaved within each repeat and the table shows the median over repeats of p50 / p99 / max, with
the ratio of each p50 to the factory's (the tuned onnxruntime path) measured in the same repeat.
Targets (2×64): factory p50 ≤ 4.5 µs, p99 ≤ 10 µs; C timed in C p50 ≤ 1.5 µs, p99 ≤ 3 µs and ≥ 3× faster
than the factory; C through ctypes faster than the factory.

    python benchmarks/latency.py [--quick] [--calls N] [--repeats R]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
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
from export.c_build import CFLAGS, compiler_version, find_compiler, load_c_policy  # noqa: E402
from export.c_export import export_c  # noqa: E402
from export.folded import fold_controller  # noqa: E402
from export.runtime import PROVIDERS, _options  # noqa: E402
from lipnet.nn import Controller  # noqa: E402
from plants.fileio import atomic_write  # noqa: E402

SIZES = {"2x64": (64, 64), "3x256": (256, 256, 256)}
TARGET = {"p50": 4.5, "p99": 10.0}
TARGET_C = {"p50": 1.5, "p99": 3.0, "speedup": 3.0}
C_LOOP = "C timed in C (clock_gettime loop)"
C_CTYPES = "C through ctypes (CPolicy)"

# Times lipnet_policy call by call in C: argv[1] calls over 64 states; prints p50 p99 max (µs) and the p50 of an
# empty timed pair (the clock's own cost, included in the figures).
_TIMER = r"""#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "controller.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ns(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e9 + (double)(b->tv_nsec - a->tv_nsec);
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 100000, i;
    static float states[64][LIPNET_N_X];
    float u[LIPNET_N_U];
    volatile float sink = 0.0f;
    unsigned s = 12345u;
    double *t = malloc((size_t)calls * sizeof *t), *e = malloc((size_t)calls * sizeof *e);
    struct timespec a, b;
    int k;
    if (!t || !e || calls < 1)
        return 2;
    for (i = 0; i < 64; ++i)
        for (k = 0; k < LIPNET_N_X; ++k) {
            s = s * 1664525u + 1013904223u;
            states[i][k] = 4.0f * ((float)(s >> 8) / 16777216.0f) - 2.0f;
        }
    for (i = 0; i < 20000; ++i)
        lipnet_policy(states[i & 63], u);
    for (i = 0; i < calls; ++i) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        lipnet_policy(states[i & 63], u);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[i] = ns(&a, &b);
        sink += u[0];
    }
    for (i = 0; i < calls; ++i) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        clock_gettime(CLOCK_MONOTONIC, &b);
        e[i] = ns(&a, &b);
    }
    qsort(t, (size_t)calls, sizeof *t, cmp);
    qsort(e, (size_t)calls, sizeof *e, cmp);
    printf("%.4f %.4f %.4f %.4f\n", t[calls / 2] / 1e3, t[(long)(0.99 * (calls - 1))] / 1e3, t[calls - 1] / 1e3,
           e[calls / 2] / 1e3);
    free(t);
    free(e);
    return sink == 12345.0f;
}
"""


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


def _gpu_methods(path: Path, providers: list[str], skipped: dict) -> dict:
    """The factory session on each GPU provider asked for (onnxruntime-gpu and a GPU needed; else recorded why)."""
    methods = {}
    for provider in providers:
        try:
            methods[f"factory on {provider}"] = export.session(path, provider=provider, strict=True)
        except Exception as exc:  # noqa: BLE001 - a missing provider is a row that says why, not a crash
            skipped[provider] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return methods


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


def _c_paths(ctl: Controller, folder: Path, size: str, cc: list[str] | None) -> tuple[dict, Path | None, dict]:
    """Export the C source (three-way parity) and build the timing program; the ctypes method, the timer, info."""
    if cc is None:
        return {}, None, {"skipped": find_compiler()[1]}
    source = folder / f"{size}.c"
    report = export_c(ctl, source, samples=2000)
    policy = load_c_policy(source)
    timer_c = folder / f"timer_{size}.c"
    timer_c.write_text(_TIMER.replace('"controller.h"', f'"{size}.h"'))
    exe = folder / f"timer_{size}"
    subprocess.run([*cc, *CFLAGS, f"-I{folder}", str(timer_c), str(source), "-o", str(exe), "-lm"], check=True,
                   capture_output=True, text=True)
    info = {"compiler": compiler_version(cc), "flags": " ".join(CFLAGS), "parity": report.parity["status"],
            "parity_worst": report.parity["worst"], "source_bytes": report.size_bytes}
    return {C_CTYPES: policy}, exe, info


def _c_loop(exe: Path, calls: int) -> tuple[tuple[float, float, float], float]:
    out = subprocess.run([str(exe), str(calls)], check=True, capture_output=True, text=True).stdout.split()
    p50, p99, mx, clock = (float(v) for v in out)
    return (p50, p99, mx), clock


def run(calls: int, repeats: int, out_json: Path, providers: list[str] | None = None) -> dict:
    """Time every method for every size; print the table; write the JSON; return the results."""
    rng = np.random.default_rng(0)
    cc = find_compiler()[0]
    results = {"calls": calls, "repeats": repeats, "python": platform.python_version(), "onnxruntime": ort.__version__,
               "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size, hidden in SIZES.items():
            torch.manual_seed(0)
            ctl = Controller(4, 1, hidden=hidden, activation="relu", u_low=-1.0, u_high=1.0).eval()
            path = Path(tmp) / f"{size}.onnx"
            export.export_controller(ctl, path, samples=2000)
            methods = _methods(ctl, path)
            gpu_skipped: dict = {}
            methods.update(_gpu_methods(path, providers or [], gpu_skipped))
            if gpu_skipped:
                results.setdefault("providers_unavailable", {}).update(gpu_skipped)
                for provider, why in gpu_skipped.items():
                    print(f"  {size}: provider {provider} not measured here ({why})")
            c_methods, timer, c_info = _c_paths(ctl, Path(tmp), size, cc)
            methods.update(c_methods)
            states = rng.normal(size=(64, 4)).astype(np.float32)
            for fn in methods.values():  # warm up every path before timing any
                _time(fn, states, 2000)
            per = {name: [] for name in methods}
            if timer is not None:
                per[C_LOOP] = []
                clocks = []
            for _ in range(repeats):
                for name, fn in methods.items():
                    t = _time(fn, states, calls)
                    per[name].append((np.percentile(t, 50), np.percentile(t, 99), t.max()))
                if timer is not None:
                    row, clock = _c_loop(timer, calls)
                    per[C_LOOP].append(row)
                    clocks.append(clock)
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
            entry = {"hidden": list(hidden), "methods": table, "c": c_info,
                     "factory_meets_target": size != "2x64" or
                     (f["p50_us"] <= TARGET["p50"] and f["p99_us"] <= TARGET["p99"])}
            if timer is not None:
                c_info["clock_pair_p50_us"] = float(np.median(clocks))
                loop, via = table[C_LOOP], table[C_CTYPES]
                entry["c_meets_target"] = {
                    "timed_in_c": loop["p50_us"] <= TARGET_C["p50"] and loop["p99_us"] <= TARGET_C["p99"],
                    "speedup_vs_factory": 1.0 / loop["ratio_p50_to_factory"] >= TARGET_C["speedup"],
                    "ctypes_below_factory": via["ratio_p50_to_factory"] < 1.0}
            results["sizes"][size] = entry
            _print(size, table, c_info)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_json, json.dumps(results, indent=2))
    return results


def _print(size: str, table: dict, c_info: dict) -> None:
    print(f"\n{size} controller (4 → {size} → 1), batch 1, 1 thread: median over repeats")
    print(f"  {'method':<42} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9} {'p50 / factory':>14}")
    for name, r in table.items():
        print(f"  {name:<42} {r['p50_us']:>8.2f} {r['p99_us']:>8.2f} {r['max_us']:>9.1f} "
              f"{r['ratio_p50_to_factory']:>14.2f}")
    if "skipped" in c_info:
        print(f"  (no C rows: {c_info['skipped']})")
    else:
        print(f"  C: {c_info['compiler']} {c_info['flags']}; three-way parity at export {c_info['parity']} (worst "
              f"{c_info['parity_worst']:.2g}); the clock pair costs {c_info['clock_pair_p50_us']:.3f} µs (p50, "
              "included in the C-timed figures)")
    if size == "2x64":
        f = next(iter(table.values()))
        ok = f["p50_us"] <= TARGET["p50"] and f["p99_us"] <= TARGET["p99"]
        print(f"  target p50 ≤ {TARGET['p50']} µs and p99 ≤ {TARGET['p99']} µs: {'met' if ok else 'NOT met'}")
        if C_LOOP in table:
            loop, via = table[C_LOOP], table[C_CTYPES]
            ok = loop["p50_us"] <= TARGET_C["p50"] and loop["p99_us"] <= TARGET_C["p99"]
            speed = 1.0 / loop["ratio_p50_to_factory"]
            ratio = via["ratio_p50_to_factory"]
            print(f"  C target p50 ≤ {TARGET_C['p50']} µs and p99 ≤ {TARGET_C['p99']} µs: {'met' if ok else 'NOT met'};"
                  f" {speed:.1f}× faster than the factory (target ≥ {TARGET_C['speedup']:g}×: "
                  f"{'met' if speed >= TARGET_C['speedup'] else 'NOT met'}); ctypes p50 {ratio:.2f}× the factory's "
                  f"({'below' if ratio < 1 else 'NOT below'} it)")


def main(argv=None) -> int:
    """Command line: `--quick` (10,000 calls × 3 repeats), `--calls`, `--repeats`, `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 calls per repeat")
    parser.add_argument("--calls", type=int, default=None, help="calls per repeat and method (default 100,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json")
    parser.add_argument("--provider", default="cpu",
                        help="comma-separated providers to time besides the CPU ones: cuda, tensorrt (needs "
                             "onnxruntime-gpu and an NVIDIA GPU; an unavailable one is reported, not timed)")
    args = parser.parse_args(argv)
    calls = args.calls or (10_000 if args.quick else 100_000)
    gpu = [p.strip() for p in args.provider.split(",") if p.strip() and p.strip() != "cpu"]
    bad = [p for p in gpu if p not in PROVIDERS]
    if bad:
        parser.error(f"--provider takes {', '.join(PROVIDERS)}; got {', '.join(bad)}")
    run(calls, args.repeats, args.out, gpu)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
