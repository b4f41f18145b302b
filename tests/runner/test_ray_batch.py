"""Batch prediction on a local Ray cluster (CPU, 2 workers, tiny random model).

A worker is killed mid-batch: every target must end done exactly once, with no partial files.
Skipped when Ray (the ``ray`` extra) is not installed.
"""

import pytest

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'sparkfold[ray]'")

import batchutil
from batchutil import CountingHook, hidden_or_temporary, read_json, tiny_options, write_fasta

from sparkfold import cli
from sparkfold.runner.batch import run_batch

LENGTHS = {"a": 24, "b": 30, "c": 16, "d": 27, "e": 10, "f": 20, "g": 13, "h": 8}


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU local Ray instance shared by the tests of this file (about 4 s to start)."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialised by another test")
    ray.cloudpickle.register_pickle_by_value(batchutil)  # the hook is not installed on workers
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_killed_worker_targets_end_done_exactly_once(cluster, tmp_path):
    inp = write_fasta(tmp_path / "in.fasta", LENGTHS)
    out = tmp_path / "out"
    # Longest first on 2 workers: "a" (24) is the second target of one of them.
    hook = CountingHook(str(tmp_path), out=str(out), kill_on="a")
    events = []
    report = run_batch(inp, out, tiny_options(), ray="local", num_workers=2, hook=hook,
                       progress=events.append)
    assert report.backend == "ray"
    assert {r.tag: r.state for r in report.results} == dict.fromkeys(LENGTHS, "done")
    manifest = read_json(out / "manifest.json")["targets"]
    for tag in LENGTHS:
        assert (out / tag / ".done").is_file()
        assert manifest[tag]["state"] == "done" and manifest[tag]["error"] is None
        assert len(hook.count(tag, "done")) == 1  # finished exactly once
        assert manifest[tag]["attempts"] == (2 if tag == "a" else 1)
    starts = hook.count("a", "start")
    assert len(starts) == 2 and starts[0] != starts[1]  # retried on another worker
    assert all(len(hook.count(t, "start")) == 1 for t in LENGTHS if t != "a")
    assert hidden_or_temporary(out) == []  # the killed worker's half-written folder is gone
    assert len(report.workers) >= 2  # the killed one and at least one that took over
    messages = [e.format() for e in events]
    assert any(f"worker {starts[0]} lost: ActorDiedError" in m for m in messages)
    assert any(f"worker {starts[0]} died" in m and "requeued" in m for m in messages)
    assert report.status.done == len(LENGTHS) and report.status.failed == 0

    # The same call again: nothing left to run, nothing rerun.
    again = run_batch(inp, out, tiny_options(), ray="local", num_workers=2, hook=hook)
    assert {r.state for r in again.results} == {"skipped"} and again.workers == []
    assert all(len(hook.count(t, "start")) == (2 if t == "a" else 1) for t in LENGTHS)


def test_failure_is_listed_and_rerun_finishes_only_what_is_left(cluster, tmp_path):
    lengths = {"p": 12, "q": 18, "r": 9}
    inp = write_fasta(tmp_path / "in.fasta", lengths)
    out = tmp_path / "out"
    hook = CountingHook(str(tmp_path), fail_on="q")
    report = run_batch(inp, out, tiny_options(), ray="local", num_workers=2, hook=hook)
    states = {r.tag: (r.state, r.error) for r in report.results}
    assert states["q"] == ("failed", "hook refuses q")
    assert states["p"][0] == states["r"][0] == "done"
    assert read_json(out / "manifest.json")["targets"]["q"]["state"] == "failed"
    assert "hook refuses q" in (out / "log.txt").read_text()
    fixed = CountingHook(str(tmp_path))
    report = run_batch(inp, out, tiny_options(), ray="local", num_workers=2, hook=fixed)
    assert {r.tag: r.state for r in report.results} == {"q": "done", "p": "skipped",
                                                        "r": "skipped"}
    assert [len(hook.count(t, "done")) for t in "pqr"] == [1, 1, 1]


def test_cli_ray(cluster, tmp_path, capsys):
    inp = write_fasta(tmp_path / "in.fasta", {"x1": 11, "x2": 15, "x3": 9})
    out = tmp_path / "out"
    argv = ["predict", str(inp), "--out", str(out), "--ray", "local", "--msa", "single",
            "--weights", "random", "--model-config", "tiny", "--models", "3",
            "--num-recycles", "0", "--relax", "none", "--output-format", "pdb",
            "--no-plots", "--no-report", "--max-attempts", "2"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "3 target(s): 3 done, 0 already done, 0 failed" in captured.out
    assert "ray backend" in captured.err and "3/3 done, 0 running" in captured.err
    assert "targets/h" in captured.err
    assert all((out / t / ".done").is_file() for t in ("x1", "x2", "x3"))
