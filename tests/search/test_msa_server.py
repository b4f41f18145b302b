"""The MMseqs2 server client against a scripted fake server on 127.0.0.1.

The client's sleep is replaced by a recorder, so waits cost no time; every loop is bounded by
max_retries / max_wait and stops by itself.
"""

import shutil

import pytest

from sparkfold.data.parsers import parse_a3m, parse_hhr
from sparkfold.data.search import (
    MalformedArchiveError,
    MsaServerClient,
    MsaServerError,
    RateLimitError,
    UnsafeArchiveError,
    run_search,
)
from sparkfold.data.search.msa_server import ENV_A3M, UNIREF_A3M, safe_extract, split_multi_a3m

SEQ_A = "MKTAYIAKQRQISFVKSHFSRQ"
SEQ_B = "GSHMLEDPVDAFQLAL"
TICKET = "A" * 38


def _a3m_blocks(seqs, tag):
    blocks = []
    for i, seq in enumerate(seqs):
        hit = seq[:3] + "x" + seq[3:-1] + "-" if tag == "UniRef100" else "-" + seq[1:]
        blocks.append(f">{101 + i}\n{seq}\n>{tag}_hit{i}\t99\t0.9\t1E-10\t0\t5\t5\t0\t5\t5\n{hit}\n")
    return "\0".join(blocks) + "\0"


@pytest.fixture(autouse=True)
def _helpers(archives):
    global make_tar, make_ffindex, DROP
    make_tar, make_ffindex, DROP = archives.make_tar, archives.make_ffindex, archives.DROP


make_tar = make_ffindex = DROP = None  # set by the _helpers fixture (conftest helpers)


def _result_tar(seqs, m8=""):
    files = {
        UNIREF_A3M: _a3m_blocks(seqs, "UniRef100").encode(),
        ENV_A3M: _a3m_blocks(seqs, "env").encode(),
        "pdb70.m8": m8.encode(),
        "msa.sh": b"#!/bin/sh\n",
    }
    return make_tar(files)


def _client(server, **kwargs):
    waits = []
    options = {"poll_interval": 1.0, "max_poll_interval": 8.0, "rate_limit_wait": 2.0,
                   "max_wait": 60.0, "max_retries": 3, "timeout": 5.0, "sleep": waits.append,
                   "email": "test@example.org"}
    options.update(kwargs)
    client = MsaServerClient(server.url, **options)
    return client, waits


def _script_success(server, seqs, m8=""):
    server.routes = {
        "submit": [(200, {"id": TICKET, "status": "PENDING"})],
        "status": [(200, {"id": TICKET, "status": "PENDING"}),
                   (200, {"id": TICKET, "status": "RUNNING"}),
                   (200, {"id": TICKET, "status": "COMPLETE"})],
        "download": [(200, _result_tar(seqs, m8))],
    }


def test_success_with_queue_and_poll(fake_server):
    _script_success(fake_server, [SEQ_A, SEQ_B])
    client, waits = _client(fake_server)
    result = client.search([SEQ_A, SEQ_B, SEQ_A])
    assert result.numbers == [101, 102, 101]  # duplicates sent once
    submit = fake_server.requests[0]
    assert submit[1] == "/ticket/msa"
    assert submit[3] == {"q": f">101\n{SEQ_A}\n>102\n{SEQ_B}\n", "mode": "env"}
    assert submit[2]["User-Agent"].startswith("sparkfold/")
    assert "test@example.org" in submit[2]["User-Agent"]
    assert fake_server.count("status") == 3
    assert waits[0] >= 1.0 and waits[1] > waits[0]  # backoff grows
    for number, seq in [(101, SEQ_A), (102, SEQ_B)]:
        for name in (UNIREF_A3M, ENV_A3M):
            msa = parse_a3m(result.a3m[number][name])
            assert msa.sequences[0] == seq and len(msa) == 2
            assert "\0" not in result.a3m[number][name]


def test_rate_limit_status_then_success(fake_server):
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["submit"] = [
        (200, {"status": "RATELIMIT", "reason": "too many"}),
        (200, {"status": "UNKNOWN"}),
        (200, {"id": TICKET, "status": "COMPLETE"}),
    ]
    client, waits = _client(fake_server)
    client.search([SEQ_A])
    assert fake_server.count("submit") == 3
    assert waits[:2] == pytest.approx([2.0, 4.0], rel=0.25)  # doubling, with jitter


def test_http_429_is_waited_out(fake_server):
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["submit"] = [(429, b"slow down"), (200, {"id": TICKET, "status": "COMPLETE"})]
    client, _ = _client(fake_server)
    client.search([SEQ_A])
    assert fake_server.count("submit") == 2


def test_persistent_rate_limit_gives_up(fake_server):
    fake_server.routes = {"submit": [(200, {"status": "RATELIMIT"})]}
    client, _ = _client(fake_server, max_wait=30.0)
    with pytest.raises(RateLimitError, match="RATELIMIT"):
        client.search([SEQ_A])
    assert 3 <= fake_server.count("submit") <= 6


def test_error_status_raises(fake_server):
    fake_server.routes = {
        "submit": [(200, {"id": TICKET, "status": "RUNNING"})],
        "status": [(200, {"id": TICKET, "status": "ERROR"})],
    }
    client, _ = _client(fake_server)
    with pytest.raises(MsaServerError, match="status ERROR"):
        client.search([SEQ_A])


def test_job_that_never_finishes_times_out(fake_server):
    fake_server.routes = {
        "submit": [(200, {"id": TICKET, "status": "PENDING"})],
        "status": [(200, {"id": TICKET, "status": "RUNNING"})],
    }
    client, waits = _client(fake_server, max_wait=40.0)
    with pytest.raises(MsaServerError, match="still RUNNING"):
        client.search([SEQ_A])
    assert sum(waits) < 80


def test_server_errors_and_non_json_are_retried(fake_server):
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["submit"] = [
        (502, b"<html>bad gateway</html>"),
        (200, b"<html>not json</html>"),
        (200, {"id": TICKET, "status": "COMPLETE"}),
    ]
    client, _ = _client(fake_server)
    client.search([SEQ_A])
    assert fake_server.count("submit") == 3


def test_persistent_server_error_gives_up(fake_server):
    fake_server.routes = {"submit": [(503, b"unavailable")]}
    client, _ = _client(fake_server, max_retries=2)
    with pytest.raises(MsaServerError, match="HTTP 503"):
        client.search([SEQ_A])
    assert fake_server.count("submit") == 3


def test_client_error_is_not_retried(fake_server):
    fake_server.routes = {"submit": [(400, b"bad query")]}
    client, _ = _client(fake_server)
    with pytest.raises(MsaServerError, match="HTTP 400 bad query"):
        client.search([SEQ_A])
    assert fake_server.count("submit") == 1


def test_dropped_connections_are_retried(fake_server):
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["status"] = [DROP, DROP, (200, {"id": TICKET, "status": "COMPLETE"})]
    fake_server.routes["download"] = [DROP, (200, _result_tar([SEQ_A]))]
    client, _ = _client(fake_server)
    result = client.search([SEQ_A])
    assert parse_a3m(result.a3m[101][UNIREF_A3M]).sequences[0] == SEQ_A
    assert fake_server.count("status") == 3 and fake_server.count("download") == 2


def test_always_dropping_server_gives_up(fake_server):
    fake_server.routes = {"submit": [DROP]}
    client, _ = _client(fake_server, max_retries=2)
    with pytest.raises(MsaServerError, match="cannot reach"):
        client.search([SEQ_A])
    assert fake_server.count("submit") == 3


def test_malformed_tar_is_retried_then_reported(fake_server):
    good = _result_tar([SEQ_A])
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["download"] = [(200, good[: len(good) // 2]), (200, good)]
    client, _ = _client(fake_server)
    client.search([SEQ_A])
    assert fake_server.count("download") == 2

    fake_server.requests.clear()
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["download"] = [(200, b"this is not a tar archive")]
    with pytest.raises(MalformedArchiveError, match="not a valid tar"):
        client.search([SEQ_A])
    assert fake_server.count("download") == 4


def test_archive_without_alignments_is_malformed(fake_server):
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["download"] = [(200, make_tar({"msa.sh": b"x"}))]
    client, _ = _client(fake_server)
    with pytest.raises(MalformedArchiveError, match="uniref.a3m"):
        client.search([SEQ_A])


@pytest.mark.parametrize("name", ["../escape.a3m", "/abs/path.a3m", "a/../../b"])
def test_unsafe_member_names_are_refused(tmp_path, name):
    data = make_tar({name: b"x"})
    with pytest.raises(UnsafeArchiveError):
        safe_extract(data, tmp_path / "dest")
    assert not (tmp_path / "escape.a3m").exists() and not (tmp_path / "dest").exists()


def test_links_are_refused(tmp_path, fake_server):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("uniref.a3m")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        safe_extract(buffer.getvalue(), tmp_path)
    # Served as a job result, unsafe content is refused at once, not retried.
    _script_success(fake_server, [SEQ_A])
    fake_server.routes["download"] = [(200, buffer.getvalue())]
    client, _ = _client(fake_server)
    with pytest.raises(UnsafeArchiveError):
        client.search([SEQ_A])
    assert fake_server.count("download") == 1


def test_split_multi_a3m_rejects_non_numeric_header():
    with pytest.raises(MalformedArchiveError):
        split_multi_a3m(">query\nACDE\n\0")


def test_bad_url_is_refused():
    with pytest.raises(MsaServerError, match="not an http"):
        MsaServerClient("ftp://example.org")


# -- run_search in server mode -------------------------------------------------------------


def test_run_search_server_writes_layout_and_caches(fake_server, tmp_path):
    _script_success(fake_server, [SEQ_A, SEQ_B])
    client, _ = _client(fake_server)
    out = tmp_path / "alignments"
    results = run_search({"a": SEQ_A, "b": SEQ_B}, out, mode="server", server_client=client,
                         server_url=fake_server.url)
    assert results["a"].files == (ENV_A3M, UNIREF_A3M)
    assert results["a"].searched == ("server",)
    for tag, seq in [("a", SEQ_A), ("b", SEQ_B)]:
        assert parse_a3m((out / tag / UNIREF_A3M).read_text()).sequences[0] == seq

    from sparkfold.data.msa import msa_features_from_dir

    feats = msa_features_from_dir(out / "a", SEQ_A)
    assert feats["msa"].shape == (3, len(SEQ_A))  # query + 2 distinct hits

    requests = len(fake_server.requests)
    again = run_search({"a": SEQ_A, "b": SEQ_B}, out, mode="server", server_client=client,
                       server_url=fake_server.url)
    assert again["b"].reused == ("server",) and again["b"].searched == ()
    assert len(fake_server.requests) == requests  # nothing sent

    run_search({"a": SEQ_A}, out, mode="server", server_client=client,
               server_url=fake_server.url, overwrite=True)
    assert fake_server.count("submit") == 2
    submits = [r for r in fake_server.requests if r[1] == "/ticket/msa"]
    assert submits[-1][3]["q"] == f">101\n{SEQ_A}\n"


def test_sequences_are_not_sent_outside_server_mode(fake_server, tmp_path):
    _script_success(fake_server, [SEQ_A])
    run_search({"a": SEQ_A}, tmp_path, mode="single", server_url=fake_server.url)
    assert fake_server.requests == []


@pytest.mark.skipif(shutil.which("hhsearch") is None, reason="hhsearch absent (hhsuite)")
def test_run_search_server_templates(fake_server, tmp_path, synthetic_db):
    seq = synthetic_db.queries["query0"]
    members = [(n.split()[0], s) for n, s in synthetic_db.records if n.startswith("fam0_")][:3]
    hit_ids = ["1abc_A", "2xyz_B", "3foo_C"]
    a3m_data, a3m_index = make_ffindex(
        {hid: f">{hid}\n{s}\n" for hid, (_, s) in zip(hit_ids, members)}
    )
    template_tar = make_tar({
        "pdb70_a3m.ffdata": a3m_data, "pdb70_a3m.ffindex": a3m_index,
        "1abc.cif": b"data_1abc\n", "2xyz.cif": b"data_2xyz\n", "3foo.cif": b"data_3foo\n",
    })
    m8 = "".join(f"101\t{h}\t0.9\t50\t0\t0\t1\t50\t1\t50\t1e-20\t100\t50M\n" for h in hit_ids)
    _script_success(fake_server, [seq], m8=m8)
    fake_server.routes["template"] = [(200, template_tar)]
    client, _ = _client(fake_server)
    result = run_search({"t": seq}, tmp_path, mode="server", templates=True,
                        server_client=client, server_url=fake_server.url)["t"]
    assert fake_server.requests[-1][1] == "/template/1abc_A,2xyz_B,3foo_C"
    folder = tmp_path / "t"
    assert {"hhsearch_output.hhr", "pdb70.m8", "templates/1abc.cif"} <= set(result.files)
    hits = parse_hhr((folder / "hhsearch_output.hhr").read_text())
    assert {h.name.split()[0] for h in hits} == set(hit_ids)
    assert (folder / "templates" / "pdb70_cs219.ffindex").is_file()
