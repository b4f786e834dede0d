"""Stacked training (training/stacked.py): K seeds of one config as one vmapped model.

Without dropout every member must be the run `fit` trains alone (up to float summation
order); its checkpoint and `last/` are `fit`'s; the grid groups only cells that differ in
their seed.
"""

import math

import numpy as np
import pytest
import torch

from conftest import tiny_config
from iteacnet.benchmark.grid import GridSpec, ResultStore, expand, run_grid, stack_groups
from iteacnet.config import ExperimentConfig, replace
from iteacnet.data.batching import iterate_batches
from iteacnet.data.loading import load_corpus
from iteacnet.evaluation.protocols import run_rows, train_and_score_stacked
from iteacnet.training.checkpoint import load_weights, read_checkpoint_files
from iteacnet.training.engine import (
    batch_generator,
    eval_masks,
    fit,
    init_method,
    predict_split,
    prepare,
    step_loss,
    training_mask,
    whole_batch_totals,
)
from iteacnet.training.frameworks import build_method
from iteacnet.training.stacked import Stack, StackError, fit_stacked, stack_blocker, stack_key

SEEDS = (0, 3)


def _cfg(method="iteacnet", framework="its", epochs=2, dropout=0.0):
    stage1 = (("pretrain_epochs", 1),) if method == "mmin" else ()  # MMIN: one epoch of stage 1, then stage 2
    return replace(tiny_config(epochs=epochs), **{
        "model.method": method, "model.framework": framework,
        "model.dropout": dropout, "model.input_dropout": dropout, "model.baseline": stage1,
    })


@pytest.fixture(scope="module")
def data():
    cfg = tiny_config()
    return prepare(load_corpus(cfg.data), cfg)


def _seeds(cfg):
    return [replace(cfg, **{"train.seed": s}) for s in SEEDS]


def _assert_same_run(alone, member, data, cfg):
    """A stacked member against the lone run: per-epoch losses and scores, weights, test rows."""
    assert len(alone.history) == len(member.history)
    for a, b in zip(alone.history, member.history):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    assert member.best_epoch == alone.best_epoch
    sa, sb = alone.method.state_dict(), member.method.state_dict()
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-4, msg=k)
    mask = eval_masks(data, "test", (0.5,), 0)[0.5]
    out_a = predict_split(alone.method, data.corpus, data.split.test, mask)
    out_b = predict_split(member.method, data.corpus, data.split.test, mask)
    np.testing.assert_allclose(out_b, out_a, rtol=1e-4, atol=1e-4)
    for ra, rb in zip(run_rows(cfg, data, alone), run_rows(cfg, data, member)):
        for k in ("waf", "acc", "achieved_rate"):
            if k in ra:
                assert rb[k] == pytest.approx(ra[k], abs=1e-6), k


@pytest.mark.parametrize("method,framework,group", [
    # all members in one vmapped call (a GPU's default), and one member a call: no vmap, the
    # lone kernels (`Stack._alone`, a CPU's default)
    ("iteacnet", "its", len(SEEDS)), ("ae", "its", len(SEEDS)), ("cra", "its", len(SEEDS)),
    ("iteacnet", "its", 1), ("mmin", "its", len(SEEDS)), ("mmin", "its", 1),
])
def test_stacked_equals_separate_runs_without_dropout(data, method, framework, group):
    cfgs = _seeds(_cfg(method, framework))
    stacked = fit_stacked(cfgs, data, group=group)
    for cfg, member in zip(cfgs, stacked):
        _assert_same_run(fit(cfg, data), member, data, cfg)
    assert stacked[0].history != stacked[1].history  # the seeds differ: own init, data order, masks


def test_padding_a_batch_does_not_change_its_loss(data):
    """The members' batches differ in B and T: padding to the stack's must be invisible."""
    cfg = _cfg(framework="gcnet")
    method = init_method(cfg, data.spec)
    gen = batch_generator(cfg)
    batches = list(iterate_batches(data.corpus, data.split.train, cfg.train.batch_size, gen))
    small = min(batches, key=lambda b: b.valid.shape[0] * b.valid.shape[1])
    big = max(batches, key=lambda b: b.valid.shape[0] * b.valid.shape[1])
    assert small.valid.shape != big.valid.shape
    mask = training_mask(small, cfg.train, gen)
    method.train()
    alone = step_loss(method, small, mask, whole_batch_totals(small, mask)).total.detach()
    stack = Stack([method, method])
    stack.train()
    masks = [mask, training_mask(big, cfg.train, gen)]
    with torch.no_grad():
        padded, _ = stack.losses([small, big], masks, "cpu", slack=math.inf)  # one call: small padded to big
        grouped, _ = stack.losses([small, big], masks, "cpu")  # length buckets: two calls, no padding
    assert float(padded[0]) == pytest.approx(float(alone), rel=1e-5)
    assert float(grouped[0]) == pytest.approx(float(alone), rel=1e-5)
    assert float(grouped[1]) == pytest.approx(float(padded[1]), rel=1e-5)


def test_member_checkpoints_load_and_predict_alone(data, tmp_path):
    cfgs = _seeds(_cfg())
    dirs = [tmp_path / f"s{s}" for s in SEEDS]
    stacked = fit_stacked(cfgs, data, dirs)
    mask = eval_masks(data, "test", (0.3,), 0)[0.3]
    for cfg, d, member in zip(cfgs, dirs, stacked):
        cfg2, meta = read_checkpoint_files(d)
        assert cfg2 == cfg and meta["stacked"] == len(cfgs) and meta["best_epoch"] == member.best_epoch
        fresh = build_method(data.spec, cfg2.model)
        load_weights(fresh, d / "model.safetensors")
        got = predict_split(fresh, data.corpus, data.split.test, mask)
        np.testing.assert_array_equal(got, predict_split(member.method, data.corpus, data.split.test, mask))
        alone = fit(cfg, data, tmp_path / f"alone{cfg.train.seed}")
        _, meta_alone = read_checkpoint_files(tmp_path / f"alone{cfg.train.seed}")
        assert set(meta_alone) | {"stacked"} == set(meta)
        np.testing.assert_allclose(got, predict_split(alone.method, data.corpus, data.split.test, mask), rtol=1e-4, atol=1e-4)


def test_interrupted_stack_resumes_to_the_uninterrupted_result(data, tmp_path):
    cfgs = _seeds(_cfg(epochs=3, dropout=0.1))  # dropout on: its stream is resumed too
    full = fit_stacked(cfgs, data, [tmp_path / f"a{s}" for s in SEEDS])
    part = fit_stacked(cfgs, data, [tmp_path / f"b{s}" for s in SEEDS], stop_after=1)
    assert all(len(r.history) == 1 for r in part)
    resumed = fit_stacked(cfgs, data, [tmp_path / f"b{s}" for s in SEEDS])
    for a, b in zip(full, resumed):
        assert a.history == b.history and a.best_epoch == b.best_epoch
        for (k, v), w in zip(a.method.state_dict().items(), b.method.state_dict().values()):
            assert torch.equal(v, w), k
    # A member's last/ is fit's: the lone run picks it up (same result within float order).
    cfg = _cfg(epochs=3)
    c0 = replace(cfg, **{"train.seed": SEEDS[0]})
    fit_stacked(_seeds(cfg), data, [tmp_path / f"c{s}" for s in SEEDS], stop_after=2)
    _assert_same_run(fit(c0, data), fit(c0, data, tmp_path / f"c{SEEDS[0]}"), data, c0)
    # Members at different epochs cannot share a stack.
    fit(replace(cfg, **{"train.seed": 9}), data, tmp_path / "d9", stop_after=1)
    with pytest.raises(StackError, match="different epochs"):
        fit_stacked([c0, replace(cfg, **{"train.seed": 9})], data, [tmp_path / "d0", tmp_path / "d9"])


def test_a_stack_resumes_across_a_stage_boundary(data, tmp_path):
    """MMIN: stopped after its stage-1 epoch, resumed into stage 2 (the teacher snapshot)."""
    cfgs = _seeds(_cfg("mmin", epochs=3))
    full = fit_stacked(cfgs, data, [tmp_path / f"a{s}" for s in SEEDS])
    assert "pre_loss" in full[0].history[0] and "val_waf" not in full[0].history[0]  # stage 1: no selection
    assert "imagination" in full[0].history[1] and full[0].best_epoch >= 1
    fit_stacked(cfgs, data, [tmp_path / f"b{s}" for s in SEEDS], stop_after=1)
    resumed = fit_stacked(cfgs, data, [tmp_path / f"b{s}" for s in SEEDS])
    for a, b in zip(full, resumed):
        assert a.history == b.history and a.best_epoch == b.best_epoch
        for (k, v), w in zip(a.method.state_dict().items(), b.method.state_dict().values()):
            assert torch.equal(v, w), k
        assert bool(b.method.teacher_ready)


@pytest.mark.parametrize("method,framework", [("iteacnet", "gcnet"), ("mmin", "its")])
def test_dropout_draws_have_the_lone_runs_distribution(data, method, framework):
    """With dropout on a member cannot replay the lone run's draws (one global stream feeds
    the stack, `randomness="different"`). Checked instead: on one batch, the training loss of
    a stacked member over 100 dropout draws has the mean and spread of the lone run's loss
    over as many draws, and the members' draws are not shared (their losses differ)."""
    cfg = _cfg(method, framework, dropout=0.3)
    method = init_method(cfg, data.spec)
    gen = batch_generator(cfg)
    batch = next(iter(iterate_batches(data.corpus, data.split.train, cfg.train.batch_size, gen)))
    mask = training_mask(batch, cfg.train, gen)
    totals = whole_batch_totals(batch, mask)
    method.train()
    torch.manual_seed(1)
    with torch.no_grad():
        lone = torch.tensor([float(step_loss(method, batch, mask, totals).total) for _ in range(100)])
        stack = Stack([method, method])
        stack.train()
        draws = torch.stack([stack.losses([batch, batch], [mask, mask], "cpu")[0] for _ in range(100)])  # (R, 2)
    assert not torch.equal(draws[:, 0], draws[:, 1])
    for k in range(2):
        se = math.sqrt(lone.var() / len(lone) + draws[:, k].var() / len(draws))
        assert abs(float(draws[:, k].mean() - lone.mean())) < 4 * se
        assert 0.75 < float(draws[:, k].std() / lone.std()) < 1.33


def test_unstackable_runs_are_refused_with_a_reason():
    for method in ("gcnet", "cpmnet"):
        why = stack_blocker(_cfg(method))
        assert why is not None and method in why
    assert stack_blocker(_cfg("ae")) is None
    with pytest.raises(StackError, match="differ only in train.seed"):
        fit_stacked([_cfg(), replace(_cfg(), **{"train.lr": 1e-2})], None)  # type: ignore[arg-type]
    assert stack_key(_cfg()) == stack_key(replace(_cfg(), **{"train.seed": 5}))
    assert stack_key(_cfg()) != stack_key(replace(_cfg(), **{"data.fold": 1}))


def test_fallback_trains_unstackable_runs_separately(data, capsys):
    cfgs = _seeds(_cfg("gcnet", epochs=1))
    rows = train_and_score_stacked(cfgs, data, columns=[{"cell": "a"}, {"cell": "b"}], group=2)
    assert "train separately" in capsys.readouterr().err
    assert [r[0]["cell"] for r in rows] == ["a", "b"] and all("stacked" not in r[0] for r in rows)


def _grid_cells(seeds, variants):
    base = replace(_cfg(epochs=1), **{"eval.rates": (0.0, 0.5)})
    spec = GridSpec.from_dict({"variants": list(variants), "corpora": {"synthetic": {"corpus": "synthetic"}},
                               "seeds": list(seeds), "protocols": ["ume", "ime"]})
    return expand(spec, base)


def test_grid_groups_only_cells_that_differ_in_their_seed(capsys):
    cells = _grid_cells(seeds=range(5), variants=("iteacnet", "ae", "gcnet", "mmin"))
    groups = stack_groups(cells, 4)
    assert sorted(c.id for g in groups for c in g) == sorted(c.id for c in cells)
    for g in groups:
        assert 1 <= len(g) <= 4
        cfgs = [ExperimentConfig.from_dict(c.config) for c in g]
        assert len({stack_key(c) for c in cfgs}) == 1
        assert len({(c.variant, c.corpus, c.protocol) for c in g}) == 1
        assert len({c.train.seed for c in cfgs}) == len(g)
        if stack_blocker(cfgs[0]) is not None:
            assert len(g) == 1
    sizes = sorted(len(g) for g in groups if g[0].variant == "iteacnet")
    assert sizes == [1, 1, 1, 4, 4, 4]  # UME and two IME rates: 5 seeds = 4 + 1 each
    assert all(len(g) == 1 for g in stack_groups(cells, 1))
    err = capsys.readouterr().err
    assert "train unstacked: gcnet is not stackable" in err


def test_grid_with_stack_gives_the_unstacked_rows(tmp_path):
    cells = _grid_cells(seeds=(0, 1), variants=("iteacnet", "ae"))
    cells = [c for c in cells if c.protocol == "ume" or c.variant == "ae"]  # ae: UME and two IME rates
    plain = run_grid(cells, ResultStore(tmp_path / "a.jsonl"), progress=False)
    stacked = run_grid(cells, ResultStore(tmp_path / "b.jsonl"), progress=False, stack=2, stack_group=2)
    one_by_one = run_grid(cells, ResultStore(tmp_path / "c.jsonl"), progress=False, stack=2, stack_group=1)
    assert [(r["cell"], r["rate"]) for r in plain] == [(r["cell"], r["rate"]) for r in stacked]
    for a, b, c in zip(plain, stacked, one_by_one):
        assert b["waf"] == pytest.approx(a["waf"], abs=1e-6) and b["peak_mb"] > 0
        assert b["stacked"] == 2
        assert c["waf"] == a["waf"] and "stacked" not in c  # one member a call: one run after another


def test_a_group_of_one_trains_the_runs_one_after_another_exactly_as_alone(data):
    from iteacnet.evaluation.protocols import train_and_score

    cfgs = _seeds(_cfg(epochs=2, dropout=0.2))  # dropout on: the very draws of the lone runs
    rows = train_and_score_stacked(cfgs, data, group=1)
    for c, got in zip(cfgs, rows):
        want, _ = train_and_score(c, data)
        assert [(r["rate"], r["waf"], r["acc"]) for r in got] == [(r["rate"], r["waf"], r["acc"]) for r in want]


def test_cli_stack_needs_the_local_executor(tmp_path):
    from iteacnet.cli import main

    with pytest.raises(SystemExit, match="local executor"):
        main(["benchmark", "--quick", "--out", str(tmp_path), "--executor", "ray", "--stack", "2"])


@pytest.mark.parametrize("flag", ["--stack", "--stack-group", "--workers"])
def test_cli_refuses_a_stack_or_group_below_one(tmp_path, capsys, flag):
    from iteacnet.cli import main

    assert main(["benchmark", "--quick", "--out", str(tmp_path), flag, "0"]) == 2
    assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "cells.jsonl").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_stacked_on_cuda_matches_cpu(data):
    cfgs = _seeds(_cfg())
    on_cpu = fit_stacked(cfgs, data)
    on_gpu = fit_stacked([replace(c, **{"train.device": "cuda"}) for c in cfgs], data)
    for a, b in zip(on_cpu, on_gpu):
        for k, v in a.method.state_dict().items():
            torch.testing.assert_close(b.method.state_dict()[k].cpu(), v, rtol=1e-3, atol=1e-3, msg=k)


def test_length_buckets():
    from iteacnet.training.stacked import length_buckets

    assert length_buckets([63, 20, 30, 12, 62, 21]) == [[0, 4], [2], [5, 1], [3]]
    assert length_buckets([10, 10, 10]) == [[0, 1, 2]]
    assert length_buckets([50, 10], slack=math.inf) == [[0, 1]]
    assert length_buckets([10, 10, 10, 10, 10], most=2) == [[0, 1], [2, 3], [4]]


def test_default_group_bounds_a_cpu_call_and_takes_the_whole_stack_elsewhere():
    from iteacnet.training.stacked import CPU_GROUP, default_group

    assert default_group("cpu", 16) == CPU_GROUP == 1  # no vmap on a CPU: `Stack._alone`
    assert default_group("cpu", 1) == 1
    assert default_group("cuda", 16) == 16


@pytest.mark.parametrize("group", [2, 1])
def test_members_score_together_as_each_scores_alone(data, group):
    """Validation and test scoring of a stack: the members predict each batch in vmapped
    calls of `group` (1: no vmap), and each gets the metrics `score_masks` gives it alone."""
    from iteacnet.training.engine import score_masks
    from iteacnet.training.stacked import score_members

    cfg = _cfg(dropout=0.1)  # eval mode: dropout must be off in the stacked predictor
    members = [init_method(replace(cfg, **{"train.seed": s}), data.spec) for s in (0, 1, 2)]
    masks = eval_masks(data, "valid", (0.0, 0.5), 0)
    together = score_members(Stack(members, group=group), [2, 0], data, "valid", masks, 4, "cpu")
    assert len(together) == 2
    for k, got in zip([2, 0], together):
        alone = score_masks(members[k], data, "valid", masks, 4, "cpu")
        assert got.keys() == alone.keys()
        for rate in alone:
            for name, v in alone[rate].items():
                assert got[rate][name] == pytest.approx(v, abs=1e-6), (k, rate, name)
    assert together[0] != together[1]


def test_a_step_out_of_memory_runs_again_with_smaller_groups(data, capsys):
    """A vmapped call of more than one member "runs out of memory": the step is redone from
    scratch with halved groups, down to one member a call, and equals that stack's step."""
    cfg = _cfg()
    members = [init_method(replace(cfg, **{"train.seed": s}), data.spec) for s in (0, 1, 2, 3)]
    gen = batch_generator(cfg)
    batch = next(iterate_batches(data.corpus, data.split.train, cfg.train.batch_size, gen))
    masks = [training_mask(batch, cfg.train, gen) for _ in members]
    tight, roomy = Stack(members), Stack(members, group=1)
    vmapped = tight._vmapped

    def small_memory(w, *rest):
        if next(iter(w.values())).shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return vmapped(w, *rest)

    tight._vmapped = small_memory
    for st in (tight, roomy):
        st.train()
    got, _ = tight.losses([batch] * 4, masks, "cpu", backward=True)
    want, _ = roomy.losses([batch] * 4, masks, "cpu", backward=True)
    assert tight.group == 1 and "ran out of memory with 4 members" in capsys.readouterr().err
    torch.testing.assert_close(got, want)
    for n, p in tight.params.items():
        torch.testing.assert_close(p.grad, roomy.params[n].grad, msg=n)


@pytest.mark.parametrize("group", [2, 1])
def test_a_bounded_group_trains_the_same_stack(data, group):
    cfgs = [replace(_cfg(), **{"train.seed": s}) for s in (0, 1, 2)]
    wide, narrow = fit_stacked(cfgs, data, group=3), fit_stacked(cfgs, data, group=group)
    for a, b in zip(wide, narrow):
        assert [r["val_waf"] for r in a.history] == pytest.approx([r["val_waf"] for r in b.history], abs=1e-6)
        for k, v in a.method.state_dict().items():
            # as `_assert_same_run`: float order differs (vmapped or not), and Adam's normalised step
            # turns a rounding difference in a near-zero gradient (temporal_mlp's bias) into ~1e-5
            torch.testing.assert_close(b.method.state_dict()[k], v, rtol=1e-4, atol=1e-4, msg=k)


@pytest.mark.parametrize("method,over,seeds,epochs_run", [
    # seed 3 stops one evaluation later than seed 0 (checked against the lone runs below):
    # a stopped member stays frozen in the stack
    ("iteacnet", {"model.framework": "complete", "train.patience": 1, "train.epochs": 6}, (0, 3), [2, 3]),
    ("ae", {"train.batch_unit": "utterances", "train.lr_schedule": "linear", "train.lr_constant_epochs": 1,
            "train.epochs": 3}, (0, 1), [3, 3]),
])
def test_stacked_follows_early_stopping_utterance_batches_and_lr_schedule(data, method, over, seeds, epochs_run):
    cfgs = [replace(_cfg(method), **{**over, "train.seed": s}) for s in seeds]
    stacked = fit_stacked(cfgs, data, group=len(cfgs))  # vmapped
    assert [len(r.history) for r in stacked] == epochs_run
    for cfg, member in zip(cfgs, stacked):
        _assert_same_run(fit(cfg, data), member, data, cfg)
