"""Options, model selection and the checks made before any model work, for ``sparkfold predict``.

:class:`PredictOptions` holds every setting of a run; :func:`resolve_models`, :func:`resolve_msa`,
:func:`resolve_device`, :func:`resolve_precision` and :func:`check_lengths` turn them into
concrete choices and fail with a clear :class:`PredictError` before a model is loaded.
:class:`ProgressEvent` and :class:`TargetResult` are what a run reports.
"""

import dataclasses
import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from sparkfold.errors import SparkfoldError
from sparkfold.runner.targets import Target

__all__ = [
    "MSA_MODES",
    "OUTPUT_FORMATS",
    "CUDA_GRAPHS",
    "PRECISIONS",
    "RANK_BY",
    "RELAX_MODES",
    "WEIGHT_SOURCES",
    "ModelSpec",
    "PredictError",
    "PredictOptions",
    "Progress",
    "ProgressEvent",
    "TargetResult",
    "check_lengths",
    "relax_available",
    "resolve_device",
    "resolve_models",
    "resolve_msa",
    "resolve_precision",
]

MSA_MODES = ("auto", "local", "server", "single")
RELAX_MODES = ("auto", "none", "best", "all")
OUTPUT_FORMATS = ("auto", "pdb", "mmcif", "both")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
CUDA_GRAPHS = ("auto", "on", "off")
RANK_BY = ("plddt", "ptm")
#: Named weight sources; anything else is a path (file or folder).
WEIGHT_SOURCES = ("openfold", "alphafold", "random")
#: Sizes of the testing-only ``model_config`` choice.
TEST_MODEL_CONFIGS = ("tiny",)


class PredictError(SparkfoldError):
    """A prediction run cannot start: bad options, missing alignments, too long a sequence…"""


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """Everything a prediction run depends on (``sparkfold predict --help`` mirrors it).

    Attributes:
        alignments: Folder of precomputed alignments, OpenFold layout (``<alignments>/<tag>/``).
        msa: ``auto`` (precomputed alignments when given, an A3M input's own MSA, else local
            databases when configured, else an error), ``local``, ``server`` (the ColabFold
            MSA server: the sequences leave this machine) or ``single`` (no MSA).
        models: Model numbers (``"1"``…``"5"``) or preset names (``"model_2_ptm"``); None = all
            five, pTM variants. With a weights FILE, None = that file's own preset only.
        weights: ``openfold``, ``alphafold`` (downloaded on first use), ``random`` (seeded random
            weights, for tests) or the path of a weights file or folder.
        model_config: Testing only: ``"tiny"`` builds :meth:`ModelConfig.tiny` models (needs
            ``weights="random"``).
        num_recycles: Recycles (passes = recycles + 1).
        recycle_early_stop_tolerance: Stop recycling once Cα distances change by less than this
            (Å RMS); None keeps the preset's setting (off for monomers).
        templates: Use templates when the alignments have hits and an mmCIF folder is known.
        template_mmcif_dir: Template structures (default: the configured ``pdb_mmcif`` database).
        max_template_date: ``YYYY-MM-DD`` cut-off for template release dates (None = today).
        seed: Seed of the feature sampling (and of random weights).
        relax: ``auto`` (= ``best`` when OpenMM is installed, else ``none``), ``none``, ``best``
            (rank 1 only) or ``all``.
        device: ``auto`` (CUDA when available, else CPU) or a torch device string.
        precision: ``auto`` (bf16 on a CUDA GPU that supports it, else fp32), ``fp32``, ``tf32``
            or ``bf16``.
        kernels, chunk_size: :class:`sparkfold.config.RuntimeConfig` settings.
        cuda_graphs: ``auto`` (record trunk passes as CUDA graphs for short sequences),
            ``on`` or ``off`` (``RuntimeConfig.cuda_graphs``). Worker threads that share one
            GPU (``--workers-per-gpu`` > 1 without Ray) always run with graphs off.
        output_format: ``auto`` (PDB and mmCIF when ``modelcif`` is installed, else PDB),
            ``pdb``, ``mmcif`` or ``both``.
        rank_by: ``plddt`` (mean pLDDT) or ``ptm``.
        overwrite: Redo targets that are already done.
        plots, report: Write the PNG plots / ``report.html`` (need matplotlib for plots).
        msa_server_url: MSA server for ``msa="server"`` (None: the search module's default).
        log_file: Append progress and warnings to ``<out>/log.txt``.
    """

    alignments: Path | None = None
    msa: Literal["auto", "local", "server", "single"] = "auto"
    models: tuple[str, ...] | None = None
    weights: str = "openfold"
    model_config: str | None = None
    num_recycles: int = 3
    recycle_early_stop_tolerance: float | None = None
    templates: bool = True
    template_mmcif_dir: Path | None = None
    max_template_date: str | None = None
    seed: int = 0
    relax: Literal["auto", "none", "best", "all"] = "auto"
    device: str = "auto"
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"
    kernels: str = "auto"
    chunk_size: int | str | None = "auto"
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    output_format: Literal["auto", "pdb", "mmcif", "both"] = "auto"
    rank_by: Literal["plddt", "ptm"] = "plddt"
    overwrite: bool = False
    plots: bool = True
    report: bool = True
    msa_server_url: str | None = None
    log_file: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (
            ("msa", MSA_MODES),
            ("relax", RELAX_MODES),
            ("precision", PRECISIONS),
            ("cuda_graphs", CUDA_GRAPHS),
            ("output_format", OUTPUT_FORMATS),
            ("rank_by", RANK_BY),
        ):
            if getattr(self, name) not in allowed:
                raise PredictError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        if not isinstance(self.num_recycles, int) or self.num_recycles < 0:
            raise PredictError(f"num_recycles must be an integer >= 0, got {self.num_recycles!r}")
        if self.model_config is not None:
            if self.model_config not in TEST_MODEL_CONFIGS:
                raise PredictError(
                    f"model_config must be one of {TEST_MODEL_CONFIGS}, got {self.model_config!r}"
                )
            if self.weights != "random":
                raise PredictError("model_config='tiny' is for tests and needs weights='random'")
        for name in ("alignments", "template_mmcif_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.models is not None:
            items = self.models.split(",") if isinstance(self.models, str) else self.models
            object.__setattr__(
                self, "models", tuple(str(m).strip() for m in items if str(m).strip())
            )
        if not isinstance(self.weights, str):
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if self.max_template_date is not None:
            try:
                datetime.date.fromisoformat(str(self.max_template_date))
            except ValueError:
                raise PredictError(
                    f"max_template_date {self.max_template_date!r} is not a date",
                    fix="write it as YYYY-MM-DD, e.g. 2021-10-01",
                ) from None

    def to_dict(self) -> dict:
        """JSON-ready values (paths as strings)."""
        return {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
        }


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of a run.

    Attributes:
        number: 1-5 (the AF2 model number).
        preset: Preset name (``model_1_ptm``), or for tests ``tiny_templ``/``tiny_notempl``
            (``ModelConfig.tiny``, with a pTM head unless suffixed ``_noptm``).
        weights: Weights file, or ``"random"``.
        name: File-name tag ``{type}_model_{N}_seed_{SSS}`` (ColabFold style).
    """

    number: int
    preset: str
    weights: str | Path
    name: str

    def config(self):
        """The :class:`~sparkfold.config.ModelConfig`."""
        from sparkfold.config import ModelConfig

        if self.preset.startswith("tiny_"):  # testing only
            config = ModelConfig.tiny(templates=self.preset.startswith("tiny_templ"))
            if self.preset.endswith("_noptm"):
                config = dataclasses.replace(
                    config, heads=dataclasses.replace(config.heads, tm_enabled=False)
                )
            return config
        return ModelConfig.from_preset(self.preset)


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """A progress report (the CLI prints one line per event).

    Attributes:
        stage: ``target``, ``skip``, ``msa``, ``features``, ``load``, ``model``, ``recycle``,
            ``relax``, ``write``, ``done``, ``failed`` or ``note``.
        message: Human-readable text.
        target: The target's tag, when the event concerns one.
        index, total: Position of the target in the run (1-based) and number of targets.
        model: The model's name, for model/recycle/relax events.
        step, steps: Progress within the stage (model k of n, recycle pass k of n).
    """

    stage: str
    message: str
    target: str | None = None
    index: int = 0
    total: int = 0
    model: str | None = None
    step: int | None = None
    steps: int | None = None

    def format(self) -> str:
        """One line, e.g. ``[1/2 6KWC_1] model 2/5 …: recycle 3/4``."""
        where = f"[{self.index}/{self.total} {self.target}] " if self.target else ""
        return where + self.message


Progress = Callable[[ProgressEvent], None]


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """What happened to one target.

    Attributes:
        tag: The target's tag.
        state: ``done``, ``skipped`` (already done) or ``failed``.
        out_dir: ``<out>/<tag>``.
        outputs: Files written (absolute paths), empty when skipped or failed.
        ranking: Model names, best first.
        scores: Per model name: ``{"mean_plddt": …, "ptm": …}``.
        error: Why it failed.
        seconds: Wall time spent on it.
    """

    tag: str
    state: Literal["done", "skipped", "failed"]
    out_dir: Path
    outputs: tuple[Path, ...] = ()
    ranking: tuple[str, ...] = ()
    scores: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


# ------------------------------------------------------------------ resolution (no model work)
def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; an explicit CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise PredictError(
            f"--device {device!r} is not a torch device", fix="use auto, cpu, cuda or cuda:N"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise PredictError(
                f"--device {device} was asked for, but torch sees no CUDA GPU",
                fix="run `sparkfold doctor`, or use --device cpu",
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise PredictError(
                f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible",
                fix="pick an index below that, or check CUDA_VISIBLE_DEVICES",
            )
    return str(parsed)


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → ``bf16`` on a CUDA device that supports it, else ``fp32``."""
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def relax_available() -> bool:
    """Whether the relax extra (OpenMM and PDBFixer) is installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("openmm", "pdbfixer"))


def _model_number(item: str) -> tuple[int, bool | None]:
    """``"3"`` → (3, None); ``"model_3_ptm"`` → (3, True); ``"model_3"`` → (3, False)."""
    from sparkfold.config import ConfigError, canonical_preset

    if item.isdigit():
        number, ptm = int(item), None
    else:
        try:
            preset = canonical_preset(item)
        except ConfigError as exc:
            raise PredictError(
                str(exc.problem), fix="use model numbers 1-5 or names like model_1_ptm"
            ) from None
        if "multimer" in preset:
            raise PredictError(
                f"preset {item!r} is AlphaFold-Multimer, which sparkfold does not run yet",
                fix="use model_1 … model_5 (optionally _ptm)",
            )
        number, ptm = int(preset.split("_")[1]), preset.endswith("_ptm")
    if not 1 <= number <= 5:
        raise PredictError(
            f"model number {item!r} is not 1-5", fix="use --models 1,2,3,4,5 or a subset"
        )
    return number, ptm


def resolve_models(options: PredictOptions, *, download_progress: bool = False) -> list[ModelSpec]:
    """The models of a run with their weight files.

    Named sources (``openfold``, ``alphafold``) are downloaded into the cache on first use
    (:func:`sparkfold.weights.download.resolve_weights`). Model numbers get the pTM variant;
    with a weights folder that lacks it, the plain variant is used.

    Raises:
        PredictError: unknown model names or weights path; SparkfoldError from the download.
    """
    seed_tag = f"seed_{options.seed:03d}"
    items = list(options.models) if options.models else None
    source = options.weights
    if source not in WEIGHT_SOURCES:
        path = Path(source).expanduser()
        if not path.exists():
            raise PredictError(
                f"--weights {source!r} is neither openfold, alphafold, random nor an existing path",
                fix="give the path of an AF2 params_*.npz or OpenFold .pt file "
                "(or a folder of them)",
            )
        if path.is_file():
            return _file_models(path, items, seed_tag)
    specs = []
    for number, ptm in dict.fromkeys(_model_number(i) for i in (items or "12345")):
        if source == "random":
            ptm = True if ptm is None else ptm
            preset = f"model_{number}{'_ptm' if ptm else ''}"
            if options.model_config == "tiny":
                preset = ("tiny_templ" if number in (1, 2) else "tiny_notempl") + (
                    "" if ptm else "_noptm"
                )
            kind, weights = "random", "random"
        else:
            ptm, weights = _resolve_weights(source, number, ptm, download_progress)
            preset = f"model_{number}{'_ptm' if ptm else ''}"
            kind = "alphafold2" if Path(weights).suffix == ".npz" else "openfold"
        specs.append(
            ModelSpec(
                number, preset, weights, f"{kind}{'_ptm' if ptm else ''}_model_{number}_{seed_tag}"
            )
        )
    return specs


def _file_models(path: Path, items: list[str] | None, seed_tag: str) -> list[ModelSpec]:
    from sparkfold.weights import infer_preset, read_weights

    kind = "alphafold2" if path.suffix == ".npz" else "openfold"
    if items is None:
        file_kind, entries, hint = read_weights(path)
        pairs = [_model_number(infer_preset(file_kind, entries, hint))]
        del entries
    else:
        pairs = [_model_number(i) for i in items]
    specs = []
    for number, ptm in dict.fromkeys(pairs):
        ptm = True if ptm is None else ptm
        preset = f"model_{number}{'_ptm' if ptm else ''}"
        specs.append(
            ModelSpec(
                number, preset, path, f"{kind}{'_ptm' if ptm else ''}_model_{number}_{seed_tag}"
            )
        )
    return specs


def _resolve_weights(
    source: str, number: int, ptm: bool | None, progress: bool
) -> tuple[bool, Path]:
    """(pTM?, file) for model ``number``; ``ptm=None`` prefers pTM and falls back for folders."""
    from sparkfold.weights.download import WeightsNotFoundError, resolve_weights

    choices = [True, False] if ptm is None else [ptm]
    for k, choice in enumerate(choices):
        preset = f"model_{number}{'_ptm' if choice else ''}"
        try:
            return choice, Path(
                resolve_weights(
                    source, preset, download=source in WEIGHT_SOURCES, progress=progress
                )
            )
        except WeightsNotFoundError:
            if k == len(choices) - 1:
                raise
    raise AssertionError("unreachable")


def resolve_msa(
    target: Target, options: PredictOptions, databases: dict | None = None
) -> tuple[str, Path | None]:
    """How a target gets its MSA: ``(mode, path)``.

    Modes: ``precomputed`` (path = its alignment folder), ``a3m`` (path = the A3M input),
    ``local`` / ``server`` (searched into ``<out>/alignments/<tag>``; path None here) and
    ``single`` (no MSA).

    Raises:
        PredictError: the alignment folder is missing or holds no MSA file, or ``auto`` finds
            no source (the message offers ``--msa server`` and ``--msa single``).
    """
    mode = options.msa
    if mode == "single":
        return "single", None
    if mode in ("local", "server"):
        return mode, None
    if options.alignments is not None:
        folder = options.alignments / target.tag
        if not folder.is_dir():
            raise PredictError(
                f"no alignment folder for target {target.tag!r}: {folder} does not exist",
                fix=f"create it (OpenFold layout: {options.alignments}/<tag>/*.a3m|*.sto), "
                "or run without --alignments",
            )
        from sparkfold.data.msa import msa_files

        if not msa_files(folder):
            raise PredictError(
                f"alignment folder {folder} holds no .a3m or .sto file",
                fix="put the target's MSA files there (see docs/alignments.md)",
            )
        return "precomputed", folder
    if target.a3m is not None:
        return "a3m", target.a3m
    if databases is None:
        from sparkfold.paths import configured_databases

        databases = configured_databases()
    if "uniref90" in databases:
        return "local", None
    raise PredictError(
        "no MSA source: no --alignments given and no local sequence databases configured",
        fix="pass --msa server to search the public ColabFold MSA server (your sequences are sent "
        "to it), --msa single to predict from the sequence alone (less accurate), or "
        "--alignments DIR with precomputed alignments; `sparkfold doctor` shows the databases",
    )


def _free_memory(device: str) -> tuple[float, float]:
    """(free bytes, usable fraction) of the device (CPU: available RAM); see sparkfold.memory."""
    from sparkfold.memory import usable_memory

    free, fraction = usable_memory(device)
    return float(free), fraction


def check_lengths(targets: Sequence[Target], device: str, precision: str) -> int:
    """The longest sequence that fits the device's free memory; raise if a target is longer.

    Uses :func:`sparkfold.doctor.estimate_max_length` (conservative, full-size model).

    Raises:
        PredictError: naming the targets that are too long and the longest length that fits.
    """
    from sparkfold.doctor import estimate_max_length

    free, fraction = _free_memory(device)
    limit = estimate_max_length(fraction * free, 2 if precision == "bf16" else 4)
    too_long = [t for t in targets if t.length > limit]
    if too_long:
        names = ", ".join(f"{t.tag} ({t.length})" for t in too_long[:5])
        raise PredictError(
            f"{len(too_long)} sequence(s) too long for the free memory of {device} "
            f"({free / (1 << 30):.1f} GiB free): {names}; the longest that fits is about {limit} "
            f"residues in {precision}",
            fix="split the sequence into domains, free memory, or use a device with more memory"
            + (
                "; bf16 halves the activations"
                if precision != "bf16" and device.startswith("cuda")
                else ""
            ),
        )
    return limit
