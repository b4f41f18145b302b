"""pLDDT / PAE / MSA coverage plots (PNG)."""

import io

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is an optional dependency (sparkfold[report])")
from PIL import Image

from sparkfold.io.confidence import OutputNames
from sparkfold.io.plots import (
    msa_coverage,
    plot_msa_coverage,
    plot_pae,
    plot_plddt,
    write_plots,
)


def _image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_msa_coverage_identity_and_counts():
    gap = 21
    msa = np.array([
        [0, 1, 2, 3],      # query
        [0, 1, 5, gap],    # 2 of 4 query positions identical
        [gap, gap, 2, 3],  # 2 of 4
        [0, 1, 2, 3],      # identical
    ])
    identity, coverage, order = msa_coverage(msa)
    np.testing.assert_allclose(identity, [1.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(coverage, [3, 3, 4, 3])
    assert order.tolist() == [0, 3, 1, 2]
    with pytest.raises(ValueError):
        msa_coverage(np.zeros((0, 4)))


def test_plots_are_pngs_with_content(make_pred):
    preds = [make_pred(seed=i, name=f"m{i}") for i in range(3)]
    for png in (plot_plddt(preds), plot_pae(preds)):
        img = _image(png)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert (img.std(axis=(0, 1)) > 10).all()  # not a blank canvas
    # the PAE heatmap uses the bwr colormap: both blue-ish and red-ish pixels appear
    img = _image(plot_pae(preds[:1])).astype(int)
    assert ((img[..., 2] - img[..., 0]) > 100).sum() > 100 and ((img[..., 0] - img[..., 2]) > 100).sum() > 100


def test_pae_plot_needs_pae(make_pred):
    with pytest.raises(ValueError, match="PAE"):
        plot_pae([make_pred(ptm=False)])


def test_coverage_plot_and_write_plots(tmp_path, make_pred):
    rng = np.random.default_rng(0)
    n = 40
    msa = rng.integers(0, 20, size=(30, n))
    msa[rng.random(msa.shape) < 0.3] = 21
    msa[0] = rng.integers(0, 20, size=n)
    img = _image(plot_msa_coverage(msa))
    assert img.shape[1] > 200
    preds = [make_pred(seed=0, name="a"), make_pred(seed=1, name="b")]
    written = write_plots(tmp_path, OutputNames("job"), preds, msa)
    assert sorted(p.name for p in written.values()) == ["job_coverage.png", "job_pae.png", "job_plddt.png"]
    no_pae = write_plots(tmp_path / "n", OutputNames("job"), [make_pred(ptm=False)])
    assert set(no_pae) == {"plddt"}
