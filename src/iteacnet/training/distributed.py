"""Data-parallel training of one run over several processes (GPUs or machines) with torchrun.

    torchrun --nproc_per_node=N -m iteacnet.training.distributed --preset iemocap4 --out runs/ddp
    torchrun --nproc_per_node=N -m iteacnet.cli train --preset iemocap4 --distributed

Design (why the result equals a one-process run up to floating-point reduction order):
- every rank draws the same batches and the same training masks from the same seeded
  generator, then trains on its share of each batch's conversations (every N-th, from its
  rank; `engine.shard_batch`), padded length and all;
- each rank's losses divide by the whole batch's totals (`models.base.BatchTotals`: valid
  utterances, incomplete utterances, ...; counted before sharding), so the ranks' losses add
  up to the one-process loss, whatever each term averages over, and the gradients summed
  over the ranks (one all-reduce of a flat buffer per step) are the one-process gradient;
  clipping and the AdamW step then run on identical gradients on every rank, which keeps
  the weights identical without broadcasts;
- a method's stage change (MMIN's teacher snapshot) happens at an epoch boundary on every
  rank, never at "the first batch this rank sees";
- validation and test predictions are split over the ranks by dialogue and summed, so every
  rank computes the same metrics and makes the same model selection; only rank 0 writes.

Where it is not exact: dropout draws differ (each rank has its own stream, as in any
data-parallel run), so with dropout on, a 2-process run is another draw of the same
training, not the same numbers. A method whose loss couples the utterances of a batch
(CPM-Net's classification loss: class similarities within the batch, centroids from batch
means) sets `couples_batch` and is refused. The README gives the measured differences.

We sum gradients ourselves rather than wrap the method in DistributedDataParallel: methods
train through `training_loss`, not `forward`, and leave parameters unused in some steps
(MMIN's stage 1, a rank without conversations in a small last batch), which DDP handles
only with `find_unused_parameters` and would then turn into zero gradients (AdamW would
decay and update parameters one process leaves alone).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from iteacnet.config import ExperimentConfig, replace
from iteacnet.errors import UserError

TORCHRUN_HINT = "run it under torchrun, e.g. torchrun --nproc_per_node=2 -m iteacnet.training.distributed --preset quick"


class TorchDistributed:
    """`engine.Parallel` over an initialised torch.distributed process group."""

    def __init__(self, rank: int, world: int, device: str = "cpu") -> None:
        self.rank = rank
        self.world = world
        self.device = device

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def sync_grads(self, module: nn.Module) -> None:
        """Sum every parameter's gradient over the ranks, in one flat all-reduce.

        A parameter keeps `grad = None` only where no rank produced a gradient for it, as a
        one-process step over the whole batch would leave it (AdamW then skips it)."""
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return
        dev = params[0].device
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
        chunks = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        flat = self.all_sum(torch.cat([*chunks, flags]))
        has = flat[-len(params):].tolist()
        offset = 0
        for p, h in zip(params, has):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype) if h > 0 else None  # disjoint views of a fresh buffer
            offset += n

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Sum logged scalars over the ranks (a rank may lack a key it never computed)."""
        keys: list[Any] = [None] * self.world
        dist.all_gather_object(keys, sorted(values))
        names = sorted({k for ks in keys for k in ks})
        if not names:
            return {}
        t = torch.tensor([values.get(k, 0.0) for k in names], dtype=torch.float64, device=self.device)
        return dict(zip(names, self.all_sum(t).tolist()))

    def barrier(self) -> None:
        dist.barrier()


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str = "cpu") -> tuple[TorchDistributed, str]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    gloo on CPU, nccl on CUDA (each rank on GPU LOCAL_RANK). Returns the context and the
    device this rank trains on."""
    if not under_torchrun():
        raise RuntimeError(f"distributed training needs torchrun's environment (RANK, WORLD_SIZE); {TORCHRUN_HINT}")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"train.device is {device!r} but CUDA is not available on rank {rank}")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # nccl: name the rank's GPU up front (torch >= 2.3), so barriers need not guess it.
        bind = backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters
        extra: dict[str, Any] = {"device_id": torch.device(device)} if bind else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **extra)
    return TorchDistributed(rank, world, device), device


def train_distributed(cfg: ExperimentConfig, out: Path, protocol: str, seeds: list[int]) -> list[dict[str, Any]]:
    """`iteacnet train` as one rank of a data-parallel run: the same folders and results,
    written by rank 0 (checkpoints per seed, results.csv/json, report.md)."""
    from iteacnet.data.loading import load_corpus
    from iteacnet.evaluation.protocols import ime_runs, train_and_score
    from iteacnet.evaluation.reports import write_report
    from iteacnet.training.engine import prepare

    ctx, device = init_from_env(cfg.train.device)
    try:
        cfg = replace(cfg, **{"train.device": device, "train.progress": cfg.train.progress and ctx.rank == 0})
        data = prepare(load_corpus(cfg.data, progress=cfg.train.progress), cfg)
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            c = replace(cfg, **{"train.seed": seed, "train.protocol": protocol})
            sub = out / f"seed{seed}"
            for rc, folder in [(c, sub)] if protocol == "ume" else ime_runs(c, sub):
                rows.extend(train_and_score(rc, data, folder, columns={"world_size": ctx.world}, parallel=ctx)[0])
            if ctx.rank == 0:
                c.to_json(sub / "config.json")
        if ctx.rank == 0:
            cfg.to_json(out / "config.json")
            md = write_report(rows, out, title=f"{cfg.name} ({protocol.upper()}, {ctx.world} processes)")
            print(md.read_text())
            print(f"results: {out / 'results.csv'}  {out / 'results.json'}  {md}")
        ctx.barrier()  # no rank leaves while rank 0 still writes
        return rows
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    from iteacnet.presets import apply_overrides, load_config, parse_seeds
    from iteacnet.training.recipes import resolve_recipe

    p = argparse.ArgumentParser(prog="python -m iteacnet.training.distributed",
                                description=f"Data-parallel `iteacnet train`; {TORCHRUN_HINT}")
    p.add_argument("--preset", help="named preset (packaged, or ./configs/NAME.json; see `iteacnet list`)")
    p.add_argument("--config", help="an ExperimentConfig JSON file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field, value as JSON (repeatable)")
    p.add_argument("--protocol", choices=["ume", "ime"])
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--out", help="output folder (default runs/<name>-ddp)")
    args = p.parse_args(argv)
    if not under_torchrun():
        raise SystemExit(f"iteacnet: {TORCHRUN_HINT}")
    try:
        cfg = resolve_recipe(load_config(args.preset, args.config, args.set), lambda c: apply_overrides(c, args.set))
        seeds = parse_seeds(args.seeds) if args.seeds else [cfg.train.seed]
    except (UserError, ValueError) as e:  # ValueError: a recipe the method lacks
        raise SystemExit(f"iteacnet: {e}") from None
    out = Path(args.out or f"runs/{cfg.name}-ddp")
    train_distributed(cfg, out, args.protocol or cfg.train.protocol, seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
