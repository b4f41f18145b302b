"""Template embedding: pair and angle features, the template pair stack, point-wise attention.

The monomer :class:`TemplateEmbedder` (AF2 Suppl. Alg. 2 "Inference" lines 7-13) builds an
88-channel pair feature per template (:func:`build_template_pair_feat`), embeds it
(:class:`TemplatePairEmbedder`), refines every template independently with
:class:`TemplatePairStack`, and attends from the pair representation to the templates
(:class:`TemplatePointwiseAttention`). The template torsion angles (:func:`build_template_angle_feat`)
become extra MSA rows (:class:`TemplateSingleEmbedder`).
"""

from typing import NamedTuple

import torch
from torch import nn

from sparkfold import constants as rc
from sparkfold.geometry import Rigid
from sparkfold.model.chunking import chunk_layer
from sparkfold.model.pair import Transition, TriangleAttention, TriangleMultiplication
from sparkfold.model.primitives import Attention, LayerNorm, Linear
from sparkfold.typing import PairAct, TemplateMask, TemplatePairAct

__all__ = [
    "TemplateEmbedder",
    "TemplateEmbedding",
    "TemplatePairEmbedder",
    "TemplatePairStack",
    "TemplatePairStackBlock",
    "TemplatePointwiseAttention",
    "TemplateSingleEmbedder",
    "build_template_angle_feat",
    "build_template_pair_feat",
]

#: template aatype one-hot classes (20 amino acids, X, gap).
TEMPLATE_AATYPE_CLASSES = 22
#: channels of :func:`build_template_pair_feat`: 39 dgram + 1 + 22 + 22 + 3 + 1.
TEMPLATE_PAIR_FEAT_DIM = 88
#: channels of :func:`build_template_angle_feat`: 22 + 14 + 14 + 7.
TEMPLATE_ANGLE_FEAT_DIM = 57


# --------------------------------------------------------------------------------- features
def build_template_pair_feat(
    batch: dict[str, torch.Tensor],
    min_bin: float = 3.25,
    max_bin: float = 50.75,
    num_bins: int = 39,
    use_unit_vector: bool = False,
    eps: float = 1e-8,
    inf: float = 1e5,
) -> torch.Tensor:
    """The template pair feature of AF2 Suppl. Alg. 2 "Inference" line 9 (Table 1 "template_*").

    Channels (88 for 39 bins): distogram of pseudo-β squared distances (``num_bins``; lower edges
    ``linspace(min_bin, max_bin, num_bins)²``, upper edges the next lower edge and ``inf`` for
    the last, strict on both sides), pseudo-β pair mask (1), template aatype one-hot of residue
    ``j`` (22), of residue ``i`` (22), unit vector from the backbone frame of ``i`` to the CA of
    ``j`` in that frame (3; zero unless ``use_unit_vector``), backbone pair mask (1). The whole
    feature is multiplied by the backbone (N, CA, C) pair mask.

    Args:
        batch: template features without the template axis or with it as a leading ``*`` axis:
            ``template_aatype [*, N]``, ``template_all_atom_positions [*, N, 37, 3]``,
            ``template_all_atom_mask [*, N, 37]``, ``template_pseudo_beta [*, N, 3]``,
            ``template_pseudo_beta_mask [*, N]``.
        min_bin, max_bin, num_bins: distogram lower edges (Å).
        use_unit_vector: fill the unit-vector channels (the monomer models zero them).
        eps: added under square roots in the frame construction and the vector norm.
        inf: upper edge of the last distogram bin (squared distance).

    Returns:
        ``[*, N, N, num_bins + 49]`` float32.
    """
    positions = batch["template_all_atom_positions"].float()
    pb = batch["template_pseudo_beta"].float()
    pb_mask = batch["template_pseudo_beta_mask"].float()
    aatype = batch["template_aatype"].long()
    atom_mask = batch["template_all_atom_mask"].float()
    n_res = aatype.shape[-1]

    pb_mask_2d = pb_mask[..., :, None] * pb_mask[..., None, :]  # [*, N, N]
    d2 = torch.sum((pb[..., :, None, :] - pb[..., None, :, :]) ** 2, dim=-1, keepdim=True)  # [*, N, N, 1]
    lower = torch.linspace(min_bin, max_bin, num_bins, dtype=torch.float32, device=pb.device) ** 2
    upper = torch.cat([lower[1:], torch.full((1,), inf, dtype=lower.dtype, device=lower.device)])
    dgram = ((d2 > lower) & (d2 < upper)).float()  # [*, N, N, num_bins]

    aa = nn.functional.one_hot(aatype, TEMPLATE_AATYPE_CLASSES).float()  # [*, N, 22]
    aa_j = aa[..., None, :, :].expand(*aa.shape[:-2], n_res, n_res, -1)  # [*, N(i), N(j), 22]
    aa_i = aa[..., :, None, :].expand(*aa.shape[:-2], n_res, n_res, -1)  # [*, N(i), N(j), 22]

    n_idx, ca_idx, c_idx = rc.atom_order["N"], rc.atom_order["CA"], rc.atom_order["C"]
    bb_mask = atom_mask[..., n_idx] * atom_mask[..., ca_idx] * atom_mask[..., c_idx]  # [*, N]
    bb_mask_2d = bb_mask[..., :, None] * bb_mask[..., None, :]  # [*, N, N]

    if use_unit_vector:
        frames = Rigid.make_transform_from_reference(
            n_xyz=positions[..., n_idx, :],
            ca_xyz=positions[..., ca_idx, :],
            c_xyz=positions[..., c_idx, :],
            eps=eps,
        )
        ca = frames.get_trans()[..., None, :, :]  # [*, 1, N(j), 3]
        vec = frames[..., None].invert_apply(ca)  # [*, N(i), N(j), 3]
        inv_dist = torch.rsqrt(eps + torch.sum(vec**2, dim=-1)) * bb_mask_2d  # [*, N, N]
        unit_vector = vec * inv_dist[..., None]
    else:
        # DEVIATION: OpenFold computes the vectors and multiplies them by 0; skipping them is
        # the same for finite coordinates and saves the frame construction.
        unit_vector = dgram.new_zeros(*dgram.shape[:-1], 3)

    feat = torch.cat(
        [dgram, pb_mask_2d[..., None], aa_j, aa_i, unit_vector, bb_mask_2d[..., None]], dim=-1
    )  # [*, N, N, num_bins + 49]
    return feat * bb_mask_2d[..., None]


def build_template_angle_feat(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The template torsion-angle feature (AF2 Suppl. Alg. 2 "Inference" line 7), 57 channels.

    ``[one_hot(template_aatype, 22), sin/cos of 7 torsions (14), alternative sin/cos (14),
    torsion masks (7)]``.

    Args:
        batch: ``template_aatype [*, N]``, ``template_torsion_angles_sin_cos [*, N, 7, 2]``,
            ``template_alt_torsion_angles_sin_cos [*, N, 7, 2]``, ``template_torsion_angles_mask [*, N, 7]``.

    Returns:
        ``[*, N, 57]`` in the dtype of the sin/cos features.
    """
    sin_cos = batch["template_torsion_angles_sin_cos"]
    alt = batch["template_alt_torsion_angles_sin_cos"].to(sin_cos.dtype)
    mask = batch["template_torsion_angles_mask"].to(sin_cos.dtype)
    aa = nn.functional.one_hot(batch["template_aatype"].long(), TEMPLATE_AATYPE_CLASSES)
    return torch.cat(
        [aa.to(sin_cos.dtype), sin_cos.flatten(-2), alt.flatten(-2), mask], dim=-1
    )  # [*, N, 57]


# ---------------------------------------------------------------------------------- modules
class TemplatePairEmbedder(nn.Module):
    """Linear embedding of the template pair feature, AF2 Suppl. Alg. 2 "Inference" line 9."""

    def __init__(self, c_in: int, c_out: int):
        """Args:
        c_in: pair-feature channels (88).
        c_out: template pair channels ``c_t``.
        """
        super().__init__()
        self.c_in = c_in
        self.c_out = c_out
        self.linear = Linear(c_in, c_out, init="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[*, N, N, c_in]`` → ``[*, N, N, c_out]``."""
        return self.linear(x)


class TemplateSingleEmbedder(nn.Module):
    """Template torsion-angle embedding, AF2 Suppl. Alg. 2 "Inference" line 8: ``Linear(relu(Linear(f)))``."""

    def __init__(self, c_in: int, c_out: int):
        """Args:
        c_in: angle-feature channels (57).
        c_out: MSA channels ``c_m``.
        """
        super().__init__()
        self.c_in = c_in
        self.c_out = c_out
        self.linear_1 = Linear(c_in, c_out, init="relu")
        self.linear_2 = Linear(c_out, c_out, init="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[*, T, N, c_in]`` → ``[*, T, N, c_out]``."""
        return self.linear_2(torch.relu(self.linear_1(x)))


class TemplatePointwiseAttention(nn.Module):
    """Attention from each pair ``(i, j)`` of ``z`` to the same pair of every template.

    AF2 Suppl. Alg. 17 "TemplatePointwiseAttention". No gating and no pair mask; templates are
    masked by the bias ``inf·(template_mask − 1)`` (inf = 1e5).
    """

    def __init__(self, c_t: int, c_z: int, c_hidden: int, num_heads: int, inf: float = 1e5):
        """Args:
        c_t: template pair channels (keys/values).
        c_z: pair channels (queries and output).
        c_hidden: per-head channels.
        num_heads: attention heads.
        inf: mask bias magnitude.
        """
        super().__init__()
        self.c_t = c_t
        self.c_z = c_z
        self.c_hidden = c_hidden
        self.num_heads = num_heads
        self.inf = inf
        self.mha = Attention(c_z, c_t, c_t, c_hidden, num_heads, gating=False)

    def forward(
        self,
        t: TemplatePairAct,
        z: PairAct,
        template_mask: TemplateMask | None = None,
        chunk_size: int | None = 256,
    ) -> PairAct:
        """Attend.

        Args:
            t: ``[*, T, N, N, c_t]`` template pair representations.
            z: ``[*, N, N, c_z]`` pair representation.
            template_mask: ``[*, T]`` (1 = real template); all ones if None.
            chunk_size: evaluate in slices of this many ``(i, j)`` pairs along the first residue
                axis (OpenFold's default of 256 is what the template embedder uses); None: at once.

        Returns:
            ``[*, N, N, c_z]``.
        """
        if template_mask is None:
            template_mask = t.new_ones(t.shape[:-3])
        bias = self.inf * (template_mask.to(z.dtype)[..., None, None, None, None, :] - 1)  # [*, 1, 1, 1, 1, T]
        q_x = z.unsqueeze(-2)  # [*, N, N, 1, c_z]
        kv_x = t.permute(*range(t.dim() - 4), -3, -2, -4, -1)  # [*, N, N, T, c_t]
        if chunk_size is None:
            out = self.mha(q_x, kv_x, [bias])
        else:
            out = chunk_layer(
                lambda q_x, kv_x, bias: self.mha(q_x, kv_x, [bias]),
                {"q_x": q_x, "kv_x": kv_x, "bias": bias},
                chunk_size=chunk_size,
                num_batch_dims=q_x.dim() - 2,
            )
        return out.squeeze(-2)  # [*, N, N, c_z]


class TemplatePairStackBlock(nn.Module):
    """One block of the template pair stack, applied to every template separately.

    AF2 Suppl. Alg. 16 "TemplatePairStack" lines 2-6: triangle attention around the starting
    node, around the ending node, triangle multiplication with outgoing then incoming edges,
    pair transition (each with a residual). ``tri_mul_first`` moves the two multiplications to
    the front (AF-Multimer Sec. 7.3).
    """

    def __init__(
        self,
        c_t: int,
        c_hidden_tri_att: int,
        c_hidden_tri_mul: int,
        num_heads: int,
        transition_n: int,
        inf: float = 1e9,
        tri_mul_first: bool = False,
    ):
        """Args:
        c_t: template pair channels.
        c_hidden_tri_att: per-head channels of the triangle attention.
        c_hidden_tri_mul: hidden channels of the triangle multiplication.
        num_heads: triangle-attention heads.
        transition_n: pair-transition expansion factor.
        inf: triangle-attention mask bias magnitude.
        tri_mul_first: AF-Multimer order (multiplications before attentions).
        """
        super().__init__()
        self.tri_mul_first = tri_mul_first
        self.tri_att_start = TriangleAttention(c_t, c_hidden_tri_att, num_heads, node="starting", inf=inf)
        self.tri_att_end = TriangleAttention(c_t, c_hidden_tri_att, num_heads, node="ending", inf=inf)
        self.tri_mul_out = TriangleMultiplication(c_t, c_hidden_tri_mul, direction="outgoing")
        self.tri_mul_in = TriangleMultiplication(c_t, c_hidden_tri_mul, direction="incoming")
        self.pair_transition = Transition(c_t, transition_n)

    def _one_template(self, z: torch.Tensor, mask: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
        def attentions(z):
            z = z + self.tri_att_start(z, mask=mask, chunk_size=chunk_size)
            return z + self.tri_att_end(z, mask=mask, chunk_size=chunk_size)

        def multiplications(z):
            z = z + self.tri_mul_out(z, mask=mask, chunk_size=chunk_size)
            return z + self.tri_mul_in(z, mask=mask, chunk_size=chunk_size)

        if self.tri_mul_first:
            z = attentions(multiplications(z))
        else:
            z = multiplications(attentions(z))
        # Transitions are never masked in any preset (OpenFold `_mask_trans=False`).
        return z + self.pair_transition(z, mask=None, chunk_size=chunk_size)

    def forward(
        self, z: torch.Tensor, mask: torch.Tensor, chunk_size: int | None = None
    ) -> torch.Tensor:
        """Update every template.

        Args:
            z: ``[*, T, N, N, c_t]``.
            mask: ``[*, T, N, N]`` or ``[*, 1, N, N]`` pair mask.
            chunk_size: slice size for the attentions and the transition (None: no chunking).

        Returns:
            ``[*, T, N, N, c_t]``.
        """
        mask = mask.to(z.dtype).expand(*z.shape[:-1])
        # One template at a time, as OpenFold does: peak memory is that of one template.
        outs = [
            self._one_template(z_t, m_t, chunk_size)
            for z_t, m_t in zip(z.unbind(dim=-4), mask.unbind(dim=-3))
        ]
        return torch.stack(outs, dim=-4)  # [*, T, N, N, c_t]


class TemplatePairStack(nn.Module):
    """AF2 Suppl. Alg. 16 "TemplatePairStack": ``num_blocks`` blocks then a final LayerNorm."""

    def __init__(
        self,
        c_t: int,
        c_hidden_tri_att: int,
        c_hidden_tri_mul: int,
        num_blocks: int,
        num_heads: int,
        transition_n: int,
        inf: float = 1e9,
        tri_mul_first: bool = False,
    ):
        """Args: as :class:`TemplatePairStackBlock`, plus ``num_blocks``."""
        super().__init__()
        self.blocks = nn.ModuleList(
            TemplatePairStackBlock(
                c_t, c_hidden_tri_att, c_hidden_tri_mul, num_heads, transition_n, inf=inf,
                tri_mul_first=tri_mul_first,
            )
            for _ in range(num_blocks)
        )
        self.layer_norm = LayerNorm(c_t)

    def forward(
        self, t: torch.Tensor, mask: torch.Tensor, chunk_size: int | None = None
    ) -> torch.Tensor:
        """``t [*, T, N, N, c_t]``, ``mask [*, T or 1, N, N]`` → ``[*, T, N, N, c_t]``."""
        for block in self.blocks:
            t = block(t, mask, chunk_size=chunk_size)
        return self.layer_norm(t)


class TemplateEmbedding(NamedTuple):
    """Output of :class:`TemplateEmbedder`.

    Attributes:
        pair: ``[*, N, N, c_z]`` template pair embedding; the caller adds it to ``z``.
        single: ``[*, T, N, c_m]`` template rows; the caller appends them to the MSA
            (None when angles are not embedded).
        single_mask: ``[*, T, N]`` their MSA mask (the ψ torsion mask), or None.
    """

    pair: torch.Tensor
    single: torch.Tensor | None
    single_mask: torch.Tensor | None


class TemplateEmbedder(nn.Module):
    """The monomer template embedder, AF2 Suppl. Alg. 2 "Inference" lines 7-13.

    Per template: 88-channel pair feature → :class:`TemplatePairEmbedder`; all templates →
    :class:`TemplatePairStack` (each independently) → :class:`TemplatePointwiseAttention` from
    ``z``; the result is zeroed when no template is present. Template torsion features →
    :class:`TemplateSingleEmbedder` rows with mask = ψ torsion mask (torsion index 2).
    """

    def __init__(
        self,
        c_m: int,
        c_z: int,
        c_t: int,
        *,
        pair_c_in: int = TEMPLATE_PAIR_FEAT_DIM,
        single_c_in: int = TEMPLATE_ANGLE_FEAT_DIM,
        num_blocks: int = 2,
        c_hidden_tri_att: int = 16,
        num_heads_tri_att: int = 4,
        c_hidden_tri_mul: int = 64,
        transition_n: int = 2,
        tri_mul_first: bool = False,
        c_hidden_pointwise: int = 16,
        num_heads_pointwise: int = 4,
        pointwise_chunk_size: int | None = 256,
        embed_angles: bool = True,
        use_unit_vector: bool = False,
        distogram_min_bin: float = 3.25,
        distogram_max_bin: float = 50.75,
        distogram_num_bins: int = 39,
        inf: float = 1e5,
        tri_inf: float = 1e9,
        eps: float = 1e-8,
    ):
        """Args:
        c_m, c_z, c_t: MSA, pair and template pair channels.
        pair_c_in, single_c_in: feature widths (88, 57).
        num_blocks, c_hidden_tri_att, num_heads_tri_att, c_hidden_tri_mul, transition_n,
            tri_mul_first: template pair stack settings.
        c_hidden_pointwise, num_heads_pointwise: point-wise attention settings.
        pointwise_chunk_size: slice size of the point-wise attention (OpenFold: always 256).
        embed_angles: produce the template single rows.
        use_unit_vector: fill the unit-vector channels of the pair feature (monomer: False).
        distogram_min_bin, distogram_max_bin, distogram_num_bins: pair-feature distogram.
        inf: point-wise attention mask bias and the distogram's last upper edge (1e5).
        tri_inf: triangle-attention mask bias (1e9).
        eps: frame/unit-vector epsilon (1e-8).
        """
        super().__init__()
        expected = distogram_num_bins + 49
        if pair_c_in != expected:
            raise ValueError(
                f"pair_c_in={pair_c_in} does not match the pair feature width {expected} "
                f"({distogram_num_bins} distogram bins + 49)"
            )
        self.c_m, self.c_z, self.c_t = c_m, c_z, c_t
        self.embed_angles = embed_angles
        self.use_unit_vector = use_unit_vector
        self.distogram_min_bin = distogram_min_bin
        self.distogram_max_bin = distogram_max_bin
        self.distogram_num_bins = distogram_num_bins
        self.pointwise_chunk_size = pointwise_chunk_size
        self.inf = inf
        self.eps = eps

        if embed_angles:
            self.template_single_embedder = TemplateSingleEmbedder(single_c_in, c_m)
        self.template_pair_embedder = TemplatePairEmbedder(pair_c_in, c_t)
        self.template_pair_stack = TemplatePairStack(
            c_t, c_hidden_tri_att, c_hidden_tri_mul, num_blocks, num_heads_tri_att, transition_n,
            inf=tri_inf, tri_mul_first=tri_mul_first,
        )
        self.template_pointwise_att = TemplatePointwiseAttention(
            c_t, c_z, c_hidden_pointwise, num_heads_pointwise, inf=inf
        )

    @classmethod
    def from_config(cls, cfg) -> "TemplateEmbedder":
        """Build from a :class:`sparkfold.config.ModelConfig` (monomer template form only)."""
        tc = cfg.template
        if tc.embedder_form != "monomer":
            raise NotImplementedError(
                "the multimer template embedder (per-feature linears, AF-Multimer Sec. 7.3) is not "
                "implemented yet; use a monomer preset"
            )
        return cls(
            cfg.c_m, cfg.c_z, cfg.c_t,
            pair_c_in=tc.pair_c_in, single_c_in=tc.single_c_in, num_blocks=tc.num_blocks,
            c_hidden_tri_att=tc.c_hidden_tri_att, num_heads_tri_att=tc.num_heads_tri_att,
            c_hidden_tri_mul=tc.c_hidden_tri_mul, transition_n=tc.transition_n,
            tri_mul_first=tc.tri_mul_first, c_hidden_pointwise=tc.c_hidden_pointwise,
            num_heads_pointwise=tc.num_heads_pointwise, pointwise_chunk_size=tc.pointwise_chunk_size,
            embed_angles=tc.embed_angles, use_unit_vector=tc.use_unit_vector,
            distogram_min_bin=tc.distogram_min_bin, distogram_max_bin=tc.distogram_max_bin,
            distogram_num_bins=tc.distogram_num_bins, inf=tc.inf, tri_inf=tc.tri_inf, eps=tc.eps,
        )

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        z: torch.Tensor,
        pair_mask: torch.Tensor,
        chunk_size: int | None = None,
    ) -> TemplateEmbedding:
        """Embed the templates.

        Args:
            batch: one recycling pass's features (no recycle axis) with the template axis at
                ``-2`` of ``template_aatype [*, T, N]``: ``template_aatype``,
                ``template_all_atom_positions [*, T, N, 37, 3]``, ``template_all_atom_mask``,
                ``template_pseudo_beta [*, T, N, 3]``, ``template_pseudo_beta_mask [*, T, N]``,
                ``template_mask [*, T]`` and, with ``embed_angles``, the torsion features
                ``template_torsion_angles_sin_cos``, ``template_alt_torsion_angles_sin_cos``,
                ``template_torsion_angles_mask [*, T, N, 7]``.
            z: ``[*, N, N, c_z]`` pair representation (after input and recycling embedding).
            pair_mask: ``[*, N, N]``.
            chunk_size: slice size for the pair stack (the model's chunk size; None: off).

        Returns:
            :class:`TemplateEmbedding` ``(pair, single, single_mask)``.
        """
        missing = [k for k in ("template_aatype", "template_all_atom_positions",
                               "template_all_atom_mask", "template_pseudo_beta",
                               "template_pseudo_beta_mask", "template_mask") if k not in batch]
        if missing:
            raise KeyError(f"TemplateEmbedder needs template features missing from the batch: {missing}")
        n_templ = batch["template_aatype"].shape[-2]
        pair_keys = ("template_aatype", "template_all_atom_positions", "template_all_atom_mask",
                     "template_pseudo_beta", "template_pseudo_beta_mask")
        # The template axis sits right after the batch axes; its position from the end differs
        # per feature, so count it from the front.
        t_axis = batch["template_aatype"].dim() - 2

        if n_templ == 0:
            # No template axis to attend over: no pair update and no extra MSA rows.
            n_res = z.shape[-2]
            single = z.new_zeros(*z.shape[:-3], 0, n_res, self.c_m) if self.embed_angles else None
            single_mask = z.new_zeros(*z.shape[:-3], 0, n_res) if self.embed_angles else None
            return TemplateEmbedding(torch.zeros_like(z), single, single_mask)

        # Alg. 2 L9: build and embed the pair feature one template at a time (memory).
        embedded = []
        for i in range(n_templ):
            feats = {k: batch[k].select(t_axis, i) for k in pair_keys}
            feat = build_template_pair_feat(
                feats, self.distogram_min_bin, self.distogram_max_bin, self.distogram_num_bins,
                use_unit_vector=self.use_unit_vector, eps=self.eps, inf=self.inf,
            ).to(z.dtype)
            embedded.append(self.template_pair_embedder(feat))  # [*, N, N, c_t]
        t = torch.stack(embedded, dim=-4)  # [*, T, N, N, c_t]
        del embedded

        # Alg. 2 L11: template pair stack, all templates share the pair mask.
        t = self.template_pair_stack(t, pair_mask.to(z.dtype).unsqueeze(-3), chunk_size=chunk_size)

        # Alg. 2 L12: point-wise attention from z.
        template_mask = batch["template_mask"].to(z.dtype)
        t = self.template_pointwise_att(t, z, template_mask=template_mask,
                                        chunk_size=self.pointwise_chunk_size)
        any_template = (template_mask.sum(dim=-1) > 0).to(z.dtype)  # [*]
        pair = t * any_template[..., None, None, None]

        single = single_mask = None
        if self.embed_angles:
            angle_feat = build_template_angle_feat(
                {k: batch[k] for k in ("template_aatype", "template_torsion_angles_sin_cos",
                                       "template_alt_torsion_angles_sin_cos",
                                       "template_torsion_angles_mask")}
            ).to(z.dtype)
            single = self.template_single_embedder(angle_feat)  # [*, T, N, c_m]
            single_mask = batch["template_torsion_angles_mask"][..., 2].to(z.dtype)  # [*, T, N]
        return TemplateEmbedding(pair, single, single_mask)
