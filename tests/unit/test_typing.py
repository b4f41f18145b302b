"""The shape annotations of sparkfold.typing are checked at run time in the tests."""

import pytest
import torch

jaxtyping = pytest.importorskip("jaxtyping")
pytest.importorskip("beartype")

from sparkfold.model.pair import OuterProductMean, TriangleMultiplication


def test_a_mismatched_mask_is_caught_by_the_annotations():
    module = TriangleMultiplication(c_z=4, c_hidden=3, direction="outgoing")
    z = torch.randn(5, 5, 4)
    module(z, mask=torch.ones(5, 5))  # consistent shapes pass
    with pytest.raises(jaxtyping.TypeCheckError):
        module(z, mask=torch.ones(6, 6))  # n_res differs from z's


def test_broadcast_batch_axes_of_masks_are_accepted():
    module = TriangleMultiplication(c_z=4, c_hidden=3, direction="incoming")
    z = torch.randn(2, 5, 5, 4)  # e.g. two templates
    module(z, mask=torch.ones(1, 5, 5))


def test_outer_product_mean_maps_msa_to_pair_shapes():
    module = OuterProductMean(c_m=6, c_z=4, c_hidden=2)
    out = module(torch.randn(3, 5, 6), mask=torch.ones(3, 5))
    assert out.shape == (5, 5, 4)
    with pytest.raises(jaxtyping.TypeCheckError):
        module(torch.randn(3, 5, 6), mask=torch.ones(3, 4))
