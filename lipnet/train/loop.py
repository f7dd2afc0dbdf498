"""The training loop: objective, optimiser step with non-finite guards, evaluation, checkpoints, resume."""

from __future__ import annotations

import copy
import csv
import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import plants
from lipnet import __version__
from lipnet.exceptions import LipnetArgument, LipnetDimension, RunFolderError, TrainingFailed
from lipnet.optim import make_optimizer
from lipnet.optim.registry import optimizer_class
from lipnet.train.checkpoint import atomic_torch_save, save_controller
from lipnet.train.config import RunConfig, dump_toml
from lipnet.train.losses import make_objective
from lipnet.train.normalise import build_controller, plan_controller
from lipnet.train.rundir import CONFIG, METRICS, TRAIN_STATE, atomic_write_text, check_run_dir, prepare_run_dir

__all__ = ["train", "TrainResult", "evaluate", "Evaluator"]

METRIC_FIELDS = ["step", "objective", "loss", "eval_cost_ratio", "eval_success", "seconds", "skipped", "info"]


@dataclass
class TrainResult:
    """What a run produced: the controller, its folder, the metrics and the evaluation summary."""

    controller: Any
    run_dir: Path
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "float64": torch.float64}[name]
    except KeyError:
        raise ValueError(f"dtype must be float32 or float64, got {name!r}") from None


class Evaluator:
    """Closed-loop cost on fixed held-back initial states vs the LQR optimum and the (saturated) LQR policy.

    The LQR side is computed once: it does not change during training.
    """

    def __init__(self, plant, lqr, x0: torch.Tensor, horizon: int, terminal: str = "lqr"):
        self.plant, self.x0, self.horizon = plant, x0, horizon
        self.terminal = lqr.P if terminal == "lqr" else None
        with torch.no_grad():
            self.optimum = lqr.cost(x0)
            self.lqr_policy_cost = plants.rollout(plant, lqr.policy, x0, horizon=horizon, terminal=self.terminal).cost
        scale = np.abs(np.asarray(plant.init_eval.scale, dtype=float))
        self.scale = torch.as_tensor(scale, dtype=x0.dtype).clamp_min(1e-9)

    @torch.no_grad()
    def __call__(self, controller) -> dict:
        roll = plants.rollout(self.plant, controller, self.x0, horizon=self.horizon, terminal=self.terminal)
        dev = (roll.states[-1] - torch.as_tensor(self.plant.x_eq, dtype=self.x0.dtype)) / self.scale
        success = torch.isfinite(roll.cost) & (dev.norm(dim=-1) < 0.05)
        cost = roll.cost
        finite = torch.isfinite(cost)
        return {
            "cost": float(cost[finite].mean()) if finite.any() else math.inf,
            "cost_ratio_to_lqr_optimum": float(cost.mean() / self.optimum.mean()),
            "cost_ratio_to_lqr_policy": float(cost.mean() / self.lqr_policy_cost.mean()),
            "lqr_optimum": float(self.optimum.mean()),
            "lqr_policy_cost": float(self.lqr_policy_cost.mean()),
            "success_rate": float(success.double().mean()),
            "n_initial_states": int(self.x0.shape[0]),
            "horizon": int(self.horizon),
        }


def evaluate(plant, controller, lqr, x0: torch.Tensor, horizon: int, terminal: str = "lqr") -> dict:
    """Closed-loop cost of the controller vs the LQR optimum and the (clipped) LQR policy on the same x0."""
    return Evaluator(plant, lqr, x0, horizon, terminal)(controller)


def _finite_params(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / METRICS, buf.getvalue())


def _info_string(info: dict | None) -> str:
    if not info:
        return ""
    return ";".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


def load_train_state(run_dir: Path) -> dict:
    """The resumable state of a run, read as plain tensors and Python values (a pickle never runs code here)."""
    path = run_dir / TRAIN_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a crafted pickle is refused by weights_only; a truncated file fails to parse
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise RunFolderError(f"{path} is not a readable lipnet training state ({exc.__class__.__name__}: {first}); "
                             "it may be corrupted or not written by lipnet: start a new run with --overwrite") \
            from None
    keys = {"config", "controller", "optimizer", "generator", "metrics", "step"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise RunFolderError(f"{path} is not a lipnet training state (keys {sorted(keys)} expected); start a new "
                             "run with --overwrite")
    return state


def _check_config(cfg: RunConfig):
    """The plant, once the configuration is known to be consistent with it (before any folder is touched)."""
    plant = plants.load(cfg.plant)
    for name in ("n_x", "n_u"):
        want = getattr(cfg.controller, name)
        if want and want != getattr(plant, name):
            raise LipnetDimension(f"the configuration says {name} = {want} but plant {cfg.plant!r} has "
                                  f"{name} = {getattr(plant, name)}; fix [controller] {name} or the plant spec")
    tc = cfg.train
    opt_cls = optimizer_class(tc.optimizer)  # an unknown name fails here, not after the folder is replaced
    if tc.compile and getattr(opt_cls, "needs_double_backward", False):
        raise LipnetArgument(f"optimizer {tc.optimizer} takes Hessian-vector products through the rollout, which a "
                             "torch.compile'd rollout cannot differentiate twice; drop --compile (compile = false "
                             "in [train]) or choose sphere-mm, agd or manifold-adam")
    return plant


def train(cfg: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
          progress: bool = True, log=print, stop_after: int | None = None) -> TrainResult:
    """Train a controller for `cfg.plant`; everything lands in the run folder `out`.

    `resume` continues from the last checkpoint (identical to an uninterrupted run for the same seed);
    `stop_after` ends the run early after that many steps of this call (used to test resumption).
    """
    state = None
    if resume:
        run_dir = check_run_dir(out, resume=True, overwrite=overwrite)
        state = load_train_state(run_dir)
        saved = RunConfig.from_dict(state["config"])
        if saved.to_dict() != cfg.to_dict():
            log(f"resuming {run_dir} with its recorded configuration (options given now are ignored)")
        cfg = saved
    cfg.validate()
    dtype = _dtype(cfg.dtype)
    plant = _check_config(cfg)
    if not resume:  # only a valid configuration may replace (--overwrite) an existing run folder
        run_dir = prepare_run_dir(out, resume=False, overwrite=overwrite)
    torch.manual_seed(cfg.seed)
    lqr = plants.lqr(plant)
    tc, cc = cfg.train, cfg.controller
    # Training rollouts are truncated (the LQR terminal cost stands in for the tail); evaluation runs the
    # plant's full horizon.
    horizon = tc.horizon or min(plant.horizon, 100)
    gen = torch.Generator().manual_seed(cfg.seed)
    plan = plan_controller(plant, lqr, lipschitz=cc.lipschitz, factor=cc.lipschitz_factor, generator=gen)
    controller = build_controller(plant, plan, cc.hidden, cc.activation, cc.layer, cc.saturation, generator=gen)
    controller = controller.to(dtype)
    rescale_info = None
    if tc.rescale == "path" and state is None:
        rescale_info = _rescale(controller, cc.activation)
    elif tc.rescale not in ("none", "path"):
        raise ValueError(f"rescale must be 'none' or 'path', got {tc.rescale!r}")
    opt = make_optimizer(tc.optimizer, controller, lr=tc.lr or None)
    objective = make_objective(tc.objective, plant, lqr, horizon, tc.terminal, compile=tc.compile)
    # Direct policy optimisation from a random controller on an unstable plant sees exploding costs and
    # saturated, gradient-free actions; a short imitation of the saturated LQR expert starts it inside the
    # region of attraction.
    warmup = make_objective("imitation", plant, lqr, horizon) if tc.warmup else None
    x_eval = plant.sample_initial(tc.eval_batch, "eval", generator=torch.Generator().manual_seed(cfg.seed + 1),
                                  dtype=dtype)
    evaluator = Evaluator(plant, lqr, x_eval, plant.horizon, tc.terminal)
    rows: list[dict] = []
    start = 0
    if state is not None:
        controller.load_state_dict(state["controller"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        rows, start = state["metrics"], state["step"]
    resolved = cfg.to_dict()
    resolved["controller"]["lipschitz"] = float(plan.lipschitz)
    atomic_write_text(run_dir / CONFIG, f"# lipnet {__version__} run configuration; bound source: "
                                        f"{plan.lipschitz_source}\n" + dump_toml(resolved))
    log(f"plant {plant.name} ({plant.n_x} states, {plant.n_u} inputs, dt={plant.dt:g}s); optimizer {tc.optimizer}; "
        f"Lipschitz bound {plan.lipschitz:.4g} ({plan.lipschitz_source})")
    bar = _progress(range(start, tc.steps), progress, initial=start, total=tc.steps)
    t0 = time.perf_counter() - (rows[-1]["seconds"] if rows else 0.0)
    steps_this_call = 0
    for step in bar:
        x0 = _sample_training_states(plant, tc, gen, dtype)
        snapshot = (copy.deepcopy(controller.state_dict()), copy.deepcopy(opt.state_dict()))

        phase = warmup if step < tc.warmup else objective
        loss = _optimizer_step(opt, phase, controller, x0)
        loss_value = float(loss.detach()) if loss is not None else math.nan
        skipped = ""
        if not math.isfinite(loss_value) or not _finite_params(controller):
            controller.load_state_dict(snapshot[0])
            opt.load_state_dict(snapshot[1])
            skipped = "non-finite loss" if not math.isfinite(loss_value) else "non-finite update"
            warnings.warn(f"step {step + 1}: {skipped}; the step was undone and skipped", stacklevel=2)
        if tc.rescale == "path" and tc.rescale_every and (step + 1) % tc.rescale_every == 0:
            _rescale(controller, cc.activation, sweeps=1)
            opt = make_optimizer(tc.optimizer, controller, lr=tc.lr or None)
        row = {"step": step + 1, "objective": getattr(phase, "name", tc.objective), "loss": loss_value,
               "eval_cost_ratio": "", "eval_success": "",
               "seconds": round(time.perf_counter() - t0, 3), "skipped": skipped,
               "info": _info_string(getattr(opt, "last_info", None))}
        if (step + 1) % tc.eval_every == 0 or step + 1 == tc.steps:
            ev = evaluator(controller)
            row["eval_cost_ratio"], row["eval_success"] = ev["cost_ratio_to_lqr_optimum"], ev["success_rate"]
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_value:.4g}", eval=f"{ev['cost_ratio_to_lqr_optimum']:.4g}")
        rows.append(row)
        steps_this_call += 1
        failure = _failing(rows)
        done = step + 1 == tc.steps or (stop_after is not None and steps_this_call >= stop_after)
        if (step + 1) % tc.checkpoint_every == 0 or done or failure:
            _checkpoint(run_dir, cfg, controller, opt, gen, rows, step + 1, plant, plan)
        if failure:
            raise TrainingFailed(f"{failure}; the last finite controller is in {run_dir / 'controller.pt'}. The "
                                 f"rollout produced NaN/inf: check that plant {plant.spec!r} returns finite "
                                 "states for the training states and actions (a user f(x, u) that divides by zero "
                                 "or overflows?), or lower --lipschitz")
        if done:
            break
    if hasattr(opt, "close"):  # the returned controller carries no optimiser hooks
        opt.close()
    final_step = rows[-1]["step"] if rows else 0
    summary = {}
    if final_step >= tc.steps:
        summary = _summarise(plant, controller, evaluator, tc, plan, rows, rescale_info)
    return TrainResult(controller=controller, run_dir=run_dir, metrics=rows, summary=summary)


# A run stops with an error when this many steps in a row, or more than half of its steps (from 20 on), were
# undone for a non-finite loss or update: the result would be the untrained or last finite controller.
MAX_SKIPPED_IN_A_ROW = 10


def _failing(rows: list[dict]) -> str | None:
    """Why the run must stop (too many skipped steps), or None."""
    skipped = [bool(r["skipped"]) for r in rows]
    run = 0
    for s in reversed(skipped):
        if not s:
            break
        run += 1
    if run >= MAX_SKIPPED_IN_A_ROW:
        return f"the last {run} steps were all undone ({rows[-1]['skipped']})"
    if len(rows) >= 20 and sum(skipped) * 2 > len(rows):
        return f"{sum(skipped)} of {len(rows)} steps were undone (non-finite loss or update)"
    return None


def _sample_training_states(plant, tc, gen, dtype) -> torch.Tensor:
    """A batch of initial states: the training distribution, or half of it from the harder evaluation one."""
    if tc.initial_states == "train":
        return plant.sample_initial(tc.batch, "train", generator=gen, dtype=dtype)
    if tc.initial_states == "mix":
        half = tc.batch // 2
        return torch.cat([plant.sample_initial(tc.batch - half, "train", generator=gen, dtype=dtype),
                          plant.sample_initial(half, "eval", generator=gen, dtype=dtype)])
    raise ValueError(f"initial_states must be 'train' or 'mix', got {tc.initial_states!r}")


def _optimizer_step(opt, objective, controller, x0):
    """One optimiser step on the objective at the initial states `x0`, by the registry's closure convention."""
    if getattr(opt, "wants_loss_closure", False):
        return opt.step(lambda: objective(controller, x0))

    def closure():
        opt.zero_grad()
        value = objective(controller, x0)
        if torch.isfinite(value):
            value.backward()
        return value

    return opt.step(closure)


def _progress(it, enabled: bool, **kw):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="train", leave=True, **kw)


def _rescale(controller, activation: str, sweeps: int | None = None):
    if activation != "relu":
        raise ValueError(f"--rescale path needs ReLU activations (path-lifting symmetry), not {activation!r}")
    from lipnet.optim.rescale import rescale

    kw = {} if sweeps is None else {"max_sweeps": sweeps}
    res = rescale(controller, **kw)
    return {"iterations": getattr(res, "iterations", None), "converged": getattr(res, "converged", None)}


def _checkpoint(run_dir, cfg, controller, opt, gen, rows, step, plant, plan) -> None:
    for p in controller.parameters():
        if not torch.isfinite(p).all():  # never write NaN weights
            raise RunFolderError("refusing to checkpoint non-finite weights")
    atomic_torch_save({"config": cfg.to_dict(), "controller": controller.state_dict(),
                       "optimizer": opt.state_dict(), "generator": gen.get_state(), "metrics": rows,
                       "step": step}, run_dir / TRAIN_STATE)
    save_controller(controller, run_dir, plant=plant.spec, dt=plant.dt,
                    meta={"step": step, "lipschitz_requested": plan.lipschitz,
                          "lipschitz_source": plan.lipschitz_source, "optimizer": cfg.train.optimizer})
    _write_metrics(run_dir, rows)


def _summarise(plant, controller, evaluator, tc, plan, rows, rescale_info) -> dict:
    ev = evaluator(controller)
    return {"plant": plant.spec, "steps": rows[-1]["step"], "seconds": rows[-1]["seconds"],
            "optimizer": tc.optimizer, "objective": tc.objective, "evaluation": ev,
            "lipschitz_bound_by_construction": controller.lipschitz_bound(),
            "lipschitz_requested": plan.lipschitz, "lipschitz_source": plan.lipschitz_source,
            "lqr_gain_norm": plan.lqr_gain_norm, "skipped_steps": sum(1 for r in rows if r["skipped"]),
            "rescale": rescale_info}
