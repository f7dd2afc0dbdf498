"""The run report: loss curve, closed-loop responses against LQR, `summary.json` and `report.md`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

import plants
from lipnet.fileio import atomic_write
from lipnet.train.rundir import atomic_write_text

__all__ = ["write_report"]


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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


@torch.no_grad()
def plot_responses(plant, controller, lqr, x0: torch.Tensor, horizon: int, path: Path) -> None:
    plt = _plt()
    nn_roll = plants.rollout(plant, controller, x0, horizon=horizon)
    lq_roll = plants.rollout(plant, lqr.policy, x0, horizon=horizon)
    t = np.arange(horizon + 1) * plant.dt
    n_rows = plant.n_x + plant.n_u
    fig, axes = plt.subplots(n_rows, 1, figsize=(7, 1.6 * n_rows), sharex=True)
    axes = np.atleast_1d(axes)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k in range(x0.shape[0]):
        c = colors[k % len(colors)]
        for i in range(plant.n_x):
            axes[i].plot(t, nn_roll.states[:, k, i].double().numpy(), color=c, lw=1.2)
            axes[i].plot(t, lq_roll.states[:, k, i].double().numpy(), color=c, lw=0.8, ls="--")
        for j in range(plant.n_u):
            axes[plant.n_x + j].step(t[:-1], nn_roll.actions[:, k, j].double().numpy(), color=c, lw=1.2)
            axes[plant.n_x + j].step(t[:-1], lq_roll.actions[:, k, j].double().numpy(), color=c, lw=0.8, ls="--")
    for i, name in enumerate(plant.state_names + plant.input_names):
        unit = plant.state_units[i] if i < plant.n_x else ""
        axes[i].set_ylabel(f"{name} [{unit}]" if unit else name, fontsize=8)
        axes[i].grid(alpha=0.3)
    axes[0].set_title("closed loop: neural controller (solid) vs LQR (dashed)", fontsize=9)
    axes[-1].set_xlabel("time [s]")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_report(result, plant, lqr, horizon: int, n_responses: int = 4) -> Path:
    """Write plots, `summary.json` and `report.md` into the run folder; return the report's path."""
    run_dir = Path(result.run_dir)
    s = result.summary
    plot_loss(result.metrics, run_dir / "loss.png")
    x0 = plant.sample_initial(n_responses, "eval", generator=torch.Generator().manual_seed(12345),
                              dtype=next(result.controller.parameters()).dtype)
    plot_responses(plant, result.controller, lqr, x0, horizon, run_dir / "responses.png")
    atomic_write_text(run_dir / "summary.json", json.dumps(s, indent=2, default=float) + "\n")
    ev = s["evaluation"]
    gap = ev["cost_ratio_to_lqr_optimum"] - 1.0
    lines = [
        f"# lipnet run: {s['plant']}",
        "",
        f"- optimizer `{s['optimizer']}`, objective `{s['objective']}`, {s['steps']} steps in {s['seconds']:.1f} s"
        f" ({s['skipped_steps']} skipped)",
        f"- Lipschitz bound by construction: **{s['lipschitz_bound_by_construction']:.4g}** "
        f"(requested {s['lipschitz_requested']:.4g}; {s['lipschitz_source']}); ‖K_lqr‖₂ = {s['lqr_gain_norm']:.4g}",
        "",
        f"## Evaluation ({ev['n_initial_states']} held-back initial states from the evaluation distribution)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| closed-loop cost (mean) | {ev['cost']:.5g} |",
        f"| LQR optimum on the linearised plant, mean x0ᵀPx0 | {ev['lqr_optimum']:.5g} |",
        f"| cost / LQR optimum | {ev['cost_ratio_to_lqr_optimum']:.4f} ({gap:+.2%}) |",
        f"| cost / (saturated) LQR policy on this plant | {ev['cost_ratio_to_lqr_policy']:.4f} |",
        f"| stabilised (final state within 5% of the initial box) | {ev['success_rate']:.1%} |",
        "",
        "![loss](loss.png)",
        "",
        "![responses](responses.png)",
        "",
        "Files: `controller.pt` (checkpoint), `config.toml` (reproduces the run), `metrics.csv`, `summary.json`.",
        "Next: `lipnet certify " + str(run_dir) + "`, then `lipnet export " + str(run_dir) + " --out controller.onnx`.",
    ]
    if not math.isfinite(ev["cost"]):
        lines.insert(2, "**Warning: the closed loop diverged from some evaluation states.**")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
