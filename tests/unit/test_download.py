"""Weights download against a local HTTP server on 127.0.0.1 (never the internet).

The server runs in a daemon thread for one test, answers a handful of requests, and is shut down
by the fixture (or by a 60 s failsafe timer). It serves small weights files built from the tiny
model config, supports ``Range`` requests, and can cut a transfer short or ignore ranges.
"""

import argparse
import hashlib
import io
import json
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from sparkfold.config import ModelConfig
from sparkfold.weights import af2_npz
from sparkfold.weights import download as dl
from sparkfold.weights.loader import expected_state_dict_shapes

TINY = ModelConfig.tiny(templates=False)
TINY_TEMPL = ModelConfig.tiny(templates=True)


def _state_dict(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) for k, s in expected_state_dict_shapes(config).items()}


def _pt_bytes(config: ModelConfig, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    torch.save(_state_dict(config, seed), buf)
    return buf.getvalue()


def _npz_bytes(config: ModelConfig, seed: int = 0) -> bytes:
    arrays = af2_npz.state_dict_to_npz(_state_dict(config, seed), af2_npz.build_npz_table(config))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


# --------------------------------------------------------------------------- local server
class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> bytes sent before dropping the first full GET
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        st = self.state
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append((self.path, rng))
            data = st.files.get(self.path)
            cut = st.cut.pop(self.path, None) if rng is None else None
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not st.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    state = _State()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    failsafe = threading.Timer(60.0, httpd.shutdown)
    failsafe.daemon = True
    failsafe.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        failsafe.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _openfold_source(base: str, config: ModelConfig = TINY, mirrors=("/of/{file}",)) -> dl.WeightSource:
    return dl.WeightSource(
        name="openfold", description="test", license="test",
        urls=tuple(base + m for m in mirrors), archive=None,
        files=(dl.WeightFile("finetuning_no_templ_ptm_1.pt", preset=config),
               dl.WeightFile("LICENSE.openfold", member="LICENSE")),
        model_files={"model_3_ptm": "finetuning_no_templ_ptm_1.pt"},
        extras=("LICENSE.openfold",),
    )


def _alphafold_source(base: str) -> dl.WeightSource:
    return dl.WeightSource(
        name="alphafold", description="test", license="test",
        urls=(base + "/af/params.tar",), archive="params.tar",
        files=(dl.WeightFile("params_model_3_ptm.npz", preset=TINY),
               dl.WeightFile("params_model_4_ptm.npz", preset=TINY),
               dl.WeightFile("LICENSE.alphafold", member="LICENSE")),
        model_files={"model_3_ptm": "params_model_3_ptm.npz", "model_4_ptm": "params_model_4_ptm.npz"},
        extras=("LICENSE.alphafold",),
    )


_FAST = {"retry_wait": 0.01, "timeout": 10.0}


# --------------------------------------------------------------------------- tests
def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    payload = _pt_bytes(TINY)
    server.files["/of/finetuning_no_templ_ptm_1.pt"] = payload
    server.files["/of/LICENSE"] = b"licence text\n"
    server.cut["/of/finetuning_no_templ_ptm_1.pt"] = 100_000
    src = _openfold_source(server.base)
    paths = dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=False, **_FAST)
    path = paths["model_3_ptm"]
    assert path.read_bytes() == payload
    pt_requests = [r for p, r in server.requests if p.endswith(".pt")]
    assert pt_requests == [None, "bytes=100000-"]
    record = dl.read_checksums(tmp_path)[path.name]
    assert record["sha256"] == hashlib.sha256(payload).hexdigest() and record["size"] == len(payload)
    assert (tmp_path / "LICENSE.openfold").read_bytes() == b"licence text\n"
    assert not list((tmp_path / ".downloads").iterdir())  # no .part / temp files left
    assert dl.verify_checksum(path) is True
    # present and recorded: a second call uses no network
    before = len(server.requests)
    dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=True)
    assert len(server.requests) == before


def test_resume_from_part_file_of_an_earlier_run(server, tmp_path):
    payload = _pt_bytes(TINY, seed=1)
    server.files["/of/x.pt"] = payload
    part = tmp_path / "x.pt.part"
    part.write_bytes(payload[:50_000])
    dl.download_file(server.base + "/of/x.pt", tmp_path / "x.pt", offline=False, **_FAST)
    assert (tmp_path / "x.pt").read_bytes() == payload and not part.exists()
    assert server.requests == [("/of/x.pt", "bytes=50000-")]


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    payload = b"0123456789" * 1000
    server.files["/f.bin"] = payload
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"garbage-garbage")
    dl.download_file(server.base + "/f.bin", tmp_path / "f.bin", offline=False, **_FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_gives_up_after_retries_and_keeps_the_part(server, tmp_path):
    payload = b"x" * 300_000
    server.files["/big"] = payload
    server.cut["/big"] = 1000
    with pytest.raises(dl.WeightsDownloadError, match="1 attempts") as err:
        dl.download_file(server.base + "/big", tmp_path / "big", retries=0, offline=False, **_FAST)
    assert "again to resume" in str(err.value)
    assert (tmp_path / "big.part").stat().st_size == 1000 and not (tmp_path / "big").exists()


def test_archive_is_extracted_verified_and_deleted(server, tmp_path):
    npz = _npz_bytes(TINY)
    server.files["/af/params.tar"] = _tar_bytes({
        "./params_model_3_ptm.npz": npz, "params_model_4_ptm.npz": _npz_bytes(TINY, seed=4),
        "params_model_1_multimer_v3.npz": b"not needed", "LICENSE": b"CC BY 4.0\n"})
    paths = dl.download_weights(_alphafold_source(server.base), ["model_3_ptm"],
                                directory=tmp_path, offline=False, **_FAST)
    assert paths == {"model_3_ptm": tmp_path / "params_model_3_ptm.npz"}
    assert paths["model_3_ptm"].read_bytes() == npz
    # the whole archive was fetched, so the other model's file was extracted too
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".downloads", "LICENSE.alphafold", "checksums.json", "params_model_3_ptm.npz",
        "params_model_4_ptm.npz"]
    assert not list((tmp_path / ".downloads").iterdir())  # tar and temporaries removed
    assert set(dl.read_checksums(tmp_path)) == {
        "LICENSE.alphafold", "params_model_3_ptm.npz", "params_model_4_ptm.npz"}
    assert [p for p, _ in server.requests] == ["/af/params.tar"]


@pytest.mark.parametrize("bad", ["../escape.npz", "/abs/escape.npz", "link"])
def test_bad_archive_is_rejected_before_writing(server, tmp_path, bad):
    members = {"params_model_3_ptm.npz": _npz_bytes(TINY), "LICENSE": b"x"}
    links = {}
    if bad == "link":
        links["params_model_4_ptm.npz"] = "/etc/passwd"
    else:
        members["params_model_4_ptm.npz"] = _npz_bytes(TINY)
        members[bad] = b"evil"
    server.files["/af/params.tar"] = _tar_bytes(members, links)
    target = tmp_path / "params"
    with pytest.raises(dl.UnsafeArchiveError, match="outside the target|a link"):
        dl.download_weights(_alphafold_source(server.base), ["model_3_ptm"], directory=target,
                            offline=False, **_FAST)
    assert not (tmp_path / "escape.npz").exists() and not (target / "params_model_3_ptm.npz").exists()
    staged = [p.name for p in (target / ".downloads").iterdir()]
    assert staged == ["params.tar"]  # nothing was extracted


def test_safe_extract_rejects_special_files(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("fifo")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    archive = tmp_path / "a.tar"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(dl.UnsafeArchiveError, match="special file"):
        dl.safe_extract(archive, tmp_path / "out")
    archive.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(dl.WeightsDownloadError, match="not a readable tar"):
        dl.safe_extract(archive, tmp_path / "out")


def test_wrong_structure_is_rejected_and_not_installed(server, tmp_path):
    server.files["/of/finetuning_no_templ_ptm_1.pt"] = _pt_bytes(TINY_TEMPL)  # template weights
    server.files["/of/LICENSE"] = b"x"
    with pytest.raises(dl.WeightsVerificationError, match="not the expected file") as err:
        dl.download_weights(_openfold_source(server.base), ["model_3_ptm"], directory=tmp_path,
                            offline=False, **_FAST)
    assert "template" in str(err.value) and "--force" in str(err.value)
    assert not (tmp_path / "finetuning_no_templ_ptm_1.pt").exists()
    assert "finetuning_no_templ_ptm_1.pt" not in dl.read_checksums(tmp_path)
    # not a checkpoint at all
    server.files["/of/finetuning_no_templ_ptm_1.pt"] = b"<html>error page</html>"
    with pytest.raises(dl.WeightsVerificationError, match="not a readable weights file"):
        dl.download_weights(_openfold_source(server.base), ["model_3_ptm"], directory=tmp_path,
                            offline=False, **_FAST)


def test_sha_mismatch_after_download_names_file_and_fix(server, tmp_path):
    server.files["/of/finetuning_no_templ_ptm_1.pt"] = _pt_bytes(TINY)
    server.files["/of/LICENSE"] = b"x"
    path = dl.download_weights(_openfold_source(server.base), ["model_3_ptm"], directory=tmp_path,
                               offline=False, **_FAST)["model_3_ptm"]
    assert dl.resolve_weights("openfold", "model_3_ptm", directory=tmp_path) == path
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(dl.ChecksumMismatchError) as err:
        dl.resolve_weights("openfold", "model_3_ptm", directory=tmp_path)
    message = str(err.value)
    assert path.name in message and "sha256" in message
    assert "sparkfold weights download openfold --force" in message
    path.write_bytes(bytes(data[:-10]))
    with pytest.raises(dl.ChecksumMismatchError, match="bytes but"):
        dl.resolve_weights("openfold", "model_3_ptm", directory=tmp_path)
    assert dl.resolve_weights("openfold", "model_3_ptm", directory=tmp_path, verify=False) == path
    # a forced download repairs it
    dl.download_weights(_openfold_source(server.base), ["model_3_ptm"], directory=tmp_path,
                        force=True, offline=False, **_FAST)
    assert dl.verify_checksum(path)


def test_connection_refused_is_a_clear_error(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens on this port now
    src = _openfold_source(f"http://127.0.0.1:{port}")
    with pytest.raises(dl.WeightsDownloadError) as err:
        dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=False, retries=0,
                            **_FAST)
    message = str(err.value)
    assert "connection refused" in message and "--url" in message and str(tmp_path) in message


def test_offline_mode_never_touches_the_network(server, tmp_path, monkeypatch):
    server.files["/of/finetuning_no_templ_ptm_1.pt"] = _pt_bytes(TINY)
    src = _openfold_source(server.base)
    with pytest.raises(dl.OfflineError, match="network access is off") as err:
        dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=True)
    assert "finetuning_no_templ_ptm_1.pt" in str(err.value)
    monkeypatch.setenv(dl.OFFLINE_ENV, "1")
    assert dl.is_offline()
    with pytest.raises(dl.OfflineError):
        dl.download_weights(src, ["model_3_ptm"], directory=tmp_path)
    with pytest.raises(dl.OfflineError):
        dl.download_file(server.base + "/of/finetuning_no_templ_ptm_1.pt", tmp_path / "f")
    assert server.requests == []


def test_http_404_falls_back_to_the_next_mirror(server, tmp_path):
    server.files["/mirror/finetuning_no_templ_ptm_1.pt"] = _pt_bytes(TINY)
    server.files["/mirror/LICENSE"] = b"x"
    src = _openfold_source(server.base, mirrors=("/gone/{file}", "/mirror/{file}"))
    path = dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=False,
                               **_FAST)["model_3_ptm"]
    assert path.exists()
    asked = [p for p, _ in server.requests]
    assert asked.index("/gone/finetuning_no_templ_ptm_1.pt") + 1 == \
        asked.index("/mirror/finetuning_no_templ_ptm_1.pt")
    # --url replaces the mirrors (a base URL without {file} works too)
    other = tmp_path / "other"
    dl.download_weights(_openfold_source("http://127.0.0.1:9"), ["model_3_ptm"], directory=other,
                        url=server.base + "/mirror", offline=False, **_FAST)
    assert (other / "finetuning_no_templ_ptm_1.pt").exists()


def test_file_placed_by_hand_is_verified_then_recorded(tmp_path):
    (tmp_path / "finetuning_no_templ_ptm_1.pt").write_bytes(_pt_bytes(TINY))
    (tmp_path / "LICENSE.openfold").write_bytes(b"x")
    src = _openfold_source("http://127.0.0.1:9")
    dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=True)
    assert dl.read_checksums(tmp_path)["finetuning_no_templ_ptm_1.pt"]["url"] == "local file"
    (tmp_path / "finetuning_no_templ_ptm_1.pt").write_bytes(_pt_bytes(TINY_TEMPL))
    (tmp_path / "checksums.json").unlink()
    with pytest.raises(dl.WeightsVerificationError, match="parameter layout"):
        dl.download_weights(src, ["model_3_ptm"], directory=tmp_path, offline=True)


def test_resolve_weights_paths_and_missing(tmp_path):
    f = tmp_path / "my.pt"
    f.write_bytes(b"x")
    assert dl.resolve_weights(f, "model_1") == f
    af = tmp_path / "af"
    af.mkdir()
    (af / "params_model_2_ptm.npz").write_bytes(b"x")
    assert dl.resolve_weights(str(af), "model_2_ptm") == af / "params_model_2_ptm.npz"
    assert dl.resolve_weights(str(af), "finetuning_ptm") == af / "params_model_2_ptm.npz"  # alias
    with pytest.raises(dl.WeightsNotFoundError, match="params_model_1.npz"):
        dl.resolve_weights(af, "model_1")
    with pytest.raises(dl.WeightsNotFoundError, match="sparkfold weights download alphafold"):
        dl.resolve_weights("alphafold", "model_1_ptm", directory=tmp_path / "empty")
    with pytest.raises(dl.WeightsNotFoundError, match="neither"):
        dl.resolve_weights(tmp_path / "nope", "model_1")
    with pytest.raises(dl.SparkfoldError, match="Multimer"):
        dl.resolve_weights("alphafold", "model_1_multimer_v3")


def test_source_tables_fit_their_presets():
    for src in dl.SOURCES.values():
        assert set(dl.ALL_PRESETS) <= set(src.model_files)
        for preset, name in src.model_files.items():
            wf = src.file(name)
            # the file's layout preset has the same parameters as every preset mapped to it
            assert expected_state_dict_shapes(ModelConfig.from_preset(preset)) == \
                expected_state_dict_shapes(ModelConfig.from_preset(wf.preset))
        for extra in src.extras:
            assert src.file(extra).preset is None
    af = dl.SOURCES["alphafold"]
    monomer = sum(af.file(af.model_files[p]).size for p in dl.ALL_PRESETS)
    assert monomer == 3_722_722_174  # weights.md: sum of the 10 monomer npz
    assert dl.SOURCES["openfold"].model_files["model_3_ptm"] == "finetuning_no_templ_ptm_1.pt"


def test_cli_list_and_offline_download(tmp_path, monkeypatch, capsys):
    from sparkfold.commands import weights as cmd

    monkeypatch.setenv("SPARKFOLD_CACHE", str(tmp_path))
    parser = argparse.ArgumentParser(prog="sparkfold")
    cmd.register(parser.add_subparsers(dest="command"))
    params = tmp_path / "params"
    params.mkdir()
    (params / "finetuning_ptm_2.pt").write_bytes(b"x")
    args = parser.parse_args(["weights", "list", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["directory"] == str(params)
    rows = {r["name"]: r for s in report["sources"] for r in s["files"]}
    assert rows["finetuning_ptm_2.pt"]["present"] and rows["finetuning_ptm_2.pt"]["presets"] == ["model_1_ptm"]
    assert not rows["params_model_1.npz"]["present"]
    args = parser.parse_args(["weights", "list"])
    assert args.func(args) == 0
    assert "sparkfold weights download alphafold" in capsys.readouterr().out
    args = parser.parse_args(["weights", "download", "openfold", "--offline", "--models", "model_3"])
    with pytest.raises(dl.OfflineError, match="finetuning_no_templ_2.pt"):
        args.func(args)
    args = parser.parse_args(["weights"])
    assert args.func(args) == 2
