"""The exceptions of the plant side: `PlantSpecError` for a bad plant spec or model, raised by `plants.load` and
the plant constructors, and its subclass `PlantRuntimeError` for a user's plant code that fails while it runs."""

from __future__ import annotations

__all__ = ["PlantSpecError", "PlantRuntimeError"]


class PlantSpecError(ValueError):
    """A plant spec or model that cannot be used; the message names the problem and what would be valid."""


class PlantRuntimeError(PlantSpecError):
    """A user's plant code raised while it ran; the message names the plant, the error and (in a rollout) the step.

    The user's original exception is the `__cause__` (the CLI shows its traceback with LIPNET_DEBUG=1).
    """

    step: int | None = None  # the rollout or episode step, once a loop that knows it has added it
    advice: str = ""  # the tail of the message that says what to change (kept last)

    def at_step(self, step: int) -> PlantRuntimeError:
        """The same error with `at step {step}` added before the advice (raise it `from` this error's cause)."""
        head = str(self).removesuffix(self.advice) if self.advice else str(self)
        err = PlantRuntimeError(f"{head} at step {step}{self.advice}")
        err.step, err.advice = step, self.advice
        return err
