"""Exceptions of lipnet; each subclasses the builtin a caller would catch."""

__all__ = ["LipnetError", "LipnetDimension", "LipnetArgument", "CertificationError", "RunFolderError",
           "TrainingFailed"]


class LipnetError(Exception):
    """Base class of every error lipnet raises on purpose."""


class LipnetDimension(LipnetError, ValueError):
    """Shapes or dimensions that contradict each other (plant vs controller vs config)."""


class LipnetArgument(LipnetError, TypeError):
    """An argument of the wrong kind or an unknown keyword."""


class CertificationError(LipnetError, RuntimeError):
    """A certificate could not be established soundly."""


class RunFolderError(LipnetError, OSError):
    """A run folder that is missing, not writable, or would be overwritten."""


class TrainingFailed(LipnetError, RuntimeError):
    """Training cannot produce a meaningful controller (e.g. most steps were non-finite); the message says why."""
