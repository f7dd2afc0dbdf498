"""Beyond the saturated LQR: the wide tasks, lipnet's default training against the saturated LQR on the same states.

For each task (a plant spec) and seed, `lipnet train` with the default configuration (what `lipnet train --plant
SPEC` runs), then on the run's 512 held-back evaluation states: success (final state within 5 % of the evaluation
box, angles wrapped) and mean cost of the trained controller and of the saturated LQR, the cost ratio on the states
both stabilise, training wall time (2 cores, one torch thread) and the Lipschitz bound by construction. Medians
over seeds. Prints a table and writes `benchmarks/results/beyond_lqr.json`.

With `--optimum`, `opt/LQR both` is the reference no controller can beat: on the same shared starts, the cost of
the best action sequence found per start (`lipnet.train.expert.trajectory_optimum`: L-BFGS over the whole
evaluation horizon within the actuator limits, started from the saturated LQR's and from the controller's
trajectories, the cheapest kept), over the saturated LQR's cost. A feedback policy's cost from a start is at least
the optimum's, so a cost ratio below this column is out of reach. It is a local optimum, an estimate of the true
optimum from above.

    python benchmarks/beyond_lqr.py                          # every task, 3 seeds (tens of minutes)
    python benchmarks/beyond_lqr.py --tasks "pendulum?task=swingup" --seeds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import plants
from lipnet.train.config import RunConfig
from lipnet.train.expert import trajectory_optimum
from lipnet.train.loop import train
from lipnet.train.objectives import stabilised

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ["pendulum?task=swingup", "cartpole?task=wide", "quadrotor2d?task=wide", "ballbeam?task=wide",
         "vanderpol?task=wide"]


def optimum_ratio(res, cfg: RunConfig) -> dict:
    """The open-loop optimum over the saturated LQR's cost on the evaluation starts both controllers stabilise."""
    plant, lqr, s = res.plant, res.lqr, res.summary
    x0 = plant.sample_initial(cfg.train.eval_batch, "eval", generator=torch.Generator().manual_seed(cfg.seed + 1),
                              dtype=torch.float64)
    P = lqr.P if s.get("terminal") == "lqr" else None
    controller = res.controller.double()
    with torch.no_grad():
        rl = plants.rollout(plant, lqr.policy, x0, horizon=plant.horizon, terminal=P)
        rc = plants.rollout(plant, controller, x0, horizon=plant.horizon, terminal=P)
    both = stabilised(plant, rl) & stabilised(plant, rc)  # the evaluator's own success test
    if not both.any():
        return {"optimum_ratio_both": None, "shared_starts": 0}
    t0 = time.perf_counter()
    i = both.nonzero().squeeze(1)
    inits = [plants.Rollout(states=r.states[:, i], actions=r.actions[:, i], cost=r.cost[i]) for r in (rl, rc)]
    opt = trajectory_optimum(plant, lqr, x0[i], inits, P).cost
    return {"optimum_ratio_both": float(opt.mean() / rl.cost[i].mean()), "shared_starts": int(i.numel()),
            "optimum_seconds": time.perf_counter() - t0}


def run_one(spec: str, seed: int, optimum: bool = False) -> dict:
    cfg = RunConfig(plant=spec, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train(cfg, Path(tmp) / "run", progress=False, log=lambda *a: None)
        seconds = time.perf_counter() - t0
    s, ev = res.summary, res.summary["evaluation"]
    extra = optimum_ratio(res, cfg) if optimum else {}
    return {"task": spec, "seed": seed, "seconds": seconds, "success": ev["success_rate"],
            "lqr_success": ev["lqr_policy_success_rate"], "cost": ev["cost"], "lqr_cost": ev["lqr_policy_cost"],
            "cost_ratio_both": ev["cost_ratio_to_lqr_policy_both_stabilised"],
            "cost_ratio_to_lqr_policy": ev["cost_ratio_to_lqr_policy"], "expert": s.get("expert"),
            "lipschitz": s["lipschitz_bound_by_construction"], "moved_from_warm_start": s.get("moved_from_warm_start"),
            "restored_best_step": s.get("restored_best_step"),
            "equilibrium_gain_error": s.get("equilibrium_gain_error"), "stopped": s.get("stopped"), **extra}


def _median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated plant specs (; inside a spec: none)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed … first-seed + seeds − 1")
    ap.add_argument("--optimum", action="store_true",
                    help="also the open-loop optimum on the shared starts (minutes per run on 6 states)")
    ap.add_argument("--tag", default="", help="suffix of the results file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for spec in [t for t in args.tasks.split(",") if t]:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row = run_one(spec, seed, optimum=args.optimum)
            rows.append(row)
            print(f"  {spec} seed {seed}: success {row['success']:.1%} (LQR {row['lqr_success']:.1%}), "
                  f"{row['seconds']:.0f} s", flush=True)
    table = []
    header = (f"{'task':<28}{'LQR success':>12}{'LQR cost':>10}{'lipnet success':>15}{'lipnet cost':>12}"
              f"{'cost/LQR both':>14}{'opt/LQR both':>13}{'train s':>9}{'Lip bound':>11}")
    print(header)
    for spec in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == spec]
        med = {k: _median(sub, k) for k in ("lqr_success", "lqr_cost", "success", "cost", "cost_ratio_both",
                                            "optimum_ratio_both", "seconds", "lipschitz")}
        table.append({"task": spec, "seeds": len(sub), **med})
        print(f"{spec:<28}{_fmt(med['lqr_success'], '.1%'):>12}{_fmt(med['lqr_cost']):>10}"
              f"{_fmt(med['success'], '.1%'):>15}{_fmt(med['cost']):>12}{_fmt(med['cost_ratio_both'], '.3f'):>14}"
              f"{_fmt(med['optimum_ratio_both'], '.3f'):>13}"
              f"{_fmt(med['seconds'], '.0f'):>9}{_fmt(med['lipschitz'], '.4g'):>11}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"beyond_lqr{('-' + args.tag) if args.tag else ''}.json"
    out.write_text(json.dumps({"median_over_seeds": table, "runs": rows}, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
