"""Fixtures for the search tests: synthetic sequence databases, a tiny HH-suite database and a
fake ColabFold MMseqs2 server on 127.0.0.1."""

import glob
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

AA = "ACDEFGHIKLMNPQRSTVWY"


def _mutate(rng: random.Random, seq: str, sub: float, indel: float) -> str:
    out = []
    for c in seq:
        if rng.random() < indel / 2:
            continue
        out.append(rng.choice(AA) if rng.random() < sub else c)
        if rng.random() < indel / 2:
            out.append(rng.choice(AA))
    return "".join(out)


class SyntheticDb:
    """Four protein families (ancestor + 40 mutated members each) and 200 random decoys."""

    def __init__(self, folder: Path, seed: int = 0):
        rng = random.Random(seed)
        self.ancestors = [
            "".join(rng.choice(AA) for _ in range(rng.randint(70, 110))) for _ in range(4)
        ]
        self.records: list[tuple[str, str]] = []
        for f, ancestor in enumerate(self.ancestors):
            for j in range(40):
                member = _mutate(rng, ancestor, rng.uniform(0.05, 0.55), 0.05)
                self.records.append((f"fam{f}_{j} family {f} member", member))
        for j in range(200):
            decoy = "".join(rng.choice(AA) for _ in range(rng.randint(50, 150)))
            self.records.append((f"decoy{j} random", decoy))
        self.fasta = folder / "synthetic_db.fasta"
        self.fasta.write_text("".join(f">{n}\n{s}\n" for n, s in self.records))
        self.queries = {"query0": self.ancestors[0], "query1": self.ancestors[1]}


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory) -> SyntheticDb:
    return SyntheticDb(tmp_path_factory.mktemp("syndb"))


def _cstranslate() -> str | None:
    found = shutil.which("cstranslate")
    if found and subprocess.run([found], capture_output=True, check=False).returncode != 127:
        return found
    # Debian's dispatch script under /usr/libexec/hhsuite/bin is broken; call a build directly.
    for variant in ("avx2", "sse4.1", "ssse3", "sse3", "plain"):
        path = f"/usr/libexec/hhsuite/cstranslate-{variant}"
        if os.access(path, os.X_OK):
            probe = subprocess.run([path], capture_output=True, check=False)
            if probe.returncode != 132:  # illegal instruction: CPU lacks the SIMD set
                return path
    return None


def _hh_data_dir() -> Path | None:
    for folder in ("/usr/share/hhsuite/data", "/usr/lib/hhsuite/data"):
        if Path(folder, "cs219.lib").is_file():
            return Path(folder)
    return None


@pytest.fixture(scope="session")
def hh_db(synthetic_db, tmp_path_factory) -> Path:
    """A tiny HH-suite database (prefix) built with the ffindex tools: family 0 + decoys."""
    tools = [shutil.which(t) for t in ("ffindex_from_fasta", "ffindex_apply", "hhmake")]
    cstranslate, data = _cstranslate(), _hh_data_dir()
    if not all(tools) or cstranslate is None or data is None:
        pytest.skip("HH-suite tools (ffindex_*, hhmake, cstranslate) not installed: "
                    "apt-get install hhsuite")
    folder = tmp_path_factory.mktemp("hhdb")
    entries = [r for r in synthetic_db.records if r[0].startswith("fam0_")][:16]
    entries += [r for r in synthetic_db.records if r[0].startswith("decoy")][:14]
    fasta = folder / "entries.fasta"
    fasta.write_text("".join(f">{n}\n{s}\n" for n, s in entries))
    prefix = folder / "tinydb"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [tools[0], "-s", f"{prefix}_a3m.ffdata", f"{prefix}_a3m.ffindex", fasta],
        check=True, capture_output=True,
    )
    subprocess.run(
        [tools[1], f"{prefix}_a3m.ffdata", f"{prefix}_a3m.ffindex",
         "-i", f"{prefix}_hhm.ffindex", "-d", f"{prefix}_hhm.ffdata", "--",
         tools[2], "-i", "stdin", "-o", "stdout", "-v", "0"],
        check=True, capture_output=True, env=env,
    )
    subprocess.run(
        [cstranslate, "-f", "-x", "0.3", "-c", "4", "-I", "a3m", "-i", f"{prefix}_a3m",
         "-o", f"{prefix}_cs219", "-A", data / "cs219.lib", "-D", data / "context_data.lib"],
        check=True, capture_output=True, env=env,
    )
    assert len(glob.glob(f"{prefix}_*")) == 6
    return prefix


def make_tar(files: dict[str, bytes], *, gzip: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_ffindex(entries: dict[str, str]) -> tuple[bytes, bytes]:
    """(ffdata, ffindex) of an HH-suite ffindex database; entries NUL-terminated, sorted."""
    data, index, offset = b"", [], 0
    for name in sorted(entries):
        blob = entries[name].encode() + b"\0"
        index.append(f"{name}\t{offset}\t{len(blob)}\n")
        data += blob
        offset += len(blob)
    return data, "".join(index).encode()


DROP = "drop"  # a scripted response that closes the connection without replying


class FakeServer:
    """A scripted ColabFold-protocol server.

    ``routes`` maps a route key (``submit``, ``status``, ``download``, ``template``) to a list
    of responses ``(status, body)`` or :data:`DROP`; each request consumes the first one and
    the last one repeats. ``requests`` records ``(method, path, headers, form)``.
    """

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.requests: list[tuple[str, str, dict, dict]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                path = self.path
                with server.lock:
                    server.requests.append((method, path, dict(self.headers), form))
                key = server.route(method, path)
                reply = server.next_reply(key)
                if reply == DROP or reply is None:
                    self.close_connection = True
                    return
                status, payload = reply
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @staticmethod
    def route(method: str, path: str) -> str:
        if method == "POST" and path == "/ticket/msa":
            return "submit"
        if path.startswith("/ticket/"):
            return "status"
        if path.startswith("/result/download/"):
            return "download"
        if path.startswith("/template/"):
            return "template"
        return "other"

    def next_reply(self, key: str):
        with self.lock:
            replies = self.routes.get(key)
            if not replies:
                return (404, b"not found")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def count(self, key: str) -> int:
        return sum(1 for m, p, _, _ in self.requests if self.route(m, p) == key)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def archives():
    """Helpers for server tests: ``make_tar``, ``make_ffindex`` and the ``DROP`` reply."""
    import types

    return types.SimpleNamespace(make_tar=make_tar, make_ffindex=make_ffindex, DROP=DROP)
