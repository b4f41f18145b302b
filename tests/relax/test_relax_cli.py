"""``sparkfold relax IN.pdb --out OUT.pdb``."""

import json

import pytest

from sparkfold.commands import relax as relax_command
from sparkfold.relax.pdb_utils import parse_pdb


def _main(argv):
    from sparkfold.cli import main

    return main(argv)


def test_cli_defaults_match_the_library():
    from sparkfold import relax

    assert relax_command._STIFFNESS == relax.DEFAULT_STIFFNESS
    assert relax_command._TOLERANCE == relax.DEFAULT_TOLERANCE
    assert relax_command._MAX_OUTER == relax.DEFAULT_MAX_OUTER_ITERATIONS


def test_default_output_name(tmp_path):
    assert (
        relax_command.default_output(tmp_path / "x_model_1_unrelaxed.pdb").name
        == "x_model_1_relaxed.pdb"
    )
    assert relax_command.default_output(tmp_path / "x.pdb").name == "x_relaxed.pdb"


def test_relax_command_writes_pdb_and_report(relax_deps, peptide, pdb_text, tmp_path, capsys):
    src = tmp_path / "pep_unrelaxed.pdb"
    src.write_text(pdb_text(peptide("GSAKAG")))
    out, report = tmp_path / "out.pdb", tmp_path / "report.json"
    rc = _main(
        [
            "relax",
            str(src),
            "--out",
            str(out),
            "--platform",
            "CPU",
            "--json",
            str(report),
            "--tolerance",
            "2.39",
            "--stiffness",
            "5",
            "--max-outer-iterations",
            "3",
        ]
    )
    assert rc == 0
    assert len(parse_pdb(out.read_text()).residues) == 6
    data = json.loads(report.read_text())
    assert data["platform"] == "CPU" and data["output"] == str(out)
    assert data["settings"] == {
        "stiffness_kcal_mol_A2": 5.0,
        "tolerance_kj_mol_nm": 2.39,
        "max_iterations": 0,
        "max_outer_iterations": 3,
    }
    assert data["violations_after"]["total"] == 0
    printed = capsys.readouterr().out
    assert "on CPU" in printed and "kcal/mol" in printed and "RMSD" in printed
    # Default output name.
    assert _main(["relax", str(src), "--platform", "CPU"]) == 0
    assert (tmp_path / "pep_relaxed.pdb").is_file()


def test_relax_command_error_leaves_no_output(relax_deps, peptide, pdb_text, tmp_path, capsys):
    residues = peptide("GAAAG")
    residues[2] = ("XYZ",) + residues[2][1:]
    src = tmp_path / "bad.pdb"
    src.write_text(pdb_text(residues))
    out = tmp_path / "out.pdb"
    assert _main(["relax", str(src), "--out", str(out), "--platform", "CPU"]) == 1
    err = capsys.readouterr().err
    assert "residue A 3 XYZ is not a standard amino acid" in err and "Fix:" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.pdb"]


def test_relax_command_refuses_to_overwrite_input(tmp_path, capsys):
    src = tmp_path / "a.pdb"
    src.write_text("END\n")
    assert _main(["relax", str(src), "--out", str(src)]) == 1
    assert "is the input file" in capsys.readouterr().err
    assert _main(["relax", str(tmp_path / "missing.pdb")]) == 1


@pytest.mark.parametrize("argv", [["relax", "x.pdb", "--platform", "TPU"], ["relax"]])
def test_usage_errors(argv):
    assert _main(argv) == 2


def test_imports_stay_lazy():
    import subprocess
    import sys

    code = (
        "import sys, sparkfold.relax, sparkfold.commands.relax; "
        "sparkfold.relax.RelaxError; sparkfold.relax.Violations; "
        "print(sorted(m for m in ('openmm', 'pdbfixer', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
