"""The `lipnet` command: one subcommand per pipeline stage (see ARCHITECTURE.md).

Each subcommand lives in `lipnet.commands.<name>` with `add_arguments(parser)` and `run(args) -> int`;
the module keeps heavy imports inside `run` so that `lipnet --help` stays fast.

Error policy: bad input — a `LipnetError`, a plant spec or model that cannot be used (`plants.PlantSpecError`), an
unreadable exported model (`export.runtime.ModelError`, `export.c_build.CModelError`), an OS error — is one line on
stderr and exit 2. Anything else is a bug: exit 3 with one line, and its traceback with `LIPNET_DEBUG=1`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lipnet import __version__
from lipnet.exceptions import LipnetError

__all__ = ["main", "build_parser"]

COMMANDS = {
    "train": "train a Lipschitz-bounded controller against a plant",
    "certify": "bound the controller's Lipschitz constant and certify the closed loop",
    "export": "export a trained controller to ONNX or C99 source with proven parity",
    "hil": "hardware-in-the-loop: serve a model on a device, run the plant loop on the host",
    "simulate": "closed loop in one process (a run folder or an ONNX model against a plant)",
    "sweep": "many training runs from one grid, on Ray (local or a cluster) or locally; summary.csv and .png",
}


def _not_available(name: str):
    """A listed command whose module is not there (`COMMANDS` names every command before it is built)."""
    def run(args) -> int:
        print(f"lipnet {name}: not available yet in this version of lipnet.", file=sys.stderr)
        return 2
    return run


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="lipnet", description="Lipschitz-bounded neural controllers: train, certify, export, hil.",
        epilog="example: lipnet train --plant cartpole --out runs/cartpole")
    parser.add_argument("--version", action="version", version=f"lipnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, helptext in COMMANDS.items():
        try:
            mod = importlib.import_module(f"lipnet.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lipnet.commands.{name}":  # an import error inside the module is a bug: it surfaces
                raise
            mod = None
        p = sub.add_parser(name, help=helptext + ("" if mod else " (not available yet)"),
                           description=helptext, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=None if mod is None else mod.EXAMPLE)
        if mod is not None:
            mod.add_arguments(p)
            p.set_defaults(func=mod.run)
        else:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(func=_not_available(name), available=False)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


# Raised by modules the CLI imports only when a command needs them: an instance exists only once its module is
# loaded, so they are looked up in `sys.modules` (no import of torch or onnxruntime just to catch them).
_LAZY_INPUT_ERRORS = (("plants.errors", "PlantSpecError"), ("export.runtime", "ModelError"),
                      ("export.c_build", "CModelError"))


def _input_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean bad input (module docstring)."""
    lazy = tuple(getattr(sys.modules[module], name) for module, name in _LAZY_INPUT_ERRORS if module in sys.modules)
    return (LipnetError, OSError, *lazy)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lipnet` console script; returns the exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and getattr(args, "available", True):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"lipnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted into bad input and bugs just below
        if os.environ.get("LIPNET_DEBUG"):
            raise
        if isinstance(exc, _input_errors()):
            # Bad input (a plant spec, an option, a file) gets its message, not a traceback.
            print(f"lipnet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(f"lipnet {args.command}: internal error: {exc.__class__.__name__}: {_one_line(exc)[:300]} (a bug in "
              "lipnet: rerun "
              "with LIPNET_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
