"""Shared helpers of the search tools: errors, atomic writes, binaries, database checks."""

import glob
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sparkfold.errors import SparkfoldError

log = logging.getLogger(__name__)

__all__ = [
    "DatabaseMissingError",
    "SearchError",
    "ToolNotFoundError",
    "atomic_write",
    "check_database_file",
    "check_hhsuite_database",
    "find_binary",
    "run_tool",
]

#: Marker inside the names of temporary files; a killed run leaves at most such files, which
#: never end in ``.a3m``/``.sto``/``.hhr`` and so are never read as alignments.
PARTIAL_MARK = ".partial-"


class SearchError(SparkfoldError):
    """A search step failed (tool error, unreadable database, server failure)."""


class ToolNotFoundError(SearchError):
    """An external binary (hhblits, hhsearch) or Python package (pyhmmer) is missing."""


class DatabaseMissingError(SearchError):
    """A database is configured but its files are not where the configuration says."""


def _db_fix(name: str | None) -> str:
    if name is None:
        return "check the path"
    var = "SPARKFOLD_DB_" + name.upper()
    return (
        f"point {var} (or '{name}' under [databases] in sparkfold.toml) at the right path; "
        "`sparkfold doctor` lists the configured databases"
    )


def check_database_file(path: str | os.PathLike, *, name: str | None = None) -> Path:
    """Check that a FASTA database file exists and is readable.

    Args:
        path: The database file.
        name: Its sparkfold name (``uniref90``...), used in the error message.

    Raises:
        DatabaseMissingError: the file is absent, a directory, or unreadable.
    """
    path = Path(path)
    label = f"database {name!r}" if name else "database"
    if not path.exists():
        raise DatabaseMissingError(f"{label} file {path} does not exist", fix=_db_fix(name))
    if not path.is_file():
        raise DatabaseMissingError(
            f"{label} path {path} is not a file (a FASTA file is expected)", fix=_db_fix(name)
        )
    if not os.access(path, os.R_OK):
        raise DatabaseMissingError(f"{label} file {path} is not readable", fix="fix its permissions")
    return path


def hhsuite_database_files(prefix: str | os.PathLike) -> list[Path]:
    """The files of an HH-suite database ``prefix`` (``<prefix>_*``, e.g. ``_a3m.ffdata``)."""
    return sorted(Path(p) for p in glob.glob(glob.escape(os.fspath(prefix)) + "_*"))


def check_hhsuite_database(
    prefix: str | os.PathLike, *, name: str | None = None, required: Sequence[str] = ()
) -> Path:
    """Check that an HH-suite database prefix has its ffindex files.

    Args:
        prefix: The database prefix (``.../pdb70/pdb70``; files are ``<prefix>_a3m.ffdata``...).
        name: Its sparkfold name, used in the error message.
        required: Suffixes that must exist, e.g. ``("_cs219.ffindex",)``.

    Raises:
        DatabaseMissingError: no ``<prefix>_*`` file exists, or a required one is missing.
    """
    prefix = Path(prefix)
    label = f"database {name!r}" if name else "HH-suite database"
    files = hhsuite_database_files(prefix)
    if not files:
        raise DatabaseMissingError(
            f"{label} has no files at {prefix}_* (an HH-suite database is given by its prefix, "
            f"e.g. .../pdb70/pdb70 for pdb70_a3m.ffdata, pdb70_hhm.ffdata, pdb70_cs219.ffindex)",
            fix=_db_fix(name),
        )
    for suffix in required:
        if not Path(f"{prefix}{suffix}").is_file():
            raise DatabaseMissingError(
                f"{label} at {prefix} lacks {prefix.name}{suffix}", fix=_db_fix(name)
            )
    return prefix


_INSTALL_HINTS = {
    "hhblits": "install HH-suite (Debian/Ubuntu: apt-get install hhsuite; conda: "
    "conda install -c bioconda hhsuite)",
    "hhsearch": "install HH-suite (Debian/Ubuntu: apt-get install hhsuite; conda: "
    "conda install -c bioconda hhsuite)",
    "jackhmmer": "install HMMER (apt-get install hmmer)",
}


def find_binary(
    binary: str | os.PathLike, *, tool: str | None = None, option: str | None = None
) -> str:
    """Resolve an external tool to an executable path.

    Args:
        binary: A name looked up on ``PATH`` or a path.
        tool: The tool's name (``hhblits``), for the install hint; default the file name.
        option: The command-line option that sets it (for the error message).

    Raises:
        ToolNotFoundError: not found or not executable; the message says how to install it.
    """
    text = os.fspath(binary)
    found = shutil.which(text)
    if found is None:
        tool = tool or Path(text).name
        hint = _INSTALL_HINTS.get(tool, f"install {tool}")
        where = f" or pass its path with {option}" if option else ""
        raise ToolNotFoundError(
            f"{tool} was not found ({text!r} is not an executable on PATH)", fix=f"{hint}{where}"
        )
    return found


def run_tool(cmd: Sequence[str], *, what: str, cwd: str | os.PathLike | None = None) -> str:
    """Run an external tool; return its stdout.

    Raises:
        SearchError: the tool exits non-zero; the message has the command and its stderr tail.
    """
    log.debug("running %s", " ".join(map(str, cmd)))
    try:
        proc = subprocess.run(
            [os.fspath(c) for c in cmd], check=False, cwd=cwd, capture_output=True, text=True,
            errors="replace",
        )
    except OSError as exc:
        raise SearchError(f"{what}: cannot start {cmd[0]}: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SearchError(
            f"{what} failed (exit status {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}",
            fix="check the database files and the input sequence; run with -v for details",
        )
    return proc.stdout


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Readers never see a half-written file: a killed writer leaves at most a hidden
    ``.<name>.partial-*`` file (removed by :func:`remove_partials`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL_MARK}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def partial_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name next to ``path`` for a tool to write into (then :func:`os.replace`)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL_MARK}{os.getpid()}-", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left in ``folder`` by killed runs (whose process is gone)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        name = entry.name
        if not name.startswith(".") or PARTIAL_MARK not in name:
            continue
        try:
            pid = int(name.split(PARTIAL_MARK, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
