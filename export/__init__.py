"""ONNX (and C99) export of a trained controller, parity checks, metadata and the onnxruntime session factory.

Attributes load lazily: `import export.runtime` (or `export.session`) pulls in onnxruntime and numpy only,
so the hardware-in-the-loop device agent runs on a board without torch; `export.export_controller` brings
in torch when first used.
"""

from __future__ import annotations

import importlib

__all__ = ["export_controller", "ExportReport", "export_c", "CExportReport", "read_metadata", "numpy_policy",
           "NumpyPolicy", "session", "ControllerSession", "ExportError", "ParityError", "InvalidModelError",
           "UnsupportedOperator", "ModelError", "ProviderError", "ProviderFallbackWarning"]

_WHERE = {"export_controller": "exporter", "ExportReport": "exporter", "export_c": "c_export",
          "CExportReport": "c_export", "read_metadata": "metadata",
          "numpy_policy": "reference", "NumpyPolicy": "reference", "session": "runtime",
          "ControllerSession": "runtime", "ModelError": "runtime", "ProviderError": "runtime",
          "ProviderFallbackWarning": "runtime", "ExportError": "errors", "ParityError": "errors",
          "InvalidModelError": "errors", "UnsupportedOperator": "errors"}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted([*globals(), *__all__])
