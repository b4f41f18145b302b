"""Download, verify and locate the public AlphaFold2 / OpenFold weights.

Sources and file sizes are those of ``shared/spec/weights.md``; the model-number ↔ file
assignment follows ``inference_cli.md`` §3. Files live flat in :func:`sparkfold.paths.weights_dir`
(``<cache>/params``, where ``sparkfold doctor`` looks), e.g. ``params_model_1_ptm.npz`` and
``finetuning_ptm_2.pt``.

Every download (HTTP and tar handling in :mod:`sparkfold.io.fetch`)

* streams into ``<dir>/.downloads/<name>.part`` with a progress bar and resumes an interrupted
  transfer with an HTTP ``Range`` request (also across runs);
* checks the byte count against ``Content-Length`` (and the published size, when known);
* for the AF2 tarball: extracts only regular files with plain names (absolute paths, ``..``,
  links and device files make the whole archive rejected);
* checks the structure: the file is read the way :func:`sparkfold.weights.load_model` reads it
  (``torch.load(weights_only=True)`` / ``np.load(allow_pickle=False)``) and its keys and shapes
  must equal the preset's layout;
* only then moves the file into place (``os.replace``) and records its sha256 in
  ``<dir>/checksums.json``. Later uses compare the file against that record.

``SPARKFOLD_OFFLINE=1`` (or ``offline=True``) forbids network access; a missing file then raises
an error saying how to get it.
"""

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sparkfold.errors import SparkfoldError
from sparkfold.io.fetch import (
    OFFLINE_ENV,
    OfflineError,
    UnsafeArchiveError,
    download_file,
    is_offline,
    safe_extract,
)
from sparkfold.io.fetch import DownloadError as WeightsDownloadError

log = logging.getLogger(__name__)

__all__ = [
    "ALL_PRESETS",
    "CHECKSUMS_FILE",
    "DEFAULT_PRESETS",
    "OFFLINE_ENV",
    "SOURCES",
    "ChecksumMismatchError",
    "OfflineError",
    "UnsafeArchiveError",
    "WeightFile",
    "WeightSource",
    "WeightsDownloadError",
    "WeightsNotFoundError",
    "WeightsVerificationError",
    "download_file",
    "download_weights",
    "file_status",
    "is_offline",
    "read_checksums",
    "resolve_weights",
    "safe_extract",
    "sha256_file",
    "verify_checksum",
    "verify_structure",
    "weights_directory",
]

CHECKSUMS_FILE = "checksums.json"
_DOWNLOADS = ".downloads"
_CHUNK = 1 << 20

#: Monomer presets downloaded by default (ColabFold's ``alphafold2_ptm``) and with ``--all``.
DEFAULT_PRESETS: tuple[str, ...] = tuple(f"model_{i}_ptm" for i in range(1, 6))
ALL_PRESETS: tuple[str, ...] = tuple(f"model_{i}" for i in range(1, 6)) + DEFAULT_PRESETS


# --------------------------------------------------------------------------- errors
class WeightsNotFoundError(SparkfoldError):
    """The weights a run needs are not on disk."""


class WeightsVerificationError(SparkfoldError):
    """A downloaded file is not the expected weights file (size or structure)."""


class ChecksumMismatchError(SparkfoldError):
    """A cached weights file no longer matches the sha256 recorded when it was downloaded."""


# --------------------------------------------------------------------------- sources
@dataclasses.dataclass(frozen=True)
class WeightFile:
    """One file of a weights source.

    Attributes:
        name: File name in the weights directory.
        member: Name at the source (URL path end or tar member); default ``name``.
        preset: Preset whose parameter layout the file must have (a preset name or a
            :class:`~sparkfold.config.ModelConfig`); ``None`` for licence/readme files.
        size: Published size in bytes (a sanity check; mismatches are logged), or ``None``.
    """

    name: str
    member: str | None = None
    preset: object = None
    size: int | None = None

    @property
    def source_name(self) -> str:
        return self.member or self.name

    @property
    def kind(self) -> str:
        if self.preset is None:
            return "other"
        return "npz" if self.name.endswith(".npz") else "pt"


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """A public set of weights.

    Attributes:
        name: ``"openfold"`` or ``"alphafold"``.
        description: One line for ``sparkfold weights list``.
        license: Licence of the weights.
        urls: For per-file sources, URL templates with ``{file}``, tried in order (mirrors);
            for archive sources, the archive URLs.
        archive: File name of the tar archive holding every file, or ``None``.
        files: Every file of the source sparkfold uses.
        model_files: Preset → file name (``WeightFile.name``) loaded for that model.
        extras: Files fetched with any download (licence).
    """

    name: str
    description: str
    license: str
    urls: tuple[str, ...]
    archive: str | None
    files: tuple[WeightFile, ...]
    model_files: Mapping[str, str]
    extras: tuple[str, ...] = ()

    def file(self, name: str) -> WeightFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)

    def files_for(self, presets: Iterable[str]) -> list[WeightFile]:
        """The files needed for ``presets`` (plus the extras), each once, in table order."""
        wanted = {self.model_files[p] for p in presets} | set(self.extras)
        return [f for f in self.files if f.name in wanted]


_OF_PT, _OF_PTM, _OF_NT, _OF_NT_PTM = 374_586_533, 374_620_131, 373_226_022, 373_259_620

OPENFOLD = WeightSource(
    name="openfold",
    description="OpenFold parameters (aqlaboratory), .pt state dicts",
    license="CC BY 4.0",
    urls=("https://openfold.s3.amazonaws.com/openfold_params/{file}",
          "https://huggingface.co/nz/OpenFold/resolve/main/{file}"),
    archive=None,
    files=(
        WeightFile("finetuning_2.pt", preset="model_1", size=_OF_PT),
        WeightFile("finetuning_3.pt", preset="model_1", size=_OF_PT),
        WeightFile("finetuning_ptm_1.pt", preset="model_1_ptm", size=_OF_PTM),
        WeightFile("finetuning_ptm_2.pt", preset="model_1_ptm", size=_OF_PTM),
        WeightFile("finetuning_no_templ_1.pt", preset="model_3", size=_OF_NT),
        WeightFile("finetuning_no_templ_2.pt", preset="model_3", size=_OF_NT),
        WeightFile("finetuning_no_templ_ptm_1.pt", preset="model_3_ptm", size=_OF_NT_PTM),
        WeightFile("LICENSE.openfold", member="LICENSE", size=18_657),
    ),
    # sparkfold's own choice (OpenFold's docs allow any file of a branch for models 1-5):
    # the best-validated checkpoint of each branch for the first model number using it,
    # the runner-up for the next. Only one no-template pTM file exists.
    model_files={
        "model_1": "finetuning_3.pt", "model_2": "finetuning_2.pt",
        "model_3": "finetuning_no_templ_2.pt", "model_4": "finetuning_no_templ_1.pt",
        "model_5": "finetuning_no_templ_2.pt",
        "model_1_ptm": "finetuning_ptm_2.pt", "model_2_ptm": "finetuning_ptm_1.pt",
        "model_3_ptm": "finetuning_no_templ_ptm_1.pt", "model_4_ptm": "finetuning_no_templ_ptm_1.pt",
        "model_5_ptm": "finetuning_no_templ_ptm_1.pt",
    },
    extras=("LICENSE.openfold",),
)

_AF_SIZES = {1: 373_069_562, 2: 373_069_562, 3: 371_712_506, 4: 371_712_506, 5: 371_712_506}
_AF_PTM_SIZES = {1: 373_103_340, 2: 373_103_340, 3: 371_746_284, 4: 371_746_284, 5: 371_746_284}

ALPHAFOLD = WeightSource(
    name="alphafold",
    description="AlphaFold2 parameters (DeepMind, release 2022-12-06), params_*.npz from one tar",
    license="CC BY 4.0",
    urls=("https://storage.googleapis.com/alphafold/alphafold_params_2022-12-06.tar",),
    archive="alphafold_params_2022-12-06.tar",
    files=tuple(
        [WeightFile(f"params_model_{i}.npz", preset=f"model_{i}", size=_AF_SIZES[i])
         for i in range(1, 6)]
        + [WeightFile(f"params_model_{i}_ptm.npz", preset=f"model_{i}_ptm", size=_AF_PTM_SIZES[i])
           for i in range(1, 6)]
        + [WeightFile("LICENSE.alphafold", member="LICENSE", size=18_657)]
    ),
    model_files={**{f"model_{i}": f"params_model_{i}.npz" for i in range(1, 6)},
                 **{f"model_{i}_ptm": f"params_model_{i}_ptm.npz" for i in range(1, 6)}},
    extras=("LICENSE.alphafold",),
)

#: The built-in sources by name.
SOURCES: dict[str, WeightSource] = {s.name: s for s in (OPENFOLD, ALPHAFOLD)}


# --------------------------------------------------------------------------- helpers
def weights_directory(directory: str | os.PathLike | None = None) -> Path:
    """``directory`` as an absolute path, or :func:`sparkfold.paths.weights_dir` when ``None``."""
    if directory is not None:
        return Path(directory).expanduser().absolute()
    from sparkfold import paths

    return paths.weights_dir()


def _ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SparkfoldError(f"cannot create the weights directory {path}: {exc.strerror or exc}",
                             fix="set SPARKFOLD_CACHE to a writable directory or pass --dir") from exc
    return path


def _canonical(preset: str) -> str:
    from sparkfold.config import ConfigError, canonical_preset

    try:
        name = canonical_preset(str(preset))
    except ConfigError as exc:
        raise SparkfoldError(str(exc), fix="use model_1 … model_5, optionally with _ptm") from None
    if "multimer" in name:
        raise SparkfoldError(f"preset {name!r} is an AlphaFold-Multimer preset, which sparkfold "
                             "does not implement", fix="use a monomer preset such as model_1_ptm")
    return name


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- checksums
def read_checksums(directory: str | os.PathLike | None = None) -> dict[str, dict]:
    """``{file name: {"sha256", "size", "source", "url", "recorded"}}`` from ``checksums.json``."""
    path = weights_directory(directory) / CHECKSUMS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SparkfoldError(f"{path} is unreadable ({exc})",
                             fix=f"delete {path}; checksums are recorded again on the next download")
    return dict(data.get("files", {}))


def _record_checksum(directory: Path, name: str, sha: str, size: int, source: str, url: str) -> None:
    from sparkfold.io.atomic import atomic_write

    files = read_checksums(directory)
    files[name] = {"sha256": sha, "size": size, "source": source, "url": url,
                   "recorded": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write(directory / CHECKSUMS_FILE,
                 json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n")


def verify_checksum(path: str | os.PathLike, *, source: str | None = None) -> bool:
    """Compare a file with the sha256 recorded when it was downloaded.

    Returns:
        ``True`` when a record exists and matches, ``False`` when there is no record.

    Raises:
        ChecksumMismatchError: size or sha256 differ from the record (the message names the file
            and how to download it again).
    """
    path = Path(path)
    record = read_checksums(path.parent).get(path.name)
    if record is None:
        return False
    again = f"sparkfold weights download {source or record.get('source', '<source>')} --force"
    fix = f"delete {path} and download it again: {again}"
    size = path.stat().st_size
    if size != record["size"]:
        raise ChecksumMismatchError(
            f"weights file {path} has {size} bytes but {record['size']} were recorded at download "
            "(truncated or replaced)", fix=fix)
    if sha256_file(path) != record["sha256"]:
        raise ChecksumMismatchError(
            f"weights file {path} does not match the sha256 recorded at download "
            f"({record['sha256'][:16]}…): the file was modified or corrupted", fix=fix)
    return True


# --------------------------------------------------------------------------- structure
def verify_structure(path: str | os.PathLike, preset, *, kind: str | None = None) -> None:
    """Check that a weights file loads safely and has exactly the preset's keys and shapes.

    Args:
        path: A ``.npz`` (AF2) or ``.pt`` (OpenFold) file.
        preset: Preset name or :class:`~sparkfold.config.ModelConfig` the file must fit.
        kind: ``"npz"`` or ``"pt"``; default from the file name (``.npz`` → npz, else pt).

    Raises:
        WeightsVerificationError: unreadable file, or missing/unexpected/wrong-shape entries.
    """
    from sparkfold.config import ModelConfig
    from sparkfold.weights import af2_npz, openfold_pt
    from sparkfold.weights.loader import expected_state_dict_shapes

    path = Path(path)
    config = preset if isinstance(preset, ModelConfig) else ModelConfig.from_preset(preset)
    try:
        if (kind or ("npz" if path.name.endswith(".npz") else "pt")) == "npz":
            arrays = af2_npz.read_npz(path)
            problems = af2_npz.check_npz_arrays(arrays, af2_npz.build_npz_table(config))
        else:
            state = openfold_pt.read_openfold_checkpoint(path)
            expected = expected_state_dict_shapes(config)
            problems = {
                "missing": sorted(k for k in expected if k not in state),
                "unexpected": sorted(k for k in state if k not in expected),
                "shape": sorted(f"{k}: file {tuple(v.shape)}, expected {expected[k]}"
                                for k, v in state.items()
                                if k in expected and tuple(v.shape) != tuple(expected[k])),
            }
    except (af2_npz.NpzReadError, openfold_pt.PtReadError) as exc:
        raise WeightsVerificationError(f"{path.name} is not a readable weights file: {exc}") from None
    parts = [f"{len(v)} {k} (e.g. {', '.join(v[:3])})" for k, v in problems.items() if v]
    if parts:
        raise WeightsVerificationError(
            f"{path.name} does not have the parameter layout of preset {config.name!r}: "
            + "; ".join(parts))


# --------------------------------------------------------------------------- orchestration
def _urls(source: WeightSource, url: str | None) -> tuple[str, ...]:
    return (url,) if url else source.urls


def _file_url(template: str, name: str) -> str:
    if "{file}" in template:
        return template.format(file=name)
    return template.rstrip("/") + "/" + name


def _install(tmp: Path, wf: WeightFile, directory: Path, source: str, url: str) -> Path:
    """Verify ``tmp`` (structure), move it to ``directory/wf.name`` and record its sha256."""
    try:
        if wf.preset is not None:
            verify_structure(tmp, wf.preset, kind=wf.kind)
    except WeightsVerificationError as exc:
        tmp.unlink(missing_ok=True)
        raise WeightsVerificationError(
            f"downloaded {wf.name} from {url} is not the expected file: {exc.problem}",
            fix=f"the source may have changed; run `sparkfold weights download {source} --force`, "
                "or name another mirror with --url") from None
    dest = directory / wf.name
    os.replace(tmp, dest)
    _record_checksum(directory, wf.name, sha256_file(dest), dest.stat().st_size, source, url)
    return dest


def file_status(source: WeightSource, directory: str | os.PathLike | None = None,
                *, verify: bool = False) -> list[dict]:
    """Per file of ``source``: name, presets using it, whether present, size, checksum state.

    ``checksum`` is ``"recorded"`` (not re-hashed), ``"ok"``/``"mismatch"`` with ``verify``,
    ``"none"`` (no record) or ``None`` when the file is absent.
    """
    directory = weights_directory(directory)
    records = read_checksums(directory)
    out = []
    for wf in source.files:
        path = directory / wf.name
        presets = sorted(p for p, n in source.model_files.items() if n == wf.name)
        row = {"name": wf.name, "presets": presets, "path": str(path), "present": path.exists(),
               "size": path.stat().st_size if path.exists() else None, "checksum": None}
        if path.exists():
            row["checksum"] = "recorded" if wf.name in records else "none"
            if verify and wf.name in records:
                try:
                    verify_checksum(path, source=source.name)
                    row["checksum"] = "ok"
                except ChecksumMismatchError:
                    row["checksum"] = "mismatch"
        out.append(row)
    return out


def download_weights(
    source: str | WeightSource,
    presets: Sequence[str] | None = None,
    *,
    directory: str | os.PathLike | None = None,
    url: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    progress: bool = False,
    offline: bool | None = None,
    retries: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Make sure the weights of ``presets`` from ``source`` are on disk, verified.

    Files already present whose recorded sha256 matches are kept (unless ``force``); a file
    present without a record is verified structurally and then recorded. For an archive source
    (``alphafold``) the files of every preset are extracted, since the archive is downloaded
    whole anyway.

    Args:
        source: ``"openfold"``, ``"alphafold"`` or a :class:`WeightSource`.
        presets: Presets whose files are wanted; default :data:`DEFAULT_PRESETS`.
        directory: Weights directory; default :func:`sparkfold.paths.weights_dir`.
        url: Replaces the source's URLs: a per-file URL template (``{file}`` or a base URL) or
            the archive URL.
        force: Download again even when the files are present.
        keep_archive: Keep the AF2 tarball after extraction (default: delete it).
        progress: Show progress bars.
        offline: No network (default ``SPARKFOLD_OFFLINE``); missing files then raise.
        retries, retry_wait, timeout: See :func:`download_file`.

    Returns:
        ``{preset: path}`` for every requested preset.
    """
    src = SOURCES.get(source) if isinstance(source, str) else source
    if src is None:
        raise SparkfoldError(f"unknown weights source {source!r}",
                             fix=f"use one of: {', '.join(SOURCES)}")
    presets = [_canonical(p) for p in (presets or DEFAULT_PRESETS)]
    for p in presets:
        if p not in src.model_files:
            raise SparkfoldError(f"source {src.name!r} has no weights for preset {p!r}",
                                 fix=f"use one of: {', '.join(src.model_files)}")
    directory = _ensure_dir(weights_directory(directory))
    records = read_checksums(directory)
    needed = []
    # An archive is fetched whole, so every file it holds for sparkfold is extracted at once
    # (otherwise a later model would download the whole archive again).
    wanted = src.files_for(src.model_files if src.archive is not None else presets)
    for wf in wanted:
        path = directory / wf.name
        if path.exists() and not force:
            if wf.name in records:
                verify_checksum(path, source=src.name)
                continue
            if wf.preset is not None:
                verify_structure(path, wf.preset, kind=wf.kind)  # placed by hand: check, then record
            _record_checksum(directory, wf.name, sha256_file(path), path.stat().st_size,
                             src.name, "local file")
            continue
        needed.append(wf)
    if needed and (is_offline() if offline is None else offline):
        names = ", ".join(wf.name for wf in needed)
        raise OfflineError(
            f"{src.name} weights missing from {directory} ({names}) and network access is off "
            f"(--offline or {OFFLINE_ENV}=1)",
            fix=(f"unset {OFFLINE_ENV} / drop --offline, or copy the files into {directory} "
                 f"(from {', '.join(src.urls)})"))
    if needed:
        staging = _ensure_dir(directory / _DOWNLOADS)
        fetch = {"retries": retries, "retry_wait": retry_wait, "timeout": timeout,
                 "progress": progress, "offline": offline}
        if src.archive is not None:
            _download_archive(src, needed, directory, staging, url, force, keep_archive, fetch)
        else:
            for wf in needed:
                _download_single(src, wf, directory, staging, url, fetch)
    return {p: directory / src.model_files[p] for p in presets}


def _failed(what: str, errors: list, src: WeightSource, directory: Path, manual: str):
    """One error for a file that no mirror delivered, with the weights-specific remedies."""
    problems = "; ".join(e.problem for e in errors)
    return WeightsDownloadError(
        f"cannot download {what}: {problems}",
        fix=(f"check the network connection and proxy (HTTPS_PROXY); or fetch {manual} another "
             f"way, put it in {directory} and run `sparkfold weights download {src.name}` again to "
             "verify it; or name a mirror with --url"))


def _download_single(src: WeightSource, wf: WeightFile, directory: Path, staging: Path,
                     url: str | None, fetch: dict) -> Path:
    errors = []
    urls = [_file_url(template, wf.source_name) for template in _urls(src, url)]
    for file_url in urls:
        tmp = staging / wf.name
        try:
            download_file(file_url, tmp, expected_size=wf.size, **fetch)
        except OfflineError:
            raise
        except WeightsDownloadError as exc:
            errors.append(exc)
            log.warning("%s", exc.problem)
            continue
        return _install(tmp, wf, directory, src.name, file_url)
    raise _failed(wf.name, errors, src, directory, urls[0])


def _download_archive(src: WeightSource, needed: list[WeightFile], directory: Path,
                      staging: Path, url: str | None, force: bool, keep_archive: bool,
                      fetch: dict) -> None:
    archive = staging / src.archive
    if force and archive.exists():
        archive.unlink()
    archive_url = None
    if not archive.exists():
        errors = []
        for candidate in _urls(src, url):
            try:
                download_file(candidate, archive, **fetch)
                archive_url = candidate
                break
            except OfflineError:
                raise
            except WeightsDownloadError as exc:
                errors.append(exc)
        if archive_url is None:
            manual = _urls(src, url)[0]
            raise WeightsDownloadError(
                f"cannot download {src.archive}: " + "; ".join(e.problem for e in errors),
                fix=(f"check the network connection and proxy (HTTPS_PROXY); or fetch {manual} "
                     f"another way, put it at {archive} and run `sparkfold weights download "
                     f"{src.name}` again; or name a mirror with --url"))
    archive_url = archive_url or (url or src.urls[0])
    members = {wf.source_name: f".verify-{wf.name}" for wf in needed}
    extracted = safe_extract(archive, staging, members)
    try:
        for wf in needed:
            _install(staging / f".verify-{wf.name}", wf, directory, src.name,
                     f"{archive_url}#{wf.source_name}")
    finally:
        for path in extracted:
            path.unlink(missing_ok=True)
    if not keep_archive:
        archive.unlink(missing_ok=True)


# --------------------------------------------------------------------------- resolution
def resolve_weights(
    source: str | os.PathLike,
    model: str,
    *,
    directory: str | os.PathLike | None = None,
    verify: bool = True,
    download: bool = False,
    progress: bool = False,
    offline: bool | None = None,
) -> Path:
    """The weights file ``predict`` loads for one model.

    Args:
        source: ``"openfold"`` or ``"alphafold"`` (the cached download), or a path: a weights
            file (returned as is) or a directory holding ``params_<preset>.npz`` (AF2 layout) or
            the OpenFold file of the preset.
        model: Preset name (``model_1`` … ``model_5``, with ``_ptm``; OpenFold aliases allowed).
        directory: Weights directory for named sources; default the cache's ``params``.
        verify: Compare the file with its recorded sha256 (named sources).
        download: Download missing files instead of raising.
        progress: Progress bars while downloading.
        offline: No network (default ``SPARKFOLD_OFFLINE``).

    Raises:
        WeightsNotFoundError: the file is not there (the message says how to get it).
        ChecksumMismatchError: the cached file changed since its download.
    """
    preset = _canonical(model)
    name = os.fspath(source)
    if name in SOURCES:
        src = SOURCES[name]
        if preset not in src.model_files:
            raise WeightsNotFoundError(f"source {name!r} has no weights for preset {preset!r}",
                                       fix=f"use one of: {', '.join(src.model_files)}")
        folder = weights_directory(directory)
        path = folder / src.model_files[preset]
        if not path.exists():
            if download:
                return download_weights(src, [preset], directory=folder, progress=progress,
                                        offline=offline)[preset]
            raise WeightsNotFoundError(
                f"{src.name} weights for {preset} ({path.name}) are not in {folder}",
                fix=f"run `sparkfold weights download {src.name}` (or pass a weights file path)")
        if verify:
            verify_checksum(path, source=src.name)
        return path
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidates = [f"params_{preset}.npz"] + [
            s.model_files[preset] for s in SOURCES.values() if preset in s.model_files]
        for candidate in candidates:
            if (path / candidate).is_file():
                return path / candidate
        raise WeightsNotFoundError(
            f"no weights for {preset} in {path} (looked for {', '.join(dict.fromkeys(candidates))})",
            fix="pass the weights file itself, or a directory with AF2 params_*.npz files")
    raise WeightsNotFoundError(
        f"weights source {name!r} is neither 'openfold', 'alphafold' nor an existing path",
        fix="use --weights openfold|alphafold or the path of a .npz/.pt file")
