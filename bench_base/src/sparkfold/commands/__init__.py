"""Subcommands of the ``sparkfold`` command line, one module each.

Each module ``sparkfold.commands.<name>`` (listed in :data:`sparkfold.cli.COMMANDS`) exposes
``register(subparsers)``, which adds its parser and sets ``func=run``, and
``run(args) -> int``. Modules stay cheap to import: heavy imports (torch, the model, the data
pipeline) go inside ``run``. A command parses its arguments, builds the configs and calls one
library function; user-facing failures are raised as :class:`sparkfold.errors.SparkfoldError`.
"""
