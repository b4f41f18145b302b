"""``sparkfold msa INPUT --out DIR``: compute alignments only (CPU nodes, ahead of GPU work)."""

import argparse
import sys
from pathlib import Path

__all__ = ["register", "run"]

_FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")


def register(subparsers) -> None:
    """Add the ``msa`` parser."""
    parser = subparsers.add_parser(
        "msa",
        help="compute MSAs and template hits (no GPU needed)",
        description=(
            "Search the sequences of INPUT (a FASTA file, or a folder of .fasta/.fa files) and "
            "write the alignments to DIR/<tag>/ in OpenFold's precomputed-alignment layout, "
            "ready for `--use_precomputed_alignments DIR`. Tags are the FASTA names up to the "
            "first non-word character. Finished searches are reused on reruns. Local databases "
            "are configured with SPARKFOLD_DB_<NAME> variables or sparkfold.toml (see "
            "`sparkfold doctor`)."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="FASTA file or folder of FASTA files")
    parser.add_argument("--out", required=True, metavar="DIR", help="alignments folder")
    parser.add_argument(
        "--msa-mode", choices=("local", "server", "single"), default="local",
        help="local: jackhmmer/hhblits/hhsearch on local databases (default); server: the "
        "ColabFold MMseqs2 server (SENDS YOUR SEQUENCES to --server-url); single: no search, "
        "a one-row a3m per target",
    )
    parser.add_argument(
        "--databases", metavar="NAMES",
        help="local mode: comma-separated subset of uniref90,mgnify,bfd,small_bfd,pdb70 "
        "(default: uniref90,mgnify,bfd or small_bfd, plus pdb70 when configured)",
    )
    templates = parser.add_mutually_exclusive_group()
    templates.add_argument(
        "--templates", dest="templates", action="store_true", default=None,
        help="search templates (local: pdb70 required; server: fetch the server's templates "
        "and run hhsearch on them)",
    )
    templates.add_argument(
        "--no-templates", dest="templates", action="store_false",
        help="skip the template search",
    )
    parser.add_argument(
        "--server-url", default=None, metavar="URL",
        help="MMseqs2 server for --msa-mode server (default https://api.colabfold.com)",
    )
    parser.add_argument(
        "--no-env", dest="server_use_env", action="store_false",
        help="server mode: UniRef30 only, without the environmental databases",
    )
    parser.add_argument(
        "--email", default=None,
        help="server mode: contact address sent in the User-Agent, as the operators ask",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="recompute, ignoring finished searches"
    )
    parser.add_argument(
        "--cpus", type=int, default=4, help="threads for jackhmmer and hhblits (default 4)"
    )
    parser.add_argument("--hhblits-binary", default="hhblits", help="hhblits executable")
    parser.add_argument("--hhsearch-binary", default="hhsearch", help="hhsearch executable")
    parser.set_defaults(func=run)


def _fasta_files(path: Path) -> list[Path]:
    from sparkfold.errors import SparkfoldError

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _FASTA_SUFFIXES)
        if not files:
            raise SparkfoldError(
                f"folder {path} has no FASTA files", fix="name them *.fasta or *.fa"
            )
        return files
    if not path.is_file():
        raise SparkfoldError(f"input {path} does not exist", fix="give a FASTA file or folder")
    return [path]


def read_targets(path: str | Path) -> dict[str, str]:
    """``{tag: sequence}`` from a FASTA file or folder; every record is one target.

    Raises:
        SparkfoldError: unreadable/invalid FASTA, or two different sequences with one tag.
    """
    from sparkfold.data.parsers import ParseError, read_fasta
    from sparkfold.errors import SparkfoldError

    targets: dict[str, str] = {}
    origin: dict[str, str] = {}
    for file in _fasta_files(Path(path)):
        try:
            records = read_fasta(file)
        except ParseError as exc:
            raise SparkfoldError(str(exc), fix="correct the FASTA file") from exc
        for record in records:
            where = f"{file}:{record.line}"
            if record.tag in targets and targets[record.tag] != record.sequence:
                raise SparkfoldError(
                    f"two different sequences have the tag {record.tag!r} ({origin[record.tag]} "
                    f"and {where})",
                    fix="give each record a unique name before its first non-word character",
                )
            targets[record.tag] = record.sequence
            origin.setdefault(record.tag, where)
    return targets


def run(args: argparse.Namespace) -> int:
    """Run the search; print one progress line per step event to stderr."""
    from sparkfold.data.search import DEFAULT_SERVER_URL, run_search

    targets = read_targets(args.input)
    databases = None
    if args.databases:
        databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if args.msa_mode == "server":
        url = args.server_url or DEFAULT_SERVER_URL
        print(
            f"sparkfold msa: sending {len(targets)} sequence(s) to {url} (--msa-mode server)",
            file=sys.stderr,
        )

    def progress(event) -> None:
        pct = f" [{event.fraction:4.0%}]" if event.fraction is not None else ""
        print(f"{event.step}{pct}: {event.message}", file=sys.stderr, flush=True)

    results = run_search(
        targets,
        args.out,
        mode=args.msa_mode,
        databases=databases,
        templates=args.templates,
        cpus=args.cpus,
        overwrite=args.overwrite,
        hhblits_binary=args.hhblits_binary,
        hhsearch_binary=args.hhsearch_binary,
        server_url=args.server_url or DEFAULT_SERVER_URL,
        server_use_env=args.server_use_env,
        email=args.email,
        progress=progress,
    )
    for tag, result in results.items():
        reused = f" (reused: {', '.join(result.reused)})" if result.reused else ""
        print(f"{tag}: {result.directory} {' '.join(result.files) or '(no files)'}{reused}")
    return 0
