"""Certified regions of attraction: lipnet's trained controller against the saturated LQR, by the same method.

For each plant: `lipnet train` with the default configuration (one seed), then `region_certificates` (what
`lipnet certify` runs) on the trained controller and on the plant's saturated LQR (same V family: quadratic from
each loop's own linearisation, the LQR's proven shape offered to the controller too, same
stated box: the plant's evaluation region), with `lipnet certify`'s budgets (the controller 120 s up to 4 states,
600 s above; the LQR half of it). Rows: certified level ρ, certified
volume (share of the box), certification seconds, boxes, and the ratio of the two volumes. Prints a table and
writes `benchmarks/results/roa.json`. The PVTOL-like plant is the built-in `pvtol?u_max=5`: python-control's
`examples/pvtol-lqr.py` model linearised at hover (6 states, 2 inputs, its final Q and R), discretised at 0.05 s,
with |u| ≤ 5 N added.

    python benchmarks/roa.py                     # every plant (about 25 minutes on one core)
    python benchmarks/roa.py --plants pendulum --seconds 30
    python benchmarks/roa.py --roa-steps 300     # after `lipnet train --roa` (its target offered to both laws)
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

import plants
from lipnet.certify.roa import region_certificates
from lipnet.train.checkpoint import load_trained
from lipnet.train.config import RunConfig
from lipnet.train.loop import train

RESULTS = Path(__file__).resolve().parent / "results"
PLANTS = ["pendulum", "cartpole", "quadrotor2d", "ballbeam", "vanderpol", "pvtol"]


def run_one(spec: str, seconds: float, seed: int = 0, roa_steps: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = RunConfig(plant=spec, seed=seed)
        cfg.train.roa_steps = roa_steps
        res = train(cfg, Path(tmp) / "run", progress=False, log=lambda *a: None)
        train_s = time.perf_counter() - t0
        controller = res.controller
        target = load_trained(Path(tmp) / "run").meta.get("roa_target")
    plant = plants.load(spec)
    row = {"plant": spec, "n_x": plant.n_x, "train_seconds": train_s, "roa_steps": roa_steps,
           "roa_stage": {k: v for k, v in (res.summary.get("roa_stage") or {}).items() if k != "P"} or None}
    # As `lipnet certify` does it: the --roa target (if any) for both laws, then the LQR, whose proven shape is one
    # more candidate for the controller's V.
    regions = region_certificates(controller, plant, seconds=seconds, offer=[target] if target else None)
    for key, reg in (("lipnet", regions["region"]), ("lqr", regions["region_lqr"])):
        row[key] = {k: reg.get(k) for k in ("certified", "rho", "volume_share", "seconds", "subboxes", "stopped",
                                            "reason", "rho_local", "contraction")}
    a, b = row["lipnet"].get("volume_share") or 0.0, row["lqr"].get("volume_share") or 0.0
    row["volume_ratio"] = a / b if b > 0 else (math.inf if a > 0 else None)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plants", default=",".join(PLANTS))
    ap.add_argument("--seconds", type=float, default=None,
                    help="certification budget of the controller's region (default: lipnet certify's, 120 s up to "
                         "4 states, 600 s above; the saturated LQR's: half)")
    ap.add_argument("--roa-steps", type=int, default=0, help="train with a --roa stage of this many steps (lipnet "
                    "train --roa: 300), then certify with its target offered, as lipnet certify does")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.plants.split(","):
        spec = "pvtol?u_max=5" if name == "pvtol" else name  # python-control's example with |u| ≤ 5 N
        row = run_one(spec, args.seconds, roa_steps=args.roa_steps)
        row["plant"] = name
        rows.append(row)
        ln, lq = row["lipnet"], row["lqr"]
        print(f"{name:<12} n_x={row['n_x']}  lipnet ρ={ln['rho']:.4g} vol={100 * (ln['volume_share'] or 0):.3g}% "
              f"({ln['seconds']:.1f} s, {ln['subboxes']} boxes)   LQR ρ={lq['rho']:.4g} "
              f"vol={100 * (lq['volume_share'] or 0):.3g}% ({lq['seconds']:.1f} s)   ratio {row['volume_ratio']}",
              flush=True)
    print()
    print(f"{'plant':<12}{'n_x':>4}{'lipnet vol %':>14}{'LQR vol %':>11}{'ratio':>8}{'lipnet s':>10}{'LQR s':>8}"
          f"{'boxes':>9}  certified")
    for r in rows:
        ln, lq = r["lipnet"], r["lqr"]
        ratio = "-" if r["volume_ratio"] is None else f"{r['volume_ratio']:.3g}"
        vol, vol_lqr = 100 * (ln["volume_share"] or 0), 100 * (lq["volume_share"] or 0)
        print(f"{r['plant']:<12}{r['n_x']:>4}{vol:>14.4g}{vol_lqr:>11.4g} {ratio:>8}"
              f"{ln['seconds']:>10.1f}{lq['seconds']:>8.1f}{ln['subboxes']:>9}  "
              f"{'yes' if ln['certified'] else 'NO: ' + str(ln.get('reason'))[:60]} / "
              f"{'yes' if lq['certified'] else 'NO: ' + str(lq.get('reason'))[:60]}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"roa{args.tag}.json"
    out.write_text(json.dumps({"rows": rows, "seconds_budget": args.seconds}, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
