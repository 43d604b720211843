"""The maskformer command: presets and checkpoints, data, training, evaluation, prediction, export, demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import data, demo, models, predict, train


class _Parser(argparse.ArgumentParser):
    """Usage mistakes get one line (and exit code 2), like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maskformer", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for group in (models, demo, data, train, predict):  # each command group's module adds its commands
        group.add_parsers(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Like parse_args, but ``key=value`` overrides may stand anywhere among the options (argparse alone
    takes only the first contiguous group)."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides += [a for a in extra if "=" in a and not a.startswith("-")]
        extra = [a for a in extra if not ("=" in a and not a.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class _StderrHandler(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when each message comes, not when the handler was made
    (a caller, or a test capturing output, may have replaced it since)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_progress_messages() -> None:
    """The package's progress messages (its "maskformer" logger) on stderr, as plain lines."""
    logger = logging.getLogger("maskformer")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    _show_progress_messages()
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`maskformer presets | head`): stop quietly, as Unix tools do; Python's
        # recipe points stdout at devnull so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError, KeyError, RuntimeError, FloatingPointError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"maskformer: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
