"""Grid executors: how cells get run. `local` uses worker processes on this machine,
`ray` a Ray cluster (an optional extra, imported only when chosen).

An executor is built as `EXECUTORS[name](workers=..., **kw)` and has
`run(cells, on_done)`, calling `on_done(cell, rows)` in the driver as each cell finishes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from iteacnet.benchmark.grid import Cell, run_cells, stack_groups
from iteacnet.registry import Registry

OnDone = Callable[[Cell, list[dict[str, Any]]], None]
EXECUTORS: Registry[Any] = Registry("executor")


def _init_worker(threads: int, parent: int | None = None) -> None:
    import torch

    torch.set_num_threads(threads)
    if parent is not None:
        die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """End this worker when the grid driver dies, even by kill -9 (no cleanup runs there).

    Linux: the kernel sends SIGKILL when the parent ends (prctl PR_SET_PDEATHSIG); anywhere:
    a daemon thread exits the process once it has been re-parented."""
    import ctypes
    import os
    import signal
    import threading
    import time

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the thread below does it

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


@EXECUTORS.register("local")
class LocalExecutor:
    """Cells in `workers` processes (spawned: no forked torch state); 1 worker runs inline."""

    def __init__(self, workers: int = 1, threads_per_worker: int | None = None, stack: int = 1,
                 stack_group: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if stack_group is not None and stack_group < 1:
            raise ValueError(f"stack_group must be >= 1, got {stack_group}")
        self.workers = workers
        self.stack = stack
        self.stack_group = stack_group  # members per vmapped call (None: training.stacked.default_group)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else mp.cpu_count()
        self.threads = threads_per_worker or max(1, cpus // workers)

    def run(self, cells: list[Cell], on_done: OnDone) -> None:
        # A job is a group of cells trained as one stack (a group of one without --stack).
        # Workers are spawned processes, so N of them can share one GPU (device cuda), each
        # with its own CUDA context; rows carry each worker's peak memory (peak_mb).
        jobs = stack_groups(cells, self.stack)
        if self.workers == 1:
            _init_worker(self.threads)
            for job in jobs:
                for cell, rows in zip(job, run_cells(job, self.stack_group)):
                    on_done(cell, rows)
            return
        ctx = mp.get_context("spawn")
        initargs = (self.threads, os.getpid())
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=initargs) as pool:
            pending: dict[Future, list[Cell]] = {}
            queue = list(jobs)
            # Keep a bounded number in flight so an interrupt loses little queued work.
            while queue or pending:
                while queue and len(pending) < 2 * self.workers:
                    job = queue.pop(0)
                    pending[pool.submit(run_cells, job, self.stack_group)] = job
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = pending.pop(fut)
                    for cell, rows in zip(job, fut.result()):
                        on_done(cell, rows)


@EXECUTORS.register("ray")
def ray_executor(workers: int = 1, **kw: Any) -> Any:
    """Cells as Ray tasks (iteacnet.benchmark.ray_executor); Ray is imported only here."""
    from iteacnet.benchmark.ray_executor import RayExecutor

    return RayExecutor(workers=workers, **kw)
