"""sparkfold.doctor with NVML and torch.cuda mocked: driver, arch list, launch errors, advice."""

import json
import math
import sys
import types

import pytest
import torch

from sparkfold import doctor, doctor_probes
from sparkfold.doctor import GIB

GB10_ARCHS = ["sm_80", "sm_90", "sm_100", "sm_120", "compute_120"]
NO_KERNEL_IMAGE = "CUDA error: no kernel image is available for execution on the device"


def _fake_nvml(driver="580.95.05", cuda_version=13000, devices=(("NVIDIA GB10", (12, 1)),),
               memory_supported=False, addressing_mode=2):
    """A stand-in for the pynvml module (nvidia-ml-py)."""
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def not_supported(*_):
        raise NVMLError("Not Supported")

    m.NVMLError = NVMLError
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: driver
    m.nvmlSystemGetCudaDriverVersion = lambda: cuda_version
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: devices[h][0]
    m.nvmlDeviceGetCudaComputeCapability = lambda h: devices[h][1]
    m.nvmlDeviceGetMemoryInfo = (
        (lambda h: types.SimpleNamespace(total=80 * GIB, free=79 * GIB))
        if memory_supported else not_supported
    )
    m.nvmlDeviceGetAddressingMode = lambda h: addressing_mode
    return m


@pytest.fixture
def isolated(tmp_path):
    """cache_dir and env for run_checks that touch nothing of the user's."""
    config = tmp_path / "sparkfold.toml"
    config.write_text("")
    return {"cache_dir": tmp_path / "cache", "env": {"SPARKFOLD_CONFIG": str(config)}}


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make torch.cuda report one device; returns a setter for its properties."""

    def install(name="NVIDIA GB10", capability=(12, 1), total=128 * GIB, free=100 * GIB,
                integrated=True, archs=GB10_ARCHS, cuda="13.0", nvml=None):
        props = types.SimpleNamespace(name=name, major=capability[0], minor=capability[1],
                                      total_memory=total)
        if integrated is not None:
            props.is_integrated = integrated
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free, total))
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
        monkeypatch.setattr(torch.version, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "pynvml", nvml or _fake_nvml())

    return install


# --------------------------------------------------------------------------- driver


def test_driver_575_on_gb10_fails_with_fix(fake_gpu, isolated):
    fake_gpu(nvml=_fake_nvml(driver="575.57.08", cuda_version=12090))
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("gpu", "driver")
    assert check.status == "fail"
    assert "575.57.08" in check.message and "580" in check.message
    assert "580 or newer" in check.fix and "reboot" in check.fix
    assert "✗ driver:" in report.format_text()
    # The GPU is not required (the CPU still works): exit status stays 0.
    assert report.exit_code == 0


def test_driver_580_on_gb10_passes(fake_gpu, isolated):
    fake_gpu()
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("gpu", "driver")
    assert check.status == "ok" and "580.95.05" in check.message and check.fix is None
    assert check.data["driver_cuda"] == "13.0"


@pytest.mark.parametrize(
    ("capability", "torch_cuda", "need"),
    [
        ((9, 0), "12.8", 525),
        ((12, 0), "12.8", 570),
        ((10, 0), None, 570),
        ((12, 1), "12.9", 580),
        ((8, 0), "13.0", 580),
        ((8, 6), "11.8", 0),
        (None, None, 0),
    ],
)
def test_min_driver_version(capability, torch_cuda, need):
    assert doctor.min_driver_version(capability, torch_cuda)[0] == need


def test_driver_cuda_older_than_torch_cuda_fails():
    check = doctor.check_driver("580.1", (9, 0), "14.0", "13.0")
    assert check.status == "fail" and "CUDA up to 13.0" in check.message
    assert "whl/cu130" in check.fix


# --------------------------------------------------------------------------- arch list


def test_gb10_runs_sm120_code_without_warning(fake_gpu, isolated):
    fake_gpu()
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("torch", "arch")
    assert check.status == "ok" and check.data["match"] == "binary-compatible"
    assert "sm_120" in check.message and "spurious" in check.message
    assert not [c for c in report.checks if c.section in ("gpu", "torch") and c.status != "ok"]


def test_arch_list_lacking_device_fails_with_fix(fake_gpu, isolated):
    fake_gpu(archs=["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"])
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("torch", "arch")
    assert check.status == "fail" and "sm_121" in check.message
    assert "pip install" in check.fix and "download.pytorch.org/whl/cu130" in check.fix


@pytest.mark.parametrize(
    ("capability", "archs", "match"),
    [
        ((12, 1), ["sm_121"], "exact"),
        ((9, 0), ["sm_80", "sm_90a"], "exact"),
        ((8, 6), ["sm_80"], "binary-compatible"),
        ((9, 0), ["sm_80", "compute_80"], "ptx"),
        ((12, 1), ["sm_90", "sm_100", "sm_100a"], None),   # other majors never run
        ((12, 1), ["sm_120a"], None),                      # arch-specific: exact only
        ((8, 0), ["sm_86", "compute_86"], None),           # newer code never runs on older
    ],
)
def test_arch_compatibility_rules(capability, archs, match):
    check = doctor.check_arch_list(capability, archs)
    assert check.data["match"] == match
    assert (check.status == "ok") == (match is not None)


def test_arch_fix_follows_driver_cuda():
    assert "whl/cu128" in doctor.check_arch_list((12, 0), ["sm_90"], "12.8").fix
    assert "whl/cu130" in doctor.check_arch_list((12, 0), ["sm_90"], "13.0").fix


# --------------------------------------------------------------------------- launches


def test_no_kernel_image_is_reported_with_fix(fake_gpu, isolated, monkeypatch):
    fake_gpu()
    real_matmul = doctor_probes.matmul_probe

    def matmul(torch_mod, device):
        if device.startswith("cuda"):
            raise RuntimeError(NO_KERNEL_IMAGE)
        return real_matmul(torch_mod, device)

    def sdpa(torch_mod, device):
        raise RuntimeError(NO_KERNEL_IMAGE)

    monkeypatch.setattr(doctor_probes, "matmul_probe", matmul)
    monkeypatch.setattr(doctor_probes, "sdpa_probe", sdpa)
    monkeypatch.setattr(doctor_probes, "triton_probe", sdpa)
    report = doctor.run_checks(launch=True, **isolated)
    for name in ("matmul", "sdpa"):
        check = report.get("torch", name)
        assert check.status == "fail", name
        assert "no kernel image" in check.message and "sm_121" in check.message
        assert "pip install --upgrade --force-reinstall torch --index-url" in check.fix
        assert "whl/cu130" in check.fix
    # The CPU still computes: the required check passes, on the CPU.
    device = report.get("torch", "compute device")
    assert device.status == "ok" and device.data["device"] == "cpu"
    assert report.exit_code == 0


def test_classify_launch_errors():
    check = doctor.classify_launch_error("matmul", RuntimeError(NO_KERNEL_IMAGE),
                                         capability=(12, 0), driver_cuda="12.8")
    assert check.status == "fail" and "sm_120" in check.message and "whl/cu128" in check.fix
    oom = doctor.classify_launch_error("sdpa", RuntimeError("CUDA out of memory. Tried 2 GiB"))
    assert "out of memory" in oom.message and "nvidia-smi" in oom.fix
    other = doctor.classify_launch_error("triton", ValueError("boom\nmore"))
    assert other.message == "launch failed: ValueError: boom" and other.fix


def test_cpu_machine_runs_real_launches(isolated, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py absent
    report = doctor.run_checks(launch=True, **isolated)
    assert report.ok and report.exit_code == 0
    assert report.get("torch", "matmul").status == "ok"
    assert report.get("torch", "sdpa").status == "ok"
    assert report.get("torch", "compute device").data["device"] == "cpu"
    assert report.get("gpu", "devices").status == "warn"
    nvml = report.get("gpu", "nvml")
    assert nvml.status == "warn" and "nvidia-ml-py" in nvml.fix
    assert all(c.fix for c in report.checks if c.status != "ok")


def test_nvml_sees_gpu_but_torch_is_cpu_build(isolated, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setitem(sys.modules, "pynvml",
                        _fake_nvml(devices=(("NVIDIA H100 80GB HBM3", (9, 0)),),
                                   memory_supported=True, addressing_mode=0))
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("gpu", "devices")
    assert check.status == "fail" and "H100" in check.message and "CPU-only" in check.message
    assert "whl/cu130" in check.fix


# --------------------------------------------------------------------------- memory


def test_unified_memory_from_nvml_addressing_mode(fake_gpu, isolated):
    fake_gpu(integrated=None)  # torch property absent: NVML's ATS addressing mode decides
    report = doctor.run_checks(launch=False, **isolated)
    assert report.get("gpu", "cuda:0").data["integrated"] is True
    assert report.get("gpu", "max_length cuda:0").data["fraction"] == doctor.UNIFIED_FRACTION


def test_discrete_gpu_length_estimate(fake_gpu, isolated):
    fake_gpu(name="NVIDIA H100 80GB HBM3", capability=(9, 0), total=80 * GIB, free=79 * GIB,
             integrated=False, archs=["sm_80", "sm_90"], cuda="13.0",
             nvml=_fake_nvml(devices=(("NVIDIA H100 80GB HBM3", (9, 0)),),
                             memory_supported=True, addressing_mode=0))
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("gpu", "max_length cuda:0")
    assert check.data["fraction"] == doctor.DISCRETE_FRACTION
    assert check.data["usable_bytes"] == int(0.9 * 79 * GIB)
    assert 3000 < check.data["bf16"] < 6000 and check.data["fp32"] < check.data["bf16"]
    assert "N²" in check.message  # the formula is shown


@pytest.mark.parametrize("dtype_bytes", [2, 4])
def test_estimate_is_the_largest_length_that_fits(dtype_bytes):
    def need(n):
        a = 128 * dtype_bytes * doctor.EST_PAIR_COPIES + 4 * 4 * 4
        b = (512 * 256 + 5120 * 64) * dtype_bytes * doctor.EST_MSA_COPIES
        return doctor.EST_OVERHEAD + a * n * n + b * n

    for budget in (2 * GIB, 20 * GIB, 71 * GIB, 102 * GIB):
        n = doctor.estimate_max_length(budget, dtype_bytes)
        assert need(n) <= budget < need(n + 1)
    assert doctor.estimate_max_length(0.5 * GIB) == 0


# --------------------------------------------------------------------------- build advice


@pytest.mark.parametrize(
    ("cores", "available_gib", "unified"),
    [(20, 120, True), (72, 120, True), (32, 16, False), (4, 512, False), (8, 1, False)],
)
def test_max_jobs_from_ram(cores, available_gib, unified):
    s = doctor.build_settings(cores, available_gib * GIB, unified=unified, capability=(12, 1))
    assert 1 <= s["MAX_JOBS"] <= cores
    fraction = 0.8 if unified else 1.0
    jobs_memory = s["MAX_JOBS"] * s["NVCC_THREADS"] * doctor.GIB_PER_NVCC_JOB
    assert jobs_memory <= max(fraction * available_gib, doctor.GIB_PER_NVCC_JOB)
    assert s["TORCH_CUDA_ARCH_LIST"] == "12.1"


def test_max_jobs_values():
    # DGX Spark: 20 cores, ~120 GiB free unified memory → 16 slots of 6 GiB.
    spark = doctor.build_settings(20, 120 * GIB, unified=True)
    assert (spark["MAX_JOBS"], spark["NVCC_THREADS"]) == (8, 2)
    assert doctor.build_settings(32, 16 * GIB)["MAX_JOBS"] == 2
    assert doctor.build_settings(4, 512 * GIB)["MAX_JOBS"] == 4
    assert doctor.build_settings(64, 0)["MAX_JOBS"] == 1


def test_build_advice_warns_about_high_max_jobs(fake_gpu, isolated, monkeypatch):
    fake_gpu()
    monkeypatch.setattr(doctor_probes, "meminfo", lambda: (128 * GIB, 64 * GIB))
    monkeypatch.setattr(doctor_probes.os, "sched_getaffinity", lambda pid: set(range(20)),
                        raising=False)
    isolated["env"]["MAX_JOBS"] = "72"
    report = doctor.run_checks(launch=False, **isolated)
    settings = report.get("build", "settings")
    assert 'TORCH_CUDA_ARCH_LIST="12.1"' in settings.message
    assert settings.data["MAX_JOBS"] == 8 // 2  # 0.8 × 64 / 6 = 8 slots, 2 nvcc threads
    warn = report.get("build", "MAX_JOBS")
    assert warn.status == "warn" and "MAX_JOBS=4" in warn.fix


# --------------------------------------------------------------------------- pipeline/storage


def test_databases_present_missing_and_hh_prefix(isolated, tmp_path):
    (tmp_path / "u90.fasta").write_text(">a\nA\n")
    (tmp_path / "bfd_prefix_a3m.ffdata").write_text("")
    config = tmp_path / "sparkfold.toml"
    config.write_text(f'[databases]\nuniref90 = "{tmp_path}/u90.fasta"\n'
                      f'bfd = "{tmp_path}/bfd_prefix"\nmgnify = "{tmp_path}/absent.fa"\n')
    report = doctor.run_checks(launch=False, **isolated)
    assert report.get("pipeline", "databases").message == "found: uniref90, bfd"
    missing = report.get("pipeline", "database mgnify")
    assert missing.status == "fail" and str(config) in missing.fix
    assert report.exit_code == 0  # databases are not needed by every run


def test_invalid_config_is_reported_not_raised(isolated, tmp_path):
    (tmp_path / "sparkfold.toml").write_text("[databases\n")
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("pipeline", "databases")
    assert check.status == "fail" and "not valid TOML" in check.message and check.fix


def test_unusable_cache_fails_the_required_check(isolated, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("")  # a file where the cache directory should be
    report = doctor.run_checks(launch=False, **isolated)
    check = report.get("storage", "cache")
    assert check.status == "fail" and check.required and "SPARKFOLD_CACHE" in check.fix
    assert not report.ok and report.exit_code == 1


def test_weights_found_in_cache(isolated):
    params = isolated["cache_dir"] / "params"
    params.mkdir(parents=True)
    (params / "params_model_1_ptm.npz").write_bytes(b"")
    report = doctor.run_checks(launch=False, **isolated)
    assert report.get("pipeline", "weights").data["files"] == ["params_model_1_ptm.npz"]
    assert report.get("storage", "cache").status == "ok"


# --------------------------------------------------------------------------- output


def test_json_and_text_output(fake_gpu, isolated):
    fake_gpu()
    report = doctor.run_checks(launch=False, **isolated)
    data = json.loads(report.to_json())
    assert data["ok"] is True and data["exit_code"] == 0
    assert sum(data["counts"].values()) == len(data["checks"]) == len(report.checks)
    names = {(c["section"], c["name"]) for c in data["checks"]}
    assert {("gpu", "driver"), ("torch", "arch"), ("build", "settings"),
            ("storage", "cache")} <= names
    text = report.format_text()
    assert "\x1b" not in text and text.endswith("\n")
    for c in report.checks:
        assert f"{doctor.SYMBOLS[c.status]} {c.name}: " in text
    ascii_text = report.format_text(ascii_only=True)
    ascii_text.encode("ascii")
    assert math.isclose(len(ascii_text.splitlines()), len(text.splitlines()))
