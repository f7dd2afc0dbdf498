"""Torch's (and BLAS's) CPU threads for one block of work, restored after it: a long-lived process (the tests, a
sweep worker, `lipnet.cli.main` called in-process) never keeps a count the block set."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["torch_threads", "single_thread"]


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with `n` torch CPU threads, then restore the previous count (also on an exception)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def single_thread():
    """Small dense linear algebra single-threaded (on a busy machine a threaded BLAS is 10-50× slower there): BLAS
    (numpy/scipy via threadpoolctl, when installed) and torch limited to one thread inside the block."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        limiter = contextlib.nullcontext()
    else:
        limiter = threadpool_limits(1)
    with torch_threads(1), limiter:
        yield
