"""Bound propagators for the region-of-attraction proof: lipnet's interval/Jacobian propagator against the
`bound-propagation` package (IBP and CROWN) on the same closed-loop step.

The step is a torque-limited pendulum under a tanh controller with a hard actuator clip, one explicit Euler step,
`x⁺ = x + dt·(ω, a sin θ − d ω + b·clip(π(x)))`: the one form both can take. lipnet's propagator runs the plant's own
torch code (RK4, `torch.stack`, a user's `f(x, u)`); `bound-propagation` needs the map rewritten as its own module
algebra (`Parallel`, `Select`, `Sin`, `Clamp`, `nn.Linear`), which is why it cannot take the plants `certify`
accepts. Per box radius: the median total width of the enclosure of x⁺ over boxes at random centres, over the
sampled width (a lower bound on any sound enclosure), and the seconds per box, batched. lipnet's rows: the value
interval, and the mean-value form `F(c) + J(box)(x − c)` that the proof uses.

    pip install 'lipnet[bench]'
    python benchmarks/roa_propagators.py            # prints the table, writes results/roa_propagators.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipnet.certify import intervals as iv
from lipnet.certify.network import MLP
from lipnet.certify.roa import mlp_policy

RESULTS = Path(__file__).resolve().parent / "results"
A, DAMP, B, DT, LIM = 9.81, 0.1, 1.0, 0.05, 2.0


def controller(seed: int, width: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    dims = [2, width, width, 1]
    ws = [rng.standard_normal((o, i)) * 1.5 / np.sqrt(i) for i, o in zip(dims, dims[1:], strict=False)]
    bs = [0.1 * rng.standard_normal(o) for o in dims[1:]]
    return ws, bs


def step_torch(x, u):
    """The Euler closed-loop step as plant code (runs on tensors and on lipnet's interval type alike)."""
    th, om = x.unbind(-1)
    return torch.stack((th + DT * om, om + DT * (A * torch.sin(th) - DAMP * om + B * u[..., 0])), -1)


def bp_model(ws, bs):
    """The same step in `bound-propagation`'s module algebra."""
    from bound_propagation import Clamp, Parallel, Select, Sin

    layers = []
    for k, (w, b) in enumerate(zip(ws, bs, strict=True)):
        lin = nn.Linear(w.shape[1], w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w))
            lin.bias.copy_(torch.as_tensor(b))
        layers += [lin] + ([nn.Tanh()] if k < len(ws) - 1 else [])
    ctrl = nn.Sequential(*layers, Clamp(min=-LIM, max=LIM))
    # [θ, ω, sin θ, u] → x⁺ by one linear map
    mix = nn.Linear(4, 2).double()
    with torch.no_grad():
        mix.weight.copy_(torch.tensor([[1.0, DT, 0.0, 0.0], [0.0, 1.0 - DT * DAMP, DT * A, DT * B]],
                                      dtype=torch.float64))
        mix.bias.zero_()
    return nn.Sequential(Parallel(nn.Identity(), nn.Sequential(Select([0]), Sin()), ctrl), mix)


def sampled_range(pol, c, r, n=2000, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Per box, the smallest and largest x⁺ over n samples (corners included): inside any sound enclosure."""
    rng = np.random.default_rng(seed)
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=np.float64)
    lo, hi = [], []
    for ci, ri in zip(c, r, strict=True):
        x = torch.as_tensor(ci + ri * np.concatenate([2 * rng.random((n, 2)) - 1, corners]))
        y = step_torch(x, pol.torch(x)).numpy()
        lo.append(y.min(0))
        hi.append(y.max(0))
    return np.asarray(lo), np.asarray(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=200, help="boxes per radius")
    ap.add_argument("--seeds", type=int, default=3, help="random controllers")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    try:
        from bound_propagation import BoundModelFactory, HyperRectangle
    except ImportError:
        raise SystemExit("needs the bench extra: pip install 'lipnet[bench]' (bound-propagation)") from None

    radii = [0.01, 0.05, 0.2, 0.5]
    rows = {name: {r: [] for r in radii} for name in ("lipnet interval", "lipnet mean-value", "bp IBP", "bp CROWN")}
    secs = {name: [] for name in rows}
    unsound = {name: 0 for name in rows}  # boxes whose enclosure misses a sampled x⁺
    for seed in range(args.seeds):
        ws, bs = controller(seed)
        pol = mlp_policy(MLP(ws, bs, activation="tanh", u_low=[-LIM], u_high=[LIM], saturation="clip"))
        bound = BoundModelFactory().build(bp_model(ws, bs))
        rng = np.random.default_rng(100 + seed)
        for r in radii:
            c = rng.uniform([-1.5, -3.0], [1.5, 3.0], (args.boxes, 2))
            rad = np.full_like(c, r)
            slo, shi = sampled_range(pol, c, rad, seed=seed)
            ref = (shi - slo).sum(1)

            def record(name, lo, hi, slo=slo, shi=shi, ref=ref, r=r):
                rows[name][r].append(float(np.median((hi - lo).sum(1) / ref)))
                unsound[name] += int(np.sum((lo > slo + 1e-12) | (hi < shi - 1e-12)))

            t0 = time.perf_counter()
            xb = iv.variable(c - rad, c + rad)
            d = step_torch(xb, pol.dual(xb))
            t1 = time.perf_counter()
            record("lipnet interval", d.lo, d.hi)
            secs["lipnet interval"].append((t1 - t0) / args.boxes)
            # mean-value form: F(c) exact up to rounding, plus |J(box)|·r
            fc = step_torch(iv.variable(c, c), pol.dual(iv.variable(c, c)))
            jabs = np.maximum(np.abs(d.jlo), np.abs(d.jhi))
            spread = (jabs @ rad[..., None])[..., 0]
            secs["lipnet mean-value"].append((time.perf_counter() - t0) / args.boxes)
            record("lipnet mean-value", fc.lo - spread, fc.hi + spread)

            box = HyperRectangle(torch.as_tensor(c - rad), torch.as_tensor(c + rad))
            t0 = time.perf_counter()
            ib = bound.ibp(box)
            t1 = time.perf_counter()
            cr = bound.crown(box).concretize()
            t2 = time.perf_counter()
            record("bp IBP", ib.lower.detach().numpy(), ib.upper.detach().numpy())
            record("bp CROWN", cr.lower.detach().numpy(), cr.upper.detach().numpy())
            secs["bp IBP"].append((t1 - t0) / args.boxes)
            secs["bp CROWN"].append((t2 - t1) / args.boxes)

    print("enclosure width of x⁺ / sampled width (median over boxes, then over controllers); µs per box, batched")
    print(f"| propagator | {' | '.join(f'r = {r}' for r in radii)} | µs / box | missed samples |")
    print("|---|" + "---|" * (len(radii) + 2))
    table = {}
    for name, per in rows.items():
        med = {r: statistics.median(v) for r, v in per.items()}
        us = 1e6 * statistics.median(secs[name])
        table[name] = {"width_over_sampled": {str(r): m for r, m in med.items()}, "us_per_box": us,
                       "missed_samples": unsound[name]}
        print(f"| {name} | {' | '.join(f'{med[r]:.3g}' for r in radii)} | {us:.1f} | {unsound[name]} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"roa_propagators{args.tag}.json"
    out.write_text(json.dumps({"boxes": args.boxes, "seeds": args.seeds, "table": table}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
