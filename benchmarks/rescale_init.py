"""How architecture and initialisation scale change the output of the path-conditioned rescaling (paper 002).

Paper 002's finding: at random initialisation the rescaling matters little for constant-width networks
with a large initialisation variance (the expected path magnitudes are then nearly uniform across
parameters), and much more when the widths vary. This script initialises ReLU Controllers (plain layers,
weights N(0, σ²/fan_in), zero biases as lipnet initialises them), runs `lipnet.pathlift.rescale.rescale`
and records, per (architecture, σ), medians over seeds of:

* the relative decrease of the criterion, (F(0) − F(z*)) / F(0), F = LogDet divergence of diag G from
  its best multiple of I (0 = perfectly aligned);
* the size of the rescaling, RMS of the log-scales z* (λ = e^{z/2}) and the RMS of their per-layer means
  (the systematic, architecture-driven part);
* the sweeps to converge (tol 1e-3 on Σ|Δz|).

Run: `python benchmarks/rescale_init.py [--quick]`; writes benchmarks/results/rescale_init.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lipnet.nn import Controller
from lipnet.pathlift.rescale import rescale

ARCHS = {
    "constant 16x5 (16-16-16-16-16)": [16, 16, 16, 16, 16],
    "constant 32x5 (32-32-32-32-32)": [32, 32, 32, 32, 32],
    "controller 4-32-32-32-2": [4, 32, 32, 32, 2],
    "bottleneck 4-64-8-64-2": [4, 64, 8, 64, 2],
    "pyramid 4-128-32-8-2": [4, 128, 32, 8, 2],
}
SCALES = [0.25, 0.5, 1.0, math.sqrt(2.0), 2.0, 4.0, 8.0, 16.0]
RESULTS = Path(__file__).resolve().parent / "results"


def one_run(widths: list[int], sigma: float, seed: int) -> dict:
    """Initialise, rescale, and measure one network."""
    torch.manual_seed(seed)
    c = Controller(widths[0], widths[-1], widths[1:-1], layer="plain").double()
    with torch.no_grad():
        for lin in c.layers:
            lin.raw_weight.normal_(0.0, sigma / math.sqrt(lin.in_features))
            lin.bias.zero_()
    t0 = time.perf_counter()
    res = rescale(c, tol=1e-3, max_sweeps=1000, preserve_bound=False)
    seconds = time.perf_counter() - t0
    z = [2.0 * np.log(s) for s in res.scales]
    zall = np.concatenate(z)
    return {
        "rel_decrease": (res.criterion_before - res.criterion_after) / res.criterion_before,
        "F_before": res.criterion_before, "F_after": res.criterion_after,
        "rms_z": float(np.sqrt(np.mean(zall**2))),
        "rms_layer_mean_z": float(np.sqrt(np.mean([v.mean() ** 2 for v in z]))),
        "sweeps": res.iterations, "converged": res.converged, "seconds": seconds,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds and 4 scales (CI smoke run)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the last JSON")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / "rescale_init.json").read_text())["rows"], RESULTS / "rescale_init.png")
        return 0
    seeds = range(2 if args.quick else args.seeds)
    scales = [0.5, 1.0, 4.0, 16.0] if args.quick else SCALES
    rows = []
    for name, widths in ARCHS.items():
        for sigma in scales:
            runs = [one_run(widths, sigma, s) for s in seeds]
            med = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != "converged"}
            rows.append({"arch": name, "widths": widths, "sigma": sigma, "seeds": len(runs),
                         "all_converged": all(r["converged"] for r in runs), **med})
    print(f"{'architecture':34s} {'sigma':>6s} {'F(0)':>9s} {'F(z*)':>9s} {'rel.dec':>8s} {'rms z':>7s} "
          f"{'rms layer-mean z':>16s} {'sweeps':>6s} {'ms':>7s}")
    for r in rows:
        print(f"{r['arch']:34s} {r['sigma']:6.3g} {r['F_before']:9.4g} {r['F_after']:9.4g} {r['rel_decrease']:8.3f} "
              f"{r['rms_z']:7.3f} {r['rms_layer_mean_z']:16.3f} {r['sweeps']:6.0f} {1e3 * r['seconds']:7.1f}"
              + ("" if r["all_converged"] else "  (not all converged)"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "rescale_init", "torch": torch.__version__, "quick": args.quick,
           "init": "weights N(0, sigma^2/fan_in), zero biases; rescale(tol=1e-3, preserve_bound=False)",
           "rows": rows}
    (RESULTS / "rescale_init.json").write_text(json.dumps(out, indent=2))
    plot(rows, RESULTS / "rescale_init.png")
    print(f"wrote {RESULTS / 'rescale_init.json'} and rescale_init.png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """Two panels against σ: relative criterion decrease, and RMS of the log-scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in ARCHS:
        sub = [r for r in rows if r["arch"] == name]
        xs = [r["sigma"] for r in sub]
        style = "-" if name.startswith("constant") else "--"
        axes[0].plot(xs, [r["rel_decrease"] for r in sub], style, marker="o", label=name)
        axes[1].plot(xs, [r["rms_z"] for r in sub], style, marker="o", label=name)
        axes[2].plot(xs, [r["rms_layer_mean_z"] for r in sub], style, marker="o", label=name)
    titles = ["criterion decrease (F(0) − F(z*)) / F(0)", "RMS of log-scales z* (per neuron)",
              "RMS of per-layer mean of z* (systematic part)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("initialisation scale σ (weights ~ N(0, σ²/fan_in))")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.4)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle("Path-conditioned rescaling at random initialisation: architecture × scale "
                 "(medians over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
