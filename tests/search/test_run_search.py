"""run_search in local and single mode: OpenFold layout, cache reuse, crash safety, CLI."""

import os
import shutil

import pytest

from sparkfold import cli
from sparkfold.data.msa import msa_features_from_dir, msa_files
from sparkfold.data.parsers import parse_a3m, parse_hhr, read_stockholm
from sparkfold.data.search import DatabaseMissingError, run_search
from sparkfold.data.search.cache import MANIFEST_NAME
from sparkfold.paths import DatabaseNotConfiguredError

pytest.importorskip("pyhmmer")


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    """No sparkfold.toml and no SPARKFOLD_DB_* variables."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    monkeypatch.setenv("SPARKFOLD_CONFIG", str(config))
    for var in list(os.environ):
        if var.startswith("SPARKFOLD_DB_"):
            monkeypatch.delenv(var)


def test_local_jackhmmer_layout_and_features(synthetic_db, tmp_path, no_config):
    dbs = {"uniref90": synthetic_db.fasta, "mgnify": synthetic_db.fasta,
           "small_bfd": synthetic_db.fasta}
    events = []
    results = run_search(synthetic_db.queries, tmp_path, databases=["uniref90", "mgnify",
                         "small_bfd"], templates=False, database_paths=dbs, cpus=2,
                         progress=events.append)
    folder = tmp_path / "query0"
    assert results["query0"].files == ("mgnify_hits.sto", "small_bfd_hits.sto",
                                       "uniref90_hits.sto")
    assert results["query0"].searched == ("uniref90", "mgnify", "small_bfd")
    assert {e.step for e in events} == {"uniref90", "mgnify", "small_bfd"}
    assert any(e.fraction == 1.0 for e in events)
    msa = read_stockholm(folder / "uniref90_hits.sto")
    assert msa.sequences[0] == synthetic_db.queries["query0"] and len(msa) > 20
    # The data pipeline reads the folder unchanged; the manifest is not an alignment.
    assert [p.name for p in msa_files(folder)] == list(results["query0"].files)
    feats = msa_features_from_dir(folder, synthetic_db.queries["query0"])
    assert feats["msa"].shape[0] == len(msa)  # the three files hold the same rows


def test_cache_reuse_overwrite_and_database_change(synthetic_db, tmp_path, no_config):
    db = tmp_path / "db.fasta"
    shutil.copyfile(synthetic_db.fasta, db)
    seqs = {"query1": synthetic_db.queries["query1"]}
    kwargs = {"databases": ["uniref90"], "templates": False, "database_paths": {"uniref90": db},
                  "cpus": 1}
    out = tmp_path / "out"
    first = run_search(seqs, out, **kwargs)["query1"]
    sto = out / "query1" / "uniref90_hits.sto"
    stamp = sto.stat().st_mtime_ns
    again = run_search(seqs, out, **kwargs)["query1"]
    assert first.searched == ("uniref90",) and again.reused == ("uniref90",)
    assert sto.stat().st_mtime_ns == stamp
    assert run_search(seqs, out, overwrite=True, **kwargs)["query1"].searched == ("uniref90",)
    # A changed database (size/mtime) invalidates the result.
    with open(db, "a") as f:
        f.write(">extra\nMKTAYIAKQR\n")
    assert run_search(seqs, out, **kwargs)["query1"].searched == ("uniref90",)
    # A changed sequence under the same tag too.
    changed = {"query1": synthetic_db.queries["query1"][:-3]}
    assert run_search(changed, out, **kwargs)["query1"].searched == ("uniref90",)
    assert read_stockholm(sto).sequences[0] == changed["query1"]


def test_killed_run_is_not_trusted(synthetic_db, tmp_path, no_config):
    seqs = {"query0": synthetic_db.queries["query0"]}
    kwargs = {"databases": ["uniref90"], "templates": False,
                  "database_paths": {"uniref90": synthetic_db.fasta}, "cpus": 1}
    run_search(seqs, tmp_path, **kwargs)
    folder = tmp_path / "query0"
    good = (folder / "uniref90_hits.sto").read_text()
    # Simulate a run killed while rewriting: a half-written file replaced the output (no
    # manifest update) and a temporary file of a dead process is left behind.
    (folder / "uniref90_hits.sto").write_text(good[: len(good) // 3])
    partial = folder / ".mgnify_hits.sto.partial-999999999-abc"
    partial.write_text("# STOCKHOLM 1.0\n")
    result = run_search(seqs, tmp_path, **kwargs)["query0"]
    assert result.searched == ("uniref90",)
    assert (folder / "uniref90_hits.sto").read_text() == good
    assert not partial.exists()


def test_mode_switch_removes_old_outputs(synthetic_db, tmp_path, no_config):
    seqs = {"query0": synthetic_db.queries["query0"]}
    run_search(seqs, tmp_path, databases=["uniref90"], templates=False,
               database_paths={"uniref90": synthetic_db.fasta}, cpus=1)
    result = run_search(seqs, tmp_path, mode="single")["query0"]
    folder = tmp_path / "query0"
    assert result.files == ("single_sequence.a3m",)
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_NAME, "single_sequence.a3m"]
    msa = parse_a3m((folder / "single_sequence.a3m").read_text())
    assert msa.sequences == (seqs["query0"],) and msa.descriptions == ("query0",)


@pytest.mark.skipif(shutil.which("hhblits") is None or shutil.which("hhsearch") is None,
                    reason="HH-suite binaries absent: apt-get install hhsuite")
def test_local_full_pipeline_with_hhsuite(synthetic_db, hh_db, tmp_path, no_config):
    dbs = {"uniref90": synthetic_db.fasta, "mgnify": synthetic_db.fasta, "bfd": hh_db,
           "uniref30": hh_db, "pdb70": hh_db}
    seqs = {"query0": synthetic_db.queries["query0"]}
    result = run_search(seqs, tmp_path, database_paths=dbs, cpus=1)["query0"]
    assert result.files == ("bfd_uniref_hits.a3m", "hhsearch_output.hhr", "mgnify_hits.sto",
                            "uniref90_hits.sto")
    folder = tmp_path / "query0"
    bfd = parse_a3m((folder / "bfd_uniref_hits.a3m").read_text())
    assert bfd.sequences[0] == seqs["query0"] and len(bfd) > 5
    hits = parse_hhr((folder / "hhsearch_output.hhr").read_text())
    assert hits and all(h.name.startswith("fam0_") for h in hits[:5])
    again = run_search(seqs, tmp_path, database_paths=dbs, cpus=1)["query0"]
    assert again.searched == () and len(again.reused) == 4


def test_default_databases_must_be_configured(tmp_path, no_config):
    with pytest.raises(DatabaseNotConfiguredError) as info:
        run_search({"q": "MKTAYIAKQR"}, tmp_path)
    assert "SPARKFOLD_DB_UNIREF90" in str(info.value)


def test_configured_but_missing_database(tmp_path, no_config, monkeypatch):
    monkeypatch.setenv("SPARKFOLD_DB_UNIREF90", str(tmp_path / "gone.fasta"))
    with pytest.raises(DatabaseMissingError, match="gone.fasta"):
        run_search({"q": "MKTAYIAKQR"}, tmp_path, databases=["uniref90"], templates=False)


def test_bad_inputs(tmp_path):
    from sparkfold.errors import SparkfoldError

    with pytest.raises(SparkfoldError, match="safe folder name"):
        run_search({"../x": "MKT"}, tmp_path, mode="single")
    with pytest.raises(SparkfoldError, match="letters"):
        run_search({"x": "MK-T"}, tmp_path, mode="single")
    with pytest.raises(SparkfoldError, match="unknown database"):
        run_search({"x": "MKT"}, tmp_path, databases=["uniprot"])


def test_cli_msa(synthetic_db, tmp_path, no_config, monkeypatch, capsys):
    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">query0 first\n{synthetic_db.queries['query0']}\n>other|x\nMKTAYIAKQR\n")
    out = tmp_path / "aln"
    assert cli.main(["msa", str(fasta), "--out", str(out), "--msa-mode", "single"]) == 0
    assert (out / "query0" / "single_sequence.a3m").is_file()
    assert (out / "other" / "single_sequence.a3m").is_file()

    monkeypatch.setenv("SPARKFOLD_DB_UNIREF90", str(synthetic_db.fasta))
    code = cli.main(["msa", str(fasta), "--out", str(out), "--databases", "uniref90",
                     "--no-templates", "--cpus", "1"])
    assert code == 0
    err = capsys.readouterr().err
    assert "uniref90" in err and "[100%]" in err
    assert (out / "query0" / "uniref90_hits.sto").is_file()
    assert not (out / "query0" / "single_sequence.a3m").exists()

    code = cli.main(["msa", str(fasta), "--out", str(out), "--databases", "uniref90,mgnify"])
    assert code == 1
    assert "SPARKFOLD_DB_MGNIFY" in capsys.readouterr().err
