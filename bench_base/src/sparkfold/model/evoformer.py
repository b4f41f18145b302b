"""The Evoformer: MSA/pair blocks and the stack that ends in the single projection.

Module and parameter names equal OpenFold's (``blocks.<i>.msa_att_row``, ``msa_att_col``,
``msa_transition``, ``outer_product_mean``, ``pair_stack.tri_mul_out`` ..., ``linear``).

DEVIATION from AF2 and OpenFold: no dropout layers (sparkfold runs inference only; AF2's
dropout is the identity in eval mode, so outputs are unchanged).

Memory strategies: ``chunk_size`` slices every sub-layer through
:func:`sparkfold.model.chunking.chunk_layer`; ``inplace=True`` writes the residual adds into
``m``/``z`` (allowed only with autograd disabled; bit-identical to the out-of-place adds).
"""

from typing import Literal

import torch
from torch import nn

from sparkfold.config import MSAStackConfig
from sparkfold.model.chunking import residual_add
from sparkfold.model.msa import (
    MSAColumnAttention,
    MSAColumnGlobalAttention,
    MSARowAttentionWithPairBias,
)
from sparkfold.model.pair import (
    OuterProductMean,
    Transition,
    TriangleAttention,
    TriangleMultiplication,
)
from sparkfold.model.primitives import Linear
from sparkfold.typing import MsaAct, MsaMask, PairAct, PairMask, SingleAct

__all__ = ["EvoformerBlock", "EvoformerStack", "MSABlock", "MSAStack", "PairStack", "block_kwargs"]


class PairStack(nn.Module):
    """The pair half of an Evoformer/ExtraMSA block.

    AF2 Suppl. Alg. 6 "EvoformerStack" lines 8-12: triangle multiplication outgoing, incoming,
    triangle attention starting node, ending node, pair transition, each added to ``z``.
    The transition gets ``mask=None`` (OpenFold's ``_mask_trans=False``).
    """

    def __init__(
        self,
        c_z: int,
        c_hidden_mul: int,
        c_hidden_pair_att: int,
        num_heads_pair: int,
        transition_n: int,
        inf: float = 1e9,
    ):
        super().__init__()
        self.tri_mul_out = TriangleMultiplication(c_z, c_hidden_mul, direction="outgoing")
        self.tri_mul_in = TriangleMultiplication(c_z, c_hidden_mul, direction="incoming")
        self.tri_att_start = TriangleAttention(
            c_z, c_hidden_pair_att, num_heads_pair, node="starting", inf=inf
        )
        self.tri_att_end = TriangleAttention(
            c_z, c_hidden_pair_att, num_heads_pair, node="ending", inf=inf
        )
        self.pair_transition = Transition(c_z, transition_n)

    def forward(
        self,
        z: PairAct,
        pair_mask: PairMask | None = None,
        chunk_size: int | None = None,
        inplace: bool = False,
    ) -> PairAct:
        """Update ``z [*, N, N, C_z]`` with ``pair_mask [*, N, N]``; returns the new ``z``."""
        z = residual_add(z, self.tri_mul_out(z, mask=pair_mask, chunk_size=chunk_size), inplace)
        z = residual_add(z, self.tri_mul_in(z, mask=pair_mask, chunk_size=chunk_size), inplace)
        z = residual_add(z, self.tri_att_start(z, mask=pair_mask, chunk_size=chunk_size), inplace)
        z = residual_add(z, self.tri_att_end(z, mask=pair_mask, chunk_size=chunk_size), inplace)
        z = residual_add(z, self.pair_transition(z, mask=None, chunk_size=chunk_size), inplace)
        return z


ColumnAttention = Literal["gated", "global"]


class MSABlock(nn.Module):
    """One block of an MSA/pair stack (Evoformer or extra MSA: the column attention differs).

    Order (``opm_first=False``, AF2 Suppl. Alg. 6 "EvoformerStack" lines 2-12):
    ``m += RowAttnWithPairBias(m, z)``; ``m += ColumnAttn(m)``; ``m += Transition(m)``;
    ``z += OuterProductMean(m)``; ``z = PairStack(z)``. With ``opm_first=True`` (AF-Multimer
    Sec. 7.1) the outer product mean is added to ``z`` before the row attention.

    ``column_attention="gated"`` is the Evoformer's MSAColumnAttention; ``"global"`` is the
    extra-MSA stack's AF2 Suppl. Alg. 19 "MSAColumnGlobalAttention" (Alg. 18 "ExtraMsaStack").

    Transitions: the pair transition always gets ``mask=None`` (OpenFold's model config has
    ``_mask_trans=False``). DEVIATION from the Evoformer block for the extra-MSA block, following
    OpenFold: its ``ExtraMSABlock`` passes ``mask=msa_mask`` to the MSA transition whatever
    ``_mask_trans`` says (the ``extra_msa_block`` fixture shows it), so ``"global"`` blocks
    mask their MSA transition.
    """

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
        column_attention: ColumnAttention = "gated",
    ):
        super().__init__()
        if column_attention not in ("gated", "global"):
            raise ValueError(f"column_attention must be 'gated' or 'global', got {column_attention!r}")
        self.opm_first = opm_first
        #: Multiply the MSA transition output by ``msa_mask`` (extra-MSA blocks, see above).
        self.mask_msa_transition = column_attention == "global"
        self.msa_att_row = MSARowAttentionWithPairBias(
            c_m, c_z, c_hidden_msa_att, num_heads_msa, inf=inf
        )
        if column_attention == "gated":
            self.msa_att_col = MSAColumnAttention(c_m, c_hidden_msa_att, num_heads_msa, inf=inf)
        else:
            self.msa_att_col = MSAColumnGlobalAttention(
                c_m, c_hidden_msa_att, num_heads_msa, inf=inf, eps=eps
            )
        self.msa_transition = Transition(c_m, transition_n)
        self.outer_product_mean = OuterProductMean(c_m, c_z, c_hidden_opm)
        self.pair_stack = PairStack(
            c_z, c_hidden_mul, c_hidden_pair_att, num_heads_pair, transition_n, inf=inf
        )

    @classmethod
    def from_config(cls, cfg: MSAStackConfig) -> "MSABlock":
        """A block with the sizes of ``cfg``; its column attention follows the class."""
        return cls(**block_kwargs(cfg, cls.column_attention_kind))

    column_attention_kind: ColumnAttention = "gated"

    def forward(
        self,
        m: MsaAct,
        z: PairAct,
        msa_mask: MsaMask | None = None,
        pair_mask: PairMask | None = None,
        chunk_size: int | None = None,
        inplace: bool = False,
    ) -> tuple[MsaAct, PairAct]:
        """Run the block.

        Args:
            m: ``[*, S, N, C_m]`` MSA representation.
            z: ``[*, N, N, C_z]`` pair representation.
            msa_mask: ``[*, S, N]`` (ones if ``None``).
            pair_mask: ``[*, N, N]`` (ones if ``None``).
            chunk_size: slice size for every sub-layer, or ``None`` for no chunking.
            inplace: add the updates into ``m`` and ``z`` in place (overwrites the caller's
                tensors; requires autograd disabled).

        Returns:
            The updated ``(m, z)``.
        """
        if self.opm_first:
            z = residual_add(
                z, self.outer_product_mean(m, mask=msa_mask, chunk_size=chunk_size), inplace
            )
        m = residual_add(m, self.msa_att_row(m, z, mask=msa_mask, chunk_size=chunk_size), inplace)
        m = residual_add(m, self.msa_att_col(m, mask=msa_mask, chunk_size=chunk_size), inplace)
        trans_mask = msa_mask if self.mask_msa_transition else None
        m = residual_add(m, self.msa_transition(m, mask=trans_mask, chunk_size=chunk_size), inplace)
        if not self.opm_first:
            z = residual_add(
                z, self.outer_product_mean(m, mask=msa_mask, chunk_size=chunk_size), inplace
            )
        z = self.pair_stack(z, pair_mask=pair_mask, chunk_size=chunk_size, inplace=inplace)
        return m, z


class EvoformerBlock(MSABlock):
    """One Evoformer block: :class:`MSABlock` with gated MSA column attention.

    AF2 Suppl. Alg. 6 "EvoformerStack", lines 2-12 (one iteration).
    """

    column_attention_kind: ColumnAttention = "gated"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, column_attention="gated", **kwargs)


def block_kwargs(cfg: MSAStackConfig, column_attention: ColumnAttention) -> dict:
    """Constructor arguments of a block described by ``cfg``; checks its column attention."""
    wants_global = column_attention == "global"
    if cfg.global_column_attention != wants_global:
        raise ValueError(
            f"cfg.global_column_attention is {cfg.global_column_attention} but this block uses "
            f"{column_attention} column attention; use "
            + ("ExtraMSABlock/ExtraMSAStack" if cfg.global_column_attention
               else "EvoformerBlock/EvoformerStack") + " for this config"
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


def resolve_inplace(inplace: bool | None) -> bool:
    """``None`` → in-place adds exactly when autograd is disabled; ``True`` is checked."""
    if inplace is None:
        return not torch.is_grad_enabled()
    if inplace and torch.is_grad_enabled():
        raise RuntimeError("inplace=True needs autograd disabled (torch.no_grad/inference_mode)")
    return inplace


class MSAStack(nn.Module):
    """``num_blocks`` :class:`MSABlock` s run in order (shared by the Evoformer and extra MSA)."""

    block_class: type[MSABlock] = MSABlock

    def __init__(self, num_blocks: int, *args, **kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(self.block_class(*args, **kwargs) for _ in range(num_blocks))

    def run_blocks(
        self,
        m: torch.Tensor,
        z: torch.Tensor,
        msa_mask: torch.Tensor | None,
        pair_mask: torch.Tensor | None,
        chunk_size: int | None,
        inplace: bool | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every block in turn; ``inplace=None`` = in place exactly when autograd is disabled.

        The caller's ``m``/``z`` are never modified (they are copied once when in place).
        """
        inplace = resolve_inplace(inplace)
        if inplace:
            m, z = m.clone(), z.clone()
        for block in self.blocks:
            m, z = block(
                m, z, msa_mask=msa_mask, pair_mask=pair_mask, chunk_size=chunk_size, inplace=inplace
            )
        return m, z


class EvoformerStack(MSAStack):
    """The Evoformer trunk and the single-representation projection.

    AF2 Suppl. Alg. 6 "EvoformerStack": ``num_blocks`` :class:`EvoformerBlock` s, then
    ``s = linear(m[..., 0, :, :])`` (line 13, the first MSA row → ``c_s``).
    Arguments after ``c_s`` are those of :class:`MSABlock`.
    """

    block_class = EvoformerBlock

    def __init__(self, num_blocks: int, c_m: int, c_z: int, c_s: int, *args, **kwargs):
        super().__init__(num_blocks, c_m, c_z, *args, **kwargs)
        self.linear = Linear(c_m, c_s)

    @classmethod
    def from_config(cls, cfg: MSAStackConfig, c_s: int) -> "EvoformerStack":
        """The stack described by ``cfg`` (e.g. ``ModelConfig.evoformer``) projecting to ``c_s``."""
        kwargs = block_kwargs(cfg, "gated")
        c_m, c_z = kwargs.pop("c_m"), kwargs.pop("c_z")
        return cls(cfg.num_blocks, c_m, c_z, c_s, **kwargs)

    def forward(
        self,
        m: MsaAct,
        z: PairAct,
        msa_mask: MsaMask | None = None,
        pair_mask: PairMask | None = None,
        chunk_size: int | None = None,
        inplace: bool | None = None,
    ) -> tuple[MsaAct, PairAct, SingleAct]:
        """Run every block, then project the first MSA row.

        Args:
            m: ``[*, S, N, C_m]``; z: ``[*, N, N, C_z]``; msa_mask ``[*, S, N]``; pair_mask ``[*, N, N]``.
            chunk_size: slice size for every sub-layer, or ``None``.
            inplace: in-place residual adds; ``None`` = exactly when autograd is disabled. The
                caller's ``m``/``z`` are never modified (they are copied once when in place).

        Returns:
            ``(m, z, s)`` with ``s [*, N, C_s]``.
        """
        m, z = self.run_blocks(m, z, msa_mask, pair_mask, chunk_size, inplace)
        s = self.linear(m[..., 0, :, :])  # [*, N, C_s]
        return m, z, s
