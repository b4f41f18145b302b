"""``report.html``: one self-contained page per job that works offline.

The page holds, inline: the vendored 3Dmol.js viewer (``resources/vendor/3dmol``, BSD-3-Clause,
unmodified) showing each model as a cartoon coloured by pLDDT (AlphaFold DB colours), a model
selector, the score table (rank, model, mean pLDDT, pTM) and the plots as base64 PNGs. Nothing
is fetched from the network.

Once the viewer has drawn a model the page sets ``data-viewer="rendered"`` (and the number of
atoms in ``data-atoms``) on ``<body>`` and appends `` [rendered]`` to the title; when WebGL or
the viewer fails it sets ``data-viewer="error"`` and shows the message in the viewer box.
"""

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from sparkfold import __version__
from sparkfold.io.atomic import atomic_write
from sparkfold.io.confidence import RankBy, ranking_confidence
from sparkfold.io.deps import MissingDependencyError
from sparkfold.io.pdb import to_pdb
from sparkfold.io.prediction import Prediction

__all__ = [
    "PLDDT_COLORS",
    "VIEWER_NAME",
    "VIEWER_VERSION",
    "render_report",
    "viewer_script",
    "write_report",
]

VIEWER_NAME = "3Dmol.js"
VIEWER_VERSION = "2.5.5"
_VIEWER_FILES = ("resources/vendor/3dmol/3Dmol-min.js",)

#: AlphaFold DB pLDDT colours: (lower bound, colour, label), highest band first.
PLDDT_COLORS: tuple[tuple[float, str, str], ...] = (
    (90.0, "#0053D6", "Very high (pLDDT > 90)"),
    (70.0, "#65CBF3", "Confident (90 > pLDDT > 70)"),
    (50.0, "#FFDB13", "Low (70 > pLDDT > 50)"),
    (-1.0, "#FF7D45", "Very low (pLDDT < 50)"),
)


def viewer_script() -> str:
    """The vendored, unmodified 3Dmol.js build (minified) as text."""
    root = resources.files("sparkfold")
    return root.joinpath(_VIEWER_FILES[0]).read_text(encoding="utf-8")


def _json_for_script(data) -> str:
    # Safe inside <script type="application/json">: no "</script>" or "<!--" can appear.
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _default_plots(ranked: Sequence[Prediction], msa: np.ndarray | None) -> tuple[dict, list[str]]:
    from sparkfold.io import plots

    out: dict[str, bytes] = {}
    notes: list[str] = []
    try:
        out["pLDDT"] = plots.plot_plddt(ranked)
        if any(p.pae is not None for p in ranked):
            out["PAE"] = plots.plot_pae(ranked)
        if msa is not None:
            out["MSA coverage"] = plots.plot_msa_coverage(msa)
    except MissingDependencyError as exc:
        notes.append(f"Plots omitted: {exc}")
    return out, notes


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em;
       color: #222; background: #fff; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; margin-bottom: 1em; }
#layout { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
#viewer-box { border: 1px solid #ccc; padding: 0; display: inline-block; }
#viewer { width: 640px; height: 480px; position: relative; }
#viewer-error { color: #b00; padding: 1em; }
table { border-collapse: collapse; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f3f3; }
td.name { text-align: left; font-family: monospace; }
tr.selected { background: #eef4ff; }
.legend span { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
               margin: 0 0.3em 0 0.8em; border: 1px solid #999; }
.plots img { max-width: 100%; display: block; margin: 0.5em 0 1.5em 0; }
.note { color: #a60; }
"""

_JS = """
(function () {
  var models = JSON.parse(document.getElementById("models-data").textContent);
  var bands = JSON.parse(document.getElementById("plddt-bands").textContent);
  var body = document.body;
  function colorOf(atom) {
    for (var i = 0; i < bands.length; i++) { if (atom.b > bands[i][0]) return bands[i][1]; }
    return bands[bands.length - 1][1];
  }
  function fail(message) {
    body.setAttribute("data-viewer", "error");
    var box = document.getElementById("viewer");
    box.innerHTML = "";
    var p = document.createElement("p");
    p.id = "viewer-error";
    p.textContent = "The 3D viewer could not start: " + message;
    box.appendChild(p);
  }
  var viewer = null;
  function show(index) {
    var rows = document.querySelectorAll("#scores tbody tr");
    for (var r = 0; r < rows.length; r++) rows[r].className = (r === index) ? "selected" : "";
    viewer.removeAllModels();
    var model = viewer.addModel(models[index].pdb, "pdb");
    viewer.setStyle({}, {cartoon: {colorfunc: colorOf}});
    viewer.zoomTo();
    viewer.render(function () {
      var atoms = model.selectedAtoms({}).length;
      body.setAttribute("data-atoms", String(atoms));
      body.setAttribute("data-model", models[index].name);
      if (atoms > 0 && body.getAttribute("data-viewer") !== "rendered") {
        body.setAttribute("data-viewer", "rendered");
        document.title = document.title + " [rendered]";
      }
    });
  }
  try {
    if (typeof $3Dmol === "undefined") throw new Error("3Dmol.js did not load");
    var probe = document.createElement("canvas");
    if (!(probe.getContext("webgl2") || probe.getContext("webgl"))) {
      throw new Error("this browser has no WebGL");
    }
    viewer = $3Dmol.createViewer(document.getElementById("viewer"), {backgroundColor: "white"});
    if (!viewer) throw new Error("createViewer returned nothing");
    var select = document.getElementById("model-select");
    select.addEventListener("change", function () { show(Number(select.value)); });
    show(0);
  } catch (err) {
    fail(err && err.message ? err.message : String(err));
  }
})();
"""


def render_report(
    ranked: Sequence[Prediction],
    *,
    jobname: str,
    plots: Mapping[str, bytes] | None = None,
    msa: np.ndarray | None = None,
    rank_by: RankBy = "auto",
    notes: Sequence[str] = (),
) -> str:
    """The HTML text of the report.

    Args:
        ranked: Predictions in rank order (best first); at least one.
        jobname: Shown in the title.
        plots: ``{caption: PNG bytes}`` to embed, in order; default: made here with
            :mod:`sparkfold.io.plots` (pLDDT, PAE when present, MSA coverage when ``msa`` is
            given), or left out with a note when matplotlib is missing.
        msa: [M, N] MSA for the default coverage plot.
        rank_by: Ranking metric shown in the table (as used for ``ranked``).
        notes: Extra lines shown under the title (e.g. warnings of the run).

    Returns:
        The page as a string.
    """
    if not ranked:
        raise ValueError("render_report needs at least one prediction")
    notes = list(notes)
    if plots is None:
        plots, plot_notes = _default_plots(ranked, msa)
        notes += plot_notes
    models = [{"name": p.model_name, "pdb": to_pdb(p)} for p in ranked]
    bands = [[lo, color] for lo, color, _ in PLDDT_COLORS]
    has_ptm = any(p.ptm is not None for p in ranked)
    rows = []
    for k, p in enumerate(ranked):
        selected = ' class="selected"' if k == 0 else ""
        rows.append(
            f"<tr{selected}><td>{k + 1}</td>"
            f'<td class="name">{html.escape(p.model_name)}</td>'
            f"<td>{p.mean_plddt:.2f}</td>"
            + (f"<td>{_fmt(p.ptm, 3)}</td>" if has_ptm else "")
            + f"<td>{ranking_confidence(p, rank_by):.2f}</td><td>{p.num_residues}</td></tr>"
        )
    options = "".join(
        f'<option value="{k}">rank {k + 1}: {html.escape(p.model_name)}</option>'
        for k, p in enumerate(ranked))
    legend = "".join(f'<span style="background:{c}"></span>{html.escape(label)}'
                     for _, c, label in PLDDT_COLORS)
    figures = "".join(
        f"<h3>{html.escape(caption)}</h3>"
        f'<img alt="{html.escape(caption)} plot" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}">'
        for caption, png in plots.items())
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    title = f"sparkfold report: {jobname}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sparkfold {html.escape(__version__)}">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body data-viewer="pending">
<h1>{html.escape(title)}</h1>
<div class="meta">{len(ranked)} model(s), {ranked[0].num_residues} residues, sequence
<code>{html.escape(ranked[0].sequence[:60])}{"…" if ranked[0].num_residues > 60 else ""}</code>.
Structure viewer: {VIEWER_NAME} {VIEWER_VERSION} (BSD-3-Clause), included in this file.</div>
{note_html}
<div id="layout">
<div>
<div id="viewer-box"><div id="viewer"></div></div>
<div class="legend">{legend}</div>
</div>
<div>
<p><label for="model-select">Model shown: </label><select id="model-select">{options}</select></p>
<table id="scores">
<thead><tr><th>rank</th><th>model</th><th>mean pLDDT</th>{"<th>pTM</th>" if has_ptm else ""}<th>ranking confidence</th><th>residues</th></tr></thead>
<tbody>{"".join(rows)}</tbody>
</table>
</div>
</div>
<div class="plots">{figures}</div>
<script type="application/json" id="models-data">{_json_for_script(models)}</script>
<script type="application/json" id="plddt-bands">{_json_for_script(bands)}</script>
<script>
{viewer_script()}
</script>
<script>{_JS}</script>
</body>
</html>
"""


def write_report(path: str | os.PathLike, ranked: Sequence[Prediction], **kwargs) -> Path:
    """Write :func:`render_report` to ``path`` atomically; keyword arguments as there."""
    return atomic_write(path, render_report(ranked, **kwargs))
