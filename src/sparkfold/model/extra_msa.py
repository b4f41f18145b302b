"""The extra-MSA stack: Evoformer-style blocks with global column attention; only ``z`` is kept.

Parameter names equal OpenFold's (``extra_msa_stack.blocks.<i>.msa_att_col.global_attention.*`` …).
"""

import torch
from torch import nn

from sparkfold.config import MSAStackConfig
from sparkfold.model.evoformer import MSABlock, resolve_inplace
from sparkfold.model.msa import MSAColumnGlobalAttention

__all__ = ["ExtraMSABlock", "ExtraMSAStack"]


class ExtraMSABlock(MSABlock):
    """One extra-MSA block: an Evoformer block whose column attention is global.

    AF2 Suppl. Alg. 18 "ExtraMsaStack", lines 2-12 (one iteration), with Alg. 19
    "MSAColumnGlobalAttention"; the order is that of :class:`~sparkfold.model.evoformer.MSABlock`.

    DEVIATION from the Evoformer block, following OpenFold: OpenFold's ``ExtraMSABlock`` passes
    ``mask=msa_mask`` to its MSA transition whatever ``_mask_trans`` says, so the transition
    update is zero at masked extra-MSA entries (the ``extra_msa_block`` fixture shows it).
    The pair transition is unmasked as in the Evoformer.
    """

    mask_msa_transition = True

    def __init__(
        self,
        c_m: int,
        c_z: int,
        c_hidden_msa_att: int,
        c_hidden_opm: int,
        c_hidden_mul: int,
        c_hidden_pair_att: int,
        num_heads_msa: int,
        num_heads_pair: int,
        transition_n: int,
        opm_first: bool = False,
        inf: float = 1e9,
        eps: float = 1e-8,
    ):
        super().__init__(
            c_m,
            c_z,
            c_hidden_msa_att,
            c_hidden_opm,
            c_hidden_mul,
            c_hidden_pair_att,
            num_heads_msa,
            num_heads_pair,
            transition_n,
            opm_first=opm_first,
            inf=inf,
        )
        self.msa_att_col = MSAColumnGlobalAttention(
            c_m, c_hidden_msa_att, num_heads_msa, inf=inf, eps=eps
        )

    @classmethod
    def from_config(cls, cfg: MSAStackConfig) -> "ExtraMSABlock":
        """A block with the sizes of ``cfg`` (e.g. ``ModelConfig.extra_msa_stack``)."""
        return cls(**_extra_block_kwargs(cfg))


def _extra_block_kwargs(cfg: MSAStackConfig) -> dict:
    if not cfg.global_column_attention:
        raise ValueError(
            "the extra-MSA stack uses global column attention but cfg.global_column_attention is "
            "False; use sparkfold.model.evoformer.EvoformerBlock for this config"
        )
    return {
        "c_m": cfg.c_m,
        "c_z": cfg.c_z,
        "c_hidden_msa_att": cfg.c_hidden_msa_att,
        "c_hidden_opm": cfg.c_hidden_opm,
        "c_hidden_mul": cfg.c_hidden_mul,
        "c_hidden_pair_att": cfg.c_hidden_pair_att,
        "num_heads_msa": cfg.num_heads_msa,
        "num_heads_pair": cfg.num_heads_pair,
        "transition_n": cfg.transition_n,
        "opm_first": cfg.opm_first,
        "inf": cfg.inf,
        "eps": cfg.eps,
    }


class ExtraMSAStack(nn.Module):
    """AF2 Suppl. Alg. 18 "ExtraMsaStack": ``num_blocks`` :class:`ExtraMSABlock` s; returns ``z``."""

    def __init__(
        self,
        num_blocks: int,
        c_m: int,
        c_z: int,
        c_hidden_msa_att: int,
        c_hidden_opm: int,
        c_hidden_mul: int,
        c_hidden_pair_att: int,
        num_heads_msa: int,
        num_heads_pair: int,
        transition_n: int,
        opm_first: bool = False,
        inf: float = 1e9,
        eps: float = 1e-8,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            ExtraMSABlock(
                c_m,
                c_z,
                c_hidden_msa_att,
                c_hidden_opm,
                c_hidden_mul,
                c_hidden_pair_att,
                num_heads_msa,
                num_heads_pair,
                transition_n,
                opm_first=opm_first,
                inf=inf,
                eps=eps,
            )
            for _ in range(num_blocks)
        )

    @classmethod
    def from_config(cls, cfg: MSAStackConfig) -> "ExtraMSAStack":
        """The stack described by ``cfg`` (``ModelConfig.extra_msa_stack``; its ``c_m`` is c_e)."""
        return cls(num_blocks=cfg.num_blocks, **_extra_block_kwargs(cfg))

    def forward(
        self,
        m: torch.Tensor,
        z: torch.Tensor,
        msa_mask: torch.Tensor | None = None,
        pair_mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        inplace: bool | None = None,
    ) -> torch.Tensor:
        """Run every block and return the updated pair representation.

        Args:
            m: ``[*, S_extra, N, C_e]`` embedded extra MSA.
            z: ``[*, N, N, C_z]``; msa_mask ``[*, S_extra, N]``; pair_mask ``[*, N, N]``.
            chunk_size: slice size for every sub-layer, or ``None``.
            inplace: in-place residual adds; ``None`` = exactly when autograd is disabled. The
                caller's ``m``/``z`` are never modified.

        Returns:
            ``z [*, N, N, C_z]``.
        """
        inplace = resolve_inplace(inplace)
        if inplace:
            m, z = m.clone(), z.clone()
        for block in self.blocks:
            m, z = block(
                m, z, msa_mask=msa_mask, pair_mask=pair_mask, chunk_size=chunk_size, inplace=inplace
            )
        return z
