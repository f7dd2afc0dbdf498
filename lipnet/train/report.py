"""The run report: loss curve, closed-loop responses against LQR, `summary.json` and `report.md`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

import plants
from lipnet.fileio import atomic_savefig, atomic_write

__all__ = ["write_report", "headline", "warnings_of"]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(rows: list[dict], path: Path) -> None:
    plt = _plt()
    steps = [r["step"] for r in rows]
    loss = [r["loss"] for r in rows]
    ev = [(r["step"], float(r["eval_cost_ratio"])) for r in rows if r["eval_cost_ratio"] not in ("", None)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(steps, loss, lw=1, label="training loss (cost / LQR optimum)")
    if ev:
        ax.semilogy(*zip(*ev, strict=True), "o-", ms=3, label="evaluation cost / LQR optimum")
    ax.axhline(1.0, color="k", lw=0.7, ls="--")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path)


@torch.no_grad()
def plot_responses(plant, controller, lqr, x0: torch.Tensor, horizon: int, path: Path) -> None:
    """The neural (left) and the saturated-LQR (right) closed loops from the same starts, side by side."""
    plt = _plt()
    rolls = {"neural controller": plants.rollout(plant, controller, x0, horizon=horizon),
             "saturated LQR": plants.rollout(plant, lqr.policy, x0, horizon=horizon)}
    t = np.arange(horizon + 1) * plant.dt
    n_rows = plant.n_x + plant.n_u
    fig, axes = plt.subplots(n_rows, 2, figsize=(10, 1.6 * n_rows), sharex=True, sharey="row", squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (title, roll) in enumerate(rolls.items()):
        # Periodic angles are drawn wrapped around the equilibrium, as the cost and the success test see them.
        states = (plant.deviation(roll.states) + torch.as_tensor(plant.x_eq, dtype=roll.states.dtype)).double()
        for k in range(x0.shape[0]):
            c = colors[k % len(colors)]
            for i in range(plant.n_x):
                axes[i, col].plot(t, states[:, k, i].numpy(), color=c, lw=1.1)
            for j in range(plant.n_u):
                axes[plant.n_x + j, col].step(t[:-1], roll.actions[:, k, j].double().numpy(), color=c, lw=1.1)
        axes[0, col].set_title(title, fontsize=9)
        axes[-1, col].set_xlabel("time [s]")
    for i, name in enumerate(plant.state_names + plant.input_names):
        unit = plant.state_units[i] if i < plant.n_x else ""
        axes[i, 0].set_ylabel(f"{name} [{unit}]" if unit else name, fontsize=8)
        for col in range(2):
            axes[i, col].grid(alpha=0.3)
    fig.suptitle("closed loop from the same evaluation starts", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path)


def headline(summary: dict) -> list[str]:
    """The lines that say how the controller compares with the saturated LQR (and what to watch out for)."""
    ev = summary["evaluation"]
    both = ev.get("cost_ratio_to_lqr_policy_both_stabilised")
    lines = [f"stabilised {ev['success_rate']:.1%} of {ev['n_initial_states']} evaluation states (saturated LQR: "
             f"{ev['lqr_policy_success_rate']:.1%}); cost / saturated LQR {ev['cost_ratio_to_lqr_policy']:.4f}"
             + (f" ({both:.4f} on the states both stabilise)" if both is not None else "")
             + f"; cost / LQR optimum of the linearised plant {ev['cost_ratio_to_lqr_optimum']:.4f}"]
    if summary.get("stopped"):
        lines.append(f"stopped after {summary.get('steps', '?')} steps: {summary['stopped']}")
    for warning in warnings_of(summary):
        lines.append(f"warning: {warning}")
    return lines


def warnings_of(summary: dict) -> list[str]:
    """Signs that the run did not do what it should: unchanged warm start, still improving, diverging states."""
    out = []
    ev = summary["evaluation"]
    moved = summary.get("moved_from_warm_start")
    restored = summary.get("restored_best_step")
    rollout_steps = summary.get("steps_total", 0) > summary.get("warm_start_steps", 0)
    refused = summary.get("refused_by_lqr_region_guard")
    if rollout_steps and restored is not None and restored <= summary.get("warm_start_steps", 0):
        out.append("the rollout phase did not improve on the validation states, so the controller that imitated "
                   "the expert was kept"
                   + (f" ({refused} of its controllers had a better validation score but cost more than the "
                      "allowance on the starts the saturated LQR stabilises)" if refused else ""))
    elif moved is not None and moved < 1e-3 and rollout_steps:
        out.append(f"the rollout phase left the warm start unchanged (actions moved {moved:.2g} relative); the "
                   "controller is the imitated expert")
    trend = summary.get("last_eval_improvement")
    if trend is not None and trend > 0.01 and restored is None:
        out.append(f"the evaluation cost was still falling at the last step ({trend:.1%} since the previous "
                   "evaluation): more --steps may help")
    if not math.isfinite(ev["cost"]) or not math.isfinite(ev["cost_ratio_to_lqr_optimum"]):
        out.append("the closed loop diverged from some evaluation states; see the report before you certify or "
                   "export this controller")
    return out


def write_report(result, plant=None, lqr=None, horizon: int | None = None, n_responses: int = 4) -> Path:
    """Write plots, `summary.json` and `report.md` into the run folder; return the report's path.

    `plant`, `lqr` and `horizon` default to the run's own (`result.plant`, `result.lqr`, the plant's horizon).
    """
    plant = result.plant if plant is None else plant
    lqr = result.lqr if lqr is None else lqr
    horizon = plant.horizon if horizon is None else horizon
    run_dir = Path(result.run_dir)
    s = result.summary
    plot_loss(result.metrics, run_dir / "loss.png")
    x0 = plant.sample_initial(n_responses, "eval", generator=torch.Generator().manual_seed(12345),
                              dtype=next(result.controller.parameters()).dtype)
    plot_responses(plant, result.controller, lqr, x0, horizon, run_dir / "responses.png")
    atomic_write(run_dir / "summary.json", json.dumps(s, indent=2, default=float) + "\n")
    ev = s["evaluation"]
    gap = ev["cost_ratio_to_lqr_optimum"] - 1.0
    both = ev.get("cost_ratio_to_lqr_policy_both_stabilised")
    region = ev.get("region") or {}
    lines = [
        f"# lipnet run: {s['plant']}",
        "",
        f"- optimizer `{s['optimizer']}`, objective `{s['objective']}`, {s['steps']} steps in {s['seconds']:.1f} s"
        f" ({s['skipped_steps']} skipped)",
        f"- expert imitated first: `{s.get('expert', 'lqr')}` ({s.get('expert_reason', '')}), "
        f"{s.get('warm_start_steps', '')} steps; the rollout phase then moved the actions by "
        f"{_fmt(s.get('moved_from_warm_start'))} (RMS, relative)"
        + (f"; the best validated controller (step {s['restored_best_step']}) was kept"
           if s.get("restored_best_step") else ""),
        f"- Lipschitz bound by construction: **{s['lipschitz_bound_by_construction']:.4g}** "
        f"(requested {s['lipschitz_requested']:.4g}; {s['lipschitz_source']}); ‖K_lqr‖₂ = {s['lqr_gain_norm']:.4g}"
        + (f"; gain at the equilibrium vs the LQR's: {s['equilibrium_gain_error']:.3g} (relative error, scaled)"
           if s.get("equilibrium_gain_error") is not None else ""),
        "",
        f"## Evaluation ({ev['n_initial_states']} held-back initial states from the evaluation distribution: "
        f"{region.get('kind', '')} {region.get('scale', '')} around {region.get('center', '')})",
        "",
        "| quantity | neural controller | saturated LQR |",
        "|---|---|---|",
        f"| stabilised (final state within 5% of the evaluation box) | {ev['success_rate']:.1%} | "
        f"{ev['lqr_policy_success_rate']:.1%} |",
        f"| closed-loop cost (mean) | {ev['cost']:.5g} | {ev['lqr_policy_cost']:.5g} |",
        f"| cost / saturated LQR policy | {ev['cost_ratio_to_lqr_policy']:.4f} | 1 |",
        f"| cost / saturated LQR on the states both stabilise | {_fmt(both)} | 1 |",
        f"| cost / LQR optimum of the linearised plant (mean x0ᵀPx0 = {ev['lqr_optimum']:.5g}) | "
        f"{ev['cost_ratio_to_lqr_optimum']:.4f} ({gap:+.2%}) | "
        f"{ev['lqr_policy_cost'] / max(ev['lqr_optimum'], 1e-300):.4f} |",
        "",
        *([f"Training stopped after {s.get('steps')} steps: {s['stopped']}."] if s.get("stopped") else []),
        "",
        *[f"**Warning: {w}.**" for w in warnings_of(s)],
        "",
        "![loss](loss.png)",
        "",
        "![responses](responses.png)",
        "",
        "Files: `controller.pt` (checkpoint), `config.toml` (reproduces the run), `metrics.csv`, `summary.json`.",
        "Next: `lipnet certify " + str(run_dir) + "`, then `lipnet export " + str(run_dir) + " --out controller.onnx`.",
    ]
    path = run_dir / "report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
