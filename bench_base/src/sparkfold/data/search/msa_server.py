"""Client of a ColabFold MMseqs2 MSA server (opt-in: it sends the sequences to that server).

Protocol (shared/spec/msa_server.md): ``POST {url}/ticket/msa`` with form fields ``q`` (FASTA
of the unique sequences, numbered from 101) and ``mode``; poll ``GET {url}/ticket/{id}`` until
``COMPLETE``; ``GET {url}/result/download/{id}`` returns a gzip'd tar with ``uniref.a3m``,
``bfd.mgnify30.metaeuk30.smag30.a3m`` (mode ``env``) and ``pdb70.m8`` (template hits); each
a3m holds every query, blocks separated by NUL bytes. ``GET {url}/template/{ids}`` returns a
tar with an HH-suite database (``pdb70_a3m.ffdata``...) and the hits' mmCIF files.

DEVIATION from the ColabFold client, to be a better-behaved and bounded client:

* polling backs off (``poll_interval`` growing by 1.5x up to ``max_poll_interval``, with
  jitter) instead of a fixed 5-10 s, and gives up after ``max_wait`` seconds;
* rate limiting (``RATELIMIT``/``UNKNOWN`` on submit, HTTP 429) is retried with doubling
  waits until ``max_wait``, then raised with a message saying what to do;
* transport errors, HTTP 5xx, non-JSON replies and malformed archives are retried
  ``max_retries`` times per request (ColabFold: forever in some loops);
* archives are read member by member: only regular files with relative names inside the
  destination are accepted (no absolute paths, ``..``, links or devices), total size capped.

Nothing here runs unless the caller asks for it; :func:`sparkfold.data.search.run_search`
only builds a client when ``mode="server"``.
"""

import http.client
import io
import json
import logging
import random
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sparkfold.data.search._util import SearchError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SERVER_URL",
    "ENV_A3M",
    "UNIREF_A3M",
    "MalformedArchiveError",
    "MsaServerClient",
    "MsaServerError",
    "RateLimitError",
    "ServerResult",
    "UnsafeArchiveError",
    "read_archive",
    "safe_extract",
    "server_mode",
    "split_multi_a3m",
]

DEFAULT_SERVER_URL = "https://api.colabfold.com"
UNIREF_A3M = "uniref.a3m"
ENV_A3M = "bfd.mgnify30.metaeuk30.smag30.a3m"
TEMPLATE_HITS_M8 = "pdb70.m8"
MAX_TEMPLATE_HITS = 20
FIRST_QUERY_NUMBER = 101

_ERROR_MESSAGE = (
    "the MSA server reported an error for this job (status ERROR)",
    (
        "check that the input is a valid protein sequence; if it is, try again in an hour, "
        "or use --msa-mode local"
    ),
)


class MsaServerError(SearchError):
    """The MSA server failed, refused the job or could not be reached."""


class RateLimitError(MsaServerError):
    """The MSA server kept rate-limiting the client past the waiting limit."""


class MalformedArchiveError(MsaServerError):
    """A result archive is not a valid gzip'd tar or lacks the expected members."""


class UnsafeArchiveError(MalformedArchiveError):
    """An archive member is a link/device or its name would escape the destination folder."""


def server_mode(*, use_env: bool = True, use_filter: bool = True) -> str:
    """The ``mode`` form value of ``ticket/msa`` (ColabFold's): env, all, env-nofilter, nofilter."""
    if use_filter:
        return "env" if use_env else "all"
    return "env-nofilter" if use_env else "nofilter"


def _member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or ".." in path.parts or "\\" in name:
        raise UnsafeArchiveError(f"archive member {name!r} escapes the destination folder")
    parts = [p for p in path.parts if p != "."]
    if not parts:
        raise UnsafeArchiveError(f"archive member {name!r} has an empty name")
    return PurePosixPath(*parts)


def _iter_members(data: bytes, max_bytes: int):
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for member in archive:
                if member.isdir():
                    _member_path(member.name)
                    continue
                if not member.isreg():
                    raise UnsafeArchiveError(
                        f"archive member {member.name!r} is not a regular file "
                        "(links and devices are refused)"
                    )
                path = _member_path(member.name)
                total += member.size
                if total > max_bytes:
                    raise MalformedArchiveError(
                        f"archive is larger than the {max_bytes} byte limit"
                    )
                handle = archive.extractfile(member)
                yield path, handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise MalformedArchiveError(f"the server's archive is not a valid tar.gz: {exc}") from exc


def read_archive(data: bytes, *, max_bytes: int = 4 << 30) -> dict[str, bytes]:
    """The regular files of a (gzip'd) tar archive, ``{relative name: content}``.

    Raises:
        MalformedArchiveError: not a tar, truncated, over ``max_bytes``, or a member that is a
            link/device or whose name is absolute or contains ``..``.
    """
    return {str(path): content for path, content in _iter_members(data, max_bytes)}


def safe_extract(data: bytes, dest: str | Path, *, max_bytes: int = 4 << 30) -> list[Path]:
    """Extract a (gzip'd) tar archive into ``dest`` safely (see :func:`read_archive`).

    Every member is validated before anything is written.

    Returns:
        The written files.
    """
    files = read_archive(data, max_bytes=max_bytes)
    dest = Path(dest)
    written = []
    for name, content in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(target)
    return written


def split_multi_a3m(text: str) -> dict[int, str]:
    """Split a server a3m (one block per query, NUL-separated) into ``{query number: a3m}``.

    Raises:
        MalformedArchiveError: a block does not start with a numeric ``>NNN`` query header.
    """
    blocks = {}
    for chunk in text.split("\0"):
        chunk = chunk.strip("\n\r ")
        if not chunk:
            continue
        first = chunk.split("\n", 1)[0]
        try:
            number = int(first[1:].split()[0]) if first.startswith(">") else None
        except (ValueError, IndexError):
            number = None
        if number is None:
            raise MalformedArchiveError(
                f"server a3m block starts with {first[:40]!r}, not a query number header"
            )
        blocks[number] = blocks.get(number, "") + chunk + "\n"
    return blocks


def parse_m8_targets(text: str, *, max_hits: int = MAX_TEMPLATE_HITS) -> dict[int, list[str]]:
    """Template hit ids per query number from ``pdb70.m8`` (file order, first ``max_hits``)."""
    hits: dict[int, list[str]] = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) < 2:
            continue
        try:
            number = int(cols[0])
        except ValueError:
            continue
        targets = hits.setdefault(number, [])
        if cols[1] not in targets and len(targets) < max_hits:
            targets.append(cols[1])
    return hits


@dataclass
class ServerResult:
    """The parsed result of one server job.

    Attributes:
        numbers: Query number per input sequence (same order as given).
        a3m: ``{query number: {file name: a3m text}}`` (``uniref.a3m``, and the env a3m).
        template_hits: ``{query number: [pdb id_chain, ...]}`` from ``pdb70.m8``.
    """

    numbers: list[int]
    a3m: dict[int, dict[str, str]] = field(default_factory=dict)
    template_hits: dict[int, list[str]] = field(default_factory=dict)


_TRANSPORT_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    OSError,
)


class MsaServerClient:
    """A bounded, polite client of a ColabFold MMseqs2 server.

    Args:
        url: Server base URL (default the public ColabFold server); paths are appended.
        user_agent: User-Agent header; default ``sparkfold/<version>`` plus ``email``.
        email: Contact address added to the User-Agent, as the server operators ask.
        timeout: Socket timeout per request, seconds.
        max_retries: Retries per request after transport errors, HTTP 5xx, non-JSON replies
            or malformed archives.
        poll_interval: First wait between status polls (and retry backoff base), seconds.
        max_poll_interval: Longest wait between polls.
        rate_limit_wait: First wait after a rate-limit reply; doubles up to 10 minutes.
        max_wait: Give up (raise) after waiting this long for a job or a rate limit, seconds.
        sleep: Sleep function (tests pass a fast one).
        rng: Random source for jitter.
    """

    def __init__(
        self,
        url: str = DEFAULT_SERVER_URL,
        *,
        user_agent: str | None = None,
        email: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        rate_limit_wait: float = 10.0,
        max_wait: float = 3 * 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise MsaServerError(
                f"MSA server URL {url!r} is not an http(s) URL",
                fix=f"pass e.g. --server-url {DEFAULT_SERVER_URL}",
            )
        from sparkfold import __version__

        self.url = url.rstrip("/")
        agent = user_agent or f"sparkfold/{__version__}"
        self.user_agent = f"{agent} {email}" if email and not user_agent else agent
        self.timeout = timeout
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.rate_limit_wait = rate_limit_wait
        self.max_wait = max_wait
        self._sleep = sleep
        self._rng = rng or random.Random()

    # -- HTTP ---------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        self._sleep(seconds * (1.0 + 0.2 * self._rng.random()))

    def _once(self, method: str, path: str, form: dict | None) -> tuple[int, bytes]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"User-Agent": self.user_agent}
        )
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            return exc.code, body

    def _request(
        self, method: str, path: str, *, form: dict | None = None,
        parse: Callable[[bytes], object] | None = None,
    ) -> object:
        """One logical request: retried on transport errors, 5xx and bad bodies; 429 waits."""
        failures = 0
        rate_waited = 0.0
        rate_wait = self.rate_limit_wait
        while True:
            problem = None
            archive_problem = False
            try:
                status, body = self._once(method, path, form)
            except _TRANSPORT_ERRORS as exc:
                problem = f"cannot reach the MSA server at {self.url}: {exc}"
                status, body = None, b""
            if status == 429:
                if rate_waited >= self.max_wait:
                    raise RateLimitError(
                        f"the MSA server at {self.url} rate-limited every request for "
                        f"{rate_waited:.0f} s (HTTP 429)",
                        fix="wait and rerun (results already fetched are kept), submit from "
                        "one machine only, or use --msa-mode local",
                    )
                log.warning("MSA server rate limit (HTTP 429); waiting %.0f s", rate_wait)
                self._wait(rate_wait)
                rate_waited += rate_wait
                rate_wait = min(rate_wait * 2, 600.0)
                continue
            if status is not None and status >= 500:
                problem = f"the MSA server at {self.url} answered HTTP {status} for {path}"
            elif status is not None and status >= 400:
                text = body[:200].decode("utf-8", "replace").strip()
                raise MsaServerError(
                    f"the MSA server at {self.url} refused {method} {path}: HTTP {status} {text}",
                    fix="check --server-url; if the server is fine, the input may be invalid",
                )
            elif status is not None:
                if parse is None:
                    return body
                try:
                    return parse(body)
                except UnsafeArchiveError:
                    raise  # unsafe content is not a transfer glitch: do not retry
                except MalformedArchiveError as exc:
                    problem, archive_problem = str(exc), True
                except ValueError as exc:
                    problem = f"the MSA server at {self.url} sent an unreadable reply: {exc}"
            failures += 1
            if failures > self.max_retries:
                error = MalformedArchiveError if archive_problem else MsaServerError
                raise error(
                    f"{problem} (gave up after {failures} attempts)",
                    fix="check the network and --server-url, or try again later",
                )
            wait = min(self.poll_interval * 2 ** (failures - 1), self.max_poll_interval)
            log.warning("%s; retrying in %.0f s (%d/%d)", problem, wait, failures, self.max_retries)
            self._wait(wait)

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({body[:60]!r})") from exc
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")  # noqa: TRY004
        return value

    # -- protocol -----------------------------------------------------------------------------

    def submit(self, sequences: Sequence[str], *, mode: str = "env") -> str:
        """Submit an unpaired MSA job; return its ticket id (waits out rate limits)."""
        query = "".join(
            f">{FIRST_QUERY_NUMBER + i}\n{seq}\n" for i, seq in enumerate(sequences)
        )
        waited = 0.0
        wait = self.rate_limit_wait
        while True:
            ticket = self._request("POST", "/ticket/msa", form={"q": query, "mode": mode},
                                   parse=self._json)
            status = ticket.get("status")
            if status in ("RATELIMIT", "UNKNOWN"):
                if waited >= self.max_wait:
                    raise RateLimitError(
                        f"the MSA server at {self.url} kept answering {status} for "
                        f"{waited:.0f} s ({ticket.get('reason', 'no reason given')})",
                        fix="wait and rerun, submit from one machine only, host your own "
                        "server (--server-url), or use --msa-mode local",
                    )
                log.warning("MSA server: %s on submit; waiting %.0f s", status, wait)
                self._wait(wait)
                waited += wait
                wait = min(wait * 2, 600.0)
                continue
            if status == "ERROR":
                raise MsaServerError(_ERROR_MESSAGE[0], fix=_ERROR_MESSAGE[1])
            if status == "MAINTENANCE":
                raise MsaServerError(
                    "the MSA server is undergoing maintenance",
                    fix="try again in a few minutes, or use --msa-mode local",
                )
            ticket_id = ticket.get("id")
            if not isinstance(ticket_id, str) or not ticket_id:
                raise MsaServerError(f"the MSA server's ticket has no id: {ticket!r}")
            return ticket_id

    def wait(self, ticket_id: str, *, progress: Callable[[str], None] | None = None) -> None:
        """Poll a ticket until COMPLETE (backing off); raise on ERROR or after ``max_wait``."""
        waited = 0.0
        interval = self.poll_interval
        path = "/ticket/" + urllib.parse.quote(ticket_id, safe="")
        while True:
            ticket = self._request("GET", path, parse=self._json)
            status = ticket.get("status")
            if progress is not None:
                progress(f"job {ticket_id[:8]}: {status} ({waited:.0f} s)")
            if status == "COMPLETE":
                return
            if status == "ERROR":
                raise MsaServerError(_ERROR_MESSAGE[0], fix=_ERROR_MESSAGE[1])
            if status == "MAINTENANCE":
                raise MsaServerError(
                    "the MSA server is undergoing maintenance",
                    fix="try again in a few minutes, or use --msa-mode local",
                )
            if waited >= self.max_wait:
                raise MsaServerError(
                    f"the MSA server job {ticket_id} is still {status} after {waited:.0f} s",
                    fix="rerun later (the same job is picked up again), or use --msa-mode local",
                )
            self._wait(interval)
            waited += interval
            interval = min(interval * 1.5, self.max_poll_interval)

    def download(self, ticket_id: str) -> dict[str, bytes]:
        """Download and read a finished job's archive (retried if truncated/malformed)."""
        path = "/result/download/" + urllib.parse.quote(ticket_id, safe="")
        return self._request("GET", path, parse=read_archive)

    def fetch_templates(self, ids: Sequence[str]) -> bytes:
        """Download the template archive for up to 20 ``pdbid_chain`` ids (validated, not
        extracted)."""
        ids = list(ids)[:MAX_TEMPLATE_HITS]
        path = "/template/" + ",".join(urllib.parse.quote(i, safe="") for i in ids)

        def check(body: bytes) -> bytes:
            read_archive(body)
            return body

        return self._request("GET", path, parse=check)

    def search(
        self,
        sequences: Sequence[str],
        *,
        use_env: bool = True,
        use_filter: bool = True,
        templates: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> ServerResult:
        """Submit, wait, download and split a job for ``sequences`` (duplicates sent once).

        Returns:
            A :class:`ServerResult`; ``numbers[i]`` is the query number of ``sequences[i]``.
        """
        unique = list(dict.fromkeys(sequences))
        numbers = [FIRST_QUERY_NUMBER + unique.index(s) for s in sequences]
        mode = server_mode(use_env=use_env, use_filter=use_filter)
        if progress is not None:
            progress(f"submitting {len(unique)} sequence(s) to {self.url} (mode {mode})")
        ticket_id = self.submit(unique, mode=mode)
        self.wait(ticket_id, progress=progress)
        files = self.download(ticket_id)
        result = ServerResult(numbers=numbers)
        wanted = [UNIREF_A3M] + ([ENV_A3M] if use_env else [])
        for name in wanted:
            if name not in files:
                raise MalformedArchiveError(
                    f"the server's result archive has no {name} (members: {sorted(files)})"
                )
            try:
                text = files[name].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedArchiveError(f"{name} in the server's archive is not text") from exc
            for number, block in split_multi_a3m(text).items():
                result.a3m.setdefault(number, {})[name] = block
        missing = sorted(set(numbers) - set(result.a3m))
        if missing:
            raise MalformedArchiveError(f"the server's result has no alignment for queries {missing}")
        if templates:
            m8 = files.get(TEMPLATE_HITS_M8, b"").decode("utf-8", "replace")
            result.template_hits = parse_m8_targets(m8)
        return result
