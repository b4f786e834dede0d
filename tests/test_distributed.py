"""Data-parallel training (training.distributed): 2 gloo processes on CPU against 1 process.

The two ranks run the real entry point (`python -m iteacnet.training.distributed`'s `main`)
in processes spawned with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

Tolerance: with dropout 0 and a framework whose losses are means over valid utterances
(`gcnet`: emotion loss on the complete + the masked batch), the 2-process run equals the
1-process run up to floating-point reduction order: validation WAF history and every test
metric within 1e-6 (they are in fact bitwise equal here), weights within 1e-5.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

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


def _config() -> ExperimentConfig:
    return replace(
        tiny_config(epochs=2, batch_size=5),
        **{"model.hidden": 8, "model.dropout": 0.0, "model.input_dropout": 0.0, "model.framework": "gcnet",
           "eval.rates": (0.0, 0.4, 0.7)},
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


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    cfg = _config()
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
    np.testing.assert_allclose([h["val_waf"] for h in meta["history"]], [h["val_waf"] for h in one.history], atol=TOL)
    np.testing.assert_allclose([h["loss"] for h in meta["history"]], [h["loss"] for h in one.history], rtol=1e-5)
    # Rank 0 wrote the checkpoint (nobody else did); its weights are the 1-process weights.
    two = prepare(load_corpus(cfg.data), cfg)
    from iteacnet.training.frameworks import build_method

    method = build_method(two.spec, cfg.model)
    load_weights(method, out / "seed0" / "model.safetensors")
    for (k, a), b in zip(method.state_dict().items(), one.method.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=k)


def test_shards_partition_every_batch() -> None:
    from iteacnet.data.batching import collate

    data = prepare(load_corpus(_config().data), _config())
    batch = collate(data.corpus, [0, 1, 2, 3, 4])
    mask = batch.available.clone()
    parts = [shard_batch(batch, mask, r, 3) for r in range(3)]
    assert sorted(d for p, _, _ in parts for d in p.dialogues) == [0, 1, 2, 3, 4]
    assert sum(w for _, _, w in parts) == pytest.approx(1.0)
    assert all(p.valid.shape[1] == batch.valid.shape[1] for p, _, _ in parts)  # padding kept
    empty, m, w = shard_batch(collate(data.corpus, [0]), mask[:1], 1, 2)
    assert empty.dialogues == [] and w == 0.0 and m.shape[0] == 0


@pytest.mark.parametrize("framework,rec", [("gcnet", (1.0,)), ("complete", (1.0,)), ("its", (0.0, 0.0, 0.0))])
def test_weighted_shard_gradients_sum_to_the_batch_gradient(framework: str, rec: tuple[float, ...]) -> None:
    """What the all-reduce computes, in one process: exact for means over valid utterances.

    (ITS's imputation MSE averages over incomplete utterances instead; with it the sum is
    off by ~0.4% of the gradient norm on such a batch, hence rec 0 here: see the README.)"""
    from iteacnet.data.batching import iterate_batches
    from iteacnet.masking import sample_mask
    from iteacnet.training.engine import model_input
    from iteacnet.training.frameworks import build_method

    cfg = replace(_config(), **{"model.framework": framework, "model.rec_weights": rec})
    data = prepare(load_corpus(cfg.data), cfg)
    torch.manual_seed(0)
    method = build_method(data.spec, cfg.model).train()
    g = torch.Generator().manual_seed(1)
    batch = next(iter(iterate_batches(data.corpus, data.split.train, 7, g)))
    mask = sample_mask(batch.valid, 3, 0.5, g, batch.available)

    def grads(b, m, w):
        method.zero_grad(set_to_none=True)
        (method.training_loss(model_input(b, b.available), model_input(b, m), b.labels).total * w).backward()
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in method.parameters()])

    whole = grads(batch, mask, 1.0)
    summed = sum(grads(*shard_batch(batch, mask, r, WORLD)) for r in range(WORLD))
    torch.testing.assert_close(summed, whole, atol=1e-6, rtol=1e-5)


def test_entry_point_outside_torchrun_is_a_clear_error(monkeypatch) -> None:
    from iteacnet.training.distributed import main

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit, match="torchrun --nproc_per_node"):
        main(["--preset", "quick"])
    from iteacnet.cli import main as cli

    with pytest.raises(SystemExit, match="torchrun --nproc_per_node"):
        cli(["train", "--preset", "quick", "--distributed"])
