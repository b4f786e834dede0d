"""The `ray` grid executor: each cell is a Ray task, on an existing cluster or a local Ray.

    iteacnet benchmark --preset paper-mosi --executor ray --address auto

Every task declares its CPU/GPU needs (`num_cpus_per_cell`, `num_gpus_per_cell`), so Ray
packs cells onto the cluster's nodes. The driver waits on the tasks with `ray.wait` and hands
each finished cell to `on_done` at once, so the grid's ResultStore writes it before the next
arrives: a grid interrupted on the cluster resumes like a local one. Only a bounded number
of tasks is in flight, so an interrupt loses little queued work.

On a cluster, every node needs this package installed (the same version as the driver),
and a corpus's files must be at the same path on every node.
Ray is an optional extra: `pip install -e ".[cluster]"`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from iteacnet.benchmark.grid import Cell, run_cell

INSTALL_HINT = 'the ray executor needs Ray: pip install -e ".[cluster]"  (or pip install "ray>=2.9")'


def import_ray() -> Any:
    """`ray`, imported on use (it is an optional extra), or an ImportError that says how."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return ray


def _run_cell_task(cell: Cell, threads: int) -> list[dict[str, Any]]:
    """The body of one Ray task (runs in a Ray worker process)."""
    import torch

    # A cell is a small model: one intra-op thread per declared CPU, no oversubscription.
    torch.set_num_threads(max(1, threads))
    return run_cell(cell)


class RayExecutor:
    """Cells as Ray tasks; `on_done(cell, rows)` is called in the driver as each finishes.

    `address`: a Ray cluster to join ("auto" finds the one this machine belongs to, or
    "ray://host:10001"); None starts a local Ray with `workers` CPUs, shut down afterwards.
    """

    def __init__(
        self,
        workers: int = 1,
        address: str | None = None,
        num_cpus_per_cell: float = 1,
        num_gpus_per_cell: float = 0,
        max_in_flight: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if num_cpus_per_cell <= 0 or num_gpus_per_cell < 0:
            raise ValueError(
                f"num_cpus_per_cell must be > 0 and num_gpus_per_cell >= 0, got {num_cpus_per_cell}, {num_gpus_per_cell}"
            )
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus_per_cell
        self.num_gpus = num_gpus_per_cell
        self.max_in_flight = max_in_flight
        self.ray = import_ray()  # fail at construction, before any cell is scheduled

    def _start(self) -> bool:
        """Join the cluster or start a local Ray; True if this executor did (and must then
        disconnect, or stop the local Ray), False if the caller had already done it."""
        ray = self.ray
        if ray.is_initialized():
            return False  # the caller manages its own Ray session
        # No usage reporting from a research tool; the caller's environment can still opt in.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
            "configure_logging": True,
        }
        if self.address:
            ray.init(address=self.address, **quiet)
        else:
            # "local": a fresh Ray even when RAY_ADDRESS or a running cluster would be found.
            ray.init(address="local", num_cpus=self.workers, num_gpus=0 if self.num_gpus == 0 else None, **quiet)
        return True

    def _in_flight_limit(self) -> int:
        if self.max_in_flight is not None:
            return max(1, self.max_in_flight)
        # Twice what the cluster can run at once: it never idles, and an interrupt loses
        # only the cells that were running.
        cpus = float(self.ray.cluster_resources().get("CPU", self.workers))
        return max(2, 2 * int(cpus // self.num_cpus))

    def run(self, cells: list[Cell], on_done: Any) -> None:
        ray = self.ray
        started = self._start()
        try:
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_run_cell_task)
            threads = max(1, int(self.num_cpus))
            limit = self._in_flight_limit()
            queue = list(cells)
            pending: dict[Any, Cell] = {}
            try:
                while queue or pending:
                    while queue and len(pending) < limit:
                        cell = queue.pop(0)
                        pending[task.remote(cell, threads)] = cell
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        cell = pending.pop(ref)
                        # ray.get re-raises a failed cell's exception here, in the driver.
                        on_done(cell, ray.get(ref))
            finally:
                for ref in pending:  # interrupted or failed: do not leave cells running
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()
