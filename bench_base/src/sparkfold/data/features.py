"""The raw feature dict of one target (OpenFold ``DataPipeline.process_fasta``).

:func:`raw_features` combines sequence features, MSA features (:mod:`sparkfold.data.msa`) and
template features (:mod:`sparkfold.data.templates`) into the numpy dict of
``shared/spec/features.md`` §1; :func:`mmcif_features` gives the features of a chain of a
known structure (OpenFold ``make_mmcif_features``).
"""

import datetime
import os
from pathlib import Path

import numpy as np

from sparkfold.data import msa as msa_lib
from sparkfold.data import templates as templates_lib
from sparkfold.data.parsers import MmcifStructure

__all__ = ["check_sequence", "mmcif_features", "raw_features", "sequence_features"]


def check_sequence(sequence: str) -> str:
    """Upper-case a protein sequence and check it holds letters only (clear error otherwise)."""
    if not isinstance(sequence, str):
        raise TypeError(f"sequence must be a str, got {type(sequence).__name__}")
    upper = sequence.upper()
    if not upper:
        raise ValueError("the sequence is empty")
    if not (upper.isascii() and upper.isalpha()):
        bad = next(c for c in upper if not (c.isascii() and c.isalpha()))
        raise ValueError(
            f"the sequence contains {bad!r}; only amino-acid letters are allowed (no gaps, digits "
            "or spaces)"
        )
    return upper


def sequence_features(sequence: str, description: str) -> dict[str, np.ndarray]:
    """Per-sequence features (OpenFold ``make_sequence_features``).

    ``aatype`` is the int32 one-hot [N, 21] over ``ARNDCQEGHILKMFPSTWYVX``; any letter outside
    the 20 standard residues maps to X.
    """
    from sparkfold import constants as rc

    num_res = len(sequence)
    order = rc.restype_order_with_x
    ids = np.array([order.get(c, order["X"]) for c in sequence], dtype=np.int64)
    aatype = np.zeros((num_res, 21), dtype=np.int32)
    aatype[np.arange(num_res), ids] = 1
    return {
        "aatype": aatype,
        "between_segment_residues": np.zeros((num_res,), dtype=np.int32),
        "domain_name": np.array([description.encode("utf-8")], dtype=object),
        "residue_index": np.arange(num_res, dtype=np.int32),
        "seq_length": np.full((num_res,), num_res, dtype=np.int32),
        "sequence": np.array([sequence.encode("utf-8")], dtype=object),
    }


def mmcif_features(structure: MmcifStructure, chain_id: str) -> dict[str, np.ndarray]:
    """Features of one chain of a parsed mmCIF (OpenFold ``make_mmcif_features``).

    Sequence features of the chain's SEQRES (domain name ``<file_id>_<chain>``) plus
    ``all_atom_positions`` [N,37,3] / ``all_atom_mask`` [N,37] (not centred), ``resolution``
    float32 [1], ``release_date`` object [1] (bytes) and ``is_distillation`` float32 0.
    """
    if chain_id not in structure.chains:
        raise KeyError(
            f"{structure.file_id} has no protein chain {chain_id!r}; chains: {sorted(structure.chains)}"
        )
    chain = structure.chains[chain_id]
    features = sequence_features(chain.sequence, f"{structure.file_id}_{chain_id}")
    positions, mask = structure.atom37(chain_id)
    features["all_atom_positions"] = positions
    features["all_atom_mask"] = mask
    features["resolution"] = np.array([structure.resolution], dtype=np.float32)
    features["release_date"] = np.array(
        [(structure.release_date or "").encode("utf-8")], dtype=object
    )
    features["is_distillation"] = np.array(0.0, dtype=np.float32)
    return features


def raw_features(
    sequence: str,
    alignment_dir: str | os.PathLike | None = None,
    *,
    description: str = "query",
    mmcif_dir: str | os.PathLike | None = None,
    max_template_date: str | datetime.date | None = None,
    max_templates: int = 4,
    obsolete_pdbs_path: str | os.PathLike | None = None,
    release_dates_path: str | os.PathLike | None = None,
    kalign_binary: str = "kalign",
    max_msa_sequences: int | None = None,
    return_template_report: bool = False,
):
    """The raw feature dict of a target (``shared/spec/features.md`` §1, numpy).

    Args:
        sequence: the query (letters; lower case is upper-cased).
        alignment_dir: the target's alignment folder (``<alignments>/<tag>/``, layout in
            docs/alignments.md), a single ``.a3m`` file, or None for single-sequence mode
            (a 1-row MSA of the query).
        description: stored as ``domain_name`` (the FASTA header).
        mmcif_dir: template structure folder; None disables templates (zero templates, as
            OpenFold without a template featurizer).
        max_template_date: ``YYYY-MM-DD`` release cutoff for templates (None: today).
        max_templates: templates kept at most (4 in predict mode).
        obsolete_pdbs_path, release_dates_path, kalign_binary: see
            :func:`sparkfold.data.templates.template_features`.
        max_msa_sequences: rows read per MSA file at most (None: all, as OpenFold).
        return_template_report: also return the TemplateSearchResult (errors/warnings).

    Returns:
        The feature dict (or ``(features, TemplateSearchResult | None)``). Byte-string
        features are numpy object arrays of ``bytes``, as OpenFold has them.
    """
    sequence = check_sequence(sequence)
    features = sequence_features(sequence, description)
    hits = []
    if alignment_dir is None:
        features.update(msa_lib.msa_features([msa_lib.single_sequence_msa(sequence)]))
    else:
        path = Path(alignment_dir)
        if path.is_file():
            if path.suffix != ".a3m":
                raise ValueError(
                    f"{path}: a single alignment file must be .a3m (or pass its folder)"
                )
            features.update(msa_lib.msa_features_from_a3m(path, sequence))
        elif path.is_dir():
            features.update(
                msa_lib.msa_features_from_dir(path, sequence, max_sequences=max_msa_sequences)
            )
            if mmcif_dir is not None:
                hits = templates_lib.read_template_hits(path, sequence)
        else:
            raise FileNotFoundError(f"alignment folder {path} does not exist")

    report = None
    if mmcif_dir is None or not hits:
        features.update(templates_lib.empty_template_features(len(sequence)))
    else:
        report = templates_lib.template_features(
            sequence,
            hits,
            mmcif_dir=mmcif_dir,
            max_template_date=max_template_date,
            max_templates=max_templates,
            obsolete_pdbs_path=obsolete_pdbs_path,
            release_dates_path=release_dates_path,
            kalign_binary=kalign_binary,
        )
        features.update(report.features)
    return (features, report) if return_template_report else features
