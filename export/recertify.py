"""Never trust a bound from a file: every number export embeds is recomputed here.

Two jobs. `exported_bounds` computes sound Lipschitz bounds directly on the weights read back from the ONNX graph
(exact spectral product and the LipSDP-neuron LMI solved and verified in float64 on those very weights), so the
embedded `lipnet.lipschitz_upper` holds for the file whatever any `certificate.json` says. `recheck` re-runs the
fast certification (< 1 s) on the checkpoint and compares every claim of the run's `certificate.json` with it:
a bound below what the recomputation proves, or a closed-loop verdict it does not reproduce, is a forged or
foreign certificate and export refuses it.
"""

from __future__ import annotations

import math

import numpy as np

from lipnet.certify.bounds import spectral_bound
from lipnet.certify.certificate import stated_bounds

from .bounds import RunCertificate
from .errors import ExportError

__all__ = ["exported_bounds", "recheck", "FAST_METHODS", "CLAIM_RTOL"]

# Cheap, deterministic methods: recomputed at every export and compared with the file's claims.
FAST_METHODS = ("construction", "spectral", "eclipse-fast", "lipsdp-schur", "path-norm")
# A recomputation of the same deterministic method agrees to rounding; LipSDP-neuron (cvxpy) is checked against
# our solver of the same LMI, solved to 1e-6 relative, with the SDP solvers' accuracy as slack.
CLAIM_RTOL = {"lipsdp-neuron": 1e-2}
_DEFAULT_RTOL = 1e-6


def exported_bounds(exported: list[np.ndarray], activation: str, where: str) -> list[dict]:
    """Sound bounds on the function of the weights `exported` (read from the file), computed on them directly."""
    from lipnet.certify.lipsdp_schur import lipsdp_schur
    from lipnet.certify.lmi import lmi_of_mlp
    from lipnet.certify.network import activation_slope

    entries = [{"method": "spectral-product", "value": spectral_bound(exported), "sound": True,
                "applies_to": where, "note": "Π‖Ŵ_l‖₂ of the weights read back from the file, float64 SVD"}]
    slope = activation_slope(activation)
    if slope is not None and slope[0] == 0.0 and len(exported) > 1:
        res = lipsdp_schur(lmi_of_mlp(exported, slope))
        if res["value"] is not None and math.isfinite(res["value"]):
            entries.append({"method": "lipsdp-schur", "value": float(res["value"]), "sound": True,
                            "applies_to": where, "note": "LipSDP-neuron LMI on the weights read back from the file, "
                            f"verified in float64 (inflation {res['inflation']:.0e})"})
    return entries


def recheck(run_cert: RunCertificate, controller, plant) -> tuple[RunCertificate, dict | None]:
    """Re-verify a hash-matched run certificate; returns it (status `verified`) and the recomputed certificate.

    Raises `ExportError` when the file claims a bound or a closed-loop certificate the recomputation refutes.
    Certificates that are missing or stale are passed through unchanged (nothing of them is embedded).
    """
    if run_cert.status != "verified":
        return run_cert, None
    from lipnet.certify import certify_controller

    claimed = run_cert.certificate or {}
    cl_claim = claimed.get("closed_loop") or {}
    wants_iqc = bool(cl_claim.get("certified")) and "IQC" in str(cl_claim.get("method", ""))
    region_claim = cl_claim.get("region") if isinstance(cl_claim.get("region"), dict) else None
    region_claim = region_claim if region_claim and region_claim.get("certified") else None
    try:
        fresh = certify_controller(controller, plant, methods=FAST_METHODS, lower=False,
                                   closed_loop=plant is not None, iqc="always" if wants_iqc else "off",
                                   roa=False, roa_claim=region_claim)
    except Exception as exc:  # noqa: BLE001 - a certificate that cannot be re-checked is not embedded
        raise ExportError(f"the run's certificate could not be re-verified ({exc.__class__.__name__}: {exc}); "
                          "re-run `lipnet certify` or pass the plant with --plant") from None
    recomputed = {b.method: b.value for b in fresh.bounds if b.sound and b.value is not None}
    tightest_fresh = min(recomputed.values()) if recomputed else math.inf
    for method, value in stated_bounds(claimed):
        reference = recomputed.get(method)
        if reference is None:
            if method == "lipsdp-neuron":
                reference = recomputed.get("lipsdp-schur")
            else:  # a method we cannot recompute must at least not beat every sound bound we can
                reference = tightest_fresh
        if reference is None or not math.isfinite(reference):
            continue
        rtol = CLAIM_RTOL.get(method, _DEFAULT_RTOL)
        if not math.isfinite(value) or value < reference * (1 - rtol):
            raise ExportError(f"certificate.json claims a Lipschitz bound of {value:.6g} ({method}) but the bound "
                              f"recomputed on these weights is {reference:.6g}: the certificate was edited or is "
                              "wrong, so nothing of it is embedded; re-run `lipnet certify` on the run folder")
    if cl_claim.get("certified"):
        again = fresh.closed_loop or {}
        if not again.get("certified"):
            raise ExportError(f"certificate.json claims the closed loop is certified ({cl_claim.get('method')}) but "
                              f"re-checking it gives: {again.get('verdict', 'no plant to check it against')}; re-run "
                              "`lipnet certify` on the run folder")
    if region_claim is not None:
        again = (fresh.closed_loop or {}).get("region") or {}
        if not again.get("certified"):
            why = again.get("reason", "no plant to check it against")
            raise ExportError("certificate.json claims a certified region of attraction "
                              f"(ρ = {region_claim.get('rho')}) but re-proving it fails: {why}; "
                              "re-run `lipnet certify` on the run folder")
    return run_cert, fresh.to_dict()
