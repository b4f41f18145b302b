"""hhblits/hhsearch wrappers against a tiny HH-suite database, and the template-search a3m."""

import shutil

import pytest

from sparkfold.data.parsers import parse_a3m, parse_hhr
from sparkfold.data.search import (
    DatabaseMissingError,
    SearchError,
    ToolNotFoundError,
    hhblits,
    hhsearch,
    template_search_a3m,
)

needs_hhblits = pytest.mark.skipif(shutil.which("hhblits") is None,
                                   reason="hhblits absent: apt-get install hhsuite")
needs_hhsearch = pytest.mark.skipif(shutil.which("hhsearch") is None,
                                    reason="hhsearch absent: apt-get install hhsuite")

STO = """# STOCKHOLM 1.0
#=GS hitA/1-5 DE first hit
#=GS hitB/2-6 DE duplicate of A on query columns
#=GS hitC/1-4 DE

query    AC--DE-F
hitA/1-5 ACk-DE-Y
hitB/2-6 AC-mDE-Y
hitC/1-4 A---DEGF
#=GC RF  xx..xx.x
//
"""


def test_template_search_a3m_follows_af2():
    a3m = template_search_a3m(STO)
    lines = a3m.splitlines()
    # hitB equals hitA on the query's columns: dropped. Column 3 ('-' everywhere left) removed.
    assert lines == [
        ">query ", "ACDEF",
        ">hitA/1-5 first hit", "ACkDEY",
        ">hitC/1-4 ", "A-DEgF",
    ]
    msa = parse_a3m(a3m)
    assert msa.sequences == ("ACDEF", "ACDEY", "A-DEF")
    assert msa.deletion_matrix.tolist()[1] == [0, 0, 1, 0, 0]
    assert msa.deletion_matrix.tolist()[2] == [0, 0, 0, 0, 1]


def test_template_search_a3m_rejects_empty():
    with pytest.raises(SearchError):
        template_search_a3m("# STOCKHOLM 1.0\n//\n")


@needs_hhblits
def test_hhblits_finds_the_family(hh_db, synthetic_db):
    query = synthetic_db.queries["query0"]
    a3m = hhblits(query, [hh_db, hh_db], name="query0", cpus=1)
    msa = parse_a3m(a3m)
    assert msa.descriptions[0] == "query0"
    assert msa.sequences[0] == query
    names = {d.split()[0] for d in msa.descriptions[1:]}
    assert len(names) >= 8
    assert all(n.startswith("fam0_") for n in names), names


@needs_hhsearch
def test_hhsearch_hits_parse(hh_db, synthetic_db):
    query = synthetic_db.queries["query0"]
    hhr = hhsearch(f">query0\n{query}\n", hh_db, cpus=1)
    hits = parse_hhr(hhr)
    assert len(hits) >= 8
    assert hits[0].name.startswith("fam0_")
    assert hits[0].sum_probs is not None and hits[0].sum_probs > 10
    assert hits[0].query.replace("-", "") in query


def test_missing_binary_says_how_to_install(tmp_path):
    prefix = tmp_path / "db"
    (tmp_path / "db_a3m.ffdata").write_text("")
    with pytest.raises(ToolNotFoundError) as info:
        hhblits("MKTAYIAKQR", [prefix], binary="hhblits-not-installed")
    assert "hhsuite" in str(info.value) and "--hhblits-binary" in str(info.value)


def test_missing_database_prefix(tmp_path):
    with pytest.raises(DatabaseMissingError) as info:
        hhsearch(">q\nMKTAYIAKQR\n", tmp_path / "pdb70" / "pdb70")
    message = str(info.value)
    assert "pdb70_*" in message and "SPARKFOLD_DB_PDB70" in message


@needs_hhsearch
def test_tool_failure_reports_stderr(tmp_path):
    prefix = tmp_path / "broken"
    (tmp_path / "broken_hhm.ffdata").write_text("garbage")
    (tmp_path / "broken_hhm.ffindex").write_text("garbage\n")
    with pytest.raises(SearchError, match="hhsearch failed"):
        hhsearch(">q\nMKTAYIAKQR\n", prefix, cpus=1)
