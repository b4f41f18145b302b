"""The FLOP model of benchmarks/flops.py against the issue's peer-table FLOP column."""

import importlib.util

import pytest
from testutil import ROOT


def _flops_module():
    spec = importlib.util.spec_from_file_location("sparkfold_bench_flops", ROOT / "benchmarks" / "flops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("n", [128, 256, 512, 1024, 2048])
def test_total_flops_matches_peer_table(n):
    fl = _flops_module()
    total = fl.total_flops(fl.Workload(n))
    # The peer table gives two significant digits: agree within 5 %.
    assert total == pytest.approx(fl.PEER_TABLE_FLOPS[n], rel=0.05)


def test_cubic_terms_dominate_at_long_lengths():
    fl = _flops_module()
    costs = fl.module_costs(fl.Workload(4096))["evoformer"]
    cubic = sum(costs[k]["flops"] for k in ("tri_mul_out", "tri_mul_in", "tri_att_start", "tri_att_end"))
    assert cubic / sum(c["flops"] for c in costs.values()) > 0.5
    # Fused byte counts never exceed the unfused ones.
    assert all(c["bytes"] <= c["unfused_bytes"] for c in costs.values())


def test_flops_scale_with_passes_and_blocks():
    fl = _flops_module()
    one = fl.total_flops(fl.Workload(256, passes=1))
    assert fl.total_flops(fl.Workload(256, passes=4)) == pytest.approx(4 * one)
    assert fl.total_flops(fl.Workload(256, evo_blocks=0, extra_blocks=0)) == 0
