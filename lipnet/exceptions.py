"""Exceptions of lipnet: one base, `LipnetError`, for every error lipnet raises on purpose.

Each subclasses the builtin a caller would catch (as python-control's do): `LipnetValue` and `LipnetDimension` are
`ValueError`s (a value or a shape outside what is accepted), `LipnetArgument` a `TypeError` (an argument of the wrong
kind, an unknown keyword), `RunFolderError` an `OSError`. The `lipnet` command reports a `LipnetError` (and the
plant side's `PlantSpecError`, an unreadable model, an OS error) as bad input in one line, exit 2; anything else is
a bug and reported as an internal error, exit 3.
"""

__all__ = ["LipnetError", "LipnetValue", "LipnetDimension", "LipnetArgument", "CertificationError",
           "RunFolderError", "TrainingFailed"]


class LipnetError(Exception):
    """Base class of every error lipnet raises on purpose."""


class LipnetValue(LipnetError, ValueError):
    """A value outside what lipnet accepts (an option, a setting, a number out of range); the message says what is."""


class LipnetDimension(LipnetValue):
    """Shapes or dimensions that contradict each other (plant vs controller vs config)."""


class LipnetArgument(LipnetError, TypeError):
    """An argument of the wrong kind or an unknown keyword."""


class CertificationError(LipnetError, RuntimeError):
    """A certificate could not be established soundly."""


class RunFolderError(LipnetError, OSError):
    """A run folder that is missing, not writable, or would be overwritten."""


class TrainingFailed(LipnetError, RuntimeError):
    """Training cannot produce a meaningful controller (e.g. most steps were non-finite); the message says why."""
