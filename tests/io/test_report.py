"""report.html: self-contained page; rendered in headless Chromium when it is installed."""

import hashlib
import io
import os
import re
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sparkfold.io.report import (
    PLDDT_COLORS,
    VIEWER_VERSION,
    render_report,
    viewer_script,
    write_report,
)

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")


def test_vendored_viewer_is_unmodified_and_licensed():
    vendor = resources.files("sparkfold").joinpath("resources/vendor/3dmol")
    names = {p.name for p in vendor.iterdir()}
    assert {"3Dmol-min.js", "LICENSE", "3Dmol-min.js.LICENSE.txt", "VENDOR.md"} <= names
    notes = vendor.joinpath("VENDOR.md").read_text()
    digest = hashlib.sha256(vendor.joinpath("3Dmol-min.js").read_bytes()).hexdigest()
    assert digest in notes and f"3dmol` {VIEWER_VERSION}" in notes
    assert "BSD" in vendor.joinpath("LICENSE").read_text()


def test_page_is_self_contained(make_pred):
    preds = [make_pred(name="rank1 <model>"), make_pred(seed=1, name="second")]
    page = render_report(preds, jobname="job & co", plots={"pLDDT": b"\x89PNG fake"})
    assert viewer_script() in page
    # nothing is loaded from elsewhere: no src/href attributes pointing outside the page
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["'](?!data:)""", page)
    assert "data:image/png;base64," in page
    assert "job &amp; co" in page and "rank1 &lt;model&gt;" in page
    # the embedded JSON cannot close its <script> element early
    data = page.split('id="models-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and "ATOM" in data
    assert page.count("<tr") == 3  # header + 2 models


def _chromium(html_path: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    profile.mkdir()
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
           "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,1000",
           "--virtual-time-budget=15000", *extra, html_path.as_uri()]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)


@needs_chromium
def test_structure_is_drawn_in_headless_chromium(tmp_path, make_pred):
    from PIL import Image

    page = write_report(tmp_path / "report.html", [make_pred(), make_pred(seed=1, name="m2")],
                        jobname="synthetic", plots={})
    dom = _chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-viewer="rendered"' in body, body
    assert int(re.search(r'data-atoms="(\d+)"', body).group(1)) > 100
    assert "<title>sparkfold report: synthetic [rendered]</title>" in dom.stdout

    shot = tmp_path / "shot.png"
    result = _chromium(page, tmp_path, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    # The viewer box is 640x480 below the title; the legend sits under it. Look only at the
    # box's inner area: a white background unless the cartoon was drawn.
    region = img[120:520, 30:650]
    saturated = (region.max(axis=-1) - region.min(axis=-1)) > 80
    assert saturated.sum() > 2000, "the viewer region is blank: the structure was not drawn"
    # the pLDDT colours of the ramp appear (blue for > 90, orange for < 50)
    def near(hex_color, tol=60):
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return (np.abs(region - rgb).sum(axis=-1) < tol).sum()
    assert near(PLDDT_COLORS[0][1]) > 20 and near(PLDDT_COLORS[-1][1]) > 20


@needs_chromium
def test_error_marker_without_webgl(tmp_path, make_pred):
    page = write_report(tmp_path / "r.html", [make_pred()], jobname="x", plots={})
    dom = _chromium(page, tmp_path, "--disable-webgl", "--dump-dom")
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-viewer="error"' in body and "could not start" in dom.stdout
