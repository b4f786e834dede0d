"""Issue 10: recipes, training-rate regimes, Table 2 under IME, ECCE variants, paired
statistics, early stopping, utterance batches and the lr schedule."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import lengths_to_valid, tiny_config
from iteacnet.benchmark.grid import GridSpec, expand
from iteacnet.benchmark.variants import VARIANTS, variants_for_table
from iteacnet.config import (
    ECCEConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    parse_override,
    replace,
)
from iteacnet.data.batching import iterate_utterance_batches
from iteacnet.data.loading import load_corpus
from iteacnet.evaluation.protocols import train_and_score
from iteacnet.evaluation.reports import grid_report, paired_difference, paired_table, parse_selector
from iteacnet.models.base import METHODS
from iteacnet.models.ecce import ECCE
from iteacnet.training.engine import (
    describe_training_rate,
    fit,
    lr_factor,
    make_optimizer,
    prepare,
    stopped_early,
    training_rate,
)
from iteacnet.training.frameworks import build_method
from iteacnet.training.recipes import RECIPES, apply_recipe, resolve_recipe


@pytest.fixture(scope="module")
def data():
    cfg = tiny_config()
    return prepare(load_corpus(cfg.data), cfg)


# ---------------------------------------------------------------------------- recipes
def _config_keys() -> set[str]:
    d = ExperimentConfig().to_dict()
    return {f"{s}.{k}" for s, sub in d.items() if isinstance(sub, dict) for k in sub}


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_names_real_fields_and_cites_each(name):
    recipe = RECIPES[name]
    assert name in METHODS or name == "iteacnet"
    assert set(recipe.overrides) <= _config_keys(), set(recipe.overrides) - _config_keys()
    missing = set(recipe.overrides) - set(recipe.sources)
    assert not missing, f"{name}: values without a source: {sorted(missing)}"
    cfg = apply_recipe(replace(ExperimentConfig(), **{"model.method": name}), name)
    assert cfg.train.recipe == name


def test_own_recipe_resolves_to_the_method_and_user_overrides_win():
    cfg = replace(ExperimentConfig(), **{"train.recipe": "own", "train.epochs": 7, "train.lr": 1.0})
    over = ["train.epochs=3"]

    def reapply(c: ExperimentConfig) -> ExperimentConfig:
        for o in over:
            c = parse_override(c, o)
        return c

    out = resolve_recipe(cfg, reapply)
    assert out.train.recipe == "iteacnet"
    assert out.train.epochs == 3  # the user's --set wins over the recipe
    assert out.train.lr == RECIPES["iteacnet"].overrides["train.lr"]  # the recipe wins over the preset
    assert resolve_recipe(out) == out  # resolved once: idempotent
    shared = replace(ExperimentConfig(), **{"train.lr": 1.0})
    assert resolve_recipe(shared) is shared


def test_grid_resolves_each_variant_on_its_own_method():
    base = replace(tiny_config(), **{"train.recipe": "own"})
    cells = expand(GridSpec.from_dict({"variants": ["iteacnet", "ts-nas-tf"], "corpora": {"synthetic": {}},
                                       "seeds": [0], "protocols": ["ume"]}), base,
                   reapply=lambda c: replace(c, **{"train.epochs": 1}))
    assert {c.config["train"]["recipe"] for c in cells} == {"iteacnet"}
    assert {c.config["train"]["epochs"] for c in cells} == {1}


def test_rows_record_recipe_regime_and_epochs_run(data):
    cfg = tiny_config(epochs=2, rate_dist="fixed", rate_values=(0.7,))
    rows, _ = train_and_score(cfg, data)
    assert {r["recipe"] for r in rows} == {"shared"}
    assert {r["train_rate"] for r in rows} == {"0.7"}
    assert {r["epochs_run"] for r in rows} == {2}


def test_complete_framework_rows_claim_no_student_and_no_training_rate(data):
    cfg = replace(tiny_config(epochs=1), **{"model.framework": "complete", "eval.rates": (0.0,)})
    rows, _ = train_and_score(cfg, data)
    assert rows[0]["student"] == "" and rows[0]["train_rate"] == ""


# ---------------------------------------------------------------------------- rate regimes
def test_uniform_default_draws_the_same_rates_as_before():
    train = TrainConfig()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(20):
        assert training_rate(train, g1) == float(torch.rand((), generator=g2)) * 0.7


@pytest.mark.parametrize(("dist", "values", "label"), [
    ("fixed", (0.7,), "0.7"), ("uniform", (0.2, 0.5), "U[0.2,0.5]"), ("choice", (0.0, 0.3, 0.7), "{0.0,0.3,0.7}"),
])
def test_rate_distributions(dist, values, label):
    train = TrainConfig(rate_dist=dist, rate_values=values)
    g = torch.Generator().manual_seed(0)
    draws = [training_rate(train, g) for _ in range(300)]
    if dist == "fixed":
        assert set(draws) == {0.7}
    elif dist == "uniform":
        assert min(draws) >= 0.2 and max(draws) <= 0.5 and max(draws) - min(draws) > 0.25
    else:
        assert set(draws) == set(values)
    assert describe_training_rate(train) == label
    ime = dataclasses.replace(train, protocol="ime", rate=0.3)
    assert training_rate(ime, g) == 0.3 and describe_training_rate(ime) == "0.3"


# ---------------------------------------------------------------------------- Table 2 under IME
def test_table2_runs_under_ime_and_ume_and_reports_both(tmp_path):
    base = replace(tiny_config(epochs=1), **{"eval.rates": (0.0, 0.7)})
    spec = GridSpec.from_dict({"tables": [2], "corpora": {"synthetic": {}}, "seeds": [0], "protocols": ["ume", "ime"]})
    cells = expand(spec, base)
    names = set(variants_for_table(2))
    assert {"its-tf-tf", "gcnet-tf", "ts-nas-tf", "iteacnet"} <= names
    for v in names:
        assert {c.protocol for c in cells if c.variant == v} == {"ume", "ime"}
    assert sum(c.protocol == "ime" for c in cells) == len(names) * 2  # one model per rate
    rows = [{"variant": v, "variant_label": VARIANTS[v].label, "corpus": "synthetic", "method": "iteacnet",
             "protocol": p, "seed": 0, "rate": r, "waf": 50.0 + r} for v in names for p in ("ume", "ime") for r in (0.0, 0.7)]
    text = grid_report(rows, tmp_path).read_text()
    assert "Table 2: training frameworks (IME, as the paper)" in text
    assert "Table 2 (extra): training frameworks under UME" in text


# ---------------------------------------------------------------------------- ECCE variants
ECCE_VARIANTS = [("dense", 0.0, "head"), ("shared", 0.0, "head"), ("shared", 0.5, "pair"), ("dense", 0.5, "pair")]


@pytest.mark.parametrize(("kind", "drop", "bias"), ECCE_VARIANTS)
def test_ecce_variants_gradients_and_padding(kind, drop, bias):
    torch.manual_seed(0)
    e = ECCE(8, 2, kernel=3, max_span=4, local_kind=kind, local_dropout=drop, bias=bias).eval()
    h = torch.randn(2, 6, 8)
    valid = lengths_to_valid([6, 4], 6)
    out = e(h, valid)
    assert out is not None and out.shape == (2, 2 if bias == "head" else 1, 6, 6)
    assert torch.isfinite(out).all()
    # Padding never leaks: the shorter conversation alone, or next to another, gives the same bias.
    alone = e(h[1:2, :4], valid[1:2, :4])
    assert torch.allclose(out[1:2, :, :4, :4], alone, atol=1e-6)
    h2 = h.clone()
    h2[1, 4:] = 100.0  # garbage in the padding
    assert torch.allclose(e(h2, valid)[1], out[1], atol=1e-6)
    e.train()
    e(h, valid).sum().backward()
    for name, p in e.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # The linear bias b adds a per-head constant that softmax ignores; its gradient through
        # this sum is still defined (not None), which is all a plain sum can check.


@pytest.mark.parametrize(("kind", "drop", "bias"), ECCE_VARIANTS)
def test_every_parameter_of_a_model_with_ecce_variants_gets_a_gradient(data, kind, drop, bias):
    cfg = tiny_config()
    model = replace(cfg.model, ecce=ECCEConfig(local_kind=kind, local_dropout=drop, bias=bias), framework="complete")
    method = build_method(data.spec, model)
    from iteacnet.data.batching import iterate_batches
    from iteacnet.training.engine import model_input

    batch = next(iterate_batches(data.corpus, data.split.train, 4))
    full = model_input(batch, batch.available)
    method.training_loss(full, full, batch.labels).total.backward()
    # The linear bias of W (b) is a per-head constant when T <= max_span: softmax ignores it.
    dead = {n for n, _ in method.named_parameters() if n.endswith("proj.bias")}
    for n, p in method.named_parameters():
        if n not in dead:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_shared_kernel_starts_as_a_moving_average():
    e = ECCE(4, 2, kernel=3, local_kind="shared")
    h = torch.arange(12.0).reshape(1, 3, 4)
    L = e.local_context(h, torch.ones(1, 3, dtype=torch.bool))
    assert torch.allclose(L[0, 1], h[0].sum(0) / 3)  # softmax(0, 0, 0) = 1/3 each
    assert torch.allclose(L[0, 0], (h[0, 0] + h[0, 1]) / 3)  # zero padding at the edge


# ---------------------------------------------------------------------------- paired statistics
def test_paired_difference_matches_a_hand_computed_case():
    a = {0: (70.0, 60.0), 1: (72.0, 61.0), 2: (71.0, 65.0)}
    b = {0: (69.0, 58.0), 1: (70.0, 60.0), 2: (71.5, 61.0)}
    rows = [{"variant": v, "corpus": "c", "protocol": "ume", "seed": s, "fold": 0, "rate": r, "waf": w}
            for v, table in (("A", a), ("B", b)) for s, ws in table.items() for r, w in zip((0.0, 0.7), ws)]
    res = paired_difference(rows, parse_selector("A"), parse_selector("variant=B"))
    # rate 0.0: diffs 1, 2, -0.5 -> mean 0.8333, sd 1.2583, t(0.975, 2) = 4.302653
    d0 = np.array([1.0, 2.0, -0.5])
    half = 4.302652729911275 * d0.std(ddof=1) / math.sqrt(3)
    s0 = res["rates"][0.0]
    assert s0["n"] == 3 and s0["mean"] == pytest.approx(d0.mean())
    assert s0["lo"] == pytest.approx(d0.mean() - half) and s0["hi"] == pytest.approx(d0.mean() + half)
    # average over rates, per pair: (1+2)/2, (2+1)/2, (-0.5+4)/2
    avg = np.array([1.5, 1.5, 1.75])
    assert res["average"]["mean"] == pytest.approx(avg.mean())
    assert "Average" in paired_table(res, "A", "B")


def test_paired_difference_refuses_ambiguous_selectors():
    rows = [{"variant": "A", "corpus": "c", "protocol": "ume", "seed": 0, "rate": 0.0, "waf": 1.0, "train_rate": t}
            for t in ("0.7", "U[0.0,0.7]")] + [{"variant": "B", "corpus": "c", "protocol": "ume", "seed": 0, "rate": 0.0, "waf": 0.0}]
    with pytest.raises(ValueError, match="more than one row"):
        paired_difference(rows, {"variant": "A"}, {"variant": "B"})
    res = paired_difference(rows, {"variant": "A", "train_rate": "0.7"}, {"variant": "B"})
    assert res["rates"][0.0]["mean"] == 1.0 and res["rates"][0.0]["n"] == 1


# ---------------------------------------------------------------------------- early stopping, batches, lr
def test_stopped_early_counts_evaluations_since_the_best():
    hist = [{"epoch": 0, "val_waf": 1.0}, {"epoch": 1, "val_waf": 0.5}, {"epoch": 2}, {"epoch": 3, "val_waf": 0.4}]
    assert not stopped_early(hist, 0, TrainConfig(patience=0))
    assert not stopped_early(hist, 0, TrainConfig(patience=3))
    assert stopped_early(hist, 0, TrainConfig(patience=2))


def test_patience_stops_training_and_a_resumed_run_stops_alike(data, tmp_path):
    cfg = tiny_config(epochs=12, patience=1, lr=1e-6)  # a tiny lr: validation soon stops improving
    full = fit(cfg, data, tmp_path / "a")
    assert len(full.history) < 12
    assert full.history[-1]["epoch"] == full.best_epoch + 1
    part = fit(cfg, data, tmp_path / "b", stop_after=1)
    rest = fit(cfg, data, tmp_path / "b")
    assert rest.history == full.history and rest.best_epoch == full.best_epoch
    assert rest.seconds >= part.seconds  # train_seconds adds up all segments of a resumed run


def test_utterance_batches_cover_each_training_utterance_once(data):
    g = torch.Generator().manual_seed(0)
    batches = list(iterate_utterance_batches(data.corpus, data.split.train, 5, g))
    rows = np.concatenate([b.index[:, 0].numpy() for b in batches])
    assert all(b.valid.shape[1] == 1 and b.valid.all() for b in batches)
    assert sorted(rows.tolist()) == sorted(data.corpus.rows_of(data.split.train).tolist())
    again = np.concatenate([b.index[:, 0].numpy() for b in iterate_utterance_batches(
        data.corpus, data.split.train, 5, torch.Generator().manual_seed(0))])
    assert np.array_equal(rows, again)


def test_utterance_batches_train_a_baseline(data):
    cfg = replace(tiny_config(epochs=1, batch_unit="utterances", batch_size=16), **{"model.method": "ae"})
    res = fit(cfg, data)
    assert math.isfinite(res.history[0]["loss"])


def test_optimizer_and_linear_lr_schedule(data):
    method = build_method(data.spec, ModelConfig(hidden=16, heads=2, max_len=16))
    assert type(make_optimizer(method, TrainConfig(optimizer="adam"))) is torch.optim.Adam
    assert type(make_optimizer(method, TrainConfig())) is torch.optim.AdamW
    t = TrainConfig(epochs=10, lr_schedule="linear", lr_constant_epochs=4)
    assert [lr_factor(t, e) for e in range(5)] == [1.0] * 5
    assert lr_factor(t, 9) == pytest.approx(1 - 5 / 7)
    assert lr_factor(TrainConfig(), 9) == 1.0
