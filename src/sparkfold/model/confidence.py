"""Confidence measures computed from head logits: pLDDT, PAE and pTM/ipTM.

Formulas follow ``shared/spec/features.md`` §4 (OpenFold ``openfold/utils/loss.py``). All
computations run in float32 whatever the logits' dtype (softmax of bf16 logits loses too much).
"""

import torch

from sparkfold.model.chunking import row_slices

#: Pair-sized confidence computations run in blocks of rows of about this many fp32 bytes, so
#: that their [N, N, bins] temporaries (9.7 GB each at 6144 residues) never exist in full.
BLOCK_BYTES = 256 << 20

__all__ = [
    "BLOCK_BYTES",
    "aligned_error_bin_centers",
    "compute_plddt",
    "compute_predicted_aligned_error",
    "compute_tm",
    "row_blocks",
]


def row_blocks(pair: torch.Tensor, block_bytes: int | None = None):
    """Slices of the first residue axis of ``pair [*, N, N, B]`` covering about
    ``block_bytes`` (default :data:`BLOCK_BYTES`) of fp32 each."""
    row_bytes = 4 * pair[..., :1, :, :].numel()
    return row_slices(pair.shape[-3], row_bytes, BLOCK_BYTES if block_bytes is None else block_bytes)


def compute_plddt(logits: torch.Tensor) -> torch.Tensor:
    """Predicted lDDT-Cα in [0, 100] from pLDDT-head logits.

    AF2 Suppl. Alg. 29 "predictPerResidueLDDT_Ca", line 4: the expectation of the bin centres
    ``(b + 0.5) / num_bins`` under ``softmax(logits)``, times 100.

    Args:
        logits: ``[*, N, num_bins]``.

    Returns:
        ``[*, N]`` float32.
    """
    num_bins = logits.shape[-1]
    width = 1.0 / num_bins
    centres = torch.arange(0.5 * width, 1.0, width, device=logits.device, dtype=torch.float32)  # [B]
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.sum(probs * centres, dim=-1) * 100


def aligned_error_bin_centers(
    max_bin: int = 31, num_bins: int = 64, device: torch.device | str | None = None
) -> torch.Tensor:
    """Centres of the PAE/TM bins: ``linspace(0, max_bin, num_bins-1) + step/2`` plus one more.

    For the defaults: 0.25, 0.75, …, 31.25 and the open top bin 31.75 (64 values).
    """
    boundaries = torch.linspace(0, max_bin, steps=num_bins - 1, device=device)  # [B-1]
    step = boundaries[1] - boundaries[0]
    centres = boundaries + step / 2
    return torch.cat([centres, (centres[-1] + step).unsqueeze(-1)], dim=0)  # [B]


def compute_predicted_aligned_error(
    logits: torch.Tensor, max_bin: int = 31, num_bins: int = 64
) -> dict[str, torch.Tensor]:
    """Predicted aligned error (Å) from TM-head logits.

    AF2 Suppl. 1.9.7 "Predicted aligned error": ``PAE_ij = Σ_b p_ijb · centre_b``.

    Args:
        logits: ``[*, N, N, num_bins]``.
        max_bin: upper edge of the last closed bin (Å).
        num_bins: number of bins (the last one is open).

    Returns:
        ``aligned_confidence_probs [*, N, N, num_bins]``, ``predicted_aligned_error [*, N, N]``
        and ``max_predicted_aligned_error []`` (the top bin centre, 31.75 Å by default).
    """
    centres = aligned_error_bin_centers(max_bin, num_bins, device=logits.device)  # [B]
    probs = torch.softmax(logits.float(), dim=-1)
    pae = probs.new_empty(probs.shape[:-1])
    for rows in row_blocks(probs):
        pae[..., rows, :] = torch.sum(probs[..., rows, :, :] * centres, dim=-1)
    return {
        "aligned_confidence_probs": probs,
        "predicted_aligned_error": pae,
        "max_predicted_aligned_error": centres[-1],
    }


def compute_tm(
    logits: torch.Tensor,
    residue_weights: torch.Tensor | None = None,
    asym_id: torch.Tensor | None = None,
    interface: bool = False,
    max_bin: int = 31,
    num_bins: int = 64,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Predicted TM-score (pTM) or, with ``interface=True``, the interface score ipTM.

    AF2 Suppl. 1.9.7 eq. 40 / AF-Multimer Sec. 7.9: with ``N_eff = max(Σ w, 19)`` and
    ``d0 = 1.24·(N_eff − 15)^(1/3) − 1.8``, ``f_b = 1 / (1 + centre_b² / d0²)``, the per-alignment
    score ``score_i = Σ_j (w_ij / (eps + Σ_j w_ij)) Σ_b p_ijb f_b`` and the result is ``score_i`` at
    the first argmax of ``score_i · w_i``.

    Args:
        logits: ``[*, N, N, num_bins]`` TM-head logits.
        residue_weights: ``[*, N]``; None weighs every position 1, padding included (what the
            model does; OpenFold passes no seq_mask either).
        asym_id: ``[*, N]`` chain ids, needed for ``interface=True``.
        interface: restrict the pair weights to residue pairs on different chains (ipTM).
        max_bin, num_bins, eps: bin layout and denominator guard.

    Returns:
        ``[*]`` float32 score.
    """
    n = logits.shape[-2]
    if residue_weights is None:
        residue_weights = logits.new_ones(logits.shape[:-3] + (n,), dtype=torch.float32)
    residue_weights = residue_weights.float()
    centres = aligned_error_bin_centers(max_bin, num_bins, device=logits.device)  # [B]
    clipped_n = torch.clamp(residue_weights.sum(dim=-1), min=19)  # [*]
    d0 = 1.24 * (clipped_n - 15) ** (1.0 / 3) - 1.8  # [*]
    tm_per_bin = 1.0 / (1 + centres**2 / d0[..., None] ** 2)  # [*, B]
    predicted_tm_term = logits.new_empty(logits.shape[:-1], dtype=torch.float32)  # [*, N, N]
    for rows in row_blocks(logits):
        probs = torch.softmax(logits[..., rows, :, :].float(), dim=-1)
        predicted_tm_term[..., rows, :] = torch.sum(probs * tm_per_bin[..., None, None, :], dim=-1)

    pair_mask = torch.ones_like(predicted_tm_term)  # [*, N, N]
    if interface:
        if asym_id is None:
            raise ValueError("compute_tm(interface=True) needs asym_id (chain id per residue)")
        pair_mask = pair_mask * (asym_id[..., :, None] != asym_id[..., None, :]).float()
    predicted_tm_term = predicted_tm_term * pair_mask
    pair_weights = pair_mask * (residue_weights[..., None, :] * residue_weights[..., :, None])
    normed = pair_weights / (eps + pair_weights.sum(dim=-1, keepdim=True))  # [*, N, N]
    per_alignment = torch.sum(predicted_tm_term * normed, dim=-1)  # [*, N]
    best = torch.argmax(per_alignment * residue_weights, dim=-1, keepdim=True)  # [*, 1]
    return torch.gather(per_alignment, -1, best).squeeze(-1)
