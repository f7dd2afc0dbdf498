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

import torch

import plants
from lipnet import __version__
from lipnet.exceptions import LipnetArgument, LipnetDimension, LipnetValue, RunFolderError, TrainingFailed
from lipnet.fileio import atomic_write
from lipnet.optim import base as optim_contract
from lipnet.optim import make_optimizer
from lipnet.optim.registry import optimizer_class
from lipnet.train.checkpoint import atomic_torch_save, save_controller
from lipnet.train.config import RunConfig, dump_toml
from lipnet.train.expert import MPCExpert
from lipnet.train.lyapunov import TARGET_GROWTH, LyapunovObjective, target_shape
from lipnet.train.objectives import DemoImitation, LocalGain, make_objective, stabilised
from lipnet.train.plan import build_controller, plan_controller
from lipnet.train.rundir import CONFIG, METRICS, TRAIN_STATE, check_run_dir, prepare_run_dir
from lipnet.train.stopping import AUTO_ROLLOUT_STEPS_MPC, AUTO_STEPS, plateau, stale

__all__ = ["train", "TrainResult", "Evaluator"]

METRIC_FIELDS = ["step", "objective", "loss", "eval_cost_ratio", "eval_success", "seconds", "skipped", "info"]


@dataclass
class TrainResult:
    """What a run produced: the controller, its folder, the metrics, the evaluation summary, and the plant and its
    LQR the run built (the report draws the saturated LQR beside the controller without solving it again)."""

    controller: Any
    run_dir: Path
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    plant: Any = None
    lqr: Any = None


def _dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "float64": torch.float64}[name]
    except KeyError:
        raise LipnetValue(f"dtype must be float32 or float64, got {name!r}") from None


class Evaluator:
    """Closed-loop cost and success on fixed held-back initial states vs the LQR optimum and the saturated LQR.

    The LQR side is computed once: it does not change during training. Success: the final state's deviation
    (periodic angles wrapped), divided by the evaluation box, has norm below 0.05.
    """

    def __init__(self, plant, lqr, x0: torch.Tensor, horizon: int, terminal: str = "lqr"):
        self.plant, self.x0, self.horizon = plant, x0, horizon
        self.terminal = lqr.P if terminal == "lqr" else None
        with torch.no_grad():
            self.optimum = lqr.cost(x0)
            roll = plants.rollout(plant, lqr.policy, x0, horizon=horizon, terminal=self.terminal)
        self.lqr_policy_cost = roll.cost
        self.lqr_success = stabilised(plant, roll)
        caught = self.lqr_success
        self._lqr_cost_caught = float(roll.cost[caught].mean()) if caught.any() else None

    @torch.no_grad()
    def __call__(self, controller) -> dict:
        roll = plants.rollout(self.plant, controller, self.x0, horizon=self.horizon, terminal=self.terminal)
        success = stabilised(self.plant, roll)
        cost = roll.cost
        finite = torch.isfinite(cost)
        both = success & self.lqr_success
        caught = self.lqr_success
        return {
            "cost": float(cost[finite].mean()) if finite.any() else math.inf,
            "cost_ratio_to_lqr_optimum": float(cost.mean() / self.optimum.mean()),
            "cost_ratio_to_lqr_policy": float(cost.mean() / self.lqr_policy_cost.mean()),
            # On the states both stabilise: the fair cost comparison where the LQR fails elsewhere.
            "cost_ratio_to_lqr_policy_both_stabilised": (float(cost[both].mean() / self.lqr_policy_cost[both].mean())
                                                         if both.any() else None),
            # On the states the saturated LQR stabilises: where the rollout phase must not get worse (_keep_best).
            "cost_where_lqr_stabilises": float(cost[caught].mean()) if caught.any() else None,
            "lqr_policy_cost_where_it_stabilises": self._lqr_cost_caught,
            "lqr_optimum": float(self.optimum.mean()),
            "lqr_policy_cost": float(self.lqr_policy_cost.mean()),
            "success_rate": float(success.double().mean()),
            "lqr_policy_success_rate": float(self.lqr_success.double().mean()),
            "n_initial_states": int(self.x0.shape[0]),
            "horizon": int(self.horizon),
            "region": {"kind": self.plant.init_eval.kind, "scale": [float(v) for v in self.plant.init_eval.scale],
                       "center": [float(v) for v in self.plant.x_eq]},
        }


def _finite_params(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / METRICS, buf.getvalue())


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
    if tc.compile and optim_contract.needs_double_backward(opt_cls):
        raise LipnetArgument(f"optimizer {tc.optimizer} takes Hessian-vector products through the rollout, which a "
                             "torch.compile'd rollout cannot differentiate twice; drop --compile (compile = false "
                             "in [train]) or choose sphere-mm, agd or manifold-adam")
    if tc.roa_box and len(tc.roa_box) not in (1, plant.n_x):
        raise LipnetArgument(f"--roa-box needs 1 or {plant.n_x} half-widths for plant {cfg.plant!r}, got "
                             f"{len(tc.roa_box)}")
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
    expert, expert_reason = _choose_expert(plant, lqr, tc, cfg.seed, dtype)
    mpc = expert == "mpc"
    # tanh with the layer gains fixed at initialisation cannot fit a swing-up expert (normalised imitation error
    # 0.17 vs 0.05 for ReLU, pendulum swing-up, Adam 3000 steps: 0 % vs 100 % upright); ReLU is positively
    # homogeneous, so only the product of the gains matters. Near the equilibrium tanh stays the default.
    activation = cc.activation if cc.activation != "auto" else ("relu" if mpc else "tanh")
    gen = torch.Generator().manual_seed(cfg.seed)
    # Far from the equilibrium the expert switches between the actuator limits over short distances, which a
    # bound of 4 × the LQR gain cannot follow (quadrotor wide: imitation error 0.30 of the expert's action energy at
    # 4 ×, 0.12 at 40 ×; 3 seeds at 16 ×: success 89 → 94 %, cost on the starts both stabilise 1.29 → 1.00 × the
    # saturated LQR's).
    factor = cc.lipschitz_factor or (MPC_LIPSCHITZ_FACTOR if mpc else LQR_LIPSCHITZ_FACTOR)
    plan = plan_controller(plant, lqr, lipschitz=cc.lipschitz, factor=factor, generator=gen, depth=len(cc.hidden) + 1)
    controller = build_controller(plant, plan, cc.hidden, activation, cc.layer, cc.saturation, generator=gen)
    controller = controller.to(dtype)
    rescale_info = None
    if tc.rescale == "path" and state is None:
        rescale_info = _rescale(controller, activation)
    elif tc.rescale not in ("none", "path"):
        raise LipnetValue(f"rescale must be 'none' or 'path', got {tc.rescale!r}")
    rollout_options = _rollout_options(tc.optimizer, mpc)

    def configured(options: dict):  # the configured optimiser, also rebuilt after each path rescaling
        return make_optimizer(tc.optimizer, controller, lr=tc.lr or None, **options)

    opt = configured(rollout_options)
    # Imitating the MPC's demonstrations is a regression on a fixed data set: there sphere-mm's majoriser
    # backtracks at every minibatch and stalls (normalised error 0.21, 0 % upright, 1500 steps), while Adam on
    # the manifold (paper 001) at its default fits it (0.077, 100 % upright); the configured optimiser takes over
    # for the rollout phase. The LQR imitation runs the configured optimiser without the rollout phase's options.
    if mpc and tc.optimizer != WARM_OPTIMIZER:
        warm_opt = make_optimizer(WARM_OPTIMIZER, controller)
    elif not mpc and rollout_options:
        warm_opt = configured({})
    else:
        warm_opt = opt
    # --steps is an upper bound; the plateau rule (lipnet.train.stopping) usually ends the main phase before it.
    total_main = tc.steps or (tc.demo_warmup + AUTO_ROLLOUT_STEPS_MPC if mpc else AUTO_STEPS)
    stop_reason = None
    terminal = tc.terminal if tc.terminal != "auto" else ("none" if mpc else "lqr")
    # With the LQR expert, training rollouts are truncated (the LQR terminal cost stands in for the tail); far
    # from the equilibrium (MPC expert) they run the plant's full horizon. Evaluation always runs the full one.
    horizon = tc.horizon or (plant.horizon if mpc else min(plant.horizon, 100))
    objective = make_objective(tc.objective, plant, lqr, horizon, terminal, compile=tc.compile, stabilised_only=mpc)
    # Direct policy optimisation from a random controller sees exploding costs and saturated, gradient-free
    # actions, and far from the equilibrium it stalls in local minima (a pendulum that swings but never gets
    # up): the first steps imitate an expert instead, the saturated LQR or the MPC's demonstrations.
    warmup, n_warm, demo_set = None, 0, None
    if mpc:
        t_demo = time.perf_counter()
        demo_gen = torch.Generator().manual_seed(cfg.seed + 3)  # its own stream: a resumed run rebuilds them
        starts = plant.sample_initial(tc.demos, "train", generator=demo_gen, dtype=dtype)
        mpc_expert = MPCExpert(plant, action_scale=plan.action_scale, generator=demo_gen, guide=lqr.policy)
        demos = mpc_expert.demonstrations(starts, plant.horizon)
        demo_set = DemoImitation(plant, *demos.pairs(), batch=max(512, tc.batch))
        if tc.expert_labels:  # the expert's action on states spread over the region (see [train] expert_labels)
            spread = _states_to_label(plant, lqr, tc, demo_gen, dtype)
            demo_set.extend(spread, mpc_expert.label(spread))
        warmup, n_warm = demo_set, tc.demo_warmup
        log(f"expert: MPC demonstrations from {tc.demos} states and its actions on {tc.expert_labels} more "
            f"({expert_reason}; "
            f"{time.perf_counter() - t_demo:.0f} s)")
    elif tc.warmup:
        warmup, n_warm = make_objective("imitation", plant, lqr, horizon), tc.warmup
    gain_weight = tc.local_gain if tc.local_gain >= 0 else (1.0 if mpc else 0.0)
    gain = LocalGain(objective, plant, lqr.K, gain_weight)  # also what the summary reports
    if gain_weight > 0:  # both phases keep the LQR gain at the equilibrium (objectives.LocalGain)
        objective = gain
        if warmup is not None:
            warmup = LocalGain(warmup, plant, lqr.K, gain_weight)
    x_eval = plant.sample_initial(tc.eval_batch, "eval", generator=torch.Generator().manual_seed(cfg.seed + 1),
                                  dtype=dtype)
    evaluator = Evaluator(plant, lqr, x_eval, plant.horizon, terminal)
    # The best controller of the rollout phase is kept where the rollout gradient can lead astray (MPC expert);
    # it is chosen on validation states of its own, so the evaluation states stay held out.
    validator = None
    if mpc:
        validator = Evaluator(plant, lqr, _validation_states(plant, tc, cfg.seed + 2, dtype), plant.horizon, terminal)
    best = {"score": None, "state": None, "step": 0}
    warm_state = None
    roa_obj, roa_state, roa_opt = None, None, None
    dagger_data: list = []
    dagger_steps = {n_warm * (k + 1) // (tc.dagger + 1) for k in range(tc.dagger)} if mpc else set()
    rows: list[dict] = []
    start = 0
    if state is not None:
        controller.load_state_dict(state["controller"])
        opt.load_state_dict(state["optimizer"])
        if warm_opt is not opt and state.get("warm_optimizer") is not None:
            warm_opt.load_state_dict(state["warm_optimizer"])
        gen.set_state(state["generator"])
        rows, start = state["metrics"], state["step"]
        best = state.get("best") or best
        warm_state = state.get("warm_state")
        roa_state = state.get("roa")
        dagger_data = list(state.get("dagger") or [])
        for xs, us in dagger_data:  # the relabelled pairs of earlier rounds
            warmup.extend(xs, us)
        total_main = int(state.get("total_main") or total_main)
        stop_reason = state.get("stop_reason")
    resolved = cfg.to_dict()  # every "auto" written as what it became, so --config reproduces the run
    resolved["controller"].update(lipschitz=float(plan.lipschitz), lipschitz_factor=factor, activation=activation)
    resolved["train"].update(expert=expert, steps=tc.steps or total_main, terminal=terminal, local_gain=gain_weight)
    atomic_write(run_dir / CONFIG, f"# lipnet {__version__} run configuration; bound source: "
                                        f"{plan.lipschitz_source}\n" + dump_toml(resolved))
    log(f"plant {plant.name} ({plant.n_x} states, {plant.n_u} inputs, dt={plant.dt:g}s); optimizer {tc.optimizer}; "
        f"Lipschitz bound {plan.lipschitz:.4g} ({plan.lipschitz_source})")
    total = total_main + tc.roa_steps  # the --roa stage, if any, comes last
    bar = _progress(range(start, total), progress, initial=start, total=total)
    t0 = time.perf_counter() - (rows[-1]["seconds"] if rows else 0.0)
    t_call = time.perf_counter()
    steps_this_call = 0
    finished = start >= total
    for step in bar:
        if step >= total:
            break
        x0 = _sample_training_states(plant, tc, gen, dtype)
        if step in dagger_steps and len(dagger_data) < tc.dagger:
            xs, us = _dagger_round(plant, controller, mpc_expert, starts)
            warmup.extend(xs, us)
            dagger_data.append((xs, us))
        step_opt = warm_opt if step < min(n_warm, total_main) else opt
        if step >= total_main and roa_obj is None:
            if roa_state is None:  # the stage starts from the best validated controller of the main phase
                if best["state"] is not None and best["step"] != step:
                    controller.load_state_dict(best["state"])
                best = {"score": None, "state": None, "step": 0, "refused": best.get("refused", 0)}
                reference = _lqr_region(plant, lqr, tc.roa_box or None, log)
                P, rate = target_shape(plant, controller, tc.roa_box or None, reference=reference)
                _log_target(plant, tc.roa_box or None, P, rate, reference, log)
                roa_state = {"P": torch.as_tensor(P), "rate": float(rate), "start": step,
                             "lqr_region": None if reference is None else
                             {k: reference.get(k) for k in ("certified", "rho", "volume_share")}}
            # The penalty alone: with the rollout cost beside it the stage never reduced the violations (ball-beam,
            # 300 steps: 3.1 % before and after; the penalty alone, 0.5 % in 100 steps). The cost is guarded by
            # the keep-best below instead.
            roa_obj = LyapunovObjective(plant, None, controller, roa_state["P"].numpy(), roa_state["rate"],
                                        batch=tc.batch)
            # A penalty on freshly falsified states each step is a noisy fit, like the imitation: Adam on the
            # manifold moves there where the sphere majoriser's steps stay ~1e-4 (measured: no change in 300 steps).
            roa_opt = make_optimizer(ROA_OPTIMIZER, controller) if tc.optimizer != ROA_OPTIMIZER else opt
            if state is not None and state.get("roa_optimizer") is not None and roa_opt is not opt:
                roa_opt.load_state_dict(state["roa_optimizer"])
            # The stage's guard (no lost start, bounded cost) is judged on starts of its own, never on the
            # held-out evaluation ones that the report states.
            guard = validator or Evaluator(plant, lqr, _validation_states(plant, tc, cfg.seed + 5, dtype),
                                           plant.horizon, terminal)
            if "before" not in roa_state:  # the stage's start is its first candidate: it never leaves it worse
                roa_state["before"] = _violation_share(roa_obj, controller, cfg.seed)
                ev0 = guard(controller)
                roa_state["cost_before"] = ev0["cost_ratio_to_lqr_optimum"]
                roa_state["success_before"] = ev0["success_rate"]
                best = {"score": [roa_state["before"]], "state": copy.deepcopy(controller.state_dict()), "step": step,
                        "cost": roa_state["cost_before"], "refused": best.get("refused", 0)}
        if step >= total_main:
            step_opt = roa_opt
        controller.straight_through = _straight_through(step_opt, mpc or step >= total_main)
        snapshot = (copy.deepcopy(controller.state_dict()), copy.deepcopy(step_opt.state_dict()))

        phase = roa_obj if step >= total_main else (warmup if step < n_warm else objective)
        inputs = phase.sample(gen) if hasattr(phase, "sample") else x0
        loss = _optimizer_step(step_opt, phase, controller, inputs)
        loss_value = float(loss.detach()) if loss is not None else math.nan
        skipped = ""
        if not math.isfinite(loss_value) or not _finite_params(controller):
            controller.load_state_dict(snapshot[0])
            step_opt.load_state_dict(snapshot[1])
            skipped = "non-finite loss" if not math.isfinite(loss_value) else "non-finite update"
            warnings.warn(f"step {step + 1}: {skipped}; the step was undone and skipped", stacklevel=2)
        if tc.rescale == "path" and tc.rescale_every and (step + 1) % tc.rescale_every == 0:
            _rescale(controller, activation, sweeps=1)
            rebuilt = configured(rollout_options)
            if warm_opt is opt:
                warm_opt = rebuilt
            elif not mpc:
                optim_contract.close(warm_opt)
                warm_opt = configured({})
            optim_contract.close(opt)
            opt = rebuilt
        row = {"step": step + 1, "objective": getattr(phase, "name", tc.objective), "loss": loss_value,
               "eval_cost_ratio": "", "eval_success": "",
               "seconds": round(time.perf_counter() - t0, 3), "skipped": skipped,
               "info": _info_string(optim_contract.last_info(step_opt))}
        if step + 1 == n_warm:  # what the rollout phase starts from (the report says how far it moved)
            warm_state = copy.deepcopy(controller.state_dict())
        if roa_obj is not None and step >= total_main and (
                (step + 1 - total_main) % tc.eval_every == 0 or step + 1 == total):
            share = _violation_share(roa_obj, controller, cfg.seed)  # the stage keeps its fewest violations
            if share < best["score"][0]:  # ... among controllers that stabilise as many starts at a similar cost
                ev = guard(controller)
                if (ev["success_rate"] >= roa_state["success_before"]
                        and ev["cost_ratio_to_lqr_optimum"] <= roa_state["cost_before"] * (1 + ROA_COST_SLACK)):
                    best.update(score=[share], state=copy.deepcopy(controller.state_dict()), step=step + 1,
                                cost=ev["cost_ratio_to_lqr_optimum"])
        tail = n_warm - int(IMITATION_TAIL * n_warm)
        if validator is not None and tail <= step + 1 <= total_main and (
                (step + 1 - n_warm) % tc.eval_every == 0 or step + 1 == total_main):
            ev_val = validator(controller)
            _keep_best(best, ev_val, controller, step + 1, best.get("region_limit") if step + 1 > n_warm else None)
            if step + 1 == n_warm:
                best["region_limit"] = _region_limit(best, ev_val)
            if step + 1 == n_warm and best["step"] != n_warm and step + 1 < total_main:
                # The imitation's last iterate can be a bad one (its minibatch noise: ball-beam seed 2, 113× the
                # LQR optimum at the hand-off against 3.9× fifty steps before, and the rollout phase spent ~200
                # steps of 0.7 s climbing back): the rollout phase starts from its best validated iterate.
                controller.load_state_dict(best["state"])
                warm_state = copy.deepcopy(best["state"])
        if (step + 1) % tc.eval_every == 0 or step + 1 == total:
            ev = evaluator(controller)
            row["eval_cost_ratio"], row["eval_success"] = ev["cost_ratio_to_lqr_optimum"], ev["success_rate"]
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_value:.4g}", eval=f"{ev['cost_ratio_to_lqr_optimum']:.4g}")
        rows.append(row)
        steps_this_call += 1
        failure = _failing(rows)
        if failure and best["state"] is not None:
            # A phase that keeps its best validated controller (the rollout phase after the MPC expert, the --roa
            # stage) ends here and returns that controller: nothing validated is lost to a diverging iterate.
            warnings.warn(f"step {step + 1}: {failure}; the phase ends and the run keeps its best validated "
                          f"controller (step {best['step']})", stacklevel=2)
            if step < total_main:
                stop_reason = f"{DIVERGED}: {failure}; the run returns its best validated controller (step " \
                              f"{best['step']})"
                total_main = step + 1
                total = total_main + tc.roa_steps
            else:
                roa_state["ended_early"] = failure
                total = step + 1
            failure = None
        if step + 1 < total_main and tc.stop == "plateau":  # the main phase may end early (stopping.py)
            reason = plateau(rows, phase_start=n_warm if n_warm < total_main else 0)
            if reason is None and validator is not None and best["state"] is not None:
                reason = stale(best["step"], step + 1, n_warm)
            if reason is None and tc.max_seconds and time.perf_counter() - t_call > tc.max_seconds:
                reason = f"wall-clock cap: {tc.max_seconds:g} s of training in this call (--max-seconds)"
            if reason is not None:
                stop_reason, total_main = reason, step + 1
                total = total_main + tc.roa_steps
                if hasattr(bar, "total"):
                    bar.total = total
                    bar.refresh()
        if step + 1 == total_main and stop_reason is None:
            stop_reason = f"reached the step budget ({total_main} steps{', --steps' if tc.steps else ''})"
        finished = step + 1 == total
        done = finished or (stop_after is not None and steps_this_call >= stop_after)
        if (step + 1) % tc.checkpoint_every == 0 or done or failure:
            _checkpoint(run_dir, cfg, controller, opt, gen, rows, step + 1, plant, plan,
                        extra={"best": best, "warm_state": warm_state, "roa": roa_state, "total_main": total_main,
                               "stop_reason": stop_reason, "dagger": dagger_data,
                               "roa_optimizer": None if roa_opt in (None, opt) else roa_opt.state_dict(),
                               "warm_optimizer": None if warm_opt is opt else warm_opt.state_dict()})
        if failure:
            raise TrainingFailed(f"{failure}; the last finite controller is in {run_dir / 'controller.pt'}. The "
                                 f"rollout produced NaN/inf: check that plant {plant.spec!r} returns finite "
                                 "states for the training states and actions (a user f(x, u) that divides by zero "
                                 "or overflows?), or lower --lipschitz")
        if done:
            break
    for o in {id(opt): opt, id(warm_opt): warm_opt, id(roa_opt): roa_opt}.values():
        optim_contract.close(o)  # the returned controller carries no optimiser hooks
    controller.straight_through = False
    final_step = rows[-1]["step"] if rows else 0
    summary = {}
    if finished:
        restored = None
        if best["state"] is not None and best["step"] != final_step:
            controller.load_state_dict(best["state"])
            restored = best["step"]
            save_controller(controller, run_dir, plant=plant.spec, dt=plant.dt,
                            meta={"step": final_step, "restored_best_step": restored,
                                  "lipschitz_requested": plan.lipschitz, "lipschitz_source": plan.lipschitz_source,
                                  "optimizer": tc.optimizer, **_roa_meta(roa_state)})
        summary = _summarise(plant, controller, evaluator, tc, plan, rows, rescale_info)
        summary.update({"expert": expert, "expert_reason": expert_reason, "steps_total": total,
                        "stopped": stop_reason,
                        "activation": activation, "warm_start_optimizer": WARM_OPTIMIZER if mpc else tc.optimizer,
                        "warm_start_steps": min(n_warm, total), "training_horizon": horizon, "terminal": terminal,
                        "restored_best_step": restored,
                        # rollout-phase controllers with a better validation score that cost > the allowance on the
                        # starts the saturated LQR stabilises (_region_limit); None where no such guard ran
                        "refused_by_lqr_region_guard": best.get("refused", 0) if validator is not None else None,
                        "imitation_pairs": None if demo_set is None else len(demo_set.states),
                        "moved_from_warm_start": _moved(controller, warm_state, x_eval, plant),
                        # ‖(∂π/∂x(x_eq) + K) S‖_F / ‖K S‖_F: 0 where the controller linearises to the LQR
                        "equilibrium_gain_error": math.sqrt(float(gain.gain_error(controller, dtype).detach()))})
        if roa_obj is not None:
            summary["roa_stage"] = {
                "steps": tc.roa_steps, "P": roa_state["P"].tolist(), "rate": roa_state["rate"],
                "lqr_region": roa_state.get("lqr_region"),
                "box": tc.roa_box or None, "ended_early": roa_state.get("ended_early"),
                "violating_share_before": roa_state["before"],
                "violating_share_after": best["score"][0],  # the kept controller's, checked at its step
                "cost_before": roa_state.get("cost_before"), "cost_after": best.get("cost"),
                "note": "share of 4096 states in {V ≤ 1} where V(F(x)) ≥ V(x); `lipnet certify` proves the region; "
                        "cost before/after on the stage's own guard starts (the evaluation is above)"}
    return TrainResult(controller=controller, run_dir=run_dir, metrics=rows, summary=summary, plant=plant, lqr=lqr)


# A run stops with an error when this many steps in a row, or more than half of its steps (from 20 on), were
# undone for a non-finite loss or update: the result would be the untrained or last finite controller.
MAX_SKIPPED_IN_A_ROW = 10
DIVERGED = "diverged"  # how the stop reason of a phase ended by that rule begins (where it keeps a best controller)


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


WARM_OPTIMIZER = "manifold-adam"  # imitation of MPC demonstrations (see train)
ROA_OPTIMIZER = "manifold-adam"  # the --roa stage (see train)
LQR_LIPSCHITZ_FACTOR, MPC_LIPSCHITZ_FACTOR = 4.0, 16.0  # the automatic bound, × the scaled LQR gain (plan.py)
# Validation starts per evaluation start. The keep-best takes the most successful of ~15–40 noisy iterates, so a
# small validation set picks lucky ones: with half the evaluation's 512 starts (success std ~1.4 points) cart-pole
# wide seed 0 kept a controller with 92.0 % on the held-out starts; with 3 × (std ~0.6) 98.4 %.
VALIDATION_FACTOR = 3
# Near the equilibrium the closed-loop cost is ill-conditioned in the controller's gain (a slow mode: dcmotor), and
# steps that each minimise the majoriser along the current gradient zigzag across the valley (θ ~ 1e-4 per step,
# ~1e-5 of cost per 25 steps); the mean of the recent gradients keeps the direction along it. Measured with
# `benchmarks/optimizers.py`, 10 seeds, final cost / LQR optimum, median (worst): dcmotor 1.00040 (1.00108) →
# 1.00030 (1.00043), random-0 1.00089 (1.00164) → 1.00076 (1.00134), the other linear tasks within 1e-5. Its cost:
# noisier iterates on the narrow cart-pole, 1.06814 / 1.06030 → 1.06906 / 1.06043 (seeds 0 / 1; pendulum unchanged).
# The imitation before it keeps the gradient: there the mean slowed the fit (random-3: 1.00126 against 1.00065).
ROLLOUT_MOMENTUM = 0.9
IMITATION_TAIL = 0.25  # the last share of the MPC imitation whose validated best the rollout phase starts from
LQR_REGION_SLACK = 0.10  # the rollout phase's cost allowance where the saturated LQR works (_region_limit)
ROA_COST_SLACK = 0.10  # the --roa stage may trade this much cost (relative, on its guard starts) for fewer violations
# The MPC expert replaces the LQR one where the saturated LQR stabilises less than this share of training states.
AUTO_MPC_BELOW = 0.9
# Below this much plant time nothing settles within the horizon, so the LQR's failure there says nothing.
MIN_DECISION_SECONDS = 2.0


def _straight_through(opt, far: bool) -> bool:
    """Whether the step passes the actuator clip's gradient straight through (`Controller.straight_through`).

    Far from the equilibrium (the MPC path, the --roa stage) the hard clip saturates often and its gradient
    vanishes there, so the imitation and the gradient-only optimisers (Adam and its kin) follow the surrogate. An
    optimiser that checks the loss it evaluates against a model built from the gradient (sphere-mm's majoriser,
    sphere-newton's Armijo test: `wants_loss_closure`) gets the clip's own gradient: with the surrogate's slope its
    model promised decreases the loss never made, its curvature estimate grew to fit them and its steps shrank to
    ~1e-6 rad (ball-beam wide, seeds 0 / 2: 1.7557 / 1.7432 × the LQR optimum with the surrogate, 1.7132 / 1.6990
    with the clip's own gradient, 20-trial-tuned Adam 1.7276 / 1.7144). Elsewhere (seeds 0 / 1): cart-pole wide
    97.3 / 98.4 → 97.7 / 98.4 % of the starts stabilised; quadrotor wide (seed 0) 94.0 → 95.5 %, cost on the starts
    both stabilise 1.07 → 1.00 × the saturated LQR's; pendulum swing-up 0.506 / 0.528 → 0.479 / 0.482 × the LQR
    optimum (all starts up), a better optimum of its objective that pays on the 12–14 % of starts the saturated LQR
    also swings up: 1.46 / 1.01 → 3.07 / 2.50 × its cost there."""
    return far and not optim_contract.wants_loss_closure(opt)


def _rollout_options(optimizer: str, mpc: bool) -> dict:
    """sphere-mm's options for the rollout phase: after an MPC expert, the paper's plain gradient direction; after
    the LQR imitation, a running mean of the gradients in the direction (`ROLLOUT_MOMENTUM`).

    The scaled direction (the default, better on the LQR path's truncated rollouts) cost the cart-pole wide task
    success on the held-out starts (3 seeds: 92.6 / 96.5 / 95.3 % against a median of 96.5 %, worst 96.3 %, with
    the plain one) and slowed the swing-up (211 / 247 s against 177 s): on the stabilised-start loss it trades
    starts for cost, as Adam does there (both measured while the rollout phase still followed the clip's
    straight-through surrogate, see `_straight_through`)."""
    if optimizer != "sphere-mm":
        return {}
    return {"precondition": False} if mpc else {"momentum": ROLLOUT_MOMENTUM}


def _choose_expert(plant, lqr, tc, seed: int, dtype) -> tuple[str, str]:
    """`("lqr" | "mpc", why)`: the configured expert, or for "auto" the saturated LQR's success decides."""
    if tc.expert != "auto":
        return tc.expert, f"expert = {tc.expert} requested"
    if isinstance(plant, plants.LinearPlant) and plant.u_low is None and plant.u_high is None:
        # The LQR is the exact optimum of an unconstrained linear plant: no trajectory optimiser can teach more
        # (whatever share of starts settles within the horizon; a slow mode can leave most of them unsettled).
        return "lqr", "a linear plant without actuator limits: the LQR is the optimum"
    if plant.horizon * plant.dt < MIN_DECISION_SECONDS:
        return "lqr", (f"a {plant.horizon * plant.dt:g} s horizon is too short to tell whether the saturated LQR "
                       "stabilises the training states")
    x0 = plant.sample_initial(256, "train", generator=torch.Generator().manual_seed(seed + 4), dtype=dtype)
    with torch.no_grad():
        rate = float(Evaluator(plant, lqr, x0, plant.horizon, "none").lqr_success.double().mean())
    if rate < AUTO_MPC_BELOW:
        return "mpc", f"the saturated LQR stabilises {rate:.0%} of the training states"
    return "lqr", f"the saturated LQR stabilises {rate:.0%} of the training states"


@torch.no_grad()
def _states_to_label(plant, lqr, tc, gen, dtype) -> torch.Tensor:
    """`tc.expert_labels` states over the training region, half of them (where there are enough) among those the
    saturated LQR stabilises: there a catch needs its full, sharply switching torque, which the demonstrations
    seldom show and a network fitted to them smooths away (swing-up: caught starts the LQR catches swung round)."""
    n = tc.expert_labels
    cand = _sample_training_states(plant, tc, gen, dtype, n=4 * n)
    caught = Evaluator(plant, lqr, cand, plant.horizon, "none").lqr_success
    inside, outside = cand[caught], cand[~caught]
    k = min(len(inside), n // 2)
    return torch.cat([inside[:k], outside[: n - k], inside[k: k + max(0, n - k - len(outside))]])


@torch.no_grad()
def _dagger_round(plant, controller, expert, starts: torch.Tensor, every: int = 4):
    """The states the controller visits from the demonstrations' starts (every `every`-th step), labelled by the
    expert (DAgger, Ross et al. 2011): the imitation then covers where the learner actually goes."""
    x, visited = starts.clone(), []
    for t in range(plant.horizon):
        if t % every == 0:
            visited.append(x)
        x = plant.step(x, controller(x))
    xs = torch.cat(visited)
    xs = xs[torch.isfinite(xs).all(-1)]
    return xs, expert.label(xs)


def _lqr_region(plant, lqr, box, log) -> dict | None:
    """The saturated LQR's certified region (the --roa stage's reference), or None where none can be proven."""
    from lipnet.certify.intervals import Uncertifiable
    from lipnet.certify.roa import NoEquilibrium, lqr_region

    t = time.perf_counter()
    try:  # the same region and budget as `certify` reports for the LQR (roa.lqr_region)
        region = lqr_region(plant, lqr, box=box)
    except (Uncertifiable, NoEquilibrium) as exc:
        log(f"--roa: no certified region of the saturated LQR to grow ({exc}); the target is the controller's own")
        return None
    if not region.get("certified"):
        log(f"--roa: the saturated LQR's region could not be certified ({region.get('reason')}); the target is "
            "the controller's own")
        return None
    log(f"--roa: the saturated LQR's certified region covers {region['volume_share']:.3g} of the box "
        f"({time.perf_counter() - t:.0f} s); the stage trains for twice its volume")
    return region


def _log_target(plant, box, P, rate: float, reference: dict | None, log) -> None:
    """Say what the --roa stage aims for, and when no shape within the cost budget reaches twice the reference."""
    from lipnet.certify.roa import region_box, volume_share

    w = region_box(plant, box)
    vol = volume_share(P, 1.0, w)
    if reference is not None and vol < TARGET_GROWTH * reference["volume_share"] * (1 - 1e-6):
        log(f"--roa: no contracted shape within the cost budget holds twice that volume; the target is the "
            f"largest one found ({vol:.3g} of the box, rate {rate:.4g}), which may not grow the region")
    else:
        log(f"--roa: target {vol:.3g} of the box, contracted at rate {rate:.4g} by its local law")


def _violation_share(obj, controller, seed: int) -> float:
    """Share of 4096 fixed states in the --roa target ellipsoid where V does not decrease (no PGD)."""
    n = obj.plant.n_x
    g = torch.Generator().manual_seed(seed + 7)
    z = torch.randn(4096, n, generator=g, dtype=obj.dtype)
    z = z / z.norm(dim=-1, keepdim=True) * torch.rand(4096, 1, generator=g, dtype=obj.dtype) ** (1.0 / n)
    x = obj._from_ball(z)
    with torch.no_grad():
        nxt = obj.plant.step(x, controller(x))
        return float((obj._V(nxt) >= obj._V(x)).double().mean())


def _keep_best(best: dict, ev: dict, controller, step: int, limit: float | None = None) -> None:
    """Remember the controller with the highest success, then the lowest cost, on the validation states; one that
    costs more than `limit` on the states the saturated LQR stabilises is not a candidate (`_region_limit`); those
    that would have been kept are counted in `best["refused"]`."""
    region = ev.get("cost_where_lqr_stabilises")
    score = (ev["success_rate"], -ev["cost"] if math.isfinite(ev["cost"]) else -math.inf)
    if best["score"] is None or score > tuple(best["score"]):
        if limit is not None and region is not None and not region <= limit:
            best["refused"] = best.get("refused", 0) + 1  # the report says why such a phase kept the imitation
            return
        best.update(score=list(score), state=copy.deepcopy(controller.state_dict()), step=step, region_cost=region)


def _region_limit(best: dict, ev: dict) -> float | None:
    """What the rollout phase's controllers may cost on the validation states the saturated LQR stabilises: at
    most `LQR_REGION_SLACK` over the imitated controller it starts from, or over the saturated LQR if that is higher.

    The rollout phase lowers the mean cost over all stabilised starts, which far starts dominate; left alone it
    also trades the near ones the LQR already handles (pendulum swing-up seed 0, 512 held-out starts: on the 59 both
    stabilise the imitated controller costs 1.46 × the saturated LQR, the rollout phase's controller 3.07 ×, some
    starts at rest 0.4 rad from upright dropped and swung up again at 5–8 × the LQR's cost)."""
    own = best.get("region_cost")
    lqr = ev.get("lqr_policy_cost_where_it_stabilises")
    if own is None or lqr is None or not math.isfinite(own):  # no such starts, or the start itself loses one
        return None
    return (1 + LQR_REGION_SLACK) * max(own, lqr)


@torch.no_grad()
def _moved(controller, warm_state, x: torch.Tensor, plant) -> float | None:
    """RMS change of the controller's actions on `x` since the warm start, relative to the warm start's RMS action."""
    if warm_state is None:
        return None
    now = controller(x)
    final_state = copy.deepcopy(controller.state_dict())
    controller.load_state_dict(warm_state)
    before = controller(x)
    controller.load_state_dict(final_state)
    u_eq = torch.as_tensor(plant.u_eq, dtype=x.dtype)
    return float((now - before).pow(2).sum(-1).mean().sqrt() / (before - u_eq).pow(2).sum(-1).mean().sqrt()
                 .clamp_min(1e-12))


def _validation_states(plant, tc, seed: int, dtype) -> torch.Tensor:
    """Starts from the evaluation region, drawn from their own stream: what a keep-best or a guard decides on."""
    return plant.sample_initial(max(64, VALIDATION_FACTOR * tc.eval_batch), "eval",
                                generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _sample_training_states(plant, tc, gen, dtype, n: int | None = None) -> torch.Tensor:
    """`n` (default: a batch of) initial states: the training distribution, or half from the harder evaluation one."""
    n = tc.batch if n is None else n
    if tc.initial_states == "train":
        return plant.sample_initial(n, "train", generator=gen, dtype=dtype)
    if tc.initial_states == "mix":
        half = n // 2
        return torch.cat([plant.sample_initial(n - half, "train", generator=gen, dtype=dtype),
                          plant.sample_initial(half, "eval", generator=gen, dtype=dtype)])
    raise LipnetValue(f"initial_states must be 'train' or 'mix', got {tc.initial_states!r}")


def _optimizer_step(opt, objective, controller, x0):
    """One optimiser step on the objective at the initial states `x0`, by the optimiser's closure convention."""
    return optim_contract.step(opt, lambda: objective(controller, x0))


def _progress(it, enabled: bool, **kw):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="train", leave=True, **kw)


def _rescale(controller, activation: str, sweeps: int | None = None):
    if activation != "relu":
        raise LipnetValue(f"--rescale path needs ReLU activations (path-lifting symmetry), not {activation!r}")
    from lipnet.pathlift.rescale import rescale

    kw = {} if sweeps is None else {"max_sweeps": sweeps}
    res = rescale(controller, **kw)
    return {"iterations": getattr(res, "iterations", None), "converged": getattr(res, "converged", None)}


def _checkpoint(run_dir, cfg, controller, opt, gen, rows, step, plant, plan, extra: dict | None = None) -> None:
    for p in controller.parameters():
        if not torch.isfinite(p).all():  # never write NaN weights
            raise RunFolderError("refusing to checkpoint non-finite weights")
    atomic_torch_save({"config": cfg.to_dict(), "controller": controller.state_dict(),
                       "optimizer": opt.state_dict(), "generator": gen.get_state(), "metrics": rows,
                       "step": step, **(extra or {})}, run_dir / TRAIN_STATE)
    save_controller(controller, run_dir, plant=plant.spec, dt=plant.dt,
                    meta={"step": step, "lipschitz_requested": plan.lipschitz,
                          "lipschitz_source": plan.lipschitz_source, "optimizer": cfg.train.optimizer,
                          **_roa_meta((extra or {}).get("roa"))})
    _write_metrics(run_dir, rows)


def _roa_meta(roa_state: dict | None) -> dict:
    """The --roa stage's target region `{V ≤ 1}`, which `lipnet certify` tries first (`roa_target` in the meta)."""
    if not roa_state or roa_state.get("P") is None:
        return {}
    return {"roa_target": {"P": torch.as_tensor(roa_state["P"]).tolist(), "rho": 1.0}}


def _summarise(plant, controller, evaluator, tc, plan, rows, rescale_info) -> dict:
    ev = evaluator(controller)
    return {"plant": plant.spec, "steps": rows[-1]["step"], "seconds": rows[-1]["seconds"],
            "optimizer": tc.optimizer, "objective": tc.objective, "evaluation": ev,
            "lipschitz_bound_by_construction": controller.lipschitz_bound(),
            "lipschitz_requested": plan.lipschitz, "lipschitz_source": plan.lipschitz_source,
            "lqr_gain_norm": plan.lqr_gain_norm, "skipped_steps": sum(1 for r in rows if r["skipped"]),
            "rescale": rescale_info, "last_eval_improvement": _last_improvement(rows)}


def _last_improvement(rows: list[dict]) -> float | None:
    """Relative fall of the evaluation cost between the last two evaluations (None with fewer than two)."""
    evals = [float(r["eval_cost_ratio"]) for r in rows if r["eval_cost_ratio"] not in ("", None)]
    if len(evals) < 2 or not all(math.isfinite(v) and v > 0 for v in evals[-2:]):
        return None
    return (evals[-2] - evals[-1]) / evals[-2]
