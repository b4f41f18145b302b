"""Output heads: pLDDT, distogram, masked MSA, experimentally resolved and pTM/PAE.

Parameter names follow OpenFold (``aux_heads.plddt.linear_1`` …). The heads always run in
float32 (the model casts their inputs), so confidence numbers do not depend on trunk precision.
"""

import torch
from torch import nn

from sparkfold.model.confidence import (
    compute_plddt,
    compute_predicted_aligned_error,
    compute_tm,
    row_blocks,
)
from sparkfold.model.primitives import LayerNorm, Linear, fp32_linear

__all__ = [
    "AuxiliaryHeads",
    "DistogramHead",
    "ExperimentallyResolvedHead",
    "MaskedMSAHead",
    "PerResidueLDDTCaPredictor",
    "TMScoreHead",
]


def symmetrise_(logits: torch.Tensor) -> torch.Tensor:
    """``logits + logits.transpose(-2, -3)`` for ``[*, N, N, B]``, written into ``logits`` one
    pair of blocks at a time: no second [N, N, B] tensor (9.7 GB in fp32 at 6144 residues).
    Each element is the same sum as the out-of-place form (autograd disabled)."""
    n = logits.shape[-2]
    rows = row_blocks(logits)[0].stop  # full rows per block of the budget
    # Square blocks of side ``step`` holding about as much as ``rows`` full rows.
    step = n if rows >= n else max(1, int((rows * n) ** 0.5))
    for i in range(0, n, step):
        for j in range(i, n, step):
            upper = logits[..., i:i + step, j:j + step, :]
            lower = logits[..., j:j + step, i:i + step, :].transpose(-2, -3)
            total = upper + lower
            upper.copy_(total)
            lower.copy_(total)
    return logits


class PerResidueLDDTCaPredictor(nn.Module):
    """Per-residue pLDDT logits from the structure-module single representation.

    AF2 Suppl. Alg. 29 "predictPerResidueLDDT_Ca", lines 1-3: LayerNorm → Linear → ReLU →
    Linear → ReLU → Linear to ``num_bins`` bins.
    """

    def __init__(self, c_in: int, c_hidden: int, num_bins: int = 50):
        super().__init__()
        self.layer_norm = LayerNorm(c_in)
        self.linear_1 = Linear(c_in, c_hidden, init="relu")
        self.linear_2 = Linear(c_hidden, c_hidden, init="relu")
        self.linear_3 = Linear(c_hidden, num_bins, init="final")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """``s [*, N, c_in]`` → logits ``[*, N, num_bins]``."""
        s = self.layer_norm(s)
        s = torch.relu(self.linear_1(s))
        s = torch.relu(self.linear_2(s))
        return self.linear_3(s)


class DistogramHead(nn.Module):
    """Distogram logits from the pair representation, symmetrised.

    AF2 Suppl. 1.9.8 "Distogram prediction": ``logits_ij = W z_ij + b``, then
    ``logits + logitsᵀ`` over the two residue axes.
    """

    def __init__(self, c_z: int, num_bins: int = 64):
        super().__init__()
        self.linear = Linear(c_z, num_bins, init="final")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z [*, N, N, c_z]`` → logits ``[*, N, N, num_bins]``."""
        logits = fp32_linear(self.linear, z)
        if torch.is_grad_enabled() and logits.requires_grad:
            return logits + logits.transpose(-2, -3)
        return symmetrise_(logits)


class MaskedMSAHead(nn.Module):
    """Masked-MSA (BERT) logits over residue classes.

    AF2 Suppl. 1.9.9 "Masked MSA prediction": one Linear from ``c_m`` to 23 classes (22 for
    AF-Multimer).
    """

    def __init__(self, c_m: int, c_out: int = 23):
        super().__init__()
        self.linear = Linear(c_m, c_out, init="final")

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """``m [*, S, N, c_m]`` → logits ``[*, S, N, c_out]``."""
        return fp32_linear(self.linear, m)


class ExperimentallyResolvedHead(nn.Module):
    """Per-atom "experimentally resolved" logits from the Evoformer single representation.

    AF2 Suppl. 1.9.10 "Experimentally resolved prediction": one Linear to 37 atom37 logits.
    """

    def __init__(self, c_s: int, c_out: int = 37):
        super().__init__()
        self.linear = Linear(c_s, c_out, init="final")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """``s [*, N, c_s]`` → logits ``[*, N, c_out]``."""
        return self.linear(s)


class TMScoreHead(nn.Module):
    """Aligned-error logits for pTM and PAE (not symmetrised).

    AF2 Suppl. 1.9.7 "TM-score prediction": one Linear from the pair representation to
    ``num_bins`` error bins.
    """

    def __init__(self, c_z: int, num_bins: int = 64):
        super().__init__()
        self.linear = Linear(c_z, num_bins, init="final")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z [*, N, N, c_z]`` → logits ``[*, N, N, num_bins]``."""
        return fp32_linear(self.linear, z)


class AuxiliaryHeads(nn.Module):
    """Every output head plus the confidence numbers derived from them.

    AF2 Suppl. 1.9 "Output heads". The pLDDT head reads ``sm.single`` (structure-module output);
    the experimentally-resolved head reads the Evoformer ``single``. With the TM head enabled,
    ``ptm_score`` weighs every position 1 (padding included), as OpenFold does.
    """

    def __init__(
        self,
        c_s: int,
        c_z: int,
        c_m: int,
        *,
        lddt_c_hidden: int = 128,
        lddt_num_bins: int = 50,
        distogram_num_bins: int = 64,
        masked_msa_c_out: int = 23,
        experimentally_resolved_c_out: int = 37,
        tm_enabled: bool = False,
        tm_num_bins: int = 64,
        tm_max_bin: int = 31,
        iptm_enabled: bool = False,
    ):
        super().__init__()
        self.plddt = PerResidueLDDTCaPredictor(c_s, lddt_c_hidden, lddt_num_bins)
        self.distogram = DistogramHead(c_z, distogram_num_bins)
        self.masked_msa = MaskedMSAHead(c_m, masked_msa_c_out)
        self.experimentally_resolved = ExperimentallyResolvedHead(c_s, experimentally_resolved_c_out)
        self.tm_enabled = tm_enabled
        self.iptm_enabled = iptm_enabled
        self.tm_num_bins = tm_num_bins
        self.tm_max_bin = tm_max_bin
        if tm_enabled:
            self.tm = TMScoreHead(c_z, tm_num_bins)

    @classmethod
    def from_config(cls, config) -> "AuxiliaryHeads":
        """Build from a :class:`sparkfold.config.ModelConfig`."""
        h = config.heads
        return cls(
            config.c_s, config.c_z, config.c_m,
            lddt_c_hidden=h.lddt_c_hidden, lddt_num_bins=h.lddt_num_bins,
            distogram_num_bins=h.distogram_num_bins, masked_msa_c_out=h.masked_msa_c_out,
            experimentally_resolved_c_out=h.experimentally_resolved_c_out,
            tm_enabled=h.tm_enabled, tm_num_bins=h.tm_num_bins, tm_max_bin=h.tm_max_bin,
            iptm_enabled=h.iptm_enabled,
        )

    def forward(self, outputs: dict, asym_id: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run the heads on the trunk outputs.

        Args:
            outputs: dict with ``sm`` → ``{"single": [*, N, c_s]}``, ``pair [*, N, N, c_z]``,
                ``msa [*, S, N, c_m]`` and ``single [*, N, c_s]``.
            asym_id: ``[*, N]`` chain ids; with ``iptm_enabled`` adds ``iptm_score`` and
                ``weighted_ptm_score = 0.8·ipTM + 0.2·pTM`` (AF-Multimer Sec. 7.9).

        Returns:
            ``lddt_logits, plddt, distogram_logits, masked_msa_logits,
            experimentally_resolved_logits`` and, with the TM head, ``tm_logits, ptm_score,
            aligned_confidence_probs, predicted_aligned_error, max_predicted_aligned_error``.
        """
        out = {}
        lddt_logits = self.plddt(outputs["sm"]["single"])
        out["lddt_logits"] = lddt_logits
        out["plddt"] = compute_plddt(lddt_logits)
        out["distogram_logits"] = self.distogram(outputs["pair"])
        out["masked_msa_logits"] = self.masked_msa(outputs["msa"])
        out["experimentally_resolved_logits"] = self.experimentally_resolved(outputs["single"])
        if self.tm_enabled:
            tm_logits = self.tm(outputs["pair"])
            out["tm_logits"] = tm_logits
            bins = {"max_bin": self.tm_max_bin, "num_bins": self.tm_num_bins}
            out["ptm_score"] = compute_tm(tm_logits, **bins)
            if self.iptm_enabled and asym_id is not None:
                out["iptm_score"] = compute_tm(tm_logits, asym_id=asym_id, interface=True, **bins)
                out["weighted_ptm_score"] = 0.8 * out["iptm_score"] + 0.2 * out["ptm_score"]
            out.update(compute_predicted_aligned_error(tm_logits, **bins))
        return out
