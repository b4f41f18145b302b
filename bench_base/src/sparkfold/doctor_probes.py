"""Probes and per-section checks behind :func:`sparkfold.doctor.run_checks`.

Each ``*_checks`` function inspects one part of the machine and returns a list of
:class:`sparkfold.doctor.Check`; the decisions that need no machine (driver, arch list, length
estimate, build settings) live in :mod:`sparkfold.doctor` and are called from here. Heavy or
optional imports (torch, NVML, Triton, OpenMM) happen inside the functions. Nothing prints.
"""

import importlib
import importlib.util
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from sparkfold.doctor import (
    DISCRETE_FRACTION,
    EST_MSA_COPIES,
    EST_PAIR_COPIES,
    GIB,
    GIB_PER_NVCC_JOB,
    MIN_FREE_DISK,
    UNIFIED_FRACTION,
    Check,
    GpuInfo,
    _version_tuple,
    build_settings,
    check_driver,
    classify_launch_error,
    estimate_max_length,
    torch_install_command,
)
from sparkfold.memory import meminfo


def _gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def probe_nvml() -> dict:
    """Driver and devices from NVML; ``{"error": ...}`` when NVML is absent or fails."""
    try:
        import pynvml
    except ImportError:
        return {"error": "missing"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        def text(v):
            return v.decode() if isinstance(v, bytes) else str(v)

        out = {"driver_version": text(pynvml.nvmlSystemGetDriverVersion()), "devices": []}
        try:
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
            out["driver_cuda"] = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:
            out["driver_cuda"] = None
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            dev = {"index": i, "name": text(pynvml.nvmlDeviceGetName(h))}
            try:
                dev["capability"] = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(h))
            except Exception:
                dev["capability"] = None
            try:  # "Not Supported" on unified-memory GB10
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                dev["total"], dev["free"] = int(mem.total), int(mem.free)
            except Exception:
                dev["total"] = dev["free"] = None
            try:  # ATS (2) or HMM (1): the GPU addresses system memory
                dev["addressing_mode"] = int(pynvml.nvmlDeviceGetAddressingMode(h))
            except Exception:
                dev["addressing_mode"] = None
            out["devices"].append(dev)
        return out
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def torch_gpus(torch, nvml: dict) -> tuple[list[GpuInfo], list[str]]:
    """CUDA devices torch sees, and the warnings torch raised while probing them."""
    gpus = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if not torch.cuda.is_available():
            return [], [str(w.message) for w in caught]
        _, mem_available = meminfo()
        nvml_devs = {d["index"]: d for d in nvml.get("devices", [])}
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            nv = nvml_devs.get(i, {})
            integrated = (bool(getattr(p, "is_integrated", False))
                          or nv.get("addressing_mode") in (1, 2))
            try:
                free, total = torch.cuda.mem_get_info(i)
            except Exception:
                free, total = nv.get("free"), p.total_memory
            if integrated and free is not None and mem_available is not None:
                free = min(free, mem_available)  # conservative on shared memory
            gpus.append(GpuInfo(i, str(p.name), (int(p.major), int(p.minor)),
                                int(total or p.total_memory), free, integrated))
    return gpus, [str(w.message) for w in caught]


def matmul_probe(torch, device: str) -> str:
    dtypes = [torch.float32] + ([torch.bfloat16] if device != "cpu" else [])
    for dtype in dtypes:
        a = torch.randn(256, 256, device=device, dtype=dtype)
        b = torch.randn(256, 256, device=device, dtype=dtype)
        out = (a @ b).float().cpu()
        ref = a.double().cpu() @ b.double().cpu()
        tol = 1e-3 if dtype == torch.float32 else 0.5
        err = (out.double() - ref).abs().max().item()
        # TF32 may be on: allow its ~1e-3 relative error on sums of 256 products.
        if not err <= tol * max(1.0, ref.abs().max().item() / 10):
            raise RuntimeError(f"{dtype} matmul on {device} is wrong: max error {err:.3g}")
    kinds = "fp32 and bf16" if len(dtypes) > 1 else "fp32"
    return f"256×256 {kinds} matmul correct on {device}"


def sdpa_probe(torch, device: str) -> str:
    F = torch.nn.functional
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 128, 32, generator=gen).to(device, dtype) for _ in range(3))
    bias = torch.randn(1, 4, 128, 128, generator=gen).to(device, dtype)
    logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(32) + bias.float()
    ref = torch.softmax(logits, -1) @ v.float()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    err = (out.float() - ref).abs().max().item()
    if not err < (2e-2 if dtype == torch.bfloat16 else 1e-4):
        raise RuntimeError(
            f"scaled_dot_product_attention is wrong on {device}: max error {err:.3g}"
        )
    working = {"no bias": [], "bias": []}
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return f"scaled_dot_product_attention correct with an additive bias on {device}"
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        if not hasattr(SDPBackend, backend):
            continue
        for kind, kwargs in (("no bias", {}), ("bias", {"attn_mask": bias})):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with sdpa_kernel(getattr(SDPBackend, backend)):
                        F.scaled_dot_product_attention(q, k, v, **kwargs)
                working[kind].append(backend.split("_")[0].lower())
            except Exception:
                pass
    plain = ", ".join(working["no bias"]) or "none"
    biased = ", ".join(working["bias"]) or "none"
    return (f"scaled_dot_product_attention correct with an additive bias on {device}; "
            f"backends that run: {plain} (with a bias: {biased})")


_TRITON_PROBE_SOURCE = '''
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, x + y, mask=mask)
'''


def triton_probe(torch, device: str) -> str:
    import triton

    with tempfile.TemporaryDirectory(prefix="sparkfold-doctor-") as tmp:
        # Triton reads the kernel's source file, so the probe kernel lives in a real file.
        path = Path(tmp) / "sparkfold_triton_probe.py"
        path.write_text(_TRITON_PROBE_SOURCE)
        spec = importlib.util.spec_from_file_location("sparkfold_triton_probe", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        n = 1000
        x = torch.randn(n, device=device)
        y = torch.randn(n, device=device)
        out = torch.empty_like(x)
        start = time.perf_counter()
        module.add_kernel[(triton.cdiv(n, 256),)](x, y, out, n, BLOCK=256)
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    if not torch.equal(out, x + y):
        raise RuntimeError("the Triton test kernel gave a wrong result")
    return (f"triton {triton.__version__}: test kernel compiled and ran in {seconds:.2f} s "
            "(first call in this process; Triton's disk cache may have served the compile)")


def launch(section, name, probe, torch, device, ctx, required=False) -> Check:
    try:
        message = probe(torch, device)
    except Exception as exc:
        check = classify_launch_error(name, exc, section=section, **ctx)
        return Check(**(asdict(check) | {"required": required}))
    return Check(section, name, "ok", message, required=required)


# --------------------------------------------------------------------------- the report


def gpu_checks(torch, nvml: dict, gpus: list[GpuInfo], torch_warnings: list[str]) -> list[Check]:
    checks = []
    nvml_devices = nvml.get("devices", [])
    torch_cuda = getattr(torch.version, "cuda", None) if torch else None
    if nvml.get("error") == "missing":
        checks.append(Check("gpu", "nvml", "warn",
                            "nvidia-ml-py is not installed: driver version not checked",
                            fix="pip install 'sparkfold[gpu]' (nvidia-ml-py)"))
    elif "error" in nvml and gpus:
        checks.append(Check("gpu", "nvml", "warn",
                            f"torch sees a GPU but NVML fails ({nvml['error']}): driver not "
                            "checked",
                            fix="make libnvidia-ml.so visible (in Docker: run with --gpus all)",
                            data={"error": nvml["error"]}))
    if "driver_version" in nvml:
        caps = [g.capability for g in gpus] or [tuple(d["capability"]) for d in nvml_devices
                                                if d.get("capability")]
        cap = max(caps, default=None)
        checks.append(
            check_driver(nvml["driver_version"], cap, torch_cuda, nvml.get("driver_cuda"))
        )
    if not gpus and not nvml_devices:
        why = f" (NVML: {nvml['error']})" if nvml.get("error", "missing") != "missing" else ""
        checks.append(Check(
            "gpu", "devices", "warn",
            f"no NVIDIA GPU found{why}: sparkfold runs on the CPU (slow; fine for tests and "
            "short sequences)",
            fix="nothing for CPU runs; for GPU runs install the NVIDIA driver (≥ 580 for CUDA 13) "
                f"and a CUDA build of torch: {torch_install_command()}",
            data={"count": 0, "nvml_error": nvml.get("error")}))
        return checks
    if not gpus:
        names = ", ".join(d["name"] for d in nvml_devices)
        build = f"CUDA {torch_cuda}" if torch_cuda else "a CPU-only build"
        checks.append(Check(
            "gpu", "devices", "fail",
            f"NVML sees {names} but torch ({build}) cannot use it",
            fix=torch_install_command(nvml.get("driver_cuda")) if not torch_cuda else
            "check the driver line above and CUDA_VISIBLE_DEVICES",
            data={"nvml_devices": [d["name"] for d in nvml_devices]},
        ))
        return checks
    for g in gpus:
        kind = "unified memory (integrated GPU)" if g.integrated else "discrete memory"
        checks.append(Check(
            "gpu", f"cuda:{g.index}", "ok",
            f"{g.name}, compute capability {g.capability[0]}.{g.capability[1]}, "
            f"{_gib(g.total_memory)} total, {_gib(g.free_memory)} free, {kind}",
            data=asdict(g) | {"torch_warnings": torch_warnings},
        ))
        free = g.free_memory if g.free_memory is not None else g.total_memory
        fraction = UNIFIED_FRACTION if g.integrated else DISCRETE_FRACTION
        usable = fraction * free
        n16, n32 = estimate_max_length(usable, 2), estimate_max_length(usable, 4)
        checks.append(Check(
            "gpu", f"max_length cuda:{g.index}", "ok",
            f"longest sequence ≈ {n16} residues in bf16, {n32} in fp32 "
            f"(usable {_gib(usable)} = {fraction} × {_gib(free)} free; conservative estimate: "
            f"1 GiB + N²·(128·b·{EST_PAIR_COPIES} + 4·4·4) + N·(512·256 + 5120·64)·b·"
            f"{EST_MSA_COPIES} bytes ≤ usable, b = 2 or 4)",
            data={"bf16": n16, "fp32": n32, "usable_bytes": int(usable), "fraction": fraction},
        ))
    return checks


def kernel_checks(torch, on_gpu: bool) -> list[Check]:
    checks = []
    try:
        from sparkfold.model import kernels

        backends = kernels.available_backends()
        have = [n for n, ok in backends.items() if ok]
        missing = [n for n, ok in backends.items() if not ok]
        checks.append(Check(
            "kernels", "backends", "ok" if not missing else "warn",
            f"available: {', '.join(have) or 'none'}"
            + (f"; unavailable here: {', '.join(missing)}" if missing else ""),
            fix=None if not missing else "optional; `kernels='auto'` uses the best available one",
            data={"backends": backends},
        ))
    except Exception as exc:
        checks.append(Check("kernels", "backends", "fail", f"kernel registry failed: {exc}",
                            fix="reinstall sparkfold: pip install --force-reinstall sparkfold"))
    if importlib.util.find_spec("cuequivariance_torch") is None:
        checks.append(Check("kernels", "cuequivariance", "warn",
                            "cuEquivariance is not installed (optional, GPU only: faster triangle "
                            "operations)", fix="pip install 'sparkfold[kernels]'"
                            + ("" if on_gpu else " on a GPU machine")))
    else:
        try:
            from importlib.metadata import version

            ops = importlib.util.find_spec("cuequivariance_ops_torch") is not None
            checks.append(Check(
                "kernels", "cuequivariance", "ok" if ops else "warn",
                f"cuequivariance-torch {version('cuequivariance-torch')}"
                + ("" if ops else "; its CUDA ops package is missing"),
                fix=None if ops else "pip install 'sparkfold[kernels]'"))
        except Exception as exc:
            checks.append(Check("kernels", "cuequivariance", "warn", f"installed but broken: {exc}",
                                fix="pip install --force-reinstall 'sparkfold[kernels]'"))
    return checks


def build_checks(gpus: list[GpuInfo], env: Mapping[str, str]) -> list[Check]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    total, available = meminfo()
    unified = any(g.integrated for g in gpus)
    cap = max((g.capability for g in gpus), default=None)
    checks = [Check("build", "cpu", "ok",
                    f"{cores} CPU cores, {_gib(total)} RAM, {_gib(available)} available",
                    data={"cores": cores, "mem_total": total, "mem_available": available})]
    if available is None:
        return checks
    s = build_settings(cores or 1, available, unified=unified, capability=cap)
    arch = s["TORCH_CUDA_ARCH_LIST"]
    exports = f"export MAX_JOBS={s['MAX_JOBS']} NVCC_THREADS={s['NVCC_THREADS']}"
    exports += f' TORCH_CUDA_ARCH_LIST="{arch}"' if arch else ""
    why = (f"MAX_JOBS × NVCC_THREADS × {GIB_PER_NVCC_JOB} GiB ≤ {s['memory_fraction']} × "
           f"{_gib(available)} available; ninja's default of one job per core ({cores}) could "
           f"need {cores * GIB_PER_NVCC_JOB} GiB")
    if not arch:
        why += "; no GPU: set TORCH_CUDA_ARCH_LIST to the target's capability (9.0 H100, 12.1 GB10)"
    checks.append(Check("build", "settings", "ok", f"{exports}  ({why})", data=s))
    current = env.get("MAX_JOBS", "")
    if current.isdigit() and int(current) > s["MAX_JOBS"]:
        checks.append(Check("build", "MAX_JOBS", "warn",
                            f"MAX_JOBS={current} is set: a source build may exhaust memory",
                            fix=f"export MAX_JOBS={s['MAX_JOBS']}"))
    return checks


def relax_checks(on_gpu: bool, torch_cuda: str | None) -> list[Check]:
    if importlib.util.find_spec("openmm") is None:
        return [Check("pipeline", "openmm", "warn", "OpenMM is not installed: no Amber relaxation",
                      fix="pip install 'sparkfold[relax]'")]
    try:
        import openmm

        names = [openmm.Platform.getPlatform(i).getName()
                 for i in range(openmm.Platform.getNumPlatforms())]
        failures = list(openmm.Platform.getPluginLoadFailures())
    except Exception as exc:
        return [Check("pipeline", "openmm", "fail", f"OpenMM is installed but fails: {exc}",
                      fix="pip install --force-reinstall openmm")]
    data = {"version": openmm.__version__, "platforms": names, "plugin_failures": failures}
    msg = f"OpenMM {openmm.__version__}, platforms: {', '.join(names)}"
    checks = []
    if on_gpu and "CUDA" not in names:
        pkg = "openmm-cuda-13" if _version_tuple(torch_cuda)[:1] >= (13,) else "openmm-cuda-12"
        cuda_failures = [f for f in failures if "CUDA" in f]
        why = f" ({cuda_failures[0][:200]})" if cuda_failures else ""
        checks.append(Check("pipeline", "openmm", "warn",
                            f"{msg}: no CUDA platform, relaxation runs on the CPU{why}",
                            fix=f"pip install {pkg}", data=data))
    else:
        checks.append(Check("pipeline", "openmm", "ok", msg, data=data))
    if importlib.util.find_spec("pdbfixer") is None:
        checks.append(Check("pipeline", "pdbfixer", "warn", "PDBFixer is not installed",
                            fix="pip install 'sparkfold[relax]'"))
    return checks


def msa_checks() -> list[Check]:
    checks = []
    have_pyhmmer = importlib.util.find_spec("pyhmmer") is not None
    if have_pyhmmer:
        from importlib.metadata import version

        checks.append(Check("pipeline", "pyhmmer", "ok",
                            f"pyhmmer {version('pyhmmer')} (jackhmmer/hmmsearch in-process)"))
    else:
        checks.append(Check("pipeline", "pyhmmer", "warn", "pyhmmer is not installed",
                            fix="pip install 'sparkfold[msa]'"))
    tools = ["hhblits", "hhsearch", "kalign"] + ([] if have_pyhmmer else ["jackhmmer", "hmmsearch"])
    found = {t: shutil.which(t) for t in tools}
    missing = [t for t, p in found.items() if p is None]
    present = [f"{t} ({p})" for t, p in found.items() if p]
    if missing:
        checks.append(Check(
            "pipeline", "msa_tools", "warn",
            f"not on PATH: {', '.join(missing)}"
            + (f"; found: {', '.join(present)}" if present else ""),
            fix="sudo apt-get install hhsuite hmmer kalign (Debian/Ubuntu), or use the ColabFold "
                "MSA server instead of local databases", data={"found": found}))
    else:
        checks.append(Check("pipeline", "msa_tools", "ok", ", ".join(present),
                            data={"found": found}))
    return checks


def _db_exists(path: Path) -> bool:
    # HH-suite databases are prefixes: <prefix>_a3m.ffdata, <prefix>_hhm.ffindex, ...
    return path.exists() or any(path.parent.glob(path.name + "_*.ff*"))


def data_checks(cache: Path, env: Mapping[str, str]) -> list[Check]:
    from sparkfold import paths
    from sparkfold.errors import SparkfoldError

    checks = []
    weights = cache / "params"
    files = sorted(p.name for p in weights.glob("*") if p.suffix in (".npz", ".pt")) \
        if weights.is_dir() else []
    if files:
        shown = ", ".join(files[:6]) + (f", … ({len(files)} files)" if len(files) > 6 else "")
        checks.append(Check("pipeline", "weights", "ok", f"{weights}: {shown}",
                            data={"dir": str(weights), "files": files}))
    else:
        checks.append(Check("pipeline", "weights", "warn", f"no weights in {weights}",
                            fix="download them with `sparkfold weights` (see its --help), or put "
                                f"params_*.npz / *.pt files in {weights}",
                            data={"dir": str(weights), "files": []}))
    cfg = paths.config_file(env)
    try:
        settings = paths.database_settings(env=env)
    except SparkfoldError as exc:
        return checks + [Check("pipeline", "databases", "fail", exc.problem, fix=exc.fix)]
    ok = [n for n, s in settings.items() if _db_exists(s.path)]
    bad = [s for n, s in settings.items() if n not in ok]
    unset = [n for n in paths.DATABASE_NAMES if n not in settings]
    data = {"config_file": str(cfg), "configured": {n: str(s.path) for n, s in settings.items()},
            "missing_files": [s.name for s in bad], "not_configured": unset}
    if ok:
        checks.append(Check("pipeline", "databases", "ok", f"found: {', '.join(ok)}", data=data))
    for s in bad:
        checks.append(Check("pipeline", f"database {s.name}", "fail",
                            f"{s.path} does not exist (set by {s.origin})",
                            fix=f"correct the path in {s.origin}", data=data))
    if unset:
        checks.append(Check(
            "pipeline", "databases unset", "warn", f"not configured: {', '.join(unset)}",
            fix=f"set SPARKFOLD_DB_<NAME>=/path or add them under [databases] in {cfg}; "
                "without local databases use the ColabFold MSA server", data=data))
    return checks


def storage_checks(cache: Path) -> list[Check]:
    existing = cache
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    checks = []
    if cache.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=cache, prefix=".doctor-"):
                pass
            checks.append(Check("storage", "cache", "ok", f"{cache} is writable", required=True))
        except OSError as exc:
            checks.append(Check("storage", "cache", "fail",
                                f"cannot write to {cache}: {exc.strerror or exc}", required=True,
                                fix="fix its permissions or set SPARKFOLD_CACHE to a writable dir"))
    elif cache.exists() or not os.access(existing, os.W_OK | os.X_OK):
        checks.append(Check("storage", "cache", "fail",
                            f"{cache} cannot be created ({existing} is not a writable directory)",
                            required=True, fix="set SPARKFOLD_CACHE to a writable directory"))
    else:
        checks.append(Check("storage", "cache", "ok", f"{cache} (created on first use)",
                            required=True))
    free = shutil.disk_usage(existing).free
    status = "ok" if free >= MIN_FREE_DISK else "warn"
    checks.append(Check("storage", "disk", status, f"{_gib(free)} free at {existing}",
                        fix=None if status == "ok" else
                        "free space: all AF2 weights take 5.6 GB (set SPARKFOLD_CACHE elsewhere)",
                        data={"free_bytes": free, "path": str(existing)}))
    return checks
