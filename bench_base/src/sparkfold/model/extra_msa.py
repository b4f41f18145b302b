"""The extra-MSA stack: Evoformer-style blocks with global column attention; only ``z`` is kept.

Parameter names equal OpenFold's (``extra_msa_stack.blocks.<i>.msa_att_col.global_attention.*`` …).
The block is :class:`~sparkfold.model.evoformer.MSABlock` with ``column_attention="global"``.
"""

from sparkfold.config import MSAStackConfig
from sparkfold.model.evoformer import ColumnAttention, MSABlock, MSAStack, block_kwargs
from sparkfold.typing import MsaAct, MsaMask, PairAct, PairMask

__all__ = ["ExtraMSABlock", "ExtraMSAStack"]


class ExtraMSABlock(MSABlock):
    """One extra-MSA block: an Evoformer block whose column attention is global.

    AF2 Suppl. Alg. 18 "ExtraMsaStack", lines 2-12 (one iteration), with Alg. 19
    "MSAColumnGlobalAttention"; its MSA transition is masked (see :class:`MSABlock`).
    """

    column_attention_kind: ColumnAttention = "global"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, column_attention="global", **kwargs)


class ExtraMSAStack(MSAStack):
    """AF2 Suppl. Alg. 18 "ExtraMsaStack": ``num_blocks`` :class:`ExtraMSABlock` s; returns ``z``.

    Arguments after ``num_blocks`` are those of :class:`MSABlock`.
    """

    block_class = ExtraMSABlock

    @classmethod
    def from_config(cls, cfg: MSAStackConfig) -> "ExtraMSAStack":
        """The stack described by ``cfg`` (``ModelConfig.extra_msa_stack``; its ``c_m`` is c_e)."""
        return cls(cfg.num_blocks, **block_kwargs(cfg, "global"))

    def forward(
        self,
        m: MsaAct,
        z: PairAct,
        msa_mask: MsaMask | None = None,
        pair_mask: PairMask | None = None,
        chunk_size: int | None = None,
        inplace: bool | None = None,
    ) -> PairAct:
        """Run every block and return the updated pair representation.

        Args:
            m: ``[*, S_extra, N, C_e]`` embedded extra MSA.
            z: ``[*, N, N, C_z]``; msa_mask ``[*, S_extra, N]``; pair_mask ``[*, N, N]``.
            chunk_size: slice size for every sub-layer, or ``None``.
            inplace: in-place residual adds; ``None`` = exactly when autograd is disabled. The
                caller's ``m``/``z`` are never modified.

        Returns:
            ``z [*, N, N, C_z]``.
        """
        _, z = self.run_blocks(m, z, msa_mask, pair_mask, chunk_size, inplace)
        return z
