#!/bin/sh
# Install sparkfold and its extras from wheels only: nothing is compiled, no conda.
# Used by the Dockerfile and by check_install.sh, so the two cannot drift apart.
#
# Usage: install.sh WHEEL_DIR
#   WHEEL_DIR holds the sparkfold wheel (built with `pip wheel --no-deps .`).
#   Uses the `pip` first on PATH (a virtual environment's).
# Environment:
#   SPARKFOLD_EXTRAS      extras to install (default relax,msa,gpu,kernels,report)
#   OPENMM_CUDA_PACKAGE   OpenMM's CUDA platform wheel (default openmm-cuda-13; "" for none)
#   TORCH_INDEX_URL       if set, torch comes from this index first
#                         (e.g. https://download.pytorch.org/whl/cu130); default: PyPI
set -eu

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: install.sh WHEEL_DIR (a directory holding the sparkfold wheel)" >&2
    exit 2
fi
wheels=$1
extras=${SPARKFOLD_EXTRAS-relax,msa,gpu,kernels,report}
openmm_cuda=${OPENMM_CUDA_PACKAGE-openmm-cuda-13}

# --only-binary=:all: makes pip fail instead of compiling anything from an sdist. Two
# dependencies publish no wheels at all: pdbfixer (pure Python) and ihm (needed by modelcif; its
# only C extension is optional and skipped without a compiler). They are built from their sdists,
# which compiles nothing.
SDIST_ONLY=pdbfixer,ihm
pip_install() {
    pip install --no-cache-dir --only-binary=:all: --no-binary="$SDIST_ONLY" "$@"
}

pip_install --upgrade pip
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip_install --index-url "$TORCH_INDEX_URL" torch
fi
spec=sparkfold
if [ -n "$extras" ]; then
    spec="sparkfold[$extras]"
fi
# $openmm_cuda is empty or one package name; left unquoted on purpose so "" adds nothing.
# shellcheck disable=SC2086
pip_install --find-links "$wheels" "$spec" $openmm_cuda
pip check
