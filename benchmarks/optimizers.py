"""Optimiser benchmark: closed-loop cost vs steps and wall time, automatic optimisers vs tuned Adam/SGD.

For each plant: `agd`, `sphere-newton`, `sphere-mm`, `manifold-adam` with zero tuning, and Adam and SGD at
their best learning rate out of a sweep of 7 values (best = lowest median final evaluation cost), over
several seeds. The runs are one `lipnet sweep` (`sweep_spec` below is its definition: a grid per optimiser
family), on Ray when it is installed (`--backend local` without it; `--address` for a cluster). Prints a table,
writes `benchmarks/results/optimizers.json` and a plot.

    python benchmarks/optimizers.py --quick            # a few minutes
    python benchmarks/optimizers.py --plants cartpole,pendulum --steps 300 --seeds 3
    python benchmarks/optimizers.py --out sweeps/opt --address 10.0.0.5:6379   # resumable, on a cluster
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import tempfile
from pathlib import Path

from lipnet.optim import OPTIMIZERS
from lipnet.sweep import SweepSpec, run_sweep

RESULTS = Path(__file__).resolve().parent / "results"
AUTOMATIC = ["agd", "sphere-newton", "sphere-mm", "manifold-adam"]
SWEEP = {"adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "sgd": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]}


def sweep_spec(args, sweep: dict[str, list[float]] = SWEEP) -> SweepSpec:
    """The benchmark as a sweep: fixed training settings, then one grid per optimiser family."""
    plants = args.plants.split(",")
    optimizers = args.optimizers.split(",")
    for opt in optimizers:
        if opt not in OPTIMIZERS:
            raise SystemExit(f"unknown optimizer {opt}")
    base = {"controller.hidden": [int(h) for h in args.hidden.split(",")], "train.steps": args.steps,
            "train.batch": args.batch, "train.eval_batch": 256, "train.eval_every": max(1, args.steps // 10),
            "train.checkpoint_every": args.steps, "train.warmup": args.warmup}
    seeds = list(range(args.seeds))
    grids = []
    plain = [o for o in optimizers if o not in sweep and not (o == "manifold-adam" and args.orthogonal)]
    if plain:
        grids.append({"plant": plants, "train.optimizer": plain, "seed": seeds})
    if args.orthogonal and "manifold-adam" in optimizers:
        grids.append({"plant": plants, "train.optimizer": ["manifold-adam"], "controller.layer": ["orthogonal"],
                      "seed": seeds})
    for opt in optimizers:
        if opt in sweep:
            grids.append({"plant": plants, "train.optimizer": [opt], "train.lr": list(sweep[opt]),
                          "seed": list(range(args.sweep_seeds or args.seeds))})
    return SweepSpec(base=base, grids=grids)


def _median(values):
    finite = [v for v in values if v == v and v != float("inf")]
    return statistics.median(finite) if len(finite) > len(values) / 2 else float("inf")


def _float(value, default=float("inf")) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if not math.isnan(v) else default


def _curve(run_dir: Path) -> list:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as fh:
        return [(int(r["step"]), float(r["seconds"]), float(r["eval_cost_ratio"])) for r in csv.DictReader(fh)
                if r["eval_cost_ratio"] not in ("", None)]


def runs_of(rows: list[dict], out: Path) -> list[dict]:
    """The benchmark's per-run records from the sweep's summary rows (and each run folder's metrics.csv)."""
    runs = []
    for r in rows:
        run = {"plant": r.get("plant"), "optimizer": r.get("optimizer"), "lr": _float(r.get("lr"), 0.0),
               "seed": int(r.get("seed") or 0), "wall_s": _float(r.get("seconds"), float("nan")),
               "final_ratio": _float(r.get("cost_vs_lqr_optimum")) if r.get("status") == "done" else float("inf"),
               "success": _float(r.get("success_rate"), 0.0), "curve": _curve(out / r["trial"]), "trial": r["trial"]}
        if r.get("status") != "done":
            run["error"] = r.get("error") or r.get("status")
        runs.append(run)
    return runs


def table_of(runs: list[dict], sweep: dict[str, list[float]] = SWEEP) -> list[dict]:
    """One row per plant and optimizer: the best learning rate's median final ratio, success and wall time."""
    table = []
    for plant in dict.fromkeys(r["plant"] for r in runs):
        for opt in dict.fromkeys(r["optimizer"] for r in runs):
            by_lr: dict[float, list] = {}
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
    return table


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
    ap.add_argument("--out", default=None, help="sweep folder to keep the runs in (re-running resumes it; default: "
                                                "a temporary folder)")
    ap.add_argument("--backend", choices=["ray", "local"], default=None,
                    help="default: ray when it is installed, else local (one run after another)")
    ap.add_argument("--address", default=None, help="a Ray cluster's HOST:PORT (default: embedded local Ray)")
    ap.add_argument("--jobs", type=int, default=1, help="--backend local: runs at once")
    args = ap.parse_args()
    sweep = SWEEP
    if args.quick:
        args.plants, args.steps, args.seeds, args.batch = "double_integrator,pendulum", 60, 2, 128
        sweep = {k: v[1::2] for k, v in SWEEP.items()}
    if args.backend is None:
        try:
            import ray  # noqa: F401

            args.backend = "ray"
        except ImportError:
            args.backend = "local"
    spec = sweep_spec(args, sweep)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "sweep"
        result = run_sweep(spec, out, backend=args.backend, address=args.address, jobs=args.jobs)
        runs = runs_of(result.rows, out)
    for r in runs:
        print(f"{r['plant']:18s} {r['optimizer']:14s} lr={r['lr']:<8g} seed={r['seed']} final={r['final_ratio']:.4f} "
              f"wall={r['wall_s']:.1f}s {r.get('error', '')}")
    table = table_of(runs, sweep)
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
    print(f"\nwrote {RESULTS / (stem + '.json')} and {stem}.png; sweep: {result.done} done, {result.failed} failed in "
          f"{result.seconds:.0f} s ({args.backend})")


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
