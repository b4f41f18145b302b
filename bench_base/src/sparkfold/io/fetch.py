"""Fetching files: resumable HTTP downloads and safe tar extraction.

Used for the model weights (:mod:`sparkfold.weights.download`) and usable for any archive a
server returns. Standard library only (``urllib``, ``tarfile``) plus ``tqdm`` for progress bars.

* :func:`download_file` streams into ``<dest>.part``, resumes with ``Range: bytes=<n>-`` (also
  across runs), retries short transfers, checks ``Content-Length`` and renames onto ``dest``.
* :func:`safe_extract` checks every tar member first: absolute paths, ``..`` components, links
  and special files reject the whole archive before anything is written.
* ``SPARKFOLD_OFFLINE=1`` (or ``offline=True``) forbids network access with a clear error.
"""

import http.client
import logging
import os
import re
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from sparkfold import __version__
from sparkfold.errors import SparkfoldError

log = logging.getLogger(__name__)

__all__ = [
    "OFFLINE_ENV",
    "DownloadError",
    "OfflineError",
    "UnsafeArchiveError",
    "download_file",
    "human_size",
    "is_offline",
    "safe_extract",
]

OFFLINE_ENV = "SPARKFOLD_OFFLINE"
_CHUNK = 1 << 20
_USER_AGENT = f"sparkfold/{__version__}"


class DownloadError(SparkfoldError):
    """A download failed (network, HTTP error, short transfer)."""


class OfflineError(DownloadError):
    """A download was needed but network access is switched off."""


class UnsafeArchiveError(SparkfoldError):
    """An archive holds a member that could write outside the target directory."""


def is_offline(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``SPARKFOLD_OFFLINE`` asks for no network access (``1``, ``true``, ``yes``, ``on``)."""
    value = (os.environ if env is None else env).get(OFFLINE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def human_size(num_bytes: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"


# --------------------------------------------------------------------------- archives
def _check_member(member: tarfile.TarInfo, archive: str) -> None:
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UnsafeArchiveError(
            f"archive {archive} holds a member that points outside the target directory: {name!r}",
            fix="the archive is not what was expected; delete it and check where it came from")
    if member.isdir():
        return
    if not member.isreg():
        what = "a link" if (member.issym() or member.islnk()) else "a special file"
        raise UnsafeArchiveError(
            f"archive {archive} holds {what} ({name!r}); only regular files are accepted",
            fix="the archive is not what was expected; delete it and check where it came from")


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike,
                 members: Mapping[str, str] | None = None) -> list[Path]:
    """Extract regular files of a tar archive after checking every member.

    Every member is checked first; any absolute path, ``..`` component, link or special file
    rejects the whole archive before anything is written. Files are written to a temporary name
    and renamed into place.

    Args:
        archive: Tar file (any compression ``tarfile`` reads).
        target: Directory to extract into (created if needed).
        members: ``{member base name: file name in target}`` to extract only these (members are
            matched by their base name, so ``./params/x.npz`` matches ``x.npz``); default every
            regular file under its base name (the directory structure is flattened).

    Returns:
        The written paths.

    Raises:
        UnsafeArchiveError: a member could escape ``target``, or is a link/special file.
        DownloadError: the archive is unreadable or lacks a requested member.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            infos = tar.getmembers()
            for info in infos:
                _check_member(info, str(archive))
            wanted = dict(members) if members is not None else {
                Path(i.name).name: Path(i.name).name for i in infos if i.isreg()}
            by_base = {Path(i.name).name: i for i in infos if i.isreg()}
            absent = sorted(set(wanted) - set(by_base))
            if absent:
                raise DownloadError(
                    f"archive {archive} lacks {', '.join(absent)}",
                    fix="delete the archive and download it again")
            for base, dest_name in wanted.items():
                if Path(dest_name).name != dest_name or dest_name in ("", ".", ".."):
                    raise UnsafeArchiveError(f"refusing to extract to {dest_name!r}")
                dest = target / dest_name
                tmp = target / f".{dest_name}.extract"
                with tar.extractfile(by_base[base]) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                os.replace(tmp, dest)
                written.append(dest)
    except tarfile.TarError as exc:
        raise DownloadError(f"archive {archive} is not a readable tar file ({exc})",
                            fix="delete it and download it again") from None
    return written


# --------------------------------------------------------------------------- HTTP
def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _network_error(url: str, exc: BaseException, dest: Path) -> DownloadError:
    host = urlsplit(url).netloc or url
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError) or "refused" in str(reason).lower():
        what = "connection refused"
    elif isinstance(reason, (socket.gaierror,)):
        what = "host name not found (no network or DNS?)"
    elif isinstance(reason, (TimeoutError, socket.timeout)):
        what = "timed out"
    else:
        what = str(reason)
    return DownloadError(
        f"cannot download {url}: {host}: {what}",
        fix=(f"check the network connection and proxy settings (HTTPS_PROXY); or fetch {url} "
             f"another way and put it at {dest}"))


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_size: int | None = None,
    retries: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 30.0,
    progress: bool = False,
    offline: bool | None = None,
    opener: Callable[[str, int, float], object] = _open,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest + ".part"``, resuming interrupted transfers.

    An existing ``.part`` file is continued with ``Range: bytes=<size>-``; a server that answers
    200 instead of 206 restarts the file. A transfer shorter than ``Content-Length`` is retried
    (resuming) up to ``retries`` times. The completed file is renamed onto ``dest``.

    Args:
        url: HTTP(S) URL; redirects are followed.
        dest: Final path.
        expected_size: Published size, compared with the result (mismatch logged as a warning).
        retries: Extra attempts after a failed or short transfer.
        retry_wait: Seconds before the first retry (doubled each time).
        timeout: Socket timeout in seconds.
        progress: Show a tqdm progress bar on stderr.
        offline: Refuse network access (default: ``SPARKFOLD_OFFLINE``).
        opener: ``(url, start_byte, timeout) -> response``; replaceable in tests.

    Returns:
        ``dest``.

    Raises:
        OfflineError: offline mode.
        DownloadError: unreachable host, HTTP error, or still incomplete after retries.
    """
    dest = Path(dest)
    if is_offline() if offline is None else offline:
        raise OfflineError(
            f"{dest.name} is needed but network access is off ({OFFLINE_ENV}=1)",
            fix=f"unset {OFFLINE_ENV} to download it from {url}, or copy the file to {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        start = part.stat().st_size if part.exists() else 0
        try:
            _transfer(url, part, start, timeout, progress, opener, dest)
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"download of {url} failed after {retries + 1} attempts: {exc}; "
                    f"{human_size(part.stat().st_size if part.exists() else 0)} kept in {part}",
                    fix="run the same command again to resume") from None
            wait = retry_wait * 2 ** (attempt - 1)
            log.warning("download of %s interrupted (%s); resuming in %.1f s", url, exc, wait)
            time.sleep(wait)
            continue
        break
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        log.warning("%s: %d bytes downloaded, %d published; checking its content", dest.name,
                    size, expected_size)
    os.replace(part, dest)
    return dest


class _Retryable(Exception):
    pass


def _transfer(url, part: Path, start: int, timeout: float, progress: bool, opener, dest: Path) -> int:
    try:
        response = opener(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            # Range not satisfiable: the .part is complete already, or longer than the file.
            match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == start:
                return start
            part.unlink(missing_ok=True)
            raise _Retryable("server refused the resume range; restarting") from None
        if exc.code in (408, 429, 500, 502, 503, 504):
            raise _Retryable(f"HTTP {exc.code}") from None
        raise DownloadError(
            f"cannot download {url}: HTTP {exc.code} {exc.reason}",
            fix="the file may have moved: check the URL") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout, ConnectionResetError)) and start:
            raise _Retryable(str(reason)) from None
        raise _network_error(url, exc, dest) from None
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None and length.isdigit() else None
        if status == 206:
            match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", "") or "")
            if not match or int(match.group(1)) != start:
                part.unlink(missing_ok=True)
                raise _Retryable("server answered a different range; restarting")
            mode, offset = "ab", start
        else:
            mode, offset = "wb", 0  # server ignored the Range header: start over
        total = offset + length if length is not None else None
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), disable=not progress, leave=True)
        received = offset
        try:
            with open(part, mode) as out:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                        raise _Retryable(f"connection lost after {human_size(received)}: "
                                         f"{type(exc).__name__}") from None
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if total is not None and received != total:
        raise _Retryable(f"got {human_size(received)} of {human_size(total)}")
    return received
