"""lipnet's file writer: `plants.fileio` (it lives at the bottom of the dependency chain, so plants uses it too)."""

from plants.fileio import (
    TEMP_PATTERN,
    atomic_path,
    atomic_savefig,
    atomic_savez,
    atomic_write,
    clean_stale_temporaries,
)

__all__ = ["atomic_write", "atomic_path", "atomic_savez", "atomic_savefig", "clean_stale_temporaries",
           "TEMP_PATTERN"]
