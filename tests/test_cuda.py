"""The CLI's train, evaluate-from-checkpoint and predict paths on a CUDA device.

Skipped without CUDA (CI has none): run on a GPU machine. Every tensor a loop builds must
follow `train.device`; a batch left on the CPU fails here, not in a user's first GPU run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from iteacnet.cli import main
from iteacnet.config import replace

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@pytest.mark.parametrize("method", ["iteacnet", "gcnet", "mmin"])
def test_train_and_predict_on_cuda(tmp_path: Path, method: str) -> None:
    cfg = replace(tiny_config(epochs=2), **{"train.device": "cuda", "model.method": method,
                                            "model.baseline": (("pretrain_epochs", 1),) if method == "mmin" else ()})
    cfg.to_json(tmp_path / "cfg.json")
    assert main(["train", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "run")]) == 0
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert rows and all(np.isfinite(r["waf"]) for r in rows)

    from iteacnet.inference import Predictor

    gpu = Predictor.from_checkpoint(tmp_path / "run" / "seed0", device="cuda")
    cpu = Predictor.from_checkpoint(tmp_path / "run" / "seed0", device="cpu")
    conversation = [{"id": f"u{i}", "speaker": "AB"[i % 2], "features": {m: [0.1 * (i + 1)] * d for m, d in gpu.spec.dims}}
                    for i in range(5)]
    (a,), (b,) = gpu.predict_outputs([conversation]), cpu.predict_outputs([conversation])
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)  # same checkpoint, same outputs on either device


def test_resume_on_cuda_is_exact(tmp_path: Path) -> None:
    """Dropout on the GPU draws from CUDA's generator: its state is saved with the training
    state, so a run stopped and resumed equals an uninterrupted one bit for bit."""
    from iteacnet.data.loading import load_corpus
    from iteacnet.training.engine import fit, prepare

    cfg = replace(tiny_config(epochs=4), **{"train.device": "cuda", "model.dropout": 0.3, "model.input_dropout": 0.3})
    data = prepare(load_corpus(cfg.data), cfg)
    torch.backends.cudnn.deterministic = True
    full = fit(cfg, data, tmp_path / "a")
    fit(cfg, data, tmp_path / "b", stop_after=2)
    resumed = fit(cfg, data, tmp_path / "b")
    assert resumed.history == full.history
    for (k, v), w in zip(full.method.state_dict().items(), resumed.method.state_dict().values()):
        assert torch.equal(v, w), k
