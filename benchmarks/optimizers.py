"""Optimiser benchmark, AlgoPerf-style: lipnet's automatic optimisers against the learning-rate-free field.

Protocol. One fixed run configuration for every task (lipnet's defaults, i.e. the default command; `--steps` caps
the steps, the plateau rule stops earlier). Optimisers: lipnet's `sphere-mm` (the default), `sphere-newton`, `agd`,
`manifold-adam`; the peers at their published defaults (`prodigy`, `dog`, `dadapt-adam`, `schedulefree-adamw`, `muon`:
`lipnet.optim.peers`, the `bench` extra); and Adam tuned per task by `--trials` (20) Optuna TPE trials over
log lr in [1e-5, 1e-1], each one run on a tuning seed (`TUNE_SEED`, never an evaluation seed), its best lr then
run on every seed; the tuning's wall time is part of Adam's. `--adam-lr` reuses an earlier tuning's lr per task
(the lrs below are the 20-trial tuning's, to 3 digits; its time is then not counted). Tasks: the linear library
(`double_integrator`, `dcmotor`, `msd`), the PVTOL-like hover model and `--random` held-out random linear plants
(`plants.random_linear`); `--wide` adds the wide nonlinear tasks (slow; their score is the cost over the
saturated LQR's, not over the LQR optimum). `--seeds` (10) seeds per (task, optimiser).

Per run: final cost / LQR optimum on the held-out evaluation states, time-to-target (the first evaluation within
`TARGET` = 1.01 × the LQR optimum: steps and training seconds), divergence (the run failed, the final cost is not
finite, it is over 10 × the first evaluation's, or the run ended a phase on undone steps and returned its best
validated controller, `lipnet.train.loop.DIVERGED`). The table gives medians and the worst seed; the issue's
targets are computed as its last lines. Every run is a `lipnet sweep` trial (resumable with `--out`); prints the
table and writes `benchmarks/results/optimizers.json`.

    python benchmarks/optimizers.py --quick                 # a smoke test (~5 min): 2 tasks, 1 seed, 100 steps
    python benchmarks/optimizers.py --out sweeps/opt        # the full protocol (resumable)
    python benchmarks/optimizers.py --tasks double_integrator,dcmotor,msd,pvtol,random-0,random-1,random-3 \
        --seeds 1 --trials 6 --steps 300 --out sweeps/opt   # results/optimizers.json (53 min on one busy core)
    python benchmarks/optimizers.py --tasks double_integrator,dcmotor,msd,pvtol,random-0,random-1,random-3 \
        --optimizers sphere-mm,dadapt-adam,prodigy --trials 0 --jobs 2 --out sweeps/opt10  # 10 seeds, 210 runs, 70 min
    python benchmarks/optimizers.py --tasks double_integrator,dcmotor,msd,pvtol,random-0,random-1,random-3 \
        --optimizers sphere-mm --trials 0 --adam-lr double_integrator=0.0729,dcmotor=0.00151,msd=0.0238,\
pvtol=0.0716,random-0=0.0355,random-1=0.0369,random-3=0.00224 --out sweeps/opt10  # tuned Adam, 10 seeds (39 min)
    python benchmarks/optimizers.py --wide --tasks pendulum-swingup,vanderpol-wide,ballbeam-wide,quadrotor2d-wide,\
cartpole-wide --seeds 1 --optimizers sphere-mm,prodigy,dadapt-adam,schedulefree-adamw --trials 0  # 34 min, 2 jobs
    python benchmarks/optimizers.py --wide --tasks ballbeam-wide --optimizers '' --out sweeps/bb-adam --tag bb-adam
        # the tuning and tuned Adam alone, beside the other optimisers' run in a second process (--tag bb-rest), then
    python benchmarks/optimizers.py --merge benchmarks/results/optimizers_bb-adam.json \
        benchmarks/results/optimizers_bb-rest.json --tag bb   # one report and results file for both parts
    python benchmarks/optimizers.py --tasks dcmotor --optimizers dog --trials 0 --first-seed 5 --out sweeps/b
        # seeds 5-9 only, beside a process running seeds 0-4 (--seeds 5, its own --out), then --merge the two
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lipnet.optim.registry import PEERS
from lipnet.sweep import SweepSpec, run_sweep
from lipnet.train.config import TrainConfig
from lipnet.train.loop import DIVERGED as PHASE_DIVERGED

RESULTS = Path(__file__).resolve().parent / "results"
LIPNET = ["sphere-mm", "sphere-newton", "agd", "manifold-adam"]
DEFAULT = TrainConfig().optimizer
TUNED = "adam-tuned"
LIBRARY = {"double_integrator": "double_integrator", "dcmotor": "dcmotor", "msd": "msd",
           "pvtol": "plants.random_linear:pvtol"}
WIDE = {"pendulum-swingup": "pendulum?task=swingup", "vanderpol-wide": "vanderpol?task=wide",
        "ballbeam-wide": "ballbeam?task=wide", "quadrotor2d-wide": "quadrotor2d?task=wide",
        "cartpole-wide": "cartpole?task=wide"}
TARGET = 1.01  # time-to-target: the first evaluation within this factor of the LQR optimum
DIVERGED = 10.0  # a final cost over this factor of the first evaluation's is a divergence
TIE = 1e-4  # "ahead of a peer": a final cost at most (1 + TIE) × the peer's (equal to the evaluation's precision)
TUNE_SEED = 1000
LR_RANGE = (1e-5, 1e-1)


def tasks_of(args) -> dict[str, str]:
    """Task name -> plant spec."""
    tasks = dict(LIBRARY)
    tasks.update({f"random-{k}": f"plants.random_linear:random_linear?seed={k}" for k in range(args.random)})
    if args.wide:
        tasks.update(WIDE)
    if args.tasks:
        keep = args.tasks.split(",")
        unknown = set(keep) - set(tasks)
        if unknown:
            raise SystemExit(f"unknown task(s) {sorted(unknown)}; valid: {', '.join(tasks)}")
        tasks = {k: v for k, v in tasks.items() if k in keep}
    return tasks


def base_config(args) -> dict:
    """The one configuration every task and optimiser runs with: lipnet's defaults, with `--steps` as the step cap
    when given (it counts the MPC expert's 1500 imitation steps on the wide tasks too)."""
    return {"train.steps": args.steps} if args.steps else {}


def _float(value, default: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(v) else v


def _curve(run_dir: Path, key: str = "eval_cost_ratio") -> list[tuple[int, float, float]]:
    """(step, training seconds, evaluation cost / LQR optimum) of every evaluation of a run."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as fh:
        return [(int(r["step"]), float(r["seconds"]), float(r[key])) for r in csv.DictReader(fh)
                if r[key] not in ("", None)]


def _stopped(run_dir: Path) -> str:
    """Why a finished run stopped (its summary's `stopped`), or "" where it has no summary."""
    try:
        return str(json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("stopped") or "")
    except (OSError, ValueError):
        return ""


def record(row: dict, out: Path, task: str, optimizer: str, wide: bool) -> dict:
    """One run's record from its sweep row and its metrics: final ratio, time-to-target, divergence."""
    done = row.get("status") == "done"
    final = _float(row.get("cost_vs_saturated_lqr" if wide else "cost_vs_lqr_optimum")) if done else math.inf
    curve = _curve(out / row["trial"])
    hit = next(((s, t) for s, t, v in curve if v <= TARGET), None) if not wide else None
    first = curve[0][2] if curve else math.nan
    diverged = (not done or not math.isfinite(final) or (math.isfinite(first) and final > DIVERGED * first)
                or _stopped(out / row["trial"]).startswith(PHASE_DIVERGED))
    return {"task": task, "optimizer": optimizer, "seed": int(row.get("seed") or 0), "lr": _float(row.get("lr"), 0.0),
            "final": final, "success": _float(row.get("success_rate"), 0.0), "steps": int(_float(row.get("steps"), 0)),
            "seconds": _float(row.get("seconds"), math.nan), "wall_s": _float(row.get("wall_seconds"), math.nan),
            "ttt_steps": hit[0] if hit else None, "ttt_s": hit[1] if hit else None, "diverged": diverged,
            "first_eval": first, "error": "" if done else (row.get("error") or row.get("status") or ""),
            "curve": [(s, round(t, 3), v) for s, t, v in curve]}


def _sweep(base: dict, grids: list[dict], out: Path, args) -> list[dict]:
    result = run_sweep(SweepSpec(base=base, grids=grids), out, backend=args.backend, address=args.address,
                       jobs=args.jobs, progress=False, log=lambda *a: None)
    return result.rows


def tune_adam(task: str, spec: str, args, out: Path) -> dict:
    """`--trials` Optuna TPE trials of Adam's learning rate on the tuning seed; the best lr and the time it took."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna's TPE (10 random start-up trials of 20); a smaller budget keeps half of it for TPE proper.
    startup = min(10, max(2, args.trials // 2))
    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=startup))
    trials = []
    for _ in range(args.trials):
        trial = study.ask()
        lr = trial.suggest_float("lr", *LR_RANGE, log=True)
        grid = {"plant": [spec], "train.optimizer": ["adam"], "train.lr": [lr], "seed": [TUNE_SEED]}
        rec = record(_sweep(base_config(args), [grid], out, args)[0], out, task, "adam", task in WIDE)
        score = rec["final"] if math.isfinite(rec["final"]) else 1e12
        study.tell(trial, score)
        trials.append({"lr": lr, "final": rec["final"], "wall_s": rec["wall_s"]})
    best = min(trials, key=lambda t: t["final"])
    return {"task": task, "lr": best["lr"], "best_final": best["final"], "trials": trials,
            "wall_s": sum(t["wall_s"] for t in trials if math.isfinite(t["wall_s"]))}


def adam_lrs(text: str, tasks: dict[str, str]) -> dict[str, float]:
    """`--adam-lr TASK=LR,...`: Adam's learning rate per task from an earlier tuning (the tuning is deterministic:
    TPE seeded, trials on `TUNE_SEED`), so a rerun with more seeds need not tune again."""
    out: dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        task, sep, lr = item.partition("=")
        try:
            value = float(lr)
        except ValueError:
            value = -1.0
        if not sep or task not in tasks or not value > 0:
            raise SystemExit(f"--adam-lr: {item!r} is not TASK=LR with a task of this run ({', '.join(tasks)}) "
                             "and a positive learning rate, e.g. --adam-lr dcmotor=0.0015")
        out[task] = value
    return out


def run_all(args, out: Path) -> tuple[list[dict], list[dict]]:
    """Every run of the protocol: the automatic optimisers and peers, then the tuning and tuned Adam per task."""
    tasks = tasks_of(args)
    by_spec = {spec: name for name, spec in tasks.items()}
    optimizers = _optimizers(args)
    seeds = list(range(args.first_seed, args.seeds))
    runs: list[dict] = []
    for name, spec in tasks.items() if optimizers else ():  # task by task: a partial run has whole tasks
        t0 = time.perf_counter()
        rows = _sweep(base_config(args), [{"plant": [spec], "train.optimizer": optimizers, "seed": seeds}], out, args)
        runs += [record(r, out, by_spec[r["plant"]], r["optimizer"], name in WIDE) for r in rows]
        print(f"{name}: {len(rows)} runs in {time.perf_counter() - t0:.0f} s", flush=True)
    tuning = []
    reused = adam_lrs(args.adam_lr, tasks)
    if args.trials or reused:
        for name, spec in tasks.items():
            t0 = time.perf_counter()
            if name in reused:  # an earlier tuning's lr: its time is not counted here (see print_report)
                tuned = {"task": name, "lr": reused[name], "best_final": math.nan, "trials": [], "wall_s": 0.0,
                         "reused": True}
            elif args.trials:
                tuned = tune_adam(name, spec, args, out)
            else:
                continue
            tuning.append(tuned)
            grid = {"plant": [spec], "train.optimizer": ["adam"], "train.lr": [tuned["lr"]], "seed": seeds}
            rows = _sweep(base_config(args), [grid], out, args)
            runs += [record(r, out, name, TUNED, name in WIDE) for r in rows]
            how = "an earlier tuning" if tuned.get("reused") else f"{args.trials} trials"
            print(f"{name}: Adam tuned to lr {tuned['lr']:.3g} ({how}) and run in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return runs, tuning


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def table_of(runs: list[dict]) -> list[dict]:
    """One row per task and optimiser: median and worst final ratio, time-to-target, divergences."""
    out = []
    for task in dict.fromkeys(r["task"] for r in runs):
        for opt in dict.fromkeys(r["optimizer"] for r in runs):
            rs = [r for r in runs if r["task"] == task and r["optimizer"] == opt]
            if not rs:
                continue
            hits = [r for r in rs if r["ttt_steps"] is not None]
            out.append({"task": task, "optimizer": opt, "seeds": len(rs),
                        "median_final": _median([r["final"] for r in rs]), "worst_final": max(r["final"] for r in rs),
                        "median_success": _median([r["success"] for r in rs]),
                        "worst_success": min(r["success"] for r in rs),
                        "reached": None if task in WIDE else len(hits),  # no LQR-optimum target there
                        "median_ttt_steps": _median([r["ttt_steps"] for r in hits]),
                        "median_ttt_s": _median([r["ttt_s"] for r in hits]),
                        "median_steps": _median([r["steps"] for r in rs]),
                        "median_wall_s": _median([r["wall_s"] for r in rs]),
                        "divergences": sum(r["diverged"] for r in rs), "lr": rs[0]["lr"] if opt == TUNED else None})
    return out


def targets_of(runs: list[dict], tuning: list[dict], linear_tasks: list[str]) -> dict:
    """The issue's targets, computed from the runs (None where the runs needed are absent)."""
    pairs: dict[tuple, dict] = {}
    for r in runs:
        pairs.setdefault((r["task"], r["seed"]), {})[r["optimizer"]] = r["final"]
    peers = [p for p in PEERS if any(p in d for d in pairs.values())]
    res: dict = {}
    with_default = {k: d for k, d in pairs.items() if DEFAULT in d}
    if peers:
        comparable = {k: d for k, d in with_default.items() if all(p in d for p in peers)}
        ahead = [k for k, d in comparable.items() if all(d[DEFAULT] <= d[p] * (1 + TIE) for p in peers)]
        strict = [k for k, d in comparable.items() if all(d[DEFAULT] < d[p] for p in peers)]
        res["ahead_of_every_peer"] = (len(ahead), len(comparable))
        res["strictly_ahead_of_every_peer"] = (len(strict), len(comparable))
        res["ahead_per_peer"] = {p: (sum(d[DEFAULT] <= d[p] * (1 + TIE) for d in comparable.values()),
                                     len(comparable)) for p in peers}
    tuned = {k: d for k, d in with_default.items() if TUNED in d}
    if tuned:
        res["within_1pct_of_tuned_adam"] = (sum(d[DEFAULT] <= 1.01 * d[TUNED] for d in tuned.values()), len(tuned))
        tuned_tasks = {t for t, _ in tuned}
        default_wall = sum(r["wall_s"] for r in runs if r["optimizer"] == DEFAULT and r["task"] in tuned_tasks)
        adam_wall = (sum(r["wall_s"] for r in runs if r["optimizer"] == TUNED)
                     + sum(t["wall_s"] for t in tuning))
        res["wall_s_default_vs_tuned_adam"] = (default_wall, adam_wall)
    lin = [r for r in runs if r["optimizer"] == DEFAULT and r["task"] in linear_tasks]
    res["default_within_1.01_every_linear_run"] = (sum(r["final"] <= 1.01 for r in lin), len(lin))
    res["within_1.02_per_optimizer"] = {
        o: (sum(r["final"] <= 1.02 for r in runs if r["optimizer"] == o and r["task"] in linear_tasks),
            sum(1 for r in runs if r["optimizer"] == o and r["task"] in linear_tasks))
        for o in dict.fromkeys(r["optimizer"] for r in runs)}
    res["divergences_at_defaults"] = {o: sum(r["diverged"] for r in runs if r["optimizer"] == o)
                                      for o in dict.fromkeys(r["optimizer"] for r in runs) if o != TUNED}
    return res


def _fmt(v, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return "inf" if v == math.inf else format(v, spec)


def _frac(pair) -> str:
    k, n = pair
    return f"{k}/{n} = {k / n:.0%}" if n else "–"


def print_report(table: list[dict], targets: dict, tuning: list[dict]) -> None:
    print("\nfinal: the final cost over the LQR optimum (linear tasks) or over the saturated LQR's cost on the same "
          "starts (wide tasks); success: the share of evaluation starts stabilised")
    print("\n| task | optimizer | final (median) | worst seed | success (median, worst) | reached 1.01× | "
          "steps to 1.01× (median) | s to 1.01× (median) | steps run (median) | wall s (median) | divergences |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in table:
        name = t["optimizer"] + (f" (lr {t['lr']:.2g})" if t["lr"] else "")
        reached = "–" if t["reached"] is None else f"{t['reached']}/{t['seeds']}"
        print(f"| {t['task']} | {name} | {_fmt(t['median_final'], '.6g')} | {_fmt(t['worst_final'], '.6g')} | "
              f"{_fmt(t['median_success'], '.1%')}, {_fmt(t['worst_success'], '.1%')} | {reached} | "
              f"{_fmt(t['median_ttt_steps'], '.0f')} | {_fmt(t['median_ttt_s'], '.1f')} | "
              f"{_fmt(t['median_steps'], '.0f')} | {_fmt(t['median_wall_s'], '.1f')} | {t['divergences']} |")
    print()
    if "ahead_of_every_peer" in targets:
        print(f"- default ({DEFAULT}) ahead of every peer (final ≤ (1 + {TIE:g}) × each peer's) on "
              f"{_frac(targets['ahead_of_every_peer'])} of (task, seed) pairs (strictly lower than every peer: "
              f"{_frac(targets['strictly_ahead_of_every_peer'])}); target ≥ 80 %")
        print("  - per peer: " + ", ".join(f"{p} {_frac(v)}" for p, v in targets["ahead_per_peer"].items()))
    if "within_1pct_of_tuned_adam" in targets:
        d, a = targets["wall_s_default_vs_tuned_adam"]
        trials = max((len(t["trials"]) for t in tuning), default=0)
        reused = [t["task"] for t in tuning if t.get("reused")]
        print(f"- default within 1 % of {f'{trials}-trial' if trials else 'earlier'}-tuned Adam on "
              f"{_frac(targets['within_1pct_of_tuned_adam'])} of pairs; target ≥ 80 %, at ≤ its wall time: "
              f"{d:.0f} s vs {a:.0f} s (tuning included" + (f", except the earlier tuning of {', '.join(reused)} "
                                                          "(--adam-lr): add its time" if reused else "") + ")")
    print(f"- default ≤ 1.01 × LQR on every linear run: {_frac(targets['default_within_1.01_every_linear_run'])}")
    print("- ≤ 1.02 × LQR on the linear runs: " + ", ".join(f"{o} {_frac(v)}"
                                                          for o, v in targets["within_1.02_per_optimizer"].items()))
    print("- divergences at defaults: " + ", ".join(f"{o} {v}" for o, v in targets["divergences_at_defaults"].items())
          + " (target: zero)")


def merge(paths: list[str], tag: str = "") -> None:
    """Report the runs of several results files as one protocol (a later file's run of the same (task, optimiser,
    seed) replaces an earlier one's) and write the merged results."""
    runs: dict[tuple, dict] = {}
    tuning: dict[str, dict] = {}
    tasks: dict[str, str] = {}
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            tasks.update(data["tasks"])
            for r in data["runs"]:
                r["final"] = _float(r["final"])  # a final that is not a number counts as no result (inf)
                runs[(r["task"], r["optimizer"], r["seed"])] = r
            tuning.update({t["task"]: t for t in data["tuning"]})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--merge: {p} is not a results file of this benchmark ({exc!r}); give the "
                             "optimizers_*.json files it wrote") from exc
    path = report(list(runs.values()), list(tuning.values()), tasks, f"optimizers_{tag or 'merged'}.json",
                  {"merged_from": paths})
    print(f"\nwrote {path} ({len(runs)} runs)")


def report(runs: list[dict], tuning: list[dict], tasks: dict[str, str], name: str, extra: dict) -> Path:
    """Print the table and the targets, and write them with the runs to `RESULTS/name`."""
    table = table_of(runs)
    targets = targets_of(runs, tuning, [t for t in tasks if t not in WIDE])
    print_report(table, targets, tuning)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps({**extra, "tasks": tasks, "table": table, "targets": targets, "tuning": tuning,
                                "runs": runs}, indent=1, default=str))
    return path


def _optimizers(args) -> list[str]:
    """The optimisers run at their defaults; none (`--optimizers ''`): only the tuning and tuned Adam."""
    return [o for o in args.optimizers.split(",") if o]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizers", default=",".join(LIPNET + list(PEERS)),
                    help="the optimisers run at their defaults (tuned Adam comes on top unless --trials 0; "
                         "'' for tuned Adam alone)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="run seeds FIRST..SEEDS-1 only (the rest of a "
                    "protocol whose first seeds ran earlier; --merge reports the parts together)")
    ap.add_argument("--random", type=int, default=4, help="random linear plants (held-out kind)")
    ap.add_argument("--wide", action="store_true", help="add the wide nonlinear tasks (slow)")
    ap.add_argument("--tasks", default="", help="only these task names (comma-separated)")
    ap.add_argument("--trials", type=int, default=20, help="Optuna trials tuning Adam per task (0: no Adam)")
    ap.add_argument("--adam-lr", default="", help="TASK=LR,...: run Adam at an earlier tuning's lr on these tasks "
                    "instead of tuning it again (its time is then not counted)")
    ap.add_argument("--steps", type=int, default=0, help="step cap of the fixed configuration (default: lipnet's "
                                                         "automatic budget, 2000 or the MPC imitation + 600)")
    ap.add_argument("--quick", action="store_true", help="double_integrator and one random plant, 1 seed, 2 tuning "
                                                         "trials, 100 steps (a smoke test, ~5 minutes)")
    ap.add_argument("--tag", default="", help="write optimizers_TAG.json (keeps earlier results)")
    ap.add_argument("--out", default=None, help="sweep folder to keep the runs in (re-running resumes it; default: "
                                                "a temporary folder)")
    ap.add_argument("--backend", choices=["ray", "local"], default="local")
    ap.add_argument("--address", default=None, help="a Ray cluster's HOST:PORT (with --backend ray)")
    ap.add_argument("--jobs", type=int, default=1, help="--backend local: runs at once")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="run nothing: report the runs of earlier results files together (parts of the protocol "
                         "run in separate processes or sessions) and write them as one")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.tag)
        return
    if args.quick:
        args.tasks, args.random, args.seeds, args.trials, args.steps = "double_integrator,random-0", 1, 1, 2, 100
        args.tag = args.tag or "quick"  # never overwrites the full results
    if args.seeds < 1 or args.trials < 0:
        ap.error(f"--seeds must be ≥ 1 and --trials ≥ 0 (got --seeds {args.seeds}, --trials {args.trials})")
    if not 0 <= args.first_seed < args.seeds:
        ap.error(f"--first-seed must be in 0..{args.seeds - 1} so that some seed runs (got {args.first_seed})")
    if not _optimizers(args) and not (args.trials or args.adam_lr):
        ap.error("nothing to run: --optimizers '' runs tuned Adam alone, so give --trials N or --adam-lr")
    for opt in _optimizers(args):
        from lipnet.optim.registry import optimizer_class

        try:
            optimizer_class(opt)
        except ValueError as exc:
            sys.exit(str(exc))
    adam_lrs(args.adam_lr, tasks_of(args))  # a malformed --adam-lr fails now, not after the other runs
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "sweep"
        runs, tuning = run_all(args, out)
    seconds = time.perf_counter() - t0
    path = report(runs, tuning, tasks_of(args), f"optimizers_{args.tag}.json" if args.tag else "optimizers.json",
                  {"args": vars(args), "seconds": seconds})
    print(f"\nwrote {path} ({len(runs)} runs, {seconds:.0f} s)")


if __name__ == "__main__":
    main()
