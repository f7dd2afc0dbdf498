"""The `Plant` interface: a batched, differentiable, discrete-time model `x⁺ = step(x, u)`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Plant", "InitialStates"]


@dataclass
class InitialStates:
    """A distribution of initial states: `x_eq + scale ⊙ U(-1, 1)` (uniform box) or Gaussian."""

    scale: np.ndarray
    kind: str = "uniform"  # "uniform" box of half-widths `scale`, or "normal" with std `scale`

    def sample(self, n: int, x_eq: np.ndarray, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        scale = torch.as_tensor(self.scale, dtype=dtype)
        if self.kind == "normal":
            e = torch.randn(n, scale.numel(), generator=generator, dtype=dtype)
        else:
            e = 2 * torch.rand(n, scale.numel(), generator=generator, dtype=dtype) - 1
        return torch.as_tensor(x_eq, dtype=dtype) + scale * e


@dataclass
class Plant:
    """Base class: subclasses implement `step`; everything else is data.

    Attributes: `n_x`, `n_u`, `dt` (sample time, > 0), `x_eq`, `u_eq` (equilibrium),
    `u_low`, `u_high` (actuator limits, None if unlimited), `Q`, `R` (stage cost on deviations from
    the equilibrium), `init_train`, `init_eval` (initial-state distributions; eval is the harder one),
    `horizon` (default rollout length in steps), `state_names`, `state_units`, `input_names`, `spec`.
    """

    n_x: int
    n_u: int
    dt: float
    x_eq: np.ndarray = None
    u_eq: np.ndarray = None
    u_low: np.ndarray | None = None
    u_high: np.ndarray | None = None
    Q: np.ndarray = None
    R: np.ndarray = None
    init_train: InitialStates = None
    init_eval: InitialStates = None
    horizon: int = 200
    state_names: list[str] = field(default_factory=list)
    state_units: list[str] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    spec: str = ""
    name: str = "plant"
    # Constants as tensors per (name, dtype, device), so `step`/`stage_cost` never convert numpy per call.
    _consts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        n, m = self.n_x, self.n_u
        self.x_eq = np.zeros(n) if self.x_eq is None else np.asarray(self.x_eq, float).reshape(n)
        self.u_eq = np.zeros(m) if self.u_eq is None else np.asarray(self.u_eq, float).reshape(m)
        self.Q = np.eye(n) if self.Q is None else np.asarray(self.Q, float).reshape(n, n)
        self.R = np.eye(m) if self.R is None else np.asarray(self.R, float).reshape(m, m)
        if self.u_low is not None:
            self.u_low = np.broadcast_to(np.asarray(self.u_low, float), (m,)).copy()
        if self.u_high is not None:
            self.u_high = np.broadcast_to(np.asarray(self.u_high, float), (m,)).copy()
        if self.init_train is None:
            self.init_train = InitialStates(np.ones(n))
        if self.init_eval is None:
            self.init_eval = InitialStates(1.5 * np.asarray(self.init_train.scale))
        self.state_names = self.state_names or [f"x{i}" for i in range(n)]
        self.state_units = self.state_units or ["" for _ in range(n)]
        self.input_names = self.input_names or [f"u{i}" for i in range(m)]

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One sample period: `x` is `[batch, n_x]`, `u` is `[batch, n_u]`; differentiable."""
        raise TypeError(f"{type(self).__name__} does not implement step(x, u); subclass Plant and define it, "
                        "or build the plant with plants.load / LinearPlant / FunctionPlant")

    def sample_initial(self, n: int, split: str = "train", generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`n` initial states from the training (`train`) or the harder evaluation (`eval`) distribution."""
        dist = {"train": self.init_train, "eval": self.init_eval}[split]
        return dist.sample(n, self.x_eq, generator=generator, dtype=dtype)

    def const(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The numpy attribute `name` (e.g. `Q`, `x_eq`) as a tensor of `like`'s dtype and device, cached.

        The cache is keyed on the attribute's identity: assigning a new array refreshes it (in-place edits
        of the numpy array are not seen).
        """
        src = getattr(self, name)
        key = (name, like.dtype, like.device)
        hit = self._consts.get(key)
        if hit is not None and hit[0] is src:
            return hit[1]
        if torch.compiler.is_compiling():  # never cache a tracing-time (fake) tensor
            return torch.as_tensor(np.asarray(src, dtype=np.float64), dtype=like.dtype, device=like.device)
        # Created outside inference mode, so a first call under `torch.inference_mode()` cannot leave an
        # inference tensor in the cache that a later autograd use would refuse.
        with torch.inference_mode(False):
            t = torch.as_tensor(np.asarray(src, dtype=np.float64), dtype=like.dtype, device=like.device)
        self._consts[key] = (src, t)
        return t

    def clip(self, u: torch.Tensor) -> torch.Tensor:
        """`u` clipped to the actuator limits (unchanged where the plant has none)."""
        if self.u_low is None and self.u_high is None:
            return u
        return torch.clamp(u, *self.clip_bounds(u))

    def clip_bounds(self, like: torch.Tensor) -> tuple[float | torch.Tensor | None, float | torch.Tensor | None]:
        """`(low, high)` for `torch.clamp`: Python floats when every channel has the same limit, else tensors."""
        src = self._consts.get("clip_src")
        if src is None or src[0] is not self.u_low or src[1] is not self.u_high:
            lo, hi = self.u_low, self.u_high
            # Equal limits on every channel: clamp with Python scalars (cheaper forward and backward).
            same = (lo is None or np.all(lo == lo[0])) and (hi is None or np.all(hi == hi[0]))
            self._consts["clip_scalars"] = (None if lo is None else float(lo[0]),
                                            None if hi is None else float(hi[0])) if same else None
            self._consts["clip_src"] = (self.u_low, self.u_high)
        scalars = self._consts["clip_scalars"]
        if scalars is not None:
            return scalars
        return (None if self.u_low is None else self.const("u_low", like),
                None if self.u_high is None else self.const("u_high", like))

    def stage_cost(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """`(x−x_eq)ᵀQ(x−x_eq) + (u−u_eq)ᵀR(u−u_eq)` per batch row (any leading batch dimensions)."""
        dx = x - self.const("x_eq", x)
        du = u - self.const("u_eq", u)
        return ((dx @ self.const("Q", x)) * dx).sum(-1) + ((du @ self.const("R", u)) * du).sum(-1)
