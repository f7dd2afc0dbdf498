"""Does the path-conditioned rescaling (paper 002) speed up training of a ReLU controller? Steps to a target cost.

Self-contained closed loop (it does not need the `lipnet train` loop): a linear plant `x⁺ = A x + B u`
driven by a ReLU `lipnet.nn.Controller` (plain layers, no saturation), cost over a horizon H
`J(x0) = Σ_t x_tᵀQx_t + u_tᵀRu_t + x_HᵀPx_H` (P from the DARE, so the LQR policy attains exactly the
optimum `x0ᵀPx0` and every policy has `J ≥ x0ᵀPx0`). The loss is the cost ratio
`mean J / mean x0ᵀPx0` on a fixed batch of initial states (full-batch, deterministic). For every seed the
same initial controller is trained twice (paired), once as is and once after `rescale(controller)`
(and optionally with a rescaling sweep every K steps, rebuilding the optimiser after each, as the
authors do, plus the control arm `reset-every` that rebuilds the optimiser every K steps without
rescaling, to separate the two effects); we count the steps until the ratio falls below the target.

Arms: Adam and SGD at fixed learning rates, and the automatic optimisers named with --optimizers
(e.g. `agd`), all through `lipnet.optim.make_optimizer`. Reported per arm: reached/seeds, median steps,
median of the per-seed speed-up (steps without / steps with; a run that never reaches the target counts
as the step budget, so the speed-up is then a bound), and the median final ratio.

Run: `python benchmarks/rescale_train.py [--quick]`; writes benchmarks/results/rescale_train.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from lipnet.nn import Controller
from lipnet.optim import base as optim_contract
from lipnet.optim import make_optimizer
from lipnet.pathlift.rescale import rescale

RESULTS = Path(__file__).resolve().parent / "results"


def make_plant(name: str) -> dict:
    """Linear test plants: A, B, Q, R, P (DARE) and a sampler of initial states."""
    if name == "double-integrator":
        dt = 0.1
        a = np.array([[1.0, dt], [0.0, 1.0]])
        b = np.array([[0.5 * dt * dt], [dt]])
        q, r = np.eye(2), 0.1 * np.eye(1)
    elif name == "unstable-4":
        rng = np.random.default_rng(1234)
        a = rng.normal(size=(4, 4))
        a *= 1.05 / max(abs(np.linalg.eigvals(a)))  # spectral radius 1.05: open-loop unstable
        b = rng.normal(size=(4, 2)) * 0.5
        q, r = np.eye(4), 0.1 * np.eye(2)
    else:
        raise ValueError(f"unknown plant {name!r}")
    p = scipy.linalg.solve_discrete_are(a, b, q, r)
    return {"name": name, "A": a, "B": b, "Q": q, "R": r, "P": p}


def rollout_ratio(ctrl, plant: dict, x0: torch.Tensor, horizon: int) -> torch.Tensor:
    """mean J(x0) / mean x0ᵀPx0 over the batch (≥ 1; 1 = LQR-optimal)."""
    t = {k: torch.as_tensor(plant[k], dtype=x0.dtype) for k in ("A", "B", "Q", "R", "P")}
    x, cost = x0, torch.zeros(x0.shape[0], dtype=x0.dtype)
    for _ in range(horizon):
        u = ctrl(x)
        cost = cost + ((x @ t["Q"]) * x).sum(-1) + ((u @ t["R"]) * u).sum(-1)
        x = x @ t["A"].T + u @ t["B"].T
    cost = cost + ((x @ t["P"]) * x).sum(-1)
    return cost.mean() / ((x0 @ t["P"]) * x0).sum(-1).mean()


def train_arm(ctrl, plant, x0, horizon, opt_name, lr, steps, target, rescale_every=0, reset_only=False) -> dict:
    """Train in place until the ratio reaches `target` or `steps` run out; returns steps and final ratio."""
    def build():
        return make_optimizer(opt_name, ctrl, lr=lr)

    opt = build()
    ratio = float("inf")
    for step in range(1, steps + 1):
        loss = optim_contract.step(opt, lambda: rollout_ratio(ctrl, plant, x0, horizon))
        ratio = float(loss.detach()) if loss is not None else float("nan")
        if not math.isfinite(ratio):
            return {"steps": None, "final_ratio": ratio, "diverged": True}
        if ratio <= target:
            return {"steps": step, "final_ratio": ratio, "diverged": False}
        if rescale_every and step % rescale_every == 0:
            if not reset_only:  # reset_only: the control arm, to separate the optimiser reset from the rescaling
                rescale(ctrl, max_sweeps=1)
            opt = build()  # the moments refer to the old coordinates
    with torch.no_grad():
        ratio = float(rollout_ratio(ctrl, plant, x0, horizon))
    return {"steps": None, "final_ratio": ratio, "diverged": False}


def initial_controller(plant: dict, hidden, seed: int, init: str) -> Controller:
    """A ReLU controller with the lipnet init (orthogonal × sqrt(out/in)) or torch's default nn.Linear init."""
    torch.manual_seed(seed)
    n_x, n_u = plant["B"].shape
    c = Controller(n_x, n_u, hidden, activation="relu", layer="plain")
    if init == "torch":
        with torch.no_grad():
            for lin in c.layers:
                ref = torch.nn.Linear(lin.in_features, lin.out_features)
                lin.raw_weight.copy_(ref.weight)
                lin.bias.copy_(ref.bias)
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one plant, 2 seeds, small budget")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--target", type=float, default=1.05, help="cost ratio to the LQR optimum to reach")
    ap.add_argument("--hidden", default="32,32")
    ap.add_argument("--init", choices=["lipnet", "torch"], default="torch")
    ap.add_argument("--optimizers", default="adam:3e-3,sgd:1e-2,agd",
                    help="comma list of name[:lr] (lr only for adam/sgd/manifold-adam)")
    ap.add_argument("--plants", default="double-integrator,unstable-4")
    ap.add_argument("--rescale-every", type=int, default=0, help="also run an arm re-rescaling every K steps")
    ap.add_argument("--out", default=str(RESULTS / "rescale_train.json"))
    ap.add_argument("--horizon", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    plants_ = ["double-integrator"] if args.quick else args.plants.split(",")
    seeds = range(2 if args.quick else args.seeds)
    steps = 300 if args.quick else args.steps
    hidden = tuple(int(h) for h in args.hidden.split(","))
    horizon, batch = args.horizon, args.batch
    torch.set_num_threads(1)
    arms = []
    for spec in args.optimizers.split(","):
        name, _, lr = spec.partition(":")
        arms.append((name, float(lr) if lr else None))
    variants = ["none", "path"] + (["path-every", "reset-every"] if args.rescale_every else [])
    rows = []
    for pname in plants_:
        plant = make_plant(pname)
        gen = torch.Generator().manual_seed(99)
        x0 = torch.randn(batch, plant["A"].shape[0], generator=gen)
        for opt_name, lr in arms:
            per_seed = []
            for seed in seeds:
                base = initial_controller(plant, hidden, seed, args.init)
                rec = {}
                for v in variants:
                    ctrl = copy.deepcopy(base)
                    info = None
                    if v not in ("none", "reset-every"):
                        info = rescale(ctrl)
                    t0 = time.perf_counter()
                    out = train_arm(ctrl, plant, x0, horizon, opt_name, lr, steps, args.target,
                                    rescale_every=args.rescale_every if v.endswith("-every") else 0,
                                    reset_only=v == "reset-every")
                    out["seconds"] = time.perf_counter() - t0
                    if info is not None:
                        out["rescale_sweeps"] = info.iterations
                        out["criterion"] = [info.criterion_before, info.criterion_after]
                    rec[v] = out
                per_seed.append(rec)
            rows.append(summarise(pname, opt_name, lr, per_seed, variants, steps))
            print_row(rows[-1])
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        {"benchmark": "rescale_train", "torch": torch.__version__, "quick": args.quick, "target": args.target,
         "hidden": hidden, "init": args.init, "horizon": horizon, "batch": batch, "step_budget": steps,
         "rows": rows}, indent=2))
    print(f"wrote {path}")
    return 0


def summarise(pname, opt_name, lr, per_seed, variants, budget) -> dict:
    """Medians over seeds, per variant, and the paired speed-ups of each rescaled variant over 'none'."""
    row = {"plant": pname, "optimizer": opt_name, "lr": lr, "seeds": len(per_seed), "variants": {}}
    for v in variants:
        s = [r[v]["steps"] for r in per_seed]
        row["variants"][v] = {
            "reached": sum(x is not None for x in s),
            "median_steps": float(np.median([x if x is not None else budget for x in s])),
            "median_final_ratio": float(np.median([r[v]["final_ratio"] for r in per_seed])),
            "steps": s,
            "diverged": sum(bool(r[v]["diverged"]) for r in per_seed),
        }
        if v != "none":
            # unreached counts as the budget (so the ratio is a bound); neither reached: no ratio
            sp = [None if r["none"]["steps"] is None and r[v]["steps"] is None
                  else (r["none"]["steps"] or budget) / (r[v]["steps"] or budget) for r in per_seed]
            row["variants"][v]["speedups"] = sp
            known = [x for x in sp if x is not None]
            row["variants"][v]["median_speedup"] = float(np.median(known)) if known else None
    return row


def print_row(row: dict) -> None:
    """One table line per variant."""
    lr = "" if row["lr"] is None else f"{row['lr']:g}"
    for v, d in row["variants"].items():
        sp = f"{d['median_speedup']:.2f}x" if d.get("median_speedup") is not None else "-"
        print(f"{row['plant']:18s} {row['optimizer']:6s} {lr:>6s} {v:10s} reached {d['reached']}/{row['seeds']}  "
              f"median steps {d['median_steps']:7.0f}  final ratio {d['median_final_ratio']:8.4f}  speed-up {sp}  "
              f"diverged {d['diverged']}  steps {d['steps']}")


if __name__ == "__main__":
    raise SystemExit(main())
