"""Lipschitz upper bounds, empirical lower bounds, closed-loop certificates and the certificate file."""
