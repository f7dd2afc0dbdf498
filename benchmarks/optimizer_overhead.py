"""Cost of one agd / sphere-newton / sphere-mm step relative to a plain gradient step, measured side by side.

Also: drift off the spheres over many float32 steps (with and without the base-point normalisation), and
loss vs steps on a toy closed loop (double integrator, Controller(2, 1, (64, 64), layer="frobenius")) against
Adam at lr 1e-3, with the finite-horizon LQR optimum for reference.

    python benchmarks/optimizer_overhead.py [--quick]

Prints tables and writes benchmarks/results/optimizer_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lipnet.manifolds import Sphere
from lipnet.nn import Controller
from lipnet.optim import base as optim_contract
from lipnet.optim.registry import make_optimizer

METHODS = ("gradient", "adam", "agd", "sphere-newton", "sphere-newton/nocheck", "sphere-mm")


def double_integrator(dt=0.2):
    a = torch.tensor([[1.0, dt], [0.0, 1.0]])
    b = torch.tensor([[0.5 * dt * dt], [dt]])
    return a, b


def closed_loop_cost(model, x0, horizon, a, b, r=0.1):
    x, cost = x0, 0.0
    for _ in range(horizon):
        u = model(x)
        cost = cost + (x.pow(2).sum(-1) + r * u.pow(2).sum(-1)).mean()
        x = x @ a.T + u @ b.T
    return cost / horizon


def lqr_finite_horizon(x0, horizon, a, b, r=0.1) -> float:
    """Optimal (time-varying) cost of the same finite-horizon problem: a lower bound for any policy."""
    a, b = a.double().numpy(), b.double().numpy()
    q, rr, p = np.eye(2), np.array([[r]]), np.zeros((2, 2))
    for _ in range(horizon):
        k = np.linalg.solve(rr + b.T @ p @ b, b.T @ p @ a)
        p = q + a.T @ p @ (a - b @ k)
    x = x0.double().numpy()
    return float(np.einsum("ni,ij,nj->n", x, p, x).mean() / horizon)


def problems(quick: bool):
    """(name, model factory, loss(model)) pairs: a regression batch and the closed loop."""
    g = torch.Generator().manual_seed(0)
    xr = torch.randn(256, 8, generator=g)
    yr = torch.tanh(xr[:, :2] * 2)
    a, b = double_integrator()
    x0 = torch.randn(64, 2, generator=g)
    horizon = 20 if quick else 40
    return [
        ("regression 8-64-64-2, batch 256", lambda: Controller(8, 2, (64, 64)),
         lambda m: 0.5 * (m(xr) - yr).pow(2).sum(-1).mean()),
        (f"closed loop 2-64-64-1, 64 x0, T={horizon}", lambda: Controller(2, 1, (64, 64)),
         lambda m: closed_loop_cost(m, x0, horizon, a, b)),
    ]


def make(method, model):
    if method == "gradient":
        return make_optimizer("sgd", model, lr=1e-3)
    if method == "adam":
        return make_optimizer("adam", model, lr=1e-3)
    if method == "sphere-newton/nocheck":  # without the decrease check: gradient + one Hessian-vector product
        return make_optimizer("sphere-newton", model, check_decrease=False)
    return make_optimizer(method, model)


def one_step(opt, model, loss_fn, counter):
    def counted():
        counter[0] += 1
        return loss_fn(model)

    return optim_contract.step(opt, counted)


def time_steps(quick: bool) -> list[dict]:
    """Median seconds per step of each method, interleaved round-robin so that machine load hits all alike."""
    repeats, block = (5, 3) if quick else (9, 5)
    rows = []
    for name, factory, loss_fn in problems(quick):
        torch.manual_seed(0)
        runs = {m: (factory(), None) for m in METHODS}
        runs = {m: (mod, make(m, mod)) for m, (mod, _) in runs.items()}
        counts = {m: [0] for m in METHODS}
        samples = {m: [] for m in METHODS}
        for m in METHODS:  # warm-up
            one_step(runs[m][1], runs[m][0], loss_fn, [0])
        for _ in range(repeats):
            for m in METHODS:
                model, opt = runs[m]
                t0 = time.perf_counter()
                for _ in range(block):
                    one_step(opt, model, loss_fn, counts[m])
                samples[m].append((time.perf_counter() - t0) / block)
        base = statistics.median(samples["gradient"])
        for m in METHODS:
            med = statistics.median(samples[m])
            rows.append({"problem": name, "method": m, "ms_per_step": 1e3 * med, "ratio_to_gradient": med / base,
                         "loss_evals_per_step": counts[m][0] / (repeats * block)})
    return rows


def drift(steps: int) -> list[dict]:
    """Worst |‖V_l‖_F − 1| over all layers and steps, float32, small regression (un-normalised runs: ≤ 2000 steps)."""
    rows = []
    for method in ("sphere-newton", "sphere-mm", "agd"):
        for renorm in ((True, False) if method != "agd" else (True,)):
            n_steps = steps if renorm else min(steps, 2000)
            torch.manual_seed(4)
            model = Controller(3, 2, (8, 8), layer="frobenius")
            x = torch.randn(32, 3)
            y = torch.tanh(x[:, :2] * 2)
            opt = make_optimizer(method, model, **({} if method == "agd" else {"renormalize": renorm}))
            worst, final_loss = 0.0, math.nan
            def loss_fn(m, x=x, y=y):
                return 0.5 * (m(x) - y).pow(2).sum(-1).mean()

            t0 = time.perf_counter()
            for _ in range(n_steps):
                final_loss = float(one_step(opt, model, loss_fn, [0]).detach())
                worst = max(worst, max(Sphere().distance_to_manifold(lin.direction) for lin in model.layers))
            rows.append({"method": method, "base_normalised": renorm, "steps": n_steps, "max_drift": worst,
                         "final_loss": final_loss, "seconds": time.perf_counter() - t0})
    return rows


def training(steps: int) -> dict:
    """Loss vs steps and wall time on the toy closed loop, zero tuning, against Adam at lr 1e-3."""
    a, b = double_integrator()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(32, 2, generator=g)
    horizon = 20
    out = {"lqr_finite_horizon": lqr_finite_horizon(x0, horizon, a, b), "curves": {}}
    for method in ("adam", "agd", "sphere-newton", "sphere-mm"):
        torch.manual_seed(0)
        model = Controller(2, 1, (64, 64), layer="frobenius")
        opt = make(method, model)
        losses, t0 = [], time.perf_counter()
        for _ in range(steps):
            losses.append(float(one_step(opt, model, lambda m: closed_loop_cost(m, x0, horizon, a, b), [0]).detach()))
        with torch.no_grad():
            losses.append(float(closed_loop_cost(model, x0, horizon, a, b)))
        out["curves"][method] = {"loss": losses, "seconds": time.perf_counter() - t0}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"torch": torch.__version__, "quick": args.quick}

    result["step_cost"] = rows = time_steps(args.quick)
    print("\nCost of one step (median, interleaved runs; ratio to a plain gradient step = forward+backward+SGD)")
    print(f"{'problem':40s} {'method':21s} {'ms/step':>9s} {'ratio':>7s} {'loss evals/step':>16s}")
    for r in rows:
        print(f"{r['problem']:40s} {r['method']:21s} {r['ms_per_step']:9.2f} {r['ratio_to_gradient']:7.2f} "
              f"{r['loss_evals_per_step']:16.2f}")

    result["drift"] = rows = drift(500 if args.quick else 10_000)
    print("\nDrift off the spheres, float32 (max over layers and steps of |‖V‖_F − 1|)")
    for r in rows:
        print(f"{r['method']:14s} base normalised={r['base_normalised']!s:5s} steps={r['steps']:6d} "
              f"max drift={r['max_drift']:.2e} final loss={r['final_loss']:.4g} ({r['seconds']:.0f} s)")

    result["training"] = tr = training(40 if args.quick else 150)
    marks = [k for k in (0, 10, 25, 50, 100, 150) if k < len(next(iter(tr["curves"].values()))["loss"])]
    print(f"\nToy closed loop (double integrator, T=20, 32 x0), Controller(2,1,(64,64),'frobenius'); "
          f"finite-horizon LQR optimum {tr['lqr_finite_horizon']:.4f}")
    print(f"{'method':14s} " + " ".join(f"{'step ' + str(k):>9s}" for k in marks) + f" {'final':>9s} {'wall s':>7s}")
    for m, c in tr["curves"].items():
        print(f"{m:14s} " + " ".join(f"{c['loss'][k]:9.4f}" for k in marks)
              + f" {c['loss'][-1]:9.4f} {c['seconds']:7.1f}")

    path = Path(__file__).resolve().parent / "results" / "optimizer_overhead.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
