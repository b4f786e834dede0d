"""The benchmark grid: variants × corpora × protocols × seeds × folds × rates.

A cell is one training run (UME: scored at every rate; IME: one rate; Table 1's `complete`:
rate 0.0). Each finished cell is appended to `<out>/cells.jsonl` at once (flushed and
fsynced), and a restarted grid skips every cell already there: a stopped grid resumes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iteacnet.benchmark.variants import VARIANTS, variants_for_table
from iteacnet.config import (
    SPLIT_FIELDS,
    ExperimentConfig,
    ModelConfig,
    from_dict,
    merge_dicts,
    replace,
)
from iteacnet.errors import IncompleteResults, ResultsError

IEMOCAP = ("iemocap4", "iemocap6")
PROTOCOLS = ("ume", "ime", "complete")  # `complete`: Table 1's full-data cells


@dataclass(frozen=True)
class GridSpec:
    variants: tuple[str, ...]
    corpora: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]  # (name, DataConfig overrides)
    seeds: tuple[int, ...] = (0, 1, 2)
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)  # IEMOCAP and corpus folders with folds; others use their one split
    protocols: tuple[str, ...] = ("ume", "ime")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridSpec:
        known = {"variants", "tables", "corpora", "seeds", "folds", "protocols"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown grid field(s) {sorted(unknown)}; known: {sorted(known)}")
        names = list(d.get("variants", []))
        for t in d.get("tables", []):
            names += [n for n in variants_for_table(t) if n not in names]
        if not names:
            raise ValueError("a grid needs `variants` or `tables`")
        for n in names:
            VARIANTS[n]  # noqa: B018  (raises with the list of choices)
        protocols = list(d.get("protocols", cls.protocols))
        bad = [p for p in protocols if p not in PROTOCOLS]
        if bad or not protocols:
            raise ValueError(f"grid protocols must be some of {list(PROTOCOLS)}, got {protocols}")
        corpora = d.get("corpora")
        if not isinstance(corpora, dict) or not corpora:
            raise ValueError("a grid needs `corpora`: {name: {DataConfig field: value}}")
        return cls(
            variants=tuple(names),
            corpora=tuple((k, tuple(sorted(v.items()))) for k, v in corpora.items()),
            **{k: tuple(d[k]) for k in ("seeds", "folds", "protocols") if k in d},
        )


@dataclass(frozen=True)
class Cell:
    """One training run of the grid; `config` is an ExperimentConfig as a JSON-able dict."""

    id: str
    variant: str
    corpus: str
    protocol: str  # ume | ime | complete
    config: dict[str, Any] = field(hash=False, compare=False)

    def describe(self) -> str:
        c = self.config
        rate = f" rate={c['train']['rate']:.1f}" if self.protocol == "ime" else ""
        return f"{self.variant} {self.corpus} {self.protocol}{rate} seed={c['train']['seed']} fold={c['data']['fold']}"


def _diff(d: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    """The fields of `d` that differ from `default` (nested)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and isinstance(default.get(k), dict):
            sub = _diff(v, default[k])
            if sub:
                out[k] = sub
        elif k not in default or default[k] != v:
            out[k] = v
    return out


def _cell_id(cfg: ExperimentConfig, protocol: str) -> str:
    """Hash of what differs from the defaults: a new config field with a default keeps ids."""
    d = _diff(cfg.to_dict(), ExperimentConfig().to_dict())
    d.pop("name", None)
    d.get("train", {}).pop("progress", None)
    blob = json.dumps({"protocol": protocol, "config": d}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _has_folds(data: Any) -> bool:
    """IEMOCAP, or a corpus folder whose table gives folds (leave-one-fold-out)."""
    if data.corpus_dir:
        from iteacnet.data.table import read_description, read_table

        return bool(read_table(read_description(data.corpus_dir)).folds)
    return data.corpus in IEMOCAP


def expand(
    spec: GridSpec, base: ExperimentConfig, reapply: Callable[[ExperimentConfig], ExperimentConfig] | None = None
) -> list[Cell]:
    """Every cell of the grid, in a stable order. With `base.train.recipe="own"` each variant
    trains on its method's recipe; `reapply` (the user's `--set` overrides) then wins."""
    from iteacnet.training.recipes import resolve_recipe

    cells: list[Cell] = []
    for corpus_name, data_over in spec.corpora:
        data = replace(base.data, **dict(data_over))
        folds = spec.folds if _has_folds(data) else (0,)
        for vname in spec.variants:
            v = VARIANTS[vname]
            model = from_dict(ModelConfig, merge_dicts(base.to_dict()["model"], v.model))
            vbase = resolve_recipe(replace(base, data=data, model=model), reapply)
            protocols = [p for p in v.protocols if p == "complete" or p in spec.protocols]
            for protocol in protocols:
                for seed in spec.seeds:
                    for fold in folds:
                        rates: Iterable[float | None] = base.eval.rates if protocol == "ime" else (None,)
                        for rate in rates:
                            cfg = replace(vbase, name=f"{vname}-{corpus_name}", data=replace(data, fold=fold))
                            tr: dict[str, Any] = {"train.seed": seed, "train.progress": False}
                            if protocol == "ime":
                                tr |= {"train.protocol": "ime", "train.rate": rate}
                            elif protocol == "complete":
                                tr |= {"train.protocol": "ume", "eval.rates": (0.0,)}
                            else:
                                tr |= {"train.protocol": "ume"}
                            cfg = replace(cfg, **tr)
                            cells.append(Cell(_cell_id(cfg, protocol), vname, corpus_name, protocol, cfg.to_dict()))
    return cells


# ---------------------------------------------------------------------------- one cell
@functools.lru_cache(maxsize=4)
def _corpus(data_json: str) -> Any:
    from iteacnet.config import DataConfig
    from iteacnet.data.loading import load_corpus

    return load_corpus(from_dict(DataConfig, json.loads(data_json)))


def run_cell(cell: Cell) -> list[dict[str, Any]]:
    """Train and score one cell; returns its result rows (runs in a worker process)."""
    import torch

    from iteacnet.evaluation.protocols import train_and_score
    from iteacnet.training.engine import prepare

    t0 = time.perf_counter()
    cfg = ExperimentConfig.from_dict(cell.config)
    data_d = cell.config["data"]
    corpus = _corpus(json.dumps({k: v for k, v in data_d.items() if k not in SPLIT_FIELDS}, sort_keys=True))
    data = prepare(corpus, cfg)
    columns = {"variant": cell.variant, "variant_label": VARIANTS[cell.variant].label, "cell": cell.id}
    _reset_peak(cfg.train.device)
    rows, _ = train_and_score(cfg, data, label=cell.protocol, columns=columns)
    threads = torch.get_num_threads()
    peak = worker_peak_mb(cfg.train.device)
    for row in rows:  # a cell's time: loading and scoring included; the threads it had
        row["train_seconds"] = round(time.perf_counter() - t0, 2)
        row["threads"] = threads
        row["peak_mb"] = peak
    return rows


def stack_groups(cells: list[Cell], stack: int) -> list[list[Cell]]:
    """Cells in groups of at most `stack` that can share a stacked training run
    (training.stacked): same variant, corpus, protocol and config but for the seed. A cell
    that cannot be stacked (see `stack_blocker`) is a group of its own. Order is kept."""
    from iteacnet.training.stacked import stack_blocker, stack_key

    if stack < 1:
        raise ValueError(f"stack must be >= 1, got {stack}")
    groups: dict[str, list[list[Cell]]] = {}
    order: list[list[Cell]] = []
    alone: dict[str, int] = {}  # why -> how many cells train unstacked
    for cell in cells:
        cfg = ExperimentConfig.from_dict(cell.config)
        why = stack_blocker(cfg) if stack > 1 else None
        if stack == 1 or why is not None:
            if why is not None:
                alone[why] = alone.get(why, 0) + 1
            order.append([cell])
            continue
        key = json.dumps([cell.variant, cell.corpus, cell.protocol, stack_key(cfg)])
        open_ = groups.setdefault(key, [])
        if not open_ or len(open_[-1]) >= stack:
            open_.append([])
            order.append(open_[-1])
        open_[-1].append(cell)
    for why, n in alone.items():
        print(f"note: {n} cell(s) train unstacked: {why}", file=sys.stderr)
    return order


def worker_peak_mb(device: str) -> float:
    """This worker's peak memory so far, MB: CUDA memory allocated on a GPU (reset by
    `run_cells` per group), else the process's peak resident set."""
    import resource

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def run_cells(cells: list[Cell], group: int | None = None) -> list[list[dict[str, Any]]]:
    """One group of `stack_groups` (a worker's job): one cell alone, or the group's cells as
    one stacked training run (at most `group` members per vmapped call); each cell's rows,
    with the worker's peak memory (`peak_mb`)."""
    import torch

    from iteacnet.evaluation.protocols import train_and_score_stacked
    from iteacnet.training.engine import prepare

    if len(cells) == 1:
        return [run_cell(cells[0])]
    device = cells[0].config["train"]["device"]
    _reset_peak(device)
    t0 = time.perf_counter()
    cfgs = [ExperimentConfig.from_dict(c.config) for c in cells]
    data_d = cells[0].config["data"]
    corpus = _corpus(json.dumps({k: v for k, v in data_d.items() if k not in SPLIT_FIELDS}, sort_keys=True))
    data = prepare(corpus, cfgs[0])
    columns = [{"variant": c.variant, "variant_label": VARIANTS[c.variant].label, "cell": c.id} for c in cells]
    out = train_and_score_stacked(cfgs, data, label=cells[0].protocol, columns=columns, group=group)
    share = round((time.perf_counter() - t0) / len(cells), 2)
    peak = worker_peak_mb(device)
    threads = torch.get_num_threads()
    for rows in out:  # a cell's share of the group's time; the job's peak memory and threads
        for row in rows:
            row["train_seconds"] = share
            row["peak_mb"] = peak
            row["threads"] = threads
    return out


# ---------------------------------------------------------------------------- the store
class ResultStore:
    """Append-only JSONL of finished cells, one writer at a time.

    `open()` takes an exclusive lock (`<file>.lock`, released by the kernel when the process
    dies, even by kill -9): a second run on the same file stops with the holder's pid instead
    of running every cell again. A torn last line (a kill or a full disk mid-write) is cut
    off before the first append, so the next record starts on a line of its own. A cell found
    twice (files written before the lock existed) counts once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: Any = None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def open(self) -> ResultStore:
        """Lock the file for this process and repair a torn tail; `close()` unlocks."""
        import fcntl

        f = self.lock_path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ResultsError(
                f"{self.path} is in use by {holder} (another `iteacnet benchmark` on this --out); "
                "wait for it to finish or give another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        self._lock = f
        self.repair()
        return self

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def repair(self) -> int:
        """Cut a torn last line (no final newline); returns the bytes removed."""
        if not self.path.is_file():
            return 0
        with self.path.open("rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep

    def done(self) -> dict[str, list[dict[str, Any]]]:
        from iteacnet.evaluation.reports import jsonl_records

        if not self.path.is_file():
            return {}
        out: dict[str, list[dict[str, Any]]] = {}
        for rec in jsonl_records(self.path.read_text()):
            if isinstance(rec, dict) and "cell" in rec:
                out.setdefault(rec["cell"], rec["rows"])  # first record of a cell wins
        return out

    def add(self, cell: Cell, rows: list[dict[str, Any]]) -> None:
        line = json.dumps({"cell": cell.id, "describe": cell.describe(), "config": cell.config, "rows": rows}) + "\n"
        with self.path.open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def run_grid(
    cells: list[Cell],
    store: ResultStore,
    executor: str = "local",
    workers: int = 1,
    progress: bool = True,
    on_cell: Callable[[Cell, list[dict[str, Any]]], None] | None = None,
    **executor_kw: Any,
) -> list[dict[str, Any]]:
    """Run every cell not yet in `store`; returns all rows of the grid's cells."""
    from tqdm.auto import tqdm

    from iteacnet.benchmark.executors import EXECUTORS

    store.repair()  # a torn last line must not swallow the next record
    done = store.done()
    todo = [c for c in cells if c.id not in done]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="grid", unit="cell",
               disable=not progress, dynamic_ncols=True)

    def finished(cell: Cell, rows: list[dict[str, Any]]) -> None:
        store.add(cell, rows)
        bar.update(1)
        bar.set_postfix_str(cell.describe()[:60])
        if on_cell is not None:
            on_cell(cell, rows)

    if todo:
        EXECUTORS[executor](workers=workers, **executor_kw).run(todo, finished)
    bar.close()
    done = store.done()
    missing = [c for c in cells if c.id not in done]
    if missing:  # the table must cover the grid: never report a partial grid as finished
        raise IncompleteResults(f"{len(missing)} of {len(cells)} cells have no record in {store.path} "
                           f"(first: {missing[0].describe()}); rerun to run them")
    return [r for c in cells for r in done[c.id]]
