"""The real 6KWC alignments (../shared) → raw features → model batch → the model runs on it."""

import torch
from testutil import shared_path

from sparkfold.config import ModelConfig
from sparkfold.data import make_batch, raw_features
from sparkfold.data.parsers import read_fasta
from sparkfold.weights import load_model


def test_6kwc_alignments_build_a_batch_the_model_runs_on():
    example = shared_path("data", "openfold_examples", "examples", "monomer")
    (record,) = read_fasta(example / "fasta_dir" / "6kwc.fasta")
    raw = raw_features(record.sequence, example / "alignments" / record.tag,
                       description=record.description)
    n = len(record.sequence)
    assert raw["msa"].shape[1] == n and raw["msa"].shape[0] > 1000

    # The full model_3_ptm batch (512 clusters, 5120 extra rows), one recycle to keep CI fast.
    batch = make_batch(raw, preset="model_3_ptm", seed=0, num_recycles=1)
    assert batch["msa_feat"].shape == (512, n, 49, 2)
    assert batch["extra_msa"].shape == (5120, n, 2)

    # The tiny random-weight model of the same (no-template) architecture consumes it as it is.
    model = load_model("random", preset=ModelConfig.tiny(templates=False))
    with torch.no_grad():
        out = model(batch)
    assert out["final_atom_positions"].shape == (n, 37, 3)
    assert torch.isfinite(out["final_atom_positions"]).all()
    assert out["plddt"].shape == (n,) and ((out["plddt"] >= 0) & (out["plddt"] <= 100)).all()
    assert int(out["num_recycles"]) == 2
