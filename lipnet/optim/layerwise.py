"""What the architecture-aware optimisers read off a model: its linear layers, in order, and their parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lipnet.exceptions import LipnetArgument
from lipnet.manifolds import Manifold, Sphere, manifold_of
from lipnet.nn.layers import LAYER_KINDS, LipschitzLinear

__all__ = ["LayerInfo", "layers_of", "all_finite", "check_options", "NON_FINITE"]

NON_FINITE = "nonfinite_loss"


@dataclass
class LayerInfo:
    """One linear layer as an optimiser sees it: its free weight and that weight's manifold, bias, gain, shape."""

    module: LipschitzLinear
    weight: torch.nn.Parameter  # the layer's `free_weight`
    bias: torch.nn.Parameter | None
    manifold: Manifold  # the weight's own (`manifold_of`): a Sphere or Euclidean
    gain: float
    fan_in: int
    fan_out: int

    @property
    def spherical(self) -> bool:
        """weight = gain · V with V on the unit sphere (a Frobenius-normalised layer's direction)."""
        return isinstance(self.manifold, Sphere)


def layers_of(model: torch.nn.Module, optimizer: str) -> list[LayerInfo]:
    """The model's `LipschitzLinear` layers in forward order (`model.layers` when present, else module order).

    Raises `LipnetArgument` when a trainable parameter belongs to no supported layer (the optimiser would
    silently leave it untouched) or a layer kind has no rule in this optimiser.
    """
    if isinstance(model, LipschitzLinear):
        mods = [model]
    elif hasattr(model, "layers"):
        mods = [m for m in model.layers if isinstance(m, LipschitzLinear)]
    else:
        mods = [m for m in model.modules() if isinstance(m, LipschitzLinear)]
    if not mods:
        raise LipnetArgument(f"{optimizer} needs a model made of lipnet.nn LipschitzLinear layers; found none")
    out = []
    for m in mods:
        if not m.layerwise:
            supported = " and ".join(f"layer={kind!r}" for kind, cls in LAYER_KINDS.items() if cls.layerwise)
            raise LipnetArgument(f"{optimizer} supports {supported}, not {type(m).__name__}; use manifold-adam "
                                 "(orthogonal) or adam/sgd")
        w = m.free_weight
        manifold = manifold_of(w)
        if not isinstance(manifold, m.free_manifold):
            raise LipnetArgument(f"{optimizer}: the free weight of {m} is on {manifold!r}, not on the "
                                 f"{m.free_manifold.__name__} a {m.kind} layer computes with")
        out.append(LayerInfo(m, w, m.bias, manifold, float(m.gain), m.in_features, m.out_features))
    covered = {id(p) for info in out for p in (info.weight, info.bias) if p is not None}
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if stray:
        raise LipnetArgument(f"{optimizer} only trains the weights and biases of linear layers; the model has "
                             f"other trainable parameters {stray}: freeze them (requires_grad_(False))")
    return out


def check_options(optimizer: str, options: dict, allowed) -> None:
    """Refuse a learning rate (these optimisers have none) and unknown options, naming the valid ones."""
    if "lr" in options:
        raise LipnetArgument(f"{optimizer} chooses its own step size and takes no learning rate; drop lr")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise LipnetArgument(f"unknown option(s) {unknown} for {optimizer}; valid: {', '.join(sorted(allowed))}")


def all_finite(tensors) -> bool:
    """True when every given tensor (None skipped) holds only finite values."""
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def quarter_turn() -> float:
    """π/2: the largest angle any layer may turn in one step (beyond it the geodesic heads back)."""
    return math.pi / 2


__all__.append("quarter_turn")
