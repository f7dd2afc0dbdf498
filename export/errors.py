"""Errors of the export stage; each is a `LipnetError`, so `lipnet export` prints it cleanly and exits 2."""

from __future__ import annotations

from lipnet.exceptions import LipnetError

from .runtime import ModelError

__all__ = ["ExportError", "ParityError", "InvalidModelError", "UnsupportedOperator"]


class ExportError(LipnetError, RuntimeError):
    """The controller could not be exported (missing checkpoint, unwritable destination, exporter failure)."""


class ParityError(ExportError):
    """onnxruntime and torch disagree beyond the tolerance: the model was not written."""


class InvalidModelError(ExportError, ModelError):
    """An ONNX file that is not a valid lipnet controller (unreadable, truncated, wrong signature)."""


class UnsupportedOperator(InvalidModelError):
    """The numpy reference met an operator it does not implement."""
