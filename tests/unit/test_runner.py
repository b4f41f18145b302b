"""Runner pieces without a model: input discovery, manifest, option resolution, checks."""

import json

import numpy as np
import pytest

from sparkfold.runner import manifest as manifest_mod
from sparkfold.runner import options as opts
from sparkfold.runner.manifest import DONE_MARKER, Manifest, ManifestError
from sparkfold.runner.options import PredictError, PredictOptions
from sparkfold.runner.targets import (
    InputError,
    Target,
    check_residues,
    discover_targets,
    targets_from_records,
)

SEQ = "MKTAYIAKQRQISFVKSHFSRQ"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ targets
def test_fasta_records_become_targets_with_sanitised_unique_tags(tmp_path):
    fasta = write(
        tmp_path / "in.fasta",
        f">sp|P1|X first\n{SEQ}\n>sp|P2|Y second\nmkta\nyia\n>6KWC_1 xyl\nGSTX\n",
    )
    targets = discover_targets(fasta)
    assert [t.tag for t in targets] == ["sp", "sp_2", "6KWC_1"]
    assert targets[1].sequence == "MKTAYIA" and targets[1].description == "sp|P2|Y second"
    assert targets[2].sequence == "GSTX" and targets[2].length == 4
    assert all(t.source == fasta and t.a3m is None for t in targets)


def test_folder_and_a3m_inputs(tmp_path):
    write(tmp_path / "b.fa", ">beta\nGSTIQ\n")
    write(tmp_path / "a.a3m", f">101\n{SEQ}\n>hom\n{SEQ[:-3]}-aa--\n")
    write(tmp_path / "notes.txt", ">ignored\nAAAA\n")
    targets = discover_targets(tmp_path)
    assert [t.tag for t in targets] == ["a", "beta"]
    assert targets[0].a3m == tmp_path / "a.a3m" and targets[0].sequence == SEQ
    assert targets[1].a3m is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        (">a\nMKJT\n", "unknown residue 'J' at position 3"),
        (">a\nMK1T\n", "'1'"),
        (">a\n", "no sequence"),
        ("MKT\n", "before the first '>'"),
    ],
)
def test_bad_fasta_gives_clear_errors(tmp_path, text, words):
    fasta = write(tmp_path / "bad.fasta", text)
    with pytest.raises(InputError) as info:
        discover_targets(fasta)
    assert words in str(info.value)
    assert str(fasta) in str(info.value) or "record" in str(info.value)


def test_missing_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        discover_targets(tmp_path / "nope.fasta")
    with pytest.raises(InputError, match="no FASTA or A3M files"):
        discover_targets(tmp_path)


def test_check_residues():
    assert check_residues("mk tx\n", name="q") == "MKTX"
    with pytest.raises(InputError, match="'B' at position 2"):
        check_residues("ABC", name="q")
    targets = targets_from_records([("a b", "MK"), ("a c", "GS")])
    assert [t.tag for t in targets] == ["a", "a_2"]


# ------------------------------------------------------------------ manifest
def test_manifest_states_roundtrip_and_reconcile(tmp_path):
    targets = [Target("t1", "t1", "MKT"), Target("t2", "t2", "GSTIQ")]
    m = Manifest.load(tmp_path)
    assert m.targets == {}
    m.sync(targets)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["version"] == 1
    assert doc["targets"]["t2"] == {
        "state": "pending",
        "length": 5,
        "error": None,
        "outputs": [],
        "started": None,
        "finished": None,
        "attempts": 0,
    }
    m.mark("t1", "running")
    assert m.targets["t1"]["started"] and m.targets["t1"]["finished"] is None
    m.mark("t2", "failed", error="boom")
    loaded = Manifest.load(tmp_path)
    assert loaded.state("t1") == "running" and loaded.targets["t2"]["error"] == "boom"
    # An interrupted "running" target is pending again; a folder with .done is done.
    write(tmp_path / "t2" / "t2_scores.json", "{}")
    write(tmp_path / "t2" / DONE_MARKER, "{}")
    loaded.sync(targets)
    assert loaded.state("t1") == "pending"
    assert loaded.state("t2") == "done" and loaded.targets["t2"]["outputs"] == ["t2/t2_scores.json"]
    assert Manifest.load(tmp_path).tags("done") == ["t2"]
    # done without its marker (folder deleted by hand) → pending
    (tmp_path / "t2" / DONE_MARKER).unlink()
    loaded.sync(targets)
    assert loaded.state("t2") == "pending"


def test_manifest_rejects_garbage(tmp_path):
    write(tmp_path / manifest_mod.MANIFEST_NAME, "{not json")
    with pytest.raises(ManifestError, match="delete"):
        Manifest.load(tmp_path)
    write(tmp_path / manifest_mod.MANIFEST_NAME, json.dumps({"version": 7, "targets": {}}))
    with pytest.raises(ManifestError, match="version-1"):
        Manifest.load(tmp_path)
    with pytest.raises(ValueError, match="unknown state"):
        Manifest(tmp_path).mark("x", "finished")


# ------------------------------------------------------------------ options
def test_options_validation():
    with pytest.raises(PredictError, match="msa must be one of"):
        PredictOptions(msa="remote")
    with pytest.raises(PredictError, match="needs weights='random'"):
        PredictOptions(model_config="tiny")
    with pytest.raises(PredictError, match="YYYY-MM-DD"):
        PredictOptions(max_template_date="yesterday")
    o = PredictOptions(models=[1, "model_2"], alignments="x")
    assert o.models == ("1", "model_2") and o.alignments.name == "x"
    assert PredictOptions(models="1, 3").models == ("1", "3")
    assert json.loads(json.dumps(o.to_dict()))["alignments"] == "x"


def test_resolve_models_random_and_names():
    specs = opts.resolve_models(PredictOptions(weights="random"))
    assert [s.name for s in specs] == [f"random_ptm_model_{n}_seed_000" for n in range(1, 6)]
    assert [s.preset for s in specs] == [f"model_{n}_ptm" for n in range(1, 6)]
    tiny = opts.resolve_models(
        PredictOptions(weights="random", model_config="tiny", seed=7, models=("model_3", "1", "1"))
    )
    assert [(s.preset, s.name) for s in tiny] == [
        ("tiny_notempl_noptm", "random_model_3_seed_007"),
        ("tiny_templ", "random_ptm_model_1_seed_007"),
    ]
    assert tiny[1].config().has_templates and not tiny[0].config().has_templates
    assert tiny[1].config().heads.tm_enabled and not tiny[0].config().heads.tm_enabled
    for bad, words in (
        ("7", "not 1-5"),
        ("model_1_multimer_v3", "Multimer"),
        ("model_x", "unknown preset"),
    ):
        with pytest.raises(PredictError, match=words):
            opts.resolve_models(PredictOptions(weights="random", models=(bad,)))


def test_resolve_models_weights_path(tmp_path):
    weights = write(tmp_path / "finetuning_ptm_2.pt", "")
    specs = opts.resolve_models(PredictOptions(weights=str(weights), models=("2",)))
    assert [(s.preset, s.weights, s.name) for s in specs] == [
        ("model_2_ptm", weights, "openfold_ptm_model_2_seed_000")
    ]
    with pytest.raises(
        PredictError, match="neither openfold, alphafold, random nor an existing path"
    ):
        opts.resolve_models(PredictOptions(weights=str(tmp_path / "missing.npz")))


def test_resolve_msa(tmp_path):
    target = Target("q1", "q1 test", SEQ)
    assert opts.resolve_msa(target, PredictOptions(msa="single")) == ("single", None)
    assert opts.resolve_msa(target, PredictOptions(msa="server")) == ("server", None)
    with pytest.raises(PredictError, match="no alignment folder for target 'q1'"):
        opts.resolve_msa(target, PredictOptions(alignments=tmp_path))
    (tmp_path / "q1").mkdir()
    write(tmp_path / "q1" / "hhsearch_output.hhr", "")
    with pytest.raises(PredictError, match="holds no .a3m or .sto"):
        opts.resolve_msa(target, PredictOptions(alignments=tmp_path))
    write(tmp_path / "q1" / "bfd_uniref_hits.a3m", f">q\n{SEQ}\n")
    assert opts.resolve_msa(target, PredictOptions(alignments=tmp_path)) == (
        "precomputed",
        tmp_path / "q1",
    )
    a3m_target = Target("a", "a", SEQ, a3m=tmp_path / "q1" / "bfd_uniref_hits.a3m")
    assert opts.resolve_msa(a3m_target, PredictOptions())[0] == "a3m"
    with pytest.raises(PredictError) as info:
        opts.resolve_msa(target, PredictOptions(), databases={})
    assert "--msa server" in str(info.value) and "--msa single" in str(info.value)
    assert opts.resolve_msa(target, PredictOptions(), databases={"uniref90": tmp_path}) == (
        "local",
        None,
    )


def test_device_and_precision_resolution():
    assert opts.resolve_precision("auto", "cpu") == "fp32"
    assert opts.resolve_precision("bf16", "cpu") == "bf16"
    assert opts.resolve_device("cpu") == "cpu"
    with pytest.raises(PredictError, match="not a torch device"):
        opts.resolve_device("gpu-please")


def test_check_lengths_names_the_longest_that_fits(monkeypatch):
    monkeypatch.setattr(opts, "_free_memory", lambda device: (2.0 * (1 << 30), 0.8))
    from sparkfold.doctor import estimate_max_length

    limit = estimate_max_length(0.8 * 2.0 * (1 << 30), 4)
    short, long = Target("s", "s", "A" * 10), Target("l", "l", "A" * (limit + 1))
    assert opts.check_lengths([short], "cpu", "fp32") == limit
    with pytest.raises(PredictError) as info:
        opts.check_lengths([short, long], "cpu", "fp32")
    assert f"l ({limit + 1})" in str(info.value) and f"about {limit} residues" in str(info.value)


def test_ideal_peptide_geometry():
    from sparkfold.io.pdb import parse_pdb
    from sparkfold.runner.selftest import example_fasta, ideal_peptide_pdb

    peptide = parse_pdb(ideal_peptide_pdb("GSTIQPG"))
    ca = peptide.atom_positions[:, 1]
    assert peptide.num_residues == 7
    np.testing.assert_allclose(np.linalg.norm(np.diff(ca, axis=0), axis=-1), 3.8, atol=0.1)
    assert discover_targets(example_fasta())[0].tag == "6KWC_1"
