"""Raw feature dict (features.md §1): OpenFold golden cases (../shared) and synthetic folders."""

import json
import shutil

import numpy as np
import pytest
from testutil import shared_path

from sparkfold import constants as rc
from sparkfold.data import features as F
from sparkfold.data import msa as M
from sparkfold.data import parsers as P
from sparkfold.data import templates as T

RAW = ("golden", "pipeline", "raw")
EXAMPLES = ("data", "openfold_examples")


def assert_matches_golden(features, golden_path):
    """Every key, dtype (object bytes ~ stored 'S'), shape and value exactly."""
    with np.load(golden_path) as golden:
        assert sorted(features) == sorted(golden.files)
        for key in golden.files:
            mine, ref = features[key], golden[key]
            if mine.dtype == object:
                assert all(isinstance(x, bytes) for x in mine.ravel()), key
                mine = mine.astype(ref.dtype)
            assert mine.dtype == ref.dtype, (key, mine.dtype, ref.dtype)
            assert mine.shape == ref.shape, (key, mine.shape, ref.shape)
            np.testing.assert_array_equal(mine, ref, err_msg=key)


# ------------------------------------------------------------------------------------ golden


def test_6kwc_no_templates():
    (record,) = P.read_fasta(shared_path(*EXAMPLES, "examples/monomer/fasta_dir/6kwc.fasta"))
    alignments = shared_path(*EXAMPLES, "examples/monomer/alignments/6KWC_1")
    # The hhr in the folder is ignored without an mmCIF folder (no template featurizer).
    features = F.raw_features(record.sequence, alignments, description=record.description)
    assert_matches_golden(features, shared_path(*RAW, "6KWC_1_no_templates.npz"))


@pytest.mark.parametrize("mode", ["empty_dir", "none"])
def test_short_single_sequence(mode, tmp_path):
    (record,) = P.read_fasta(shared_path(*EXAMPLES, "tests/test_data/short.fasta"))
    folder = tmp_path if mode == "empty_dir" else None
    features = F.raw_features(record.sequence, folder, description=record.description)
    assert_matches_golden(features, shared_path(*RAW, "short_single_sequence.npz"))


def test_short_with_templates():
    (record,) = P.read_fasta(shared_path(*EXAMPLES, "tests/test_data/short.fasta"))
    assert json.loads(shared_path(*RAW, "short_with_templates_kalign_calls.json").read_text()) == []
    # OpenFold never called kalign here, so a missing kalign must not matter.
    features, report = F.raw_features(
        record.sequence,
        shared_path(*EXAMPLES, "tests/test_data/alignments"),
        description=record.description,
        mmcif_dir=shared_path(*EXAMPLES, "tests/test_data/mmcifs"),
        max_template_date="2021-12-20",
        kalign_binary="/nonexistent/kalign",
        return_template_report=True,
    )
    assert_matches_golden(features, shared_path(*RAW, "short_with_templates.npz"))
    # 1hf9.cif is absent from the shared data (the fixture dropped that hit beforehand).
    assert report.errors == () and len(report.warnings) == 1 and "1hf9" in report.warnings[0]


def test_2q2k_mmcif_features():
    structure = P.read_mmcif(shared_path(*EXAMPLES, "tests/test_data/mmcifs/2q2k.cif"))
    features = F.mmcif_features(structure, "A")
    assert_matches_golden(features, shared_path(*RAW, "2q2k_A_mmcif.npz"))


# -------------------------------------------------------------------------------- synthetic MSA

QUERY = "ACDEFGHIKLMNPQRSTVWY"


def test_msa_folder_order_exclusions_and_dedup(tmp_path):
    (tmp_path / "b_hits.a3m").write_text(
        f">query\n{QUERY}\n>tr|A0A000|A0A000_ECOLI x\nAC-EFGHIKLMNPQRSTVWY\n>dup\n{QUERY}\n"
    )
    (tmp_path / "a_hits.sto").write_text(
        "# STOCKHOLM 1.0\n"
        f"query {QUERY[:10]}--{QUERY[10:]}\n"
        "s1    AC-EFGHIKLkkMNPQRSTVWY\n"
        "s2    ACDEFGHIKL--MNPQRSTVWX\n//\n"
    )
    junk = "# STOCKHOLM 1.0\nz WWWWWWWWWWWWWWWWWWWW\n//\n"
    (tmp_path / "uniprot_hits.sto").write_text(junk)
    (tmp_path / "hmm_output.sto").write_text(junk)
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in M.msa_files(tmp_path)] == ["a_hits.sto", "b_hits.a3m"]

    features = F.raw_features(QUERY.lower(), tmp_path)
    msa = features["msa"]
    # a_hits.sto rows first (sorted order); its s1 duplicates b_hits' second row, which is dropped
    # although its deletions differ (first occurrence wins); the query repeat is dropped too.
    assert msa.shape == (3, 20) and msa.dtype == np.int32
    ids = rc.HHBLITS_AA_TO_ID
    np.testing.assert_array_equal(msa[0], [ids[c] for c in QUERY])
    assert msa[1, 2] == ids["-"] and msa[2, 19] == ids["X"]
    np.testing.assert_array_equal(features["deletion_matrix_int"][1], [0] * 10 + [2] + [0] * 9)
    np.testing.assert_array_equal(features["num_alignments"], np.full(20, 3, np.int32))
    assert list(features["msa_species_identifiers"]) == [b"", b"", b""]
    assert features["sequence"][0] == QUERY.encode()


def test_msa_species_ids_and_single_a3m(tmp_path):
    path = tmp_path / "server.a3m"
    path.write_text(f">101\n{QUERY}\n>tr|A0A000|A0A000_ECOLI\n{QUERY[:-1]}-\n")
    features = F.raw_features(QUERY, path)
    assert list(features["msa_species_identifiers"]) == [b"", b"ECOLI"]
    assert features["template_aatype"].shape == (0, 20, 22)


def test_msa_length_mismatch_is_clear(tmp_path):
    (tmp_path / "x.a3m").write_text(">q\nACDE\n")
    with pytest.raises(
        ValueError, match=r"x\.a3m: the alignment has 4 query columns but the sequence has 20"
    ):
        F.raw_features(QUERY, tmp_path)


def test_bad_sequence_and_folder():
    with pytest.raises(ValueError, match="contains '-'"):
        F.raw_features("ACD-E")
    with pytest.raises(ValueError, match="empty"):
        F.raw_features("")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        F.raw_features(QUERY, "/nonexistent/alignments")


def test_sequence_features_map_nonstandard_to_x():
    features = F.sequence_features("ABZUX", "d")
    np.testing.assert_array_equal(features["aatype"].argmax(-1), [0, 20, 20, 20, 20])
    single = M.msa_features([M.single_sequence_msa("ABZUOJ")])
    np.testing.assert_array_equal(single["msa"][0], [0, 2, 3, 1, 20, 20])  # B->D Z->E U->C O/J->X


# --------------------------------------------------------------------------- synthetic templates

CHAIN = "MKTAYIAKQRQISFVKSHFSRQ"  # 22 residues of chain A of "1abc"
ATOM_SITE_TAGS = [
    "group_PDB",
    "id",
    "label_atom_id",
    "label_alt_id",
    "label_comp_id",
    "label_asym_id",
    "label_seq_id",
    "auth_asym_id",
    "auth_seq_id",
    "pdbx_PDB_ins_code",
    "Cartn_x",
    "Cartn_y",
    "Cartn_z",
    "occupancy",
    "pdbx_PDB_model_num",
]


def _mmcif(chain_seq, date="2005-06-07"):
    lines = [
        "data_1ABC",
        "_exptl.method 'X-RAY DIFFRACTION'",
        "_refine.ls_d_res_high 2.0",
        "loop_\n_pdbx_audit_revision_history.ordinal\n_pdbx_audit_revision_history.revision_date",
        f"1 {date}",
        "loop_\n_chem_comp.id\n_chem_comp.type",
        *(f"{rc.restype_1to3[c]} 'L-peptide linking'" for c in sorted(set(chain_seq))),
        "loop_\n_entity_poly_seq.entity_id\n_entity_poly_seq.num\n_entity_poly_seq.mon_id",
        *(f"1 {i} {rc.restype_1to3[c]}" for i, c in enumerate(chain_seq, 1)),
        "loop_\n_struct_asym.id\n_struct_asym.entity_id\nA 1",
        "loop_",
        *(f"_atom_site.{t}" for t in ATOM_SITE_TAGS),
    ]
    serial = 0
    for i, c in enumerate(chain_seq, 1):
        for atom, (dx, dy) in {
            "N": (-1.0, 0.5),
            "CA": (0.0, 0.0),
            "C": (1.0, 0.5),
            "O": (1.2, 1.6),
            "CB": (0.0, -1.5),
        }.items():
            serial += 1
            x, y, z = 3.8 * i + dx, dy + 0.1 * i, 0.05 * i * i
            lines.append(
                f"ATOM {serial} {atom} . {rc.restype_1to3[c]} A {i} A {i + 100} ? {x:.3f} {y:.3f} {z:.3f} 1.0 1"
            )
    return "\n".join(lines) + "\n"


def _hhr(hits):
    out = ["Query         query", f"Match_columns {len(QUERY)}", ""]
    for n, (name, sum_probs, q_start, q_seg, t_start, t_seg) in enumerate(hits, 1):
        cols = sum(a != "-" and b != "-" for a, b in zip(q_seg, t_seg))
        q_end = q_start + len(q_seg.replace("-", "")) - 1
        t_end = t_start + len(t_seg.replace("-", "")) - 1
        out += [
            f"No {n}",
            f">{name} synthetic hit",
            (
                f"Probab=90.0  E-value=1e-5  Score=30.0  Aligned_cols={cols}  Identities=50%  "
                f"Similarity=0.5  Sum_probs={sum_probs}  Template_Neff=2.0"
            ),
            "",
            f"Q query           {q_start:>4} {q_seg} {q_end:>4} ({len(QUERY)})",
            f"T {name:<14}  {t_start:>4} {t_seg} {t_end:>4} (22)",
            "",
        ]
    return "\n".join(out) + "\n"


@pytest.fixture
def template_dirs(tmp_path):
    cifs, aligns = tmp_path / "mmcif", tmp_path / "alignments"
    cifs.mkdir()
    aligns.mkdir()
    (cifs / "1abc.cif").write_text(_mmcif(CHAIN))
    return cifs, aligns


def _features(aligns, cifs, **kwargs):
    return F.raw_features(QUERY, aligns, mmcif_dir=cifs, return_template_report=True, **kwargs)


def test_template_from_hhr(template_dirs):
    cifs, aligns = template_dirs
    # Query residues 3..14 (1-based) against chain residues 5..16 (YIAKQRQISFVK), one gap each.
    (aligns / "pdb70_hits.hhr").write_text(
        _hhr([("1ABC_A", 7.5, 3, "DEFGHI-KLMNP", 5, "YIAKQRQ-ISFV")])
    )
    features, report = _features(aligns, cifs, max_template_date="2021-01-01")
    assert report.errors == () and report.warnings == ()
    assert features["template_aatype"].dtype == np.int64 and features["template_aatype"].shape == (
        1,
        20,
        22,
    )
    assert features["template_domain_names"].tolist() == [b"1abc_A"]
    (sequence,) = features["template_sequence"].tolist()
    assert sequence == b"--YIAKQR-ISFV-------"
    ids = rc.HHBLITS_AA_TO_ID
    np.testing.assert_array_equal(
        features["template_aatype"][0].argmax(-1), [ids[c] for c in sequence.decode()]
    )
    np.testing.assert_array_equal(features["template_sum_probs"], np.array([[7.5]], np.float32))
    structure = P.parse_mmcif(_mmcif(CHAIN), file_id="1abc")
    positions, mask = structure.atom37("A", zero_center=True)
    for q, t in {2: 4, 3: 5, 7: 9, 9: 11, 12: 14}.items():
        np.testing.assert_array_equal(features["template_all_atom_positions"][0, q], positions[t])
        np.testing.assert_array_equal(features["template_all_atom_mask"][0, q], mask[t])
    assert features["template_all_atom_mask"][0, [0, 1, 8, 13]].sum() == 0


def test_template_date_cutoff_max_templates_and_missing_mmcif(template_dirs):
    cifs, aligns = template_dirs
    hits = [
        ("1ABC_A", 5.0, 3, "DEFGHIKLMNP", 5, "YIAKQRQISFV"),
        ("2XYZ_B", 9.0, 3, "DEFGHIKLMNP", 5, "YIAKQRQISFV"),  # no mmCIF: skipped with a warning
        ("1ABC_A", 4.0, 1, "ACDEFGHIKLMN", 1, "MKTAYIAKQRQI"),
    ]
    (aligns / "a.hhr").write_text(_hhr(hits))
    features, report = _features(aligns, cifs, max_template_date="2005-06-06")
    assert features["template_aatype"].dtype == np.float32 and features[
        "template_aatype"
    ].shape == (0, 20, 22)
    assert features["template_domain_names"].tolist() == [b""]
    features, report = _features(aligns, cifs, max_template_date="2005-06-07", max_templates=1)
    assert features["template_sum_probs"].tolist() == [[5.0]]
    assert len(report.warnings) == 1 and "2xyz" in report.warnings[0]
    features, _ = _features(aligns, cifs, max_template_date="2005-06-07")
    assert features["template_sum_probs"].tolist() == [[5.0], [4.0]]


def test_template_obsolete_pdb_mapping(template_dirs, tmp_path):
    cifs, aligns = template_dirs
    (aligns / "a.hhr").write_text(_hhr([("9ZZZ_A", 5.0, 3, "DEFGHIKLMNP", 5, "YIAKQRQISFV")]))
    obsolete = tmp_path / "obsolete.dat"
    obsolete.write_text(
        " LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\nOBSLTE    26-SEP-06 9ZZZ     1ABC\n"
    )
    features, _ = _features(aligns, cifs, max_template_date="2021-01-01")
    assert features["template_aatype"].shape[0] == 0
    features, _ = _features(
        aligns, cifs, max_template_date="2021-01-01", obsolete_pdbs_path=obsolete
    )
    assert features["template_domain_names"].tolist() == [b"1abc_A"]


def test_template_prefilter_rejects_duplicates_and_short_hits(template_dirs):
    cifs, aligns = template_dirs
    (cifs / "2dup.cif").write_text(_mmcif(QUERY))
    hits = [("2DUP_A", 9.0, 1, QUERY, 1, QUERY), ("1ABC_A", 5.0, 3, "DEFGHIKLM", 5, "YIAKQRQIS")]
    (aligns / "a.hhr").write_text(_hhr(hits))
    features, _ = _features(aligns, cifs, max_template_date="2021-01-01")
    assert features["template_aatype"].shape[0] == 0  # a copy of the query, and a 9-residue hit


def test_template_realignment_needs_kalign(template_dirs):
    cifs, aligns = template_dirs
    # PDB70 holds a variant of the chain (one substitution): not found, so kalign realigns.
    (aligns / "a.hhr").write_text(_hhr([("1ABC_A", 5.0, 3, "DEFGHIKLMNPQ", 5, "YIAKQWQISFVK")]))
    with pytest.raises(T.KalignNotFoundError, match="apt-get install kalign"):
        _features(aligns, cifs, max_template_date="2021-01-01", kalign_binary="/nonexistent/kalign")
    if shutil.which("kalign") is None:
        pytest.skip("kalign is not installed (Debian package: kalign)")
    features, report = _features(aligns, cifs, max_template_date="2021-01-01")
    assert len(report.warnings) == 1 and "realigned" in report.warnings[0]
    assert features["template_sequence"].tolist() == [b"--YIAKQRQISFVK------"]


def test_template_mmcif_dir_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="mmCIF folder"):
        T.template_features(QUERY, [], mmcif_dir=tmp_path / "absent")
