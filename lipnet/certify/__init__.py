"""Lipschitz upper bounds, empirical lower bounds, closed-loop certificates and the certificate file.

`certify_controller(controller, plant=None, methods=None, region=None)` → `Certificate`; `write_certificate`,
`read_certificate`; `network_hash(controller)` binds a certificate to the folded float64 weights and limits.
"""

from .bounds import DEFAULT_METHODS, METHODS, BoundRecord, upper_bound, upper_bounds
from .certificate import (
    CERTIFICATE_NAME,
    Certificate,
    certify_controller,
    default_region,
    read_certificate,
    write_certificate,
)
from .closedloop import closed_loop_certificate, small_gain
from .empirical import LowerBound, Region, empirical_lower_bound
from .network import MLP, mlp_of, network_hash

__all__ = ["certify_controller", "Certificate", "write_certificate", "read_certificate", "network_hash",
           "CERTIFICATE_NAME", "default_region", "BoundRecord", "METHODS", "DEFAULT_METHODS", "upper_bound",
           "upper_bounds", "closed_loop_certificate", "small_gain", "LowerBound", "Region",
           "empirical_lower_bound", "MLP", "mlp_of"]
