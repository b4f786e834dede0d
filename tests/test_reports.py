"""Tables and plots from long-format rows, checked against hand-computed aggregates."""

import pytest

from iteacnet.evaluation.reports import (
    ecce_table,
    per_seed,
    plot_rates,
    plot_router,
    rate_table,
    read_rows,
    write_rows,
)


def _rows():
    rows = []
    for seed, (a, b) in enumerate([(80.0, 70.0), (82.0, 74.0)]):
        for fold, shift in ((0, 0.0), (1, 2.0)):
            rows.append({"corpus": "c", "method": "ae", "protocol": "ume", "seed": seed, "fold": fold, "rate": 0.0, "waf": a + shift})
            rows.append({"corpus": "c", "method": "ae", "protocol": "ume", "seed": seed, "fold": fold, "rate": 0.7, "waf": b + shift})
    return rows


def test_folds_averaged_before_seeds():
    cells = next(iter(per_seed(_rows(), "waf").values()))
    assert cells[0.0] == [81.0, 83.0] and cells[0.7] == [71.0, 75.0]


def test_rate_table_mean_std_average_decline():
    md = rate_table(_rows())
    line = next(x for x in md.splitlines() if x.startswith("| AE"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # rate 0.0: mean 82, sample std of (81, 83) = 1.41; average per seed (76, 79) -> 77.5 ± 2.12
    # decline per seed (10, 8) -> 9.00 ± 1.41
    assert cells == ["AE", "82.00 ± 1.41", "73.00 ± 2.83", "77.50 ± 2.12", "9.00 ± 1.41", "2"]


def test_gcnet_compatible_is_flagged():
    rows = [dict(r, selection="gcnet-compatible") for r in _rows()]
    assert "test fold" in rate_table(rows)


def test_ecce_table_layout():
    rows = [{"corpus": "iemocap4", "method": "iteacnet", "protocol": "complete", "ecce": e, "seed": 0, "rate": 0.0, "waf": w}
            for e, w in (("none", 50.0), ("global", 51.0), ("both", 52.0))]
    lines = ecce_table(rows).splitlines()
    assert lines[2:] == ["| iemocap4 | ✕ | ✕ |  | 50.00 ± 0.00 | 1 |", "| iemocap4 | ✕ | ✓ |  | 51.00 ± 0.00 | 1 |",
                         "| iemocap4 | ✓ | ✓ | dense | 52.00 ± 0.00 | 1 |"]


@pytest.mark.parametrize("suffix", ["json", "csv"])
def test_rows_round_trip(tmp_path, suffix):
    write_rows(_rows(), tmp_path)
    back = read_rows(tmp_path / f"results.{suffix}")
    assert [r["waf"] for r in back] == [r["waf"] for r in _rows()]


def test_plots_are_written(tmp_path):
    import numpy as np

    assert plot_rates(_rows(), tmp_path / "a.png").stat().st_size > 0
    assert plot_router({"text": np.full((2, 3), 1 / 3)}, ["x", "y", "z"], tmp_path / "b.png").stat().st_size > 0
    assert plot_router({}, [], tmp_path / "c.png") is None


def test_gzipped_grid_file_is_read(tmp_path):
    import gzip
    import json

    rec = {"cell": "x", "rows": _rows()}
    (tmp_path / "cells.jsonl.gz").write_bytes(gzip.compress((json.dumps(rec) + "\n").encode()))
    assert read_rows(tmp_path / "cells.jsonl.gz") == _rows()
