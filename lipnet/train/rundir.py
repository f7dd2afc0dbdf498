"""Run folders: create (refusing to clobber), check writability, and the files a run holds."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lipnet.exceptions import RunFolderError

__all__ = ["prepare_run_dir", "atomic_write_text", "TRAIN_STATE", "CONFIG", "METRICS"]

TRAIN_STATE = "train_state.pt"
CONFIG = "config.toml"
METRICS = "metrics.csv"


def prepare_run_dir(out: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Path:
    """Create or reopen `out`: an existing non-empty folder needs `resume` or `overwrite`."""
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder; choose another --out")
    if resume:
        if not (out / TRAIN_STATE).exists():
            raise RunFolderError(f"nothing to resume in {out} (no {TRAIN_STATE}); drop --resume to start a new run")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunFolderError(f"run folder {out} already exists and is not empty; pass --resume to continue it "
                                 "or --overwrite to replace it")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise RunFolderError(f"cannot write to run folder {out}: {exc.strerror or exc}; choose a writable --out") \
            from None
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
