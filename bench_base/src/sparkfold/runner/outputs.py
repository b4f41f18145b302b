"""The files of one predicted target (ColabFold names, ``shared/spec/outputs.md``).

For every model, in rank order: ``{tag}_unrelaxed_rank_{RRR}_{model}.pdb`` / ``.cif`` and
``{tag}_scores_rank_{RRR}_{model}.json``; for rank 1: ``{tag}_predicted_aligned_error_v1.json``
(pTM models); relaxed structures ``{tag}_relaxed_rank_{RRR}_{model}.*`` for the relaxed ranks;
``{tag}_plddt.png``, ``{tag}_pae.png``, ``{tag}_coverage.png``; ``ranking.json``,
``config.json``, ``report.html``, ``timings.json``; finally the ``.done`` marker.
Names come from :class:`sparkfold.io.confidence.OutputNames`.
"""

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sparkfold.runner.manifest import DONE_MARKER, utc_now
from sparkfold.runner.options import ModelSpec
from sparkfold.runner.targets import Target

if TYPE_CHECKING:  # predict.py imports this module
    from sparkfold.runner.predict import Predictor

__all__ = ["TargetWriter"]

logger = logging.getLogger(__name__)


class TargetWriter:
    """Writes one target's files into its (temporary) folder, ``.done`` last.

    Args:
        predictor: The :class:`~sparkfold.runner.predict.Predictor` (options, models, device,
            resolved relax mode and output format, notes).
        target: The target.
        folder: Where to write (the temporary folder that becomes ``<out>/<tag>``).
        names: :class:`sparkfold.io.confidence.OutputNames` of the target.
        raw: The target's raw features (MSA for the coverage plot, template names).
        msa: ``(mode, path)`` of the MSA source, recorded in ``config.json``.
        emit: Progress callback ``emit(stage, message, **fields)``.
    """

    def __init__(
        self,
        predictor: "Predictor",
        target: Target,
        folder: Path,
        names,
        raw: dict,
        msa: tuple[str, Path | None],
        emit: Callable[..., None],
    ):
        self.p, self.target, self.folder, self.names = predictor, target, folder, names
        self.raw, self.msa, self.emit = raw, msa, emit
        self.notes = list(predictor.notes)
        self.written: list[Path] = []

    def _put(self, name: str, data: str | bytes) -> None:
        from sparkfold.io.atomic import atomic_write

        self.written.append(atomic_write(self.folder / name, data))

    def _parents(self, spec: ModelSpec) -> list[str]:
        names = self.raw.get("template_domain_names")
        if names is None or not spec.config().has_templates or not self.p.options.templates:
            return []
        return [n.decode() if isinstance(n, bytes) else str(n) for n in list(names)[:4]]

    def _structure(
        self, kind: str, rank: int, pred, spec: ModelSpec, pdb_text: str | None = None
    ) -> None:
        from sparkfold.io.mmcif import to_mmcif
        from sparkfold.io.pdb import to_pdb

        fmt = self.p.output_format
        if fmt in ("pdb", "both"):
            text = (
                pdb_text
                if pdb_text is not None
                else to_pdb(
                    pred,
                    remark=f"no_recycling={self.p.options.num_recycles}, max_templates=4, "
                    f"config_preset={spec.preset}",
                    parents=self._parents(spec),
                )
            )
            self._put(self.names.ranked(kind, rank, pred.model_name, "pdb"), text)
        if fmt in ("mmcif", "both"):
            self._put(
                self.names.ranked(kind, rank, pred.model_name, "cif"),
                to_mmcif(
                    pred,
                    entry_id=f"{self.target.tag}_{kind}_rank_{rank:03d}",
                    title=f"{self.target.description} ({kind}, rank {rank}, {pred.model_name})",
                ),
            )

    def _relax(self, rank: int, pred, spec: ModelSpec, timings: dict) -> None:
        from sparkfold.io.pdb import parse_pdb, to_pdb
        from sparkfold.relax import RelaxError, relax_pdb

        self.emit("relax", f"relaxing rank {rank} {pred.model_name}", model=pred.model_name)
        t0 = time.perf_counter()
        device = self.p.device
        index = None
        if device.startswith("cuda"):
            import torch

            index = torch.device(device).index
        try:
            result = relax_pdb(
                to_pdb(pred), platform="CPU" if device == "cpu" else "auto", device_index=index
            )
        except RelaxError as exc:
            self.notes.append(
                f"relaxation of {pred.model_name} failed, unrelaxed model kept: {exc}"
            )
            logger.warning("%s: relaxation of %s failed: %s", self.target.tag, pred.model_name, exc)
            return
        timings[f"relax_{pred.model_name}"] = time.perf_counter() - t0
        relaxed = pred
        if self.p.output_format in ("mmcif", "both"):
            heavy = parse_pdb(result.pdb, model_name=pred.model_name)
            relaxed = pred.replace(atom_positions=heavy.atom_positions, atom_mask=heavy.atom_mask)
        self._structure("relaxed", rank, relaxed, spec, pdb_text=result.pdb)

    def write(self, ranked: list, timings: dict, start: float) -> list[Path]:
        from sparkfold import __version__
        from sparkfold.io import confidence

        self.emit("write", "writing outputs")
        specs = {m.name: m for m in self.p.models}
        for rank, pred in enumerate(ranked, 1):
            self._structure("unrelaxed", rank, pred, specs[pred.model_name])
            self._put(self.names.scores_json(rank, pred.model_name), confidence.scores_json(pred))
        if ranked[0].pae is not None:
            self._put(self.names.pae_json, confidence.pae_json(ranked[0]))
        relax_count = {"none": 0, "best": 1, "all": len(ranked)}[self.p.relax_mode]
        for rank, pred in enumerate(ranked[:relax_count], 1):
            self._relax(rank, pred, specs[pred.model_name], timings)
        plots = self._plots(ranked)
        self._put(
            self.names.ranking_json,
            json.dumps(confidence.ranking_dict(ranked, self.p.options.rank_by), indent=4),
        )
        config = {
            "sparkfold_version": __version__,
            "target": {
                "tag": self.target.tag,
                "description": self.target.description,
                "length": self.target.length,
                "sequence": self.target.sequence,
                "source": None if self.target.source is None else str(self.target.source),
            },
            "msa_mode": self.msa[0],
            "msa_depth": len(self.raw["msa"]),
            "msa_path": None if self.msa[1] is None else str(self.msa[1]),
            "device": self.p.device,
            "precision": self.p.precision,
            "relax": self.p.relax_mode,
            "output_format": self.p.output_format,
            "template_mmcif_dir": None if self.p.mmcif_dir is None else str(self.p.mmcif_dir),
            "models": [
                {"name": m.name, "preset": m.preset, "weights": str(m.weights)}
                for m in self.p.models
            ],
            "options": self.p.options.to_dict(),
            "notes": self.notes,
        }
        self._put(self.names.CONFIG_JSON, json.dumps(config, indent=4))
        if self.p.options.report:
            from sparkfold.io.report import render_report

            self._put(
                self.names.report_html,
                render_report(
                    ranked,
                    jobname=self.target.tag,
                    plots=plots,
                    rank_by=self.p.options.rank_by,
                    notes=self.notes,
                ),
            )
        timings["total"] = time.perf_counter() - start
        self._put(
            self.names.timings_json,
            json.dumps({k: round(v, 3) for k, v in timings.items()}, indent=4),
        )
        marker = self.folder / DONE_MARKER
        marker.write_text(json.dumps({"finished": utc_now()}) + "\n")
        return self.written

    def _plots(self, ranked: list) -> dict[str, bytes]:
        if not self.p.options.plots:
            return {}
        from sparkfold.io import plots
        from sparkfold.io.deps import MissingDependencyError

        out: dict[str, bytes] = {}
        try:
            out["pLDDT"] = plots.plot_plddt(ranked)
            self._put(self.names.plddt_png, out["pLDDT"])
            if any(p.pae is not None for p in ranked):
                out["PAE"] = plots.plot_pae(ranked)
                self._put(self.names.pae_png, out["PAE"])
            out["MSA coverage"] = plots.plot_msa_coverage(self.raw["msa"])
            self._put(self.names.coverage_png, out["MSA coverage"])
        except MissingDependencyError as exc:
            self.notes.append(f"plots skipped: {exc}")
        return out
