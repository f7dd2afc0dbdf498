"""The `Plant` interface: a batched, differentiable, discrete-time model `x⁺ = step(x, u)`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import PlantSpecError
from .options import MAX_HORIZON, positive_int

__all__ = ["Plant", "InitialStates", "initial_states", "positive_number", "real_array", "real_numbers",
           "periodic_indices", "wrap_angles"]


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
    `horizon` (default rollout length in steps, at most `MAX_HORIZON`), `state_names`, `state_units`,
    `input_names` (one per state / input, or empty for defaults), `spec`, `periodic` (indices of 2π-periodic
    angles: the cost, the success test and the controller's input see them wrapped). Construction checks them all
    and raises `PlantSpecError` naming the first bad one.
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
    periodic: tuple[int, ...] = ()
    # Constants as tensors per (name, dtype, device), so `step`/`stage_cost` never convert numpy per call.
    _consts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        # Checked here, once, so a bad plant fails when it is built, not hours later in a rollout or a plot.
        n = self.n_x = positive_int(self.n_x, "n_x")
        m = self.n_u = positive_int(self.n_u, "n_u")
        self.dt = positive_number(self.dt, "dt")
        self.horizon = positive_int(self.horizon, "horizon", MAX_HORIZON)
        self.x_eq = np.zeros(n) if self.x_eq is None else real_array(self.x_eq, "x_eq", (n,))
        self.u_eq = np.zeros(m) if self.u_eq is None else real_array(self.u_eq, "u_eq", (m,))
        self.Q = np.eye(n) if self.Q is None else real_array(self.Q, "Q", (n, n))
        self.R = np.eye(m) if self.R is None else real_array(self.R, "R", (m, m))
        if self.u_low is not None:
            self.u_low = real_array(self.u_low, "u_low", (m,), broadcast=True, infinite=True)
        if self.u_high is not None:
            self.u_high = real_array(self.u_high, "u_high", (m,), broadcast=True, infinite=True)
        if self.init_train is None:
            self.init_train = InitialStates(np.ones(n))
        if self.init_eval is None:
            self.init_eval = InitialStates(1.5 * np.asarray(self.init_train.scale))
        self.state_names = _names(self.state_names, n, "state_names", "n_x", "state") or [f"x{i}" for i in range(n)]
        self.state_units = _names(self.state_units, n, "state_units", "n_x", "state") or ["" for _ in range(n)]
        self.input_names = _names(self.input_names, m, "input_names", "n_u", "input") or [f"u{i}" for i in range(m)]
        self.periodic = periodic_indices(self.periodic, n)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One sample period: `x` is `[batch, n_x]`, `u` is `[batch, n_u]`; differentiable."""
        raise TypeError(f"{type(self).__name__} does not implement step(x, u); subclass Plant and define it, "
                        "or build the plant with plants.load / LinearPlant / FunctionPlant")

    def sample_initial(self, n: int, split: str = "train", generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`n` initial states from the training (`train`) or the harder evaluation (`eval`) distribution."""
        dist = {"train": self.init_train, "eval": self.init_eval}[split]
        return dist.sample(n, self.x_eq, generator=generator, dtype=dtype)

    def eval_box(self) -> np.ndarray:
        """Half-widths (float64) of the evaluation region around `x_eq`: the `init_eval` box, or ±3σ of its Gaussian.

        The one box that certification, export's parity states and the regions of attraction sample or prove in.
        """
        dist = self.init_eval
        return np.abs(np.asarray(dist.scale, dtype=np.float64)) * (3.0 if dist.kind == "normal" else 1.0)

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

    def deviation(self, x: torch.Tensor) -> torch.Tensor:
        """`x − x_eq` with every periodic coordinate wrapped into (−π, π] (so θ and θ + 2π deviate alike)."""
        return wrap_angles(x - self.const("x_eq", x), self.periodic)

    def stage_cost(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """`dxᵀQ dx + (u−u_eq)ᵀR(u−u_eq)` per batch row, `dx = deviation(x)` (any leading batch dimensions)."""
        dx = self.deviation(x)
        du = u - self.const("u_eq", u)
        return ((dx @ self.const("Q", x)) * dx).sum(-1) + ((du @ self.const("R", u)) * du).sum(-1)


def positive_number(value, key: str) -> float:
    """`value` as one finite float > 0, or `PlantSpecError` naming `key`."""
    try:
        x = float(value) if not isinstance(value, (bool, str)) and np.ndim(value) == 0 else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise PlantSpecError(f"{key} must be > 0 (one finite number), got {value!r}")
    return x


def real_numbers(value, key: str) -> np.ndarray:
    """`value` as a float array, or `PlantSpecError` naming `key` for complex or non-numeric values."""
    if np.iscomplexobj(value):  # numpy would drop the imaginary part with only a ComplexWarning
        raise PlantSpecError(f"{key} is complex; a plant needs real numbers (pass .real if the imaginary part is 0)")
    try:
        return np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise PlantSpecError(f"{key} must be numbers, got {value!r}") from None


def real_array(value, key: str, shape: tuple[int, ...], broadcast: bool = False, infinite: bool = False) -> np.ndarray:
    """`value` as a real float array of `shape` (`broadcast`: or a scalar), finite unless `infinite`.

    Raises `PlantSpecError` naming `key` for complex, non-numeric, wrongly sized or non-finite values.
    """
    arr = real_numbers(value, key)
    size = math.prod(shape)
    if broadcast and arr.size == 1:
        arr = np.full(shape, arr.reshape(-1)[0])
    if arr.size != size:
        raise PlantSpecError(f"{key} has {arr.size} values (shape {arr.shape}); it must have shape {shape}"
                             f"{' or be one number' if broadcast else ''}")
    arr = arr.reshape(shape)
    if np.isnan(arr).any() or (not infinite and np.isinf(arr).any()):
        raise PlantSpecError(f"{key} has NaN{'' if infinite else ' or infinite'} entries: {arr.tolist()}")
    return arr


def _names(names, n: int, key: str, dim: str, what: str) -> list[str]:
    """`names` as a list of `n` strings (empty: none given), or `PlantSpecError` naming `key`."""
    if names is None:
        return []
    if isinstance(names, (str, bytes)) or np.ndim(names) != 1:
        raise PlantSpecError(f"{key} must be a list of strings, one per {what}, got {names!r}")
    names = [str(s) for s in names]
    if names and len(names) != n:
        raise PlantSpecError(f"{key} has {len(names)} entries but the plant has {dim} = {n}; give one per {what} "
                             f"(or none for the defaults)")
    return names


def wrap_angles(d: torch.Tensor, periodic) -> torch.Tensor:
    """`d` (deviations, last axis) with its `periodic` coordinates wrapped into (−π, π]."""
    if not periodic:
        return d
    idx = list(periodic)
    wrapped = torch.atan2(torch.sin(d[..., idx]), torch.cos(d[..., idx]))
    return d.index_copy(-1, torch.as_tensor(idx, device=d.device), wrapped)


def periodic_indices(value, n: int, strict: bool = False) -> tuple[int, ...]:
    """`value` as unique state indices in [0, n) (the 2π-periodic angles), or `PlantSpecError` saying what is wrong.

    A plant's rule (default): one index or a sequence of integral numbers (a spec's options give `1.0`), returned
    sorted. `strict`, the controller's (its input features follow the order given): None for none, else a sequence
    of integers (no bool, no float), kept in its order.
    """
    if strict:
        if value is None:
            return ()
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise PlantSpecError(f"periodic must be a sequence of state indices, got {value!r}")
        items = list(value)
    else:
        items = [value] if np.ndim(value) == 0 else list(np.asarray(value).reshape(-1)) if len(value) else []
    out = []
    for v in items:
        if strict and (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))):
            raise PlantSpecError(f"periodic must hold integer state indices, got {v!r} in {items!r}")
        f = float(v) if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else math.nan
        if not (math.isfinite(f) and f == int(f)):
            raise PlantSpecError(f"periodic must be state indices from 0 to {n - 1} (the 2π-periodic angles), "
                                 f"got {value!r}")
        if not 0 <= f < n:
            raise PlantSpecError(f"periodic index {int(f)} is out of range for n_x={n} (valid: 0..{n - 1})")
        if int(f) in out:
            raise PlantSpecError(f"periodic index {int(f)} is repeated in {items!r}")
        out.append(int(f))
    return tuple(out) if strict else tuple(sorted(out))


def initial_states(x0_std, x0_box, n: int, eval_factor: float = 1.5) -> dict[str, InitialStates]:
    """`init_train`, `init_eval` from `x0_std` (Gaussian std) or `x0_box` (uniform box half-widths); eval is
    `eval_factor` × the training scale.

    Either may be a scalar or `n` values; with neither, the Gaussian `x0_std = 1`.
    """
    if x0_std is not None and x0_box is not None:
        raise PlantSpecError("give x0_std (Gaussian std) or x0_box (uniform box half-width), not both")
    if x0_box is not None:
        key, value, kind = "x0_box", x0_box, "uniform"
    else:
        key, value, kind = "x0_std", 1.0 if x0_std is None else x0_std, "normal"
    if np.size(value) not in (1, n):
        raise PlantSpecError(f"{key} must be 1 or {n} finite values >= 0, got {np.asarray(value).tolist()}")
    scale = real_array(value, key, (n,), broadcast=True)
    if (scale < 0).any():
        raise PlantSpecError(f"{key} must be 1 or {n} finite values >= 0, got {scale.tolist()}")
    return {"init_train": InitialStates(scale, kind), "init_eval": InitialStates(eval_factor * scale, kind)}
