#!/bin/sh
# Run the Dockerfile's install steps on this machine, in a fresh virtual environment, without
# Docker: builds the sparkfold wheel, installs it with docker/install.sh (wheels only), then runs
# `sparkfold doctor`. Downloads torch and the CUDA wheels (several GB); not part of the test suite.
#
# Usage: docker/check_install.sh [VENV_DIR]      (default: a new temporary directory)
# Honours SPARKFOLD_EXTRAS, OPENMM_CUDA_PACKAGE and TORCH_INDEX_URL like install.sh.
# HMMER, HH-suite and kalign come from apt in the image; here they are only reported by doctor.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
venv=${1:-$(mktemp -d "${TMPDIR:-/tmp}/sparkfold-install.XXXXXX")}
python=${PYTHON:-python3}

echo "== fresh virtual environment in $venv"
"$python" -m venv "$venv"
wheels=$(mktemp -d "${TMPDIR:-/tmp}/sparkfold-wheels.XXXXXX")
trap 'rm -rf "$wheels"' EXIT

echo "== building the sparkfold wheel (pure Python)"
"$venv/bin/pip" wheel --no-cache-dir --no-deps --wheel-dir "$wheels" "$repo"

echo "== installing from wheels only"
PATH="$venv/bin:$PATH" "$here/install.sh" "$wheels"

echo "== sparkfold doctor"
status=0
"$venv/bin/sparkfold" doctor || status=$?
echo "== done: doctor exit status $status (venv kept in $venv)"
exit "$status"
