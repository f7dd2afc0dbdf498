"""Benchmark of the Lipschitz upper bounds against LipSDP-neuron (cvxpy/SCS) as the reference.

For random MLPs (N(0, 1/n_in) weights, the standard fan-in initialisation) and lipnet Controllers (Frobenius layers with
biases and state scaling: the parametrisation training uses) at 4-(h×d)-1: every bound, its median time, its
ratio to LipSDP-neuron and to the empirical lower bound. Every method runs single-threaded in one process.

    python benchmarks/certify.py [--quick] [--skip-sdp-above N] [--kinds random,controller,perturbed] [--repeats R]
    python benchmarks/certify.py --reference results/certify_sdp_ref.json   # large nets: stored SCS references

SCS takes many minutes at 4-128-128-1 and beyond on a loaded 2-core machine, so those references are computed once
(in the background) into a JSON file of rows `{kind, net_id, seed, value, raw, seconds, load, fast_at_the_time}`,
where `fast_at_the_time` holds our bound timed in the same process right after SCS (same load). `--reference`
rebuilds each net, re-times our bound, and prints both speed ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lipnet.certify import MLP, Region, empirical_lower_bound, upper_bound
from lipnet.nn import Controller

SIZES = [(32, 2), (64, 2), (64, 3), (128, 2), (256, 3)]
METHODS = ["construction", "spectral", "path-norm", "eclipse-fast", "lipsdp-schur", "lipsdp-neuron"]


def make(kind: str, width: int, depth: int, seed: int):
    rng = np.random.default_rng(seed)
    dims = [4, *([width] * depth), 1]
    if kind == "random":
        ws = [rng.standard_normal((dims[i + 1], dims[i])) / np.sqrt(dims[i]) for i in range(len(dims) - 1)]
        return MLP(ws, [0.1 * rng.standard_normal(d) for d in dims[1:]], activation="relu")
    import torch

    torch.manual_seed(seed)
    c = Controller(4, 1, hidden=[width] * depth, layer="frobenius", gains=1.0, state_scale=[1.0, 2.0, 0.3, 1.0],
                   u_low=-10, u_high=10, action_scale=5.0)
    with torch.no_grad():
        for lin in c.layers:
            lin.bias.normal_(0, 0.1)
            if kind == "perturbed":
                # Trained-like: the orthogonal initial direction moved by a random step of equal size (training
                # drifts far from orthogonal), with layer gains 1.5.
                d = lin.direction
                d.add_(torch.randn_like(d) * d.norm() / d.numel() ** 0.5)
                d.div_(d.norm())
                lin.gain.fill_(1.5)
    return c


def build(kind: str, net_id: str, seed: int):
    """The net of a reference row: a run folder for `trained`, else `make(kind, width, depth, seed)`."""
    if kind == "trained":
        from lipnet.train.checkpoint import load_controller

        return load_controller(Path(__file__).resolve().parent.parent / net_id)
    width, depth = (int(v) for v in net_id.split("x"))
    return make(kind, width, depth, seed=1000 * seed + width * 10 + depth)


def reference_table(paths: list[str], repeats: int, out: str) -> int:
    """Our bound against stored LipSDP-neuron (SCS) references; adds the table to the JSON output."""
    refs = [r for p in paths for r in json.loads(Path(p).read_text())]
    rows = []
    print(f"{'kind':<10}{'net':<18}{'seed':>5}{'LipSDP(SCS)':>13}{'SCS s':>9}{'ours':>11}{'ours/SDP':>10}"
          f"{'ours s':>9}{'speed-up':>10}{'(same load)':>12}{'ECL-Fast/SDP':>13}")
    for ref in refs:
        net = build(ref["kind"], ref["net_id"], ref["seed"])
        rec, sec = timed("lipsdp-schur", net, repeats)
        ecl = upper_bound("eclipse-fast", net).value
        sdp, sdp_s = ref["value"], ref["seconds"]
        then = ref.get("fast_at_the_time", {}).get("lipsdp-schur", {}).get("seconds")
        row = {"kind": ref["kind"], "net": "-".join(map(str, ref["dims"])), "seed": ref["seed"], "lipsdp": sdp,
               "lipsdp_raw": ref["raw"], "lipsdp_seconds": sdp_s, "scs_eps": ref["eps"], "load": ref["load"],
               "ours": rec.value, "ours_sound": rec.sound, "ours_seconds": sec, "ours_seconds_same_load": then,
               "eclipse_fast": ecl, "ratio": rec.value / sdp if (rec.value and sdp) else None,
               "speedup": sdp_s / sec, "speedup_same_load": sdp_s / then if then else None}
        rows.append(row)
        fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        print(f"{row['kind']:<10}{row['net']:<18}{row['seed']:>5}{fmt(sdp, '.6g'):>13}{sdp_s:>9.1f}"
              f"{fmt(rec.value, '.6g'):>11}{fmt(row['ratio'], '.5f'):>10}{sec:>9.2f}{row['speedup']:>10.0f}"
              f"{fmt(row['speedup_same_load'], '.0f'):>12}{fmt(ecl / sdp if sdp else None, '.3f'):>13}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(out).read_text()) if Path(out).exists() else {}
    data = data if isinstance(data, dict) else {"sizes": data}
    data["large_reference"] = rows
    Path(out).write_text(json.dumps(data, indent=2))
    print(f"wrote {out}")
    return 0


def timed(method, net, repeats, **kw):
    times, rec = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec = upper_bound(method, net, **kw)
        times.append(time.perf_counter() - t0)
    return rec, statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2×32 and 2×64 only, one repeat")
    ap.add_argument("--skip-sdp-above", type=int, default=256, metavar="N",
                    help="skip LipSDP-neuron above N hidden neurons (default 256)")
    ap.add_argument("--kinds", default="random,controller")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast methods (median time)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "certify.json"))
    ap.add_argument("--reference", metavar="JSON", nargs="+", help="compare with stored SCS references (see above)")
    args = ap.parse_args(argv)
    if args.reference:
        return reference_table(args.reference, args.repeats, args.out)
    sizes = SIZES[:2] if args.quick else SIZES
    repeats = 1 if args.quick else args.repeats
    rows = []
    for kind in args.kinds.split(","):
        for width, depth in sizes:
            net = make(kind, width, depth, seed=width * 10 + depth)
            row = {"kind": kind, "net": f"4-{'-'.join([str(width)] * depth)}-1", "bounds": {}}
            low = empirical_lower_bound(net, Region.around(np.zeros(4), 3 * np.ones(4)))
            row["lower"] = low.value
            for m in METHODS:
                n_hidden = width * depth
                if m == "lipsdp-neuron" and n_hidden > args.skip_sdp_above:
                    row["bounds"][m] = {"value": None, "seconds": None, "note": f"skipped (> {args.skip_sdp_above})"}
                    continue
                rec, sec = timed(m, net, 1 if m == "lipsdp-neuron" else repeats, sdp_max_neurons=None)
                row["bounds"][m] = {"value": rec.value, "sound": rec.sound, "seconds": sec}
            rows.append(row)
            print_row(row, header=len(rows) == 1)
            sys.stdout.flush()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    data = data if isinstance(data, dict) else {}
    data["sizes"] = rows
    Path(args.out).write_text(json.dumps(data, indent=2))
    print(f"wrote {args.out}")
    return 0


def print_row(row, header=False):
    ref = row["bounds"].get("lipsdp-neuron", {}).get("value")
    if header:
        print(f"{'kind':<11}{'net':<15}{'method':<15}{'bound':>10}{'seconds':>10}{'/LipSDP':>9}{'/lower':>8}"
              f"{'speed-up':>10}")
    sdp_s = row["bounds"].get("lipsdp-neuron", {}).get("seconds")
    for m, b in row["bounds"].items():
        v, s = b.get("value"), b.get("seconds")
        fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        speed = sdp_s / s if (sdp_s and s and v is not None and m != "lipsdp-neuron") else None
        print(f"{row['kind']:<11}{row['net']:<15}{m:<15}{fmt(v, '.5g'):>10}{fmt(s, '.4f'):>10}"
              f"{fmt(v / ref if (v and ref) else None, '.4f'):>9}{fmt(v / row['lower'] if v else None, '.3f'):>8}"
              f"{fmt(speed, '.0f'):>10}" + ("" if b.get("sound", True) else "  (not sound)"))
    print(f"{row['kind']:<11}{row['net']:<15}{'empirical low':<15}{row['lower']:>10.5g}")


if __name__ == "__main__":
    sys.exit(main())
