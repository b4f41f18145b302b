"""Official AlphaFold2 ``params_model_*.npz`` files ↔ canonical (OpenFold) parameter names.

The mapping is a declarative table built from a :class:`~sparkfold.config.ModelConfig`
(``shared/spec/af2_params_mapping.md``): each row names one npz array, its shape (with the
leading block axis when the haiku module was stacked), the OpenFold key it becomes (``{i}`` =
block index), the per-block torch shape, the layout transform and whether the two output halves
are exchanged. The table is written once per module kind (Linear, LayerNorm, attention,
triangle multiplication, …) and composed per block; no name is derived by string surgery at
load time. ``tests/unit/test_weights.py`` checks the table against ``shared/spec/af2_npz_map``.

Transforms (npz array → torch tensor, per block):

* ``Other`` and ``LinearBiasMHA``: reshape to the torch shape (``[H, c] → [H·c]``).
* ``LinearWeight``, ``LinearWeightMHA``, ``LinearMHAOutputWeight``, ``LinearWeightOPM``: merge
  the npz axes into ``[in, out]`` (head-major, ``h·c + j``) and transpose to torch ``[out, in]``;
  a 1-D npz weight ``[out]`` becomes ``[out, 1]``.
* ``half_swap`` (multimer v3 incoming triangle multiplication): the two halves of the torch
  output axis are exchanged, because AF2 swaps the roles of a and b for the incoming update.
"""

import os
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from sparkfold.config import ModelConfig

__all__ = [
    "NPZ_PREFIX",
    "TRANSFORMS",
    "NpzEntry",
    "build_npz_table",
    "check_npz_arrays",
    "infer_npz_preset",
    "npz_to_state_dict",
    "read_npz",
    "state_dict_to_npz",
    "uses_fused_tri_mul",
]

NPZ_PREFIX = "alphafold/alphafold_iteration/"

#: transform name → how the npz array becomes the torch tensor.
TRANSFORMS: dict[str, str] = {
    "Other": "reshape",
    "LinearBiasMHA": "reshape",
    "LinearWeight": "transpose",
    "LinearWeightMHA": "transpose",
    "LinearMHAOutputWeight": "transpose",
    "LinearWeightOPM": "transpose",
}


@dataclass(frozen=True)
class NpzEntry:
    """One row of the mapping table.

    Attributes:
        npz_key: full npz key (``alphafold/alphafold_iteration/...//leaf``).
        npz_shape: per-block npz shape (without the block axis).
        openfold_key: canonical key; contains ``{i}`` when stacked.
        torch_shape: per-block torch shape.
        transform: one of :data:`TRANSFORMS`.
        stacked_blocks: size of the leading block axis in the npz, or None.
        half_swap: exchange the two halves of the torch output axis.
    """

    npz_key: str
    npz_shape: tuple[int, ...]
    openfold_key: str
    torch_shape: tuple[int, ...]
    transform: str
    stacked_blocks: int | None = None
    half_swap: bool = False

    @property
    def full_npz_shape(self) -> tuple[int, ...]:
        """The npz array's shape including the block axis."""
        if self.stacked_blocks is None:
            return self.npz_shape
        return (self.stacked_blocks,) + self.npz_shape

    def openfold_keys(self) -> list[str]:
        """Every canonical key this row fills (one per block)."""
        if self.stacked_blocks is None:
            return [self.openfold_key]
        return [self.openfold_key.format(i=i) for i in range(self.stacked_blocks)]

    def to_torch(self, array: np.ndarray) -> torch.Tensor:
        """npz array (one block) → torch tensor."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if TRANSFORMS[self.transform] == "transpose":
            out_dim, in_dim = self.torch_shape
            t = t.reshape(in_dim, out_dim).T
        else:
            t = t.reshape(self.torch_shape)
        if self.half_swap:
            t = _swap_halves(t)
        return t  # may be a (transposed) view of the array; load_state_dict copies it

    def to_npz(self, tensor: torch.Tensor) -> np.ndarray:
        """torch tensor (one block) → npz array; the inverse of :meth:`to_torch`."""
        t = tensor.detach().cpu()
        if self.half_swap:
            t = _swap_halves(t)
        if TRANSFORMS[self.transform] == "transpose":
            t = t.T
        return np.ascontiguousarray(t.reshape(self.npz_shape).numpy())


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    h = t.shape[0] // 2
    return torch.cat([t[h:], t[:h]], dim=0)


# ----------------------------------------------------------------- module kinds
_Rows = list[NpzEntry]


def _row(af: str, shape, of: str, tshape, transform: str, half_swap: bool = False) -> NpzEntry:
    return NpzEntry(af, tuple(shape), of, tuple(tshape), transform, None, half_swap)


def _linear(af: str, of: str, c_in: int, c_out: int, bias: bool = True,
            half_swap: bool = False) -> _Rows:
    """haiku Linear ``weights [in, out]`` (``[out]`` when ``c_in == 1``), ``bias [out]``."""
    npz_w = (c_out,) if c_in == 1 else (c_in, c_out)
    rows = [_row(f"{af}//weights", npz_w, f"{of}.weight", (c_out, c_in), "LinearWeight", half_swap)]
    if bias:
        rows.append(_row(f"{af}//bias", (c_out,), f"{of}.bias", (c_out,), "Other", half_swap))
    return rows


def _vector_linear(af: str, of: str, c_out: int) -> _Rows:
    """AF-Multimer template feature linears: a scalar feature → ``c_out`` (npz weight ``[out]``)."""
    return _linear(af, of, 1, c_out)


def _mha_linear(af: str, of: str, c_in: int, num_heads: int, c_head: int, bias: bool) -> _Rows:
    """A projection stored per head: ``weights [in, H, c]``, ``bias [H, c]``."""
    rows = [_row(f"{af}//weights", (c_in, num_heads, c_head), f"{of}.weight",
                 (num_heads * c_head, c_in), "LinearWeightMHA")]
    if bias:
        rows.append(_row(f"{af}//bias", (num_heads, c_head), f"{of}.bias", (num_heads * c_head,),
                         "LinearBiasMHA"))
    return rows


def _layer_norm(af: str, of: str, c: int) -> _Rows:
    return [
        _row(f"{af}//scale", (c,), f"{of}.weight", (c,), "Other"),
        _row(f"{af}//offset", (c,), f"{of}.bias", (c,), "Other"),
    ]


def _attention(af: str, of: str, c_q: int, c_kv: int, num_heads: int, c_head: int,
               c_out: int | None = None, gating: bool = True, global_kv: bool = False) -> _Rows:
    """AF2 ``Attention``/``GlobalAttention`` leaves → ``linear_q/k/v/o/g``."""
    h, c = num_heads, c_head
    c_out = c_q if c_out is None else c_out
    rows = [_row(f"{af}//query_w", (c_q, h, c), f"{of}.linear_q.weight", (h * c, c_q), "LinearWeightMHA")]
    if global_kv:  # one shared key/value head
        rows += [
            _row(f"{af}//key_w", (c_kv, c), f"{of}.linear_k.weight", (c, c_kv), "LinearWeight"),
            _row(f"{af}//value_w", (c_kv, c), f"{of}.linear_v.weight", (c, c_kv), "LinearWeight"),
        ]
    else:
        rows += [
            _row(f"{af}//key_w", (c_kv, h, c), f"{of}.linear_k.weight", (h * c, c_kv), "LinearWeightMHA"),
            _row(f"{af}//value_w", (c_kv, h, c), f"{of}.linear_v.weight", (h * c, c_kv), "LinearWeightMHA"),
        ]
    rows += [
        _row(f"{af}//output_w", (h, c, c_out), f"{of}.linear_o.weight", (c_out, h * c),
             "LinearMHAOutputWeight"),
        _row(f"{af}//output_b", (c_out,), f"{of}.linear_o.bias", (c_out,), "Other"),
    ]
    if gating:
        rows += [
            _row(f"{af}//gating_w", (c_q, h, c), f"{of}.linear_g.weight", (h * c, c_q), "LinearWeightMHA"),
            _row(f"{af}//gating_b", (h, c), f"{of}.linear_g.bias", (h * c,), "LinearBiasMHA"),
        ]
    return rows


def _msa_row_attention(af: str, of: str, c_m: int, c_z: int, num_heads: int, c: int) -> _Rows:
    return (
        _layer_norm(f"{af}/query_norm", f"{of}.layer_norm_m", c_m)
        + _attention(f"{af}/attention", f"{of}.mha", c_m, c_m, num_heads, c)
        + _layer_norm(f"{af}/feat_2d_norm", f"{of}.layer_norm_z", c_z)
        + [_row(f"{af}//feat_2d_weights", (c_z, num_heads), f"{of}.linear_z.weight",
                (num_heads, c_z), "LinearWeight")]
    )


def _msa_column_attention(af: str, of: str, c_m: int, num_heads: int, c: int,
                          is_global: bool) -> _Rows:
    inner = f"{of}.global_attention" if is_global else f"{of}._msa_att.mha"
    norm = f"{of}.layer_norm_m" if is_global else f"{of}._msa_att.layer_norm_m"
    return (_layer_norm(f"{af}/query_norm", norm, c_m)
            + _attention(f"{af}/attention", inner, c_m, c_m, num_heads, c, global_kv=is_global))


def _transition(af: str, of: str, c: int, n: int) -> _Rows:
    return (_layer_norm(f"{af}/input_layer_norm", f"{of}.layer_norm", c)
            + _linear(f"{af}/transition1", f"{of}.linear_1", c, n * c)
            + _linear(f"{af}/transition2", f"{of}.linear_2", n * c, c))


def _outer_product_mean(af: str, of: str, c_m: int, c_hidden: int, c_z: int) -> _Rows:
    return (
        _layer_norm(f"{af}/layer_norm_input", f"{of}.layer_norm", c_m)
        + _linear(f"{af}/left_projection", f"{of}.linear_1", c_m, c_hidden)
        + _linear(f"{af}/right_projection", f"{of}.linear_2", c_m, c_hidden)
        + [_row(f"{af}//output_w", (c_hidden, c_hidden, c_z), f"{of}.linear_out.weight",
                (c_z, c_hidden * c_hidden), "LinearWeightOPM"),
           _row(f"{af}//output_b", (c_z,), f"{of}.linear_out.bias", (c_z,), "Other")]
    )


def _triangle_multiplication(af: str, of: str, c_z: int, c_hidden: int, incoming: bool,
                             fused: bool) -> _Rows:
    """AF2 names left/right; for the incoming update AF2's left is OpenFold's b (and right is a)."""
    rows = []
    if fused:
        rows += _layer_norm(f"{af}/left_norm_input", f"{of}.layer_norm_in", c_z)
        rows += _linear(f"{af}/projection", f"{of}.linear_ab_p", c_z, 2 * c_hidden, half_swap=incoming)
        rows += _linear(f"{af}/gate", f"{of}.linear_ab_g", c_z, 2 * c_hidden, half_swap=incoming)
        rows += _layer_norm(f"{af}/center_norm", f"{of}.layer_norm_out", c_hidden)
    else:
        left, right = ("b", "a") if incoming else ("a", "b")
        rows += _layer_norm(f"{af}/layer_norm_input", f"{of}.layer_norm_in", c_z)
        rows += _linear(f"{af}/left_projection", f"{of}.linear_{left}_p", c_z, c_hidden)
        rows += _linear(f"{af}/right_projection", f"{of}.linear_{right}_p", c_z, c_hidden)
        rows += _linear(f"{af}/left_gate", f"{of}.linear_{left}_g", c_z, c_hidden)
        rows += _linear(f"{af}/right_gate", f"{of}.linear_{right}_g", c_z, c_hidden)
        rows += _layer_norm(f"{af}/center_layer_norm", f"{of}.layer_norm_out", c_hidden)
    rows += _linear(f"{af}/output_projection", f"{of}.linear_z", c_hidden, c_z)
    rows += _linear(f"{af}/gating_linear", f"{of}.linear_g", c_z, c_z)
    return rows


def _triangle_attention(af: str, of: str, c_z: int, num_heads: int, c: int) -> _Rows:
    return (
        _layer_norm(f"{af}/query_norm", f"{of}.layer_norm", c_z)
        + [_row(f"{af}//feat_2d_weights", (c_z, num_heads), f"{of}.linear.weight",
                (num_heads, c_z), "LinearWeight")]
        + _attention(f"{af}/attention", f"{of}.mha", c_z, c_z, num_heads, c)
    )


def _pair_updates(af: str, of: str, c_z: int, c_mul: int, heads: int, c_att: int, n: int,
                  fused: bool) -> _Rows:
    """The four triangle updates and the pair transition (shared by all pair stacks)."""
    return (
        _triangle_multiplication(f"{af}/triangle_multiplication_outgoing", f"{of}.tri_mul_out",
                                 c_z, c_mul, incoming=False, fused=fused)
        + _triangle_multiplication(f"{af}/triangle_multiplication_incoming", f"{of}.tri_mul_in",
                                   c_z, c_mul, incoming=True, fused=fused)
        + _triangle_attention(f"{af}/triangle_attention_starting_node", f"{of}.tri_att_start",
                              c_z, heads, c_att)
        + _triangle_attention(f"{af}/triangle_attention_ending_node", f"{of}.tri_att_end",
                              c_z, heads, c_att)
        + _transition(f"{af}/pair_transition", f"{of}.pair_transition", c_z, n)
    )


def _msa_block(af: str, of: str, s, fused: bool) -> _Rows:
    """One Evoformer / extra-MSA block; ``s`` is its :class:`MSAStackConfig`."""
    col = "msa_column_global_attention" if s.global_column_attention else "msa_column_attention"
    return (
        _msa_row_attention(f"{af}/msa_row_attention_with_pair_bias", f"{of}.msa_att_row",
                           s.c_m, s.c_z, s.num_heads_msa, s.c_hidden_msa_att)
        + _msa_column_attention(f"{af}/{col}", f"{of}.msa_att_col", s.c_m, s.num_heads_msa,
                                s.c_hidden_msa_att, s.global_column_attention)
        + _transition(f"{af}/msa_transition", f"{of}.msa_transition", s.c_m, s.transition_n)
        + _outer_product_mean(f"{af}/outer_product_mean", f"{of}.outer_product_mean", s.c_m,
                              s.c_hidden_opm, s.c_z)
        + _pair_updates(af, f"{of}.pair_stack", s.c_z, s.c_hidden_mul, s.num_heads_pair,
                        s.c_hidden_pair_att, s.transition_n, fused)
    )


def _stacked(rows: _Rows, num_blocks: int) -> _Rows:
    return [NpzEntry(r.npz_key, r.npz_shape, r.openfold_key, r.torch_shape, r.transform,
                     num_blocks, r.half_swap) for r in rows]


# ----------------------------------------------------------------- whole model
def uses_fused_tri_mul(config: ModelConfig) -> bool:
    """Whether the AF2 file stores fused triangle-multiplication projections (multimer v3)."""
    return config.is_multimer and config.name.endswith("_v3")


def _template_rows(cfg: ModelConfig, fused: bool) -> _Rows:
    t = cfg.template
    ev = "evoformer"
    te = f"{ev}/template_embedding"
    ste = f"{te}/single_template_embedding"
    of = "template_embedder"
    pair_block = _pair_updates("", "", cfg.c_t, t.c_hidden_tri_mul, t.num_heads_tri_att,
                               t.c_hidden_tri_att, t.transition_n, fused)
    rows: _Rows = []
    if t.embedder_form == "monomer":
        rows += _linear(f"{ste}/embedding2d", f"{of}.template_pair_embedder.linear", t.pair_c_in, cfg.c_t)
        stack_af = f"{ste}/template_pair_stack/__layer_stack_no_state"
    else:
        pe = f"{of}.template_pair_embedder"
        rows += _layer_norm(f"{ste}/query_embedding_norm", f"{pe}.query_embedding_layer_norm", cfg.c_z)
        rows += _linear(f"{ste}/template_pair_embedding_0", f"{pe}.dgram_linear",
                        t.distogram_num_bins, cfg.c_t)
        rows += _vector_linear(f"{ste}/template_pair_embedding_1", f"{pe}.pseudo_beta_mask_linear", cfg.c_t)
        rows += _linear(f"{ste}/template_pair_embedding_2", f"{pe}.aatype_linear_1", 22, cfg.c_t)
        rows += _linear(f"{ste}/template_pair_embedding_3", f"{pe}.aatype_linear_2", 22, cfg.c_t)
        for k, axis in zip((4, 5, 6), "xyz"):
            rows += _vector_linear(f"{ste}/template_pair_embedding_{k}", f"{pe}.{axis}_linear", cfg.c_t)
        rows += _vector_linear(f"{ste}/template_pair_embedding_7", f"{pe}.backbone_mask_linear", cfg.c_t)
        rows += _linear(f"{ste}/template_pair_embedding_8", f"{pe}.query_embedding_linear", cfg.c_z, cfg.c_t)
        stack_af = f"{ste}/template_embedding_iteration"
    # Block rows were built with empty scopes; prefix them here.
    blocks = [NpzEntry(f"{stack_af}{r.npz_key}", r.npz_shape,
                       f"{of}.template_pair_stack.blocks.{{i}}{r.openfold_key}",
                       r.torch_shape, r.transform, None, r.half_swap) for r in pair_block]
    rows += _stacked(blocks, t.num_blocks)
    rows += _layer_norm(f"{ste}/output_layer_norm", f"{of}.template_pair_stack.layer_norm", cfg.c_t)
    if t.embedder_form == "monomer":
        rows += _attention(f"{te}/attention", f"{of}.template_pointwise_att.mha", cfg.c_z, cfg.c_t,
                           t.num_heads_pointwise, t.c_hidden_pointwise, gating=False)
        if t.embed_angles:
            rows += _linear(f"{ev}/template_single_embedding", f"{of}.template_single_embedder.linear_1",
                            t.single_c_in, cfg.c_m)
            rows += _linear(f"{ev}/template_projection", f"{of}.template_single_embedder.linear_2",
                            cfg.c_m, cfg.c_m)
    else:
        rows += _linear(f"{te}/output_linear", f"{of}.linear_t", cfg.c_t, cfg.c_z)
        se = f"{of}.template_single_embedder"
        rows += _linear(f"{ev}/template_single_embedding", f"{se}.template_single_embedder",
                        t.single_c_in, cfg.c_m)
        rows += _linear(f"{ev}/template_projection", f"{se}.template_projector", cfg.c_m, cfg.c_m)
    return rows


def _structure_module_rows(cfg: ModelConfig) -> _Rows:
    sm = cfg.structure_module
    af, of = "structure_module", "structure_module"
    fi = f"{af}/fold_iteration"
    ipa_af, ipa = f"{fi}/invariant_point_attention", f"{of}.ipa"
    c_s, c_z, h, c = cfg.c_s, cfg.c_z, sm.num_heads_ipa, sm.c_ipa
    pq, pv = sm.num_qk_points, sm.num_v_points
    rows = (_layer_norm(f"{af}/single_layer_norm", f"{of}.layer_norm_s", c_s)
            + _linear(f"{af}/initial_projection", f"{of}.linear_in", c_s, c_s)
            + _layer_norm(f"{af}/pair_layer_norm", f"{of}.layer_norm_z", c_z))
    if sm.ipa_form == "monomer":
        rows += _linear(f"{ipa_af}/q_scalar", f"{ipa}.linear_q", c_s, h * c)
        rows += _linear(f"{ipa_af}/kv_scalar", f"{ipa}.linear_kv", c_s, 2 * h * c)
        rows += _linear(f"{ipa_af}/q_point_local", f"{ipa}.linear_q_points.linear", c_s, h * pq * 3)
        rows += _linear(f"{ipa_af}/kv_point_local", f"{ipa}.linear_kv_points.linear", c_s,
                        h * (pq + pv) * 3)
    else:
        for name in "qkv":
            rows += _mha_linear(f"{ipa_af}/{name}_scalar_projection", f"{ipa}.linear_{name}",
                                c_s, h, c, bias=False)
        for name, p in (("q", pq), ("k", pq), ("v", pv)):
            rows += _mha_linear(f"{ipa_af}/{name}_point_projection/point_projection",
                                f"{ipa}.linear_{name}_points.linear", c_s, h, 3 * p, bias=True)
    rows += [_row(f"{ipa_af}//trainable_point_weights", (h,), f"{ipa}.head_weights", (h,), "Other")]
    rows += _linear(f"{ipa_af}/attention_2d", f"{ipa}.linear_b", c_z, h)
    rows += _linear(f"{ipa_af}/output_projection", f"{ipa}.linear_out", h * (c_z + c + 4 * pv), c_s)
    rows += _layer_norm(f"{fi}/attention_layer_norm", f"{of}.layer_norm_ipa", c_s)
    for layer in range(sm.num_transition_layers):
        for k in range(3):
            idx = 3 * layer + k
            name = "transition" if idx == 0 else f"transition_{idx}"
            rows += _linear(f"{fi}/{name}", f"{of}.transition.layers.{layer}.linear_{k + 1}", c_s, c_s)
    rows += _layer_norm(f"{fi}/transition_layer_norm", f"{of}.transition.layer_norm", c_s)
    update = "affine_update" if sm.ipa_form == "monomer" else "quat_rigid/rigid"
    rows += _linear(f"{fi}/{update}", f"{of}.bb_update.linear", c_s, 6)
    rs, ar = f"{fi}/rigid_sidechain", f"{of}.angle_resnet"
    rows += _linear(f"{rs}/input_projection", f"{ar}.linear_in", c_s, sm.c_resnet)
    rows += _linear(f"{rs}/input_projection_1", f"{ar}.linear_initial", c_s, sm.c_resnet)
    for b in range(sm.num_resnet_blocks):
        suffix = "" if b == 0 else f"_{b}"
        rows += _linear(f"{rs}/resblock1{suffix}", f"{ar}.layers.{b}.linear_1", sm.c_resnet, sm.c_resnet)
        rows += _linear(f"{rs}/resblock2{suffix}", f"{ar}.layers.{b}.linear_2", sm.c_resnet, sm.c_resnet)
    rows += _linear(f"{rs}/unnormalized_angles", f"{ar}.linear_out", sm.c_resnet, 2 * sm.num_angles)
    return rows


def _head_rows(cfg: ModelConfig) -> _Rows:
    h = cfg.heads
    rows = (_layer_norm("predicted_lddt_head/input_layer_norm", "aux_heads.plddt.layer_norm", cfg.c_s)
            + _linear("predicted_lddt_head/act_0", "aux_heads.plddt.linear_1", cfg.c_s, h.lddt_c_hidden)
            + _linear("predicted_lddt_head/act_1", "aux_heads.plddt.linear_2", h.lddt_c_hidden,
                      h.lddt_c_hidden)
            + _linear("predicted_lddt_head/logits", "aux_heads.plddt.linear_3", h.lddt_c_hidden,
                      h.lddt_num_bins)
            + _linear("distogram_head/half_logits", "aux_heads.distogram.linear", cfg.c_z,
                      h.distogram_num_bins)
            + _linear("experimentally_resolved_head/logits", "aux_heads.experimentally_resolved.linear",
                      cfg.c_s, h.experimentally_resolved_c_out)
            + _linear("masked_msa_head/logits", "aux_heads.masked_msa.linear", cfg.c_m,
                      h.masked_msa_c_out))
    if h.tm_enabled:
        rows += _linear("predicted_aligned_error_head/logits", "aux_heads.tm.linear", cfg.c_z,
                        h.tm_num_bins)
    return rows


def build_npz_table(config: ModelConfig, fused_tri_mul: bool | None = None) -> list[NpzEntry]:
    """The complete npz ↔ OpenFold table for ``config``.

    Args:
        config: the model configuration (any size; the full presets give the official files).
        fused_tri_mul: whether triangle-multiplication projections are fused (multimer v3);
            default from the preset name.

    Returns:
        One :class:`NpzEntry` per npz array, keys carrying the ``alphafold/alphafold_iteration/``
        prefix.
    """
    fused = uses_fused_tri_mul(config) if fused_tri_mul is None else fused_tri_mul
    ev = "evoformer"
    ie = config.input_embedder
    rows: _Rows = []
    rows += _linear(f"{ev}/preprocess_1d", "input_embedder.linear_tf_m", ie.tf_dim, config.c_m)
    rows += _linear(f"{ev}/preprocess_msa", "input_embedder.linear_msa_m", ie.msa_dim, config.c_m)
    rows += _linear(f"{ev}/left_single", "input_embedder.linear_tf_z_i", ie.tf_dim, config.c_z)
    rows += _linear(f"{ev}/right_single", "input_embedder.linear_tf_z_j", ie.tf_dim, config.c_z)
    rows += _linear(f"{ev}/prev_pos_linear", "recycling_embedder.linear",
                    config.recycling_embedder.num_bins, config.c_z)
    rows += _layer_norm(f"{ev}/prev_msa_first_row_norm", "recycling_embedder.layer_norm_m", config.c_m)
    rows += _layer_norm(f"{ev}/prev_pair_norm", "recycling_embedder.layer_norm_z", config.c_z)
    relpos = "pair_activiations" if ie.relpos_form == "monomer" else "~_relative_encoding/position_activations"
    rows += _linear(f"{ev}/{relpos}", "input_embedder.linear_relpos", ie.num_relpos_bins, config.c_z)
    if config.extra_msa_enabled:
        rows += _linear(f"{ev}/extra_msa_activations", "extra_msa_embedder.linear",
                        config.extra_msa_c_in, config.c_e)
        rows += _stacked(_msa_block(f"{ev}/extra_msa_stack", "extra_msa_stack.blocks.{i}",
                                    config.extra_msa_stack, fused), config.extra_msa_stack.num_blocks)
    rows += _stacked(_msa_block(f"{ev}/evoformer_iteration", "evoformer.blocks.{i}",
                                config.evoformer, fused), config.evoformer.num_blocks)
    rows += _linear(f"{ev}/single_activations", "evoformer.linear", config.c_m, config.c_s)
    if config.template.enabled:
        rows += _template_rows(config, fused)
    rows += _structure_module_rows(config)
    rows += _head_rows(config)
    return [NpzEntry(NPZ_PREFIX + r.npz_key, r.npz_shape, r.openfold_key, r.torch_shape,
                     r.transform, r.stacked_blocks, r.half_swap) for r in rows]


# ----------------------------------------------------------------- reading
class NpzReadError(ValueError):
    """The file is not a readable npz archive (missing, truncated, corrupt)."""


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an AF2 params ``.npz`` (no pickles) into memory.

    Raises:
        NpzReadError: the file is missing, not an npz archive, truncated or holds objects.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise NpzReadError(f"weights file {path} does not exist") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise NpzReadError(
            f"{path} is not a readable AlphaFold .npz archive (truncated or corrupt: {exc}); "
            "download it again (sparkfold weights) and check its size"
        ) from None


def check_npz_arrays(arrays: dict[str, np.ndarray], table: list[NpzEntry]) -> dict[str, list[str]]:
    """Compare the arrays with the table: ``missing``, ``unexpected`` and ``shape`` problems."""
    expected = {e.npz_key: e for e in table}
    problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "shape": []}
    for key, entry in expected.items():
        if key not in arrays:
            problems["missing"].append(key)
        elif tuple(arrays[key].shape) != entry.full_npz_shape:
            problems["shape"].append(
                f"{key}: file {tuple(arrays[key].shape)}, expected {entry.full_npz_shape}")
    problems["unexpected"] = sorted(k for k in arrays if k not in expected)
    return problems


def npz_to_state_dict(arrays: dict[str, np.ndarray], table: list[NpzEntry]) -> dict[str, torch.Tensor]:
    """Apply the table: npz arrays → canonical state dict (float32). Shapes must already match."""
    out: dict[str, torch.Tensor] = {}
    for entry in table:
        array = arrays[entry.npz_key]
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if entry.stacked_blocks is None:
            out[entry.openfold_key] = entry.to_torch(array)
        else:
            for i, key in enumerate(entry.openfold_keys()):
                out[key] = entry.to_torch(array[i])
    return out


def state_dict_to_npz(state_dict: dict[str, torch.Tensor], table: list[NpzEntry]) -> dict[str, np.ndarray]:
    """The inverse of :func:`npz_to_state_dict`: canonical state dict → AF2 npz arrays."""
    out: dict[str, np.ndarray] = {}
    for entry in table:
        if entry.stacked_blocks is None:
            out[entry.npz_key] = entry.to_npz(state_dict[entry.openfold_key].float())
        else:
            out[entry.npz_key] = np.stack(
                [entry.to_npz(state_dict[k].float()) for k in entry.openfold_keys()])
    return out


def infer_npz_preset(arrays: dict[str, np.ndarray]) -> str:
    """The AF2 preset whose layout these npz keys have (model 1 or 3 family, pTM, multimer)."""
    keys = set(arrays)
    multimer = any("~_relative_encoding" in k for k in keys)
    if multimer:
        fused = any(k.endswith("triangle_multiplication_outgoing/projection//weights") for k in keys)
        return "model_1_multimer_v3" if fused else "model_1_multimer_v2"
    templates = any("/template_embedding/" in k for k in keys)
    ptm = any(k.startswith(NPZ_PREFIX + "predicted_aligned_error_head/") for k in keys)
    return ("model_1" if templates else "model_3") + ("_ptm" if ptm else "")
