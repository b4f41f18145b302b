"""Atomic file writes: a reader never sees a half-written output file.

Every file sparkfold hands to a user goes through :func:`atomic_write`: the data are written to a
temporary file in the destination directory, flushed to disk, then renamed over the destination
with :func:`os.replace` (atomic on POSIX and Windows when both paths are on one file system).
"""

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + rename).

    Args:
        path: Destination file. Its parent directory is created if missing.
        data: File content; ``str`` is encoded as UTF-8 (no newline translation).
        mode: Permission bits of the new file, set with ``chmod`` (the umask is not applied).

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``data`` is neither ``bytes`` nor ``str``.
        OSError: the directory cannot be created or written; no partial file is left behind.
    """
    if isinstance(data, str):
        payload = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        payload = bytes(data)
    else:
        raise TypeError(f"atomic_write needs bytes or str, got {type(data).__name__}")
    dest = Path(os.fspath(path))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest
