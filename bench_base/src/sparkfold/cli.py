"""The ``sparkfold`` command: ``sparkfold [-v] [--version] <command> ...``.

The CLI only parses arguments, builds configs and calls one library function per subcommand.
Each subcommand is a module ``sparkfold.commands.<name>`` listed in :data:`COMMANDS` and
exposing:

* ``register(subparsers) -> None``: adds its parser with ``subparsers.add_parser(name, ...)``
  and sets ``func=run`` with ``parser.set_defaults(func=run)``;
* ``run(args: argparse.Namespace) -> int``: does the work and returns the exit status.

Command modules are imported only when :func:`main` runs, and must stay cheap to import: they
import torch and the library inside ``run`` (``tests/cli/test_cli.py`` checks that
``sparkfold --help`` does not import torch).

A :class:`sparkfold.errors.SparkfoldError` raised by a command is printed as one line,
``sparkfold: error: <problem>. Fix: <fix>``, and the command exits with the error's
``exit_code`` (1); ``-v`` adds the traceback. Usage errors exit with 2, Ctrl-C with 130.
"""

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from sparkfold import __version__
from sparkfold.errors import SparkfoldError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules under ``sparkfold.commands``, in the order ``--help`` lists them.
COMMANDS = ["predict", "msa", "selftest", "doctor", "relax", "weights"]

_LOG_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)


def _add_verbose(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=default,
        help="more log output (-v: info and tracebacks, -vv: debug)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command in :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="sparkfold",
        description=(
            "AlphaFold2/OpenFold-compatible protein structure prediction with nothing to "
            "compile. Run `sparkfold doctor` first to check this machine."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sparkfold {__version__}")
    _add_verbose(parser, 0)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        module = importlib.import_module(f"sparkfold.commands.{name}")
        module.register(subparsers)
    for sub in subparsers.choices.values():
        # `-v` is also accepted after the command (`sparkfold doctor -v`); SUPPRESS keeps a
        # value given before the command when none is given after it.
        try:
            _add_verbose(sub, argparse.SUPPRESS)
        except argparse.ArgumentError:  # the command defines its own -v
            pass
    return parser


def _configure_logging(verbosity: int) -> None:
    level = _LOG_LEVELS[min(max(verbosity, 0), len(_LOG_LEVELS) - 1)]
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sparkfold`` command line.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 for a :class:`SparkfoldError` (or what the command
        returns), 2 for usage errors, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    verbosity = getattr(args, "verbose", 0) or 0
    _configure_logging(verbosity)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except SparkfoldError as exc:
        if verbosity:
            traceback.print_exc(file=sys.stderr)
        print(f"sparkfold: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sparkfold: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
