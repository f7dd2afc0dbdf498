"""Benchmark: plant-steps/s of a forward + backward pass through a cart-pole rollout with a 2×64 MLP policy.

Ours beside a plain torch loop written the obvious way (per-column slicing, `x + dt/2*k1`, `torch.stack` per
RK4 stage, cost accumulated per step): `plants.rollout` (eager, fused RK4), `plants.rollout` over a plant whose
step alone is compiled (`plant.compile()`), and `plants.CompiledRollout` (policy, clip and plant step compiled
as one closed-loop step). All run the same physics, policy and cost, interleaved, and the medians of several
repeats are reported with their paired ratio to the obvious loop. The issue's target, 1.5 M plant-steps/s
where the obvious loop does 0.7 M, is a 2.14x ratio; on a slower machine the ratio is the figure to compare.
Usage: `python benchmarks/rollout.py [--quick] [--batch 4096] [--horizon 200] [--repeats 5] [--threads 2]
[--eager-only]`. Writes `benchmarks/results/rollout.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

import plants


def obvious_rollout(policy, x0, horizon, dt=0.02, M=1.0, m=0.1, l=0.5, g=9.8, u_max=10.0):
    """The cart-pole rollout as one would first write it: straightforward, correct, unoptimised."""
    Q = torch.eye(4, dtype=x0.dtype)
    R = torch.tensor([[0.1]], dtype=x0.dtype)

    def f(x, u):
        vel, th, om = x[:, 1], x[:, 2], x[:, 3]
        F = u[:, 0]
        temp = (F + m * l * om ** 2 * torch.sin(th)) / (M + m)
        thdd = (g * torch.sin(th) - torch.cos(th) * temp) / (l * (4.0 / 3.0 - m * torch.cos(th) ** 2 / (M + m)))
        xdd = temp - m * l * thdd * torch.cos(th) / (M + m)
        return torch.stack([vel, xdd, om, thdd], dim=1)

    x, cost = x0, torch.zeros(x0.shape[0], dtype=x0.dtype)
    for _ in range(horizon):
        u = torch.clamp(policy(x), -u_max, u_max)
        cost = cost + ((x @ Q) * x).sum(1) + ((u @ R) * u).sum(1)
        k1 = f(x, u)
        k2 = f(x + dt / 2 * k1, u)
        k3 = f(x + dt / 2 * k2, u)
        k4 = f(x + dt * k3, u)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return cost


def ours_rollout(plant, policy, x0, horizon):
    """The library rollout."""
    return plants.rollout(plant, policy, x0, horizon=horizon).cost


def _time(fn, policy, x0, horizon) -> float:
    policy.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    fn(policy, x0, horizon).mean().backward()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 1024, horizon 50, 3 repeats (a smoke run)")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--horizon", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policy", choices=["mlp", "controller"], default="mlp",
                    help="mlp: the issue's 2x64 ReLU nn.Sequential; controller: what `lipnet train` trains (2x64 tanh "
                         "Frobenius-normalised lipnet Controller with input/output scaling and saturation); "
                         "try --policy controller --batch 128 --horizon 100, the training shape")
    ap.add_argument("--eager-only", action="store_true", help="skip the two compiled variants (no compilation)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/rollout.json, rollout_controller.json)")
    args = ap.parse_args(argv)
    if args.out is None:
        name = "rollout.json" if args.policy == "mlp" else "rollout_controller.json"
        args.out = os.path.join(os.path.dirname(__file__), "results", name)
    if args.quick:
        args.batch, args.horizon, args.repeats = 1024, 50, 3
    torch.set_num_threads(args.threads)
    load1 = os.getloadavg()[0]
    if load1 > (os.cpu_count() or 1):
        # Oversubscribed cores make torch's worker threads spin against other processes (measured 10x slower).
        print(f"note: load average {load1:.1f} exceeds {os.cpu_count()} cores; absolute figures are not "
              f"representative (try --threads 1); the side-by-side ratio is", file=sys.stderr)
    torch.manual_seed(0)
    plant = plants.load("cartpole")
    if args.policy == "mlp":
        policy = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    else:
        from lipnet.train.plan import build_controller, plan_controller

        gen = torch.Generator().manual_seed(0)
        plan = plan_controller(plant, plants.lqr(plant), lipschitz=0.0, factor=4.0, generator=gen)
        policy = build_controller(plant, plan, [64, 64], "tanh", "frobenius", "clip", generator=gen)
    x0 = plant.sample_initial(args.batch, "train")

    # Same numbers from both (sanity: they simulate the same thing).
    with torch.no_grad():
        a = obvious_rollout(policy, x0[:64], 20)
        b = ours_rollout(plant, policy, x0[:64], 20)
    max_rel = float(((a - b).abs() / a.abs().clamp_min(1e-6)).max())
    if max_rel > 1e-3:
        print(f"mismatch between implementations: max relative cost difference {max_rel:.3g}", file=sys.stderr)
        return 1

    variants = {"obvious loop": lambda p, x, T: obvious_rollout(p, x, T),
                "plants.rollout": lambda p, x, T: ours_rollout(plant, p, x, T)}
    if not args.eager_only:
        compiled = plants.load("cartpole").compile()
        variants["plants.rollout, plant.compile()"] = lambda p, x, T: ours_rollout(compiled, p, x, T)
        closed = plants.CompiledRollout(plant, policy)
        variants["plants.CompiledRollout"] = lambda p, x, T: closed(x, horizon=T).cost
    times: dict[str, list[float]] = {k: [] for k in variants}
    compile_s = {}
    for name, fn in variants.items():  # warm-up and compilation (x0 a leaf, later states carrying a graph)
        t0 = time.perf_counter()
        _time(fn, policy, x0, min(args.horizon, 5))
        compile_s[name] = time.perf_counter() - t0
    if not args.eager_only and not closed.compiled:
        print(f"note: CompiledRollout fell back to eager ({closed.fallback_reason})", file=sys.stderr)
    for _ in range(args.repeats):
        for name, fn in variants.items():  # interleaved, so load changes hit all variants alike
            times[name].append(_time(fn, policy, x0, args.horizon))

    steps = args.batch * args.horizon
    base_times = times["obvious loop"]
    # Paired ratio: each repeat times every variant back to back, so the median of per-repeat ratios is less
    # sensitive to load drift on a shared machine than the ratio of medians.
    rows = {k: {"median_s": statistics.median(v), "steps_per_s": steps / statistics.median(v), "all_s": v,
                "paired_speedup": statistics.median(b / t for b, t in zip(base_times, v, strict=True)),
                "warmup_s": compile_s[k]}
            for k, v in times.items()}
    base = rows["obvious loop"]["median_s"]
    what = "2x64 ReLU MLP" if args.policy == "mlp" else "2x64 tanh lipnet Controller"
    print(f"cart-pole rollout fwd+bwd, batch {args.batch}, horizon {args.horizon}, {what}, "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'variant':<34}{'median s':>10}{'M steps/s':>12}{'speed-up':>10}{'paired':>9}{'warm-up s':>11}")
    for k, r in rows.items():
        print(f"{k:<34}{r['median_s']:>10.3f}{r['steps_per_s'] / 1e6:>12.3f}{base / r['median_s']:>9.2f}x"
              f"{r['paired_speedup']:>8.2f}x{r['warmup_s']:>11.1f}")
    print("target: 1.5 M steps/s where the obvious loop does 0.7 M, i.e. a paired speed-up of 2.14x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"policy": args.policy, "batch": args.batch, "horizon": args.horizon, "threads": args.threads,
                   "repeats": args.repeats,
                   "torch": torch.__version__, "python": platform.python_version(),
                   "load_avg": os.getloadavg(), "results": rows,
                   "speedup": {k: base / r["median_s"] for k, r in rows.items()}}, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
