"""`sparkfold predict` and `sparkfold selftest` end to end on the CPU, tiny random-weight models."""

import json

import numpy as np
import pytest
from testutil import isolate_user_dirs

from sparkfold import cli
from sparkfold.commands import predict as predict_cmd
from sparkfold.io.pdb import read_pdb
from sparkfold.runner import options as opts
from sparkfold.runner import predict as predict_mod

SEQ_A = "MKTAYIAKQRQISF"  # 14 residues
SEQ_B = "GSTIQPGTGYNNG"  # 13 residues: runs first (shortest first)
TINY = ("--weights", "random", "--model-config", "tiny", "--num-recycles", "0", "--device", "cpu")


def predict_cli(*args, relax="none"):
    """``sparkfold predict ARGS`` with the tiny random model; returns the exit status."""
    argv = ["predict", *map(str, args), *TINY]
    if relax is not None:
        argv += ["--relax", relax]
    return cli.main(argv)


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    """No configured databases, cache in tmp."""
    isolate_user_dirs(tmp_path, monkeypatch)


def fasta(path, records):
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records))
    return path


def tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def names(tag, model, rank):
    return f"{tag}_unrelaxed_rank_{rank:03d}_{model}", f"{tag}_scores_rank_{rank:03d}_{model}.json"


def read_json(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def run_two(tmp_path_factory):
    """Two targets, models 1 and 3, --msa single, both formats."""
    folder = tmp_path_factory.mktemp("two")
    inp = fasta(folder / "in.fasta", [("alpha first target", SEQ_A), ("beta|x", SEQ_B)])
    out = folder / "out"
    args = (inp, "--out", out, "--msa", "single", "--models", "1,3", "--output-format", "both")
    return args, out, predict_cli(*args)


def test_outputs_named_as_colabfold(run_two):
    _, out, code = run_two
    assert code == 0
    models = {"random_ptm_model_1_seed_000", "random_ptm_model_3_seed_000"}
    for tag, seq in (("alpha", SEQ_A), ("beta", SEQ_B)):
        folder = out / tag
        ranking = read_json(folder / "ranking.json")
        assert set(ranking["order"]) == models and ranking["rank_by"] == "plddt"
        plddts = ranking["plddts"]
        assert plddts[ranking["order"][0]] >= plddts[ranking["order"][1]]
        expected = {".done", "config.json", "ranking.json", "timings.json",
                    "report.html", f"{tag}_predicted_aligned_error_v1.json",
                    f"{tag}_plddt.png", f"{tag}_pae.png", f"{tag}_coverage.png"}
        for rank, model in enumerate(ranking["order"], 1):
            structure, scores = names(tag, model, rank)
            expected |= {structure + ".pdb", structure + ".cif", scores}
            data = read_json(folder / scores)
            assert list(data) == ["plddt", "max_pae", "pae", "ptm"]
            assert len(data["plddt"]) == len(seq)
            assert np.shape(data["pae"]) == (len(seq), len(seq))
            assert np.mean(data["plddt"]) == pytest.approx(plddts[model], abs=0.01)
            pdb = read_pdb(folder / (structure + ".pdb"))
            assert pdb.sequence == seq
            np.testing.assert_allclose(pdb.plddt, data["plddt"], atol=0.006)  # B-factor = pLDDT
            assert (folder / (structure + ".cif")).read_text().startswith("data_")
        assert set(tree(folder)) == expected
        pae = read_json(folder / f"{tag}_predicted_aligned_error_v1.json")
        assert set(pae) == {"predicted_aligned_error", "max_predicted_aligned_error"}
        config = read_json(folder / "config.json")
        assert config["msa_mode"] == "single" and config["msa_depth"] == 1
        assert config["target"]["sequence"] == seq
        assert {"features", "total"} <= set(read_json(folder / "timings.json"))
    manifest = read_json(out / "manifest.json")
    assert list(manifest["targets"]) == ["beta", "alpha"]  # shortest first
    for tag, entry in manifest["targets"].items():
        assert entry["state"] == "done" and entry["error"] is None
        assert entry["length"] == len(SEQ_A if tag == "alpha" else SEQ_B)
        assert set(entry["outputs"]) == {f"{tag}/{n}" for n in tree(out / tag) if n != ".done"}
        assert entry["started"] <= entry["finished"]
    assert "[1/2 beta]" in (out / "log.txt").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_rerun_skips_and_overwrite_redoes(run_two, capsys):
    args, out, _ = run_two
    done = out / "alpha" / ".done"
    before = done.stat().st_mtime_ns
    capsys.readouterr()
    assert predict_cli(*args) == 0
    captured = capsys.readouterr()
    assert "2 already done" in captured.out and "already done" in captured.err
    assert done.stat().st_mtime_ns == before
    args = (*args[:5], "--models", "1", "--output-format", "pdb", "--overwrite", "-q")
    assert predict_cli(*args) == 0
    assert "2 done" in capsys.readouterr().out
    assert done.stat().st_mtime_ns != before
    files = tree(out / "alpha")
    assert "alpha_unrelaxed_rank_001_random_ptm_model_1_seed_000.pdb" in files
    assert not any("model_3" in f or f.endswith(".cif") for f in files)  # old result replaced


def test_alignment_dir_and_a3m_input(tmp_path):
    ali = tmp_path / "alignments" / "q1"
    ali.mkdir(parents=True)
    rows = [SEQ_A, "MKTAYLAKQRQISF", "MRTAYIA-QRQVSF", "MKSAyyYIAKQRQIAF", SEQ_A]  # last: duplicate
    (ali / "uniref90_hits.a3m").write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(rows)))
    (ali / "uniprot_hits.sto").write_text("not read for monomers")
    inp = fasta(tmp_path / "q.fasta", [("q1", SEQ_A)])
    out = tmp_path / "out"
    common = ("--out", out, "--output-format", "pdb")
    assert predict_cli(inp, "--alignments", tmp_path / "alignments", "--models", "1", *common) == 0
    config = read_json(out / "q1" / "config.json")
    assert config["msa_mode"] == "precomputed" and config["msa_path"] == str(ali)
    assert config["msa_depth"] == 4
    assert any("no templates: no mmCIF folder" in n for n in config["notes"])
    a3m = tmp_path / "q2.a3m"
    a3m.write_text(f">101\n{SEQ_B}\n>h\nGSTVQPGTGYNN-\n")
    assert predict_cli(a3m, "--models", "3", "--no-plots", "--no-report", *common) == 0
    config = read_json(out / "q2" / "config.json")
    assert config["msa_mode"] == "a3m" and config["msa_depth"] == 2
    assert "report.html" not in tree(out / "q2") and "q2_plddt.png" not in tree(out / "q2")


def test_interrupt_leaves_no_partial_output_and_rerun_completes(tmp_path, monkeypatch, capsys):
    from sparkfold.io import confidence

    inp = fasta(tmp_path / "in.fasta", [("short", SEQ_B), ("long", SEQ_A)])
    out = tmp_path / "out"
    real = confidence.ranking_dict

    def crash_on_long(ranked, rank_by="auto"):
        if ranked[0].num_residues == len(SEQ_A):  # after the structures of "long" were written
            raise KeyboardInterrupt
        return real(ranked, rank_by)

    monkeypatch.setattr(confidence, "ranking_dict", crash_on_long)
    args = (inp, "--out", out, "--msa", "single", "--models", "1", "--output-format", "pdb")
    assert predict_cli(*args) == 130
    assert (out / "short" / ".done").is_file()
    assert not (out / "long").exists()
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "manifest.json", "short"]
    manifest = read_json(out / "manifest.json")["targets"]
    assert manifest["short"]["state"] == "done"
    assert manifest["long"]["state"] == "pending" and manifest["long"]["error"] == "interrupted"
    monkeypatch.setattr(confidence, "ranking_dict", real)
    capsys.readouterr()
    assert predict_cli(*args) == 0
    assert "1 done, 1 already done, 0 failed" in capsys.readouterr().out
    assert (out / "long" / ".done").is_file()
    assert read_json(out / "manifest.json")["targets"]["long"]["state"] == "done"


def test_failed_target_is_recorded_and_others_run(tmp_path, monkeypatch, capsys):
    inp = fasta(tmp_path / "in.fasta", [("bad", SEQ_B), ("good", SEQ_A)])
    real = predict_mod.Predictor.features

    def features(self, target, msa):
        if target.tag == "bad":
            raise ValueError("alignment rows of different lengths")
        return real(self, target, msa)

    monkeypatch.setattr(predict_mod.Predictor, "features", features)
    out = tmp_path / "out"
    args = ("--msa", "single", "--models", "1", "--output-format", "pdb", "--no-plots")
    assert predict_cli(inp, "--out", out, *args, "--no-report") == 1
    assert "bad: failed: alignment rows of different lengths" in capsys.readouterr().out
    manifest = read_json(out / "manifest.json")["targets"]
    assert manifest["bad"]["state"] == "failed" and "different lengths" in manifest["bad"]["error"]
    assert manifest["good"]["state"] == "done" and not (out / "bad").exists()
    assert "Traceback" in (out / "log.txt").read_text()


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded (bad input must be caught before)."""
    import sparkfold.weights

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(sparkfold.weights, "load_model", forbidden)


@pytest.mark.parametrize(
    "content, extra, words",
    [
        ("", ["--msa", "single"], "is empty"),
        (">q\nMKTJAY\n", ["--msa", "single"], "unknown residue 'J' at position 4"),
        (">q\nMKT1AY\n", ["--msa", "single"], "'1'"),
        (f">q\n{SEQ_A}\n", ["--alignments", "ALIGN"], "no alignment folder for target 'q'"),
        (f">q\n{SEQ_A}\n", [], "--msa server"),  # auto: no alignments, no databases
        (f">q\n{SEQ_A}\n", ["--msa", "local"], "not configured"),
    ],
)
def test_bad_input_fails_before_model_loading(tmp_path, capsys, no_model, content, extra, words):
    inp = tmp_path / "in.fasta"
    inp.write_text(content)
    (tmp_path / "ALIGN").mkdir()
    extra = [tmp_path / "ALIGN" if e == "ALIGN" else e for e in extra]
    out = tmp_path / "out"
    assert predict_cli(inp, "--out", out, *extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("sparkfold: error: ") and words in err and "Fix:" in err
    assert not out.exists()


def test_too_long_for_memory(tmp_path, capsys, monkeypatch, no_model):
    monkeypatch.setattr(opts, "_free_memory", lambda device: (1.5 * (1 << 30), 0.8))
    inp = fasta(tmp_path / "in.fasta", [("long", "A" * 400), ("short", SEQ_A)])
    assert predict_cli(inp, "--out", tmp_path / "o", "--msa", "single") == 1
    err = capsys.readouterr().err
    assert "too long" in err and "long (400)" in err and "the longest that fits is about" in err


def test_model_without_ptm_head_writes_plddt_only(tmp_path):
    inp = fasta(tmp_path / "in.fasta", [("np", SEQ_B)])
    out = tmp_path / "out"
    args = ("--models", "model_3", "--output-format", "pdb", "--rank-by", "ptm")
    assert predict_cli(inp, "--out", out, "--msa", "single", *args) == 0
    files = set(tree(out / "np"))
    structure, scores = names("np", "random_model_3_seed_000", 1)
    assert {structure + ".pdb", scores, "np_plddt.png", "np_coverage.png"} <= files
    assert "np_predicted_aligned_error_v1.json" not in files and "np_pae.png" not in files
    assert list(read_json(out / "np" / scores)) == ["plddt"]
    assert read_json(out / "np" / "ranking.json")["rank_by"] == "plddt"


def test_server_mode_calls_the_search_module(tmp_path, monkeypatch, no_model):
    from sparkfold.data import search

    calls = []

    def fake_run_search(sequences, out_dir, *, mode, **kwargs):
        calls.append((mode, dict(sequences), out_dir))
        raise RuntimeError("server unreachable")

    monkeypatch.setattr(search, "run_search", fake_run_search)
    inp = fasta(tmp_path / "in.fasta", [("s1", SEQ_B)])
    out = tmp_path / "out"
    assert predict_cli(inp, "--out", out, "--msa", "server") == 1
    assert calls == [("server", {"s1": SEQ_B}, out / "alignments")]
    manifest = read_json(out / "manifest.json")["targets"]
    assert manifest["s1"]["error"] == "server unreachable"


def test_server_alignments_are_used(tmp_path, monkeypatch):
    from sparkfold.data import search

    def fake_run_search(sequences, out_dir, *, mode, **kwargs):
        results = {}
        for tag, seq in sequences.items():
            folder = out_dir / tag
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "uniref.a3m").write_text(f">101\n{seq}\n>h\n{seq[:-1]}-\n")
            results[tag] = search.TargetResult(tag, folder, ("uniref.a3m",), ("server",), ())
        return results

    monkeypatch.setattr(search, "run_search", fake_run_search)
    inp = fasta(tmp_path / "in.fasta", [("s1", SEQ_B)])
    out = tmp_path / "out"
    args = ("--models", "3", "--output-format", "pdb", "--no-plots", "--no-report")
    assert predict_cli(inp, "--out", out, "--msa", "server", *args) == 0
    config = read_json(out / "s1" / "config.json")
    assert config["msa_mode"] == "server" and config["msa_depth"] == 2
    assert config["msa_path"] == str(out / "alignments" / "s1")


def test_identical_models_are_computed_once(tmp_path):
    from sparkfold.runner.options import ModelSpec, PredictOptions
    from sparkfold.runner.targets import Target

    options = PredictOptions(msa="single", weights="random", model_config="tiny", num_recycles=0,
                             relax="none", device="cpu", output_format="pdb", plots=False,
                             report=False, log_file=False)
    twins = [ModelSpec(3, "tiny_notempl", "random", "a_model_3"),
             ModelSpec(3, "tiny_notempl", "random", "a_model_4")]
    events = []
    predictor = predict_mod.Predictor(options, models=twins, device="cpu", progress=events.append)
    result = predictor.predict_target(Target("tw", "tw", SEQ_B), tmp_path)
    assert set(result.ranking) == {"a_model_3", "a_model_4"}
    assert result.scores["a_model_3"] == result.scores["a_model_4"]
    assert any("prediction reused" in e.message for e in events)
    assert sum(e.stage == "recycle" for e in events) == 1  # one forward pass in all


def test_relax_best_and_all(tmp_path, monkeypatch):
    import sparkfold.relax
    from sparkfold.relax import RelaxError

    seen = []

    class FakeResult:
        def __init__(self, pdb):
            self.pdb = pdb

    def fake_relax(pdb, **kwargs):
        seen.append(kwargs)
        if len(seen) == 2:
            raise RelaxError("broken chain: residue A 1 is isolated")
        return FakeResult(pdb)

    monkeypatch.setattr(sparkfold.relax, "relax_pdb", fake_relax, raising=False)
    inp = fasta(tmp_path / "in.fasta", [("r", SEQ_B)])
    out = tmp_path / "out"
    base = (inp, "--out", out, "--msa", "single", "--models", "1,3", "--no-plots", "--no-report")
    assert predict_cli(*base, "--output-format", "both", relax="best") == 0
    ranking = read_json(out / "r" / "ranking.json")["order"]
    relaxed = [f for f in tree(out / "r") if "_relaxed_" in f]
    assert relaxed == [f"r_relaxed_rank_001_{ranking[0]}.{ext}" for ext in ("cif", "pdb")]
    assert seen[0] == {"platform": "CPU", "device_index": None}
    assert predict_cli(*base, "--output-format", "pdb", "--overwrite", relax="all") == 0
    relaxed = [f for f in tree(out / "r") if "_relaxed_" in f]
    assert relaxed == [f"r_relaxed_rank_002_{ranking[1]}.pdb"]  # rank 1 failed: unrelaxed kept
    notes = read_json(out / "r" / "config.json")["notes"]
    assert any("relaxation of" in n and "broken chain" in n for n in notes)


def test_cli_choices_match_library():
    assert predict_cmd._MSA_MODES == opts.MSA_MODES
    assert ("auto", *predict_cmd._RELAX_MODES) == opts.RELAX_MODES
    assert ("auto", *predict_cmd._OUTPUT_FORMATS) == opts.OUTPUT_FORMATS
    assert predict_cmd._PRECISIONS == opts.PRECISIONS and predict_cmd._RANK_BY == opts.RANK_BY
    parser = cli.build_parser()
    o = predict_cmd.options_from_args(parser.parse_args(["predict", "x.fasta", "--out", "o"]))
    assert (o.msa, o.models, o.weights, o.num_recycles) == ("auto", None, "openfold", 3)
    assert (o.relax, o.precision, o.output_format, o.device) == ("auto", "auto", "auto", "auto")
    help_text = parser._subparsers._group_actions[0].choices["predict"].format_help()
    assert "for testing only" in help_text and "--msa" in help_text


def test_selftest_command(tmp_path, monkeypatch, capsys):
    from sparkfold.runner import selftest

    short = fasta(tmp_path / "ex.fasta", [("6KWC_1 example", SEQ_A)])
    monkeypatch.setattr(selftest, "example_fasta", lambda: short)
    argv = ["selftest", "--device", "cpu", "--size", "tiny", "--out", str(tmp_path / "st")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for stage in ("kernels", "model", "outputs", "relax"):
        assert f" {stage} " in out
    assert "selftest passed" in out
    assert (tmp_path / "st" / "6KWC_1" / ".done").is_file()


@pytest.mark.gpu
def test_selftest_full_size_on_gpu():
    """Full-size model_1_ptm (random weights) on the 191-residue example, bf16 if supported."""
    from sparkfold.runner.selftest import run_selftest

    results = run_selftest(device="cuda", size="full")
    failed = {r.name: r.detail for r in results if r.status == "failed"}
    assert not failed
    assert [r.name for r in results] == ["kernels", "model", "outputs", "relax"]


def test_cuda_graphs_option_reaches_the_runtime():
    from sparkfold.runner.options import ModelSpec, PredictError, PredictOptions

    spec = ModelSpec(3, "tiny_notempl", "random", "m3")
    for flag, expected in (("auto", "auto"), ("on", True), ("off", False)):
        options = PredictOptions(msa="single", weights="random", model_config="tiny",
                                 device="cpu", cuda_graphs=flag, log_file=False)
        predictor = predict_mod.Predictor(options, models=[spec], device="cpu")
        assert predictor.runtime(spec).cuda_graphs == expected
    with pytest.raises(PredictError, match="cuda_graphs"):
        PredictOptions(cuda_graphs="always")
    args = cli.build_parser().parse_args(["predict", "x.fasta", "--out", "o", "--cuda-graphs", "off"])
    assert args.cuda_graphs == "off"
