"""Run folders: create (refusing to clobber), check writability, and the files a run holds.

A run folder carries the marker `RUN_MARKER`, written when it is created. `--overwrite` removes only what lipnet
wrote into a folder that carries the marker (or, for runs made before the marker existed, a folder holding only
lipnet's own files), never the working directory or a folder above it, and leaves every other file in place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lipnet import __version__
from lipnet.exceptions import RunFolderError
from lipnet.fileio import TEMP_PATTERN, atomic_write, clean_stale_temporaries

__all__ = ["prepare_run_dir", "check_run_dir", "is_run_dir", "TRAIN_STATE", "CONFIG",
           "METRICS", "RUN_MARKER", "RUN_FILES"]

TRAIN_STATE = "train_state.pt"
CONFIG = "config.toml"
METRICS = "metrics.csv"
RUN_MARKER = ".lipnet-run"
# Every file lipnet writes into a run folder (train, report, certify); --overwrite removes these and no others.
RUN_FILES = (RUN_MARKER, TRAIN_STATE, CONFIG, METRICS, "controller.pt", "summary.json", "report.md", "loss.png",
             "responses.png", "certificate.json")


def is_run_dir(path: Path) -> bool:
    """True for a folder lipnet made: it carries the marker, or (older runs) holds lipnet's files and no others."""
    if (path / RUN_MARKER).is_file():
        return True
    names = {p.name for p in path.iterdir()}
    return TRAIN_STATE in names and names <= set(RUN_FILES) | {n for n in names if TEMP_PATTERN.match(n)}


def _contains_cwd(path: Path) -> bool:
    cwd = Path.cwd().resolve()
    target = path.resolve()
    return cwd == target or target in cwd.parents


def check_run_dir(out: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Path:
    """Raise `RunFolderError` unless `out` may be used as asked; touches nothing (call it before any work)."""
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder; choose another --out")
    if resume:
        if not (out / TRAIN_STATE).exists():
            raise RunFolderError(f"nothing to resume in {out} (no {TRAIN_STATE}); drop --resume to start a new run")
        return out
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunFolderError(f"run folder {out} already exists and is not empty; pass --resume to continue it "
                                 "or --overwrite to replace it")
        if _contains_cwd(out):
            raise RunFolderError(f"--out {out} is the working directory or a folder above it; --overwrite never "
                                 "empties those: choose a run folder below it, e.g. --out runs/NAME")
        if not is_run_dir(out):
            raise RunFolderError(f"{out} is not a lipnet run folder (no {RUN_MARKER} marker), so --overwrite "
                                 "will not empty it; choose another --out or move its files away")
    return out


def prepare_run_dir(out: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> Path:
    """Create or reopen `out` (see `check_run_dir`); an overwritten run loses exactly lipnet's files."""
    out = check_run_dir(out, resume, overwrite)
    if not resume and out.exists() and any(out.iterdir()):
        for name in RUN_FILES:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(out)
        if not (out / RUN_MARKER).exists():
            atomic_write(out / RUN_MARKER, json.dumps({"lipnet_run": 1, "lipnet_version": __version__}) + "\n")
    except OSError as exc:
        raise RunFolderError(f"cannot write to run folder {out}: {exc.strerror or exc}; choose a writable --out") \
            from None
    return out

