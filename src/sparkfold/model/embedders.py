"""Embedders that turn features into the first MSA and pair representations.

* :class:`InputEmbedder` — target/MSA features and relative positions (monomer form, or the
  chain-aware AF-Multimer form selected by ``relpos_form``).
* :class:`RecyclingEmbedder` — the previous pass's MSA row 0, pair representation and
  pseudo-β distogram.
* :class:`ExtraMSAEmbedder` and :func:`build_extra_msa_feat` — the extra-MSA input.

The template embedders live in :mod:`sparkfold.model.template`.
"""

from typing import Literal

import torch
from torch import nn

from sparkfold.model.chunking import residual_add, row_slices
from sparkfold.model.primitives import LayerNorm, Linear
from sparkfold.typing import MsaAct, MsaFeat, PairAct, ResidueAct, ResidueIndex, ResiduePoints

__all__ = [
    "ExtraMSAEmbedder",
    "InputEmbedder",
    "RecyclingEmbedder",
    "build_extra_msa_feat",
    "relpos_chain_features",
    "relpos_monomer_features",
]

#: one-hot classes of an MSA token (20 amino acids, X, gap, mask).
MSA_NUM_CLASSES = 23

#: The pair embeddings (relative positions, recycled distogram) are made in blocks of rows of
#: about this many bytes of temporaries: whole, their one-hot features alone take 29 GB at
#: 6144 residues (int64 one-hot of 65 classes, then its float copy).
PAIR_BLOCK_BYTES = 256 << 20


def relpos_monomer_features(residue_index: torch.Tensor, relpos_k: int,
                            rows: slice = slice(None)) -> torch.Tensor:
    """One-hot relative position of AF2 Suppl. Alg. 4 "relpos".

    Args:
        residue_index: ``[*, N]`` integer (or integral float) residue numbers.
        relpos_k: clipping window; offsets are clipped to ``[-k, k]``.
        rows: the residues ``i`` to make features for (default all).

    Returns:
        ``[*, N_rows, N, 2k+1]`` float32 one-hot of ``clip(ri_i - ri_j, -k, k) + k``.
    """
    ri = residue_index.long()
    d = ri[..., rows, None] - ri[..., None, :]  # [*, N_rows, N]
    # DEVIATION: OpenFold takes argmin |d - b| over bins b in [-k, k] on float residue
    # numbers; that is exactly clip(d, -k, k) + k (ties impossible), computed here in integers.
    idx = torch.clamp(d, -relpos_k, relpos_k) + relpos_k
    return nn.functional.one_hot(idx, 2 * relpos_k + 1).float()  # [*, N, N, 2k+1]


def relpos_chain_features(
    residue_index: torch.Tensor,
    asym_id: torch.Tensor,
    entity_id: torch.Tensor,
    sym_id: torch.Tensor,
    relpos_k: int,
    max_relative_chain: int,
    rows: slice = slice(None),
) -> torch.Tensor:
    """Chain-aware relative-position features, AF-Multimer Sec. 2.2.4 (Alg. 4 "relpos" extended).

    Features, concatenated (``2k+2 + 1 + 2c+2`` channels, 73 for k=32, c=2):
    residue offset ``clip(ri_i - ri_j + k, 0, 2k)`` within a chain and class ``2k+1`` across
    chains (one-hot ``2k+2``); same-entity flag (1); chain offset ``clip(sym_i - sym_j + c, 0, 2c)``
    within an entity and class ``2c+1`` across entities (one-hot ``2c+2``).

    Args:
        residue_index: ``[*, N]`` residue numbers (per chain).
        asym_id: ``[*, N]`` chain id (unique per chain).
        entity_id: ``[*, N]`` entity id (same sequence ⇒ same entity).
        sym_id: ``[*, N]`` copy number within the entity.
        relpos_k: residue clipping window ``k`` (32).
        max_relative_chain: chain clipping window ``c`` (2).
        rows: the residues ``i`` to make features for (default all).

    Returns:
        ``[*, N_rows, N, 2k+2 + 1 + 2c+2]`` float32.
    """
    k, c = relpos_k, max_relative_chain
    ri = residue_index.long()
    same_chain = asym_id[..., rows, None] == asym_id[..., None, :]  # [*, N_rows, N]
    offset = torch.clamp(ri[..., rows, None] - ri[..., None, :] + k, 0, 2 * k)
    offset = torch.where(same_chain, offset, torch.full_like(offset, 2 * k + 1))
    rel_pos = nn.functional.one_hot(offset, 2 * k + 2).float()  # [*, N, N, 2k+2]

    same_entity = entity_id[..., rows, None] == entity_id[..., None, :]  # [*, N_rows, N]
    sym = sym_id.long()
    rel_chain = torch.clamp(sym[..., rows, None] - sym[..., None, :] + c, 0, 2 * c)
    rel_chain = torch.where(same_entity, rel_chain, torch.full_like(rel_chain, 2 * c + 1))
    rel_chain_1hot = nn.functional.one_hot(rel_chain, 2 * c + 2).float()  # [*, N, N, 2c+2]
    return torch.cat([rel_pos, same_entity[..., None].float(), rel_chain_1hot], dim=-1)


class InputEmbedder(nn.Module):
    """Embeds target features, MSA features and relative positions.

    AF2 Suppl. Alg. 3 "InputEmbedder" with Alg. 4 "relpos"; the chain-aware relative position
    (``relpos_form="chain"``) is AF-Multimer Sec. 2.2.4.

    ``m[s, i] = linear_msa_m(msa)[s, i] + linear_tf_m(tf)[i]``;
    ``z[i, j] = relpos(i, j) + linear_tf_z_i(tf)[i] + linear_tf_z_j(tf)[j]``.
    """

    def __init__(
        self,
        tf_dim: int,
        msa_dim: int,
        c_z: int,
        c_m: int,
        relpos_k: int,
        relpos_form: Literal["monomer", "chain"] = "monomer",
        max_relative_chain: int = 2,
    ):
        """Args:
        tf_dim: target-feature channels (22 monomer, 21 multimer).
        msa_dim: MSA-feature channels (49).
        c_z: pair channels.
        c_m: MSA channels.
        relpos_k: relative-position clipping window (32).
        relpos_form: ``"monomer"`` (``2k+1`` bins) or ``"chain"`` (AF-Multimer, ``2k+2+1+2c+2`` bins).
        max_relative_chain: chain clipping window ``c`` of the chain form.
        """
        super().__init__()
        if relpos_form not in ("monomer", "chain"):
            raise ValueError(f"relpos_form must be 'monomer' or 'chain', got {relpos_form!r}")
        self.tf_dim = tf_dim
        self.msa_dim = msa_dim
        self.c_z = c_z
        self.c_m = c_m
        self.relpos_k = relpos_k
        self.relpos_form = relpos_form
        self.max_relative_chain = max_relative_chain
        if relpos_form == "monomer":
            num_bins = 2 * relpos_k + 1
        else:
            num_bins = (2 * relpos_k + 2) + 1 + (2 * max_relative_chain + 2)
        self.num_relpos_bins = num_bins

        self.linear_tf_z_i = Linear(tf_dim, c_z)
        self.linear_tf_z_j = Linear(tf_dim, c_z)
        self.linear_tf_m = Linear(tf_dim, c_m)
        self.linear_msa_m = Linear(msa_dim, c_m)
        self.linear_relpos = Linear(num_bins, c_z)

    @classmethod
    def from_config(cls, cfg) -> "InputEmbedder":
        """Build from a :class:`sparkfold.config.ModelConfig`."""
        ie = cfg.input_embedder
        return cls(
            tf_dim=ie.tf_dim, msa_dim=ie.msa_dim, c_z=cfg.c_z, c_m=cfg.c_m, relpos_k=ie.relpos_k,
            relpos_form=ie.relpos_form, max_relative_chain=ie.max_relative_chain,
        )

    def relpos(
        self,
        residue_index: torch.Tensor,
        asym_id: torch.Tensor | None = None,
        entity_id: torch.Tensor | None = None,
        sym_id: torch.Tensor | None = None,
        rows: slice = slice(None),
    ) -> torch.Tensor:
        """Relative-position pair embedding ``[*, N_rows, N, c_z]`` (Alg. 4 "relpos") of the
        residues ``rows`` (default all)."""
        if self.relpos_form == "monomer":
            feats = relpos_monomer_features(residue_index, self.relpos_k, rows)
        else:
            if asym_id is None or entity_id is None or sym_id is None:
                raise ValueError(
                    "InputEmbedder with relpos_form='chain' needs asym_id, entity_id and sym_id; "
                    "pass the multimer features (or build the embedder with relpos_form='monomer')"
                )
            feats = relpos_chain_features(
                residue_index, asym_id, entity_id, sym_id, self.relpos_k, self.max_relative_chain,
                rows,
            )
        return self.linear_relpos(feats.to(self.linear_relpos.weight.dtype))

    def forward(
        self,
        tf: ResidueAct,
        ri: ResidueIndex,
        msa: MsaFeat,
        asym_id: torch.Tensor | None = None,
        entity_id: torch.Tensor | None = None,
        sym_id: torch.Tensor | None = None,
    ) -> tuple[MsaAct, PairAct]:
        """Embed the inputs.

        Args:
            tf: ``[*, N, tf_dim]`` target features.
            ri: ``[*, N]`` residue index.
            msa: ``[*, S, N, msa_dim]`` MSA features.
            asym_id, entity_id, sym_id: ``[*, N]`` chain features (``relpos_form="chain"`` only).

        Returns:
            ``(m [*, S, N, c_m], z [*, N, N, c_z])``.
        """
        if tf.shape[-1] != self.tf_dim or msa.shape[-1] != self.msa_dim:
            raise ValueError(
                f"InputEmbedder expects target_feat [..., {self.tf_dim}] and msa_feat "
                f"[..., {self.msa_dim}], got {tuple(tf.shape)} and {tuple(msa.shape)}"
            )
        tf_emb_i = self.linear_tf_z_i(tf)  # [*, N, c_z]
        tf_emb_j = self.linear_tf_z_j(tf)  # [*, N, c_z]
        n = tf.shape[-2]
        z = None
        # Row blocks: the one-hot features exist for one block at a time.
        for rows in row_slices(n, n * 12 * (2 * self.relpos_k + 12), PAIR_BLOCK_BYTES):
            rel = self.relpos(ri, asym_id, entity_id, sym_id, rows).to(tf_emb_i.dtype)
            # Summation order follows OpenFold's (monomer: relpos first; multimer: relpos last).
            if self.relpos_form == "monomer":
                block = rel + tf_emb_i[..., rows, None, :]
                block = block + tf_emb_j[..., None, :, :]  # [*, N_rows, N, c_z]
            else:
                block = tf_emb_i[..., rows, None, :] + tf_emb_j[..., None, :, :]
                block = block + rel  # [*, N_rows, N, c_z]
            if block.shape[-3] == n:
                z = block
                break
            if z is None:
                z = block.new_empty(block.shape[:-3] + (n,) + block.shape[-2:])
            z[..., rows, :, :] = block

        tf_m = self.linear_tf_m(tf).unsqueeze(-3)  # [*, 1, N, c_m]
        m = self.linear_msa_m(msa) + tf_m  # [*, S, N, c_m]
        return m, z


class RecyclingEmbedder(nn.Module):
    """Embeds the previous pass's outputs for recycling.

    AF2 Suppl. Alg. 32 "RecyclingEmbedder": ``m_update = LN(m_prev row 0)``,
    ``z_update = LN(z_prev) + linear(one_hot(bin(|x_i - x_j|²)))`` with ``x`` the previous
    pseudo-β positions (CA for glycine). Bins have lower edges ``linspace(min, max, n)²`` and
    upper edges the next lower edge (the last one ``inf``), both compared strictly, so a squared
    distance of 0 (iteration 0: all positions zero) falls in no bin.
    """

    def __init__(
        self,
        c_m: int,
        c_z: int,
        min_bin: float = 3.25,
        max_bin: float = 20.75,
        num_bins: int = 15,
        inf: float = 1e8,
    ):
        """Args:
        c_m: MSA channels.
        c_z: pair channels.
        min_bin, max_bin, num_bins: distance bin lower edges ``linspace(min_bin, max_bin, num_bins)`` (Å).
        inf: upper edge of the last bin (on squared distance).
        """
        super().__init__()
        self.c_m = c_m
        self.c_z = c_z
        self.min_bin = min_bin
        self.max_bin = max_bin
        self.num_bins = num_bins
        self.inf = inf
        self.linear = Linear(num_bins, c_z)
        self.layer_norm_m = LayerNorm(c_m)
        self.layer_norm_z = LayerNorm(c_z)

    @classmethod
    def from_config(cls, cfg) -> "RecyclingEmbedder":
        """Build from a :class:`sparkfold.config.ModelConfig`."""
        rc = cfg.recycling_embedder
        return cls(cfg.c_m, cfg.c_z, min_bin=rc.min_bin, max_bin=rc.max_bin,
                   num_bins=rc.num_bins, inf=rc.inf)

    def distogram(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """One-hot squared-distance bins ``[*, N_rows, N, num_bins]`` (float32) of positions
        ``[*, N, 3]``, for the residues ``rows`` (default all)."""
        # DEVIATION: distances and bin edges are always computed in fp32 (OpenFold uses x's dtype),
        # so a bf16 run puts each pair in the same bin as the fp32 run.
        x = x.float()
        lower = torch.linspace(
            self.min_bin, self.max_bin, self.num_bins, dtype=torch.float32, device=x.device
        ) ** 2
        upper = torch.cat([lower[1:], torch.full((1,), self.inf, dtype=lower.dtype, device=lower.device)])
        d = torch.sum((x[..., rows, None, :] - x[..., None, :, :]) ** 2, dim=-1, keepdim=True)  # [*, N_rows, N, 1]
        return ((d > lower) & (d < upper)).float()  # [*, N, N, num_bins]

    def _pair_update(self, z: torch.Tensor, x: torch.Tensor, rows: slice) -> torch.Tensor:
        z_update = self.layer_norm_z(z[..., rows, :, :])
        d = self.linear(self.distogram(x, rows).to(self.linear.weight.dtype))  # [*, N_rows, N, c_z]
        return d.to(z_update.dtype) + z_update

    def forward(
        self, m: ResidueAct, z: PairAct, x: ResiduePoints, add_into: torch.Tensor | None = None
    ) -> tuple[ResidueAct, PairAct]:
        """Recycling updates.

        Args:
            m: ``[*, N, c_m]`` previous first MSA row.
            z: ``[*, N, N, c_z]`` previous pair representation.
            x: ``[*, N, 3]`` previous pseudo-β positions.
            add_into: the new pair representation: the pair update is added into it in place
                (autograd disabled), block of rows by block, and it is returned instead.

        Returns:
            ``(m_update [*, N, c_m], z_update [*, N, N, c_z])``; the caller adds ``m_update`` to
            MSA row 0 and ``z_update`` to the pair representation (with ``add_into``: that
            representation, updated).
        """
        m_update = self.layer_norm_m(m)
        if add_into is None:
            return m_update, self._pair_update(z, x, slice(None))
        n = z.shape[-2]
        for rows in row_slices(z.shape[-3], n * (self.c_z * 8 + self.num_bins * 12), PAIR_BLOCK_BYTES):
            residual_add(add_into[..., rows, :, :], self._pair_update(z, x, rows), True)
        return m_update, add_into


class ExtraMSAEmbedder(nn.Module):
    """Linear embedding of the extra-MSA features.

    AF2 Suppl. Alg. 2 "Inference" line 14 (``e = Linear(f_extra_msa_feat)``), 25 → ``c_e``.
    """

    def __init__(self, c_in: int, c_out: int):
        """Args:
        c_in: feature channels (25, see :func:`build_extra_msa_feat`).
        c_out: extra-MSA channels ``c_e``.
        """
        super().__init__()
        self.c_in = c_in
        self.c_out = c_out
        self.linear = Linear(c_in, c_out)

    @classmethod
    def from_config(cls, cfg) -> "ExtraMSAEmbedder":
        """Build from a :class:`sparkfold.config.ModelConfig`."""
        return cls(cfg.extra_msa_c_in, cfg.c_e)

    def forward(self, x: MsaFeat) -> MsaAct:
        """``[*, S_e, N, c_in]`` → ``[*, S_e, N, c_out]``."""
        return self.linear(x)


def build_extra_msa_feat(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Extra-MSA input features: one-hot(23) of ``extra_msa``, ``extra_has_deletion``, ``extra_deletion_value``.

    Args:
        batch: with ``extra_msa [*, S_e, N]`` (int), ``extra_has_deletion`` and
            ``extra_deletion_value`` ``[*, S_e, N]``.

    Returns:
        ``[*, S_e, N, 25]`` in the dtype of ``extra_deletion_value``.
    """
    dtype = batch["extra_deletion_value"].dtype
    one_hot = nn.functional.one_hot(batch["extra_msa"].long(), MSA_NUM_CLASSES).to(dtype)
    return torch.cat(
        [
            one_hot,  # [*, S_e, N, 23]
            batch["extra_has_deletion"].to(dtype)[..., None],
            batch["extra_deletion_value"][..., None],
        ],
        dim=-1,
    )  # [*, S_e, N, 25]
