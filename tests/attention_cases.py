"""The attention calls of the AF2 trunk, shrunk, for every attention backend's tests."""

import torch


def mask_bias(mask, inf=1e9):
    return inf * (mask - 1)


def attention_cases(device, dtype, gen):
    """The attention calls of the AF2 trunk, shrunk: (name, q, k, v, biases)."""
    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    s, n, h, c = 6, 21, 4, 32  # n not a multiple of 8: exercises the mask padding
    mask = (torch.rand(s, n, generator=gen) > 0.25).float()
    mask[1] = 0.0  # a fully masked row
    mb = mask_bias(mask).to(device=device, dtype=dtype)
    even_mask = (torch.rand(2, 64, generator=gen) > 0.25).float()
    even_mask[1] = 0.0
    cases = [
        # MSA row attention with pair bias: key-mask [S,1,1,N] + pair bias [1,H,N,N].
        ("row_pair_bias", rnd(s, h, n, c), rnd(s, h, n, c), rnd(s, h, n, c),
         [mb[:, None, None, :], rnd(1, h, n, n)]),
        # MSA column attention: mask only, extra leading batch dim.
        ("column", rnd(2, n, h, s, c), rnd(2, n, h, s, c), rnd(2, n, h, s, c),
         [mask_bias((torch.rand(2, n, s, generator=gen) > 0.3).float())
          .to(device=device, dtype=dtype)[..., None, None, :]]),
        # Triangle attention: [I,1,1,J] mask + [1,H,J,J] triangle bias, chunk-style leading 1.
        ("triangle", rnd(n, h, n, 16), rnd(n, h, n, 16), rnd(n, h, n, 16),
         [mb[:1].expand(n, n)[:, None, None, :].contiguous(), rnd(1, h, n, n)]),
        # Global column attention: one shared key/value head, H queries, head dim 8.
        ("global", rnd(n, 1, 8, 8), rnd(n, 1, s, 8), rnd(n, 1, s, 8),
         [mask_bias(mask.t().contiguous()).to(device=device, dtype=dtype)[:, None, None, :]]),
        # No bias at all, and a full bias only.
        ("plain", rnd(3, h, n, c), rnd(3, h, 17, c), rnd(3, h, 17, 24), []),
        ("full_bias", rnd(3, h, n, c), rnd(3, h, n, c), rnd(3, h, n, c), [rnd(3, h, n, n)]),
        # Lengths that are multiples of every block size (no bounds checks in the fast
        # kernels), with hard-masked keys and a fully masked row.
        ("row_pair_bias_even", rnd(2, h, 64, c), rnd(2, h, 64, c), rnd(2, h, 64, c),
         [mask_bias(even_mask).to(device=device, dtype=dtype)[:, None, None, :],
          rnd(1, h, 64, 64)]),
    ]
    return cases


def check_fp32_matches_reference(backend: str, device: str, seed: int) -> None:
    """Every trunk attention case through ``backend`` in fp32 against the reference."""
    from tolerances import MODULE, assert_close_scaled

    from sparkfold.model import kernels
    from sparkfold.model.kernels import reference

    gen = torch.Generator().manual_seed(seed)
    with kernels.use_backend(backend):
        for name, q, k, v, biases in attention_cases(device, torch.float32, gen):
            out = kernels.attention(q, k, v, biases)
            ref = reference.attention(q, k, v, biases)
            assert out.shape == ref.shape, name
            assert torch.isfinite(out).all(), name
            assert_close_scaled(out, ref, level=MODULE, name=name)


def check_half_close_to_fp32(backend: str, device: str, seed: int, half=torch.bfloat16,
                             bias_dtype=None) -> None:
    """Every case in ``half`` through ``backend``: within the bf16 module tolerance of the fp32
    reference, and never much worse than the reference backend's own error in ``half``."""
    from tolerances import BF16_MODULE, assert_close_scaled

    from sparkfold.model import kernels
    from sparkfold.model.kernels import reference

    gen = torch.Generator().manual_seed(seed)
    with kernels.use_backend(backend):
        for name, q, k, v, biases in attention_cases(device, torch.float32, gen):
            ref = reference.attention(q, k, v, biases)
            hq = [t.to(half) for t in (q, k, v)]
            hb = [b.to(bias_dtype or half) for b in biases]
            out = kernels.attention(*hq, hb)
            ref_half = reference.attention(*hq, hb)
            assert out.dtype == half, name
            assert_close_scaled(out, ref, level=BF16_MODULE, name=name)
            err = (out.float() - ref).abs().mean()
            err_ref = (ref_half.float() - ref).abs().mean()
            assert err <= 1.5 * err_ref + 1e-3, f"{name}: {err:.2e} vs reference {err_ref:.2e}"


def check_fully_masked_row_is_uniform(backend: str, device: str, seed: int) -> None:
    """A row whose keys are all masked averages v uniformly, as the reference does."""
    from tolerances import MODULE, assert_close_scaled

    from sparkfold.model import kernels
    from sparkfold.model.kernels import reference

    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 4, 9, 32, generator=gen).to(device) for _ in range(3))
    mask = torch.ones(2, 9, device=device)
    mask[0] = 0.0
    biases = [mask_bias(mask)[:, None, None, :], torch.randn(1, 4, 9, 9, generator=gen).to(device)]
    with kernels.use_backend(backend):
        out = kernels.attention(q, k, v, biases)
    assert_close_scaled(out, reference.attention(q, k, v, biases), level=MODULE, name="masked")
    uniform = v[0].mean(dim=-2, keepdim=True).expand_as(out[0])
    assert_close_scaled(out[0], uniform, level=MODULE, name="masked row")
