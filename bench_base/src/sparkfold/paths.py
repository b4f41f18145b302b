"""Where sparkfold keeps its files and finds the sequence databases.

* Cache directory (weights, compiled-kernel caches, downloads): ``$SPARKFOLD_CACHE`` if set,
  else the platform's user cache directory for ``"sparkfold"`` (``~/.cache/sparkfold`` on
  Linux). Weights live in ``<cache>/params``.
* Configuration file: ``sparkfold.toml`` in the platform's user configuration directory
  (``~/.config/sparkfold/sparkfold.toml`` on Linux), or the file named by
  ``$SPARKFOLD_CONFIG``. Only the ``[databases]`` table is read here::

      [databases]
      root = "/data/alphafold"                      # optional base for relative paths
      uniref90 = "uniref90/uniref90.fasta"
      mgnify = "mgnify/mgy_clusters_2022_05.fa"
      bfd = "bfd/bfd_metaclust_clu_complete_id30_c90_final_seq.sorted_opt"   # HH-suite prefix
      uniref30 = "uniref30/UniRef30_2021_03"                                # HH-suite prefix
      pdb70 = "pdb70/pdb70"                                                 # HH-suite prefix
      pdb_mmcif = "pdb_mmcif/mmcif_files"                                   # directory
      obsolete_pdbs = "pdb_mmcif/obsolete.dat"

  Relative paths are resolved against ``root`` when given, else against the directory of the
  configuration file; ``~`` is expanded.
* ``SPARKFOLD_DB_<NAME>`` environment variables (``SPARKFOLD_DB_UNIREF90=/data/uniref90.fasta``)
  override the file, one database at a time; an empty value removes that database. Relative
  paths in variables are resolved against the current directory.

Nothing here creates directories or checks that database files exist: :func:`ensure_cache_dir`
creates the cache, ``sparkfold doctor`` reports missing files, and the MSA code raises when it
needs a database that is absent.
"""

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparkfold.errors import ConfigError, SparkfoldError

log = logging.getLogger(__name__)

__all__ = [
    "DATABASE_NAMES",
    "DatabaseNotConfiguredError",
    "DatabaseSetting",
    "cache_dir",
    "config_dir",
    "config_file",
    "configured_databases",
    "database_path",
    "database_settings",
    "ensure_cache_dir",
    "load_config",
    "weights_dir",
]

APP_NAME = "sparkfold"
CACHE_ENV = "SPARKFOLD_CACHE"
CONFIG_ENV = "SPARKFOLD_CONFIG"
DB_ENV_PREFIX = "SPARKFOLD_DB_"

#: Every database name sparkfold knows, with what it is (OpenFold's ``--<name>_database_path``).
#: ``uniclust30`` is the older (2018) alternative to ``uniref30`` for the same HHblits slot.
DATABASE_NAMES: tuple[str, ...] = (
    "uniref90",       # FASTA, jackhmmer
    "mgnify",         # FASTA, jackhmmer
    "bfd",            # HH-suite database prefix, hhblits (full_dbs)
    "small_bfd",      # FASTA, jackhmmer (reduced_dbs, used when bfd is absent)
    "uniref30",       # HH-suite database prefix, hhblits with bfd
    "uniclust30",     # HH-suite database prefix, older alternative to uniref30
    "pdb70",          # HH-suite database prefix, hhsearch templates (monomer)
    "pdb_seqres",     # FASTA, hmmsearch templates (multimer)
    "uniprot",        # FASTA, jackhmmer (multimer pairing)
    "pdb_mmcif",      # directory of mmCIF files (template structures)
    "obsolete_pdbs",  # text file of obsolete → replacement PDB ids
)

_ROOT_KEY = "root"


class DatabaseNotConfiguredError(SparkfoldError):
    """A database the run needs has no configured path."""


@dataclass(frozen=True)
class DatabaseSetting:
    """One configured database.

    Attributes:
        name: One of :data:`DATABASE_NAMES`.
        path: Absolute path (a file, a directory or an HH-suite prefix; not checked).
        source: Where it was set: ``"env"`` (``SPARKFOLD_DB_<NAME>``) or ``"config"``.
        origin: The variable name or the configuration file it came from.
    """

    name: str
    path: Path
    source: Literal["env", "config"]
    origin: str


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The cache directory (not created): ``$SPARKFOLD_CACHE`` or the user cache dir.

    Args:
        env: Environment to read instead of ``os.environ`` (for tests).
    """
    value = _environ(env).get(CACHE_ENV, "").strip()
    if value:
        return Path(value).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def ensure_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The cache directory, created if needed.

    Raises:
        SparkfoldError: if it cannot be created (the message names the directory and the fix).
    """
    path = cache_dir(env)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparkfoldError(
            f"cannot create the cache directory {path}: {exc.strerror or exc}",
            fix=f"set {CACHE_ENV} to a writable directory",
        ) from exc
    return path


def weights_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where downloaded model weights live: ``<cache>/params`` (not created)."""
    return cache_dir(env) / "params"


def config_dir() -> Path:
    """The user configuration directory for sparkfold (not created)."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def config_file(env: Mapping[str, str] | None = None) -> Path:
    """The configuration file path (it may not exist): ``$SPARKFOLD_CONFIG`` or
    ``<config dir>/sparkfold.toml``."""
    value = _environ(env).get(CONFIG_ENV, "").strip()
    if value:
        return Path(value).expanduser().absolute()
    return config_dir() / "sparkfold.toml"


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> dict:
    """Read the configuration file.

    Args:
        path: File to read; default :func:`config_file`.
        env: Environment to read instead of ``os.environ``.

    Returns:
        The parsed TOML document, or ``{}`` when the file does not exist.

    Raises:
        ConfigError: the file exists but cannot be read or is not valid TOML; the message gives
            the file, the line and column, and the fix.
    """
    path = Path(path) if path is not None else config_file(env)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if path == config_file(env) and _environ(env).get(CONFIG_ENV, "").strip():
            raise ConfigError(
                f"{CONFIG_ENV} names {path}, which does not exist",
                fix=f"create the file or unset {CONFIG_ENV}",
            ) from None
        return {}
    except IsADirectoryError:
        raise ConfigError(
            f"configuration file {path} is a directory", fix="point it at a sparkfold.toml file"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration file {path}: {exc.strerror or exc}",
            fix="check its permissions (it must be readable by you)",
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"configuration file {path} is not UTF-8 text (bad byte at offset {exc.start})",
            fix="save it as UTF-8",
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"configuration file {path} is not valid TOML: {exc}",
            fix='correct that line; paths are quoted strings, e.g. uniref90 = "/data/u90.fasta"',
        ) from exc


def _config_databases(doc: dict, path: Path) -> dict[str, DatabaseSetting]:
    table = doc.get("databases", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"in {path}: 'databases' must be a table", fix="write it as a [databases] section"
        )
    root_value = table.get(_ROOT_KEY)
    if root_value is not None and not isinstance(root_value, str):
        raise ConfigError(
            f"in {path}: [databases] root must be a string path, got {root_value!r}",
            fix='quote it, e.g. root = "/data/alphafold"',
        )
    base = Path(root_value).expanduser() if root_value else path.parent
    if not base.is_absolute():
        base = path.parent / base
    out = {}
    for key, value in table.items():
        if key == _ROOT_KEY:
            continue
        if key not in DATABASE_NAMES:
            known = ", ".join(DATABASE_NAMES)
            raise ConfigError(
                f"in {path}: unknown database {key!r} in [databases]",
                fix=f"use one of: {known} (or {_ROOT_KEY})",
            )
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"in {path}: [databases] {key} must be a non-empty string path, got {value!r}",
                fix=f'quote it, e.g. {key} = "/data/{key}"',
            )
        p = Path(value).expanduser()
        out[key] = DatabaseSetting(key, (base / p).absolute(), "config", str(path))
    return out


def database_settings(
    config_path: Path | str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, DatabaseSetting]:
    """Every configured database, file settings overridden by ``SPARKFOLD_DB_<NAME>``.

    Args:
        config_path: Configuration file; default :func:`config_file`.
        env: Environment to read instead of ``os.environ``.

    Returns:
        ``{name: DatabaseSetting}`` in :data:`DATABASE_NAMES` order, configured names only.

    Raises:
        ConfigError: the file is unreadable or invalid, or names an unknown database.
    """
    environ = _environ(env)
    path = Path(config_path) if config_path is not None else config_file(env)
    found = _config_databases(load_config(path, env), path.absolute())
    for name in DATABASE_NAMES:
        var = DB_ENV_PREFIX + name.upper()
        if var not in environ:
            continue
        value = environ[var].strip()
        if not value:
            found.pop(name, None)
            continue
        found[name] = DatabaseSetting(name, Path(value).expanduser().absolute(), "env", var)
    known_vars = {DB_ENV_PREFIX + n.upper() for n in DATABASE_NAMES}
    for var in environ:
        if var.startswith(DB_ENV_PREFIX) and var not in known_vars:
            log.warning("ignoring %s: not a known database (known: %s)", var,
                        ", ".join(DATABASE_NAMES))
    return {n: found[n] for n in DATABASE_NAMES if n in found}


def configured_databases(
    config_path: Path | str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Path]:
    """``{name: path}`` for every configured database (see :func:`database_settings`)."""
    return {n: s.path for n, s in database_settings(config_path, env).items()}


def database_path(
    name: str, config_path: Path | str | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The configured path of database ``name``.

    Raises:
        ValueError: ``name`` is not in :data:`DATABASE_NAMES` (a programming error).
        DatabaseNotConfiguredError: it is not configured; the message says how to set it.
        ConfigError: the configuration file is invalid.
    """
    if name not in DATABASE_NAMES:
        raise ValueError(f"unknown database {name!r}; known: {', '.join(DATABASE_NAMES)}")
    settings = database_settings(config_path, env)
    if name not in settings:
        cfg = Path(config_path) if config_path is not None else config_file(env)
        raise DatabaseNotConfiguredError(
            f"database {name!r} is not configured",
            fix=(
                f"set {DB_ENV_PREFIX}{name.upper()}=/path/to/{name} or add "
                f'{name} = "/path/to/{name}" under [databases] in {cfg}'
            ),
        )
    return settings[name].path
