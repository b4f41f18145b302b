"""The `sparkfold` command line: global flags, error handling, `doctor` exit codes."""

import importlib
import json
import os
import subprocess
import sys
import types

import pytest
from testutil import isolate_user_dirs

from sparkfold import __version__, cli
from sparkfold.errors import SparkfoldError


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """Point the cache and the config file at tmp_path."""
    isolate_user_dirs(tmp_path, monkeypatch)
    return tmp_path


@pytest.fixture
def failing_command(monkeypatch):
    """A registered command whose run raises a SparkfoldError."""
    module = types.ModuleType("sparkfold.commands.failing_for_test")

    def register(subparsers):
        subparsers.add_parser("failing_for_test").set_defaults(func=module.run)

    def run(args):
        raise SparkfoldError("database 'bfd' is not configured", fix="set SPARKFOLD_DB_BFD")

    module.register, module.run = register, run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "failing_for_test"])


def test_every_command_module_has_register_and_run():
    assert "doctor" in cli.COMMANDS
    for name in cli.COMMANDS:
        module = importlib.import_module(f"sparkfold.commands.{name}")
        assert callable(module.register) and callable(module.run)
    assert set(cli.build_parser()._subparsers._group_actions[0].choices) >= set(cli.COMMANDS)


def test_version_and_help(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sparkfold {__version__}"
    assert cli.main(["--help"]) == 0
    assert "doctor" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == 2
    assert "usage: sparkfold" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["doctor", "--no-such-flag"]) == 2


def test_user_error_is_one_line_without_traceback(failing_command, capsys):
    assert cli.main(["failing_for_test"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "sparkfold: error: database 'bfd' is not configured. Fix: set SPARKFOLD_DB_BFD\n"
    )


@pytest.mark.parametrize("argv", [["-v", "failing_for_test"], ["failing_for_test", "-v"]])
def test_verbose_adds_traceback(failing_command, capsys, argv):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("Fix: set SPARKFOLD_DB_BFD")


def test_doctor_json_in_process(user_dirs, capsys):
    assert cli.main(["doctor", "--json", "--no-launch"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["exit_code"] == 0
    cache = [c for c in report["checks"] if c["name"] == "cache"][0]
    assert str(user_dirs / "cache") in cache["message"]


def test_doctor_text_and_ascii(user_dirs, capsys):
    assert cli.main(["doctor", "--no-launch"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("sparkfold doctor") and "✓ torch:" in text
    assert cli.main(["doctor", "--no-launch", "--ascii"]) == 0
    capsys.readouterr().out.encode("ascii")


def test_doctor_exits_1_when_a_required_check_fails(user_dirs, capsys):
    (user_dirs / "cache").write_text("")  # the cache path is a file: not usable
    assert cli.main(["doctor", "--no-launch"]) == 1
    out = capsys.readouterr().out
    assert "✗ cache:" in out and "Required checks failed: cache." in out


def test_help_does_not_import_torch():
    code = ("import sys; from sparkfold.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_m_sparkfold_doctor_json(tmp_path):
    config = tmp_path / "sparkfold.toml"
    config.write_text("")
    env = dict(os.environ, SPARKFOLD_CACHE=str(tmp_path / "cache"),
               SPARKFOLD_CONFIG=str(config))
    proc = subprocess.run([sys.executable, "-m", "sparkfold", "doctor", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["matmul"] == "ok" and statuses["compute device"] == "ok"
