"""The `metadata_props` of an exported controller: what they hold, how they are written and read back.

Every value is stored as JSON text (strings included) so that reading it back is unambiguous; a foreign
model's non-JSON values come back as raw strings. Needs onnx and the standard library only (no torch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import InvalidModelError
from .runtime import decode_metadata  # one decoder: runtime.py must also work copied alone onto a board

__all__ = ["FORMAT", "REQUIRED_KEYS", "encode_metadata", "decode_metadata", "set_metadata", "read_metadata",
           "load_model"]

FORMAT = "lipnet-onnx/1"
# ARCHITECTURE.md's fields (ONNX model); export adds lipnet.format, lipnet.n_x, lipnet.n_u, lipnet.state_offset,
# lipnet.activation, lipnet.precision, lipnet.lipschitz_bounds, lipnet.parity, lipnet.exporter, and
# lipnet.periodic / lipnet.periodic_center (indices of the angle states and their centres; [] when none).
REQUIRED_KEYS = ("lipnet.version", "lipnet.plant", "lipnet.dt", "lipnet.lipschitz_upper", "lipnet.certificate",
                 "lipnet.state_scale", "lipnet.action_limits")


def _default(obj):
    # numpy scalars and arrays without importing numpy here.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def encode_metadata(meta: dict) -> dict[str, str]:
    """Python values to `metadata_props` strings (JSON; non-finite floats as JSON's Infinity / NaN)."""
    return {str(k): json.dumps(v, default=_default, sort_keys=True) for k, v in meta.items()}


def set_metadata(model, meta: dict) -> None:
    """Replace `model.metadata_props` entries named in `meta` (others are kept)."""
    encoded = encode_metadata(meta)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in encoded]
    del model.metadata_props[:]
    for key, value in [*kept, *sorted(encoded.items())]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def load_model(path: str | os.PathLike, check: bool = True):
    """`onnx.load` (+ `onnx.checker` when `check`) with a clear `InvalidModelError` for a bad file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"no ONNX model at {path}; export one with `lipnet export RUN_DIR --out {path.name}`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: a truncated or foreign file
        raise InvalidModelError(f"{path} is not a readable ONNX model ({exc.__class__.__name__}: "
                                f"{str(exc)[:200]}); it may be truncated or corrupted: re-export it") from None
    if len(model.graph.node) == 0 or len(model.graph.input) == 0:
        raise InvalidModelError(f"{path} holds no ONNX graph (empty or foreign file); re-export it")
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # a file cut at a field boundary parses but leaves an inconsistent graph
            raise InvalidModelError(f"{path} fails the ONNX checker ({str(exc).strip().splitlines()[0][:200]}); "
                                    "it may be truncated or corrupted: re-export it") from None
    return model


def read_metadata(path: str | os.PathLike, check: bool = True) -> dict:
    """The decoded `metadata_props` of an exported controller (all keys; lipnet's start with `lipnet.`)."""
    return decode_metadata({p.key: p.value for p in load_model(path, check=check).metadata_props})
