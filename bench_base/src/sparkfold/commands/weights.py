"""``sparkfold weights {download,list}``: fetch and inspect the public AF2/OpenFold weights."""

import argparse
import json
import sys

__all__ = ["register", "run"]

_SOURCES = ("openfold", "alphafold")


def register(subparsers) -> None:
    """Add the ``weights`` parser with its ``download`` and ``list`` actions."""
    parser = subparsers.add_parser(
        "weights",
        help="download or list model weights (OpenFold .pt, AlphaFold2 .npz)",
        description=(
            "Download the public weights into the cache (SPARKFOLD_CACHE or the user cache "
            "directory, subfolder params/) and show what is there. Downloads resume after an "
            "interruption, are checked (size, parameter layout) before they are used, and their "
            "sha256 is recorded in params/checksums.json. SPARKFOLD_OFFLINE=1 forbids network "
            "access."
        ),
    )
    actions = parser.add_subparsers(dest="weights_action", metavar="<action>")
    dl = actions.add_parser(
        "download", help="download and verify weights",
        description=(
            "openfold: the OpenFold .pt files of the chosen presets (about 360 MiB each). "
            "alphafold: DeepMind's params tarball (about 5.3 GB, downloaded once), from which "
            "the chosen params_model_*.npz files are extracted."
        ),
    )
    dl.add_argument("source", choices=_SOURCES, help="which weights")
    which = dl.add_mutually_exclusive_group()
    which.add_argument("--models", nargs="+", metavar="PRESET",
                       help="presets to fetch (default: model_1_ptm … model_5_ptm)")
    which.add_argument("--all", action="store_true",
                       help="every monomer preset (model_1 … model_5, with and without _ptm)")
    dl.add_argument("--dir", help="weights directory (default: <cache>/params)")
    dl.add_argument("--url", help="mirror: archive URL (alphafold) or base URL / template with "
                                  "{file} (openfold)")
    dl.add_argument("--force", action="store_true", help="download again even if present")
    dl.add_argument("--keep-archive", action="store_true",
                    help="keep the alphafold tarball after extraction")
    dl.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars")
    dl.add_argument("--offline", action="store_true",
                    help="never use the network (like SPARKFOLD_OFFLINE=1)")
    dl.set_defaults(func=run)

    ls = actions.add_parser("list", help="show the sources, files and model assignment")
    ls.add_argument("--dir", help="weights directory (default: <cache>/params)")
    ls.add_argument("--verify", action="store_true",
                    help="re-hash present files and compare with the recorded sha256")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run)
    parser.set_defaults(func=_usage(parser))


def _usage(parser: argparse.ArgumentParser):
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _size(num: int | None) -> str:
    if num is None:
        return "-"
    return f"{num / 2**20:.1f} MiB" if num >= 2**20 else f"{num} B"


def run(args: argparse.Namespace) -> int:
    """Run ``weights download`` or ``weights list``."""
    from sparkfold.weights import download as dl

    if args.weights_action == "download":
        presets = dl.ALL_PRESETS if args.all else args.models
        paths = dl.download_weights(
            args.source, presets, directory=args.dir, url=args.url, force=args.force,
            keep_archive=args.keep_archive, progress=args.progress and sys.stderr.isatty(),
            offline=True if args.offline else None)
        for preset, path in paths.items():
            print(f"{preset}\t{path}")
        return 0

    directory = dl.weights_directory(args.dir)
    report = []
    for source in dl.SOURCES.values():
        report.append({
            "source": source.name, "description": source.description,
            "license": source.license, "urls": list(source.urls),
            "files": dl.file_status(source, directory, verify=args.verify),
        })
    if args.json:
        print(json.dumps({"directory": str(directory), "offline": dl.is_offline(),
                          "sources": report}, indent=2))
        return 0
    bad = False
    print(f"weights directory: {directory}")
    for entry in report:
        print(f"\n{entry['source']}: {entry['description']} ({entry['license']})")
        print(f"  from: {', '.join(entry['urls'])}")
        for row in entry["files"]:
            state = "present" if row["present"] else "missing"
            if row["checksum"] == "mismatch":
                state, bad = "CHECKSUM MISMATCH", True
            elif row["checksum"] in ("ok", "recorded"):
                state += f", sha256 {row['checksum']}"
            presets = ", ".join(row["presets"]) or "-"
            print(f"  {row['name']:<30} {state:<26} {_size(row['size']):>12}  {presets}")
        missing = [r["name"] for r in entry["files"] if not r["present"]]
        if missing:
            print(f"  get them with: sparkfold weights download {entry['source']} [--all]")
    return 1 if bad else 0
