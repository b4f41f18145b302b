"""The whole AlphaFold2 model: embedders, trunk, structure module, heads and the recycling loop.

AF2 Suppl. Alg. 2 "Inference". This is the only module that composes the others. It takes
OpenFold's processed batch as it is (every tensor carries the recycling pass as its LAST axis)
and returns OpenFold's complete output dict (``shared/spec/features.md`` §3).

Precision (``RuntimeConfig.precision``):

* ``fp32``: true fp32; TF32 matmuls are switched off inside ``forward`` (and restored after).
* ``tf32``: TF32 matmuls inside ``forward`` only (as OpenFold's inference script runs).
* ``bf16``: the trunk (embedders, template/extra-MSA/Evoformer stacks) holds bf16 weights and
  activations; the structure module runs in fp32 on fp32 copies of its outputs, and the pair
  and MSA heads compute in fp32 from slices of them upcast one at a time.
"""

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from sparkfold import constants as rc
from sparkfold.allatom import atom14_to_atom37, pseudo_beta
from sparkfold.config import ModelConfig, RuntimeConfig
from sparkfold.model import kernels
from sparkfold.model.chunking import auto_chunk_size
from sparkfold.model.embedders import (
    ExtraMSAEmbedder,
    InputEmbedder,
    RecyclingEmbedder,
    build_extra_msa_feat,
)
from sparkfold.model.evoformer import EvoformerStack
from sparkfold.model.extra_msa import ExtraMSAStack
from sparkfold.model.graphs import PassGraph, clone_outputs, graph_key
from sparkfold.model.heads import AuxiliaryHeads
from sparkfold.model.structure_module import StructureModule
from sparkfold.model.template import TemplateEmbedder

__all__ = ["GRAPH_MAX_LENGTH", "TRUNK_MODULES", "AlphaFold", "precision_context"]

#: Longest sequence whose trunk passes run as CUDA graphs under ``cuda_graphs="auto"``: below
#: it the passes are launch-bound; above it a graph saves little and keeps its memory reserved.
GRAPH_MAX_LENGTH = 512

#: ``chunk_size="auto"`` grants one chunk's intermediates at most this multiple of the pair
#: representation's size (never less than the floor), however much memory is free: long
#: sequences are chunked even on a large GPU, in chunks large enough for efficient kernels
#: (128 rows at N = 1024, bf16), which keeps the peak close to the resident state; short ones
#: get small chunks too, so that a pass stays within AF2-JAX's memory at 256-512 residues
#: (benchmarks/RESULTS.md §3). The Evoformer's MSA and the extra MSA (other widths and
#: depths) are sized apart and the smaller chunk is used.
CHUNK_BUDGET_PAIR_MULTIPLE = 4.0
CHUNK_BUDGET_FLOOR = 256 << 20

#: Submodules that run in the trunk dtype (bf16 under ``precision="bf16"``).
TRUNK_MODULES = ("input_embedder", "recycling_embedder", "template_embedder",
                 "extra_msa_embedder", "extra_msa_stack", "evoformer")


@contextlib.contextmanager
def precision_context(precision: str):
    """Set TF32 matmuls on (``"tf32"``) or off (otherwise) for the enclosed code; restore after."""
    matmul = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    use_tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if use_tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = use_tf32
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def _check_batch(batch: dict[str, torch.Tensor]) -> None:
    """The batch must be OpenFold's processed features with the recycling axis last."""
    missing = [k for k in ("aatype", "residue_index", "seq_mask", "target_feat", "msa_feat",
                           "msa_mask", "residx_atom37_to_atom14", "atom37_atom_exists")
               if k not in batch]
    if missing:
        raise KeyError(f"the batch lacks {missing}; pass the processed feature dict "
                       "(sparkfold.data) with the recycling axis last")
    passes = batch["aatype"].shape[-1]
    odd = [f"{k} {tuple(v.shape)}" for k, v in batch.items()
           if isinstance(v, torch.Tensor) and (v.dim() == 0 or v.shape[-1] != passes)]
    if odd or batch["aatype"].dim() < 2:
        raise ValueError(
            "every batch tensor must carry the recycling pass as its last axis (OpenFold layout, "
            f"aatype [N, R]); these do not match aatype {tuple(batch['aatype'].shape)}: "
            + ", ".join(odd[:8]) + ". Add the axis with t[..., None] for a single pass"
        )


def _pass_features(batch: dict[str, torch.Tensor], k: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pass ``k``'s features: views of the tensors on ``device``, dense copies of the others
    (gathered on their side, ready to be copied over in one piece)."""
    return {key: value[..., k] if value.device == device else value[..., k].contiguous()
            for key, value in batch.items() if isinstance(value, torch.Tensor)}


class AlphaFold(nn.Module):
    """AlphaFold2 (monomer) with OpenFold's parameter names and batch/output layout.

    AF2 Suppl. Alg. 2 "Inference": per recycling pass, the input and recycling embedders, the
    template embedder (skipped when the batch has no ``template_*`` features), the extra-MSA
    stack, the Evoformer and the structure module; after the last pass, the output heads.

    Args:
        config: the architecture (``ModelConfig.from_preset(...)`` or ``ModelConfig.tiny()``).
        runtime: run-time settings: kernel backend, chunk size, precision, early stopping.
            Default ``RuntimeConfig()``.
    """

    def __init__(self, config: ModelConfig, runtime: RuntimeConfig | None = None):
        super().__init__()
        if config.is_multimer:
            raise NotImplementedError(
                f"preset {config.name!r} is an AlphaFold-Multimer preset, which sparkfold's model "
                "does not implement yet; use a monomer preset (model_1 … model_5, optionally _ptm)"
            )
        self.config = config
        self._runtime_given = runtime is not None
        self.runtime = runtime if runtime is not None else RuntimeConfig()

        self.input_embedder = InputEmbedder.from_config(config)
        self.recycling_embedder = RecyclingEmbedder.from_config(config)
        self.template_embedder = TemplateEmbedder.from_config(config) if config.template.enabled else None
        if config.extra_msa_enabled:
            self.extra_msa_embedder = ExtraMSAEmbedder.from_config(config)
            self.extra_msa_stack = ExtraMSAStack.from_config(config.extra_msa_stack)
        else:
            self.extra_msa_embedder = self.extra_msa_stack = None
        self.evoformer = EvoformerStack.from_config(config.evoformer, config.c_s)
        self.structure_module = StructureModule.from_config(config)
        self.aux_heads = AuxiliaryHeads.from_config(config)
        self._graphs: dict[tuple, PassGraph] = {}
        self._apply_precision()

    # ------------------------------------------------------------------ settings
    def _apply_precision(self) -> None:
        dtype = torch.bfloat16 if self.runtime.precision == "bf16" else torch.float32
        for name in TRUNK_MODULES:
            module = getattr(self, name)
            if module is not None:
                module.to(dtype)

    def set_runtime(self, runtime: RuntimeConfig) -> None:
        """Change the run-time settings (casts the trunk when the precision changes)."""
        self.release_graphs()
        self.runtime = runtime
        self._runtime_given = True
        self._apply_precision()

    def release_graphs(self) -> None:
        """Drop the recorded CUDA graphs of trunk passes and their memory."""
        for graph in getattr(self, "_graphs", {}).values():
            graph.release()
        if hasattr(self, "_graphs"):
            self._graphs.clear()

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() may replace the parameters a recorded graph points to.
        self.release_graphs()
        return super()._apply(fn, *args, **kwargs)

    def _use_graphs(self, n_res: int, device: torch.device) -> bool:
        """Whether trunk passes run as recorded CUDA graphs (``RuntimeConfig.cuda_graphs``)."""
        mode = self.runtime.cuda_graphs
        if mode is False or device.type != "cuda" or torch.is_grad_enabled():
            return False
        return mode is True or n_res <= GRAPH_MAX_LENGTH

    @property
    def trunk_dtype(self) -> torch.dtype:
        """The dtype of the trunk's weights and activations."""
        return self.evoformer.linear.weight.dtype

    @property
    def early_stop_tolerance(self) -> float:
        """Å RMS change of the CA distance matrix at which recycling stops (negative: never).

        From the runtime when one was given, else from the config.
        """
        if self._runtime_given:
            return self.runtime.recycle_early_stop_tolerance
        return self.config.recycle_early_stop_tolerance

    def _chunk_size(self, n_res: int, n_seq: int, device: torch.device, n_extra: int = 0) -> int | None:
        """The trunk's chunk size: the runtime's, or for ``"auto"`` the smaller of the sizes
        that fit the Evoformer (``n_seq`` rows of ``c_m``) and the extra-MSA stack
        (``n_extra`` rows of ``c_e``) into the chunk budget."""
        cs = self.runtime.chunk_size
        if cs != "auto":
            return cs
        bytes_per = 2 if self.trunk_dtype == torch.bfloat16 else 4
        pair_bytes = n_res * n_res * self.config.c_z * bytes_per
        cap = max(CHUNK_BUDGET_FLOOR, int(CHUNK_BUDGET_PAIR_MULTIPLE * pair_bytes))
        stacks = [(n_seq, self.config.c_m, self.config.evoformer)]
        if n_extra and self.config.extra_msa_enabled:
            stacks.append((n_extra, self.config.c_e, self.config.extra_msa_stack))
        sizes = [auto_chunk_size(n_res, rows, device, num_heads=cfg.num_heads_msa,
                                 c_hidden_opm=cfg.c_hidden_opm, bytes_per_element=bytes_per,
                                 c_m=width, max_budget_bytes=cap)
                 for rows, width, cfg in stacks if rows > 0]
        sizes = [size for size in sizes if size is not None]
        return min(sizes) if sizes else None

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, torch.Tensor],
                on_pass: Callable[[int, int], None] | None = None) -> dict:
        """Run every recycling pass and the heads.

        Args:
            batch: OpenFold's processed features (``features.md`` §2); every tensor's last axis
                is the recycling pass, whose size is the number of passes. The tensors may lie
                in host memory: each pass's slice is copied to the model's device when that
                pass runs (on the GPU, one pass's features instead of all of them).
            on_pass: called as ``on_pass(done, num_passes)`` after each trunk pass (progress;
                module hooks do not fire on passes replayed from a CUDA graph).

        Returns:
            OpenFold's output dict: ``msa [*, S, N, c_m]`` (first S rows), ``pair``, ``single``,
            ``sm`` (frames, sidechain_frames, unnormalized_angles, angles, positions, states,
            single), ``final_atom_positions [*, N, 37, 3]``, ``final_atom_mask``,
            ``final_affine_tensor``, ``num_recycles`` (passes run) and the head outputs
            (``lddt_logits``, ``plddt``, ``distogram_logits``, ``masked_msa_logits``,
            ``experimentally_resolved_logits``; with pTM: ``tm_logits``, ``ptm_score``,
            ``aligned_confidence_probs``, ``predicted_aligned_error``,
            ``max_predicted_aligned_error``).
        """
        _check_batch(batch)
        with contextlib.ExitStack() as stack:
            stack.enter_context(kernels.use_backend(self.runtime.kernels))
            stack.enter_context(precision_context(self.runtime.precision))
            return self._forward(batch, on_pass)

    def _forward(self, batch: dict[str, torch.Tensor],
                 on_pass: Callable[[int, int], None] | None = None) -> dict:
        num_passes = batch["aatype"].shape[-1]
        grad_enabled = torch.is_grad_enabled()
        tolerance = self.early_stop_tolerance
        device = self.evoformer.linear.weight.device
        # The recycled (m_1, z, x): a list, so that a pass can drop m_1 and z once embedded.
        prev: list = [None, None, None]
        early_stop = False
        done = 0
        outputs = None
        # One pass's features at a time go to the device: the batch may stay in host memory.
        staged = _pass_features(batch, 0, device)
        chunk_size = self._chunk_size_for(staged, device)
        graph = None
        if self._use_graphs(staged["target_feat"].shape[-2], device):
            prev = list(self._zero_prev(staged, device))
            graph = self._pass_graph(staged, tuple(prev), chunk_size)
        else:
            self.release_graphs()  # a graph of another length would only hold memory
        for k in range(num_passes):
            feats = staged
            if graph is None:
                feats = {key: value.to(device, non_blocking=True) for key, value in feats.items()}
            # else: the graph copies them into its input buffers
            is_final = k == num_passes - 1 or early_stop
            outputs = m_1 = z = None  # the previous pass's outputs are not kept during this one
            # Only the last pass keeps the autograd graph (AF2 Suppl. 1.10 "Recycling").
            with torch.set_grad_enabled(grad_enabled and is_final):
                if graph is None:
                    outputs, m_1, z, x = self._iteration(feats, prev, chunk_size)
                else:
                    outputs, m_1, z, x = graph(feats, prev)
            if not is_final:  # the next pass's host-side gather overlaps this pass on the GPU
                staged = _pass_features(batch, k + 1, device)
            done += 1
            if on_pass is not None:
                on_pass(done, num_passes)
            if is_final:
                break
            if tolerance >= 0:
                # With a graph, the previous positions are its input copy (its output buffer
                # now holds this pass's positions).
                x_before = prev[2] if graph is None else graph.prev[2]
                seq_mask = (feats if graph is None else graph.feats)["seq_mask"]
                early_stop = self._tolerance_reached(x_before, x, seq_mask, tolerance)
            prev = [m_1, z, x]
        if graph is not None:
            outputs = clone_outputs(outputs)  # out of the graph's memory before the next replay
        outputs["num_recycles"] = torch.tensor(done, device=device)
        heads_in = {  # the pair and MSA heads upcast their inputs to fp32 slice by slice
            "sm": outputs["sm"],
            "pair": outputs["pair"],
            "msa": outputs["msa"],
            "single": outputs["single"].float(),
        }
        outputs.update(self.aux_heads(heads_in))
        return outputs

    def _chunk_size_for(self, feats: dict[str, torch.Tensor], device: torch.device) -> int | None:
        """The trunk's chunk size for one pass's features (fixed for the whole forward)."""
        n_seq = feats["msa_feat"].shape[-3]
        n_res = feats["target_feat"].shape[-2]
        n_extra = feats["extra_msa"].shape[-2] if "extra_msa" in feats else 0
        n_templ = feats["template_aatype"].shape[-2] if "template_aatype" in feats else 0
        return self._chunk_size(n_res, n_seq + n_templ, device, n_extra=n_extra)

    def _zero_prev(self, feats: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
        """The recycled inputs of the first pass as explicit zeros (the eager path makes the
        same zeros inside :meth:`_iteration`)."""
        batch_dims = feats["target_feat"].shape[:-2]
        n_res = feats["target_feat"].shape[-2]
        dtype = self.trunk_dtype
        return (torch.zeros(batch_dims + (n_res, self.config.c_m), device=device, dtype=dtype),
                torch.zeros(batch_dims + (n_res, n_res, self.config.c_z), device=device, dtype=dtype),
                torch.zeros(batch_dims + (n_res, rc.atom_type_num, 3), device=device))

    def _pass_graph(self, feats: dict, prev: tuple, chunk_size: int | None) -> PassGraph:
        """The recorded pass for these shapes (recorded on first use); one kept at a time."""
        def key() -> tuple:
            params = tuple(p.data_ptr() for p in self.parameters())
            return graph_key(feats, prev, chunk_size, prev[0].device, kernels.current_backend(),
                             self.runtime.precision, hash(params))

        graph = self._graphs.get(key())
        if graph is None:
            # Fused projections turn their parameters into views of one buffer on first use:
            # build them before recording, so the key holds the addresses the graph will use.
            self.prefuse_projections()
            graph = self._graphs.get(key())
        if graph is None:
            self.release_graphs()
            graph = self._graphs[key()] = PassGraph(
                lambda f, p: self._iteration(f, p, chunk_size), feats, prev)
        return graph

    def prefuse_projections(self) -> None:
        """Build every fused projection (q/k/v/g of self-attention, the triangle projections)
        now; otherwise each is built on its first use."""
        for module in self.modules():
            if module is not self and getattr(module, "fusable", False):
                module.fused_projection()

    @staticmethod
    def _tolerance_reached(x_prev: torch.Tensor | None, x: torch.Tensor, seq_mask: torch.Tensor,
                           tolerance: float, eps: float = 1e-8) -> bool:
        """AF-Multimer early stop: RMS change of the CA distance matrix ≤ ``tolerance`` Å."""
        if x_prev is None:
            x_prev = torch.zeros_like(x)
        ca = rc.atom_order["CA"]

        def distances(p):
            return torch.sqrt(eps + torch.sum((p[..., :, None, :] - p[..., None, :, :]) ** 2, dim=-1))

        sq_diff = (distances(x_prev[..., ca, :].float()) - distances(x[..., ca, :].float())) ** 2
        mask = (seq_mask[..., :, None] * seq_mask[..., None, :]).float()
        mean = torch.sum(sq_diff * mask) / (torch.sum(mask) + eps)
        return bool(torch.sqrt(mean + eps) <= tolerance)

    def _iteration(self, feats: dict[str, torch.Tensor], prev: list | tuple,
                   chunk_size: int | None) -> tuple:
        """One trunk pass + structure module (AF2 Suppl. Alg. 2 lines 5-21)."""
        dtype = self.trunk_dtype
        seq_mask = feats["seq_mask"]
        pair_mask = (seq_mask[..., :, None] * seq_mask[..., None, :]).to(dtype)  # [*, N, N]
        msa_mask = feats["msa_mask"].to(dtype)
        n_seq = feats["msa_feat"].shape[-3]
        n_res = feats["target_feat"].shape[-2]
        batch_dims = feats["target_feat"].shape[:-2]

        # Alg. 2 L5: input embedding.
        m, z = self.input_embedder(feats["target_feat"].to(dtype), feats["residue_index"],
                                   feats["msa_feat"].to(dtype))

        # Alg. 2 L6 / Alg. 32: recycling embedding (zeros on the first pass). A list ``prev``
        # gives up m_1 and z here (the caller keeps x for the early-stop test).
        m_1_prev, z_prev, x_prev = prev
        if isinstance(prev, list):
            prev[0] = prev[1] = None
        if m_1_prev is None:
            m_1_prev = m.new_zeros(batch_dims + (n_res, self.config.c_m))
            z_prev = z.new_zeros(batch_dims + (n_res, n_res, self.config.c_z))
            x_prev = torch.zeros(batch_dims + (n_res, rc.atom_type_num, 3), device=z.device)
        pb_prev = pseudo_beta(feats["aatype"], x_prev.float())
        if torch.is_grad_enabled():
            m_1_emb, z_emb = self.recycling_embedder(m_1_prev, z_prev, pb_prev)
            z = z + z_emb
            del z_emb
        else:  # added into z block by block: no pair-sized update
            m_1_emb, z = self.recycling_embedder(m_1_prev, z_prev, pb_prev, add_into=z)
        m[..., 0, :, :] = m[..., 0, :, :] + m_1_emb
        del m_1_prev, z_prev, x_prev, m_1_emb

        # Alg. 2 L7-13: templates, only when the batch carries template features.
        if self.template_embedder is not None and any(k.startswith("template_") for k in feats):
            templ = self.template_embedder(feats, z, pair_mask, chunk_size=chunk_size)
            z = z + templ.pair.to(dtype)
            if templ.single is not None:
                m = torch.cat([m, templ.single.to(dtype)], dim=-3)  # [*, S+T, N, c_m]
                msa_mask = torch.cat([msa_mask, templ.single_mask.to(dtype)], dim=-2)
            del templ

        # Alg. 2 L14-16: extra-MSA stack.
        if self.extra_msa_stack is not None:
            a = self.extra_msa_embedder(build_extra_msa_feat(feats).to(dtype))
            z = self.extra_msa_stack(a, z, msa_mask=feats["extra_msa_mask"].to(dtype),
                                     pair_mask=pair_mask, chunk_size=chunk_size)
            del a

        # Alg. 2 L17-18: Evoformer.
        m, z, s = self.evoformer(m, z, msa_mask=msa_mask, pair_mask=pair_mask, chunk_size=chunk_size)

        outputs = {"msa": m[..., :n_seq, :, :], "pair": z, "single": s}
        # Alg. 2 L19: structure module, always in fp32 (it upcasts the pair block by block).
        sm = self.structure_module({"single": s.float(), "pair": z}, feats["aatype"],
                                   mask=seq_mask.float())
        outputs["sm"] = sm
        outputs["final_atom_positions"] = atom14_to_atom37(
            sm["positions"][-1], feats["residx_atom37_to_atom14"], feats["atom37_atom_exists"])
        outputs["final_atom_mask"] = feats["atom37_atom_exists"]
        outputs["final_affine_tensor"] = sm["frames"][-1]
        return outputs, m[..., 0, :, :], z, outputs["final_atom_positions"]

    def extra_repr(self) -> str:
        return f"preset={self.config.name!r}, precision={self.runtime.precision!r}"

