"""manifold-adam (paper 001) against geoopt's RiemannianAdam on Stiefel problems, its learning-rate sweep, and drift.

Three parts, each printed as a table and written to `benchmarks/results/manifold_adam.json`:

1. side by side on Stiefel problems (orthogonal Procrustes regression and the Brockett cost, two sizes), same
   initial frames and learning rate: final loss gap, ‖YᵀY − I‖_F, time per step; medians over seeds;
2. learning-rate sweep of manifold-adam on those problems and on two toy closed-loop controller costs (a
   Controller with orthogonal layers on an unstable plant, one with Frobenius/sphere layers on a double
   integrator), cost relative to LQR: how the default learning rate was chosen;
3. orthogonality drift after many steps (10,000 by default) in float32 and float64.

Run: `python benchmarks/manifold_adam.py [--quick] [--threads 1]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from lipnet.manifolds import ManifoldParameter, Stiefel
from lipnet.nn import Controller
from lipnet.optim.manifold_adam import DEFAULT_LR, ManifoldAdam

RESULTS = Path(__file__).parent / "results" / "manifold_adam.json"


# --- Stiefel problems -------------------------------------------------------------------------------------

def procrustes(big: int, small: int, seed: int, dtype=torch.float32):
    """min ‖A (Y − T)‖²_F / N over St(n, N), T a random frame: optimum 0."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    target = Stiefel().projx(torch.randn(big, small, generator=gen, dtype=torch.float64)).to(dtype)
    a = (torch.randn(big, big, generator=gen, dtype=torch.float64) / big**0.5).to(dtype)
    return (lambda y: ((a @ (y - target)) ** 2).sum() / big), 0.0


def brockett(big: int, small: int, seed: int, dtype=torch.float32):
    """min tr(YᵀMYD), M with eigenvalues 1..N, D = diag(n..1): optimum Σ i (n + 1 − i) (the n smallest axes)."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    q = torch.linalg.qr(torch.randn(big, big, generator=gen, dtype=torch.float64))[0]
    m = (q @ torch.diag(torch.arange(1.0, big + 1, dtype=torch.float64)) @ q.T).to(dtype)
    d = torch.arange(small, 0, -1, dtype=dtype)
    best = float(sum(i * (small + 1 - i) for i in range(1, small + 1)))
    return (lambda y: ((y.T @ m @ y).diagonal() * d).sum()), best


PROBLEMS = {"procrustes": procrustes, "brockett": brockett}


def start_frame(big: int, small: int, seed: int, dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return Stiefel().projx(torch.randn(big, small, generator=gen, dtype=torch.float64)).to(dtype)


def make_opt(name: str, y0: torch.Tensor, lr: float):
    """(parameter, optimiser) for `ours`, `ours-plain` (section in the parameter's dtype) or `geoopt`."""
    if name == "geoopt":
        import geoopt

        p = geoopt.ManifoldParameter(y0.clone(), manifold=geoopt.Stiefel())
        return p, geoopt.optim.RiemannianAdam([p], lr=lr)
    p = ManifoldParameter(y0.clone(), Stiefel())
    return p, ManifoldAdam([p], lr=lr, section_dtype="float64" if name == "ours" else None)


def run_stiefel(name, problem, big, small, seed, lr, steps, dtype=torch.float32):
    """Final loss gap, orthogonality error and seconds per step of one run."""
    loss_fn, best = PROBLEMS[problem](big, small, seed, dtype)
    p, opt = make_opt(name, start_frame(big, small, seed, dtype), lr)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
    per_step = (time.perf_counter() - t0) / steps
    y = p.detach().double()
    with torch.no_grad():
        gap = float(loss_fn(p.detach())) - best
    orth = float(torch.linalg.matrix_norm(y.T @ y - torch.eye(small, dtype=torch.float64)))
    return {"gap": gap, "orth": orth, "sec_per_step": per_step}


def median(rows, key):
    return statistics.median(r[key] for r in rows)


# --- toy closed-loop controller costs ----------------------------------------------------------------------

def toy_plant(kind: str):
    """(A, B) at dt = 0.05 s: `double-integrator`, or `unstable` (inverted-pendulum-like, x'' = 4x + u)."""
    dt = 0.05
    if kind == "double-integrator":
        a = np.array([[1.0, dt], [0.0, 1.0]])
    else:
        a = np.array([[1.0, dt], [4.0 * dt, 1.0]])
    b = np.array([[0.5 * dt * dt], [dt]])
    return a, b


def closed_loop_run(kind: str, layer: str, seed: int, lr: float, steps: int, horizon: int):
    """Train a Controller by manifold-adam on a rollout cost; return its cost relative to LQR's on test states."""
    a, b = toy_plant(kind)
    q, r = np.eye(2), 0.1 * np.eye(1)
    p_lqr = scipy.linalg.solve_discrete_are(a, b, q, r)
    k_lqr = np.linalg.solve(r + b.T @ p_lqr @ b, b.T @ p_lqr @ a)
    at, bt = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    torch.manual_seed(seed)
    ctrl = Controller(2, 1, hidden=(16, 16), activation="tanh", layer=layer, gains=2.0, u_low=-8.0, u_high=8.0)
    opt = ManifoldAdam.from_model(ctrl, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    test_x0 = torch.rand(256, 2, generator=torch.Generator().manual_seed(999)) * 2 - 1

    def cost(policy, x0):
        x, total = x0, 0.0
        for _ in range(horizon):
            u = policy(x)
            total = total + (x * x).sum(1) + 0.1 * (u * u).sum(1)
            x = x @ at.T + u @ bt.T
        return (total + (x * x).sum(1)).mean()

    for _ in range(steps):
        x0 = torch.rand(64, 2, generator=gen) * 2 - 1

        def closure(x0=x0):
            opt.zero_grad()
            loss = cost(ctrl, x0)
            loss.backward()
            return loss

        opt.step(closure)
    kt = torch.tensor(k_lqr, dtype=torch.float32)
    with torch.no_grad():
        ours = float(cost(ctrl, test_x0))
        lqr = float(cost(lambda x: -(x @ kt.T), test_x0))
    return ours / lqr if np.isfinite(ours) else float("inf")


# --- main ---------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds and steps (a smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--drift-steps", type=int, default=None, help="steps of the drift test (default 10000)")
    ap.add_argument("--parts", default="side,sweep,drift", help="comma-separated subset of side,sweep,drift")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    seeds = range(2 if args.quick else 3)
    steps = 300 if args.quick else 1000
    sizes = [(32, 8), (128, 16)]
    out: dict = {"default_lr": DEFAULT_LR, "steps": steps, "seeds": len(seeds), "threads": args.threads}

    # 1. side by side at the default learning rate
    if "side" in parts:
        out["side_by_side"] = side_by_side(seeds, steps, sizes)
    if "sweep" in parts:
        out["lr_sweep"] = lr_sweep(seeds, steps, args.quick)
    if "drift" in parts:
        out["drift"] = drift(args.drift_steps or (2000 if args.quick else 10_000))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    name = RESULTS if parts == {"side", "sweep", "drift"} else RESULTS.with_name(
        f"manifold_adam_{'_'.join(sorted(parts))}.json")
    name.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {name}")
    return 0


def side_by_side(seeds, steps, sizes):
    """Part 1: ours against geoopt on the same problems, starts and learning rate."""
    print(f"\n## Stiefel problems, lr = {DEFAULT_LR}, {steps} steps, float32, medians over {len(seeds)} seeds")
    print(f"{'problem':<11} {'N×n':>7} {'optimiser':<11} {'loss gap':>10} {'‖YᵀY−I‖':>10} {'ms/step':>8} "
          f"{'time ratio':>10}")
    side = []
    for problem in PROBLEMS:
        for big, small in sizes:
            names = ("ours", "ours-plain", "geoopt")
            runs = {name: [] for name in names}
            for s in seeds:  # interleaved, so that load on a shared machine hits every optimiser alike
                for name in names:
                    runs[name].append(run_stiefel(name, problem, big, small, s, DEFAULT_LR, steps))
            rows = {name: {k: median(runs[name], k) for k in ("gap", "orth", "sec_per_step")} for name in names}
            for name, row in rows.items():
                ratio = row["sec_per_step"] / rows["geoopt"]["sec_per_step"]
                print(f"{problem:<11} {f'{big}×{small}':>7} {name:<11} {row['gap']:>10.3e} {row['orth']:>10.2e} "
                      f"{1e3 * row['sec_per_step']:>8.3f} {ratio:>10.2f}")
                side.append({"problem": problem, "N": big, "n": small, "optimizer": name, **row,
                             "time_ratio_vs_geoopt": ratio})
    return side


def lr_sweep(seeds, steps, quick):
    """Part 2: manifold-adam's final cost against the learning rate."""
    lrs = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    cl_steps, horizon = (120, 40) if quick else (200, 50)
    print(f"\n## learning-rate sweep of manifold-adam (Stiefel: loss gap after {steps} steps; closed loop: J / J_LQR "
          f"after {cl_steps} steps, horizon {horizon}); medians over seeds")
    cases = [(p, 32, 8) for p in PROBLEMS] + [("closed-loop", "unstable", "orthogonal"),
                                               ("closed-loop", "double-integrator", "frobenius")]
    header = f"{'case':<40}" + "".join(f"{lr:>10.0e}" for lr in lrs)
    print(header)
    sweep = []
    for case in cases:
        vals = []
        for lr in lrs:
            if case[0] == "closed-loop":
                vals.append(statistics.median(closed_loop_run(case[1], case[2], s, lr, cl_steps, horizon)
                                              for s in seeds))
            else:
                vals.append(statistics.median(run_stiefel("ours", case[0], case[1], case[2], s, lr, steps)["gap"]
                                              for s in seeds))
        label = (f"closed loop {case[1]} ({case[2]} layers)" if case[0] == "closed-loop"
                 else f"{case[0]} {case[1]}×{case[2]} (gap)")
        print(f"{label:<40}" + "".join(f"{v:>10.3g}" for v in vals))
        sweep.append({"case": label, "values": dict(zip(map(str, lrs), vals, strict=True))})
    return {"lrs": lrs, "rows": sweep}


def drift(drift_steps):
    """Part 3: ‖YᵀY − I‖ after many steps in float32 and float64."""
    print(f"\n## orthogonality ‖YᵀY − I‖_F after {drift_steps} steps (Procrustes 32×8, lr {DEFAULT_LR}, seed 0)")
    print(f"{'optimiser':<11} {'float32':>10} {'float64':>10}")
    rows = []
    for name in ("ours", "ours-plain", "geoopt"):
        errs = {str(dt).split(".")[-1]: run_stiefel(name, "procrustes", 32, 8, 0, DEFAULT_LR, drift_steps, dt)["orth"]
                for dt in (torch.float32, torch.float64)}
        print(f"{name:<11} {errs['float32']:>10.2e} {errs['float64']:>10.2e}")
        rows.append({"optimizer": name, "steps": drift_steps, **errs})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
