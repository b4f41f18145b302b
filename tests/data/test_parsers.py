"""Parsers: OpenFold golden fixtures (../shared), small synthetic files, and fuzzing."""

import io
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testutil import shared_path

from sparkfold.data import parsers as P

GOLDEN = ("golden", "pipeline", "parsers")
MSA_FIXTURES = [
    "openfold_examples/examples/monomer/alignments/6KWC_1/bfd_uniref_hits.a3m",
    "openfold_examples/examples/monomer/alignments/6KWC_1/mgnify_hits.sto",
    "openfold_examples/tests/test_data/alignments/bfd_uniclust_hits.a3m",
    "openfold_examples/tests/test_data/alignments/mgnify_hits.sto",
    "openfold_examples/tests/test_data/alignments/uniref90_hits.sto",
    *(
        f"openfold_examples/tests/test_data/alignments/2q2k_{c}/{f}"
        for c in "AB"
        for f in (
            "bfd_uniclust_hits.a3m",
            "mgnify_hits.sto",
            "uniprot_hits.sto",
            "uniref90_hits.sto",
        )
    ),
]
HHR_FIXTURES = [
    "openfold_examples/examples/monomer/alignments/6KWC_1/hhsearch_output.hhr",
    "openfold_examples/tests/test_data/alignments/pdb70_hits.hhr",
]
FASTA_FIXTURES = [
    "openfold_examples/examples/monomer/fasta_dir/6kwc.fasta",
    "openfold_examples/tests/test_data/short.fasta",
]


# ------------------------------------------------------------------------------------ golden


@pytest.mark.parametrize("rel", MSA_FIXTURES)
def test_msa_parsers_match_openfold(rel):
    golden = np.load(shared_path(*GOLDEN, rel + ".npz"))
    path = shared_path("data", rel)
    msa = P.parse_a3m(path.read_text()) if rel.endswith(".a3m") else P.read_stockholm(path)
    assert list(msa.sequences) == list(golden["sequences"])
    assert msa.deletion_matrix.dtype == np.int32
    np.testing.assert_array_equal(msa.deletion_matrix, golden["deletion_matrix"])
    assert list(msa.descriptions) == list(golden["descriptions"])
    assert [P.species_id(d) for d in msa.descriptions] == list(golden["species_id"])
    if rel.endswith(".sto"):  # the in-memory parser gives the same as the streaming reader
        same = P.parse_stockholm(path.read_bytes())
        assert same.sequences == msa.sequences
        np.testing.assert_array_equal(same.deletion_matrix, msa.deletion_matrix)


@pytest.mark.parametrize("rel", HHR_FIXTURES)
def test_hhr_matches_openfold(rel):
    golden = json.loads(shared_path(*GOLDEN, rel + ".json").read_text())["hits"]
    hits = P.parse_hhr(shared_path("data", rel).read_text())
    mine = [
        {**h.__dict__, "indices_query": list(h.indices_query), "indices_hit": list(h.indices_hit)}
        for h in hits
    ]
    assert mine == golden


@pytest.mark.parametrize("rel", FASTA_FIXTURES)
def test_fasta_matches_openfold(rel):
    golden = json.loads(shared_path(*GOLDEN, rel + ".json").read_text())
    records = P.read_fasta(shared_path("data", rel))
    assert [r.sequence for r in records] == golden["sequences"]
    assert [r.description for r in records] == golden["descriptions"]


def test_stockholm_max_sequences_streams_prefix():
    path = shared_path(
        "data", "openfold_examples/examples/monomer/alignments/6KWC_1/mgnify_hits.sto"
    )
    full = P.read_stockholm(path)
    with open(path) as f:  # a text file object works too
        head = P.read_stockholm(f, max_sequences=100)
    assert len(head) == 100
    assert head.sequences == full.sequences[:100]
    np.testing.assert_array_equal(head.deletion_matrix, full.deletion_matrix[:100])


# ------------------------------------------------------------------------------------- FASTA


def test_fasta_multi_record_lowercase_and_stop():
    text = ">sp|P1|A_HUMAN first\nacdef\nGHIK*\n\n# skipped\n>second\nMXBZUO\n"
    records = P.parse_fasta(text)
    assert [r.description for r in records] == ["sp|P1|A_HUMAN first", "second"]
    assert [r.sequence for r in records] == ["ACDEFGHIK", "MXBZUO"]
    assert records[0].line == 1 and records[1].line == 6
    assert records[0].tag == "sp"


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", "no FASTA records"),
        ("ACDE\n", r"line 1: sequence data before the first '>'"),
        (">a\nACD\n>b\n\n>c\nAC\n", r"line 3: record 'b' has no sequence"),
        (">a\nAC-D\n", r"line 1: record 'a' contains '-'"),
        (">x y\nAC1D\n", r"record 'x y' contains '1'"),
    ],
)
def test_fasta_errors_name_record_and_line(text, pattern):
    with pytest.raises(P.ParseError, match=pattern):
        P.parse_fasta(text, source="in.fasta")


def test_fasta_invalid_utf8_is_parse_error():
    with pytest.raises(P.ParseError, match="not UTF-8"):
        P.parse_fasta(b">a\n\xff\xfe\n")


@pytest.mark.parametrize(
    "header, tag",
    [
        ("6KWC_1", "6KWC_1"),
        ("T1024 some protein", "T1024"),
        ("sp|P69905|HBA_HUMAN", "sp"),
        ("../../etc/passwd", "etc_passwd"),
        ("|abc", "abc"),
        ("", "query"),
        ("!!!", "query"),
        ("héllo world", "h_llo"),
        ("CON", "CON_"),
        ("x" * 300, "x" * 100),
    ],
)
def test_sanitize_name(header, tag):
    assert P.sanitize_name(header) == tag


@given(st.text())
def test_sanitize_name_is_always_safe(header):
    tag = P.sanitize_name(header)
    assert re.fullmatch(r"[A-Za-z0-9_]{1,101}", tag)


# --------------------------------------------------------------------------------------- A3M


def test_a3m_deletions_and_descriptions():
    text = "#A3M comment\n>query desc\nACDE\n>hit1 x\naAbbC-eDf\n>hit2\n-..CDE\n"
    msa = P.parse_a3m(text)
    assert msa.sequences == ("ACDE", "AC-D", "-CDE")
    assert msa.descriptions == ("query desc", "hit1 x", "hit2")
    np.testing.assert_array_equal(msa.deletion_matrix, [[0, 0, 0, 0], [1, 2, 0, 1], [0, 0, 0, 0]])
    assert msa.deletion_matrix.dtype == np.int32 and msa.query_length == 4


def test_a3m_errors():
    with pytest.raises(P.ParseError, match=r"record 'b' has 3 aligned columns but the query has 4"):
        P.parse_a3m(">a\nACDE\n>b\nACD\n")
    with pytest.raises(P.ParseError, match=r"line 3: record 'b' contains '\*'"):
        P.parse_a3m(">a\nACDE\n>b\nAC*E\n")


# --------------------------------------------------------------------------------- Stockholm


def _reference_stockholm(rows):
    """OpenFold parse_stockholm on whole rows (the definition the streaming reader must meet)."""
    query = rows[0]
    keep = [i for i, c in enumerate(query) if c != "-"]
    seqs, dels = [], []
    for row in rows:
        seqs.append("".join(row[c] for c in keep).upper())
        vec, count = [], 0
        for s, q in zip(row, query):
            if s != "-" or q != "-":
                if q == "-":
                    count += 1
                else:
                    vec.append(count)
                    count = 0
        dels.append(vec)
    return seqs, dels


def _stockholm_text(names, rows, block):
    out = ["# STOCKHOLM 1.0", "#=GF ID test", ""]
    for start in range(0, len(rows[0]), block):
        for name, row in zip(names, rows):
            out.append(f"{name:<12} {row[start : start + block]}")
            out.append(f"#=GR {name} PP {'*' * len(row[start : start + block])}")
        out.append("")
    out += ["#=GC RF " + "x" * len(rows[0]), "//", ""]
    return "\n".join(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_stockholm_streaming_matches_reference(data):
    width = data.draw(st.integers(1, 40))
    query = data.draw(
        st.text(alphabet="A-", min_size=width, max_size=width).filter(lambda q: "A" in q)
    )
    others = data.draw(
        st.lists(st.text(alphabet="CDgk-", min_size=width, max_size=width), max_size=8)
    )
    rows = [query, *others]
    names = [f"seq{i}/1-{i + 5}" for i in range(len(rows))]
    block = data.draw(st.integers(1, width))
    msa = P.parse_stockholm(_stockholm_text(names, rows, block))
    seqs, dels = _reference_stockholm(rows)
    assert list(msa.sequences) == seqs
    np.testing.assert_array_equal(msa.deletion_matrix, np.array(dels, dtype=np.int32))
    assert msa.descriptions == tuple(names)


def test_stockholm_dots_small_batches_and_truncation(monkeypatch):
    text = "# STOCKHOLM 1.0\nq  AC-.D\nh1 Ac-gd\nh2 ..kkD\n\nq  EF\nh1 E.\nh2 -F\n//\nq  XX\n"
    monkeypatch.setattr(P._StockholmBuilder, "_BATCH", 2)  # exercise the block flushing
    msa = P.parse_stockholm(text)
    assert msa.sequences == ("ACDEF", "ACDE-", "--D-F")
    np.testing.assert_array_equal(
        msa.deletion_matrix, [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 2, 0, 0]]
    )
    assert P.parse_stockholm(text, max_sequences=2).descriptions == ("q", "h1")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("q ACD\n", "first line must be '# STOCKHOLM 1.0'"),
        (
            "# STOCKHOLM 1.0\nq ACD\nh AC\n",
            r"line 3: sequence 'h' has 2 columns in this block but the query has 3",
        ),
        ("# STOCKHOLM 1.0\nq ACD\nh A1D\n", r"line 3: invalid character '1'"),
        ("# STOCKHOLM 1.0\nq ACD extra\n", r"line 2: expected '<name> <aligned sequence>'"),
        ("# STOCKHOLM 1.0\nq AC\nh AC\nh AC\n", "more alignment blocks than the query"),
        ("# STOCKHOLM 1.0\nq --\n", "has no aligned residues"),
    ],
)
def test_stockholm_errors(text, pattern):
    with pytest.raises(P.ParseError, match=pattern):
        P.parse_stockholm(text, source="x.sto")


def test_read_stockholm_missing_file(tmp_path):
    with pytest.raises(P.ParseError, match="cannot read file"):
        P.read_stockholm(tmp_path / "absent.sto")


def test_species_id():
    assert P.species_id("tr|A0A146SKV9|A0A146SKV9_FUNHE/12-80 desc") == "FUNHE"
    assert P.species_id("sp|P0C2L1|A3X1_LOXLA") == "LOXLA"
    assert P.species_id("UniRef100_A0A2L2TCV1 Endo") == ""
    assert P.species_id("") == ""


# --------------------------------------------------------------------------------------- HHR

HHR = """Query         query
Match_columns 12

 No Hit                             Prob E-value P-value  Score    SS Cols Query HMM  Template HMM
  1 1ABC_A Something                 99.0 1.0E-10  1E-14   50.0   0.0   10    2-11     5-13  (40)

No 1
>1ABC_A Something; {Homo sapiens}
Probab=99.00  E-value=1e-10  Score=50.00  Aligned_cols=10  Identities=50%  Similarity=0.5  Sum_probs=9.5  Template_Neff=3.1

Q query             2 CDEF-GHIKL   10 (12)
Q Consensus         2 cdef-ghikl   10 (12)
                      ||||  ||||
T Consensus         5 cdefwg-ikl   13 (40)
T 1ABC_A            5 CDEFWG-IKL   13 (40)
T ss_pred             HHHHHHHHHH
Confidence            9999999999

Q query            11 MN   12 (12)
T 1ABC_A           14 MN   15 (40)
"""


def test_hhr_synthetic():
    (hit,) = P.parse_hhr(HHR)
    assert (hit.index, hit.name, hit.aligned_cols, hit.sum_probs) == (
        1,
        "1ABC_A Something; {Homo sapiens}",
        10,
        9.5,
    )
    assert hit.query == "CDEF-GHIKLMN" and hit.hit_sequence == "CDEFWG-IKLMN"
    assert hit.indices_query == (1, 2, 3, 4, -1, 5, 6, 7, 8, 9, 10, 11)
    assert hit.indices_hit == (4, 5, 6, 7, 8, 9, -1, 10, 11, 12, 13, 14)
    assert P.parse_hhr("Query x\nMatch_columns 3\n") == ()


def test_hhr_errors():
    with pytest.raises(P.ParseError, match="Aligned_cols"):
        P.parse_hhr("No 1\n>1ABC_A x\nProbab=1\n")
    with pytest.raises(P.ParseError, match="cannot parse alignment line"):
        P.parse_hhr(HHR.replace("Q query             2 CDEF", "Q query             x CDEF"))


def test_hmmsearch_sto():
    text = (
        "# STOCKHOLM 1.0\n"
        "#=GS 4pqx_A/3-9 DE [subseq from] mol:protein length:217  Free text\n"
        "#=GS 1dna_B/1-5 DE [subseq from] mol:na length:10\n"
        "4pqx_A/3-9   AC-Dg.EF\n"
        "1dna_B/1-5   AC-D..EF\n"
        "//\n"
    )
    (hit,) = P.parse_hmmsearch_sto(text, "ACDEF")
    assert hit.name == "4pqx_A" and hit.index == 1 and hit.sum_probs is None
    assert hit.hit_sequence == "AC-DGEF" and hit.aligned_cols == 5
    assert hit.indices_hit == (2, 3, -1, 4, 6, 7)
    assert hit.indices_query == (0, 1, 2, 3, 4) and hit.query == "ACDEF"


# ------------------------------------------------------------------------------------- mmCIF

MMCIF = """data_1ABC
_exptl.method 'X-RAY DIFFRACTION'
_refine.ls_d_res_high 2.10
loop_
_pdbx_audit_revision_history.ordinal
_pdbx_audit_revision_history.revision_date
1 2010-05-04
2 2001-02-03
loop_
_chem_comp.id
_chem_comp.type
ALA 'L-peptide linking'
GLY 'peptide linking'
MSE 'L-peptide linking'
HOH non-polymer
loop_
_entity_poly_seq.entity_id
_entity_poly_seq.num
_entity_poly_seq.mon_id
1 1 GLY
1 2 MSE
1 3 ALA
loop_
_struct_asym.id
_struct_asym.entity_id
A 1
B 2
loop_
_atom_site.group_PDB
_atom_site.id
_atom_site.label_atom_id
_atom_site.label_alt_id
_atom_site.label_comp_id
_atom_site.label_asym_id
_atom_site.label_seq_id
_atom_site.auth_asym_id
_atom_site.auth_seq_id
_atom_site.pdbx_PDB_ins_code
_atom_site.Cartn_x
_atom_site.Cartn_y
_atom_site.Cartn_z
_atom_site.occupancy
_atom_site.pdbx_PDB_model_num
ATOM   1 N   . GLY A 1 Z 10 ? 1.0 0.0 0.0 1.0 1
ATOM   2 CA  . GLY A 1 Z 10 ? 2.0 0.0 0.0 1.0 1
HETATM 3 CA  . MSE A 2 Z 11 ? 3.0 0.0 0.0 1.0 1
HETATM 4 SE  A MSE A 2 Z 11 ? 4.0 0.0 0.0 0.4 1
HETATM 5 SE  B MSE A 2 Z 11 ? 5.0 0.0 0.0 0.6 1
HETATM 6 O   . HOH B . Z 50 ? 9.0 9.0 9.0 1.0 1
ATOM   7 N   . GLY A 1 Z 10 ? 7.0 7.0 7.0 1.0 2
"""


def test_mmcif_synthetic():
    s = P.parse_mmcif(MMCIF, file_id="1abc")
    assert (s.release_date, s.resolution, s.structure_method) == (
        "2001-02-03",
        2.1,
        "x-ray diffraction",
    )
    assert list(s.chains) == ["Z"]
    chain = s.chains["Z"]
    assert chain.sequence == "GMA" and chain.residue_names == ("GLY", "MSE", "ALA")
    np.testing.assert_array_equal(chain.resolved, [True, True, False])
    from sparkfold import constants as rc

    n, sd = rc.atom_order["N"], rc.atom_order["SD"]
    assert chain.atom_mask.sum() == 4 and chain.atom_positions.dtype == np.float32
    assert chain.atom_positions[0, n, 0] == 1.0  # first model only (model 2 has N at 7.0)
    assert chain.atom_positions[1, sd, 0] == 5.0  # Se (higher-occupancy altloc) in the SD slot
    pos, mask = s.atom37("Z", zero_center=True)
    np.testing.assert_allclose(pos[mask.astype(bool)].mean(axis=0), 0.0, atol=1e-6)
    with pytest.raises(KeyError, match="no protein chain 'Q'"):
        s.atom37("Q")


def test_mmcif_errors():
    with pytest.raises(P.ParseError, match="not a valid mmCIF"):
        P.parse_mmcif("loop_ garbage '", file_id="x")
    with pytest.raises(P.ParseError, match="no _atom_site records"):
        P.parse_mmcif("data_x\n_entry.id x\n", file_id="x")
    with pytest.raises(P.ParseError, match="bad number"):
        P.parse_mmcif(MMCIF.replace("4.0 0.0 0.0 0.4", "abc 0.0 0.0 0.4"), file_id="x")


# -------------------------------------------------------------------------------------- fuzz

PARSERS = {
    "fasta": P.parse_fasta,
    "a3m": P.parse_a3m,
    "stockholm": P.parse_stockholm,
    "stockholm_stream": lambda d: P.read_stockholm(
        io.StringIO(d if isinstance(d, str) else d.decode("latin-1"))
    ),
    "hhr": P.parse_hhr,
    "hmmsearch": lambda d: P.parse_hmmsearch_sto(d, "ACDEFGHIK"),
    "mmcif": lambda d: P.parse_mmcif(d, file_id="fuzz"),
}

_FORMAT_TEXT = st.sampled_from(
    [
        "",
        ">",
        ">a\n",
        "# STOCKHOLM 1.0\n",
        "//\n",
        "No 1\n",
        ">x\nAC-D\n",
        "q AC-D\n",
        "#=GS x DE y\n",
        "Probab=1 Aligned_cols=2 Sum_probs=1.0\n",
        "Q query 1 AC 2 (2)\n",
        "T 1ABC_A 1 A- 1 (9)\n",
        "data_x\n",
        "loop_\n",
        "_atom_site.Cartn_x 1.0\n",
        "_atom_site.group_PDB ATOM\n",
        "acgt",
        "\n",
        " ",
        "\x00",
        "é",
        "-",
        ".",
        "*",
        "1",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(PARSERS)),
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.lists(_FORMAT_TEXT, max_size=25).map("".join),
    ),
)
def test_parsers_raise_only_parse_error(name, data):
    try:
        PARSERS[name](data)
    except P.ParseError:
        pass
