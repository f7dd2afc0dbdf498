"""Sound interval enclosures of a function and of its Jacobian, evaluated through unmodified torch code.

A `Dual` holds, for a batch of boxes `B`, float64 intervals `[lo, hi]` that contain every value a quantity takes
on `B` and intervals `[jlo, jhi]` (one more trailing axis of size n) that contain its Jacobian with respect to
the n certified states (for a piecewise-smooth function, every derivative along a segment inside B: a clip or a
ReLU contributes the hull of its one-sided slopes). It implements `__torch_function__`, so a plant's `step`
written in torch (sin, cos, tanh, exp, atan, sqrt, clamp, abs, maximum, minimum, add, sub, mul, div, pow,
matmul, addmm, addcmul, stack, cat, unbind, indexing) runs on it unchanged; any other operation raises
`Uncertifiable` naming the operation and the line of the caller that used it.

Every result is rounded outward: one relative margin of a few ulps per elementary operation, and the classical
`γ_k` bound for the k-term sums of a matrix product, so the enclosures hold in float64 arithmetic, not only in
exact arithmetic.
"""

from __future__ import annotations

import math
import traceback
from pathlib import Path

import numpy as np
import torch

from lipnet.exceptions import CertificationError

__all__ = ["Dual", "Uncertifiable", "variable"]

EPS = float(np.finfo(np.float64).eps)
TINY = 1e-300
REL = 4 * EPS  # a product or a sum of two rounded operands
REL_LIBM = 8 * EPS  # sin, cos, tanh, exp, atan, sqrt from the C library (≤ 1–2 ulp)
_HERE = str(Path(__file__).resolve())
_TORCH = str(Path(torch.__file__).resolve().parent)


class Uncertifiable(CertificationError):
    """The plant or controller uses an operation the interval propagator has no sound rule for."""


def _caller() -> str:
    """`file:line` of the innermost frame outside this module and torch (the user's code that called the op)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = str(Path(frame.filename).resolve()) if frame.filename and not frame.filename.startswith("<") \
            else frame.filename
        if name != _HERE and not name.startswith(_TORCH):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def _refuse(op: str) -> Uncertifiable:
    return Uncertifiable(f"cannot certify: op {op} at {_caller()} has no sound interval rule (supported: sin, cos, "
                         "tanh, exp, atan, sqrt, clamp, abs, maximum, minimum, + − × ÷, integer pow, matmul, "
                         "addmm, addcmul, stack, cat, unbind, indexing)")


def _out(lo, hi, rel=REL):
    """Widen `[lo, hi]` outward by `rel` relative plus a tiny absolute margin."""
    return lo - rel * np.abs(lo) - TINY, hi + rel * np.abs(hi) + TINY


def _const(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64).cpu().numpy()
    if isinstance(v, (bool, np.bool_)):
        raise _refuse("a boolean operand")
    return np.asarray(v, dtype=np.float64)


def _imul(alo, ahi, blo, bhi):
    """Interval product, elementwise with broadcasting, rounded outward."""
    p = (alo * blo, alo * bhi, ahi * blo, ahi * bhi)
    lo = np.minimum(np.minimum(p[0], p[1]), np.minimum(p[2], p[3]))
    hi = np.maximum(np.maximum(p[0], p[1]), np.maximum(p[2], p[3]))
    return _out(lo, hi)


def _hull0(jlo, jhi):
    """Hull of the Jacobian interval with 0 (a derivative that may be switched off)."""
    return np.minimum(jlo, 0.0), np.maximum(jhi, 0.0)


class Dual:
    """Intervals of a batched quantity (`lo`, `hi`, shape S) and of its Jacobian (`jlo`, `jhi`, shape S + (n,))."""

    __array_ufunc__ = None  # numpy defers `array * dual` to `Dual.__rmul__`
    dtype = torch.float64
    device = torch.device("cpu")

    def __init__(self, lo, hi, jlo, jhi):
        self.lo, self.hi, self.jlo, self.jhi = lo, hi, jlo, jhi

    # --- views ----------------------------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.lo.shape)

    @property
    def ndim(self) -> int:
        return self.lo.ndim

    def dim(self) -> int:
        return self.lo.ndim

    def size(self, d=None):
        return self.shape if d is None else self.shape[d]

    @property
    def n(self) -> int:
        return self.jlo.shape[-1]

    @property
    def mid(self) -> np.ndarray:
        return 0.5 * (self.lo + self.hi)

    def __repr__(self) -> str:
        return f"Dual(shape={tuple(self.lo.shape)}, n={self.n})"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _refuse(f"Tensor.{name}")

    def __array__(self, *args, **kwargs):
        raise _refuse("conversion to a numpy array")

    def __bool__(self):
        raise _refuse("a branch on a state-dependent value (bool)")

    def __float__(self):
        raise _refuse("conversion to a Python float")

    def _jaxis(self, d: int) -> int:
        return d - 1 if d < 0 else d

    def __getitem__(self, idx):
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        if not isinstance(idx, tuple):
            idx = (idx,)
        idx = tuple(i.cpu().numpy() if isinstance(i, torch.Tensor) else i for i in idx)
        jidx = idx + (slice(None),) if any(i is Ellipsis for i in idx) else idx
        return Dual(self.lo[idx], self.hi[idx], self.jlo[jidx], self.jhi[jidx])

    def unbind(self, dim: int = 0):
        d = dim if dim >= 0 else dim + self.lo.ndim
        return tuple(Dual(np.take(self.lo, i, d), np.take(self.hi, i, d), np.take(self.jlo, i, d),
                          np.take(self.jhi, i, d)) for i in range(self.lo.shape[d]))

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
        lo = self.lo.reshape(shape)
        j = lo.shape + (self.n,)
        return Dual(lo, self.hi.reshape(shape), self.jlo.reshape(j), self.jhi.reshape(j))

    view = reshape

    def unsqueeze(self, d: int):
        d = d if d >= 0 else d + self.lo.ndim + 1
        return Dual(np.expand_dims(self.lo, d), np.expand_dims(self.hi, d), np.expand_dims(self.jlo, d),
                    np.expand_dims(self.jhi, d))

    def squeeze(self, d: int):
        d = d if d >= 0 else d + self.lo.ndim
        return Dual(np.squeeze(self.lo, d), np.squeeze(self.hi, d), np.squeeze(self.jlo, d),
                    np.squeeze(self.jhi, d))

    # --- arithmetic -----------------------------------------------------------------------------------------
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return add(self, neg(other))

    def __rsub__(self, other):
        return add(neg(self), other)

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return mul(reciprocal(self), other)

    def __neg__(self):
        return neg(self)

    def __pow__(self, k):
        return power(self, k)

    def __matmul__(self, w):
        return matmul(self, w)

    def __rmatmul__(self, w):
        raise _refuse("a matrix times a state-dependent matrix (write x @ W.T)")

    def __abs__(self):
        return absolute(self)

    # --- Tensor methods plant code uses -----------------------------------------------------------------
    def sin(self):
        return sin(self)

    def cos(self):
        return cos(self)

    def tanh(self):
        return tanh(self)

    def exp(self):
        return exp(self)

    def sqrt(self):
        return sqrt(self)

    def square(self):
        return power(self, 2)

    def abs(self):
        return absolute(self)

    def clamp(self, min=None, max=None):  # noqa: A002 - torch's keyword names
        return clamp(self, min, max)

    clip = clamp

    def pow(self, k):
        return power(self, k)

    def sum(self, dim=None, keepdim=False):
        if dim is None:
            raise _refuse("sum over every axis")
        d = dim if dim >= 0 else dim + self.lo.ndim
        k = self.lo.shape[d]
        gamma = (k + 2) * EPS

        def total(lo, hi, axis):  # k-term sums: error ≤ γ_k Σ|terms|
            slack = gamma * np.maximum(np.abs(lo), np.abs(hi)).sum(axis, keepdims=keepdim) + TINY
            return lo.sum(axis, keepdims=keepdim) - slack, hi.sum(axis, keepdims=keepdim) + slack

        lo, hi = total(self.lo, self.hi, d)
        jlo, jhi = total(self.jlo, self.jhi, d)
        return Dual(lo, hi, jlo, jhi)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        rule = _TORCH_RULES.get(name)
        if rule is None:
            raise _refuse(f"torch.{name}")
        return rule(*args, **kwargs)


def variable(lo, hi) -> Dual:
    """The state box `[lo, hi]` (shape [batch, n]) as a `Dual` whose Jacobian is the identity."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    eye = np.broadcast_to(np.eye(lo.shape[-1]), lo.shape + (lo.shape[-1],)).copy()
    return Dual(lo.copy(), hi.copy(), eye, eye.copy())


# --- elementary rules ------------------------------------------------------------------------------------------
def _lift(a, like: Dual) -> Dual:
    c = _const(a)
    z = np.zeros(c.shape + (like.n,))
    return Dual(c, c, z, z)


def add(a, b, alpha=1.0) -> Dual:
    if alpha != 1.0:
        b = mul(b, alpha) if isinstance(b, Dual) else _const(b) * float(alpha)
    if not isinstance(a, Dual):
        a, b = b, a
    if not isinstance(b, Dual):
        c = _const(b)
        lo, hi = _out(a.lo + c, a.hi + c)
        return Dual(lo, hi, a.jlo, a.jhi)
    lo, hi = _out(a.lo + b.lo, a.hi + b.hi)
    jlo, jhi = _out(a.jlo + b.jlo, a.jhi + b.jhi)
    return Dual(lo, hi, jlo, jhi)


def neg(a):
    if not isinstance(a, Dual):
        return -_const(a)
    return Dual(-a.hi, -a.lo, -a.jhi, -a.jlo)


def mul(a, b) -> Dual:
    if not isinstance(a, Dual):
        a, b = b, a
    if not isinstance(b, Dual):
        c = _const(b)
        lo, hi = _imul(a.lo, a.hi, c, c)
        cj = c[..., None]
        jlo, jhi = _imul(a.jlo, a.jhi, cj, cj)
        return Dual(lo, hi, jlo, jhi)
    lo, hi = _imul(a.lo, a.hi, b.lo, b.hi)
    t1 = _imul(a.lo[..., None], a.hi[..., None], b.jlo, b.jhi)
    t2 = _imul(b.lo[..., None], b.hi[..., None], a.jlo, a.jhi)
    jlo, jhi = _out(t1[0] + t2[0], t1[1] + t2[1])
    return Dual(lo, hi, jlo, jhi)


def _chain(a: Dual, lo, hi, dlo, dhi) -> Dual:
    """`g(a)` with value `[lo, hi]` and derivative `g'(a) ∈ [dlo, dhi]`."""
    if a.jlo.shape[-1] == 0:
        return Dual(lo, hi, a.jlo, a.jhi)
    if np.all(dlo >= 0):  # a nondecreasing g (tanh, atan, exp, clamp): two products by sign instead of four
        d_lo, d_hi = dlo[..., None], dhi[..., None]
        jlo = np.where(a.jlo >= 0, d_lo, d_hi) * a.jlo
        jhi = np.where(a.jhi >= 0, d_hi, d_lo) * a.jhi
        jlo, jhi = _out(jlo, jhi)
        return Dual(lo, hi, jlo, jhi)
    jlo, jhi = _imul(dlo[..., None], dhi[..., None], a.jlo, a.jhi)
    return Dual(lo, hi, jlo, jhi)


def reciprocal(a) -> Dual:
    if not isinstance(a, Dual):
        return 1.0 / _const(a)
    if not np.all((a.lo > 0) | (a.hi < 0)):
        raise Uncertifiable(f"cannot certify: division at {_caller()} by an interval that contains 0 "
                            "(the denominator can vanish on the box)")
    lo, hi = _out(1.0 / a.hi, 1.0 / a.lo)
    slo, shi = _imul(lo, hi, lo, hi)  # 1/a² = (1/a)², positive
    return _chain(a, lo, hi, -shi, -slo)


def div(a, b) -> Dual:
    if isinstance(b, Dual):
        return mul(a, reciprocal(b))
    c = _const(b)
    if np.any(c == 0):
        raise Uncertifiable(f"cannot certify: division by zero at {_caller()}")
    lo, hi = _out(1.0 / c, 1.0 / c)
    if np.all(lo == hi):
        return mul(a, lo)
    return mul(a, Dual(lo, hi, np.zeros(np.shape(lo) + (a.n,)), np.zeros(np.shape(lo) + (a.n,))))


def power(a: Dual, k) -> Dual:
    if isinstance(k, Dual):
        raise _refuse("pow with a state-dependent exponent")
    k = float(_const(k))
    if k == 0.5:
        return sqrt(a)
    if k == -1:
        return reciprocal(a)
    if k != int(k) or k < 1:
        raise _refuse(f"pow with exponent {k:g} (integers ≥ 1, 0.5 and −1 are supported)")
    k = int(k)
    if k == 2:
        lo = np.where(a.lo >= 0, a.lo * a.lo, np.where(a.hi <= 0, a.hi * a.hi, 0.0))
        hi = np.maximum(a.lo * a.lo, a.hi * a.hi)
        lo, hi = _out(lo, hi)
        dlo, dhi = _out(2 * a.lo, 2 * a.hi)
        return _chain(a, lo, hi, dlo, dhi)
    out = a
    for _ in range(k - 1):
        out = mul(out, a)
    return out


def _has_point(lo, hi, phase: float) -> np.ndarray:
    """Whether `[lo, hi]` may contain `phase + 2kπ` for some integer k (conservative by 1e-9 rad)."""
    k = np.ceil((lo - phase - 1e-9) / (2 * math.pi))
    return phase + 2 * math.pi * k <= hi + 1e-9


def _sin_range(lo, hi):
    slo, shi = np.sin(lo), np.sin(hi)
    mn, mx = np.minimum(slo, shi), np.maximum(slo, shi)
    wide = (hi - lo) >= 2 * math.pi
    mx = np.where(wide | _has_point(lo, hi, math.pi / 2), 1.0, mx)
    mn = np.where(wide | _has_point(lo, hi, -math.pi / 2), -1.0, mn)
    mn, mx = _out(mn, mx, REL_LIBM)
    return np.maximum(mn, -1.0), np.minimum(mx, 1.0)


def _cos_range(lo, hi):
    clo, chi = np.cos(lo), np.cos(hi)
    mn, mx = np.minimum(clo, chi), np.maximum(clo, chi)
    wide = (hi - lo) >= 2 * math.pi
    mx = np.where(wide | _has_point(lo, hi, 0.0), 1.0, mx)
    mn = np.where(wide | _has_point(lo, hi, math.pi), -1.0, mn)
    mn, mx = _out(mn, mx, REL_LIBM)
    return np.maximum(mn, -1.0), np.minimum(mx, 1.0)


def sin(a: Dual) -> Dual:
    lo, hi = _sin_range(a.lo, a.hi)
    dlo, dhi = _cos_range(a.lo, a.hi)
    return _chain(a, lo, hi, dlo, dhi)


def cos(a: Dual) -> Dual:
    lo, hi = _cos_range(a.lo, a.hi)
    slo, shi = _sin_range(a.lo, a.hi)
    return _chain(a, lo, hi, -shi, -slo)


def _even_decreasing(g, lo, hi):
    """Range of an even function that decreases in |x| (e.g. 1 − tanh², 1/(1 + x²)) on `[lo, hi]`."""
    amin = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    amax = np.maximum(np.abs(lo), np.abs(hi))
    return _out(g(amax), g(amin), REL_LIBM)


def tanh(a: Dual) -> Dual:
    lo, hi = _out(np.tanh(a.lo), np.tanh(a.hi), REL_LIBM)
    dlo, dhi = _even_decreasing(lambda t: 1.0 - np.tanh(t) ** 2, a.lo, a.hi)
    return _chain(a, np.maximum(lo, -1.0), np.minimum(hi, 1.0), np.maximum(dlo, 0.0), np.minimum(dhi, 1.0))


def atan(a: Dual) -> Dual:
    lo, hi = _out(np.arctan(a.lo), np.arctan(a.hi), REL_LIBM)
    dlo, dhi = _even_decreasing(lambda t: 1.0 / (1.0 + t * t), a.lo, a.hi)
    return _chain(a, lo, hi, np.maximum(dlo, 0.0), dhi)


def exp(a: Dual) -> Dual:
    lo, hi = _out(np.exp(a.lo), np.exp(a.hi), REL_LIBM)
    return _chain(a, np.maximum(lo, 0.0), hi, np.maximum(lo, 0.0), hi)


def sqrt(a: Dual) -> Dual:
    if not np.all(a.lo > 0):
        raise Uncertifiable(f"cannot certify: sqrt at {_caller()} of an interval that reaches 0 or below "
                            "(its derivative is unbounded there)")
    lo, hi = _out(np.sqrt(a.lo), np.sqrt(a.hi), REL_LIBM)
    dlo, dhi = _out(0.5 / hi, 0.5 / lo, REL_LIBM)
    return _chain(a, lo, hi, dlo, dhi)


def clamp(a: Dual, min=None, max=None) -> Dual:  # noqa: A002 - torch's keyword names
    lo, hi, jlo, jhi = a.lo, a.hi, a.jlo, a.jhi
    if isinstance(min, Dual) or isinstance(max, Dual):
        raise _refuse("clamp with state-dependent limits")
    for bound, below in ((min, True), (max, False)):
        if bound is None:
            continue
        c = _const(bound)
        if below:
            off = hi <= c  # constant c on the whole box: derivative 0
            part = lo < c  # partly clipped: hull of 0 and the slope
            lo, hi = np.maximum(lo, c), np.maximum(hi, c)
        else:
            off = lo >= c
            part = hi > c
            lo, hi = np.minimum(lo, c), np.minimum(hi, c)
        h0 = _hull0(jlo, jhi)
        jlo = np.where(off[..., None], 0.0, np.where(part[..., None], h0[0], jlo))
        jhi = np.where(off[..., None], 0.0, np.where(part[..., None], h0[1], jhi))
    return Dual(lo, hi, jlo, jhi)


def relu(a: Dual) -> Dual:
    return clamp(a, 0.0, None)


def absolute(a: Dual) -> Dual:
    pos, negv = a.lo >= 0, a.hi <= 0
    lo = np.where(pos, a.lo, np.where(negv, -a.hi, 0.0))
    hi = np.maximum(np.abs(a.lo), np.abs(a.hi))
    m = np.maximum(np.abs(a.jlo), np.abs(a.jhi))
    jlo = np.where(pos[..., None], a.jlo, np.where(negv[..., None], -a.jhi, -m))
    jhi = np.where(pos[..., None], a.jhi, np.where(negv[..., None], -a.jlo, m))
    return Dual(lo, hi, jlo, jhi)


def maximum(a, b) -> Dual:
    if not isinstance(a, Dual):
        a, b = b, a
    if not isinstance(b, Dual):
        b = _lift(b, a)
    lo, hi = np.maximum(a.lo, b.lo), np.maximum(a.hi, b.hi)
    a_wins, b_wins = (a.lo >= b.hi)[..., None], (b.lo >= a.hi)[..., None]
    jlo = np.where(a_wins, a.jlo, np.where(b_wins, b.jlo, np.minimum(a.jlo, b.jlo)))
    jhi = np.where(a_wins, a.jhi, np.where(b_wins, b.jhi, np.maximum(a.jhi, b.jhi)))
    return Dual(lo, hi, jlo, jhi)


def minimum(a, b) -> Dual:
    return neg(maximum(neg(a), neg(b)))


def _matmul_interval(clo, chi, w: np.ndarray, axis_k: int):
    """`[c] · W` contracting the axis `axis_k` of the interval `[clo, chi]` with W's first axis (center-radius)."""
    k = w.shape[0]
    mid = 0.5 * (clo + chi)
    rad = 0.5 * (chi - clo) * (1 + 2 * EPS) + EPS * np.abs(mid)
    mid, rad = np.moveaxis(mid, axis_k, -1), np.moveaxis(rad, axis_k, -1)
    aw = np.abs(w)
    cm = mid @ w
    gamma = (k + 2) * EPS / (1 - (k + 2) * EPS)
    # the dot products' rounding, bounded through the largest |entry| per row and W's column sums: one product
    # fewer than `(|mid| + rad) @ |W|`, and only ~1e-14 relative of looseness
    big = np.max(np.abs(mid) + rad, axis=-1, keepdims=True)
    cr = rad @ aw + (gamma * 1.0000001) * big * aw.sum(0) + TINY
    cm, cr = np.moveaxis(cm, -1, axis_k), np.moveaxis(cr, -1, axis_k)
    return cm - cr, cm + cr


def matmul(a, w) -> Dual:
    if isinstance(w, Dual):
        raise _refuse("a product of two state-dependent matrices")
    if not isinstance(a, Dual):
        raise _refuse("a matrix times a state-dependent matrix (write x @ W.T)")
    w = _const(w)
    if w.ndim == 1:
        w = w[:, None]
        squeeze = True
    else:
        squeeze = False
    lo, hi = _matmul_interval(a.lo, a.hi, w, -1)
    jlo, jhi = _matmul_interval(a.jlo, a.jhi, w, -2)
    out = Dual(lo, hi, jlo, jhi)
    return out[..., 0] if squeeze else out


def _linear(a: Dual, w, b=None) -> Dual:
    out = matmul(a, _const(w).T)
    return out if b is None else add(out, b)


def _stack(seq, dim=0) -> Dual:
    seq = list(seq)
    like = next(s for s in seq if isinstance(s, Dual))
    seq = [s if isinstance(s, Dual) else _lift(s, like) for s in seq]
    jd = dim - 1 if dim < 0 else dim
    return Dual(np.stack([s.lo for s in seq], dim), np.stack([s.hi for s in seq], dim),
                np.stack([s.jlo for s in seq], jd), np.stack([s.jhi for s in seq], jd))


def _cat(seq, dim=0) -> Dual:
    seq = list(seq)
    like = next(s for s in seq if isinstance(s, Dual))
    seq = [s if isinstance(s, Dual) else _lift(s, like) for s in seq]
    jd = dim - 1 if dim < 0 else dim
    return Dual(np.concatenate([s.lo for s in seq], dim), np.concatenate([s.hi for s in seq], dim),
                np.concatenate([s.jlo for s in seq], jd), np.concatenate([s.jhi for s in seq], jd))


def _addcmul(inp, t1, t2, value=1.0):
    return add(inp, mul(mul(t1, t2), value) if isinstance(t1, Dual) or isinstance(t2, Dual)
               else _const(t1) * _const(t2) * value)


def _addmm(inp, m1, m2, beta=1.0, alpha=1.0):
    return add(mul(inp, beta) if beta != 1.0 else inp, mul(matmul(m1, m2), alpha) if alpha != 1.0 else matmul(m1, m2))


def _sub(a, b, alpha=1.0):
    return add(a, neg(mul(b, alpha) if isinstance(b, Dual) else _const(b) * alpha))


def _rsub(a, b, alpha=1.0):
    return _sub(b, a, alpha)


def _unbind(a, dim=0):
    return a.unbind(dim)


def _getitem(a, idx):
    return a[idx]


def _method(name):
    def rule(a, *args, **kwargs):
        if not isinstance(a, Dual):
            raise _refuse(f"Tensor.{name} on a constant with a state-dependent argument")
        return getattr(a, name)(*args, **kwargs)
    return rule


_TORCH_RULES = {
    "add": add, "__add__": add, "__radd__": add, "sub": _sub, "subtract": _sub, "__sub__": _sub, "__rsub__": _rsub,
    "rsub": _rsub, "mul": mul, "multiply": mul, "__mul__": mul, "__rmul__": mul, "div": div, "divide": div,
    "true_divide": div, "__truediv__": div, "__rtruediv__": lambda a, b: mul(reciprocal(a), b),
    "neg": neg, "negative": neg, "__neg__": neg, "pow": power, "__pow__": power, "square": lambda a: power(a, 2),
    "sin": sin, "cos": cos, "tanh": tanh, "exp": exp, "atan": atan, "arctan": atan, "sqrt": sqrt,
    "clamp": clamp, "clip": clamp, "relu": relu, "abs": absolute, "absolute": absolute, "__abs__": absolute,
    "maximum": maximum, "minimum": minimum, "matmul": matmul, "__matmul__": matmul, "linear": _linear,
    "addmm": _addmm, "addcmul": _addcmul, "stack": _stack, "cat": _cat, "concat": _cat, "concatenate": _cat,
    "unbind": _unbind, "__getitem__": _getitem, "reshape": _method("reshape"), "view": _method("view"),
    "unsqueeze": _method("unsqueeze"), "squeeze": _method("squeeze"), "sum": _method("sum"),
}
