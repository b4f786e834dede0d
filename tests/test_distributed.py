"""Data-parallel training (training.distributed): 2 gloo processes on CPU against 1 process.

The two ranks run the real entry point (`python -m iteacnet.training.distributed`'s `main`)
in processes spawned with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

Tolerance: with dropout 0 (dropout draws are per rank, as in any data-parallel run) the
2-process run equals the 1-process run up to floating-point reduction order, for every
method whose loss does not couple the utterances of a batch: validation WAF history and
every test metric within 1e-6, every logged loss term within 1e-5 relative, test outputs
within 1e-5. Each rank's losses divide by the whole batch's totals (`BatchTotals`), which
the in-process test below checks for every registered method in float64 at 1e-12.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_config
from iteacnet.config import ExperimentConfig, replace
from iteacnet.data.loading import load_corpus
from iteacnet.evaluation.protocols import score_test
from iteacnet.training.checkpoint import load_weights
from iteacnet.training.engine import fit, prepare, shard_batch

TOL = 1e-6  # metrics (WAF, accuracy, ... in percent), 1 vs 2 processes
WORLD = 2


def _config(**overrides: Any) -> ExperimentConfig:
    return replace(
        tiny_config(epochs=2, batch_size=5),
        **{"model.hidden": 8, "model.dropout": 0.0, "model.input_dropout": 0.0, "eval.rates": (0.0, 0.4, 0.7),
           **overrides},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, config: str, out: str) -> None:
    # What torchrun would set for this process.
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from iteacnet.training.distributed import main

    main(["--config", config, "--out", out])


@pytest.mark.parametrize("overrides", [
    {"model.framework": "its"},  # ITS: imputation loss over incomplete utterances only
    {"model.method": "mmin", "model.baseline": (("pretrain_epochs", 1),)},  # stage 1, then 3 losses
], ids=["its", "mmin"])
def test_two_gloo_processes_match_one(tmp_path: Path, overrides: dict[str, Any]) -> None:
    cfg = _config(**overrides)
    cfg.to_json(tmp_path / "cfg.json")
    out = tmp_path / "ddp"
    mp.start_processes(_rank, args=(_free_port(), str(tmp_path / "cfg.json"), str(out)), nprocs=WORLD,
                       join=True, start_method="spawn")

    data = prepare(load_corpus(cfg.data), cfg)
    one = fit(cfg, data, tmp_path / "one")
    ref = score_test(one.method, data, cfg, cfg.eval.rates)

    rows = json.loads((out / "results.json").read_text())
    assert {r["world_size"] for r in rows} == {WORLD} and len(rows) == len(ref)
    for r in rows:
        for k, v in ref[r["rate"]].items():
            assert abs(r[k] - v) <= TOL, (r["rate"], k, r[k], v)
    meta = json.loads((out / "seed0" / "meta.json").read_text())
    assert meta["best_epoch"] == one.best_epoch
    np.testing.assert_allclose([h.get("val_waf", -1.0) for h in meta["history"]], [h.get("val_waf", -1.0) for h in one.history], atol=TOL)
    for h2, h1 in zip(meta["history"], one.history, strict=True):  # every logged term, summed over the ranks
        assert sorted(h2) == sorted(h1)
        np.testing.assert_allclose([h2[k] for k in sorted(h1)], [h1[k] for k in sorted(h1)], rtol=1e-5, err_msg=str(h1))
    # Rank 0 wrote the checkpoint (nobody else did); it predicts what the 1-process model does.
    # (Outputs, not weights: a parameter whose exact gradient is 0, like a per-position bias
    # that a LayerNorm removes, gets ~1e-11 of float noise that AdamW scales up to ~lr steps.)
    from iteacnet.training.engine import eval_masks, predict_split
    from iteacnet.training.frameworks import build_method

    method = build_method(data.spec, cfg.model)
    load_weights(method, out / "seed0" / "model.safetensors")
    for mask in [None, *eval_masks(data, "test", (0.7,), cfg.eval.mask_seed).values()]:
        np.testing.assert_allclose(predict_split(method, data.corpus, data.split.test, mask),
                                   predict_split(one.method, data.corpus, data.split.test, mask), atol=1e-5, rtol=0)


def test_shards_partition_every_batch() -> None:
    from iteacnet.data.batching import collate

    data = prepare(load_corpus(_config().data), _config())
    batch = collate(data.corpus, [0, 1, 2, 3, 4])
    mask = batch.available.clone()
    parts = [shard_batch(batch, mask, r, 3) for r in range(3)]
    assert sorted(d for p, _ in parts for d in p.dialogues) == [0, 1, 2, 3, 4]
    assert sum(int(p.valid.sum()) for p, _ in parts) == int(batch.valid.sum())
    assert all(p.valid.shape[1] == batch.valid.shape[1] for p, _ in parts)  # padding kept
    empty, m = shard_batch(collate(data.corpus, [0]), mask[:1], 1, 2)
    assert empty.dialogues == [] and m.shape[0] == 0


# Every registered method and framework, dropout off, ITS/TS with their imputation loss on.
SHARDABLE = [("iteacnet", {"model.framework": f}) for f in ("its", "ts", "gcnet", "complete")] + [
    (m, {}) for m in ("ae", "cra", "mmin", "gcnet")] + [("cpmnet-enc", {"regression": True})]


@pytest.mark.parametrize("method,overrides", SHARDABLE, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_shard_gradients_sum_to_the_batch_gradient(method: str, overrides: dict[str, Any]) -> None:
    """What the all-reduce computes, in one process: each shard's loss divides by the whole
    batch's totals, so the shards' losses and gradients add up to the whole batch's.
    In float64, where reduction order costs ~1e-15 (float32 leaves ~1e-6 on CPM-Net, whose
    code inference takes ten gradient steps), so the tolerance can be tight."""
    from iteacnet.data.batching import iterate_batches
    from iteacnet.masking import sample_mask
    from iteacnet.training.engine import model_input, whole_batch_totals
    from iteacnet.training.frameworks import build_method

    regression = overrides.pop("regression", False)
    cfg = replace(_config(), **{"model.method": method, "model.dropout": 0.0, **overrides})
    data = prepare(load_corpus(cfg.data), cfg)
    if regression:  # the CPM-Net redesign couples a batch only through its classification loss
        data.spec = dataclasses.replace(data.spec, task="regression", num_outputs=1)
    torch.manual_seed(0)
    model = build_method(data.spec, cfg.model).train().double()
    g = torch.Generator().manual_seed(1)
    batch = next(iter(iterate_batches(data.corpus, data.split.train, 7, g)))
    batch = dataclasses.replace(batch, features={k: x.double() for k, x in batch.features.items()})
    mask = sample_mask(batch.valid, 3, 0.5, g, batch.available)
    totals = whole_batch_totals(batch, mask)

    def grads(b, m, t, pretrain=False):
        model.zero_grad(set_to_none=True)
        full = model_input(b, b.available)
        out = model.pretrain_loss(full, b.labels, t) if pretrain else model.training_loss(full, model_input(b, m), b.labels, t)
        out.total.backward()
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])
        return flat, out.parts

    for pretrain in [False] + ([True] if hasattr(model, "pretrain_loss") else []):
        whole, parts = grads(batch, mask, None, pretrain)
        shards = [grads(*shard_batch(batch, mask, r, WORLD), totals, pretrain) for r in range(WORLD)]
        assert whole.abs().sum() > 0 and all(torch.isfinite(s).all() for s, _ in shards)
        torch.testing.assert_close(sum(s for s, _ in shards), whole, atol=1e-12, rtol=1e-10)
        for k, v in parts.items():  # the logged terms add up too
            assert sum(p[k] for _, p in shards) == pytest.approx(v, rel=1e-10, abs=1e-12), k


def test_batch_coupled_methods_refuse_to_shard() -> None:
    """CPM-Net's classification loss compares the utterances of a batch with each other."""
    from iteacnet.training.engine import fit

    class OneRank:
        rank, world = 0, 1

    cfg = replace(_config(), **{"model.method": "cpmnet"})
    data = prepare(load_corpus(cfg.data), cfg)
    with pytest.raises(ValueError, match="couples the utterances"):
        fit(cfg, data, parallel=OneRank())  # type: ignore[arg-type]


def test_entry_point_outside_torchrun_is_a_clear_error(monkeypatch, capsys) -> None:
    from iteacnet.training.distributed import main

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit, match="torchrun --nproc_per_node"):
        main(["--preset", "quick"])
    from iteacnet.cli import main as cli

    assert cli(["train", "--preset", "quick", "--distributed"]) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err
