"""Phase-plane picture of certified regions: 2-D slices through the equilibrium, with simulated trajectories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lipnet.fileio import atomic_savefig

__all__ = ["plot_regions", "slice_pairs"]


def slice_pairs(n: int) -> list[tuple[int, int]]:
    """The planes drawn: (0, 1), (2, 3), … (position/velocity pairs in the built-ins' state order), at most 3."""
    pairs = [(i, i + 1) for i in range(0, n - 1, 2)][:3]
    return pairs or [(0, 0)]


def _ellipse(P2: np.ndarray, rho: float, k: int = 200) -> np.ndarray:
    """Boundary of `{e : eᵀ P2 e ≤ ρ}` (2-D)."""
    t = np.linspace(0, 2 * np.pi, k)
    circle = np.stack([np.cos(t), np.sin(t)], -1)
    R = np.linalg.cholesky(P2).T
    return np.sqrt(rho) * circle @ np.linalg.inv(R).T


def plot_regions(plant, controller, regions: dict, path, steps: int | None = None) -> Path:
    """Draw the lipnet and saturated-LQR regions, the box, and lipnet trajectories from inside and just outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .roa import mlp_policy

    x_eq = np.asarray(plant.x_eq, float)
    n = plant.n_x
    pairs = slice_pairs(n)
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.6), squeeze=False)
    main = regions.get("region") or {}
    policy = mlp_policy(controller)
    steps = steps or plant.horizon
    names = plant.state_names or [f"x{i}" for i in range(n)]
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        box = main.get("box") or (regions.get("region_lqr") or {}).get("box")
        if box:
            lo, hi = np.asarray(box[0]), np.asarray(box[1])
            ax.add_patch(plt.Rectangle((lo[i], lo[j]), hi[i] - lo[i], hi[j] - lo[j], fill=False, color="0.5",
                                       lw=1, ls=":", label="stated box"))
        for key, style, label in (("region", dict(color="C0", lw=2), "lipnet"),
                                  ("region_lqr", dict(color="C3", lw=2, ls="--"), "saturated LQR")):
            reg = regions.get(key) or {}
            if not reg.get("P") or not reg.get("rho"):
                continue
            P = np.asarray(reg["P"])
            kind = "certified" if reg.get("certified") else "estimate"
            e = _ellipse(P[np.ix_([i, j], [i, j])], reg["rho"]) if i != j else None
            if e is not None:
                ax.plot(e[:, 0] + x_eq[i], e[:, 1] + x_eq[j], label=f"{label} ({kind}, ρ={reg['rho']:.3g})", **style)
        if main.get("P") and main.get("rho") and i != j:
            P2 = np.asarray(main["P"])[np.ix_([i, j], [i, j])]
            starts = []
            for scale in (0.95, 1.3):
                e = _ellipse(P2, main["rho"] * scale**2, k=9)[:-1]
                x0 = np.tile(x_eq, (e.shape[0], 1))
                x0[:, i] += e[:, 0]
                x0[:, j] += e[:, 1]
                starts.append((x0, "C0" if scale < 1 else "C1"))
            for x0, color in starts:
                x = torch.as_tensor(x0, dtype=torch.float64)
                traj = [x.numpy()]
                with torch.no_grad():
                    for _ in range(steps):
                        x = plant.step(x, policy.torch(x))
                        traj.append(x.numpy())
                tr = np.stack(traj)
                for b in range(tr.shape[1]):
                    ax.plot(tr[:, b, i], tr[:, b, j], color=color, lw=0.7, alpha=0.7)
                ax.plot(x0[:, i], x0[:, j], "o", color=color, ms=3)
            ax.plot([], [], color="C0", lw=0.7, label="from inside (0.95)")
            ax.plot([], [], color="C1", lw=0.7, label="from just outside (1.3)")
        ax.plot(x_eq[i], x_eq[j], "k+", ms=10)
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        if box:
            pad_i, pad_j = 0.15 * (hi[i] - lo[i]), 0.15 * (hi[j] - lo[j])
            ax.set_xlim(lo[i] - pad_i, hi[i] + pad_i)
            ax.set_ylim(lo[j] - pad_j, hi[j] + pad_j)
        ax.set_title(f"slice through x_eq: ({names[i]}, {names[j]})", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"certified regions of attraction — {getattr(plant, 'spec', '') or plant.name}", fontsize=10)
    fig.tight_layout()
    return atomic_savefig(fig, Path(path))
