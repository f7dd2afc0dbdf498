"""The controller checkpoint `controller.pt`: loads without any training state.

Format `lipnet-controller/1`: a dict with `config` (Controller.config()), `state_dict` (plain tensors),
`plant` (the plant spec string), `dt`, `lipnet_version` and free-form `meta`. Saved atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lipnet import __version__
from lipnet.exceptions import RunFolderError
from lipnet.fileio import atomic_write
from lipnet.nn import Controller

__all__ = ["save_controller", "load_trained", "TrainedController", "load_controller", "atomic_torch_save",
           "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "controller.pt"
FORMAT = "lipnet-controller/1"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through `lipnet.fileio.atomic_write`: never a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_controller(controller: Controller, path: str | os.PathLike, plant: str = "", dt: float | None = None,
                    meta: dict | None = None) -> Path:
    """Write `controller.pt` (a folder gets `controller.pt` inside it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    meta = json.loads(json.dumps(meta or {}, default=float))  # plain Python values: loads with weights_only
    state = {k: v.detach().cpu().clone().as_subclass(torch.Tensor) for k, v in controller.state_dict().items()}
    atomic_torch_save({"format": FORMAT, "config": controller.config(), "state_dict": state, "plant": plant,
                       "dt": None if dt is None else float(dt), "lipnet_version": __version__, "meta": meta}, path)
    return path


@dataclass
class TrainedController:
    """A `controller.pt` read back: the controller (float32, eval mode) and what the run recorded with it."""

    controller: Controller
    plant: str  # the plant spec it was trained for ("" when none was recorded)
    dt: float | None  # the sample time it was trained at
    meta: dict  # free-form run metadata (step, optimizer, requested bound, ...)
    lipnet_version: str  # the lipnet that wrote the checkpoint
    path: Path  # the file read


def _read(path: Path) -> dict:
    if not path.exists():
        raise RunFolderError(f"no controller checkpoint at {path}; train one with `lipnet train ... --out RUN_DIR`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted or foreign file
        raise RunFolderError(f"{path} is not a readable lipnet checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise RunFolderError(f"{path} is not a lipnet controller checkpoint (format {FORMAT} expected)")
    return ckpt


def load_trained(path: str | os.PathLike) -> TrainedController:
    """The one reader of `controller.pt` (a run folder or the file): the controller, its plant spec, dt and meta."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = _read(path)
    try:
        controller = Controller.from_config(ckpt["config"])
        controller.load_state_dict(ckpt["state_dict"])
    except Exception as exc:  # noqa: BLE001 - a checkpoint whose config or weights do not make a Controller
        raise RunFolderError(f"{path}: the checkpoint does not rebuild a controller ({exc.__class__.__name__}: "
                             f"{' '.join(str(exc).split())[:300]}); retrain it with `lipnet train`") from None
    dt = ckpt.get("dt")
    return TrainedController(controller.eval(), str(ckpt.get("plant") or ""), None if dt is None else float(dt),
                             dict(ckpt.get("meta") or {}), str(ckpt.get("lipnet_version") or ""), path)


def load_controller(path: str | os.PathLike) -> Controller:
    """The trained `Controller` (float32, eval mode) from a run folder or `controller.pt`."""
    return load_trained(path).controller
