"""mmCIF parsing via gemmi: chains, residues, atom37 coordinates and mask, release date, resolution.

Structure semantics follow OpenFold's ``mmcif_parsing`` (commit ce0029e) so that the golden
``2q2k_A_mmcif`` features match exactly; errors are :class:`~sparkfold.data.parsers.ParseError`.
"""

import dataclasses
import os
import zlib

import numpy as np

from sparkfold.data.parsers import ParseError, as_text

__all__ = ["MmcifChain", "MmcifStructure", "parse_mmcif", "read_mmcif"]

# ---------------------------------------------------------------------------------------------
# mmCIF (gemmi's CIF reader; structure semantics of OpenFold mmcif_parsing / Biopython)


@dataclasses.dataclass(frozen=True)
class MmcifChain:
    """One protein chain of an mmCIF file, indexed by SEQRES (``_entity_poly_seq``) position.

    Attributes:
        chain_id: author chain id (``auth_asym_id``), the id template hits use.
        label_asym_id: the mmCIF-internal chain id.
        sequence: one-letter SEQRES; modified residues map to their parent, unknown to X.
        residue_names: the SEQRES monomer ids (e.g. "MSE").
        resolved: bool [L]; True where the residue has atom records in the first model.
        atom_positions: float32 [L, 37, 3] atom37 coordinates in Å (zero where absent).
        atom_mask: float32 [L, 37].
    """

    chain_id: str
    label_asym_id: str
    sequence: str
    residue_names: tuple[str, ...]
    resolved: np.ndarray
    atom_positions: np.ndarray
    atom_mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class MmcifStructure:
    """A parsed mmCIF entry: header facts and its protein chains (first model only)."""

    file_id: str
    release_date: str | None  # earliest _pdbx_audit_revision_history date, "YYYY-MM-DD"
    resolution: float  # Å; 0.0 when not stated
    structure_method: str
    chains: dict[str, MmcifChain]  # author chain id -> chain, in entity / struct_asym order

    @property
    def chain_to_seqres(self) -> dict[str, str]:
        """Author chain id -> SEQRES one-letter sequence."""
        return {cid: chain.sequence for cid, chain in self.chains.items()}

    def atom37(self, chain_id: str, *, zero_center: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(positions [L,37,3], mask [L,37]) of a chain, optionally zero-centred.

        Zero-centring subtracts the mean of all present atoms from the present atoms
        (OpenFold ``get_atom_coords(_zero_center_positions=True)``).
        """
        if chain_id not in self.chains:
            raise KeyError(
                f"{self.file_id} has no protein chain {chain_id!r}; chains: {sorted(self.chains)}"
            )
        chain = self.chains[chain_id]
        positions = chain.atom_positions.copy()
        if zero_center:
            present = chain.atom_mask.astype(bool)
            if present.any():
                positions[present] -= positions[present].mean(axis=0)
        return positions, chain.atom_mask.copy()


_UNSET = (".", "?")


def _cif_values(
    block, category: str, tags: list[str], rows: int | None = None
) -> dict[str, list[str]]:
    """Columns (first ``rows`` rows) of a CIF category as unquoted strings; optional tags '?x'."""
    import gemmi

    table = block.find(category, tags)
    out = {}
    for i, tag in enumerate(tags):
        name = tag.lstrip("?")
        if not table.has_column(i):
            out[name] = None
            continue
        values = list(table.column(i))[:rows]
        out[name] = [
            v if v in _UNSET or v[:1] not in ("'", '"', ";") else gemmi.cif.as_string(v)
            for v in values
        ]
    return out


def _int(value: str, what: str, source: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ParseError(f"{what} {value!r} is not an integer", source=source) from None


_ONE_LETTER_CACHE: dict[str, str] = {}


def _one_letter(resname: str) -> str:
    # DEVIATION: OpenFold uses Biopython's SCOP 3->1 table; we use the 20 standard names plus
    # gemmi's tabulated amino acids (modified residues -> parent letter), X otherwise.
    code = _ONE_LETTER_CACHE.get(resname)
    if code is None:
        from sparkfold import constants as rc

        code = rc.restype_3to1.get(resname)
        if code is None:
            import gemmi

            info = gemmi.find_tabulated_residue(resname)
            letter = (
                info.one_letter_code.upper() if info is not None and info.is_amino_acid() else ""
            )
            code = letter if len(letter) == 1 and letter.isalpha() else "X"
        _ONE_LETTER_CACHE[resname] = code
    return code


def parse_mmcif(text: str | bytes, *, file_id: str, source: str | None = None) -> MmcifStructure:
    """Parse an mmCIF entry: header, SEQRES of protein chains and atom37 coordinates.

    Follows OpenFold ``mmcif_parsing.parse`` + ``get_atom_coords``: protein chains are the
    ``_entity_poly_seq`` entities with a peptide-like component; residues are matched to atom
    records of the first model through ``label_seq_id``; of alternate locations the atom with
    the highest occupancy (first on ties) is used; MSE selenium goes into the SD slot.
    DEVIATION: a protein chain without atom records is left out instead of failing the file,
    and the peptide test ignores case.

    Raises:
        ParseError: not CIF, no ``_atom_site`` records, or malformed numbers.
    """
    source = source or f"{file_id}.cif"
    text = as_text(text, source)
    import gemmi

    from sparkfold import constants as rc

    try:
        doc = gemmi.cif.read_string(text)
        block = doc[0]
    except (RuntimeError, ValueError, IndexError) as e:  # gemmi's CIF syntax errors
        raise ParseError(f"not a valid mmCIF file: {e}", source=source) from None

    # Header (OpenFold _get_header: the last resolution item that parses wins).
    dates = _cif_values(block, "_pdbx_audit_revision_history.", ["revision_date"])["revision_date"]
    dates = [d for d in dates or () if d not in _UNSET]
    resolution = 0.0
    for category, tag in (
        ("_refine.", "ls_d_res_high"),
        ("_em_3d_reconstruction.", "resolution"),
        ("_reflns.", "d_resolution_high"),
    ):
        values = _cif_values(block, category, [tag])[tag]
        if values:
            try:
                resolution = float(values[0])
            except ValueError:
                pass
    methods = _cif_values(block, "_exptl.", ["method"])["method"] or []

    # Protein entities -> SEQRES monomers; entities -> label chains.
    poly = _cif_values(block, "_entity_poly_seq.", ["entity_id", "num", "mon_id"])
    polymers: dict[str, list[tuple[str, int]]] = {}
    for ent, num, mon in zip(poly["entity_id"] or (), poly["num"] or (), poly["mon_id"] or ()):
        polymers.setdefault(ent, []).append((mon, _int(num, "_entity_poly_seq.num", source)))
    comp = _cif_values(block, "_chem_comp.", ["id", "type"])
    comp_type = dict(zip(comp["id"] or (), comp["type"] or ()))
    asym = _cif_values(block, "_struct_asym.", ["id", "entity_id"])
    entity_chains: dict[str, list[str]] = {}
    for cid, ent in zip(asym["id"] or (), asym["entity_id"] or ()):
        entity_chains.setdefault(ent, []).append(cid)
    valid: dict[str, list[tuple[str, int]]] = {}
    for ent, monomers in polymers.items():
        if any("peptide" in comp_type.get(mon, "").lower() for mon, _ in monomers):
            for cid in entity_chains.get(ent, ()):
                valid[cid] = monomers
    seq_start = {cid: min(n for _, n in monomers) for cid, monomers in valid.items()}

    # Atom records of the first model, grouped into residues as Biopython does.
    tags = [
        "group_PDB",
        "label_atom_id",
        "?label_alt_id",
        "label_comp_id",
        "label_asym_id",
        "label_seq_id",
        "?auth_asym_id",
        "?auth_seq_id",
        "?pdbx_PDB_ins_code",
        "Cartn_x",
        "Cartn_y",
        "Cartn_z",
        "?occupancy",
    ]
    # Biopython's first model is the first run of rows with the same model number.
    models = _cif_values(block, "_atom_site.", ["pdbx_PDB_model_num"])["pdbx_PDB_model_num"]
    rows = next((i for i, m in enumerate(models) if m != models[0]), None) if models else None
    site = _cif_values(block, "_atom_site.", tags, rows)
    if site["Cartn_x"] is None or not site["Cartn_x"]:
        raise ParseError("no _atom_site records (coordinates) found", source=source)
    n = len(site["Cartn_x"])
    auth_asym = site["auth_asym_id"] or site["label_asym_id"]
    auth_seq = site["auth_seq_id"] or site["label_seq_id"]
    ins = site["pdbx_PDB_ins_code"] or ["?"] * n
    alt = site["label_alt_id"] or ["."] * n
    try:
        xyz = np.array(
            [list(map(float, site[k])) for k in ("Cartn_x", "Cartn_y", "Cartn_z")], dtype=np.float64
        ).T.astype(np.float32)
        occupancy = [float(v) if v not in _UNSET else 0.0 for v in (site["occupancy"] or ["1"] * n)]
    except ValueError as e:
        raise ParseError(f"bad number in _atom_site: {e}", source=source) from None

    residues: dict[tuple, dict[str, int]] = {}
    mapping: dict[str, dict[int, tuple]] = {}
    label_to_auth: dict[str, str] = {}
    for i in range(n):
        if auth_seq[i] in _UNSET:
            continue
        resname = site["label_comp_id"][i]
        if site["group_PDB"][i] == "HETATM":
            het = "W" if resname in ("HOH", "WAT") else "H_" + resname
        else:
            het = " "
        icode = ins[i] if ins[i] not in _UNSET else " "
        key = (
            auth_asym[i],
            het,
            _int(auth_seq[i], "_atom_site.auth_seq_id", source),
            icode,
            resname,
        )
        atoms = residues.setdefault(key, {})
        name = site["label_atom_id"][i]
        prev = atoms.get(name)
        if prev is None or (alt[i] not in _UNSET and occupancy[i] > occupancy[prev]):
            atoms[name] = i
        label = site["label_asym_id"][i]
        if label in valid:
            label_to_auth[label] = auth_asym[i]
            seq_idx = (
                _int(site["label_seq_id"][i], "_atom_site.label_seq_id", source) - seq_start[label]
            )
            mapping.setdefault(auth_asym[i], {})[seq_idx] = key

    atom_order = rc.atom_order
    sd = atom_order["SD"]
    chains: dict[str, MmcifChain] = {}
    for label, monomers in valid.items():
        if label not in label_to_auth:
            continue
        auth = label_to_auth[label]
        num_res = len(monomers)
        positions = np.zeros((num_res, rc.ATOM_TYPE_NUM, 3), dtype=np.float32)
        mask = np.zeros((num_res, rc.ATOM_TYPE_NUM), dtype=np.float32)
        resolved = np.zeros(num_res, dtype=bool)
        for idx, key in mapping.get(auth, {}).items():
            if not 0 <= idx < num_res:
                continue
            resolved[idx] = True
            for name, i in residues[key].items():
                slot = atom_order.get(name)
                if slot is None and name.upper() == "SE" and key[4] == "MSE":
                    slot = sd  # selenomethionine: Se in the sulphur slot
                if slot is not None:
                    positions[idx, slot] = xyz[i]
                    mask[idx, slot] = 1.0
        for arr in (positions, mask, resolved):
            arr.flags.writeable = False
        chains[auth] = MmcifChain(
            chain_id=auth,
            label_asym_id=label,
            sequence="".join(_one_letter(mon) for mon, _ in monomers),
            residue_names=tuple(mon for mon, _ in monomers),
            resolved=resolved,
            atom_positions=positions,
            atom_mask=mask,
        )
    return MmcifStructure(
        file_id=file_id,
        release_date=min(dates) if dates else None,
        resolution=resolution,
        structure_method=",".join(m.lower() for m in methods),
        chains=chains,
    )


def read_mmcif(path: str | os.PathLike, *, file_id: str | None = None) -> MmcifStructure:
    """Read an mmCIF file (``.cif`` or gzipped ``.cif.gz``); ``file_id`` defaults to the stem."""
    path = os.fspath(path)
    base = os.path.basename(path)
    file_id = file_id or base.split(".")[0]
    try:
        if path.endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ParseError(f"cannot read file: {e}", source=path) from None
    return parse_mmcif(data, file_id=file_id, source=path)
