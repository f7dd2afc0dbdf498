"""Sound Lipschitz bounds on the weights inside an exported model, and the run's certificate and its hash.

The exported controller is `sat(W_D σ(⋯ σ(W_1 x + b_1)) + b_D)` with 1-Lipschitz σ and saturation, so
`Π_l ‖Ŵ_l‖₂` over the weights read back from the file is sound for that file (`export.recertify` adds LipSDP on
the same weights; nothing is carried over from a certificate's numbers).
With periodic states the first layer acts on sin/cos features of the state, a 1-Lipschitz map: every bound on
the weights (the first matrix taking the features) still holds from state to action.
Needs numpy only (the certificate's hash is checked with `lipnet.certify` when it is installed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SVD_MARGIN", "spectral_norm", "spectral_product", "RunCertificate",
           "run_certificate", "tightest_bound", "network_hash_fn"]

# LAPACK's largest singular value has relative error ~n·eps ≈ 1e-13 for these sizes; inflate by far more.
SVD_MARGIN = 1e-9


def spectral_norm(w: np.ndarray) -> float:
    """An upper bound on ‖W‖₂ (float64 SVD, inflated by `SVD_MARGIN`)."""
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0:
        return 0.0
    return float(np.linalg.norm(w, 2)) * (1.0 + SVD_MARGIN)


def spectral_product(weights) -> float:
    """`Π_l ‖W_l‖₂`: sound for an MLP with 1-Lipschitz activations and output map."""
    return float(math.prod(spectral_norm(w) for w in weights))


def tightest_bound(cert: dict) -> tuple[float | None, str | None]:
    """The tightest sound upper bound a certificate states, and its method (None when it states none).

    Reads, in order: `tightest_upper` / `tightest_sound_upper` / `lipschitz_upper` (a number or a dict with
    `value` and `method`), else the smallest `value` among `bounds` entries marked `sound` (or `certified`).
    """
    for key in ("tightest_upper", "tightest_sound_upper", "lipschitz_upper", "tightest"):
        value = cert.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value), str(cert.get("tightest_method", key))
        if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
            return float(value["value"]), str(value.get("method", key))
    best = (None, None)
    bounds = cert.get("bounds") or cert.get("upper_bounds") or []
    if isinstance(bounds, dict):
        bounds = [{"method": k, **v} if isinstance(v, dict) else {"method": k, "value": v} for k, v in bounds.items()]
    for entry in bounds:
        if not isinstance(entry, dict) or not (entry.get("sound") or entry.get("certified")):
            continue
        value = entry.get("value", entry.get("bound"))
        if isinstance(value, (int, float)) and math.isfinite(value) and (best[0] is None or value < best[0]):
            best = (float(value), str(entry.get("method", "?")))
    return best


@dataclass
class RunCertificate:
    """The run's `certificate.json` and whether it belongs to the weights being exported."""

    status: str  # verified | missing | unreadable | unverifiable | stale | no-bound
    reason: str
    certificate: dict | None = None
    bound: float | None = None
    method: str | None = None
    network_hash: str | None = None
    extra: dict = field(default_factory=dict)


def network_hash_fn():
    """`lipnet.certify`'s `network_hash(controller)`, or None where that module is not installed."""
    try:
        from lipnet.certify.network import network_hash
    except ImportError:
        return None
    return network_hash


def run_certificate(run_dir, controller) -> RunCertificate:
    """Read `RUN_DIR/certificate.json` and check its network hash against `controller`'s weights.

    The hash is `lipnet.certify`'s `network_hash` (sha256 of the folded float64 weights, limits, activation and
    saturation); without that module the certificate cannot be checked and is reported `unverifiable`.
    """
    if run_dir is None:
        return RunCertificate("missing", "a Controller object was exported (no run folder, no certificate.json)")
    path = Path(run_dir)
    path = path.parent if path.is_file() else path
    cert_path = path / "certificate.json"
    if not cert_path.is_file():
        return RunCertificate("missing", f"no {cert_path} (run `lipnet certify {path}` first)")
    hash_fn = network_hash_fn()
    try:
        cert = json.loads(cert_path.read_text(encoding="utf-8"))
        if not isinstance(cert, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:  # noqa: BLE001 - any unreadable certificate is reported, never trusted
        return RunCertificate("unreadable", f"{cert_path} could not be read ({exc.__class__.__name__}: {exc})")
    stated = cert.get("network_hash") or cert.get("hash") or (cert.get("network") or {}).get("hash")
    if hash_fn is None:
        return RunCertificate("unverifiable", "lipnet.certify.network_hash is not available to check that "
                              f"{cert_path} belongs to these weights", certificate=cert)
    actual = str(hash_fn(controller))
    if stated is None or str(stated) != actual:
        return RunCertificate("stale", f"{cert_path} was made for network {stated}, the checkpoint is {actual} "
                              f"(re-run `lipnet certify {path}`)", certificate=cert, network_hash=actual)
    bound, method = tightest_bound(cert)
    if bound is None:
        return RunCertificate("no-bound", f"{cert_path} states no sound upper bound", certificate=cert,
                              network_hash=actual)
    return RunCertificate("verified", f"{cert_path} matches the weights (hash {actual})", certificate=cert,
                          bound=bound, method=method, network_hash=actual)
