"""Pair-representation updates: triangle multiplication and attention, transition, outer product mean.

Parameter names equal OpenFold's (``linear_a_p``, ``layer_norm_in``, ``mha.linear_q`` ...), so
state dicts load without renaming. Masks are multiplicative for activations and additive and
finite (``inf * (mask - 1)``) for attention logits.
"""

from functools import partial
from typing import Literal

import torch
from torch import nn

from sparkfold.model import kernels
from sparkfold.model.chunking import chunk_layer, deliver
from sparkfold.model.primitives import (
    Attention,
    LayerNorm,
    Linear,
    aligned_keys,
    chunked_in_frame,
    deliver_in_frame,
    fused_weight,
    linear_channel_first,
)
from sparkfold.typing import Act, ActMask, MsaAct, MsaMask, PairAct, PairMask

__all__ = ["OuterProductMean", "Transition", "TriangleAttention", "TriangleMultiplication"]


class TriangleMultiplication(nn.Module):
    """Triangular multiplicative update of the pair representation.

    AF2 Suppl. Alg. 11 "TriangleMultiplicationOutgoing" (``direction="outgoing"``) and
    Alg. 12 "TriangleMultiplicationIncoming" (``direction="incoming"``).

    ``a = mask·σ(linear_a_g(z̃))·linear_a_p(z̃)`` (likewise ``b``) with ``z̃ = LN_in(z)``;
    outgoing ``x_ij = Σ_k a_ik b_jk``, incoming ``x_ij = Σ_k a_ki b_kj`` (through
    :func:`sparkfold.model.kernels.triangle_multiplication`); output
    ``σ(linear_g(z̃)) · linear_z(LN_out(x))``.

    Multimer v3 checkpoints fuse ``linear_a_*``/``linear_b_*`` into ``linear_ab_*``; they are split
    into this layout by ``sparkfold.weights`` at load time.
    """

    def __init__(self, c_z: int, c_hidden: int, direction: Literal["outgoing", "incoming"]):
        super().__init__()
        if direction not in ("outgoing", "incoming"):
            raise ValueError(f"direction must be 'outgoing' or 'incoming', got {direction!r}")
        self.c_z = c_z
        self.c_hidden = c_hidden
        self.direction = direction
        self.linear_a_p = Linear(c_z, c_hidden)
        self.linear_a_g = Linear(c_z, c_hidden, init="gating")
        self.linear_b_p = Linear(c_z, c_hidden)
        self.linear_b_g = Linear(c_z, c_hidden, init="gating")
        self.linear_g = Linear(c_z, c_z, init="gating")
        self.linear_z = Linear(c_hidden, c_z, init="final")
        self.layer_norm_in = LayerNorm(c_z)
        self.layer_norm_out = LayerNorm(c_hidden)

    #: Its four projections always fuse (see :meth:`AlphaFold.prefuse_projections`).
    fusable = True

    def fused_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``linear_{a,b}_{p,g}`` as one projection (:func:`fused_weight`)."""
        projections = (self.linear_a_p, self.linear_a_g, self.linear_b_p, self.linear_b_g)
        return (fused_weight(self, "ab_w", [lin.weight for lin in projections]),
                fused_weight(self, "ab_b", [lin.bias for lin in projections]))

    #: Largest size of the gated projections ``a`` and ``b`` together on the fused path; longer
    #: sequences make and contract them in channel blocks (at N = 6144, C = 128, bf16 they
    #: would take 18 GiB whole).
    AB_BUDGET_BYTES = 4 << 30

    def _channel_block(self, z: torch.Tensor) -> int | None:
        """Channels per block of the fused path's ``a``/``b`` (``None``: all at once), a multiple
        of 16 such that both blocks stay within :attr:`AB_BUDGET_BYTES`."""
        per_channel = 2 * z[..., 0].numel() * z.element_size()  # a and b, one channel each
        if per_channel * self.c_hidden <= self.AB_BUDGET_BYTES:
            return None
        return max(16, self.AB_BUDGET_BYTES // per_channel // 16 * 16)

    def kernel_weights(self) -> kernels.TriangleWeights:
        """The parameters as :func:`sparkfold.model.kernels.triangle_update` takes them."""
        w_ab, b_ab = self.fused_projection()
        ln_in, ln_out = self.layer_norm_in, self.layer_norm_out
        return kernels.TriangleWeights(
            ln_in.weight, ln_in.bias, w_ab, b_ab, self.linear_g.weight, self.linear_g.bias,
            ln_out.weight, ln_out.bias, self.linear_z.weight, self.linear_z.bias, ln_in.eps)

    def _project_cf(self, z: torch.Tensor, mask_cf: torch.Tensor, z_ln: bool = False,
                    out: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Gated, masked projections ``a``, ``b`` of ``LN_in(z)``, channel-first ``[*, C, I, J]``.

        One GEMM on the concatenated ``linear_{a,b}_{p,g}`` weights writes all four projections
        channel-first, the layout of the contraction. ``z_ln``: ``z`` is already normalised.
        ``mask_cf`` is ``[*, 1, I, J]``. ``out``: buffers (row slices of full ``a``, ``b``)
        that the gated projections are written into (inference only).
        """
        w, bias = self.fused_projection()
        p = linear_channel_first(z, w, bias, fn=None if z_ln else self.layer_norm_in)
        c = self.c_hidden  # p: [*, 4·C, I, J] = [a_p, a_g, b_p, b_g]
        if torch.is_grad_enabled():  # autograd: plain differentiable products
            a = mask_cf * torch.sigmoid(p[..., c:2 * c, :, :]) * p[..., 0:c, :, :]
            b = mask_cf * torch.sigmoid(p[..., 3 * c:, :, :]) * p[..., 2 * c:3 * c, :, :]
            return a, b
        # mask · σ(g) · p in one pass per projection, into the caller's buffers when given.
        out_a, out_b = out if out is not None else (None, None)
        a = kernels.sigmoid_gate(p[..., 0:c, :, :], p[..., c:2 * c, :, :], mask_cf, out=out_a)
        b = kernels.sigmoid_gate(p[..., 2 * c:3 * c, :, :], p[..., 3 * c:, :, :], mask_cf, out=out_b)
        return a, b

    def _output(self, x: torch.Tensor, z: torch.Tensor, z_ln: bool = False) -> torch.Tensor:
        """``σ(linear_g(LN_in(z))) · linear_z(LN_out(x))``; ``z_ln``: ``z`` is already normalised."""
        g = torch.sigmoid(self.linear_g(z if z_ln else self.layer_norm_in(z)))  # [*, I, J, C_z]
        return self.linear_z(self.layer_norm_out(x)) * g

    def forward(
        self, z: PairAct, mask: PairMask | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> PairAct:
        """Compute the update for ``z``.

        Args:
            z: ``[*, N, N, C_z]`` pair representation.
            mask: ``[*, N, N]`` pair mask (ones if ``None``).
            chunk_size: if given, the row-wise projections and the output stage run in
                slices of ``chunk_size`` rows (the contraction itself runs whole), and
                ``LN_in(z)`` is recomputed per slice instead of being stored. Ignored where a
                fused :func:`~sparkfold.model.kernels.triangle_update` runs (inference with a
                fast backend): it never stores ``LN_in(z)`` or a channel-last ``x``.
            add_into: add the update into this tensor in place (autograd disabled), row
                slice by row slice when chunking; usually ``z`` itself (every projection is
                made before the first slice is written).

        Returns:
            ``[*, N, N, C_z]`` update, or ``add_into`` updated.
        """
        if not torch.is_grad_enabled() and kernels.has_fast("triangle_update", z.dtype, z.device):
            return kernels.triangle_update(z, mask, self.kernel_weights(), self.direction,
                                           add_into=add_into,
                                           channel_block=self._channel_block(z))
        return self.forward_composed(z, mask, chunk_size, add_into)

    def forward_composed(
        self, z: torch.Tensor, mask: torch.Tensor | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` composed of separate kernel ops (projection GEMM, gate, contraction,
        output stage), with its chunking; the path for autograd and for backends without a
        fused ``triangle_update``."""
        if mask is None:
            mask = z.new_ones(z.shape[:-1])
        mask_cf = mask.to(z.dtype).unsqueeze(-3)  # [*, 1, N, N]
        if chunk_size is None:
            z_ln = self.layer_norm_in(z)  # computed once, used by both stages
            a, b = self._project_cf(z_ln, mask_cf, z_ln=True)
        else:
            a, b = self._project_chunked(z, mask_cf, chunk_size)
        # Channel-last views of the channel-first a, b: the kernels use them without copies.
        x = kernels.triangle_multiplication(a.movedim(-3, -1), b.movedim(-3, -1), self.direction)
        del a, b  # x: [*, N, N, C_hidden]
        if chunk_size is None:
            return deliver(self._output(x, z_ln, z_ln=True), add_into)
        return chunk_layer(self._output, {"x": x, "z": z}, chunk_size, z.dim() - 2, add_into=add_into)

    def _project_chunked(self, z: torch.Tensor, mask_cf: torch.Tensor, chunk_size: int):
        """:meth:`_project_cf` in slices of ``chunk_size`` rows, written into full buffers."""
        n_i = z.shape[-3]
        if torch.is_grad_enabled():  # autograd: concatenate the slices instead of writing them
            parts = [self._project_cf(z[..., i:i + chunk_size, :, :], mask_cf[..., i:i + chunk_size, :])
                     for i in range(0, n_i, chunk_size)]
            return (torch.cat([p[0] for p in parts], dim=-2), torch.cat([p[1] for p in parts], dim=-2))
        shape = (*z.shape[:-3], self.c_hidden, n_i, z.shape[-2])  # [*, C, I, J]
        a, b = z.new_empty(shape), z.new_empty(shape)
        for i in range(0, n_i, chunk_size):
            rows = slice(i, i + chunk_size)
            self._project_cf(z[..., rows, :, :], mask_cf[..., rows, :],
                             out=(a[..., rows, :], b[..., rows, :]))
        return a, b


class TriangleAttention(nn.Module):
    """Gated self-attention along pair rows with a bias from the third edge.

    AF2 Suppl. Alg. 13 "TriangleAttentionStartingNode" (``node="starting"``) and Alg. 14
    "TriangleAttentionEndingNode" (``node="ending"``): the ending-node form is the same module
    applied to the transposed pair and transposed mask, its output transposed back.

    ``z̃ = LN(z)``; bias ``b_hij = linear(z̃_ij)_h`` (no bias term); for each row ``i``,
    attention over ``j → k`` with logits ``q_ij·k_ik/√c + b_hjk + inf·(mask_ik − 1)``.
    """

    def __init__(
        self,
        c_in: int,
        c_hidden: int,
        num_heads: int,
        node: Literal["starting", "ending"] = "starting",
        inf: float = 1e9,
    ):
        super().__init__()
        if node not in ("starting", "ending"):
            raise ValueError(f"node must be 'starting' or 'ending', got {node!r}")
        self.c_in = c_in
        self.c_hidden = c_hidden
        self.num_heads = num_heads
        self.node = node
        self.inf = inf
        self.layer_norm = LayerNorm(c_in)
        self.linear = Linear(c_in, num_heads, bias=False, init="normal")
        self.mha = Attention(c_in, c_in, c_in, c_hidden, num_heads)

    def _normalise_and_attend(
        self, x: torch.Tensor, mask_bias: torch.Tensor, tri_bias: torch.Tensor
    ) -> torch.Tensor:
        x = kernels.contiguous(self.layer_norm(x))
        return self.mha(x, x, [mask_bias, tri_bias])

    def forward(
        self, x: PairAct, mask: PairMask | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> PairAct:
        """Compute the update for the pair representation ``x``.

        Args:
            x: ``[*, N, N, C_in]`` pair representation.
            mask: ``[*, N, N]`` pair mask (ones if ``None``).
            chunk_size: if given, attention runs in slices of ``chunk_size`` rows.
            add_into: add the update into this tensor in place (autograd disabled), slice by
                slice when chunking; usually ``x`` itself (the bias is made first).

        Returns:
            ``[*, N, N, C_in]`` update, or ``add_into`` updated.
        """
        if mask is None:
            mask = x.new_ones(x.shape[:-1])
        mask = mask.to(x.dtype)
        ending = self.node == "ending"
        if ending:
            # The ending node attends over the transposed pair. It is laid out transposed once
            # (with the LayerNorm's one pass over it): attention over strided columns reads
            # scattered rows for every key tile (measured 1.7x slower on an H100 at N=1024).
            x = x.transpose(-2, -3)
            mask = mask.transpose(-1, -2).contiguous()  # the kernels read the key bias densely
        mask_bias = (self.inf * (mask - 1))[..., :, None, None, :]  # [*, B, 1, 1, K]
        if chunk_size is None:
            x = kernels.contiguous(self.layer_norm(x))  # [*, Q-rows, K, C] in the attended frame
            tri_bias = linear_channel_first(x, self.linear.weight)  # [*, H, Q, K]
            out = self.mha.self_attention(x, [mask_bias, aligned_keys(tri_bias).unsqueeze(-4)])
            return deliver_in_frame(out, ending, add_into)  # [*, I, J, C]
        # LN(x) is never stored whole: the bias is made from row slices of it, and each slice
        # of rows is normalised again (in the attended frame) when it is attended.
        tri_bias = linear_channel_first(x, self.linear.weight, row_chunk=chunk_size,
                                        fn=self.layer_norm)  # [*, H, Q, K]
        inputs = {"x": x, "mask_bias": mask_bias, "tri_bias": aligned_keys(tri_bias).unsqueeze(-4)}
        return chunked_in_frame(self._normalise_and_attend, inputs, chunk_size, x.dim() - 2,
                                ending, add_into)


class Transition(nn.Module):
    """Two-layer MLP applied position-wise (MSA and pair transitions).

    AF2 Suppl. Alg. 9 "MSATransition" and Alg. 15 "PairTransition":
    ``linear_2(relu(linear_1(LN(x))))`` with hidden width ``n·c_in``.

    The output is multiplied by ``mask`` only when a mask is given. OpenFold's model config has
    ``_mask_trans=False``, so the Evoformer, ExtraMSA and template blocks pass ``mask=None``.
    """

    def __init__(self, c_in: int, n: int):
        super().__init__()
        self.c_in = c_in
        self.n = n
        self.layer_norm = LayerNorm(c_in)
        self.linear_1 = Linear(c_in, n * c_in, init="relu")
        self.linear_2 = Linear(n * c_in, c_in, init="final")

    def _mlp(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.linear_2(torch.relu(self.linear_1(self.layer_norm(x))))
        return out if mask is None else out * mask.to(out.dtype).unsqueeze(-1)

    def forward(
        self, x: Act, mask: ActMask | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> Act:
        """Compute the update for ``x``.

        Args:
            x: ``[*, N, C_in]`` activations (``[*, S, N, C_m]`` or ``[*, N, N, C_z]``).
            mask: ``[*, N]`` mask multiplied onto the output, or ``None`` (no multiply).
            chunk_size: if given, evaluate in slices of ``chunk_size`` along ``x.shape[:-2]``.
            add_into: add the update into this tensor in place (autograd disabled), slice by
                slice when chunking; usually ``x`` itself.

        Returns:
            ``[*, N, C_in]`` update, or ``add_into`` updated.
        """
        if chunk_size is None:
            return deliver(self._mlp(x, mask), add_into)
        inputs = {"x": x} if mask is None else {"x": x, "mask": mask}
        return chunk_layer(self._mlp, inputs, chunk_size, x.dim() - 2, add_into=add_into)


class OuterProductMean(nn.Module):
    """MSA → pair update by the mean outer product over sequences.

    AF2 Suppl. Alg. 10 "OuterProductMean": ``a, b = linear_1/2(LN(m))·mask``;
    ``o_ij = linear_out(flatten(Σ_s a_si ⊗ b_sj)) / (eps + Σ_s mask_si·mask_sj)``.

    DEVIATION from AF2 Alg. 10, following OpenFold: the output Linear (with its bias) is applied
    *before* dividing by the mask count, and ``eps=1e-3``; so fully masked pairs get
    ``bias / 1e-3``. The division runs in fp32 (a no-op for fp32 inputs).
    """

    def __init__(self, c_m: int, c_z: int, c_hidden: int, eps: float = 1e-3):
        super().__init__()
        self.c_m = c_m
        self.c_z = c_z
        self.c_hidden = c_hidden
        self.eps = eps
        self.layer_norm = LayerNorm(c_m)
        self.linear_1 = Linear(c_m, c_hidden)
        self.linear_2 = Linear(c_m, c_hidden)
        self.linear_out = Linear(c_hidden * c_hidden, c_z, init="final")

    def _outer(self, a: torch.Tensor, b: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """``a [*, I, S, C]``, ``b [*, J, S, C]``, ``norm [*, I, J, 1]`` (fp32) →
        ``linear_out`` of the outer sums divided by ``norm + eps`` ``[*, I, J, C_z]``.

        The division runs here, per slice, so that the fp32 copy of the update never exists
        in full (at N = 6144 it would take 18 GiB).
        """
        outer = torch.einsum("...isc,...jse->...ijce", a, b)  # [*, I, J, C, C]
        outer = self.linear_out(outer.flatten(-2))  # [*, I, J, C_z]
        return (outer.float() / (norm + self.eps)).to(a.dtype)

    def _project(self, m: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``linear_1/2(LN(m)) · mask`` for ``m [*, N, C_m]``, ``mask [*, N, 1]``."""
        ln = self.layer_norm(m)
        mask_act = mask.to(m.dtype)
        return self.linear_1(ln) * mask_act, self.linear_2(ln) * mask_act

    def forward(
        self, m: MsaAct, mask: MsaMask | None = None, chunk_size: int | None = None,
        add_into: torch.Tensor | None = None,
    ) -> PairAct:
        """Compute the pair update from the MSA.

        Args:
            m: ``[*, S, N, C_m]`` MSA representation.
            mask: ``[*, S, N]`` MSA mask (ones if ``None``).
            chunk_size: if given, ``LN(m)`` and the projections run in slices of
                ``chunk_size`` MSA rows and the outer product in slices of ``chunk_size``
                residues ``i``.
            add_into: add the update into this pair tensor in place (autograd disabled),
                slice by slice when chunking.

        Returns:
            ``[*, N, N, C_z]`` update, or ``add_into`` updated.
        """
        if mask is None:
            mask = m.new_ones(m.shape[:-1])
        mask = mask.unsqueeze(-1)  # [*, S, N, 1]
        if chunk_size is None:
            a, b = self._project(m, mask)
        else:  # LN(m) exists for one slice of rows at a time
            a, b = chunk_layer(self._project, {"m": m, "mask": mask}, chunk_size, m.dim() - 2)
        a, b = a.transpose(-2, -3), b.transpose(-2, -3)  # [*, N, S, C]
        mask_f = mask.float()
        norm = torch.einsum("...sic,...sjc->...ijc", mask_f, mask_f)  # [*, N, N, 1]
        fast = not torch.is_grad_enabled() and kernels.has_fast("outer_product_update", a.dtype,
                                                                 a.device)
        if fast:  # one GEMM per row slice, then linear_out, the division and the add fused
            out = self.linear_out
            return kernels.outer_product_update(a, b, norm, out.weight, out.bias, self.eps,
                                                add_into=add_into, chunk_size=chunk_size)
        if chunk_size is None:
            return deliver(self._outer(a, b, norm), add_into)
        batch = a.shape[:-3]
        a_flat = a.reshape(-1, *a.shape[-3:])  # [B, N, S, C]
        b_flat = b.reshape(-1, *b.shape[-3:])
        norm_flat = norm.expand(*batch, *norm.shape[-3:]).reshape(-1, *norm.shape[-3:])
        targets = None
        if add_into is not None:
            try:
                targets = add_into.view(-1, *add_into.shape[-3:])  # [B, N, N, C_z]
            except RuntimeError:
                targets = None  # not viewable flat: the whole update is added at the end
        parts = [
            chunk_layer(partial(self._outer, b=b_flat[i]), {"a": a_flat[i], "norm": norm_flat[i]},
                        chunk_size, 1, add_into=None if targets is None else targets[i])
            for i in range(a_flat.shape[0])
        ]
        if targets is not None:
            return add_into
        if len(parts) == 1:
            out = parts[0].reshape(*batch, *parts[0].shape)
        else:
            out = torch.stack(parts).reshape(*batch, *parts[0].shape)  # [*, N, N, C_z]
        return deliver(out, add_into)
