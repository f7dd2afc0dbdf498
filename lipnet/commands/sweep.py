"""`lipnet sweep`: many training runs from one grid (or a random sample of it), on Ray or locally."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_arguments", "run", "EXAMPLE"]

EXAMPLE = """examples:
  lipnet sweep --grid plant=pendulum,cartpole --grid optimizer=sphere-mm,agd --grid lipschitz=10,30,100 \\
               --seeds 3 --out sweeps/tradeoff              # embedded local Ray on this machine's cores
  lipnet sweep --file sweep.toml --out sweeps/opt --address 10.0.0.5:6379   # on an existing Ray cluster
  lipnet sweep --grid optimizer=agd,adam --grid lr=0,1e-3 --random 3 --set steps=300 --out sweeps/s --certify
  lipnet sweep --grid seed=0,1,2 --backend local --jobs 2 --out sweeps/seeds   # no Ray needed
Keys: any run-configuration key (plant, seed, optimizer, lr, lipschitz, hidden, steps, batch, activation, layer,
...; dotted train.X / controller.X work too). Values are comma-separated; quote one holding a comma
("pendulum?x0_box=1,2"); hidden widths are written 64x64. Each trial is a run folder OUT/<trial-id>/; OUT/summary.csv
has one row per trial, OUT/summary.png plots cost against the Lipschitz bound per plant. Re-running the same
command skips finished trials and resumes killed ones; failed trials are retried.
Sweep file (TOML): seeds = 3, random = 0, certify = false, config = "base.toml", a [set] table of fixed values,
and a [grid] table of value lists (or several [[grid]] tables, whose trials are joined).
exit codes: 0 every trial finished, 1 some trial failed (its error is in summary.csv), 2 bad input, 130 Ctrl-C."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2", default=[],
                   help="sweep KEY over these values (repeatable; the trials are the Cartesian product)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="a fixed value for every trial (repeatable)")
    p.add_argument("--file", metavar="SWEEP.toml", help="sweep file ([set], [grid] or [[grid]], seeds, random...)")
    p.add_argument("--config", metavar="RUN.toml", help="run configuration the trials start from (lipnet train's)")
    p.add_argument("--seeds", type=int, metavar="N", help="add seed = 0..N-1 to the grid")
    p.add_argument("--random", type=int, metavar="K", help="run K trials drawn at random from the grid")
    p.add_argument("--sample-seed", type=int, metavar="S", help="seed of the --random draw (default 0)")
    p.add_argument("--out", required=True, metavar="SWEEP_DIR", help="sweep folder (a new one, or an earlier "
                   "sweep's to continue it)")
    p.add_argument("--certify", action="store_true", default=None,
                   help="certify every trained controller (bounds and closed loop; no region of attraction)")
    p.add_argument("--roa", action="store_true", default=None, help="with --certify: the region of attraction too")
    p.add_argument("--backend", choices=["ray", "local"], default="ray",
                   help="ray (default; needs the sweep extra: pip install -e \".[sweep]\") or local (no Ray)")
    p.add_argument("--address", metavar="HOST:PORT", default=None,
                   help="an existing Ray cluster's head (default: $RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--cpus-per-trial", type=int, default=1, metavar="N",
                   help="CPUs each trial asks for, and its torch threads (default 1)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="--backend local: trials at once in a process pool (default 1: one after another)")
    p.add_argument("--dry-run", action="store_true", help="list the trials and exit (nothing is written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_spec(args):
    """The `SweepSpec` of the command line (a sweep file first, then --grid, --set and the options given)."""
    from lipnet.exceptions import LipnetArgument
    from lipnet.sweep import SweepSpec, parse_grid, parse_set

    for name in ("seeds", "random"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise LipnetArgument(f"--{name} must be an integer >= 1, got {value}")
    spec = SweepSpec.from_toml(args.file) if args.file else SweepSpec()
    spec = spec.with_cli(parse_grid(args.grid), parse_set(args.set))
    for name in ("seeds", "random", "sample_seed", "config", "certify", "roa"):
        value = getattr(args, name)
        if value is not None:
            setattr(spec, name, value)
    return spec


def _fmt(value, spec: str = ".4g") -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "-"


def run(args) -> int:
    from lipnet.exceptions import LipnetArgument
    from lipnet.sweep import expand, run_sweep

    if not 1 <= args.cpus_per_trial <= 1024:
        raise LipnetArgument(f"--cpus-per-trial must be from 1 to 1024 (default 1), got {args.cpus_per_trial}")
    if not 1 <= args.jobs <= 1024:
        raise LipnetArgument(f"--jobs must be from 1 to 1024 (default 1), got {args.jobs}")
    spec = build_spec(args)
    trials = expand(spec)
    if args.dry_run:
        for t in trials:
            print(t.id)
        print(f"{len(trials)} trials (dry run: nothing written)")
        return 0
    address = args.address
    if address is None and args.backend == "ray":
        address = os.environ.get("RAY_ADDRESS") or None
    result = run_sweep(trials, args.out, backend=args.backend, address=address, cpus_per_trial=args.cpus_per_trial,
                       jobs=args.jobs, certify=spec.certify, roa=spec.roa, progress=not args.no_progress)
    cert = spec.certify
    print(f"{'trial':<48} {'status':<8} {'cost/LQR':>9} {'cost/sat':>9} {'success':>8} {'L bound':>8}"
          + (f" {'certified':>9}" if cert else "") + f" {'seconds':>8}")
    for r in result.rows[:60]:
        print(f"{r['trial'][:48]:<48} {r.get('status', ''):<8} {_fmt(r.get('cost_vs_lqr_optimum')):>9} "
              f"{_fmt(r.get('cost_vs_saturated_lqr')):>9} {_fmt(r.get('success_rate'), '.0%'):>8} "
              f"{_fmt(r.get('lipschitz_bound')):>8}" + (f" {_fmt(r.get('certified_bound')):>9}" if cert else "")
              + f" {_fmt(r.get('seconds'), '.1f'):>8}")
    if len(result.rows) > 60:
        print(f"... {len(result.rows) - 60} more in {result.summary_csv}")
    print(f"sweep: {result.done} done ({result.skipped} from before), {result.failed} failed, "
          f"{result.seconds:.0f} s; {result.summary_csv}, {result.summary_png}")
    return 1 if result.failed else 0
