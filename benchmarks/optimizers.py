"""Optimiser benchmark: closed-loop cost vs steps and wall time, automatic optimisers vs tuned Adam/SGD.

For each plant: `agd`, `sphere-newton`, `sphere-mm`, `manifold-adam` with zero tuning, and Adam and SGD at
their best learning rate out of a sweep of 7 values (best = lowest median final evaluation cost), over
several seeds. Prints a table, writes `benchmarks/results/optimizers.json` and a plot.

    python benchmarks/optimizers.py --quick            # a few minutes
    python benchmarks/optimizers.py --plants cartpole,pendulum --steps 300 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from lipnet.optim import OPTIMIZERS
from lipnet.train.config import RunConfig
from lipnet.train.loop import train

RESULTS = Path(__file__).resolve().parent / "results"
AUTOMATIC = ["agd", "sphere-newton", "sphere-mm", "manifold-adam"]
SWEEP = {"adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "sgd": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]}


def run_one(plant: str, optimizer: str, lr: float, seed: int, args) -> dict:
    cfg = RunConfig(plant=plant, seed=seed)
    cfg.controller.hidden = [int(h) for h in args.hidden.split(",")]
    cfg.train.optimizer, cfg.train.lr, cfg.train.steps = optimizer, lr, args.steps
    cfg.train.batch, cfg.train.eval_batch = args.batch, 256
    cfg.train.eval_every = max(1, args.steps // 10)
    cfg.train.checkpoint_every = args.steps
    cfg.train.warmup = args.warmup
    if optimizer == "manifold-adam":
        cfg.controller.layer = "orthogonal" if args.orthogonal else cfg.controller.layer
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train(cfg, Path(tmp) / "run", progress=False, log=lambda *a: None)
        wall = time.perf_counter() - t0
    curve = [(r["step"], r["seconds"], float(r["eval_cost_ratio"])) for r in res.metrics
             if r["eval_cost_ratio"] not in ("", None)]
    final = res.summary["evaluation"]
    return {"plant": plant, "optimizer": optimizer, "lr": lr, "seed": seed, "wall_s": wall, "curve": curve,
            "final_ratio": final["cost_ratio_to_lqr_optimum"], "success": final["success_rate"],
            "skipped": res.summary["skipped_steps"]}


def _median(values):
    finite = [v for v in values if v == v and v != float("inf")]
    return statistics.median(finite) if len(finite) > len(values) / 2 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plants", default="double_integrator,dcmotor,msd,pendulum,cartpole")
    ap.add_argument("--optimizers", default=",".join(AUTOMATIC + list(SWEEP)))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sweep-seeds", type=int, default=0, help="seeds per learning rate of the sweep (0: --seeds)")
    ap.add_argument("--warmup", type=int, default=50, help="imitation warm-up steps (the training default)")
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--orthogonal", action="store_true", help="manifold-adam on orthogonal layers")
    ap.add_argument("--quick", action="store_true", help="2 plants, 60 steps, 2 seeds, 3 learning rates")
    ap.add_argument("--tag", default="", help="write optimizers_TAG.json/.png (keeps earlier results)")
    args = ap.parse_args()
    sweep = SWEEP
    if args.quick:
        args.plants, args.steps, args.seeds, args.batch = "double_integrator,pendulum", 60, 2, 128
        sweep = {k: v[1::2] for k, v in SWEEP.items()}
    runs = []
    for plant in args.plants.split(","):
        for opt in args.optimizers.split(","):
            if opt not in OPTIMIZERS:
                raise SystemExit(f"unknown optimizer {opt}")
            lrs = sweep.get(opt, [0.0])
            n_seeds = (args.sweep_seeds or args.seeds) if opt in sweep else args.seeds
            for lr in lrs:
                for seed in range(n_seeds):
                    try:
                        r = run_one(plant, opt, lr, seed, args)
                    except Exception as exc:  # an optimiser that fails is reported, not hidden
                        r = {"plant": plant, "optimizer": opt, "lr": lr, "seed": seed, "error": repr(exc),
                             "final_ratio": float("inf"), "wall_s": float("nan"), "curve": [], "success": 0.0}
                    runs.append(r)
                    print(f"{plant:18s} {opt:14s} lr={lr:<8g} seed={seed} final={r['final_ratio']:.4f} "
                          f"wall={r['wall_s']:.1f}s {r.get('error', '')}", flush=True)
    table = []
    for plant in args.plants.split(","):
        for opt in args.optimizers.split(","):
            by_lr = {}
            for r in runs:
                if r["plant"] == plant and r["optimizer"] == opt:
                    by_lr.setdefault(r["lr"], []).append(r)
            if not by_lr:
                continue
            best_lr = min(by_lr, key=lambda lr: _median([r["final_ratio"] for r in by_lr[lr]]))
            rs = by_lr[best_lr]
            table.append({"plant": plant, "optimizer": opt, "lr": best_lr if opt in sweep else None,
                          "median_final_ratio": _median([r["final_ratio"] for r in rs]),
                          "median_wall_s": statistics.median([r["wall_s"] for r in rs]),
                          "median_success": statistics.median([r["success"] for r in rs]), "seeds": len(rs)})
    print("\n| plant | optimizer | lr (best of sweep) | final cost / LQR optimum (median) | success | wall s |")
    print("|---|---|---|---|---|---|")
    for t in table:
        lr = "auto" if t["lr"] is None else f"{t['lr']:g}"
        print(f"| {t['plant']} | {t['optimizer']} | {lr} | {t['median_final_ratio']:.4f} | "
              f"{t['median_success']:.0%} | {t['median_wall_s']:.1f} |")
    RESULTS.mkdir(exist_ok=True)
    stem = f"optimizers_{args.tag}" if args.tag else "optimizers"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"args": vars(args), "table": table, "runs": runs},
                                                     indent=1, default=float))
    _plot(table, runs, RESULTS / f"{stem}.png")
    print(f"\nwrote {RESULTS / (stem + '.json')} and {stem}.png")


def _plot(table, runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plants = sorted({t["plant"] for t in table})
    fig, axes = plt.subplots(1, len(plants), figsize=(4.5 * len(plants), 3.5), squeeze=False)
    for ax, plant in zip(axes[0], plants, strict=True):
        for t in table:
            if t["plant"] != plant:
                continue
            curves = [r["curve"] for r in runs if r["plant"] == plant and r["optimizer"] == t["optimizer"]
                      and r["lr"] == (t["lr"] if t["lr"] is not None else 0.0) and r["curve"]]
            if not curves:
                continue
            steps = [c[0] for c in curves[0]]
            med = [statistics.median([c[i][2] for c in curves if i < len(c)]) for i in range(len(steps))]
            ax.semilogy(steps, med, label=t["optimizer"])
        ax.set_title(plant)
        ax.set_xlabel("step")
        ax.axhline(1, color="k", lw=0.6, ls="--")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("eval cost / LQR optimum")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
