"""``<out>/manifest.json``: the state of every target of a prediction run, for resuming.

Schema (version 1), written with ``indent=2``, atomically (temp file + rename) after every change::

    {
      "version": 1,
      "targets": {
        "<tag>": {
          "state": "pending" | "running" | "done" | "failed",
          "length": 190,                  # residues
          "error": null | "message",      # why it failed (or was interrupted)
          "outputs": ["6KWC_1/6KWC_1_unrelaxed_rank_001_....pdb", ...],  # relative to <out>
          "started": null | "2025-01-31T12:00:00+00:00",                   # ISO 8601, UTC
          "finished": null | "2025-01-31T12:03:10+00:00",
          "attempts": 0                   # inference attempts (the batch runner's retries)
        }
      }
    }

Rules: the folder ``<out>/<tag>/`` appears, complete, only when the target is done, and holds a
``.done`` marker; the marker (not the manifest) is the truth when they disagree, so a manifest
lost or edited by hand is rebuilt on the next run. A target found ``running`` when a run starts
was interrupted and runs again. One process writes the manifest at a time (the process that
runs ``sparkfold predict``, or the driver of a batch runner); :class:`Manifest` serialises the
writes of its own threads.
"""

import datetime
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from sparkfold.errors import SparkfoldError
from sparkfold.io.atomic import atomic_write

__all__ = [
    "DONE_MARKER",
    "MANIFEST_NAME",
    "MANIFEST_VERSION",
    "STATES",
    "Manifest",
    "ManifestError",
    "utc_now",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: Name of the marker file inside ``<out>/<tag>/`` written last, when a target is complete.
DONE_MARKER = ".done"
STATES = ("pending", "running", "done", "failed")
_FIELDS = ("state", "length", "error", "outputs", "started", "finished", "attempts")


class ManifestError(SparkfoldError):
    """``manifest.json`` cannot be read or has an unknown layout."""


def utc_now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def _entry(length: int) -> dict:
    return {
        "state": "pending",
        "length": int(length),
        "error": None,
        "outputs": [],
        "started": None,
        "finished": None,
        "attempts": 0,
    }


class Manifest:
    """The manifest of one output folder, kept in memory and saved on every change.

    Args:
        out_dir: The run's output folder (``<out>``); the file is ``<out>/manifest.json``.
        targets: Existing entries (tag → entry dict), as :meth:`load` returns them.
    """

    def __init__(self, out_dir: str | os.PathLike, targets: dict[str, dict] | None = None):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / MANIFEST_NAME
        self.targets: dict[str, dict] = dict(targets or {})
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "Manifest":
        """The manifest of ``out_dir`` (empty when there is none yet).

        Raises:
            ManifestError: the file exists but is not a version-1 manifest.
        """
        path = Path(out_dir) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(out_dir)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(
                f"cannot read {path}: {exc}",
                fix=f"delete {path}; it is rebuilt from the finished target folders",
            ) from None
        if (
            not isinstance(data, dict)
            or data.get("version") != MANIFEST_VERSION
            or not isinstance(data.get("targets"), dict)
        ):
            raise ManifestError(
                f"{path} is not a version-{MANIFEST_VERSION} sparkfold manifest",
                fix=f"delete {path}, or use another output folder",
            )
        targets = {}
        for tag, entry in data["targets"].items():
            if not isinstance(entry, dict) or entry.get("state") not in STATES:
                raise ManifestError(
                    f"{path}: entry {tag!r} has no valid state",
                    fix=f"delete {path}; it is rebuilt from the finished target folders",
                )
            targets[tag] = {k: entry.get(k) for k in _FIELDS} | {
                "outputs": list(entry.get("outputs") or []),
                "attempts": int(entry.get("attempts") or 0),
            }
        return cls(out_dir, targets)

    def to_dict(self) -> dict:
        """The JSON document (see the module docstring)."""
        with self._lock:
            return {
                "version": MANIFEST_VERSION,
                "targets": {
                    t: dict(e, outputs=list(e["outputs"])) for t, e in self.targets.items()
                },
            }

    def state(self, tag: str) -> str | None:
        """The state of ``tag``, or None when the manifest does not list it."""
        entry = self.targets.get(tag)
        return None if entry is None else entry["state"]

    def tags(self, state: str | None = None) -> list[str]:
        """Tags in manifest order, optionally only those in ``state``."""
        return [t for t, e in self.targets.items() if state is None or e["state"] == state]

    # ------------------------------------------------------------------ writing
    def save(self) -> Path:
        """Write the manifest atomically."""
        return atomic_write(self.path, json.dumps(self.to_dict(), indent=2) + "\n")

    def sync(self, targets: Iterable) -> None:
        """Add every target (objects with ``tag`` and ``length``) and reconcile with the disk.

        A target whose ``<out>/<tag>/.done`` exists is ``done`` (outputs listed from the folder);
        one marked done without the marker, or left ``running`` by an interrupted run, becomes
        ``pending``. Entries of tags not in ``targets`` are kept as they are. Saves.
        """
        with self._lock:
            for target in targets:
                entry = self.targets.setdefault(target.tag, _entry(target.length))
                entry["length"] = int(target.length)
                folder = self.out_dir / target.tag
                if (folder / DONE_MARKER).is_file():
                    if entry["state"] != "done":
                        entry.update(state="done", error=None, outputs=self._list_outputs(folder))
                elif entry["state"] in ("done", "running"):
                    entry.update(state="pending", outputs=[], finished=None)
        self.save()

    def _list_outputs(self, folder: Path) -> list[str]:
        return sorted(
            str(p.relative_to(self.out_dir))
            for p in folder.rglob("*")
            if p.is_file() and p.name != DONE_MARKER
        )

    def mark(
        self,
        tag: str,
        state: str,
        *,
        error: str | None = None,
        outputs: Iterable[str] | None = None,
        length: int | None = None,
    ) -> None:
        """Set the state of ``tag`` (with timestamps) and save.

        ``running`` sets ``started`` and clears ``error``/``finished``; ``done`` and ``failed``
        set ``finished``; ``pending`` clears ``finished``.
        """
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; use one of {STATES}")
        with self._lock:
            entry = self.targets.setdefault(tag, _entry(length or 0))
            if length is not None:
                entry["length"] = int(length)
            entry["state"] = state
            if state == "running":
                entry.update(started=utc_now(), finished=None, error=None, outputs=[])
            elif state in ("done", "failed"):
                entry["finished"] = utc_now()
            else:
                entry["finished"] = None
            if error is not None or state == "done":
                entry["error"] = error
            if outputs is not None:
                entry["outputs"] = sorted(str(o) for o in outputs)
        self.save()
