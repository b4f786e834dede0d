"""The benchmark grid: expansion, resumption, the end-to-end quick grid, reports."""

import json

import pytest

from conftest import tiny_config
from iteacnet.benchmark.grid import GridSpec, ResultStore, expand, run_grid
from iteacnet.benchmark.variants import VARIANTS, variants_for_table
from iteacnet.cli import main
from iteacnet.config import replace
from iteacnet.evaluation.reports import grid_report, read_rows


def _spec(**kw):
    d = {"variants": ["iteacnet", "ae"], "corpora": {"synthetic": {"corpus": "synthetic"}}, "seeds": [0], **kw}
    return GridSpec.from_dict(d)


def test_expand_counts_cells():
    base = replace(tiny_config(), **{"eval.rates": (0.0, 0.5)})
    cells = expand(_spec(), base)
    # two variants × (1 UME + 2 IME rates)
    assert len(cells) == 6 and len({c.id for c in cells}) == 6
    assert expand(_spec(), base)[0].id == cells[0].id  # ids are stable
    t1 = expand(_spec(variants=[], tables=[1]), base)
    assert {c.protocol for c in t1} == {"complete"} and len(t1) == 5  # none, global, both (dense, shared, dropout)


def test_bad_grid_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown method variant"):
        _spec(variants=["nope"])
    with pytest.raises(ValueError, match="unknown grid field"):
        _spec(colour="red")


def test_every_table_has_variants():
    for t in (1, 2, 3, 4):
        assert variants_for_table(t)
    assert {"cpmnet", "ae", "cra", "mmin", "gcnet", "iteacnet"} <= set(variants_for_table(4))
    assert all(VARIANTS[v].protocols == ("complete",) for v in variants_for_table(1))


def test_grid_resumes_and_skips_finished_cells(tmp_path):
    base = replace(tiny_config(epochs=1), **{"eval.rates": (0.0, 0.7)})
    cells = expand(_spec(variants=["iteacnet"], protocols=["ume"]), base)
    store = ResultStore(tmp_path / "cells.jsonl")
    seen = []
    rows = run_grid(cells, store, progress=False, on_cell=lambda c, r: seen.append(c.id))
    assert len(seen) == 1 and len(rows) == 2
    with store.path.open("a") as f:
        f.write('{"cell": "torn')  # a kill mid-write leaves a torn line: ignored
    seen.clear()
    again = run_grid(cells, store, progress=False, on_cell=lambda c, r: seen.append(c.id))
    assert seen == [] and again == rows


def test_quick_grid_end_to_end_and_report(tmp_path, capsys):
    """The `quick` preset, shrunk further, through the CLI: every table is produced."""
    out = tmp_path / "bench"
    code = main(["benchmark", "--quick", "--out", str(out), "--seeds", "0", "--threads", "1",
                 "--set", "train.epochs=1", "--set", "eval.rates=[0.0, 0.7]",
                 "--set", "data.synthetic.num_dialogues=12"])
    assert code == 0
    md = (out / "report.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Table 4"):
        assert title in md
    for label in ("CPM-Net", "AE", "CRA", "MMIN", "GCNet", "ITEACNet", "TS NAS/TF"):
        assert label in md
    assert "synthetic" in md and (out / "table4_waf.png").stat().st_size > 0
    rows = read_rows(out / "cells.jsonl")
    assert rows and all("variant" in r and "cell" in r for r in rows)
    assert {r["threads"] for r in rows} == {1}  # --threads 1 over 1 worker
    # `report` rebuilds the same tables without training
    rebuilt = tmp_path / "rebuilt"
    assert main(["report", str(out / "cells.jsonl"), "--out", str(rebuilt)]) == 0
    assert (rebuilt / "report.md").read_text().split("\n", 1)[1] == md.split("\n", 1)[1]
    assert json.loads((rebuilt / "results.json").read_text()) == json.loads((out / "results.json").read_text())


def test_report_on_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no results file"):
        grid_report(read_rows(tmp_path / "nope.json"), tmp_path)
