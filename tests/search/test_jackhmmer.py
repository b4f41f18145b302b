"""jackhmmer through pyhmmer: output identical to the jackhmmer binary, truncation, errors."""

import shutil
import subprocess

import pytest

from sparkfold.data.parsers import parse_stockholm
from sparkfold.data.search import (
    JACKHMMER_OPTIONS,
    DatabaseMissingError,
    SearchError,
    jackhmmer,
    truncate_stockholm,
)

pytest.importorskip("pyhmmer")


def _binary_sto(tmp_path, name, sequence, database, cpus=1):
    query = tmp_path / f"{name}.fasta"
    query.write_text(f">{name}\n{sequence}\n")
    out = tmp_path / f"{name}.sto"
    flags = ["--F1", "0.0005", "--F2", "0.00005", "--F3", "0.0000005", "--incE", "0.0001",
             "-E", "0.0001", "-N", "1"]
    subprocess.run(
        ["jackhmmer", "-o", "/dev/null", "-A", out, "--noali", *flags, "--cpu", str(cpus),
         query, database], check=True, capture_output=True,
    )
    return out.read_text()


def _without_author(text):
    return "\n".join(line for line in text.splitlines() if not line.startswith("#=GF AU"))


@pytest.mark.skipif(shutil.which("jackhmmer") is None, reason="jackhmmer binary (hmmer) absent")
def test_matches_jackhmmer_binary(synthetic_db, tmp_path):
    # Small blocks: the merged per-block hits must give the single-run E-values and output.
    ours = jackhmmer(synthetic_db.queries, synthetic_db.fasta, max_sequences=None, cpus=2,
                     block_size=23)
    assert list(ours) == ["query0", "query1"]
    for name, seq in synthetic_db.queries.items():
        expected = _binary_sto(tmp_path, name, seq, synthetic_db.fasta)
        assert _without_author(ours[name]) == _without_author(expected)


@pytest.mark.skipif(shutil.which("jackhmmer") is None, reason="jackhmmer binary (hmmer) absent")
def test_truncation_matches_af2_truncated_binary_output(synthetic_db, tmp_path):
    seq = synthetic_db.queries["query0"]
    ours = jackhmmer({"query0": seq}, synthetic_db.fasta, max_sequences=12, cpus=1)["query0"]
    expected = parse_stockholm(_binary_sto(tmp_path, "query0", seq, synthetic_db.fasta),
                               max_sequences=12)
    got = parse_stockholm(ours)
    assert len(got) == 12
    assert got.descriptions == expected.descriptions
    assert got.sequences == expected.sequences
    assert (got.deletion_matrix == expected.deletion_matrix).all()


def test_hits_are_the_query_family(synthetic_db):
    out = jackhmmer(synthetic_db.queries, synthetic_db.fasta, max_sequences=None, cpus=1)
    for i, name in enumerate(["query0", "query1"]):
        msa = parse_stockholm(out[name])
        assert msa.descriptions[0] == name
        assert msa.sequences[0] == synthetic_db.queries[name]
        hits = {d.split("/")[0] for d in msa.descriptions[1:]}
        assert len(hits) >= 20
        assert all(h.startswith(f"fam{i}_") for h in hits), hits


def test_truncate_stockholm_keeps_first_names():
    text = (
        "# STOCKHOLM 1.0\n#=GF ID x\n#=GS a DE first\n#=GS b DE second\n#=GS c DE third\n\n"
        "q AC-D\na AC-E\n#=GR a PP 99.9\nb ACCD\nc A--D\n#=GC RF xx.x\n\nq EF\na EF\nb EE\n"
        "c GG\n//\n"
    )
    out = truncate_stockholm(text, 2)
    msa = parse_stockholm(out)
    assert msa.descriptions == ("q", "a")
    assert msa.sequences == ("ACDEF", "ACEEF")
    assert "#=GS b" not in out and "#=GS a DE first" in out and "#=GR a PP" in out
    assert "#=GC RF xx.x" in out and out.rstrip().endswith("//")


def test_no_hits_gives_query_only(tmp_path):
    db = tmp_path / "unrelated.fasta"
    db.write_text(">x\nWWWWWWWWWWWWWWWWWWWW\n>y\nPPPPPPPPPPPPPPPP\n")
    out = jackhmmer({"q": "MKTAYIAKQRQISFVKSHFSRQ"}, db, max_sequences=10)["q"]
    msa = parse_stockholm(out)
    assert msa.sequences == ("MKTAYIAKQRQISFVKSHFSRQ",)
    assert msa.descriptions == ("q",)


def test_empty_database_is_an_error(tmp_path):
    db = tmp_path / "empty.fasta"
    db.write_text("")
    with pytest.raises(SearchError, match="empty"):
        jackhmmer({"q": "MKTAYIAKQR"}, db, max_sequences=10, database_name="mgnify")


def test_missing_database_names_the_variable(tmp_path):
    with pytest.raises(DatabaseMissingError) as info:
        jackhmmer({"q": "MKTAYIAKQR"}, tmp_path / "nope.fasta", max_sequences=None,
                  database_name="uniref90")
    message = str(info.value)
    assert "nope.fasta" in message and "SPARKFOLD_DB_UNIREF90" in message


def test_bad_database_is_a_search_error(tmp_path):
    db = tmp_path / "bad.fasta"
    db.write_bytes(b"this is not fasta\n\x00\x01")
    with pytest.raises(SearchError, match="bad.fasta"):
        jackhmmer({"q": "MKTAYIAKQR"}, db, max_sequences=None)


def test_flags_are_af2s():
    assert JACKHMMER_OPTIONS.as_flags()[:10] == [
        "--F1", "0.0005", "--F2", "5e-05", "--F3", "5e-07", "--incE", "0.0001", "-E", "0.0001",
    ]
