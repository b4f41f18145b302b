"""sparkfold.paths: cache directory, config file, database settings."""

import platformdirs
import pytest

from sparkfold import paths
from sparkfold.errors import ConfigError, SparkfoldError


def _env(tmp_path, **extra):
    """An isolated environment whose config file is tmp_path/sparkfold.toml (empty if new)."""
    config = tmp_path / "sparkfold.toml"
    if not config.exists():
        config.write_text("")
    return {"SPARKFOLD_CONFIG": str(tmp_path / "sparkfold.toml"), **extra}


def _write_config(tmp_path, text):
    path = tmp_path / "sparkfold.toml"
    path.write_text(text)
    return path


def test_cache_dir_env_override_and_default(tmp_path):
    assert paths.cache_dir({"SPARKFOLD_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    default = platformdirs.user_cache_dir("sparkfold", appauthor=False)
    assert str(paths.cache_dir({})) == default
    assert str(paths.cache_dir({"SPARKFOLD_CACHE": "  "})) == default
    assert paths.weights_dir({"SPARKFOLD_CACHE": str(tmp_path)}) == tmp_path / "params"


def test_cache_dir_is_not_created_but_ensure_creates(tmp_path):
    env = {"SPARKFOLD_CACHE": str(tmp_path / "a" / "b")}
    assert not paths.cache_dir(env).exists()
    assert paths.ensure_cache_dir(env).is_dir()


def test_ensure_cache_dir_error_names_dir_and_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SparkfoldError, match="SPARKFOLD_CACHE") as info:
        paths.ensure_cache_dir({"SPARKFOLD_CACHE": str(blocker / "cache")})
    assert str(blocker / "cache") in str(info.value)


def test_config_file_default_and_override(tmp_path):
    default = platformdirs.user_config_dir("sparkfold", appauthor=False)
    assert str(paths.config_file({})) == f"{default}/sparkfold.toml"
    assert paths.config_file(_env(tmp_path)) == tmp_path / "sparkfold.toml"


def test_databases_from_toml_with_root_and_relative_paths(tmp_path):
    (tmp_path / "data").mkdir()
    _write_config(tmp_path, """
[databases]
root = "data"
uniref90 = "uniref90/uniref90.fasta"
bfd = "/abs/bfd/bfd_prefix"

[other]
ignored = 1
""")
    dbs = paths.configured_databases(env=_env(tmp_path))
    assert dbs == {
        "uniref90": tmp_path / "data" / "uniref90" / "uniref90.fasta",
        "bfd": paths.Path("/abs/bfd/bfd_prefix"),
    }
    settings = paths.database_settings(env=_env(tmp_path))
    assert settings["uniref90"].source == "config"
    assert settings["uniref90"].origin == str(tmp_path / "sparkfold.toml")


def test_relative_paths_without_root_are_relative_to_config_file(tmp_path):
    _write_config(tmp_path, '[databases]\nmgnify = "mg/mgy.fa"\npdb_mmcif = "~/mmcif"\n')
    dbs = paths.configured_databases(env=_env(tmp_path))
    assert dbs["mgnify"] == tmp_path / "mg" / "mgy.fa"
    assert dbs["pdb_mmcif"] == paths.Path("~/mmcif").expanduser()


def test_env_overrides_file_and_empty_value_removes(tmp_path):
    _write_config(tmp_path, '[databases]\nuniref90 = "/file/u90.fa"\nmgnify = "/file/mg.fa"\n')
    env = _env(tmp_path, SPARKFOLD_DB_UNIREF90="/env/u90.fa", SPARKFOLD_DB_MGNIFY="",
               SPARKFOLD_DB_PDB70="/env/pdb70/pdb70")
    settings = paths.database_settings(env=env)
    assert settings["uniref90"].path == paths.Path("/env/u90.fa")
    assert settings["uniref90"].source == "env"
    assert settings["uniref90"].origin == "SPARKFOLD_DB_UNIREF90"
    assert "mgnify" not in settings
    assert settings["pdb70"].path == paths.Path("/env/pdb70/pdb70")
    # Returned in DATABASE_NAMES order.
    order = [n for n in paths.DATABASE_NAMES if n in settings]
    assert list(settings) == order


def test_env_only_without_config_file(tmp_path):
    env = _env(tmp_path, SPARKFOLD_DB_UNIPROT="/u/uniprot.fasta")
    assert paths.configured_databases(env=env) == {"uniprot": paths.Path("/u/uniprot.fasta")}
    assert paths.database_path("uniprot", env=env) == paths.Path("/u/uniprot.fasta")


def test_missing_default_config_file_is_empty(tmp_path):
    assert paths.load_config(tmp_path / "absent.toml") == {}


def test_missing_file_named_by_env_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="SPARKFOLD_CONFIG"):
        paths.configured_databases(env={"SPARKFOLD_CONFIG": str(tmp_path / "nope.toml")})


def test_invalid_toml_names_file_line_and_fix(tmp_path):
    path = _write_config(tmp_path, "[databases]\nuniref90 = /data/uniref90.fasta\n")
    with pytest.raises(ConfigError) as info:
        paths.configured_databases(env=_env(tmp_path))
    message = str(info.value)
    assert str(path) in message and "not valid TOML" in message
    assert "line 2" in message and "Fix:" in message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[databases]\nuniref91 = "/x"\n', "unknown database 'uniref91'"),
        ("[databases]\nuniref90 = 3\n", "must be a non-empty string"),
        ('[databases]\nuniref90 = ""\n', "must be a non-empty string"),
        ('databases = "x"\n', "must be a table"),
        ("[databases]\nroot = 1\n", "root must be a string"),
    ],
)
def test_invalid_database_table(tmp_path, text, match):
    _write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=match):
        paths.database_settings(env=_env(tmp_path))


def test_unreadable_config_is_a_clear_error(tmp_path):
    (tmp_path / "sparkfold.toml").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        paths.load_config(env=_env(tmp_path))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[databases]\nuniref90 = "/caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        paths.load_config(bad)


def test_database_path_not_configured_names_env_var_and_file(tmp_path):
    with pytest.raises(paths.DatabaseNotConfiguredError) as info:
        paths.database_path("bfd", env=_env(tmp_path))
    assert "SPARKFOLD_DB_BFD" in str(info.value)
    assert str(tmp_path / "sparkfold.toml") in str(info.value)
    assert isinstance(info.value, SparkfoldError)
    with pytest.raises(ValueError, match="unknown database"):
        paths.database_path("nope", env=_env(tmp_path))


def test_sparkfold_error_formats_problem_and_fix():
    err = SparkfoldError("uniref90 is missing.", fix="set SPARKFOLD_DB_UNIREF90")
    assert str(err) == "uniref90 is missing. Fix: set SPARKFOLD_DB_UNIREF90"
    assert err.problem == "uniref90 is missing." and err.fix == "set SPARKFOLD_DB_UNIREF90"
    assert str(SparkfoldError("plain")) == "plain" and err.exit_code == 1
