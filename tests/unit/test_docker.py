"""The Dockerfile and its scripts (no Docker engine here: lint and check their content)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_dockerfile_has_the_required_pieces():
    text = (DOCKER / "Dockerfile").read_text()
    assert "TARGETARCH" in text  # one file for arm64 (Spark) and x86_64
    assert re.search(r"FROM .*cuda", text, re.IGNORECASE)
    for package in ("hmmer", "hhsuite", "kalign"):
        assert package in text, f"{package} must come from the distribution's packages"
    assert "HEALTHCHECK" in text and "sparkfold doctor" in text
    assert "install.sh" in text
    # No build toolchain or conda in any instruction (comments may say so).
    instructions = "\n".join(
        line for line in text.lower().splitlines() if not line.lstrip().startswith("#")
    )
    for forbidden in ("conda", "nvcc", "ninja", "flash-attn", "flash_attn", "deepspeed",
                      "build-essential", "gcc"):
        assert forbidden not in instructions, forbidden


def test_install_script_uses_wheels_only():
    text = (DOCKER / "install.sh").read_text()
    assert "--only-binary=:all:" in text
    sdist_only = re.search(r"SDIST_ONLY=(\S+)", text).group(1).split(",")
    assert set(sdist_only) <= {"pdbfixer", "ihm"}  # pure-Python sdists, nothing compiled


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (dev extra)")
def test_hadolint_is_clean():
    result = subprocess.run(["hadolint", str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (dev extra)")
def test_shellcheck_is_clean():
    scripts = sorted(str(p) for p in DOCKER.glob("*.sh"))
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
