"""The one way lipnet writes a file: a temporary file beside it, fsync, rename, fsync of the folder.

A reader never sees a half-written file, and a crash (even `kill -9`) leaves either the old file or the new one.
Temporaries are named `.NAME.lipnet-PID-XXXX.tmp`; one left behind by a killed process (its PID no longer
alive) is removed by the next write into the same folder, so none stays forever.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_path", "atomic_savez", "atomic_savefig", "clean_stale_temporaries", "TEMP_PATTERN"]

TEMP_PATTERN = re.compile(r"^\..+\.lipnet-(\d+)-[^.]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of lipnet writes in `folder` whose writing process is gone; returns them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_PATTERN.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; some filesystems refuse a folder fd.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to (by any library); renamed onto `path` when the block succeeds.

    On any exception the temporary is removed and an existing `path` is left untouched.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    clean_stale_temporaries(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.lipnet-{os.getpid()}-", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # the library that wrote it may not have synced
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], None],
                 encoding: str = "utf-8") -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, to `path` atomically and durably; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if callable(data):
            data(tmp)
        else:
            with open(tmp, "wb") as fh:
                fh.write(data.encode(encoding) if isinstance(data, str) else bytes(data))
    return path


def atomic_savez(path: str | os.PathLike, arrays: dict) -> Path:
    """`np.savez(path, **arrays)` through `atomic_write`; returns `path`."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to the temporary's name
            np.savez(fh, **arrays)

    return atomic_write(path, write)


def atomic_savefig(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG at `path` through `atomic_write`, then closed (also when saving fails)."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
