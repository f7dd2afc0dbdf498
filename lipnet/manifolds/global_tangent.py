"""Global tangent space of St(n, N) and Gr(n, N) (paper 001): section, horizontal lift, low-rank retraction.

A frame `Y ∈ R^{N×n}` is written `Y = λ E` with `λ ∈ O(N)` its *global section* and `E = [I_n; 0]`.
Tangent directions are carried to one space, `g^hor = {[[A, −Bᵀ], [B, 0]] : A skew n×n, B (N−n)×n}`.
An element of `g^hor` is stored *packed* as the N×n matrix `[A; B]` (its first n columns), which is
also `λᵀ Δ` for the tangent vector `Δ = λ [A; B]` it represents.

The retraction of `U ∈ g^hor` uses `U = X Zᵀ` with `X = [X₁, E]`, `Z = [E, −X₁]`, `X₁ = [A/2; B]`
(rank ≤ 2n), so `Cay(U) = I + X (I − ZᵀX/2)⁻¹ Zᵀ` and `exp(U) = I + X φ(ZᵀX) Zᵀ`, `φ(M) = (e^M − I)/M`:
only a 2n×2n problem is solved, never an N×N one.
"""

from __future__ import annotations

import torch

__all__ = ["global_section", "lift", "hor_matrix", "tangent_of", "retraction_factors", "move_section",
           "retract_point", "householder_pivot", "householder_section", "householder_lift", "householder_apply",
           "RETRACTIONS"]

RETRACTIONS = ("cayley", "exp")

# A fixed completion direction makes the section a function of span(Y) alone (Householder QR of [Y, M]
# Gram–Schmidts M against span(Y)), so two frames of one subspace get the same complement.
_COMPLETION_SEED = 20231


def _completion(n_rows: int, n_cols: int, dtype, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_COMPLETION_SEED + 7919 * n_rows)
    return torch.randn(n_rows, n_cols, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def global_section(y: torch.Tensor, hint: torch.Tensor | None = None) -> torch.Tensor:
    """An orthogonal `λ ∈ O(N)` whose first n columns are exactly `y` (an orthonormal N×n frame).

    Parameters
    ----------
    y : N×n frame with orthonormal columns.
    hint : optional N×(N−n) matrix whose span, orthogonalised against `y`, gives the complement
        (pass the previous section's complement to keep the coordinates of `g^hor` nearly unchanged);
        by default a fixed pseudo-random matrix, so the complement depends only on span(y).
    """
    if y.dim() != 2 or y.shape[0] < y.shape[1]:
        raise ValueError(f"a frame must be a tall N×n matrix (N ≥ n), got shape {tuple(y.shape)}")
    big, small = y.shape
    if hint is None:
        hint = _completion(big, big - small, y.dtype, y.device)
    q, r = torch.linalg.qr(torch.cat([y, hint.to(y)], dim=1), mode="complete")
    signs = torch.sign(torch.diagonal(r))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    section = q[:, :big] * signs[:big]
    section[:, :small] = y  # exactly Y: the section starts at the parameter, not at its rounding
    return section


def lift(section: torch.Tensor, egrad: torch.Tensor, grassmann: bool = False) -> torch.Tensor:
    """Packed `[A; B]` of the horizontal lift `λᵀ Ω(Y, grad) λ` of a Euclidean gradient.

    For the canonical metric on St(n, N) the Riemannian gradient is `∇ − Y∇ᵀY`, and its lift has
    `A = Yᵀ∇ − ∇ᵀY` (skew) and `B = Q̄ᵀ∇` (Q̄ = λ's last N−n columns). On Gr(n, N) `A = 0`.
    """
    small = egrad.shape[1]
    coords = section.transpose(0, 1) @ egrad  # [Yᵀ∇; Q̄ᵀ∇]
    top = coords[:small]
    if grassmann:
        a = torch.zeros_like(top)
    else:
        a = top - top.transpose(0, 1)  # Yᵀ∇ − ∇ᵀY, exactly skew in floating point
    return torch.cat([a, coords[small:]], dim=0)


def hor_matrix(packed: torch.Tensor) -> torch.Tensor:
    """The full N×N skew matrix `[[A, −Bᵀ], [B, 0]]` of a packed `[A; B]` (for checks, not for steps)."""
    big, small = packed.shape
    out = torch.zeros(big, big, dtype=packed.dtype, device=packed.device)
    out[:, :small] = packed
    out[:small, small:] = -packed[small:].transpose(0, 1)
    return out


def tangent_of(section: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """The tangent vector at `Y = λE` that `U ∈ g^hor` represents: `λ U E = Y A + Q̄ B`."""
    return section @ packed


def retraction_factors(packed: torch.Tensor, method: str = "cayley") -> tuple[torch.Tensor, torch.Tensor]:
    """`(X₁, K)` with `Retr(U) = I + X K Zᵀ`, `X = [X₁, E]`, `Z = [E, −X₁]` (K is 2n×2n)."""
    small = packed.shape[1]
    x1 = packed.clone()
    x1[:small] *= 0.5
    a_half = x1[:small]
    eye = torch.eye(small, dtype=packed.dtype, device=packed.device)
    # ZᵀX = [[EᵀX₁, I], [−X₁ᵀX₁, −X₁ᵀE]] with EᵀX₁ = A/2 and −X₁ᵀE = A/2 (A skew).
    ztx = torch.cat([torch.cat([a_half, eye], dim=1),
                     torch.cat([-(x1.transpose(0, 1) @ x1), -a_half.transpose(0, 1)], dim=1)], dim=0)
    two = 2 * small
    eye2 = torch.eye(two, dtype=packed.dtype, device=packed.device)
    if method == "cayley":
        k = torch.linalg.solve(eye2 - 0.5 * ztx, eye2)
    elif method == "exp":
        # φ(M) is the top-right block of exp([[M, I], [0, 0]]).
        block = torch.zeros(2 * two, 2 * two, dtype=packed.dtype, device=packed.device)
        block[:two, :two] = ztx
        block[:two, two:] = eye2
        k = torch.linalg.matrix_exp(block)[:two, two:]
    else:
        raise ValueError(f"unknown retraction {method!r}; valid: {', '.join(RETRACTIONS)}")
    return x1, k


def move_section(section: torch.Tensor, packed: torch.Tensor, method: str = "cayley") -> torch.Tensor:
    """The carried section `λ · Retr(U)` for `U ∈ g^hor` given packed; the new point is its first n columns.

    Cost O(N² n): `λ X` (N×2n), then a rank-2n correction `(λ X K) Zᵀ`.
    """
    small = packed.shape[1]
    x1, k = retraction_factors(packed, method)
    lam_x = torch.cat([section @ x1, section[:, :small]], dim=1)  # λX = [λX₁, Y]
    w = lam_x @ k
    w1, w2 = w[:, :small], w[:, small:]
    # W Zᵀ = W₁ Eᵀ − W₂ X₁ᵀ: the first term touches only the first n columns.
    out = section - w2 @ x1.transpose(0, 1)
    out[:, :small] += w1
    return out


def retract_point(packed: torch.Tensor, method: str = "cayley") -> torch.Tensor:
    """`Retr(U) E` (N×n), the new point in the section's coordinates, in O(N n²): `E + X K ZᵀE`, `ZᵀE = [I; A/2]`."""
    small = packed.shape[1]
    x1, k = retraction_factors(packed, method)
    zte = torch.cat([torch.eye(small, dtype=packed.dtype, device=packed.device), x1[:small]], dim=0)
    kz = k @ zte
    out = x1 @ kz[:small]
    out[:small] += torch.eye(small, dtype=packed.dtype, device=packed.device) + kz[small:]
    return out


# --- compact section of the sphere St(1, N): a Householder reflection, O(N) memory --------------------------

def householder_pivot(y: torch.Tensor) -> int:
    """The axis `e_i` the Householder section maps to `y`: the one farthest from y (λ is singular at y = e_i)."""
    return int(torch.argmin(y.reshape(-1)))


def householder_section(y: torch.Tensor, pivot: int) -> torch.Tensor:
    """Dense `λ(y) = H P` (H reflects e_pivot to y, P swaps axes 0 and pivot): for checks; steps never form it."""
    big = y.shape[0]
    w = -y.reshape(-1).clone()
    w[pivot] += 1.0
    h = torch.eye(big, dtype=y.dtype, device=y.device)
    if w @ w > 0:  # y = e_pivot (only forced when N = 1): the identity is the section there
        h = h - 2.0 * torch.outer(w, w) / (w @ w)
    perm = list(range(big))
    perm[0], perm[pivot] = perm[pivot], perm[0]
    return h[:, perm]


def _reflect(y: torch.Tensor, pivot: int, v: torch.Tensor) -> torch.Tensor:
    w = -y.reshape(-1).clone()
    w[pivot] += 1.0
    norm2 = w @ w
    if norm2 == 0:
        return v.clone()
    return v - (2.0 * (w @ v.reshape(-1)) / norm2) * w.reshape(v.shape)


def _swap(v: torch.Tensor, pivot: int) -> torch.Tensor:
    out = v.clone()
    out[0], out[pivot] = v[pivot], v[0]
    return out


def householder_lift(y: torch.Tensor, pivot: int, egrad: torch.Tensor) -> torch.Tensor:
    """Packed `[0; B] = λᵀ ∇` with its A entry zeroed (A is 1×1 skew) for the Householder section of the sphere."""
    packed = _swap(_reflect(y, pivot, egrad), pivot)
    packed[0] = 0.0
    return packed


def householder_apply(y: torch.Tensor, pivot: int, coords: torch.Tensor) -> torch.Tensor:
    """`λ(y) c` for an N×1 coordinate vector c (with c = Retr(U)E it is the new point)."""
    return _reflect(y, pivot, _swap(coords, pivot))
