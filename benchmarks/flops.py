"""FLOP and byte model of the AF2 trunk, written down from the module shapes.

FLOPs count multiply-adds as 2 and include only matrix work: every Linear, the q·kᵀ and p·v
products of each attention, the outer product of the outer product mean and the cubic
contraction of each triangle multiplication. LayerNorms, softmax, gating and residual adds are
left out (they are a few per cent and are memory-bound; they show up in the byte count).

Bytes are the fewest a perfectly fused module must move: its activations read once and its
update written once, in the compute dtype, plus weights and any bias tensor it must read
(pair bias, triangle bias). Logits, softmax weights and projections that a fused kernel keeps
on chip are not counted. ``unfused_bytes`` adds what the plain PyTorch path writes and reads
back (logits/weights in fp32, projections) as an upper reference.

Usage: ``python benchmarks/flops.py`` prints the per-pass table for N = 128 … 2048.
"""

from dataclasses import dataclass

__all__ = ["PEER_TABLE_FLOPS", "Workload", "module_costs", "total_flops"]

#: FLOPs of the whole workload (4 passes, 48 + 4 blocks) as given in the issue's peer table.
PEER_TABLE_FLOPS = {128: 4.8e13, 256: 1.2e14, 512: 3.5e14, 1024: 1.3e15, 2048: 5.9e15}


@dataclass(frozen=True)
class Workload:
    """model_3_ptm shapes: 512 clusters, 1024 extra rows, 4 passes."""

    n_res: int
    n_seq: int = 512
    n_extra: int = 1024
    passes: int = 4
    evo_blocks: int = 48
    extra_blocks: int = 4
    c_m: int = 256
    c_z: int = 128
    c_e: int = 64
    c_s: int = 384
    msa_heads: int = 8
    msa_c: int = 32
    extra_msa_c: int = 8
    pair_heads: int = 4
    pair_c: int = 32
    opm_c: int = 32
    mul_c: int = 128
    transition_n: int = 4
    bytes_per_el: int = 2


def _lin(rows: float, c_in: int, c_out: int) -> float:
    return 2.0 * rows * c_in * c_out


def _block(w: Workload, s: int, c_m: int, c_att: int, global_col: bool) -> dict[str, tuple]:
    """(flops, bytes, unfused_bytes) per sub-module of one MSA/pair block."""
    n, cz, h, b = w.n_res, w.c_z, w.msa_heads, w.bytes_per_el
    hc = h * c_att
    msa_act = s * n * c_m * b
    pair_act = n * n * cz * b
    out = {}
    # MSA row attention with pair bias: q,k,v,g and o linears, bias projection, QK and PV.
    f = 4 * _lin(s * n, c_m, hc) + _lin(s * n, hc, c_m) + _lin(n * n, cz, h)
    f += 2 * 2.0 * s * h * n * n * c_att
    logits = s * h * n * n * 4
    out["msa_att_row"] = (f, 2 * msa_act + pair_act + h * n * n * b, 2 * msa_act + pair_act + 3 * logits)
    # MSA column attention (Evoformer) or global column attention (extra MSA).
    if global_col:
        f = _lin(n, c_m, hc) + 2 * _lin(s * n, c_m, c_att) + _lin(s * n, c_m, hc)
        f += _lin(s * n, hc, c_m) + 2 * 2.0 * n * h * s * c_att
        out["msa_att_col"] = (f, 2 * msa_act, 2 * msa_act + 4 * s * n * hc * b)
    else:
        f = 4 * _lin(s * n, c_m, hc) + _lin(s * n, hc, c_m) + 2 * 2.0 * n * h * s * s * c_att
        out["msa_att_col"] = (f, 2 * msa_act, 2 * msa_act + 3 * n * h * s * s * 4)
    # MSA transition.
    f = _lin(s * n, c_m, w.transition_n * c_m) + _lin(s * n, w.transition_n * c_m, c_m)
    out["msa_transition"] = (f, 2 * msa_act, 2 * msa_act + 2 * s * n * w.transition_n * c_m * b)
    # Outer product mean: two projections, the outer sum over s, the output linear.
    c = w.opm_c
    f = 2 * _lin(s * n, c_m, c) + 2.0 * n * n * s * c * c + _lin(n * n, c * c, cz)
    out["outer_product_mean"] = (f, msa_act + 2 * pair_act, msa_act + 2 * pair_act + 2 * n * n * c * c * b)
    # Triangle multiplications: 4 gated projections, output gate and linear, the N³ contraction.
    ch = w.mul_c
    f = 4 * _lin(n * n, cz, ch) + _lin(n * n, cz, cz) + _lin(n * n, ch, cz) + 2.0 * n ** 3 * ch
    tm = (f, 2 * pair_act, 2 * pair_act + 8 * n * n * ch * b)
    out["tri_mul_out"] = tm
    out["tri_mul_in"] = tm
    # Triangle attention: bias projection, q,k,v,g,o linears, QK and PV over N rows.
    ph, pc = w.pair_heads, w.pair_c
    f = _lin(n * n, cz, ph) + 4 * _lin(n * n, cz, ph * pc) + _lin(n * n, ph * pc, cz)
    f += 2 * 2.0 * n * ph * n * n * pc
    ta = (f, 2 * pair_act + ph * n * n * b, 2 * pair_act + 3 * n * ph * n * n * 4)
    out["tri_att_start"] = ta
    out["tri_att_end"] = ta
    # Pair transition.
    f = _lin(n * n, cz, w.transition_n * cz) + _lin(n * n, w.transition_n * cz, cz)
    out["pair_transition"] = (f, 2 * pair_act, 2 * pair_act + 2 * n * n * w.transition_n * cz * b)
    return out


def module_costs(w: Workload) -> dict[str, dict[str, dict[str, float]]]:
    """Per stack and sub-module: flops, bytes, unfused_bytes for ONE block of ONE pass."""
    evo = _block(w, w.n_seq, w.c_m, w.msa_c, global_col=False)
    extra = _block(w, w.n_extra, w.c_e, w.extra_msa_c, global_col=True)
    conv = lambda d: {k: {"flops": v[0], "bytes": v[1], "unfused_bytes": v[2]} for k, v in d.items()}
    return {"evoformer": conv(evo), "extra_msa": conv(extra)}


def total_flops(w: Workload) -> float:
    """FLOPs of the whole workload: (evo_blocks + extra_blocks) blocks × passes."""
    costs = module_costs(w)
    per_pass = w.evo_blocks * sum(m["flops"] for m in costs["evoformer"].values())
    per_pass += w.extra_blocks * sum(m["flops"] for m in costs["extra_msa"].values())
    return per_pass * w.passes


def total_bytes(w: Workload, key: str = "bytes") -> float:
    """Bytes (``"bytes"`` or ``"unfused_bytes"``) of the whole workload."""
    costs = module_costs(w)
    per_pass = w.evo_blocks * sum(m[key] for m in costs["evoformer"].values())
    per_pass += w.extra_blocks * sum(m[key] for m in costs["extra_msa"].values())
    return per_pass * w.passes


if __name__ == "__main__":
    print("| N | model FLOP | peer table FLOP | ratio | min bytes (bf16) |")
    print("|---|---|---|---|---|")
    for n in (128, 256, 512, 1024, 2048, 4096, 6144):
        w = Workload(n)
        f = total_flops(w)
        peer = PEER_TABLE_FLOPS.get(n)
        ratio = f"{f / peer:.2f}" if peer else "-"
        print(f"| {n} | {f:.3g} | {peer if peer else '-'} | {ratio} | {total_bytes(w):.3g} |")
