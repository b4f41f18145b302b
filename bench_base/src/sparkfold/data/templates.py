"""Template features from search hits and an mmCIF folder (AF2/OpenFold ``HhsearchHitFeaturizer``).

Hits come from every ``*.hhr`` file of the alignment folder plus ``hmm_output.sto`` (sorted
file-name order, concatenated). They are prefiltered, sorted by ``sum_probs`` (descending) and
featurised in that order until ``max_templates`` succeed:

* prefilter: align ratio > 0.1 of the query, not a >95 %-length exact subsequence of the query
  (a duplicate), at least 10 residues, and (with a release-dates file) released before the cutoff;
* the hit's PDB id may be remapped through an obsolete-PDB file (``OBSLTE`` lines);
* the mmCIF ``<mmcif_dir>/<pdb_id>.cif`` is parsed; templates released after
  ``max_template_date`` are skipped;
* the hit sequence is located in the chain (exact chain + subsequence, any chain, then a fuzzy
  match with X as wildcard); failing that it is realigned to the chain's SEQRES with kalign
  (>= 90 % identity required), as AF2 does when PDB70 holds a different sequence version;
* coordinates are the chain's atom37 positions, zero-centred on the mean of all its present
  atoms (OpenFold ``_zero_center_positions=True``), copied to the aligned query positions.
"""

import dataclasses
import datetime
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparkfold.data.parsers import (
    MmcifStructure,
    ParseError,
    TemplateHit,
    as_text,
    parse_a3m,
    parse_hhr,
    parse_hmmsearch_sto,
    read_mmcif,
)

__all__ = [
    "TEMPLATE_FEATURE_DTYPES",
    "KalignNotFoundError",
    "TemplateSearchResult",
    "empty_template_features",
    "kalign_align",
    "parse_obsolete_pdbs",
    "parse_release_dates",
    "query_to_hit_mapping",
    "read_template_hits",
    "template_features",
    "template_hit_files",
]

logger = logging.getLogger(__name__)

TEMPLATE_FEATURE_DTYPES = {
    "template_aatype": np.int64,
    "template_all_atom_mask": np.float32,
    "template_all_atom_positions": np.float32,
    "template_domain_names": object,
    "template_sequence": object,
    "template_sum_probs": np.float32,
}


class KalignNotFoundError(RuntimeError):
    """A template needs realignment but the kalign binary is not available."""


class _HitError(Exception):
    """A hit that yields no features; ``is_warning`` marks missing experimental data."""

    def __init__(self, message: str, *, is_warning: bool = False):
        super().__init__(message)
        self.is_warning = is_warning


@dataclasses.dataclass(frozen=True)
class TemplateSearchResult:
    """Template features plus the per-hit problems met on the way (as OpenFold reports them)."""

    features: dict[str, np.ndarray]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def empty_template_features(num_res: int) -> dict[str, np.ndarray]:
    """Zero-template features (OpenFold ``templates.empty_template_feats``).

    Note ``template_aatype`` is float32 here (int64 when templates are found) and the name
    and sequence arrays hold one empty bytes string, exactly as OpenFold has them.
    """
    return {
        "template_aatype": np.zeros((0, num_res, 22), np.float32),
        "template_all_atom_mask": np.zeros((0, num_res, 37), np.float32),
        "template_all_atom_positions": np.zeros((0, num_res, 37, 3), np.float32),
        "template_domain_names": np.array([b""], dtype=object),
        "template_sequence": np.array([b""], dtype=object),
        "template_sum_probs": np.zeros((0, 1), np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Inputs


def template_hit_files(alignment_dir: str | os.PathLike) -> list[Path]:
    """Hit files of an alignment folder: every ``*.hhr`` plus ``hmm_output.sto``, sorted."""
    folder = Path(alignment_dir)
    return [
        folder / name
        for name in sorted(os.listdir(folder))
        if (name.endswith(".hhr") or name == "hmm_output.sto") and (folder / name).is_file()
    ]


def read_template_hits(alignment_dir: str | os.PathLike, query_sequence: str) -> list[TemplateHit]:
    """All template hits of an alignment folder, concatenated in file order."""
    hits: list[TemplateHit] = []
    for path in template_hit_files(alignment_dir):
        try:
            text = as_text(path.read_bytes(), str(path))
        except OSError as e:
            raise ParseError(f"cannot read file: {e.strerror}", source=str(path)) from None
        if path.suffix == ".hhr":
            hits.extend(parse_hhr(text, source=str(path)))
        else:
            hits.extend(parse_hmmsearch_sto(text, query_sequence, source=str(path)))
    return hits


def parse_obsolete_pdbs(path: str | os.PathLike) -> dict[str, str]:
    """Obsolete PDB id -> replacement id, from the PDB's ``obsolete.dat`` (lower case ids).

    Lines look like ``OBSLTE    31-JUL-94 116L     216L``; entries without a replacement are
    skipped.
    """
    result = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("OBSLTE") and len(line) > 30:
                result[line[20:24].lower()] = line[29:33].lower()
    return result


def parse_release_dates(path: str | os.PathLike) -> dict[str, datetime.date]:
    """Release dates from a JSON cache ``{pdb_id: {"release_date": "YYYY-MM-DD", ...}}``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {
        pdb.upper(): _to_date(info["release_date"], f"{path}: {pdb}")
        for pdb, info in data.items()
        if isinstance(info, dict) and "release_date" in info
    }


def _to_date(value, what: str) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.datetime.strptime(str(value), "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{what}: date {value!r} must have the form YYYY-MM-DD") from None


# ---------------------------------------------------------------------------------------------
# Alignment helpers


def query_to_hit_mapping(hit: TemplateHit, query_sequence: str) -> dict[int, int]:
    """Query residue index -> index in the ungapped hit sequence (AF2
    ``_build_query_to_hit_index_mapping``): the hit's query segment is located in the full
    query and both index lists are shifted to start at 0."""
    if not hit.query:
        return {}
    segment = hit.query.replace("-", "")
    hit_sequence = hit.hit_sequence.replace("-", "")
    offset = query_sequence.find(segment)
    valid_hit = [x for x in hit.indices_hit if x > -1]
    valid_query = [x for x in hit.indices_query if x > -1]
    if not valid_hit or not valid_query:
        return {}
    min_hit, min_query = min(valid_hit), min(valid_query)
    mapping = {}
    for q, t in zip(hit.indices_query, hit.indices_hit):
        if q == -1 or t == -1:
            continue
        q, t = q - min_query, t - min_hit
        if t >= len(hit_sequence) or q + offset >= len(query_sequence):
            continue
        mapping[q + offset] = t
    return mapping


def kalign_align(sequences: Sequence[str], kalign_binary: str = "kalign") -> list[str]:
    """Align sequences with kalign (``kalign -i in.fasta -o out.fasta -format fasta``).

    Raises:
        KalignNotFoundError: the binary is not installed / not on PATH.
        RuntimeError: kalign failed or a sequence is shorter than 6 residues.
    """
    binary = shutil.which(kalign_binary)
    if binary is None:
        raise KalignNotFoundError(
            f"kalign ('{kalign_binary}') is needed to realign a template whose search sequence "
            "differs from its mmCIF but was not found. Install it (Debian/Ubuntu: "
            "`apt-get install kalign`; conda: `bioconda::kalign3`) or pass kalign_binary=PATH."
        )
    for s in sequences:
        if len(s) < 6:
            raise RuntimeError(f"kalign needs sequences of at least 6 residues, got {s!r}")
    with tempfile.TemporaryDirectory(prefix="sparkfold_kalign_") as tmp:
        src, dst = os.path.join(tmp, "input.fasta"), os.path.join(tmp, "output.fasta")
        with open(src, "w") as f:
            f.write("".join(f">sequence {i}\n{s}\n" for i, s in enumerate(sequences, 1)))
        proc = subprocess.run(
            [binary, "-i", src, "-o", dst, "-format", "fasta"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not os.path.exists(dst):
            raise RuntimeError(
                f"kalign failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
        with open(dst) as f:
            aligned = parse_a3m(f.read(), source="kalign output")
    by_name = dict(zip(aligned.descriptions, aligned.sequences))
    return [by_name[f"sequence {i}"] for i in range(1, len(sequences) + 1)]


def _realign(
    old_sequence: str,
    chain_id: str,
    structure: MmcifStructure,
    old_mapping: dict[int, int],
    kalign_binary: str,
) -> tuple[str, str, dict[int, int]]:
    """Realign the hit's sequence to the chain's SEQRES (AF2 ``_realign_pdb_template_to_query``)."""
    seqres = structure.chain_to_seqres
    if chain_id in seqres:
        new_sequence = seqres[chain_id]
    elif len(seqres) == 1:
        chain_id, new_sequence = next(iter(seqres.items()))
    else:
        raise _HitError(
            f"could not find chain {chain_id} in {structure.file_id} (not a protein chain?)"
        )
    try:
        old_aligned, new_aligned = kalign_align([old_sequence, new_sequence], kalign_binary)
    except (RuntimeError, OSError, ParseError, KeyError) as e:
        if isinstance(e, KalignNotFoundError):
            raise
        # A kalign failure makes the hit unusable, as in AF2.
        raise _HitError(
            f"could not align {old_sequence} to {structure.file_id}_{chain_id}: {e}"
        ) from None
    old_to_new, i_old, i_new, same = {}, -1, -1, 0
    for a, b in zip(old_aligned, new_aligned):
        i_old += a != "-"
        i_new += b != "-"
        if a != "-" and b != "-":
            old_to_new[i_old] = i_new
            same += a == b
    if same / min(len(old_sequence), len(new_sequence)) < 0.9:
        raise _HitError(
            f"the search sequence {old_sequence} is < 90 % identical to {structure.file_id}_{chain_id} "
            f"{new_sequence}"
        )
    mapping = {q: old_to_new.get(t, -1) for q, t in old_mapping.items()}
    return new_sequence, chain_id, mapping


def _find_in_chain(
    sequence: str, chain_id: str, structure: MmcifStructure
) -> tuple[str, str, int] | None:
    """(chain SEQRES, chain id, offset) of the hit sequence, or None (AF2 ``_find_template_in_pdb``)."""
    seqres = structure.chain_to_seqres
    own = seqres.get(chain_id)
    if own and sequence in own:
        return own, chain_id, own.find(sequence)
    for cid, chain_seq in seqres.items():
        if chain_seq and sequence in chain_seq:
            return chain_seq, cid, chain_seq.find(sequence)
    pattern = re.compile("".join("." if aa == "X" else f"(?:{aa}|X)" for aa in sequence))
    for cid, chain_seq in seqres.items():
        match = pattern.search(chain_seq)
        if match:
            return chain_seq, cid, match.start()
    return None


def _hit_features(
    hit: TemplateHit,
    pdb_id: str,
    chain_id: str,
    structure: MmcifStructure,
    query_sequence: str,
    kalign_binary: str,
    zero_center: bool,
) -> tuple[dict, str | None]:
    """Features of one hit (AF2 ``_extract_template_features``) and an optional warning."""
    from sparkfold import constants as rc

    if not structure.chains:
        raise _HitError(f"no protein chains in {pdb_id}_{chain_id}", is_warning=True)
    if hit.query and hit.query.replace("-", "") not in query_sequence:
        raise _HitError(
            "the hit's query segment is not part of the query (hits of another sequence?)"
        )
    mapping = query_to_hit_mapping(hit, query_sequence)
    template_sequence = hit.hit_sequence.replace("-", "")
    warning = None
    found = _find_in_chain(template_sequence, chain_id, structure)
    if found is not None:
        _, chain_id, offset = found
    else:
        warning = (
            f"the sequence {template_sequence} was not found in {pdb_id}_{chain_id}; realigned to "
            "the mmCIF sequence"
        )
        template_sequence, chain_id, mapping = _realign(
            template_sequence, chain_id, structure, mapping, kalign_binary
        )
        offset = 0
    positions, mask = structure.atom37(chain_id, zero_center=zero_center)
    _check_ca_distances(positions, mask, pdb_id, chain_id, max_distance=150.0)

    num_res = len(query_sequence)
    out_positions = np.zeros((num_res, 37, 3), np.float32)
    out_mask = np.zeros((num_res, 37), np.float32)
    out_sequence = ["-"] * num_res
    for q, t in mapping.items():
        index = t + offset
        if not 0 <= index < positions.shape[0] or not 0 <= t < len(template_sequence):
            raise _HitError(f"{pdb_id}_{chain_id}: aligned residue {index} lies outside the chain")
        out_positions[q] = positions[index]
        out_mask[q] = mask[index]
        out_sequence[q] = template_sequence[t]
    if out_mask.sum() < 5:  # alanine, the smallest residue, has 5 atoms
        raise _HitError(f"template atom mask is all zeros: {pdb_id}_{chain_id}", is_warning=True)
    sequence = "".join(out_sequence)
    ids = np.array([rc.HHBLITS_AA_TO_ID[c] for c in sequence], dtype=np.int64)
    aatype = np.zeros((num_res, 22), np.int64)
    aatype[np.arange(num_res), ids] = 1
    features = {
        "template_all_atom_positions": out_positions,
        "template_all_atom_mask": out_mask,
        "template_sequence": sequence.encode(),
        "template_aatype": aatype,
        "template_domain_names": f"{pdb_id.lower()}_{chain_id}".encode(),
        "template_sum_probs": [hit.sum_probs if hit.sum_probs is not None else 0.0],
    }
    return features, warning


def _check_ca_distances(positions, mask, pdb_id, chain_id, max_distance):
    ca = 1  # atom_order["CA"]
    present = np.flatnonzero(mask[:, ca] > 0)
    consecutive = present[:-1][np.diff(present) == 1]
    if consecutive.size:
        dist = np.linalg.norm(positions[consecutive + 1, ca] - positions[consecutive, ca], axis=-1)
        if (dist > max_distance).any():
            raise _HitError(
                f"CA-CA distance > {max_distance} Å in {pdb_id}_{chain_id}", is_warning=True
            )


# ---------------------------------------------------------------------------------------------
# Featurizer


def _hit_id(hit: TemplateHit) -> tuple[str, str]:
    match = re.match(r"[a-zA-Z\d]{4}_[a-zA-Z0-9.]+", hit.name)
    if not match:
        raise _HitError(f"hit name {hit.name!r} does not start with PDBID_chain")
    pdb_id, chain_id = match.group(0).split("_")
    return pdb_id.lower(), chain_id


def _prefilter_reason(
    hit: TemplateHit, pdb_id: str, query_sequence: str, release_dates, cutoff
) -> str | None:
    """Why a hit fails AF2's prefilter (``_assess_hhsearch_hit``), or None."""
    template_sequence = hit.hit_sequence.replace("-", "")
    align_ratio = hit.aligned_cols / len(query_sequence)
    length_ratio = len(template_sequence) / len(query_sequence)
    date = release_dates.get(pdb_id.upper())
    if date is not None and date > cutoff:
        return f"released {date} > max template date {cutoff}"
    if align_ratio <= 0.1:
        return f"align ratio {align_ratio:.3f} <= 0.1"
    if template_sequence in query_sequence and length_ratio > 0.95:
        return f"exact subsequence of the query (length ratio {length_ratio:.3f})"
    if len(template_sequence) < 10:
        return f"too short ({len(template_sequence)} residues)"
    return None


def _find_mmcif(mmcif_dir: Path, pdb_id: str) -> Path | None:
    for name in (
        f"{pdb_id}.cif",
        f"{pdb_id}.cif.gz",
        f"{pdb_id.upper()}.cif",
        f"{pdb_id.upper()}.cif.gz",
    ):
        if (mmcif_dir / name).is_file():
            return mmcif_dir / name
    return None


def template_features(
    query_sequence: str,
    hits: Sequence[TemplateHit],
    *,
    mmcif_dir: str | os.PathLike,
    max_template_date: str | datetime.date | None = None,
    max_templates: int = 4,
    obsolete_pdbs_path: str | os.PathLike | None = None,
    release_dates_path: str | os.PathLike | None = None,
    kalign_binary: str = "kalign",
    zero_center_positions: bool = True,
) -> TemplateSearchResult:
    """Featurise up to ``max_templates`` hits (OpenFold ``HhsearchHitFeaturizer.get_templates``).

    Args:
        query_sequence: the query (upper case).
        hits: template hits (e.g. :func:`read_template_hits`).
        mmcif_dir: folder of ``<pdb_id>.cif`` (or ``.cif.gz``) files.
        max_template_date: ``YYYY-MM-DD`` cutoff on the mmCIF release date (None: today).
        max_templates: the number of templates to return at most.
        obsolete_pdbs_path: optional PDB ``obsolete.dat`` to remap obsolete hit ids.
        release_dates_path: optional JSON release-date cache used by the prefilter.
        kalign_binary: kalign name or path, used only when a hit needs realignment.
        zero_center_positions: centre each template chain on its atoms' mean (OpenFold default).

    Returns:
        TemplateSearchResult; ``features`` follows ``shared/spec/features.md`` §1 (T = number
        found; :func:`empty_template_features` when none).

    Raises:
        FileNotFoundError: ``mmcif_dir`` is not a folder.
        KalignNotFoundError: a hit needs realignment and kalign is missing.
    """
    mmcif_dir = Path(mmcif_dir)
    if not mmcif_dir.is_dir():
        raise FileNotFoundError(f"template mmCIF folder {mmcif_dir} does not exist")
    if max_templates < 0:
        raise ValueError(f"max_templates must be >= 0, got {max_templates}")
    cutoff = _to_date(max_template_date or datetime.date.today(), "max_template_date")
    obsolete = parse_obsolete_pdbs(obsolete_pdbs_path) if obsolete_pdbs_path else {}
    release_dates = parse_release_dates(release_dates_path) if release_dates_path else {}
    num_res = len(query_sequence)
    errors: list[str] = []
    warnings: list[str] = []

    candidates = []
    for hit in hits:
        try:
            pdb_id, chain_id = _hit_id(hit)
        except _HitError as e:
            errors.append(str(e))
            continue
        if pdb_id.upper() not in release_dates and pdb_id in obsolete:
            pdb_id = obsolete[pdb_id]
        reason = _prefilter_reason(hit, pdb_id, query_sequence, release_dates, cutoff)
        if reason is not None:
            logger.debug("hit %s_%s did not pass the prefilter: %s", pdb_id, chain_id, reason)
            continue
        candidates.append((hit, pdb_id, chain_id))
    # DEVIATION: hits without sum_probs (hmmsearch) sort after scored hits, in file order;
    # OpenFold's sort would fail comparing None.
    candidates.sort(key=lambda c: -c[0].sum_probs if c[0].sum_probs is not None else math.inf)

    collected: dict[str, list] = {name: [] for name in TEMPLATE_FEATURE_DTYPES}
    structures: dict[str, MmcifStructure | None] = {}
    found = 0
    for hit, pdb_id, chain_id in candidates:
        if found >= max_templates:
            break
        label = f"{pdb_id}_{chain_id} (sum_probs: {hit.sum_probs}, rank: {hit.index})"
        if pdb_id not in structures:
            path = _find_mmcif(mmcif_dir, pdb_id)
            if path is None:
                # DEVIATION: OpenFold raises FileNotFoundError; we skip the hit with a warning.
                warnings.append(f"{label}: no mmCIF {pdb_id}.cif in {mmcif_dir}; hit skipped")
                structures[pdb_id] = None
            else:
                try:
                    structures[pdb_id] = read_mmcif(path, file_id=pdb_id)
                except ParseError as e:
                    warnings.append(f"{label}: mmCIF parsing error: {e}")
                    structures[pdb_id] = None
        structure = structures[pdb_id]
        if structure is None:
            continue
        if structure.release_date is not None:
            released = _to_date(structure.release_date, f"{pdb_id} release date")
            if released > cutoff:
                logger.info(
                    "template %s released %s > max template date %s", pdb_id, released, cutoff
                )
                continue
        try:
            features, warning = _hit_features(
                hit,
                pdb_id,
                chain_id,
                structure,
                query_sequence,
                kalign_binary,
                zero_center_positions,
            )
        except _HitError as e:
            (warnings if e.is_warning else errors).append(f"{label}: {e}")
            continue
        if warning:
            warnings.append(f"{label}: {warning}")
        found += 1
        for name, values in collected.items():
            values.append(features[name])

    if found == 0:
        return TemplateSearchResult(
            empty_template_features(num_res), tuple(errors), tuple(warnings)
        )
    features = {
        name: np.stack([np.asarray(v) for v in values]).astype(TEMPLATE_FEATURE_DTYPES[name])
        for name, values in collected.items()
    }
    return TemplateSearchResult(features, tuple(errors), tuple(warnings))
