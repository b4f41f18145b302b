
"""MSA attention: row attention with pair bias, column attention and global column attention.

Parameter names equal OpenFold's (``layer_norm_m``, ``linear_z``, ``mha.*``, ``_msa_att.*``,
``global_attention.*``). Mask biases are additive and finite: ``inf * (mask - 1)``.
"""

import torch
from torch import nn

from sparkfold.model import kernels
from sparkfold.model.primitives import (
    Attention,
    LayerNorm,
    Linear,
    aligned_keys,
    chunked_in_frame,
    deliver_in_frame,
    linear_channel_first,
)
from sparkfold.typing import MsaAct, MsaMask, PairAct

__all__ = ["MSAColumnAttention", "MSAColumnGlobalAttention", "MSARowAttentionWithPairBias"]


class _MSAAttention(nn.Module):
    """Gated self-attention along the residues of each MSA row, with an optional pair bias.

    Shared body of AF2 Suppl. Alg. 7 "MSARowAttentionWithPairBias" and Alg. 8
    "MSAColumnAttention" (the latter runs it on the transposed MSA).
    """

    def __init__(
        self,
        c_m: int,
        c_hidden: int,
        num_heads: int,
        c_z: int | None = None,
        inf: float = 1e9,
    ):
        super().__init__()
        self.c_m = c_m
        self.c_hidden = c_hidden
        self.num_heads = num_heads
        self.c_z = c_z
        self.inf = inf
        self.layer_norm_m = LayerNorm(c_m)
        if c_z is not None:
            self.layer_norm_z = LayerNorm(c_z)
            self.linear_z = Linear(c_z, num_heads, bias=False, init="normal")
        self.mha = Attention(c_m, c_m, c_m, c_hidden, num_heads)

    def _normalise_and_attend(
        self, m: torch.Tensor, mask_bias: torch.Tensor, pair_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        m = kernels.contiguous(self.layer_norm_m(m))
        return self.mha(m, m, [mask_bias] if pair_bias is None else [mask_bias, pair_bias])

    def forward(
        self,
        m: torch.Tensor,
        z: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        chunk_size: int | None = None,
        transpose: bool = False,
        add_into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention along the rows of ``m [*, S, N, C_m]`` (columns when ``transpose``).

        ``transpose=True`` attends over ``S`` for each residue; the LayerNorm writes its output
        in the column layout, and the result is returned as a view in ``m``'s layout.
        ``add_into``: add the update into this tensor (``m`` itself for a residual) in place,
        slice by slice when chunking.
        """
        if mask is None:
            mask = m.new_ones(m.shape[:-1])
        mask = mask.to(m.dtype)
        if transpose:
            # Column attention runs on a transposed copy made with the LayerNorm's one pass:
            # attention over strided columns reads scattered rows for every key tile.
            m = m.transpose(-2, -3)
            mask = mask.transpose(-1, -2).contiguous()  # [*, N, S], read densely by the kernels
        mask_bias = (self.inf * (mask - 1))[..., :, None, None, :]  # [*, B, 1, 1, K]
        biases = [mask_bias]
        if self.c_z is not None:
            if z is None:
                raise ValueError("MSARowAttentionWithPairBias needs the pair representation z")
            # Channel-first, key-aligned, built once (row slices of LN(z) when chunking).
            bias = linear_channel_first(z, self.linear_z.weight, row_chunk=chunk_size,
                                        fn=self.layer_norm_z)  # [*, H, N, N]
            biases.append(aligned_keys(bias).unsqueeze(-4))  # [*, 1, H, N, N]
        if chunk_size is None:
            m = kernels.contiguous(self.layer_norm_m(m))  # [*, B, K, C_m] in the attended frame
            return deliver_in_frame(self.mha.self_attention(m, biases), transpose, add_into)
        # Each slice is normalised (in the attended frame) when it is attended.
        inputs = {"m": m, "mask_bias": mask_bias}
        if len(biases) > 1:
            inputs["pair_bias"] = biases[1]
        return chunked_in_frame(self._normalise_and_attend, inputs, chunk_size, m.dim() - 2,
                                transpose, add_into)


class MSARowAttentionWithPairBias(_MSAAttention):
    """Gated self-attention along each MSA row, biased by the pair representation.

    AF2 Suppl. Alg. 7 "MSARowAttentionWithPairBias": ``m̃ = LN(m)``;
    bias ``b_hij = linear_z(LN(z_ij))_h`` (no bias term), shared by all rows;
    logits ``q_si·k_sj/√c + b_hij + inf·(mask_sj − 1)``; per-head sigmoid gate; output linear.
    """

    def __init__(self, c_m: int, c_z: int, c_hidden: int, num_heads: int, inf: float = 1e9):
        super().__init__(c_m, c_hidden, num_heads, c_z=c_z, inf=inf)

    def forward(
        self,
        m: MsaAct,
        z: PairAct,
        mask: MsaMask | None = None,
        chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> MsaAct:
        """Compute the update for ``m``.

        Args:
            m: ``[*, S, N, C_m]`` MSA representation.
            z: ``[*, N, N, C_z]`` pair representation.
            mask: ``[*, S, N]`` MSA mask (ones if ``None``).
            chunk_size: if given, attention runs in slices of ``chunk_size`` MSA rows (and the
                pair bias is computed in slices of pair rows).
            add_into: add the update into this tensor in place (autograd disabled), slice by
                slice when chunking; usually ``m`` itself (the residual).

        Returns:
            ``[*, S, N, C_m]`` update, or ``add_into`` updated.
        """
        return super().forward(m, z=z, mask=mask, chunk_size=chunk_size, add_into=add_into)


class MSAColumnAttention(nn.Module):
    """Gated self-attention along each MSA column (over sequences).

    AF2 Suppl. Alg. 8 "MSAColumnAttention": the row-attention body (no pair bias) applied to
    the transposed MSA; held as ``_msa_att`` so that parameter names match OpenFold's.
    """

    def __init__(self, c_m: int, c_hidden: int, num_heads: int, inf: float = 1e9):
        super().__init__()
        self._msa_att = _MSAAttention(c_m, c_hidden, num_heads, c_z=None, inf=inf)

    def forward(
        self, m: MsaAct, mask: MsaMask | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> MsaAct:
        """Compute the update for ``m``.

        Args:
            m: ``[*, S, N, C_m]`` MSA representation.
            mask: ``[*, S, N]`` MSA mask (ones if ``None``).
            chunk_size: if given, attention runs in slices of ``chunk_size`` columns (residues).
            add_into: add the update into this tensor in place (see the row attention).

        Returns:
            ``[*, S, N, C_m]`` update, or ``add_into`` updated.
        """
        return self._msa_att(m, mask=mask, chunk_size=chunk_size, transpose=True, add_into=add_into)


class GlobalAttention(nn.Module):
    """Gated attention of one query per column (the masked mean) over the sequences.

    AF2 Suppl. Alg. 19 "MSAColumnGlobalAttention" lines 2-10: ``H`` query heads share one
    key/value head (``linear_k``/``linear_v`` map to ``c_hidden``); the gate is per sequence.
    """

    def __init__(
        self, c_in: int, c_hidden: int, num_heads: int, inf: float = 1e9, eps: float = 1e-8
    ):
        super().__init__()
        self.c_in = c_in
        self.c_hidden = c_hidden
        self.num_heads = num_heads
        self.inf = inf
        self.eps = eps
        self.linear_q = Linear(c_in, c_hidden * num_heads, bias=False, init="glorot")
        self.linear_k = Linear(c_in, c_hidden, bias=False, init="glorot")
        self.linear_v = Linear(c_in, c_hidden, bias=False, init="glorot")
        self.linear_g = Linear(c_in, c_hidden * num_heads, init="gating")
        self.linear_o = Linear(c_hidden * num_heads, c_in, init="final")

    def forward(self, m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``m [*, N, S, C_in]`` (columns first), ``mask [*, N, S]`` → ``[*, N, S, C_in]``."""
        h, c = self.num_heads, self.c_hidden
        # DEVIATION from AF2 (eps 1e-10), following OpenFold: eps is the model config's 1e-8.
        q = torch.sum(m * mask.unsqueeze(-1), dim=-2) / (
            torch.sum(mask, dim=-1)[..., None] + self.eps
        )
        q = self.linear_q(q).unflatten(-1, (h, c)).unsqueeze(-3)  # [*, N, 1, H, C]
        k = self.linear_k(m).unsqueeze(-3)  # [*, N, 1, S, C] (one shared head)
        v = self.linear_v(m).unsqueeze(-3)  # [*, N, 1, S, C]
        bias = (self.inf * (mask - 1))[..., None, None, :]  # [*, N, 1, 1, S]
        o = kernels.attention(q, k, v, [bias]).squeeze(-3)  # [*, N, H, C]
        g = torch.sigmoid(self.linear_g(m)).unflatten(-1, (h, c))  # [*, N, S, H, C]
        o = o.unsqueeze(-3) * g  # [*, N, S, H, C]
        return self.linear_o(o.flatten(-2))  # [*, N, S, C_in]


class MSAColumnGlobalAttention(nn.Module):
    """Global (masked-mean query) attention along each MSA column, used by the extra-MSA stack.

    AF2 Suppl. Alg. 19 "MSAColumnGlobalAttention": ``m̃ = LN(m)`` transposed to columns, the
    query is ``Σ_s m̃_s·mask_s / (Σ_s mask_s + eps)``, one key/value head shared by the heads,
    bias ``inf·(mask − 1)``, per-sequence sigmoid gate.
    """

    def __init__(
        self, c_in: int, c_hidden: int, num_heads: int, inf: float = 1e9, eps: float = 1e-8
    ):
        super().__init__()
        self.layer_norm_m = LayerNorm(c_in)
        self.global_attention = GlobalAttention(c_in, c_hidden, num_heads, inf=inf, eps=eps)

    def _normalise_and_attend(self, m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.global_attention(self.layer_norm_m(m), mask)

    def forward(
        self, m: MsaAct, mask: MsaMask | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> MsaAct:
        """Compute the update for ``m``.

        Args:
            m: ``[*, S, N, C_in]`` extra-MSA representation.
            mask: ``[*, S, N]`` mask (ones if ``None``).
            chunk_size: if given, attention runs in slices of ``chunk_size`` columns.
            add_into: add the update into this tensor in place (autograd disabled), column
                slice by column slice when chunking; usually ``m`` itself.

        Returns:
            ``[*, S, N, C_in]`` update, or ``add_into`` updated.
        """
        if mask is None:
            mask = m.new_ones(m.shape[:-1])
        mask = mask.to(m.dtype).transpose(-1, -2)  # [*, N, S]
        m = m.transpose(-2, -3)  # [*, N, S, C]
        if chunk_size is None:
            return deliver_in_frame(self.global_attention(self.layer_norm_m(m), mask), True, add_into)
        # Each slice of columns is normalised when it is attended.
        return chunked_in_frame(self._normalise_and_attend, {"m": m, "mask": mask}, chunk_size,
                                m.dim() - 2, True, add_into)  # [*, S, N, C]
