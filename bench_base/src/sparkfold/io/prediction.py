"""The :class:`Prediction` record: one predicted structure with its confidence, as numpy arrays.

Everything written for a user (PDB, mmCIF, scores JSON, plots, report) is made from a
:class:`Prediction`; :meth:`Prediction.from_model_output` builds one from the model's output dict
and the batch it was run on.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from sparkfold import constants as rc

__all__ = ["PDB_CHAIN_IDS", "Prediction", "aatype_from_sequence", "sequence_from_aatype"]

#: Chain identifiers in the order they are handed out (PDB allows one character; 62 chains).
PDB_CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def sequence_from_aatype(aatype: np.ndarray) -> str:
    """One-letter sequence of model-order ``aatype`` (0–19 standard, anything else → ``X``)."""
    letters = rc.RESTYPES
    return "".join(letters[a] if 0 <= a < 20 else "X" for a in np.asarray(aatype).tolist())


def aatype_from_sequence(sequence: str) -> np.ndarray:
    """Model-order ``aatype`` [N] of a one-letter sequence (unknown letters → 20 = ``X``)."""
    order = {c: i for i, c in enumerate(rc.RESTYPES)}
    return np.asarray([order.get(c, rc.UNK_INDEX) for c in sequence.upper()], dtype=np.int64)


def _to_numpy(value) -> np.ndarray:
    """A tensor or array-like as numpy (float tensors of any dtype, bf16 included, → float32)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        tensor = value.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


def _last_recycle(value, num_res: int) -> np.ndarray:
    """Drop the recycling axis (last) of a batch feature: ``[N, R]`` → ``[N]``."""
    array = _to_numpy(value)
    if array.ndim >= 2 and array.shape[0] == 1 and array.shape[1] == num_res:
        array = array[0]  # a leading batch dim of one
    if array.ndim == 2:
        array = array[..., -1]
    if array.ndim != 1 or array.shape[0] != num_res:
        raise ValueError(
            f"batch feature of shape {_to_numpy(value).shape} does not fit {num_res} residues "
            "(expected [N] or [N, R] with the recycling axis last)"
        )
    return array


def _squeeze_batch(array: np.ndarray, ndim: int) -> np.ndarray:
    if array.ndim == ndim + 1 and array.shape[0] == 1:
        return array[0]
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
    """One predicted protein structure and its confidence, padding removed.

    ``residue_index`` is 0-based as in the model features; written files number residues
    ``residue_index + 1`` (OpenFold/AF2 convention).

    Attributes:
        aatype: [N] int, model order (``ARNDCQEGHILKMFPSTWYV``, 20 = unknown).
        residue_index: [N] int, 0-based residue numbers.
        atom_positions: [N, 37, 3] float32, atom37 coordinates in Å.
        atom_mask: [N, 37] float32, 1 where the atom exists.
        plddt: [N] float32, per-residue pLDDT on 0–100.
        pae: [N, N] float32 predicted aligned error in Å (row = aligned-on residue), or ``None``
            when the model has no PAE head.
        ptm: predicted TM-score in [0, 1], or ``None``.
        max_pae: the model's ``max_predicted_aligned_error`` (largest representable PAE, 31.75
            for AF2 heads), or ``None``. Note: ColabFold's scores JSON ``max_pae`` is instead the
            largest value of :attr:`pae` (:func:`sparkfold.io.confidence.scores_dict`).
        chain_index: [N] int, index into :attr:`chain_ids` for every residue.
        chain_ids: chain identifier per chain index (``("A",)`` for a monomer).
        model_name: e.g. ``"alphafold2_ptm_model_1_seed_000"``.
        sequence: one-letter sequence (``X`` for unknown), length N.
    """

    aatype: np.ndarray
    residue_index: np.ndarray
    atom_positions: np.ndarray
    atom_mask: np.ndarray
    plddt: np.ndarray
    pae: np.ndarray | None = None
    ptm: float | None = None
    max_pae: float | None = None
    chain_index: np.ndarray | None = None
    chain_ids: tuple[str, ...] = ("A",)
    model_name: str = "model"
    sequence: str = ""

    def __post_init__(self) -> None:
        aatype = np.asarray(self.aatype, dtype=np.int64)
        if aatype.ndim != 1:
            raise ValueError(f"Prediction.aatype must be [N], got shape {aatype.shape}")
        n = aatype.shape[0]
        fields = {
            "aatype": aatype,
            "residue_index": np.asarray(self.residue_index, dtype=np.int64),
            "atom_positions": np.asarray(self.atom_positions, dtype=np.float32),
            "atom_mask": np.asarray(self.atom_mask, dtype=np.float32),
            "plddt": np.asarray(self.plddt, dtype=np.float32),
        }
        expected = {"residue_index": (n,), "atom_positions": (n, 37, 3), "atom_mask": (n, 37),
                    "plddt": (n,)}
        if self.pae is not None:
            fields["pae"] = np.asarray(self.pae, dtype=np.float32)
            expected["pae"] = (n, n)
        chain_index = (np.zeros(n, dtype=np.int64) if self.chain_index is None
                       else np.asarray(self.chain_index, dtype=np.int64))
        fields["chain_index"] = chain_index
        expected["chain_index"] = (n,)
        for name, shape in expected.items():
            if fields[name].shape != shape:
                raise ValueError(
                    f"Prediction.{name} has shape {fields[name].shape}, expected {shape} "
                    f"for {n} residues"
                )
        chain_ids = tuple(self.chain_ids)
        if n and (chain_index.min() < 0 or chain_index.max() >= len(chain_ids)):
            raise ValueError(
                f"Prediction.chain_index values must index chain_ids {chain_ids}, got range "
                f"{chain_index.min()}..{chain_index.max()}"
            )
        sequence = self.sequence or sequence_from_aatype(aatype)
        if len(sequence) != n:
            raise ValueError(f"Prediction.sequence has length {len(sequence)}, expected {n}")
        for name, value in fields.items():
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "chain_ids", chain_ids)
        object.__setattr__(self, "sequence", sequence)
        for name in ("ptm", "max_pae"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    # ----------------------------------------------------------------- derived values
    @property
    def num_residues(self) -> int:
        """N, the number of residues."""
        return int(self.aatype.shape[0])

    @property
    def mean_plddt(self) -> float:
        """Mean pLDDT over residues (0–100; ColabFold's ``plddt`` ranking confidence)."""
        return float(self.plddt.mean()) if self.num_residues else 0.0

    @property
    def residue_chain_ids(self) -> list[str]:
        """The chain identifier of every residue."""
        return [self.chain_ids[i] for i in self.chain_index.tolist()]

    def b_factors(self) -> np.ndarray:
        """[N, 37] per-atom B-factors: pLDDT of the residue on every existing atom."""
        return self.plddt[:, None] * self.atom_mask

    def replace(self, **changes) -> "Prediction":
        """A copy with some fields changed (e.g. relaxed ``atom_positions``)."""
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_model_output(
        cls,
        batch: Mapping[str, object],
        outputs: Mapping[str, object],
        model_name: str,
        *,
        chain_ids: Sequence[str] | None = None,
    ) -> "Prediction":
        """Build a prediction from one forward pass, removing padding.

        Args:
            batch: The processed batch the model ran on. ``aatype``, ``residue_index`` and
                ``seq_mask`` are read; they may carry the recycling axis last (``[N, R]``, the
                last slice is used) and a leading batch dim of one. ``asym_id`` (1-based, multimer)
                sets the chains when present. Tensors or numpy arrays.
            outputs: The model's output dict: ``final_atom_positions`` [N, 37, 3],
                ``final_atom_mask`` [N, 37], ``plddt`` [N], and, for pTM models,
                ``predicted_aligned_error`` [N, N], ``ptm_score`` [],
                ``max_predicted_aligned_error`` [].
            model_name: Name stored in the prediction (used in file names).
            chain_ids: Chain identifiers per chain index; default ``A``, ``B``, …

        Returns:
            The :class:`Prediction` of the real (unpadded) residues.

        Raises:
            KeyError: a required key is missing (the message names it).
            ValueError: shapes of the batch and the outputs do not agree.
        """
        for key in ("aatype", "residue_index"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r}; pass the processed batch the model ran on")
        for key in ("final_atom_positions", "final_atom_mask", "plddt"):
            if key not in outputs:
                raise KeyError(f"model outputs have no {key!r}")
        positions = _squeeze_batch(_to_numpy(outputs["final_atom_positions"]), 3)
        num_res = positions.shape[0]
        aatype = _last_recycle(batch["aatype"], num_res)
        residue_index = _last_recycle(batch["residue_index"], num_res)
        if "seq_mask" in batch:
            keep = _last_recycle(batch["seq_mask"], num_res) > 0.5
        else:
            keep = np.ones(num_res, dtype=bool)
        atom_mask = _squeeze_batch(_to_numpy(outputs["final_atom_mask"]), 2)
        plddt = _squeeze_batch(_to_numpy(outputs["plddt"]), 1)
        pae = ptm = max_pae = None
        if outputs.get("predicted_aligned_error") is not None:
            pae = _squeeze_batch(_to_numpy(outputs["predicted_aligned_error"]), 2)
            pae = pae[keep][:, keep]
        if outputs.get("ptm_score") is not None:
            ptm = float(_to_numpy(outputs["ptm_score"]).reshape(-1)[0])
        if outputs.get("max_predicted_aligned_error") is not None:
            max_pae = float(_to_numpy(outputs["max_predicted_aligned_error"]).reshape(-1)[0])
        if "asym_id" in batch:
            asym = _last_recycle(batch["asym_id"], num_res)[keep].astype(np.int64)
            chain_index = asym - asym.min() if asym.size else asym
        else:
            chain_index = np.zeros(int(keep.sum()), dtype=np.int64)
        num_chains = int(chain_index.max()) + 1 if chain_index.size else 1
        if chain_ids is None:
            if num_chains > len(PDB_CHAIN_IDS):
                raise ValueError(f"{num_chains} chains exceed the {len(PDB_CHAIN_IDS)} PDB chain ids")
            chain_ids = tuple(PDB_CHAIN_IDS[:num_chains])
        return cls(
            aatype=aatype[keep].astype(np.int64),
            residue_index=residue_index[keep].astype(np.int64),
            atom_positions=positions[keep],
            atom_mask=atom_mask[keep],
            plddt=plddt[keep],
            pae=pae,
            ptm=ptm,
            max_pae=max_pae,
            chain_index=chain_index,
            chain_ids=tuple(chain_ids),
            model_name=model_name,
        )
