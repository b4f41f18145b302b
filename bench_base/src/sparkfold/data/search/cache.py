"""Reuse of finished searches: a per-target manifest of completed steps.

Each target folder ``<out>/<tag>/`` holds a hidden manifest, ``.sparkfold_search.json``:
``{"version": 1, "steps": {step: {"key": ..., "files": {name: {"size": ..., "mtime_ns": ...}}}}}``.
A step (one database search, the template search, a server job) is reused when its key
matches and every file it wrote is still there with the recorded size and mtime.

The key is a SHA-256 over the query sequence, the tool settings and the identity of every
database involved (resolved path + size + mtime of each file; for an HH-suite prefix, of each
``<prefix>_*`` file), so a changed sequence, flag or database update reruns the step.

Crash safety: output files are written to a temporary name and renamed; the manifest entry of
a step is written (also atomically) only after all its files are in place. A run killed
midway leaves either no output or an output without a manifest entry, which the next run
recomputes; it never trusts a half-written file.
"""

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from sparkfold.data.search._util import atomic_write, hhsuite_database_files

log = logging.getLogger(__name__)

__all__ = ["MANIFEST_NAME", "TargetManifest", "database_identity", "step_key"]

MANIFEST_NAME = ".sparkfold_search.json"
_VERSION = 1


def _file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def database_identity(path: str | os.PathLike, *, hhsuite: bool = False) -> list[dict]:
    """Identity of a database for the cache key: resolved path, size and mtime of its files.

    Args:
        path: A FASTA file, or an HH-suite prefix when ``hhsuite`` is true.
        hhsuite: Treat ``path`` as a prefix and describe every ``<prefix>_*`` file.
    """
    path = Path(path)
    if hhsuite:
        return [_file_identity(p) for p in hhsuite_database_files(path)]
    return [_file_identity(path)]


def step_key(sequence: str, step: str, settings: Mapping) -> str:
    """SHA-256 key of one search step: the sequence, the step name and its settings."""
    doc = json.dumps(
        {"sequence": sequence, "step": step, "settings": settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()


def _stat(path: Path) -> dict | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class TargetManifest:
    """The completed-steps manifest of one target folder.

    Args:
        folder: The target folder ``<out>/<tag>``.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.steps: dict[str, dict] = {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable search manifest %s: %s", self.path, exc)
            return
        if isinstance(doc, dict) and doc.get("version") == _VERSION:
            steps = doc.get("steps")
            if isinstance(steps, dict):
                self.steps = {k: v for k, v in steps.items() if isinstance(v, dict)}

    def is_fresh(self, step: str, key: str) -> bool:
        """True when ``step`` finished with ``key`` and its files are unchanged."""
        entry = self.steps.get(step)
        if not entry or entry.get("key") != key:
            return False
        files = entry.get("files")
        if not isinstance(files, dict):
            return False
        return all(_stat(self.folder / name) == info for name, info in files.items())

    def files(self, step: str) -> list[str]:
        """The file names recorded for ``step`` (empty when unknown)."""
        entry = self.steps.get(step) or {}
        return list((entry.get("files") or {}).keys())

    def record(self, step: str, key: str, files: Iterable[str]) -> None:
        """Mark ``step`` complete with ``files`` (already written) and save the manifest."""
        infos = {}
        for name in files:
            info = _stat(self.folder / name)
            if info is None:
                raise FileNotFoundError(f"{self.folder / name} was not written")
            infos[name] = info
        self.steps[step] = {"key": key, "files": infos}
        self._save()

    def forget(self, step: str, *, delete_files: bool = True) -> None:
        """Drop ``step`` from the manifest (first, so a crash never leaves a stale entry),
        then delete the files it recorded."""
        entry = self.steps.pop(step, None)
        if entry is None:
            return
        self._save()
        if delete_files:
            for name in entry.get("files") or {}:
                (self.folder / name).unlink(missing_ok=True)

    def _save(self) -> None:
        doc = {"version": _VERSION, "steps": self.steps}
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
