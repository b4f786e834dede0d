"""benchmarks/throughput.py: one mode (W workers, stacks of K) runs end to end on the tiny
synthetic preset and reports well-formed figures. No timing thresholds."""

from __future__ import annotations

import argparse

import pytest

from conftest import load_benchmark


@pytest.mark.parametrize("variant", ["iteacnet", "mmin"])
def test_one_stacked_mode_reports_its_figures(variant):
    mod = load_benchmark("throughput.py")
    args = argparse.Namespace(preset="quick", variant=variant, epochs=1, threads=1, device="cpu", set=["data.synthetic.num_dialogues=12"],
                              one_workers=1, one_stack=2, one_cells=2, one_ballast_mb=64, group=2)
    res = mod.run_mode(args)
    assert res["cells"] == 2 and res["stack"] == 2 and res["cells_per_hour"] > 0
    assert res["stacked_rows"] == res["rows"] > 0  # both cells trained as one stack (vmapped: G = 2)
    assert res["std_waf_over_seeds"] is not None and res["std_waf_over_seeds"] >= 0  # over the two seeds
    assert res["peak_mb_per_job"] >= res["driver_rss_before_mb"] > 64 == res["ballast_mb"]  # the ballast is resident
