"""Relax on the OpenMM CUDA platform (run by the lead on a GPU machine; skipped without CUDA)."""

import numpy as np
import pytest

from sparkfold.relax.pdb_utils import parse_pdb

SAMPLE = ("data", "openfold_examples", "examples", "monomer", "sample_predictions")


@pytest.mark.gpu
def test_openfold_sample_relaxes_on_cuda(relax_deps):
    import openmm
    from testutil import shared_path

    from sparkfold.relax import relax_pdb

    names = [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]
    assert "CUDA" in names, (
        f"OpenMM has no CUDA platform (platforms: {names}; plugin failures: "
        f"{openmm.Platform.getPluginLoadFailures()}); install it with pip install 'openmm[cuda13]'"
    )
    folder = shared_path(*SAMPLE)
    reference = parse_pdb((folder / "6KWC_1_model_1_ptm_relaxed.pdb").read_text())
    result = relax_pdb((folder / "6KWC_1_model_1_ptm_unrelaxed.pdb").read_text(), platform="CUDA")
    auto = relax_pdb((folder / "6KWC_1_model_1_ptm_unrelaxed.pdb").read_text())
    assert result.platform == "CUDA" and auto.platform == "CUDA"
    assert result.violations_after.total == 0
    out = parse_pdb(result.pdb)
    diffs = [
        np.sum((ours.atom(n) - theirs.atom(n)) ** 2)
        for ours, theirs in zip(out.residues, reference.residues)
        for n, e in zip(theirs.atom_names, theirs.elements)
        if e != "H"
    ]
    assert np.sqrt(np.mean(diffs)) < 0.1
    print(f"CUDA relax of 6KWC: {result.seconds:.2f} s, rmsd to input {result.rmsd:.3f} Å")
