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
    ]
    return cases
