"""The structure module: invariant point attention, backbone updates and side-chain torsions.

AF2 Suppl. Alg. 20 "StructureModule" with Alg. 22 "InvariantPointAttention", Alg. 23
"BackboneUpdate" and the torsion-angle resnet of Alg. 20 lines 11-14; atom14 coordinates from
Alg. 24 "computeAllAtomCoordinates" (see :mod:`sparkfold.allatom`).

Monomer and multimer differ only in configuration (``ipa_form``): the multimer IPA has
bias-free separate q/k/v projections, separate k/v point projections laid out per head, a
different logit order, and backbone frames kept as rotation matrices.

Precision: frames, point coordinates, IPA logits, softmax and every attention-weighted sum
run in fp32 whatever the activation dtype; only the dense projections run in the module's
dtype. In fp32 this is exactly OpenFold's maths.
"""

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sparkfold.allatom import (
    frames_and_literature_positions_to_atom14_pos,
    residue_constant_tensors,
    torsion_angles_to_frames,
)
from sparkfold.geometry import Rigid, Rotation
from sparkfold.model.chunking import row_slices
from sparkfold.model.primitives import LayerNorm, Linear

__all__ = [
    "AngleResnet",
    "AngleResnetBlock",
    "BackboneUpdate",
    "InvariantPointAttention",
    "NormalisedPair",
    "PointProjection",
    "StructureModule",
    "StructureModuleTransition",
    "StructureModuleTransitionLayer",
]

IPAForm = Literal["monomer", "multimer"]

#: softplus⁻¹(1): initial value of the per-head point weights.
_SOFTPLUS_INV_1 = math.log(math.e - 1.0)


def _up(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32, or unchanged if it is already fp32/fp64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


#: The structure module normalises the pair in blocks of query rows of about this many bytes
#: (fp32) when it needs them, instead of storing ``LN_z(pair)`` whole: in fp32 that is
#: ``N²·c_z·4`` bytes, 19 GB at 6144 residues, for a bf16 trunk twice its own pair.
PAIR_BLOCK_BYTES = 64 << 20


class NormalisedPair:
    """``LN_z(pair)``, made block of query rows by block when it is used.

    Each block is cast to the LayerNorm's dtype (fp32 in the model: a bf16 trunk's pair is
    normalised in fp32, as if the whole pair had been upcast first) and normalised.
    Recomputing the row-wise LayerNorm per use is exact (a row's result does not depend on
    the blocking) and costs a memory-bound pass over the pair, small next to the trunk.

    Args:
        pair: ``[*, N, N, c_z]`` in any dtype.
        layer_norm: applied to each block; ``None``: ``pair`` is already normalised.
        block_bytes: fp32 bytes per block (at least one row).
    """

    def __init__(self, pair: torch.Tensor, layer_norm: nn.Module | None = None,
                 block_bytes: int = PAIR_BLOCK_BYTES):
        self.pair = pair
        self.layer_norm = layer_norm
        self.slices = row_slices(pair.shape[-3], pair.shape[-2] * pair.shape[-1] * 4, block_bytes)

    def blocks(self):
        """Yield ``(start, rows)``: ``rows`` is ``LN_z(pair[..., start:start + r, :, :])``."""
        for rows in self.slices:
            block = self.pair[..., rows, :, :]
            if self.layer_norm is not None:
                block = self.layer_norm(block.to(self.layer_norm.weight.dtype))
            yield rows.start, block


def _linear_fp32(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)`` evaluated in at least fp32 (no cast for fp32/fp64 modules)."""
    x = _up(x)
    bias = linear.bias.to(x.dtype) if linear.bias is not None else None
    return F.linear(x, linear.weight.to(x.dtype), bias)


class PointProjection(nn.Module):
    """Projects the single representation to 3D points in each residue's frame, then to global.

    AF2 Suppl. Alg. 22 "InvariantPointAttention" lines 2-3 (the point projections).

    ``layout="monomer"``: the linear output is split into three equal blocks x | y | z, each
    ordered (head, point). ``layout="multimer"``: the output is viewed per head as ``[3·P]``
    and split x | y | z within each head.
    """

    def __init__(self, c_in: int, num_points: int, num_heads: int, layout: IPAForm = "monomer"):
        super().__init__()
        if layout not in ("monomer", "multimer"):
            raise ValueError(f"layout must be 'monomer' or 'multimer', got {layout!r}")
        self.num_points = num_points
        self.num_heads = num_heads
        self.layout = layout
        self.linear = Linear(c_in, num_heads * 3 * num_points)

    def forward(self, s: torch.Tensor, r: Rigid) -> torch.Tensor:
        """Points in the global frame, ``[*, N, H, P, 3]`` in fp32.

        Args:
            s: ``[*, N, c_in]``.
            r: backbone frames of batch shape ``[*, N]`` (fp32).
        """
        # DEVIATION: computed in fp32 for every activation dtype (OpenFold uses the activation
        # dtype for the monomer); identical in fp32, more accurate frames in bf16.
        pts = _linear_fp32(self.linear, s)  # [*, N, H*3*P]
        h, p = self.num_heads, self.num_points
        if self.layout == "monomer":
            pts = torch.stack(pts.chunk(3, dim=-1), dim=-1)  # [*, N, H*P, 3]
            pts = pts.unflatten(-2, (h, p))  # [*, N, H, P, 3]
        else:
            pts = pts.unflatten(-1, (h, 3 * p))  # [*, N, H, 3P]
            pts = torch.stack(pts.chunk(3, dim=-1), dim=-1)  # [*, N, H, P, 3]
        return r[..., None, None].apply(pts)


class InvariantPointAttention(nn.Module):
    """Attention over residues with scalar, pair-bias and frame-invariant point terms.

    AF2 Suppl. Alg. 22 "InvariantPointAttention"; multimer form: AF-Multimer Sec. 7.3.

    Monomer logits (Alg. 22 line 7):
    ``sqrt(1/3)·(q·k/sqrt(c) + b − γ_h·w_C/2·Σ_p ‖T_i q_p − T_j k_p‖²)`` with
    ``w_C = sqrt(2/(9·P_qk))`` and ``γ_h = softplus(head_weights)``, plus ``inf·(mask_ij − 1)``.
    Multimer: the same three terms summed (points first), the mask bias added, and the whole
    sum scaled by ``sqrt(1/3)``. The output concatenates, per residue, the scalar values
    (H·c), the value points in the local frame x, y, z (H·P_v each), their norms and the
    attention-weighted pair features (H·c_z).
    """

    def __init__(
        self,
        c_s: int,
        c_z: int,
        c_hidden: int,
        num_heads: int,
        num_qk_points: int,
        num_v_points: int,
        inf: float = 1e5,
        eps: float = 1e-8,
        ipa_form: IPAForm = "monomer",
    ):
        super().__init__()
        if ipa_form not in ("monomer", "multimer"):
            raise ValueError(f"ipa_form must be 'monomer' or 'multimer', got {ipa_form!r}")
        self.c_s, self.c_z, self.c_hidden = c_s, c_z, c_hidden
        self.num_heads = num_heads
        self.num_qk_points = num_qk_points
        self.num_v_points = num_v_points
        self.inf = inf
        self.eps = eps
        self.ipa_form = ipa_form
        hc = num_heads * c_hidden

        if ipa_form == "monomer":
            self.linear_q = Linear(c_s, hc)
            self.linear_kv = Linear(c_s, 2 * hc)
            self.linear_q_points = PointProjection(c_s, num_qk_points, num_heads, "monomer")
            self.linear_kv_points = PointProjection(c_s, num_qk_points + num_v_points, num_heads, "monomer")
        else:
            self.linear_q = Linear(c_s, hc, bias=False)
            self.linear_k = Linear(c_s, hc, bias=False)
            self.linear_v = Linear(c_s, hc, bias=False)
            self.linear_q_points = PointProjection(c_s, num_qk_points, num_heads, "multimer")
            self.linear_k_points = PointProjection(c_s, num_qk_points, num_heads, "multimer")
            self.linear_v_points = PointProjection(c_s, num_v_points, num_heads, "multimer")
        self.linear_b = Linear(c_z, num_heads)
        self.head_weights = nn.Parameter(torch.full((num_heads,), _SOFTPLUS_INV_1))
        self.linear_out = Linear(num_heads * (c_z + c_hidden + 4 * num_v_points), c_s, init="final")

    def _project(self, s: torch.Tensor, r: Rigid):
        h, c = self.num_heads, self.c_hidden
        q = self.linear_q(s).unflatten(-1, (h, c))  # [*, N, H, C]
        q_pts = self.linear_q_points(s, r)  # [*, N, H, P_qk, 3]
        if self.ipa_form == "monomer":
            kv = self.linear_kv(s).unflatten(-1, (h, 2 * c))  # [*, N, H, 2C]
            k, v = kv.split(c, dim=-1)  # [*, N, H, C] each
            kv_pts = self.linear_kv_points(s, r)  # [*, N, H, P_qk + P_v, 3]
            k_pts, v_pts = kv_pts.split([self.num_qk_points, self.num_v_points], dim=-2)
        else:
            k = self.linear_k(s).unflatten(-1, (h, c))  # [*, N, H, C]
            v = self.linear_v(s).unflatten(-1, (h, c))  # [*, N, H, C]
            k_pts = self.linear_k_points(s, r)  # [*, N, H, P_qk, 3]
            v_pts = self.linear_v_points(s, r)  # [*, N, H, P_v, 3]
        return _up(q), _up(k), _up(v), q_pts, k_pts, v_pts

    @staticmethod
    def _sq_point_distances(q_pts: torch.Tensor, k_pts: torch.Tensor) -> torch.Tensor:
        """``Σ_p ‖q_p − k_p‖²`` as ``[*, H, Q, K]``, one point and axis at a time (bounded memory)."""
        q_pts = q_pts.movedim(-4, -2)  # [*, H, P, Q, 3]
        k_pts = k_pts.movedim(-4, -2)  # [*, H, P, K, 3]
        total = None
        for p in range(q_pts.shape[-3]):
            d2 = None
            for x in range(3):
                diff = q_pts[..., p, :, None, x] - k_pts[..., p, None, :, x]  # [*, H, Q, K]
                d2 = diff * diff if d2 is None else d2 + diff * diff
            total = d2 if total is None else total + d2
        return total

    def pair_bias(self, z: "torch.Tensor | NormalisedPair") -> torch.Tensor:
        """``linear_b(z)`` as fp32 ``[*, H, Q, K]``. It depends on the pair only, so the
        structure module computes it once for its blocks (the IPA weights are shared)."""
        if isinstance(z, torch.Tensor):
            z = NormalisedPair(z)
        parts = [_up(self.linear_b(rows)) for _, rows in z.blocks()]  # [*, r, K, H] each
        b = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-3)
        return b.movedim(-1, -3)

    def forward(self, s: torch.Tensor, z: "torch.Tensor | NormalisedPair", r: Rigid,
                mask: torch.Tensor, pair_bias: torch.Tensor | None = None) -> torch.Tensor:
        """One IPA update of the single representation.

        Args:
            s: ``[*, N, c_s]`` single representation.
            z: ``[*, N, N, c_z]`` pair representation (normalised), or a
                :class:`NormalisedPair` that normalises it block by block.
            r: backbone frames, batch shape ``[*, N]`` (fp32, translations in nm-scaled units).
            mask: ``[*, N]`` sequence mask.
            pair_bias: :meth:`pair_bias` of ``z`` when the caller has it already.

        Returns:
            ``[*, N, c_s]`` update, in ``s``'s dtype.
        """
        if isinstance(z, torch.Tensor):
            z = NormalisedPair(z)
        q, k, v, q_pts, k_pts, v_pts = self._project(s, r)
        b = self.pair_bias(z) if pair_bias is None else pair_bias  # [*, H, Q, K]
        mask = mask.to(b.dtype)
        mask_bias = self.inf * (mask[..., :, None] * mask[..., None, :] - 1.0)  # [*, Q, K]
        d2 = self._sq_point_distances(q_pts, k_pts)  # [*, H, Q, K]
        head_w = F.softplus(self.head_weights.to(b.dtype))[:, None, None]  # [H, 1, 1]

        if self.ipa_form == "monomer":
            a = torch.einsum("...qhc,...khc->...hqk", q, k) * math.sqrt(1.0 / (3 * self.c_hidden))
            a = a + math.sqrt(1.0 / 3) * b
            a = a + d2 * (head_w * math.sqrt(1.0 / (3 * (self.num_qk_points * 9.0 / 2)))) * (-0.5)
            a = a + mask_bias[..., None, :, :]  # [*, H, Q, K]
        else:
            # AF-Multimer: points first, then scalar, pair bias and mask; all scaled by sqrt(1/3).
            a = -0.5 * (d2 * (head_w * math.sqrt(1.0 / (self.num_qk_points * 9.0 / 2))))
            a = a + torch.einsum("...qhc,...khc->...hqk", q * math.sqrt(1.0 / self.c_hidden), k)
            a = a + b
            a = a + mask_bias[..., None, :, :]
            a = a * math.sqrt(1.0 / 3)  # [*, H, Q, K]
        a = torch.softmax(a, dim=-1)

        o = torch.einsum("...hqk,...khc->...qhc", a, v).flatten(-2)  # [*, Q, H*C]
        o_pt = torch.einsum("...hqk,...khpx->...qhpx", a, v_pts)  # [*, Q, H, P_v, 3]
        o_pt = r[..., None, None].invert_apply(o_pt)  # [*, Q, H, P_v, 3]
        sq_norm = (o_pt * o_pt).sum(dim=-1)  # [*, Q, H, P_v]
        if self.ipa_form == "monomer":
            o_pt_norm = torch.sqrt(sq_norm + self.eps)
        else:
            o_pt_norm = torch.sqrt(torch.clamp(sq_norm, min=self.eps**2))
        o_pt = o_pt.flatten(-3, -2)  # [*, Q, H*P_v, 3]
        o_pair = [torch.einsum("...hqk,...qkc->...qhc", a[..., start:start + rows.shape[-3], :], _up(rows))
                  for start, rows in z.blocks()]  # [*, r, H, c_z] per block of query rows
        o_pair = (o_pair[0] if len(o_pair) == 1 else torch.cat(o_pair, dim=-3)).flatten(-2)

        feats = torch.cat([o, *o_pt.unbind(-1), o_pt_norm.flatten(-2), o_pair], dim=-1)
        return self.linear_out(feats.to(s.dtype))


class BackboneUpdate(nn.Module):
    """Predicts a frame update ``(b, c, d, t_x, t_y, t_z)`` from the single representation.

    AF2 Suppl. Alg. 23 "BackboneUpdate" line 1; the composition (lines 2-4) is done by the
    caller through :meth:`Rigid.compose_q_update_vec`.
    """

    def __init__(self, c_s: int):
        super().__init__()
        self.linear = Linear(c_s, 6, init="final")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """``[*, N, c_s]`` → ``[*, N, 6]`` in fp32."""
        # DEVIATION: always fp32 (AF-Multimer does this; harmless for the monomer in fp32).
        return _linear_fp32(self.linear, s)


class AngleResnetBlock(nn.Module):
    """One residual block of the torsion-angle resnet (AF2 Suppl. Alg. 20 "StructureModule" lines 12-13)."""

    def __init__(self, c_hidden: int):
        super().__init__()
        self.linear_1 = Linear(c_hidden, c_hidden, init="relu")
        self.linear_2 = Linear(c_hidden, c_hidden, init="final")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a + self.linear_2(torch.relu(self.linear_1(torch.relu(a))))


class AngleResnet(nn.Module):
    """Predicts the 7 torsion angles as (sin, cos) from the current and initial single repr.

    AF2 Suppl. Alg. 20 "StructureModule" lines 11-14. ReLU is applied to ``s`` and
    ``s_initial`` before their input projections (as in AF2's code).
    """

    def __init__(self, c_in: int, c_hidden: int, num_blocks: int, num_angles: int = 7, epsilon: float = 1e-8):
        super().__init__()
        self.num_angles = num_angles
        self.epsilon = epsilon
        self.linear_in = Linear(c_in, c_hidden)
        self.linear_initial = Linear(c_in, c_hidden)
        self.layers = nn.ModuleList([AngleResnetBlock(c_hidden) for _ in range(num_blocks)])
        self.linear_out = Linear(c_hidden, num_angles * 2)

    def forward(self, s: torch.Tensor, s_initial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(unnormalized_angles, angles)``, both ``[*, N, num_angles, 2]`` (sin, cos)."""
        a = self.linear_in(torch.relu(s)) + self.linear_initial(torch.relu(s_initial))
        for layer in self.layers:
            a = layer(a)
        a = self.linear_out(torch.relu(a)).unflatten(-1, (self.num_angles, 2))  # [*, N, A, 2]
        a32 = _up(a)
        denom = torch.sqrt(torch.clamp((a32 * a32).sum(dim=-1, keepdim=True), min=self.epsilon))
        return a, (a32 / denom).to(a.dtype)


class StructureModuleTransitionLayer(nn.Module):
    """Three linears with ReLUs and a residual (AF2 Suppl. Alg. 20 "StructureModule" line 8)."""

    def __init__(self, c: int):
        super().__init__()
        self.linear_1 = Linear(c, c, init="relu")
        self.linear_2 = Linear(c, c, init="relu")
        self.linear_3 = Linear(c, c, init="final")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s + self.linear_3(torch.relu(self.linear_2(torch.relu(self.linear_1(s)))))


class StructureModuleTransition(nn.Module):
    """Transition of the single representation: layers, dropout, LayerNorm.

    AF2 Suppl. Alg. 20 "StructureModule" lines 8-9.
    """

    def __init__(self, c: int, num_layers: int = 1, dropout_rate: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList([StructureModuleTransitionLayer(c) for _ in range(num_layers)])
        self.dropout = nn.Dropout(dropout_rate)
        self.layer_norm = LayerNorm(c)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            s = layer(s)
        return self.layer_norm(self.dropout(s))


_FLOAT_TABLES = ("default_frames", "atom_mask", "lit_positions")


class StructureModule(nn.Module):
    """Eight weight-shared blocks of IPA, transition, backbone update and torsion prediction.

    AF2 Suppl. Alg. 20 "StructureModule".

    Frames start as identity quaternions ``(1, 0, 0, 0)`` with zero translation (in units of
    ``trans_scale_factor`` Å). Each block: ``s += IPA(s, z, T)``, LayerNorm, transition,
    ``T ← T ∘ update(s)``, torsion angles from ``(s, s_initial)``, and all-atom frames and
    atom14 positions from the frames scaled to Å. The rotation gradient is stopped between
    blocks (Alg. 20 line 20).

    The residue tables (``default_frames``, ``group_idx``, ``atom_mask``, ``lit_positions``)
    are non-persistent buffers, absent from ``state_dict``.
    """

    def __init__(
        self,
        c_s: int,
        c_z: int,
        c_ipa: int,
        c_resnet: int,
        num_heads_ipa: int,
        num_qk_points: int,
        num_v_points: int,
        num_blocks: int = 8,
        num_transition_layers: int = 1,
        num_resnet_blocks: int = 2,
        num_angles: int = 7,
        trans_scale_factor: float = 10.0,
        epsilon: float = 1e-8,
        inf: float = 1e5,
        dropout_rate: float = 0.1,
        ipa_form: IPAForm = "monomer",
    ):
        super().__init__()
        self.c_s, self.c_z = c_s, c_z
        self.num_blocks = num_blocks
        self.trans_scale_factor = trans_scale_factor
        self.ipa_form = ipa_form

        self.layer_norm_s = LayerNorm(c_s)
        self.layer_norm_z = LayerNorm(c_z)
        self.linear_in = Linear(c_s, c_s)
        self.ipa = InvariantPointAttention(
            c_s, c_z, c_ipa, num_heads_ipa, num_qk_points, num_v_points, inf=inf, eps=epsilon, ipa_form=ipa_form
        )
        self.ipa_dropout = nn.Dropout(dropout_rate)
        self.layer_norm_ipa = LayerNorm(c_s)
        self.transition = StructureModuleTransition(c_s, num_transition_layers, dropout_rate)
        self.bb_update = BackboneUpdate(c_s)
        self.angle_resnet = AngleResnet(c_s, c_resnet, num_resnet_blocks, num_angles, epsilon)

        tables = residue_constant_tensors()
        for name in ("default_frames", "group_idx", "atom_mask", "lit_positions"):
            self.register_buffer(name, tables[name], persistent=False)

    @classmethod
    def from_config(cls, cfg, dropout_rate: float = 0.1) -> "StructureModule":
        """Build from a :class:`~sparkfold.config.ModelConfig` (uses ``c_s``, ``c_z`` and ``structure_module``)."""
        sm = cfg.structure_module
        return cls(
            c_s=cfg.c_s, c_z=cfg.c_z, c_ipa=sm.c_ipa, c_resnet=sm.c_resnet, num_heads_ipa=sm.num_heads_ipa,
            num_qk_points=sm.num_qk_points, num_v_points=sm.num_v_points, num_blocks=sm.num_blocks,
            num_transition_layers=sm.num_transition_layers, num_resnet_blocks=sm.num_resnet_blocks,
            num_angles=sm.num_angles, trans_scale_factor=sm.trans_scale_factor, epsilon=sm.epsilon, inf=sm.inf,
            dropout_rate=dropout_rate, ipa_form=sm.ipa_form,
        )

    def _apply(self, fn, recurse=True):
        # DEVIATION: the residue tables stay fp32 under module.to(bfloat16/half) (OpenFold casts
        # them with the model): rebuilt from the constants so no precision is lost.
        super()._apply(fn, recurse)
        fresh = None
        for name in _FLOAT_TABLES:
            buf = self._buffers.get(name)
            if buf is not None and buf.dtype != torch.float32:
                fresh = fresh or residue_constant_tensors()
                self._buffers[name] = fresh[name].to(buf.device)
        return self

    def _update_frames(self, rigids: Rigid, update: torch.Tensor) -> Rigid:
        if self.ipa_form == "monomer":
            return rigids.compose_q_update_vec(update)
        # AF-Multimer: the update is a matrix rigid from the normalised quaternion (1, b, c, d).
        quat = torch.cat([torch.ones_like(update[..., :1]), update[..., :3]], dim=-1)
        upd = Rigid(Rotation(rot_mats=Rotation(quats=quat).get_rot_mats()), update[..., 3:])
        return rigids.compose(upd)

    def forward(
        self,
        representations: Mapping[str, torch.Tensor],
        aatype: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the structure module.

        Args:
            representations: ``{"single": [*, N, c_s], "pair": [*, N, N, c_z]}`` (Evoformer output;
                the pair in any dtype: it is upcast and normalised block by block).
            aatype: ``[*, N]`` residue indices (0..20).
            mask: optional ``[*, N]`` sequence mask (default all ones).

        Returns:
            Stacked over the blocks (leading dim ``num_blocks``): ``frames [B, *, N, 7]``
            (quaternion w,x,y,z + translation in Å), ``sidechain_frames [B, *, N, 8, 4, 4]``,
            ``unnormalized_angles``/``angles [B, *, N, 7, 2]`` (sin, cos), ``positions
            [B, *, N, 14, 3]`` (atom14, Å), ``states [B, *, N, c_s]``; plus the final
            ``single [*, N, c_s]``. Frames and positions are fp32 (fp64 for fp64 inputs); the
            others are in the activation dtype.
        """
        s, z = representations["single"], representations["pair"]
        if mask is None:
            mask = s.new_ones(s.shape[:-1])
        s = self.layer_norm_s(s)
        z = NormalisedPair(z, self.layer_norm_z)  # not stored whole: block by block on use
        pair_bias = self.ipa.pair_bias(z)
        s_initial = s
        s = self.linear_in(s)

        # Frames and coordinates are fp32 (fp64 when the activations are fp64).
        geom_dtype = torch.promote_types(s.dtype, torch.float32)
        fmt = "quat" if self.ipa_form == "monomer" else "rot_mat"
        rigids = Rigid.identity(s.shape[:-1], geom_dtype, s.device, fmt=fmt)
        default_frames = self.default_frames.to(geom_dtype)
        outputs = []
        for _ in range(self.num_blocks):
            s = s + self.ipa(s, z, rigids, mask, pair_bias=pair_bias)
            s = self.layer_norm_ipa(self.ipa_dropout(s))
            s = self.transition(s)
            rigids = self._update_frames(rigids, self.bb_update(s))

            # Side chains are built from matrix-form backbone frames, as AF2 does.
            backb_to_global = Rigid(Rotation(rot_mats=rigids.get_rots().get_rot_mats()), rigids.get_trans())
            backb_to_global = backb_to_global.scale_translation(self.trans_scale_factor)
            unnormalized_angles, angles = self.angle_resnet(s, s_initial)
            all_frames = torsion_angles_to_frames(backb_to_global, angles.to(geom_dtype), aatype, default_frames)
            positions = frames_and_literature_positions_to_atom14_pos(
                all_frames, aatype, default_frames, self.group_idx,
                self.atom_mask.to(geom_dtype), self.lit_positions.to(geom_dtype),
            )
            outputs.append({
                "frames": rigids.scale_translation(self.trans_scale_factor).to_tensor_7(),
                "sidechain_frames": all_frames.to_tensor_4x4(),
                "unnormalized_angles": unnormalized_angles,
                "angles": angles,
                "positions": positions,
                "states": s,
            })
            rigids = rigids.stop_rot_gradient()

        out = {key: torch.stack([o[key] for o in outputs]) for key in outputs[0]}
        out["single"] = s
        return out
