"""PNG plots of a job: pLDDT per residue, PAE heatmaps, MSA coverage (ColabFold's three plots).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state, no display);
matplotlib is an optional dependency (``sparkfold[report]``) imported on first use. Every
``plot_*`` function returns the PNG bytes; :func:`write_plots` writes a job's files atomically.
"""

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparkfold.io.atomic import atomic_write
from sparkfold.io.confidence import OutputNames
from sparkfold.io.deps import require
from sparkfold.io.prediction import Prediction

__all__ = ["msa_coverage", "plot_msa_coverage", "plot_pae", "plot_plddt", "write_plots"]

#: Gap index of MSA arrays, in both the model order and the HHblits alphabet.
GAP_INDEX = 21
#: ColabFold draws the PAE of at most this many top-ranked models.
MAX_PAE_PANELS = 5


def _figure(width: float, height: float):
    figure_mod = require("matplotlib.figure", package="matplotlib", purpose="plotting")
    agg = require("matplotlib.backends.backend_agg", package="matplotlib", purpose="plotting")
    fig = figure_mod.Figure(figsize=(width, height))
    agg.FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _chain_boundaries(prediction: Prediction) -> list[float]:
    """Positions (0-based, between residues) where the chain changes."""
    changes = np.flatnonzero(np.diff(prediction.chain_index) != 0)
    return [float(i) + 0.5 for i in changes]


def _label(prediction: Prediction, rank: int | None) -> str:
    return f"rank {rank}: {prediction.model_name}" if rank is not None else prediction.model_name


def plot_plddt(predictions: Sequence[Prediction], *, ranked: bool = True, dpi: int = 100) -> bytes:
    """pLDDT per residue of every model, one line each, on one figure.

    Args:
        predictions: Models in rank order (best first) when ``ranked``.
        ranked: Prefix legend entries with ``rank k``.
        dpi: Resolution of the PNG.
    """
    if not predictions:
        raise ValueError("plot_plddt needs at least one prediction")
    fig = _figure(8, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for k, pred in enumerate(predictions, start=1):
        ax.plot(np.arange(1, pred.num_residues + 1), pred.plddt, linewidth=1.2,
                label=f"{_label(pred, k if ranked else None)} ({pred.mean_plddt:.1f})")
    for x in _chain_boundaries(predictions[0]):
        ax.axvline(x + 1, color="black", linewidth=0.8)
    ax.set_ylim(0, 100)
    ax.set_xlim(1, max(p.num_residues for p in predictions))
    ax.set_xlabel("Position")
    ax.set_ylabel("Predicted lDDT")
    ax.set_title("Predicted lDDT per position")
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig, dpi)


def plot_pae(predictions: Sequence[Prediction], *, ranked: bool = True,
             max_models: int = MAX_PAE_PANELS, dpi: int = 100) -> bytes:
    """PAE heatmaps (aligned residue on y, scored residue on x; 0–30 Å, blue = low error).

    Args:
        predictions: Models in rank order; those without PAE are skipped, at most
            ``max_models`` are drawn side by side.
        ranked: Title panels with ``rank k``.
        max_models: Number of panels at most.
        dpi: Resolution of the PNG.

    Raises:
        ValueError: no prediction has a PAE matrix.
    """
    panels = [(k, p) for k, p in enumerate(predictions, start=1) if p.pae is not None][:max_models]
    if not panels:
        raise ValueError("no prediction has PAE (models without a pTM head); skip the PAE plot")
    fig = _figure(4.2 * len(panels), 4)
    image = None
    for i, (k, pred) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        n = pred.num_residues
        image = ax.imshow(pred.pae, cmap="bwr", vmin=0, vmax=30, extent=(0.5, n + 0.5, n + 0.5, 0.5))
        for x in _chain_boundaries(pred):
            ax.axvline(x + 1, color="black", linewidth=0.8)
            ax.axhline(x + 1, color="black", linewidth=0.8)
        ax.set_title(_label(pred, k if ranked else None), fontsize="small")
        ax.set_xlabel("Scored residue")
        if i == 0:
            ax.set_ylabel("Aligned residue")
    fig.colorbar(image, ax=fig.axes, label="Expected position error (Å)", shrink=0.8)
    return _png(fig, dpi)


def msa_coverage(msa: np.ndarray, gap_index: int = GAP_INDEX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row identity to the query and per-position coverage of an MSA.

    Args:
        msa: [M, N] integer MSA, row 0 = query; ``gap_index`` marks gaps.
        gap_index: The gap code (21 in both the model order and the HHblits alphabet).

    Returns:
        ``(identity [M], coverage [N], order [M])``: identity = matching non-gap positions / the
        query's non-gap length (ColabFold's definition), coverage = number of rows with a residue
        at each position, order = row indices by decreasing identity (stable).
    """
    msa = np.asarray(msa)
    if msa.ndim != 2 or msa.shape[0] == 0:
        raise ValueError(f"MSA must be a non-empty [M, N] array, got shape {msa.shape}")
    present = msa != gap_index
    query = msa[0]
    query_len = max(int(present[0].sum()), 1)
    identity = ((msa == query[None, :]) & present).sum(axis=1) / query_len
    order = np.argsort(-identity, kind="stable")
    return identity, present.sum(axis=0), order


def plot_msa_coverage(msa: np.ndarray, *, gap_index: int = GAP_INDEX, dpi: int = 100) -> bytes:
    """ColabFold-style coverage plot: every MSA row drawn where it has a residue, coloured by its
    identity to the query (rows sorted by identity, highest on top), with the number of
    sequences covering each position as a black line.
    """
    msa = np.asarray(msa)
    identity, coverage, order = msa_coverage(msa, gap_index)
    num_seqs, num_res = msa.shape
    present = (msa != gap_index)[order]
    image = np.where(present, identity[order][:, None], np.nan)
    fig = _figure(8, 5)
    ax = fig.add_subplot(1, 1, 1)
    shown = ax.imshow(image[::-1], aspect="auto", interpolation="nearest", cmap="rainbow_r",
                      vmin=0, vmax=1, origin="lower", extent=(0.5, num_res + 0.5, 0, num_seqs))
    ax.plot(np.arange(1, num_res + 1), coverage, color="black", linewidth=1.2)
    ax.set_xlim(0.5, num_res + 0.5)
    ax.set_ylim(0, num_seqs)
    ax.set_title(f"Sequence coverage ({num_seqs} sequences)")
    ax.set_xlabel("Positions")
    ax.set_ylabel("Sequences")
    fig.colorbar(shown, ax=ax, label="Sequence identity to query")
    return _png(fig, dpi)


def write_plots(
    out_dir: str | os.PathLike,
    names: OutputNames,
    ranked: Sequence[Prediction],
    msa: np.ndarray | None = None,
    *,
    dpi: int = 100,
) -> dict[str, Path]:
    """Write a job's plots (``{job}_plddt.png``, ``{job}_pae.png`` when PAE exists,
    ``{job}_coverage.png`` when ``msa`` is given) atomically.

    Returns:
        ``{"plddt": path, "pae": path, "coverage": path}`` for the files written.
    """
    out_dir = Path(out_dir)
    written = {"plddt": atomic_write(out_dir / names.plddt_png, plot_plddt(ranked, dpi=dpi))}
    if any(p.pae is not None for p in ranked):
        written["pae"] = atomic_write(out_dir / names.pae_png, plot_pae(ranked, dpi=dpi))
    if msa is not None:
        written["coverage"] = atomic_write(out_dir / names.coverage_png,
                                           plot_msa_coverage(msa, dpi=dpi))
    return written
