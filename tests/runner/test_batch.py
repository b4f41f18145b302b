"""Batch scheduler (ordering, placement, retries, progress) and the local backend (no Ray)."""

import builtins
from pathlib import Path

import pytest
from batchutil import CountingHook, hidden_or_temporary, read_json, tiny_options, write_fasta
from testutil import isolate_user_dirs

from sparkfold import cli
from sparkfold.runner import options as opts
from sparkfold.runner.batch import BatchScheduler, WorkerInfo, run_batch, target_cost
from sparkfold.runner.targets import Target


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    """No configured databases, cache in tmp."""
    isolate_user_dirs(tmp_path, monkeypatch)


def targets(**lengths):
    return [Target(tag, tag, "A" * n) for tag, n in lengths.items()]


def scheduler(ts, **kwargs):
    return BatchScheduler(ts, {t.tag: ("single", None) for t in ts}, **kwargs)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# ------------------------------------------------------------------ scheduler
def test_longest_first_and_placement_by_memory():
    s = scheduler(targets(a=50, b=300, c=120, d=300, e=900))
    s.add_worker(WorkerInfo("small", "cuda:0", 200))
    s.add_worker(WorkerInfo("big", "cuda:1", 1000))
    assert s.assign("small").tag == "c"  # the longest it can hold
    assert s.assign("big").tag == "e"
    s.complete("c", None)
    assert s.assign("small").tag == "a"
    s.complete("e", None)
    assert s.assign("big").tag == "b"  # equal lengths keep the input order
    with pytest.raises(ValueError, match="busy"):
        s.assign("big")
    s.complete("a", None)
    assert s.assign("small") is None  # d (300) does not fit 200 residues
    assert s.unplaceable() == []  # the big worker can take it later
    s.complete("b", None)
    assert s.assign("big").tag == "d"
    s.complete("d", None)
    assert s.finished and s.status().done == 5


def test_too_long_for_every_worker_is_reported_once_workers_are_known():
    s = scheduler(targets(huge=5000, ok=100))
    s.worker_starting("w0")
    assert s.unplaceable() == []  # w0 may hold it
    s.add_worker(WorkerInfo("w0", "cuda", 2000, "node1"))
    [(task, reason)] = s.unplaceable()
    assert task.tag == "huge"
    assert "5000 residues" in reason and "about 2000" in reason and "node1" in reason
    s.remove_worker("w0")
    reasons = {t.tag: r for t, r in s.unplaceable()}
    assert set(reasons) == {"huge", "ok"} and "no inference worker" in reasons["ok"]


def test_lost_worker_requeues_until_attempts_run_out():
    s = scheduler(targets(x=10, y=5), max_attempts=2)
    s.add_worker(WorkerInfo("w0", "cpu", 100))
    task = s.assign("w0")
    assert task.tag == "x" and task.attempts == 1
    assert s.remove_worker("w0") is task
    assert s.fail("x", "worker w0 died", retry="anywhere") is True
    assert task.stage == "ready" and task.worker is None
    s.add_worker(WorkerInfo("w1", "cpu", 100))
    assert s.assign("w1").tag == "x" and task.attempts == 2
    s.remove_worker("w1")
    assert s.fail("x", "worker w1 died", retry="anywhere") is False
    assert task.stage == "failed" and "gave up after 2 attempt(s)" in task.error
    s.add_worker(WorkerInfo("w2", "cpu", 100))
    assert s.assign("w2").tag == "y"
    assert s.fail("y", "bad alignment") is False  # the target's own error: no retry
    assert s.finished and s.status().failed == 2


def test_out_of_memory_retries_only_on_a_worker_with_more_memory():
    s = scheduler(targets(t=150))
    s.add_worker(WorkerInfo("small", "cuda:0", 200))
    s.add_worker(WorkerInfo("small2", "cuda:1", 200))
    assert s.assign("small").tag == "t"
    assert s.fail("t", "CUDA out of memory", retry="more_memory", worker_limit=200)
    assert s.assign("small2") is None and s.assign("small") is None
    [(_, reason)] = s.unplaceable()
    assert "no worker has more memory" in reason
    s.add_worker(WorkerInfo("big", "cuda:2", 400))
    assert s.unplaceable() == [] and s.assign("big").tag == "t"


def test_searches_are_fed_longest_first_and_limited():
    ts = targets(a=10, b=30, c=20)
    s = BatchScheduler(ts, {t.tag: ("server", None) for t in ts})
    assert [t.tag for t in s.take_searches(2)] == ["b", "c"]
    assert s.searching() == 2 and s.take_searches(0) == []
    s.add_worker(WorkerInfo("w0", "cpu", 100))
    assert s.assign("w0") is None  # nothing searched yet
    s.search_done("c", "/tmp/ali/c")
    task = s.assign("w0")
    assert task.tag == "c" and task.msa == ("server", Path("/tmp/ali/c"))


def test_status_throughput_and_eta():
    clock = Clock()
    s = scheduler(targets(a=100, b=100, c=100, d=100), skipped=2, clock=clock)
    s.add_worker(WorkerInfo("w0", "cpu", 1000))
    st = s.status()
    assert (st.total, st.pending, st.eta_seconds, st.targets_per_hour) == (6, 4, None, None)
    s.assign("w0")
    clock.now = 60.0
    s.complete("a", None)
    s.assign("w0")
    st = s.status()
    assert (st.done, st.skipped, st.running, st.pending) == (1, 2, 1, 2)
    assert st.targets_per_hour == pytest.approx(60.0)
    assert st.eta_seconds == pytest.approx(180.0)  # three more of the same length
    text = st.format()
    assert text.startswith("3/6 done, 1 running, 0 failed, 2 pending")
    assert "60.0 targets/h" in text and "ETA 3m00s" in text
    assert target_cost(200) > target_cost(100) > target_cost(10) > 1.0


# ------------------------------------------------------------------ local backend, end to end
LENGTHS = {"t1": 12, "t2": 30, "t3": 18, "t4": 25, "t5": 9, "t6": 21}


def test_local_backend_two_workers_failure_and_rerun(tmp_path):
    inp = write_fasta(tmp_path / "in.fasta", LENGTHS)
    out = tmp_path / "out"
    hook = CountingHook(str(tmp_path), fail_on="t3")
    events = []
    report = run_batch(inp, out, tiny_options(), num_workers=2, hook=hook,
                       progress=events.append)
    assert report.backend == "local" and len(report.workers) == 2
    by_tag = {r.tag: r for r in report.results}
    assert [r.tag for r in report.results] == ["t2", "t4", "t6", "t3", "t1", "t5"]
    assert by_tag["t3"].state == "failed" and "hook refuses t3" in by_tag["t3"].error
    manifest = read_json(out / "manifest.json")["targets"]
    for tag in LENGTHS:
        ok = tag != "t3"
        assert (out / tag / ".done").is_file() == ok
        assert manifest[tag]["state"] == ("done" if ok else "failed")
        assert len(hook.count(tag, "done")) == ok and len(hook.count(tag, "start")) == 1
    assert manifest["t3"]["error"] == "hook refuses t3" and manifest["t1"]["attempts"] == 1
    assert set(manifest["t2"]["outputs"]) == {
        f"t2/{p.name}" for p in (out / "t2").iterdir() if p.name != ".done"}
    assert {w for tag in LENGTHS for w in hook.count(tag, "start")} <= {"w0", "w1"}
    assert report.status.done == 5 and report.status.failed == 1
    lines = [e.format() for e in events if e.stage == "batch"]
    assert lines[-1].startswith("5/6 done, 0 running, 1 failed, 0 pending")
    assert "targets/h" in lines[-1]
    log = (out / "log.txt").read_text()
    assert "failed: hook refuses t3" in log and "Traceback" in log
    assert hidden_or_temporary(out) == []
    # The same call again runs only what is left: the failed target.
    report = run_batch(inp, out, tiny_options(), num_workers=2,
                       hook=CountingHook(str(tmp_path)))
    assert {r.tag: r.state for r in report.results} == {
        **dict.fromkeys(LENGTHS, "skipped"), "t3": "done"}
    assert len(hook.count("t3", "done")) == 1
    assert all(len(hook.count(t, "start")) == 1 for t in LENGTHS if t != "t3")


def test_local_backend_too_long_target_is_reported_and_batch_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(opts, "_free_memory", lambda device: (1.5 * (1 << 30), 0.8))
    inp = write_fasta(tmp_path / "in.fasta", {"long": 400, "short": 14})
    out = tmp_path / "out"
    report = run_batch(inp, out, tiny_options())
    states = {r.tag: (r.state, r.error) for r in report.results}
    assert states["short"] == ("done", None)
    assert states["long"][0] == "failed" and "too long: 400 residues" in states["long"][1]
    assert read_json(out / "manifest.json")["targets"]["long"]["state"] == "failed"
    assert not (out / "long").exists()


def test_msa_stage_feeds_inference(tmp_path, monkeypatch):
    from sparkfold.data import search

    calls = []

    def fake_run_search(sequences, out_dir, *, mode, **kwargs):
        results = {}
        for tag, seq in sequences.items():
            calls.append(tag)
            folder = out_dir / tag
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "uniref.a3m").write_text(f">101\n{seq}\n>h\n{seq[:-1]}-\n")
            results[tag] = search.TargetResult(tag, folder, ("uniref.a3m",), ("server",), ())
        return results

    monkeypatch.setattr(search, "run_search", fake_run_search)
    inp = write_fasta(tmp_path / "in.fasta", {"s1": 10, "s2": 16, "s3": 13})
    out = tmp_path / "out"
    report = run_batch(inp, out, tiny_options(msa="server"), num_workers=2)
    assert all(r.state == "done" for r in report.results)
    assert sorted(calls) == ["s1", "s2", "s3"]  # searched once each, not again by the worker
    for tag in ("s1", "s2", "s3"):
        config = read_json(out / tag / "config.json")
        assert config["msa_mode"] == "server" and config["msa_depth"] == 2


def test_cli_ray_without_ray_installed(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    inp = write_fasta(tmp_path / "in.fasta", {"q": 10})
    out = tmp_path / "out"
    argv = ["predict", str(inp), "--out", str(out), "--ray", "auto", "--msa", "single"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "--ray needs Ray" in err and "pip install 'sparkfold[ray]'" in err
    assert not out.exists()


def test_cli_batch_options_are_checked(tmp_path, capsys):
    inp = write_fasta(tmp_path / "in.fasta", {"q": 10})
    argv = ["predict", str(inp), "--out", str(tmp_path / "o"), "--max-attempts", "0"]
    assert cli.main(argv) == 1
    assert "--max-attempts must be >= 1" in capsys.readouterr().err
    parser = cli.build_parser()
    args = parser.parse_args(["predict", "x.fasta", "--out", "o", "--ray"])
    assert (args.ray, args.max_attempts, args.workers_per_gpu) == ("default", 3, 1)
    args = parser.parse_args(["predict", "x.fasta", "--out", "o", "--ray=10.0.0.1:6379"])
    assert args.ray == "10.0.0.1:6379"
    assert parser.parse_args(["predict", "x.fasta", "--out", "o"]).ray is None


@pytest.mark.gpu
def test_local_backend_two_workers_share_one_gpu(tmp_path):
    inp = write_fasta(tmp_path / "in.fasta", LENGTHS)
    report = run_batch(inp, tmp_path / "out", tiny_options(device="auto", precision="auto"),
                       workers_per_gpu=2)
    assert all(r.state == "done" for r in report.results)
    assert report.workers and all(w.device.startswith("cuda") for w in report.workers)
    full = run_batch(inp, tmp_path / "out1", tiny_options(device="auto"), num_workers=1)
    assert report.workers[0].max_length < full.workers[0].max_length  # half the memory each


def test_worker_threads_sharing_a_gpu_run_without_cuda_graphs(tmp_path):
    from sparkfold.runner.ray_backend import LocalBackend

    options = tiny_options(cuda_graphs="on")
    backend = LocalBackend(options, [], tmp_path, ["cuda:0", "cuda:0", "cuda:1", "cpu", "cpu"])
    assert backend.worker_options("cuda:0").cuda_graphs == "off"
    assert backend.worker_options("cuda:1").cuda_graphs == "on"
    assert backend.worker_options("cpu") is options
