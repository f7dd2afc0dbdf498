"""Optimisers by name: lipnet's (`agd`, `sphere-newton`, `sphere-mm`, `manifold-adam`), the baselines (`adam`,
`sgd`) and the learning-rate-free peers of `lipnet.optim.peers` (`prodigy`, `dog`, `dadapt-adam`,
`schedulefree-adamw`, `muon`; their packages come with the `bench` extra).

Every optimiser here is built by `make_optimizer` and stepped under the contract of `lipnet/optim/base.py`
(closure convention, double-backward need, `last_info`, `close()`). A class may define `missing() -> str | None`:
what has to be installed before it can be built.
"""

from __future__ import annotations

import importlib

import torch

from lipnet.exceptions import LipnetValue

__all__ = ["OPTIMIZERS", "PEERS", "SHORTFALLS", "make_optimizer", "optimizer_class", "shortfall", "NEEDS_LR"]

OPTIMIZERS = {
    "agd": "lipnet.optim.agd:AGD",
    "sphere-newton": "lipnet.optim.sphere:SphereNewton",
    "sphere-mm": "lipnet.optim.sphere:SphereMM",
    "manifold-adam": "lipnet.optim.manifold_adam:ManifoldAdam",
    "adam": "torch.optim:Adam",
    "sgd": "torch.optim:SGD",
    "prodigy": "lipnet.optim.peers:Prodigy",
    "dog": "lipnet.optim.peers:DoG",
    "dadapt-adam": "lipnet.optim.peers:DAdaptAdam",
    "schedulefree-adamw": "lipnet.optim.peers:ScheduleFreeAdamW",
    "muon": "lipnet.optim.peers:Muon",
}
NEEDS_LR = {"adam": 1e-3, "sgd": 1e-2}
PEERS = ("prodigy", "dog", "dadapt-adam", "schedulefree-adamw", "muon")  # the learning-rate-free field, at defaults
# Where an optimiser at its defaults was measured not to reach 1.02 × the LQR optimum (benchmarks/optimizers.py,
# lipnet's default configuration; docs/benchmarks.md): name -> (the class of plant, as the smallest spectral
# radius of the linearisation it applies from, and what was measured). lipnet's own optimisers reached at most
# 1.0095 × on every linear benchmark plant (msd, the saturated LQR's own cost); `lipnet train` warns for these.
SHORTFALLS: dict[str, tuple[float, str]] = {
    "dog": (1.0, "at its defaults DoG reached up to 4.7e8 × the LQR optimum on 4 of the 5 linear benchmark "
                 "plants that are not open-loop stable, 10 seeds each: the two unstable random plants 5.4–31 × and "
                 "7.2–4.7e8 ×, the PVTOL-like hover model 13.6–3448 × (no held-out start stabilised), dcmotor "
                 "1.003–1.065 × (above 1.02 × on 6 of 10, at the 2000-step cap, closing ~1 % per 200 steps): its "
                 "first steps are 1e-6 × the weights' norm by design, so the 50 imitation steps move the weights "
                 "little; on the unstable plants they end with an unstable loop, whose first rollout gradient "
                 "enters its step-size denominator for good (step size 3e-3 → 5e-18: it stalls, with or without "
                 "averaging)"),
    "muon": (1.0 + 1e-9, "at torch's defaults Muon reached 2.9–3.4 × the LQR optimum on one open-loop unstable "
                         "random plant of benchmarks/optimizers.py on 10 seeds of 10, and 2.4 × and 3.0 × on the "
                         "other on 2 of 10: its orthogonalised steps have a fixed size (lr 1e-3, no decay), so the 50 "
                         "imitation steps can end with an unstable loop, and the cost then hovers at 2–3 ×"),
}


def optimizer_class(name: str) -> type:
    """The class registered under `name`; a one-line `LipnetValue` for an unknown name or a missing package.

    An in-tree module is imported as it is: an ImportError inside it is a bug and surfaces as itself.
    """
    if name not in OPTIMIZERS:
        raise LipnetValue(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    mod_name, cls_name = OPTIMIZERS[name].split(":")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    missing = getattr(cls, "missing", None)
    why = missing() if callable(missing) else None
    if why:
        raise LipnetValue(f"optimizer {name!r} needs {why}")
    return cls


def shortfall(name: str, spectral_radius: float) -> str | None:
    """The measured warning for optimiser `name` on a plant whose linearisation has this spectral radius, or None."""
    if name not in SHORTFALLS or spectral_radius < SHORTFALLS[name][0]:
        return None
    return (f"{SHORTFALLS[name][1]}; use the default --optimizer sphere-mm (at most 1.0014 × on the same plants, "
            "10 seeds)")


def make_optimizer(name: str, model: torch.nn.Module, lr: float | None = None, **options) -> torch.optim.Optimizer:
    """Build the named optimiser over `model`; `lr` only for the baselines (`adam`, `sgd`), `manifold-adam` and
    the peers (which default to their published values)."""
    cls = optimizer_class(name)
    if name in NEEDS_LR:
        return cls(model.parameters(), lr=NEEDS_LR[name] if lr is None else lr, **options)
    if lr is not None:
        options["lr"] = lr
    return cls.from_model(model, **options)
