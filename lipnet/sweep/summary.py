"""The sweep's picture: closed-loop cost against the Lipschitz bound, one panel per plant, one colour per optimizer."""

from __future__ import annotations

import math
from pathlib import Path

from lipnet.fileio import atomic_savefig

__all__ = ["plot_summary"]


def _num(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def plot_summary(rows: list[dict], path: str | Path) -> Path:
    """`summary.png`: cost / LQR optimum (log) vs the certified bound where there is one, else the bound by
    construction; finished trials only (an empty panel says so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("status") == "done" and _num(r.get("cost_vs_lqr_optimum")) is not None]
    plants = sorted({str(r.get("plant")) for r in done}) or ["(no finished trial yet)"]
    fig, axes = plt.subplots(1, len(plants), figsize=(4.6 * len(plants), 3.6), squeeze=False)
    optimizers = sorted({str(r.get("optimizer")) for r in done})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    certified = any(_num(r.get("certified_bound")) is not None for r in done)
    for ax, plant in zip(axes[0], plants, strict=True):
        for i, opt in enumerate(optimizers):
            pts = [(_num(r.get("certified_bound")) if certified else None, r) for r in done
                   if str(r.get("plant")) == plant and str(r.get("optimizer")) == opt]
            xs = [x if x is not None else _num(r.get("lipschitz_bound")) for x, r in pts]
            ys = [_num(r.get("cost_vs_lqr_optimum")) for _, r in pts]
            keep = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None and y > 0]
            if keep:
                ax.scatter(*zip(*keep, strict=True), s=22, color=colors[i % len(colors)], label=opt, alpha=0.8)
        ax.set_title(plant, fontsize=9)
        ax.set_xlabel("Lipschitz bound" + (" (certified)" if certified else " (by construction)"))
        xs_all = [x for c in ax.collections for x in c.get_offsets()[:, 0]]
        if xs_all:
            ax.set_yscale("log")
            ax.axhline(1.0, color="k", lw=0.6, ls="--")
            lo, hi = min(xs_all), max(xs_all)
            if lo > 0 and hi / lo > 5:
                ax.set_xscale("log")
            elif hi - lo <= 1e-3 * max(abs(hi), 1e-12):  # one bound for all: a readable axis around it
                ax.set_xlim(lo - 0.05 * abs(lo) - 1e-9, hi + 0.05 * abs(hi) + 1e-9)
            if ax.get_xscale() == "linear":
                ax.ticklabel_format(axis="x", useOffset=False)
        else:
            ax.text(0.5, 0.5, "no finished trial", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("cost / LQR optimum")
    if optimizers and done:
        axes[0][-1].legend(fontsize=7, title="optimizer", title_fontsize=7)
    fig.tight_layout()
    return atomic_savefig(fig, Path(path), dpi=100)
