"""The run's certificate as export sees it: read by lipnet's one reader, and bound to the weights by their hash.

The certificate is read with `lipnet.certify.read_certificate` (the format check included: a file that is not in
lipnet's format is `unreadable`), and its network hash is compared with `lipnet.certify.network_hash` of the weights
being exported. Nothing of its numbers is trusted: `export.recertify` recomputes every bound it embeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lipnet.certify.certificate import CERTIFICATE_NAME, read_certificate, stated_tightest
from lipnet.certify.network import network_hash
from lipnet.exceptions import RunFolderError

__all__ = ["RunCertificate", "run_certificate"]


@dataclass
class RunCertificate:
    """The run's `certificate.json` and whether it belongs to the weights being exported."""

    status: str  # verified | missing | unreadable | stale | no-bound
    reason: str
    certificate: dict | None = None
    bound: float | None = None
    method: str | None = None
    network_hash: str | None = None
    extra: dict = field(default_factory=dict)


def run_certificate(run_dir, controller) -> RunCertificate:
    """Read `RUN_DIR/certificate.json` and check its network hash against `controller`'s weights.

    The hash is `lipnet.certify`'s `network_hash` (sha256 of the folded float64 weights, limits, activation and
    saturation).
    """
    if run_dir is None:
        return RunCertificate("missing", "a Controller object was exported (no run folder, no certificate.json)")
    path = Path(run_dir)
    path = path.parent if path.is_file() else path
    cert_path = path / CERTIFICATE_NAME
    if not cert_path.is_file():
        return RunCertificate("missing", f"no {cert_path} (run `lipnet certify {path}` first)")
    try:
        cert = read_certificate(cert_path)
    except RunFolderError as exc:  # any unreadable or malformed certificate is reported, never trusted
        return RunCertificate("unreadable", str(exc))
    stated, actual = cert["network_hash"], network_hash(controller)
    if stated != actual:
        return RunCertificate("stale", f"{cert_path} was made for network {stated}, the checkpoint is {actual} "
                              f"(re-run `lipnet certify {path}`)", certificate=cert, network_hash=actual)
    bound, method = stated_tightest(cert)
    if bound is None:
        return RunCertificate("no-bound", f"{cert_path} states no sound upper bound", certificate=cert,
                              network_hash=actual)
    return RunCertificate("verified", f"{cert_path} matches the weights (hash {actual})", certificate=cert,
                          bound=bound, method=method, network_hash=actual)
