"""Checks that this machine can run sparkfold, each with the fix when it cannot.

:func:`run_checks` returns a :class:`DoctorReport` (it prints nothing); ``sparkfold doctor``
prints :meth:`DoctorReport.format_text` or, with ``--json``, :meth:`DoctorReport.to_json`.
Every check has a status — ``ok`` (✓), ``warn`` (!: absent or degraded, optional) or ``fail``
(✗: broken, must be fixed to use that part) — a message and, unless ok, the fix.

The exit status is non-zero only when something every run NEEDS fails (``required`` checks):
torch importable, a working compute device (the CPU counts), and a writable cache directory.
A machine without a GPU passes, with warnings saying what is absent.

Longest sequence that fits (``gpu/max_length``), a conservative estimate for one model
inference with chunked attention (chunk size 4, as OpenFold's inference default)::

    usable = f · free                              f = 0.8 on unified memory (running out
                                                   freezes a DGX Spark), 0.9 on a discrete GPU
    need(N) = W + N²·(c_z·b·K_z + H·C·4) + N·(S·c_m + E·c_e)·b·K_m  ≤  usable

with W = 1 GiB (weights, CUDA context, allocator slack), c_z = 128 pair channels,
b = bytes per element (2 for bf16, 4 for fp32), K_z = 12 live pair-sized tensors (z, its
LayerNorm, the triangle-multiplication projections and gates, the update, the recycled pair,
the distogram input), H = 4 triangle-attention heads, C = 4 rows per attention chunk with fp32
logits, S = 512 MSA rows × c_m = 256, E = 5120 extra-MSA rows × c_e = 64, K_m = 4 live
MSA-sized tensors. N is the positive root of the quadratic.
"""

import importlib
import importlib.util
import json
import math
import os
import platform
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from sparkfold import __version__
from sparkfold.memory import DISCRETE_FRACTION, UNIFIED_FRACTION  # noqa: F401  (re-exported)

__all__ = [
    "Check",
    "DoctorReport",
    "GpuInfo",
    "build_settings",
    "check_arch_list",
    "check_driver",
    "classify_launch_error",
    "estimate_max_length",
    "min_driver_version",
    "run_checks",
    "torch_install_command",
]

Status = Literal["ok", "warn", "fail"]
SYMBOLS = {"ok": "✓", "warn": "!", "fail": "✗"}
ASCII_SYMBOLS = {"ok": "+", "warn": "!", "fail": "x"}
SECTIONS = {
    "system": "System", "gpu": "GPU", "torch": "PyTorch", "kernels": "Kernels",
    "build": "Build advice (only for building CUDA extensions from source; sparkfold builds none)",
    "pipeline": "Pipeline", "storage": "Storage",
}
GIB = 1 << 30

# Length-estimate constants (see the module docstring).
EST_OVERHEAD = 1 * GIB
EST_PAIR_COPIES = 12
EST_MSA_COPIES = 4
# nvcc memory per compile job for the build advice (~4–6 GB observed; take the high end).
GIB_PER_NVCC_JOB = 6
MIN_FREE_DISK = 10 * GIB
TORCH_INDEX = "https://download.pytorch.org/whl"
_NO_KERNEL_IMAGE = "no kernel image is available"


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        section: Key of :data:`SECTIONS`.
        name: Short name, unique within the section (``"driver"``, ``"matmul"``).
        status: ``"ok"``, ``"warn"`` or ``"fail"``.
        message: What was found.
        fix: What to do about it (``None`` when ok).
        required: Whether a ``fail`` makes the exit status non-zero.
        data: Machine-readable values (JSON-serialisable).
    """

    section: str
    name: str
    status: Status
    message: str
    fix: str | None = None
    required: bool = False
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as seen by torch (or by NVML when torch cannot see it)."""

    index: int
    name: str
    capability: tuple[int, int]
    total_memory: int
    free_memory: int | None
    integrated: bool


@dataclass(frozen=True)
class DoctorReport:
    """Every check, in order. ``ok`` is False when a required check failed."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not any(c.required and c.status == "fail" for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def get(self, section: str, name: str) -> Check | None:
        """The check ``section/name`` or ``None``."""
        return next((c for c in self.checks if (c.section, c.name) == (section, name)), None)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("ok", "warn", "fail")}

    def to_dict(self) -> dict:
        return {
            "sparkfold_version": __version__,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "checks": [asdict(c) for c in self.checks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def format_text(self, ascii_only: bool = False) -> str:
        """Plain text (no colour), one line per check, the fix indented below it."""
        symbols = ASCII_SYMBOLS if ascii_only else SYMBOLS
        lines = [f"sparkfold doctor (sparkfold {__version__})"]
        for key, title in SECTIONS.items():
            checks = [c for c in self.checks if c.section == key]
            if not checks:
                continue
            lines += ["", title]
            for c in checks:
                lines.append(f"  {symbols[c.status]} {c.name}: {c.message}")
                if c.fix:
                    lines.append(f"      fix: {c.fix}")
        n = self.counts()
        required = ", ".join(c.name for c in self.checks if c.required and c.status == "fail")
        lines += ["", f"{n['ok']} ok, {n['warn']} warnings, {n['fail']} failed."]
        lines.append(
            f"Required checks failed: {required}." if required else
            "Everything required is present (torch, a working compute device, a writable cache)."
        )
        text = "\n".join(lines) + "\n"
        if ascii_only:
            text = text.replace("≈", "~").replace("≥", ">=").replace("≤", "<=").replace("×", "x")
            text = text.replace("·", "*").replace("²", "^2").replace("→", "->").replace("–", "-")
            text = text.encode("ascii", "replace").decode("ascii")
        return text


# --------------------------------------------------------------------------- pure decisions


def _version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text or ""))


def min_driver_version(
    capability: tuple[int, int] | None, torch_cuda: str | None
) -> tuple[int, str]:
    """The oldest NVIDIA driver (major) that runs ``capability`` with torch's CUDA runtime.

    Returns:
        ``(major, reason)``; ``(0, "")`` when nothing applies.
    """
    rules = []
    cuda = _version_tuple(torch_cuda)
    if cuda and cuda[0] >= 13:
        rules.append((580, f"CUDA {torch_cuda} (torch's runtime) needs driver ≥ 580"))
    elif cuda and cuda[0] == 12:
        rules.append((525, f"CUDA {torch_cuda} (torch's runtime) needs driver ≥ 525"))
    if capability is not None and capability[0] == 12 and capability >= (12, 1):
        rules.append((580, f"sm_{capability[0]}{capability[1]} (GB10) needs driver ≥ 580"))
    elif capability is not None and capability[0] >= 10:
        rules.append((570, f"Blackwell (sm_{capability[0]}{capability[1]}) needs driver ≥ 570"))
    return max(rules, default=(0, ""))


def torch_install_command(driver_cuda: str | None = None) -> str:
    """The pip command for a CUDA build of torch that this driver can run."""
    cuda = _version_tuple(driver_cuda)
    tag = "cu130"
    if cuda and cuda[0] == 12:
        tag = "cu128" if cuda >= (12, 8) else "cu126"
    return f"pip install --upgrade --force-reinstall torch --index-url {TORCH_INDEX}/{tag}"


def check_driver(
    driver_version: str,
    capability: tuple[int, int] | None,
    torch_cuda: str | None,
    driver_cuda: str | None = None,
) -> Check:
    """Compare the driver with what the device and torch's CUDA runtime need.

    Args:
        driver_version: NVML's driver version, e.g. ``"580.95.05"``.
        capability: The device's compute capability, if known.
        torch_cuda: ``torch.version.cuda`` (``None`` for a CPU build).
        driver_cuda: Highest CUDA version the driver supports, e.g. ``"13.0"``.
    """
    major = (_version_tuple(driver_version) or (0,))[0]
    need, reason = min_driver_version(capability, torch_cuda)
    data = {"driver_version": driver_version, "driver_cuda": driver_cuda, "required_major": need}
    upgrade = (
        f"update the NVIDIA driver to {need} or newer (DGX OS: `sudo apt update && sudo apt "
        "full-upgrade`; elsewhere NVIDIA's current production driver), then reboot"
    )
    if need and major < need:
        return Check("gpu", "driver", "fail", f"driver {driver_version} is too old: {reason}",
                     fix=upgrade, data=data)
    t_cuda, d_cuda = _version_tuple(torch_cuda), _version_tuple(driver_cuda)
    if t_cuda and d_cuda and d_cuda[0] < t_cuda[0]:
        return Check(
            "gpu", "driver", "fail",
            f"driver {driver_version} supports CUDA up to {driver_cuda}, torch needs CUDA "
            f"{torch_cuda}",
            fix=f"{upgrade}; or install a torch build for this driver: "
                f"{torch_install_command(driver_cuda)}",
            data=data,
        )
    extra = f" (≥ {need} needed: {reason})" if need else ""
    cuda = f", supports CUDA {driver_cuda}" if driver_cuda else ""
    return Check("gpu", "driver", "ok", f"NVIDIA driver {driver_version}{cuda}{extra}", data=data)


_ARCH_RE = re.compile(r"(sm|compute)_(\d+)([a-z]?)")


def _parse_arch(arch: str) -> tuple[str, tuple[int, int], str] | None:
    m = _ARCH_RE.fullmatch(arch.strip())
    if not m or len(m.group(2)) < 2:
        return None
    digits = m.group(2)
    return m.group(1), (int(digits[:-1]), int(digits[-1])), m.group(3)


def check_arch_list(
    capability: tuple[int, int], arch_list: list[str], driver_cuda: str | None = None
) -> Check:
    """Whether torch's compiled architectures can run on a device of ``capability``.

    A cubin ``sm_XY`` runs on devices of the same major version with minor ≥ Y (so GB10,
    compute capability 12.1, runs ``sm_120`` code); an arch-specific ``sm_XYa`` cubin runs only
    on exactly X.Y; PTX ``compute_XY`` is JIT-compiled by the driver for any newer device.
    """
    cc = f"{capability[0]}.{capability[1]}"
    sm = f"sm_{capability[0]}{capability[1]}"
    data = {"capability": cc, "arch_list": list(arch_list)}
    parsed = [(a, p) for a in arch_list if (p := _parse_arch(a)) is not None]
    exact = [a for a, (kind, v, _) in parsed if kind == "sm" and v == capability]
    compatible = [a for a, (kind, v, suffix) in parsed
                  if kind == "sm" and v[0] == capability[0] and v[1] <= capability[1]
                  and suffix != "a"]
    ptx = [a for a, (kind, v, suffix) in parsed if kind == "compute" and v <= capability
           and suffix != "a"]
    built = " ".join(arch_list) or "nothing"
    if exact:
        return Check("torch", "arch", "ok", f"torch has {exact[0]} code for this device ({cc})",
                     data=data | {"match": "exact"})
    if compatible:
        best = max(compatible, key=lambda a: _parse_arch(a)[1])
        note = ""
        if capability == (12, 1):
            note = "; torch's 'maximum supported 12.0' warning on GB10 is spurious"
        return Check(
            "torch", "arch", "ok",
            f"device {cc} runs torch's {best} code (cubins are binary-compatible within "
            f"{capability[0]}.x){note}", data=data | {"match": "binary-compatible"},
        )
    if ptx:
        best = max(ptx, key=lambda a: _parse_arch(a)[1])
        return Check(
            "torch", "arch", "ok",
            f"torch has no {sm} cubin; the driver JIT-compiles its {best} PTX for {cc} "
            "(first launches are slower, then cached)", data=data | {"match": "ptx"},
        )
    return Check(
        "torch", "arch", "fail",
        f"torch was built for {built}, none of which runs on this device ({sm}); CUDA ops will "
        "fail with 'no kernel image is available'",
        fix=f"install a torch build that includes {sm} or a compatible arch: "
            f"{torch_install_command(driver_cuda)}",
        data=data | {"match": None},
    )


def classify_launch_error(
    name: str, exc: BaseException, *, section: str = "torch",
    capability: tuple[int, int] | None = None, driver_cuda: str | None = None,
) -> Check:
    """Turn an exception from a test launch into a failed check with the fix."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
    if _NO_KERNEL_IMAGE in str(exc):
        sm = f"sm_{capability[0]}{capability[1]}" if capability else "this GPU"
        return Check(
            section, name, "fail",
            f"CUDA error 'no kernel image is available': the installed torch has no code for {sm}",
            fix=f"{torch_install_command(driver_cuda)} (do not set TORCH_CUDA_ARCH_LIST or build "
                "from source: the official wheels include sm_120, which GB10 runs)",
            data={"error": text},
        )
    if "out of memory" in str(exc).lower():
        return Check(section, name, "fail", f"out of memory: {text}",
                     fix="free GPU memory (other processes: nvidia-smi) and rerun",
                     data={"error": text})
    return Check(section, name, "fail", f"launch failed: {text}",
                 fix="rerun with -v for the traceback; check the driver and torch lines above",
                 data={"error": text})


def estimate_max_length(budget_bytes: float, dtype_bytes: int = 2) -> int:
    """Longest sequence whose inference fits in ``budget_bytes`` (module docstring formula)."""
    c_z, c_m, c_e, num_msa, num_extra, heads, chunk = 128, 256, 64, 512, 5120, 4, 4
    a = c_z * dtype_bytes * EST_PAIR_COPIES + heads * chunk * 4
    b = (num_msa * c_m + num_extra * c_e) * dtype_bytes * EST_MSA_COPIES
    c = EST_OVERHEAD - budget_bytes
    if c >= 0:
        return 0
    return int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))


def build_settings(
    cpu_count: int, mem_available: int, *, unified: bool = False,
    capability: tuple[int, int] | None = None,
) -> dict:
    """Safe parallelism for building CUDA extensions from source.

    ``MAX_JOBS × NVCC_THREADS × 6 GiB ≤ f × available RAM`` (f = 0.8 on unified memory,
    else 1): ninja's default of one nvcc job per core is what hung the DGX Spark.
    """
    fraction = UNIFIED_FRACTION if unified else 1.0
    slots = max(1, int(fraction * mem_available / (GIB_PER_NVCC_JOB * GIB)))
    nvcc_threads = 2 if slots >= 8 else 1
    max_jobs = max(1, min(cpu_count, slots // nvcc_threads))
    arch = f"{capability[0]}.{capability[1]}" if capability else None
    return {"MAX_JOBS": max_jobs, "NVCC_THREADS": nvcc_threads, "TORCH_CUDA_ARCH_LIST": arch,
            "memory_fraction": fraction, "gib_per_job": GIB_PER_NVCC_JOB}


def run_checks(
    *, launch: bool = True, cache_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None, progress: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Run every check.

    Args:
        launch: Run real test launches (matmul, SDPA, a Triton kernel) on the compute device;
            ``False`` only inspects what is installed.
        cache_dir: Cache directory to check; default :func:`sparkfold.paths.cache_dir`.
        env: Environment to read instead of ``os.environ``.
        progress: Called with the name of each stage as it starts (for a progress line).

    Returns:
        The report; nothing is printed.
    """
    from sparkfold import doctor_probes as probes
    from sparkfold import paths

    env = os.environ if env is None else env
    note = progress or (lambda _stage: None)
    cache = Path(cache_dir) if cache_dir is not None else paths.cache_dir(env)
    libc = " ".join(platform.libc_ver()) if sys.platform.startswith("linux") else ""
    checks = [Check("system", "python", "ok",
                    f"Python {platform.python_version()} on {platform.system()} "
                    f"{platform.machine()} {libc}".strip())]
    note("gpu")
    nvml = probes.probe_nvml()
    try:
        torch = importlib.import_module("torch")
    except Exception as exc:
        torch = None
        checks.append(Check("torch", "torch", "fail", f"torch cannot be imported: {exc}",
                            required=True, fix="pip install torch (see `sparkfold doctor` again)"))
    gpus, torch_warnings = probes.torch_gpus(torch, nvml) if torch else ([], [])
    checks += probes.gpu_checks(torch, nvml, gpus, torch_warnings)
    torch_cuda = getattr(torch.version, "cuda", None) if torch else None
    ctx = {"capability": gpus[0].capability if gpus else None,
           "driver_cuda": nvml.get("driver_cuda")}
    if torch:
        note("torch")
        build = f"CUDA {torch_cuda}" if torch_cuda else "CPU-only build"
        checks.append(Check("torch", "torch", "ok", f"torch {torch.__version__} ({build})",
                            required=True, data={"version": torch.__version__, "cuda": torch_cuda}))
        for cap in sorted({g.capability for g in gpus}):
            checks.append(check_arch_list(cap, list(torch.cuda.get_arch_list()),
                                          nvml.get("driver_cuda")))
        device = "cuda:0" if gpus else "cpu"
        if launch:
            matmul = probes.launch("torch", "matmul", probes.matmul_probe, torch, device, ctx)
            checks.append(matmul)
            checks.append(probes.launch("torch", "sdpa", probes.sdpa_probe, torch, device, ctx))
            if device == "cpu":
                checks.append(Check("torch", "triton", "warn",
                                    "not tested: Triton kernels need a GPU",
                                    fix="nothing for CPU runs (the reference kernels are used)"))
            elif importlib.util.find_spec("triton") is None:
                checks.append(Check("torch", "triton", "warn",
                                    "Triton is not installed: the Triton kernel backends are "
                                    "unavailable", fix="pip install triton"))
            else:
                note("triton")
                checks.append(
                    probes.launch("torch", "triton", probes.triton_probe, torch, device, ctx)
                )
            compute = matmul
            if device != "cpu" and matmul.status != "ok":
                compute = probes.launch("torch", "matmul", probes.matmul_probe, torch, "cpu", ctx)
            if compute.status == "ok":
                where = "CPU only (slow)" if compute is not matmul or device == "cpu" else device
                checks.append(Check("torch", "compute device", "ok", where, required=True,
                                    data={"device": "cpu" if "CPU" in where else device}))
            else:
                checks.append(Check("torch", "compute device", "fail", compute.message,
                                    fix=compute.fix, required=True))
        else:
            checks.append(Check("torch", "compute device", "ok", f"{device} (launches skipped)",
                                required=True, data={"device": device}))
        note("kernels")
        checks += probes.kernel_checks(torch, bool(gpus))
    checks += probes.build_checks(gpus, env)
    note("pipeline")
    checks += probes.relax_checks(bool(gpus), torch_cuda)
    checks += probes.msa_checks()
    checks += probes.data_checks(cache, env)
    checks += probes.storage_checks(cache)
    return DoctorReport(tuple(checks))
