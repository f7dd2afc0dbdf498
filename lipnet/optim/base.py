"""The optimiser contract, written once: what the training loop may rely on, and what a lipnet optimiser declares.

Every optimiser `make_optimizer` builds has `step(closure)`, `zero_grad()`, `state_dict()` / `load_state_dict()`.
A lipnet optimiser (a subclass of `LipnetOptimizer`, beside `torch.optim.Optimizer` where it is one) declares:

- `wants_loss_closure`: False (default) — the closure follows torch's contract: it zeroes the gradients, calls
  backward and returns the loss. True — the closure returns the loss *with its graph and without calling
  backward*; the optimiser differentiates it itself (second-order information, a decrease check), so it must be
  deterministic, and its gradient must be that of the loss it evaluates: the training loop gives it the actuator
  clip's own gradient, never the straight-through surrogate (`lipnet.train.loop._straight_through`).
- `needs_double_backward`: True when the optimiser differentiates the closure's graph twice (Hessian-vector
  products), which a `torch.compile`d rollout cannot.
- `last_info`: what the last step did (`{}` before the first; `{"skipped": "nonfinite_loss", ...}` for a step
  that was skipped), recorded by the training loop.
- `close()`: release what the optimiser attached to the model (forward hooks); called once training ends.

An optimiser that is not a `LipnetOptimizer` (torch's own `Adam`, `SGD`) follows torch's contract and has no
`last_info` and nothing to close: the functions below handle both, so the loop never probes attributes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LipnetOptimizer", "wants_loss_closure", "needs_double_backward", "step", "last_info", "close"]


class LipnetOptimizer:
    """The contract of a lipnet optimiser (module docstring); mixed in before `torch.optim.Optimizer`."""

    wants_loss_closure: bool = False
    needs_double_backward: bool = False

    @property
    def last_info(self) -> dict:
        """What the last step did (empty before the first step)."""
        return self.__dict__.setdefault("_last_info", {})

    @last_info.setter
    def last_info(self, value: dict) -> None:
        self.__dict__["_last_info"] = value

    def close(self) -> None:
        """Release what this optimiser attached to the model (nothing by default)."""


def wants_loss_closure(opt_or_cls) -> bool:
    """Whether `step`'s closure must return the loss with its graph, without calling backward."""
    cls = opt_or_cls if isinstance(opt_or_cls, type) else type(opt_or_cls)
    return issubclass(cls, LipnetOptimizer) and cls.wants_loss_closure


def needs_double_backward(opt_or_cls) -> bool:
    """Whether the optimiser differentiates the closure twice (no `torch.compile`d rollout then)."""
    cls = opt_or_cls if isinstance(opt_or_cls, type) else type(opt_or_cls)
    return issubclass(cls, LipnetOptimizer) and cls.needs_double_backward


def step(opt, loss: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    """One step on the objective `loss()` under the closure convention `opt` declares; returns the loss."""
    if wants_loss_closure(opt):
        return opt.step(loss)

    def closure():
        opt.zero_grad()
        value = loss()
        if torch.isfinite(value):
            value.backward()
        return value

    return opt.step(closure)


def last_info(opt) -> dict:
    """What the optimiser's last step did (`{}` for an optimiser that does not say)."""
    return opt.last_info if isinstance(opt, LipnetOptimizer) else {}


def close(opt) -> None:
    """Release what the optimiser attached to the model (a no-op for one that attaches nothing)."""
    if isinstance(opt, LipnetOptimizer):
        opt.close()
