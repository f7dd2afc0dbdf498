"""Timing statistics of a fixed-rate loop: percentile summaries, miss bursts, period jitter."""

from __future__ import annotations

import numpy as np

__all__ = ["summary_us", "longest_burst", "period_stats", "QUANTILES"]

QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def summary_us(values_ns) -> dict:
    """`{n, mean, std, min, p50, p90, p99, p99.9, max}` in µs of the finite entries of `values_ns` (ns).

    Empty input gives `n = 0` and None for every statistic (JSON has no NaN).
    """
    v = np.asarray(values_ns, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)] / 1e3
    out = {"n": int(v.size)}
    if v.size == 0:
        out.update(dict.fromkeys(["mean", "std", "min", *(k for k, _ in QUANTILES), "max"]))
        return out
    out.update(mean=float(v.mean()), std=float(v.std()), min=float(v.min()))
    out.update({k: float(np.percentile(v, q)) for k, q in QUANTILES})
    out["max"] = float(v.max())
    return out


def longest_burst(flags) -> int:
    """Length of the longest run of consecutive True entries (e.g. deadline misses)."""
    f = np.asarray(flags, dtype=bool).reshape(-1)
    if not f.any():
        return 0
    edges = np.diff(np.concatenate(([0], f.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max())


def period_stats(starts_ns, period_ns: float) -> dict:
    """Achieved rate and the error of each loop period (actual start-to-start minus nominal), in µs."""
    s = np.asarray(starts_ns, dtype=np.float64).reshape(-1)
    if s.size < 2:
        return {"rate_hz": None, "period_error_us": summary_us([])}
    d = np.diff(s)
    err = d - period_ns
    out = {"rate_hz": float((s.size - 1) / (s[-1] - s[0]) * 1e9), "period_error_us": summary_us(err)}
    out["period_error_us"]["abs_max"] = float(np.abs(err).max() / 1e3)
    return out
