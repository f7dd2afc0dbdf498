"""Run small dense linear algebra single-threaded: on a busy machine a threaded BLAS is 10-50× slower here."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["single_thread"]


@contextlib.contextmanager
def single_thread():
    """Limit BLAS (numpy/scipy via threadpoolctl, when installed) and torch to one thread inside the block."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # optional: only speed depends on it
            limiter = contextlib.nullcontext()
        else:
            limiter = threadpool_limits(1)
        with limiter:
            yield
    finally:
        torch.set_num_threads(old)
