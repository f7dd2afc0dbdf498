"""The learning-rate-free field as lipnet optimisers, each at its published defaults (the `bench` extra).

- `prodigy`: `prodigyopt.Prodigy`; lr 1, betas (0.9, 0.999), d0 1e-6, d_coef 1, no weight decay.
- `dog`: `dog.DoG`; reps_rel 1e-6, lr 1; with the polynomial-decay iterate average (γ = 8) that its README
  calls crucial.
- `dadapt-adam`: `dadaptation.DAdaptAdam`; lr 1, betas (0.9, 0.999), d0 1e-6, no weight decay.
- `schedulefree-adamw`: `schedulefree.AdamWScheduleFree`; lr 0.0025, betas (0.9, 0.999), no warm-up, r 0,
  weight_lr_power 2.
- `muon`: `torch.optim.Muon` on the 2-D weights (torch's defaults: lr 1e-3, weight decay 0.1, momentum 0.95 with
  Nesterov, 5 Newton–Schulz steps, Keller Jordan's shape scaling) and `torch.optim.AdamW` on the rest (torch's
  defaults: lr 1e-3, betas (0.9, 0.999), weight decay 0.01): Muon takes only matrices.

Every peer follows torch's closure convention (`step(closure)`). Two of them evaluate at another point than the
one where they take gradients: Schedule-Free's gradient point y and its evaluation point x, DoG's iterate and its
average. The adapter keeps the *evaluation* point in the model's parameters between steps and moves to the
gradient point only inside `step` (Schedule-Free's own `train()` / `eval()` swap, DoG's iterate kept in the state),
so the training loop, evaluation, checkpoints and `--resume` see the point the method means to be used, with
nothing special in the loop. A step with a non-finite loss or gradient leaves the parameters as they were and
says so in `last_info["skipped"]` (the peers themselves would crash on a missing gradient or write NaN).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import torch

from .base import LipnetOptimizer

__all__ = ["PeerOptimizer", "Prodigy", "DoG", "DAdaptAdam", "ScheduleFreeAdamW", "Muon", "BENCH_HINT"]

BENCH_HINT = "pip install 'lipnet[bench]'"


class PeerOptimizer(LipnetOptimizer):
    """One or more torch optimisers stepped together under torch's closure convention (the adapters' base)."""

    target = ""  # "module:Class" of the peer's optimiser ("" for an adapter that builds its own parts)
    pip_name = ""  # the PyPI name of the module's package, where it differs from the module's

    @classmethod
    def _package(cls) -> str:
        return cls.target.partition(":")[0].split(".")[0]

    def __init__(self, parts: list[torch.optim.Optimizer]):
        self.parts = parts
        self.last_info: dict = {}

    @classmethod
    def missing(cls) -> str | None:
        """What is missing to build this peer (a one-line install hint), or None."""
        if cls.target and importlib.util.find_spec(cls._package()) is None:
            return f"the {cls.pip_name or cls._package()} package: {BENCH_HINT}"
        return None

    @classmethod
    def from_model(cls, model: torch.nn.Module, **options) -> PeerOptimizer:
        """The peer over `model`'s trainable parameters; `options` go to the peer's constructor."""
        module, _, name = cls.target.partition(":")
        peer = getattr(importlib.import_module(module), name)
        return cls([peer([p for p in model.parameters() if p.requires_grad], **options)])

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.parts for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts:
            o.zero_grad(set_to_none=set_to_none)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _to_gradient_point(self) -> None:
        """Move the parameters from the evaluation point to where the gradient is taken (default: the same)."""

    def _to_evaluation_point(self, stepped: bool) -> None:
        """Move the parameters back to the evaluation point after a step (`stepped`) or a skipped one."""

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Evaluate the closure (zero grads, backward, return the loss) and take each part's step."""
        self._to_gradient_point()
        with torch.enable_grad():
            loss = closure()
        grads = [p.grad for p in self._params() if p.grad is not None]
        ok = (loss is not None and bool(torch.isfinite(torch.as_tensor(loss)).all()) and bool(grads)
              and all(bool(torch.isfinite(g).all()) for g in grads))
        if ok:
            for o in self.parts:
                o.step()
        self._to_evaluation_point(ok)
        self.last_info = {} if ok else {"skipped": "nonfinite_loss"}
        return loss

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {"parts": [o.state_dict() for o in self.parts], "extra": self._extra_state()}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.parts, state["parts"], strict=True):
            o.load_state_dict(s)
        self._load_extra_state(state.get("extra") or {})


class Prodigy(PeerOptimizer):
    """Prodigy (Mishchenko & Defazio 2024) at the package's defaults."""

    target = "prodigyopt:Prodigy"


class DAdaptAdam(PeerOptimizer):
    """D-Adaptation Adam (Defazio & Mishchenko 2023) at the package's defaults."""

    target = "dadaptation:DAdaptAdam"


class ScheduleFreeAdamW(PeerOptimizer):
    """Schedule-Free AdamW (Defazio et al. 2024); parameters hold x (evaluation), gradients are taken at y."""

    target = "schedulefree:AdamWScheduleFree"

    def _to_gradient_point(self) -> None:
        self.parts[0].train()

    def _to_evaluation_point(self, stepped: bool) -> None:
        self.parts[0].eval()


class DoG(PeerOptimizer):
    """DoG (Ivgi, Hinder & Carmon 2023) with its recommended polynomial-decay averaging (Shamir & Zhang 2013):
    `x̄_t = (1 − w_t) x̄_{t−1} + w_t x_t`, `w_t = (γ + 1)/(γ + t)`, γ = 8; the parameters hold x̄ between steps."""

    target, pip_name = "dog:DoG", "dog-optimizer"
    GAMMA = 8.0

    def __init__(self, parts: list[torch.optim.Optimizer]):
        super().__init__(parts)
        self.t = 0
        self.iterate = [p.detach().clone() for p in self._params()]  # x_t, where DoG takes its gradient

    @torch.no_grad()
    def _to_gradient_point(self) -> None:
        self._average = [p.detach().clone() for p in self._params()]
        for p, x in zip(self._params(), self.iterate, strict=True):
            p.copy_(x)

    @torch.no_grad()
    def _to_evaluation_point(self, stepped: bool) -> None:
        params = self._params()
        if stepped:
            self.t += 1
            w = (self.GAMMA + 1) / (self.GAMMA + self.t)
            self.iterate = [p.detach().clone() for p in params]
            for avg, x in zip(self._average, self.iterate, strict=True):
                avg.lerp_(x, w)
        for p, avg in zip(params, self._average, strict=True):
            p.copy_(avg)

    def _extra_state(self) -> dict:
        return {"t": self.t, "iterate": [x.clone() for x in self.iterate]}

    def _load_extra_state(self, state: dict) -> None:
        self.t = int(state.get("t", 0))
        if "iterate" in state:
            self.iterate = [torch.as_tensor(x).clone() for x in state["iterate"]]


class Muon(PeerOptimizer):
    """`torch.optim.Muon` on the 2-D weights and `torch.optim.AdamW` on the rest (biases), both at torch's defaults."""

    @classmethod
    def missing(cls) -> str | None:
        return None if hasattr(torch.optim, "Muon") else "torch.optim.Muon (torch >= 2.9): pip install -U torch"

    @classmethod
    def from_model(cls, model: torch.nn.Module, **options) -> Muon:
        """Muon over the matrices (`options` go to it), AdamW over every other trainable parameter."""
        params = [p for p in model.parameters() if p.requires_grad]
        matrices, rest = [p for p in params if p.ndim == 2], [p for p in params if p.ndim != 2]
        parts = [torch.optim.Muon(matrices, **options)] if matrices else []
        return cls(parts + ([torch.optim.AdamW(rest)] if rest else []))

