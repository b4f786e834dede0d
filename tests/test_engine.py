"""The training engine: determinism, resumption, checkpoints, UME/IME rows."""

import math

import numpy as np
import pytest
import torch

from conftest import tiny_config
from iteacnet.config import replace
from iteacnet.data.loading import load_corpus
from iteacnet.evaluation.protocols import router_usage, run_ime, run_ume
from iteacnet.training.checkpoint import load_weights, read_checkpoint_files
from iteacnet.training.engine import eval_masks, fit, predict_split, prepare
from iteacnet.training.frameworks import build_method


@pytest.fixture(scope="module")
def data():
    cfg = tiny_config()
    return prepare(load_corpus(cfg.data), cfg)


def _state(method):
    return {k: v.clone() for k, v in method.state_dict().items()}


def test_same_seed_same_result(data):
    cfg = tiny_config()
    a, b = fit(cfg, data), fit(cfg, data)
    assert a.history == b.history
    for (k, v), w in zip(_state(a.method).items(), _state(b.method).values()):
        assert torch.equal(v, w), k
    c = fit(replace(cfg, **{"train.seed": 1}), data)
    assert c.history != a.history


def test_resume_after_interruption_matches_uninterrupted(data, tmp_path):
    cfg = tiny_config(epochs=4)
    full = fit(cfg, data, tmp_path / "a")
    part = fit(cfg, data, tmp_path / "b", stop_after=2)  # "interrupted" after 2 epochs
    assert len(part.history) == 2
    resumed = fit(cfg, data, tmp_path / "b")  # picks up from b/last
    assert resumed.history == full.history
    assert resumed.best_epoch == full.best_epoch
    for (k, v), w in zip(_state(full.method).items(), _state(resumed.method).values()):
        assert torch.equal(v, w), k


def test_checkpoint_reload_predicts_identically(data, tmp_path):
    cfg = tiny_config()
    result = fit(cfg, data, tmp_path)
    cfg2, meta = read_checkpoint_files(tmp_path)
    assert cfg2 == cfg and meta["spec"]["num_outputs"] == data.spec.num_outputs
    assert set(meta["standardization"]) == set(data.corpus.modalities)
    fresh = build_method(data.spec, cfg2.model)
    load_weights(fresh, tmp_path / "model.safetensors")
    mask = eval_masks(data, "test", (0.5,), 0)[0.5]
    a = predict_split(result.method, data.corpus, data.split.test, mask)
    b = predict_split(fresh, data.corpus, data.split.test, mask)
    np.testing.assert_array_equal(a, b)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not an iteacnet checkpoint"):
        read_checkpoint_files(tmp_path)


def test_predictions_do_not_depend_on_batch_composition(data):
    result = fit(tiny_config(epochs=1), data)
    mask = eval_masks(data, "test", (0.3,), 0)[0.3]
    together = predict_split(result.method, data.corpus, data.split.test, mask, batch_size=8)
    alone = predict_split(result.method, data.corpus, data.split.test, mask, batch_size=1)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_ume_rows_cover_every_rate_with_achieved_rates(data):
    cfg = tiny_config()
    rows, method = run_ume(cfg, data)
    assert [r["rate"] for r in rows] == list(cfg.eval.rates)
    for r in rows:
        assert 0.0 <= r["waf"] <= 100.0 and r["protocol"] == "ume"
        assert r["achieved_rate"] == pytest.approx(min(r["rate"], 2 / 3), abs=0.02)
    usage = router_usage(method, data, cfg)
    assert set(usage) == set(data.corpus.modalities)
    for u in usage.values():
        assert u.shape == (cfg.model.student_layers, len(cfg.model.mixers))
        np.testing.assert_allclose(u.sum(1), 1.0, atol=1e-5)


def test_ime_trains_one_model_per_rate(data):
    cfg = replace(tiny_config(epochs=1), **{"eval.rates": (0.0, 0.5)})
    rows = run_ime(cfg, data)
    assert [(r["rate"], r["train_rate"]) for r in rows] == [(0.0, "0.0"), (0.5, "0.5")]
    assert all(r["protocol"] == "ime" and not math.isnan(r["waf"]) for r in rows)


def test_validation_masks_fixed_and_shared(data):
    a = eval_masks(data, "valid", (0.4,), 0)[0.4]
    b = eval_masks(data, "valid", (0.4,), 0)[0.4]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, eval_masks(data, "valid", (0.4,), 1)[0.4])
