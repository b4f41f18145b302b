"""ModelCIF (mmCIF) files of predictions, written with the ``modelcif`` package.

pLDDT is stored twice, as viewers expect (``shared/spec/outputs.md`` §4): as the per-residue
local QA metric ``_ma_qa_metric_local`` (type ``pLDDT``; Mol* colours by it) and in
``_atom_site.B_iso_or_equiv`` of every atom. The mean pLDDT and pTM are global metrics; PAE can
be added as the local-pairwise metric (``_ma_qa_metric_local_pairwise``, N² rows, off by default).

``modelcif`` (and its dependency ``ihm``) is an optional dependency (``pip install
sparkfold[report]``), imported only when a file is written. Reading uses ``gemmi``.
"""

import os
from pathlib import Path

import numpy as np

from sparkfold import __version__
from sparkfold import constants as rc
from sparkfold.errors import SparkfoldError
from sparkfold.io.atomic import atomic_write
from sparkfold.io.deps import MissingDependencyError, require
from sparkfold.io.prediction import Prediction

__all__ = ["MissingDependencyError", "MmcifParseError", "read_mmcif", "to_mmcif", "write_mmcif"]


class MmcifParseError(SparkfoldError):
    """An mmCIF file cannot be read or holds no protein model."""


def _import_modelcif():
    for name in ("ihm", "modelcif", "modelcif.dumper", "modelcif.model", "modelcif.qa_metric"):
        require(name, package="modelcif", purpose="writing mmCIF (ModelCIF)")
    import ihm
    import modelcif

    return ihm, modelcif


def _metric_classes(modelcif):
    qa = modelcif.qa_metric

    class LocalPLDDT(qa.Local, qa.PLDDT):
        """Predicted lDDT-Ca per residue (0-100)"""

        name = "pLDDT"
        software = None

    class GlobalPLDDT(qa.Global, qa.PLDDT):
        """Mean predicted lDDT-Ca over residues (0-100)"""

        name = "pLDDT"
        software = None

    class GlobalPTM(qa.Global, qa.PTM):
        """Predicted TM-score (0-1)"""

        name = "pTM"
        software = None

    class LocalPairwisePAE(qa.LocalPairwise, qa.PAE):
        """Predicted aligned error in Angstrom (aligned on residue 1, error at residue 2)"""

        name = "PAE"
        software = None

    return LocalPLDDT, GlobalPLDDT, GlobalPTM, LocalPairwisePAE


def to_mmcif(
    prediction: Prediction,
    *,
    entry_id: str = "sparkfold",
    title: str | None = None,
    include_pae: bool = False,
) -> str:
    """The ModelCIF text of a prediction.

    Args:
        prediction: The structure to write.
        entry_id: ``data_`` block name / ``_entry.id`` (spaces become ``_``).
        title: ``_struct.title``; default names the model.
        include_pae: Also write the PAE matrix as a local-pairwise metric (N² rows).

    Returns:
        The file content.

    Raises:
        MissingDependencyError: ``modelcif`` is not installed.
    """
    import io

    ihm, modelcif = _import_modelcif()
    LocalPLDDT, GlobalPLDDT, GlobalPTM, LocalPairwisePAE = _metric_classes(modelcif)
    alphabet = ihm.LPeptideAlphabet()
    unknown = ihm.LPeptideChemComp("UNK", "X", "X")

    def chem_comp(letter: str):
        try:
            return alphabet[letter]
        except KeyError:
            return unknown

    entry_id = "".join(c if c.isalnum() or c in "_-." else "_" for c in entry_id) or "sparkfold"
    system = modelcif.System(
        title=title or f"sparkfold prediction {prediction.model_name}", id=entry_id)
    system.software.append(modelcif.Software(
        name="sparkfold", classification="model building",
        description="AlphaFold2/OpenFold-compatible structure prediction",
        location="https://pypi.org/project/sparkfold/", type="package", version=__version__))

    # One entity per distinct chain sequence, one asym unit per chain; label_seq_id counts
    # 1..L within the chain, auth_seq_id is residue_index + 1.
    entities: dict[str, object] = {}
    asyms = []
    residue_slots = []  # per residue: (asym, label_seq_id)
    for chain_number, chain_id in enumerate(prediction.chain_ids):
        rows = np.flatnonzero(prediction.chain_index == chain_number)
        if rows.size == 0:
            continue
        seq = "".join(prediction.sequence[r] for r in rows)
        if seq not in entities:
            entities[seq] = modelcif.Entity([chem_comp(c) for c in seq],
                                            description=f"{prediction.model_name} chain {chain_id}")
        auth_map = {k + 1: int(prediction.residue_index[r]) + 1 for k, r in enumerate(rows)}
        asym = modelcif.AsymUnit(entities[seq], details=f"chain {chain_id}", id=chain_id,
                                 auth_seq_id_map=auth_map)
        asyms.append(asym)
        residue_slots.extend((r, asym, k + 1) for k, r in enumerate(rows))
    residue_slots.sort(key=lambda t: t[0])

    assembly = modelcif.Assembly(asyms, name="prediction")
    model = modelcif.model.AbInitioModel(assembly, name=prediction.model_name)
    positions = prediction.atom_positions
    mask = prediction.atom_mask
    b = prediction.b_factors()
    for r, asym, seq_id in residue_slots:
        for j, atom in enumerate(rc.atom_types):
            if mask[r, j] < 0.5:
                continue
            x, y, z = (round(float(v), 3) for v in positions[r, j])
            model.add_atom(modelcif.model.Atom(
                asym_unit=asym, seq_id=seq_id, atom_id=atom, type_symbol=atom[0], x=x, y=y, z=z,
                het=False, biso=round(float(b[r, j]), 2), occupancy=1.0))
    for r, asym, seq_id in residue_slots:
        model.qa_metrics.append(LocalPLDDT(asym.residue(seq_id), round(float(prediction.plddt[r]), 2)))
    model.qa_metrics.append(GlobalPLDDT(round(prediction.mean_plddt, 2)))
    if prediction.ptm is not None:
        model.qa_metrics.append(GlobalPTM(round(prediction.ptm, 3)))
    if include_pae and prediction.pae is not None:
        for r1, a1, s1 in residue_slots:
            res1 = a1.residue(s1)
            for r2, a2, s2 in residue_slots:
                model.qa_metrics.append(LocalPairwisePAE(
                    res1, a2.residue(s2), round(float(prediction.pae[r1, r2]), 2)))
    system.model_groups.append(modelcif.model.ModelGroup([model], name="sparkfold predictions"))
    out = io.StringIO()
    modelcif.dumper.write(out, [system])
    return out.getvalue()


def write_mmcif(path: str | os.PathLike, prediction: Prediction, **kwargs) -> Path:
    """Write :func:`to_mmcif` output to ``path`` atomically; keyword arguments as there."""
    return atomic_write(path, to_mmcif(prediction, **kwargs))


def read_mmcif(path: str | os.PathLike, *, model_name: str | None = None) -> Prediction:
    """Read an (m)mCIF model back into atom37 arrays with ``gemmi``.

    Uses the first model; residue numbers come from ``auth_seq_id`` (``residue_index`` =
    number − 1). pLDDT comes from ``_ma_qa_metric_local`` when the file has a pLDDT local metric,
    else from the CA B-factors. The global pTM metric is read back when present.

    Raises:
        MmcifParseError: the file cannot be parsed or has no protein atoms.
    """
    import gemmi

    path = Path(path)
    try:
        doc = gemmi.cif.read(str(path))
        block = doc.sole_block()
        structure = gemmi.make_structure_from_block(block)
    except (OSError, RuntimeError, ValueError) as exc:
        raise MmcifParseError(f"cannot read mmCIF file {path}: {exc}",
                              fix="pass a valid mmCIF/ModelCIF file") from None
    if len(structure) == 0:
        raise MmcifParseError(f"{path} has no model", fix="pass a file with atom_site records")
    model = structure[0]
    atom_order = rc.atom_order
    three_to_index = {rc.restype_1to3[c]: i for i, c in enumerate(rc.RESTYPES)}
    aatype, resnum, pos, mask, bca, chain_index, chain_ids, label_keys = [], [], [], [], [], [], [], []
    for chain in model:
        residues = chain.get_polymer() if len(chain.get_polymer()) else chain
        for res in residues:
            if res.het_flag == "H":
                continue
            if chain.name not in chain_ids:
                chain_ids.append(chain.name)
            p = np.zeros((37, 3))
            m = np.zeros(37)
            bs = {}
            for atom in res:
                j = atom_order.get(atom.name)
                if j is None or (atom.altloc not in ("\0", " ", "A") and m[j]):
                    continue
                p[j] = [atom.pos.x, atom.pos.y, atom.pos.z]
                m[j] = 1.0
                bs[atom.name] = atom.b_iso
            aatype.append(three_to_index.get(res.name, rc.UNK_INDEX))
            resnum.append(res.seqid.num)
            pos.append(p)
            mask.append(m)
            bca.append(bs.get("CA", float(np.mean(list(bs.values()))) if bs else 0.0))
            chain_index.append(chain_ids.index(chain.name))
            label_keys.append((res.subchain, res.label_seq))
    if not aatype:
        raise MmcifParseError(f"{path} has no protein residues", fix="pass a protein model")
    plddt = np.asarray(bca, dtype=np.float64)
    local = _local_plddt(block)
    if local:
        plddt = np.asarray([local.get(k, p) for k, p in zip(label_keys, plddt)])
    return Prediction(
        aatype=np.asarray(aatype), residue_index=np.asarray(resnum) - 1,
        atom_positions=np.stack(pos), atom_mask=np.stack(mask), plddt=plddt,
        ptm=_global_metric(block, "pTM"), chain_index=np.asarray(chain_index),
        chain_ids=tuple(chain_ids), model_name=model_name or path.stem.removesuffix(".cif"),
    )


def _metric_ids(block, metric_type: str, mode: str) -> set[str]:
    table = block.find("_ma_qa_metric.", ["id", "type", "mode"])
    return {row[0] for row in table if row[1] == metric_type and row[2] == mode}


def _local_plddt(block) -> dict[tuple[str, int], float]:
    ids = _metric_ids(block, "pLDDT", "local")
    if not ids:
        return {}
    table = block.find("_ma_qa_metric_local.",
                       ["model_id", "label_asym_id", "label_seq_id", "metric_id", "metric_value"])
    first_model = None
    out = {}
    for row in table:
        if row[3] not in ids:
            continue
        first_model = first_model or row[0]
        if row[0] == first_model:
            out[(row[1], int(row[2]))] = float(row[4])
    return out


def _global_metric(block, metric_type: str) -> float | None:
    ids = _metric_ids(block, metric_type, "global")
    if not ids:
        return None
    for row in block.find("_ma_qa_metric_global.", ["metric_id", "metric_value"]):
        if row[0] in ids:
            return float(row[1])
    return None
