"""Usable device memory: a safe share on unified memory (DGX Spark), used by chunking and predict."""

from types import SimpleNamespace

import pytest
import torch

from sparkfold import memory
from sparkfold.model import chunking

GIB = 1 << 30


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device with 100 GiB free; ``integrated`` chooses unified or discrete memory."""

    def install(integrated: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (100 * GIB, 128 * GIB))
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda index=0: SimpleNamespace(is_integrated=integrated))

    return install


def test_unified_memory_gets_the_safe_fraction(fake_gpu):
    fake_gpu(integrated=True)
    assert memory.is_unified("cuda:0")
    free, fraction = memory.usable_memory("cuda:0")
    assert (free, fraction) == (100 * GIB, memory.UNIFIED_FRACTION)
    assert chunking._free_bytes(torch.device("cuda:0")) == int(memory.UNIFIED_FRACTION * 100 * GIB)


def test_discrete_gpu_gets_more(fake_gpu):
    fake_gpu(integrated=False)
    assert not memory.is_unified("cuda")
    assert memory.usable_memory("cuda")[1] == memory.DISCRETE_FRACTION
    assert memory.DISCRETE_FRACTION > memory.UNIFIED_FRACTION


def test_auto_chunk_size_is_smaller_on_unified_memory(fake_gpu):
    sizes = {}
    for integrated in (False, True):
        fake_gpu(integrated=integrated)
        sizes[integrated] = chunking.auto_chunk_size(
            6144, 6144, "cuda:0", bytes_per_element=4, fused_attention=False)
    assert sizes[True] is not None and sizes[False] is not None
    assert sizes[True] <= sizes[False]


def test_cpu_uses_available_ram(monkeypatch):
    monkeypatch.setattr(memory, "meminfo", lambda: (64 * GIB, 10 * GIB))
    assert memory.usable_memory("cpu") == (10 * GIB, memory.UNIFIED_FRACTION)
    monkeypatch.setattr(memory, "meminfo", lambda: (None, None))
    assert memory.usable_memory("cpu")[0] > 0  # a fallback, never zero or None
