"""User-facing errors.

Every problem a user can fix (bad input, missing database, unreadable config, missing optional
dependency) is raised as a :class:`SparkfoldError` or a subclass. The message says what is wrong
*and* how to fix it; the ``sparkfold`` command prints it as one line (no traceback unless ``-v``)
and exits non-zero. Programming errors stay ordinary Python exceptions.

Other modules subclass :class:`SparkfoldError` for their own failures, e.g.::

    class DatabaseNotFoundError(SparkfoldError):
        pass

    raise DatabaseNotFoundError(
        "uniref90 is not configured",
        fix="set SPARKFOLD_DB_UNIREF90=/path/to/uniref90.fasta or add it to sparkfold.toml",
    )
"""


class SparkfoldError(Exception):
    """An error the user can fix: the message names the problem and the fix.

    Args:
        message: What is wrong (one sentence, no trailing period needed).
        fix: Optional remedy, appended to the message as ``"<message>. Fix: <fix>"``. The
            remedy may also be written straight into ``message``.

    Attributes:
        problem: ``message`` as given.
        fix: The remedy or ``None``.
        exit_code: The process exit status the CLI uses for this error (1; subclasses may
            change it. argparse's usage errors use 2).
    """

    exit_code: int = 1

    def __init__(self, message: str, *, fix: str | None = None):
        self.problem = message
        self.fix = fix
        text = message if fix is None else f"{message.rstrip('.')}. Fix: {fix}"
        super().__init__(text)


class ConfigError(SparkfoldError, ValueError):
    """A configuration value is invalid: ``sparkfold.toml``, ``SPARKFOLD_*`` variables, or a
    :mod:`sparkfold.config` dataclass field."""
