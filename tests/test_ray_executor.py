"""The `ray` grid executor: same results table as `local`, resumption, a clear missing-Ray error.

A tiny grid (2 variants, 1 seed, 1 epoch, hidden 8, a 12-dialogue synthetic corpus) on a
local Ray with 2 CPUs that the executor starts and stops itself.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest

from conftest import tiny_config
from iteacnet.benchmark.executors import EXECUTORS
from iteacnet.benchmark.grid import Cell, GridSpec, ResultStore, expand, run_grid
from iteacnet.config import replace

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='ray is not installed (pip install -e ".[cluster]")'
)


def _cells() -> list[Cell]:
    base = replace(
        tiny_config(epochs=1),
        **{"eval.rates": (0.0, 0.7), "model.hidden": 8, "data.synthetic.num_dialogues": 12},
    )
    spec = GridSpec.from_dict({"variants": ["iteacnet", "gcnet-tf"], "corpora": {"synthetic": {"corpus": "synthetic"}},
                               "seeds": [0], "protocols": ["ume"]})
    return expand(spec, base)


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Everything but the wall-clock time and the worker's peak memory is a result and must match exactly.
    return [{k: v for k, v in r.items() if k not in ("train_seconds", "peak_mb")} for r in rows]


@needs_ray
def test_ray_gives_the_local_results_table_and_resumes(tmp_path):
    cells = _cells()
    assert len(cells) == 2
    # One thread in both, so the arithmetic (and so every metric) is the same bit for bit.
    local = run_grid(cells, ResultStore(tmp_path / "local.jsonl"), executor="local", workers=1,
                     threads_per_worker=1, progress=False)

    # An interrupted grid: the first cell is already in the store and must not run again.
    store = ResultStore(tmp_path / "ray.jsonl")
    store.add(cells[0], [r for r in local if r["cell"] == cells[0].id])
    ran: list[str] = []
    rows = run_grid(cells, store, executor="ray", workers=2, progress=False,
                    on_cell=lambda c, r: ran.append(c.id))
    assert ran == [cells[1].id]
    assert [r["cell"] for r in rows] == [r["cell"] for r in local]
    assert _table(rows) == _table(local)
    assert set(store.done()) == {c.id for c in cells}

    import ray

    assert not ray.is_initialized()  # the executor stopped the Ray it started


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[cluster\]"'):
        EXECUTORS["ray"](workers=1)


def test_ray_executor_rejects_bad_resources():
    pytest.importorskip("ray", reason='ray is not installed (pip install -e ".[cluster]")')
    with pytest.raises(ValueError, match="workers"):
        EXECUTORS["ray"](workers=0)
    with pytest.raises(ValueError, match="num_cpus_per_cell"):
        EXECUTORS["ray"](workers=1, num_cpus_per_cell=0)
