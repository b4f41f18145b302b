"""Shape rules of attention biases shared by the fused attention backends."""

import torch

__all__ = ["is_key_only", "logits_batch"]


def is_key_only(b: torch.Tensor) -> bool:
    """A bias that varies only along the key axis (and batch dims): ``[*, 1, 1, K]``."""
    if b.dim() == 1:
        return True
    if b.dim() == 2:
        return b.shape[-2] == 1
    return b.shape[-2] == 1 and b.shape[-3] == 1


def logits_batch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 biases) -> tuple[tuple[int, ...], int, int, int]:
    """``(batch dims, heads, queries, keys)`` of the logits ``[*, H, Q, K]`` of one call.

    The batch dims are those of q, k, v and every bias broadcast together.

    Raises:
        ValueError: a bias does not broadcast to the logits (names both shapes).
    """
    h_all = max(q.shape[-3], k.shape[-3], v.shape[-3])
    n_q, n_k = q.shape[-2], k.shape[-2]
    batch = tuple(torch.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3]))
    for b in biases:
        try:
            full = torch.broadcast_shapes(b.shape, (*batch, h_all, n_q, n_k))
        except RuntimeError as exc:
            raise ValueError(f"attention bias of shape {tuple(b.shape)} does not broadcast to "
                             f"the logits {(*batch, h_all, n_q, n_k)}") from exc
        batch = tuple(full[:-3])
    return batch, h_all, n_q, n_k
