"""`lipnet train`: train a Lipschitz-bounded controller against a plant."""

from __future__ import annotations

import argparse

from lipnet.exceptions import LipnetArgument

EXAMPLE = """examples:
  lipnet train --plant cartpole --out runs/cartpole
  lipnet train --plant pendulum --optimizer sphere-mm --lipschitz 20 --hidden 32,32 --out runs/pend
  lipnet train --plant my_plant.npz --steps 500 --out runs/lin
  lipnet train --config runs/cartpole/config.toml --out runs/cartpole2     # reproduce a run
  lipnet train --out runs/cartpole --resume                                   # continue after a kill"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plant", help="plant spec: built-in name, .npz path, module:function or file.py:function")
    p.add_argument("--config", help="TOML run configuration (a run folder's config.toml reproduces that run)")
    p.add_argument("--optimizer", help="sphere-mm (default), sphere-newton, agd, manifold-adam, adam, sgd; "
                   "with lipnet[bench]: prodigy, dog, dadapt-adam, schedulefree-adamw, muon")
    p.add_argument("--lr", type=float, help="learning rate (adam, sgd, manifold-adam and the peers; "
                   "the automatic optimisers take none)")
    p.add_argument("--lipschitz", type=float, help="Lipschitz bound met by construction (default: from the plant)")
    p.add_argument("--hidden", help="hidden widths, e.g. 64,64")
    p.add_argument("--activation", choices=["auto", "relu", "tanh", "groupsort"],
                   help="auto (default): tanh near the equilibrium (LQR expert), relu with the MPC expert")
    p.add_argument("--layer", choices=["frobenius", "spectral", "orthogonal", "plain"])
    p.add_argument("--objective", choices=["rollout", "imitation"])
    p.add_argument("--expert", choices=["auto", "lqr", "mpc"],
                   help="what the first steps imitate: the saturated LQR, a sampling MPC's demonstrations on the plant "
                        "(swing-up, large angles), or auto (mpc where the saturated LQR fails on the training states)")
    p.add_argument("--steps", type=int, help="upper bound on the training steps (default 2000, or the MPC "
                   "expert's imitation + 600); training stops earlier once the evaluation cost has converged")
    p.add_argument("--stop", choices=["plateau", "none"], help="plateau (default): stop once the evaluation cost "
                   "stops improving; none: run every --steps")
    p.add_argument("--max-seconds", type=float, help="wall-clock cap of the training (default 1800; 0: none)")
    p.add_argument("--batch", type=int, help="initial states per step")
    p.add_argument("--seed", type=int)
    p.add_argument("--rescale", choices=["none", "path"], help="path-lifting rescaling at initialisation (ReLU)")
    p.add_argument("--compile", action="store_true", default=None,
                   help="fuse each rollout step with torch.compile: ~3x faster steps after 20-40 s of compilation "
                        "(worth it from a few hundred steps; not with sphere-newton)")
    p.add_argument("--roa", action="store_true",
                   help="finish with a stage that trains toward a larger certified region of attraction (a Lyapunov "
                        "decrease penalty on PGD-falsified states; 300 steps unless --roa-steps says)")
    p.add_argument("--roa-steps", type=int, help="steps of the --roa stage")
    p.add_argument("--roa-box", help="half-widths of the box the --roa stage aims to fill (default: eval region)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: controller-sized networks gain nothing from more)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def config_from_args(args):
    """The run configuration: defaults, then --config, then the options given on the command line."""
    from lipnet.train.config import RunConfig, load_config

    cfg = load_config(args.config) if args.config else RunConfig()
    if args.plant:
        cfg.plant = args.plant
    if args.seed is not None:
        cfg.seed = args.seed
    cc, tc = cfg.controller, cfg.train
    if args.hidden is not None:
        try:
            cc.hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
        except ValueError:
            raise LipnetArgument(f"--hidden must be comma-separated integers like 64,64, got {args.hidden!r}") \
                from None
    for name in ("activation", "layer"):
        if getattr(args, name):
            setattr(cc, name, getattr(args, name))
    if args.lipschitz is not None:
        cc.lipschitz = args.lipschitz
    if args.steps is not None and args.steps < 1:
        raise LipnetArgument(f"--steps must be an integer >= 1, got {args.steps}")
    for name in ("optimizer", "objective", "expert", "steps", "batch", "rescale", "compile", "stop", "max_seconds"):
        if getattr(args, name) is not None:
            setattr(tc, name, getattr(args, name))
    if args.lr is not None:
        tc.lr = args.lr
    if args.roa_steps is not None:
        tc.roa_steps = args.roa_steps
    elif args.roa and not tc.roa_steps:
        tc.roa_steps = 300
    if args.roa_box is not None:
        try:
            tc.roa_box = [float(v) for v in args.roa_box.split(",") if v.strip()]
        except ValueError:
            tc.roa_box = [args.roa_box]  # validate() names it
    return cfg


def warn_shortfall(cfg) -> str | None:
    """Print (to stderr) and return the measured warning when the chosen optimiser falls short on this plant."""
    import sys

    from lipnet.optim.registry import SHORTFALLS, shortfall

    if cfg.train.optimizer not in SHORTFALLS:
        return None
    import numpy as np

    import plants

    try:
        radius = float(np.max(np.abs(np.linalg.eigvals(plants.linearize(plants.load(cfg.plant)).A))))
    except Exception:  # noqa: BLE001 - a bad plant is train's to report, with its own message
        return None
    message = shortfall(cfg.train.optimizer, radius)
    if message:
        print(f"lipnet train: warning: --optimizer {cfg.train.optimizer}: {message}", file=sys.stderr)
    return message


def run(args) -> int:
    from lipnet._threads import torch_threads

    if not 1 <= args.threads <= 1024:
        raise LipnetArgument(f"--threads must be from 1 to 1024 (default 1), got {args.threads}")
    # For this command only: called in-process (`lipnet.cli.main`, the tests) a thread count left behind would
    # make every later torch op start that many OpenMP workers (a fuzzed `--threads 1000` left ~1000 spinning
    # threads in the test process, and the rest of the suite crawled on 2 cores).
    with torch_threads(args.threads):
        return _run(args)


def _run(args) -> int:
    import json

    from lipnet.train.loop import train
    from lipnet.train.report import write_report

    cfg = config_from_args(args)
    if not args.resume and not args.plant and not args.config:
        print("lipnet train: no --plant given; using the default plant 'cartpole'")
    if not args.resume:
        warn_shortfall(cfg)
    result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    report = write_report(result)  # the plant and LQR the run built travel in the result
    if args.json:
        print(json.dumps(result.summary | {"report": str(report)}, indent=2, default=float))
    else:
        from lipnet.train.report import headline

        for line in headline(result.summary):
            print(line)
        print(f"Lipschitz bound {result.summary['lipschitz_bound_by_construction']:.4g} (by construction)")
        print(f"report: {report}")
    return 0
