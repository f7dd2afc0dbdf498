"""The one exception `plants.load` and the plant constructors raise for a bad plant spec or model."""

__all__ = ["PlantSpecError"]


class PlantSpecError(ValueError):
    """A plant spec or model that cannot be used; the message names the problem and what would be valid."""
