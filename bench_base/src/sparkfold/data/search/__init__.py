"""Sequence and template search: local databases, an opt-in MMseqs2 server, or none.

* :func:`run_search` — compute the alignments of ``{tag: sequence}`` into
  ``<out_dir>/<tag>/`` in OpenFold's precomputed-alignment layout; finished steps are cached.
* Tools, usable on their own: :func:`jackhmmer` (pyhmmer, in-process), :func:`hhblits`,
  :func:`hhsearch` (HH-suite binaries), :func:`template_search_a3m`, and
  :class:`MsaServerClient` (ColabFold MMseqs2 protocol).

Databases come from :mod:`sparkfold.paths` (``SPARKFOLD_DB_<NAME>`` or ``sparkfold.toml``).
Importing this package is cheap: pyhmmer is imported when a search runs.
"""

from sparkfold.data.search._util import (
    DatabaseMissingError,
    SearchError,
    ToolNotFoundError,
    atomic_write,
)
from sparkfold.data.search.hhsuite import hhblits, hhsearch, template_search_a3m
from sparkfold.data.search.jackhmmer import (
    JACKHMMER_OPTIONS,
    JackhmmerOptions,
    jackhmmer,
    truncate_stockholm,
)
from sparkfold.data.search.msa_server import (
    DEFAULT_SERVER_URL,
    MalformedArchiveError,
    MsaServerClient,
    MsaServerError,
    RateLimitError,
    UnsafeArchiveError,
)
from sparkfold.data.search.pipeline import (
    SEARCH_MODES,
    SearchProgress,
    TargetResult,
    run_search,
)

__all__ = [
    "DEFAULT_SERVER_URL",
    "JACKHMMER_OPTIONS",
    "SEARCH_MODES",
    "DatabaseMissingError",
    "JackhmmerOptions",
    "MalformedArchiveError",
    "MsaServerClient",
    "MsaServerError",
    "RateLimitError",
    "SearchError",
    "SearchProgress",
    "TargetResult",
    "ToolNotFoundError",
    "UnsafeArchiveError",
    "atomic_write",
    "hhblits",
    "hhsearch",
    "jackhmmer",
    "run_search",
    "template_search_a3m",
    "truncate_stockholm",
]
