"""The five baselines (ae, cra, mmin, cpmnet, gcnet) against the Method protocol.

Axis legend: B conversations, T utterances (padded), M modalities, C outputs.
Tiny sizes (hidden 16, a 12-dialogue synthetic corpus) keep the whole file to seconds.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
import torch
from torch import nn

from iteacnet.config import ModelConfig, SyntheticConfig
from iteacnet.data.batching import Batch, collate
from iteacnet.data.corpus import Corpus
from iteacnet.data.synthetic import make_synthetic_corpus
from iteacnet.models import METHODS, ModelInput, ModelSpec
from iteacnet.models.baselines.common import utterances
from iteacnet.models.baselines.gcnet import window_graph
from iteacnet.training.engine import model_input

NAMES = ("ae", "cra", "mmin", "cpmnet", "cpmnet-enc", "gcnet")
SUBSETS = (("text",), ("text", "audio"), ("text", "audio", "visual"))
TASKS = ("classification", "regression")
DIMS = {"text": 10, "audio": 6, "visual": 8}
# Fewer cascade blocks / inference steps than the defaults: same code paths, less time.
FAST: dict[str, dict[str, Any]] = {"mmin": {"n_blocks": 2}, "cra": {"n_blocks": 2}, "cpmnet": {"test_steps": 20}, "cpmnet-enc": {"infer_steps": 3}}


@cache
def corpus(modalities: tuple[str, ...]) -> Corpus:
    cfg = SyntheticConfig(num_dialogues=12, min_len=3, max_len=9, dims=(10, 6, 8), seed=1)
    return make_synthetic_corpus(cfg).select_modalities(modalities)


def build(name: str, modalities: tuple[str, ...], task: str, **kwargs: Any) -> nn.Module:
    spec = ModelSpec(
        dims=tuple((m, DIMS[m]) for m in modalities),
        num_outputs=4 if task == "classification" else 1,
        task=task,
        num_speakers=2,
    )
    options = {**FAST.get(name, {}), **kwargs}
    cfg = ModelConfig(method=name, hidden=16, dropout=0.1, baseline=tuple(sorted(options.items())))
    torch.manual_seed(0)
    return METHODS[name](spec, cfg)


def batch(modalities: tuple[str, ...], dialogues: list[int], pad_to: int | None = None) -> Batch:
    return collate(corpus(modalities), dialogues, pad_to)


def labels_of(b: Batch, task: str) -> torch.Tensor:
    if task == "classification":
        return b.labels
    return (b.labels.float() - 1.5) / 1.5 * b.valid  # scores in [-1, 1]


def dialogue_mask(b: Batch, rate: float = 0.5) -> torch.Tensor:
    """(B, T, M) presence mask, seeded per dialogue (the same wherever the dialogue is batched);
    every valid utterance keeps at least one modality."""
    B, T, M = b.available.shape
    rows = []
    for d in b.dialogues:
        g = torch.Generator().manual_seed(1000 + d)
        keep = torch.rand(64, M, generator=g) >= rate  # a fixed draw, cut to T below
        first = torch.randint(0, M, (64,), generator=g)
        keep[torch.arange(64), first] |= ~keep.any(-1)
        rows.append(keep[:T])
    return torch.stack(rows) & b.available & b.valid[..., None]


def inputs(modalities: tuple[str, ...], dialogues: list[int], pad_to: int | None = None) -> tuple[Batch, ModelInput, ModelInput]:
    b = batch(modalities, dialogues, pad_to)
    return b, model_input(b, b.available), model_input(b, dialogue_mask(b))


def adam_steps(model: nn.Module, modalities: tuple[str, ...], task: str, steps: int, lr: float = 1e-2) -> list[float]:
    """`steps` Adam steps on a fixed batch and mask (stage 1 first for MMIN); the losses."""
    b, full, masked = inputs(modalities, list(range(8)))
    y = labels_of(b, task)
    opt = torch.optim.Adam([g for group in model.param_groups(lr, lr) for g in group["params"]], lr=lr)
    model.train()
    if hasattr(model, "pretrain_loss"):
        for _ in range(10):
            opt.zero_grad()
            model.pretrain_loss(full, y).total.backward()
            opt.step()
    losses = []
    for _ in range(steps):
        out = model.training_loss(full, masked, y)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(float(out.total.detach()))
    return losses


def test_all_registered() -> None:
    assert set(NAMES) <= set(METHODS.names())


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("modalities", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", NAMES)
def test_loss_gradients_and_predict(name: str, modalities: tuple[str, ...], task: str) -> None:
    model = build(name, modalities, task)
    b, full, masked = inputs(modalities, [0, 1, 2])
    y = labels_of(b, task)
    model.train()
    out = model.training_loss(full, masked, y)
    assert torch.isfinite(out.total) and all(v == v for v in out.parts.values())
    out.total.backward()
    if hasattr(model, "pretrain_loss"):  # MMIN's stage-1 parameters (its fusion classifier)
        pre = model.pretrain_loss(full, y)
        assert torch.isfinite(pre.total)
        pre.total.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for n, p in trainable.items():
        assert p.grad is not None, f"{n} receives no gradient"
        assert torch.isfinite(p.grad).all(), n
    if len(modalities) > 1:  # something is missing, so the imputation parts learn too
        silent = [n for n, p in trainable.items() if p.grad is not None and not bool(p.grad.any())]
        assert not silent, f"zero gradient: {silent}"
    grouped = {id(p) for g in model.param_groups(1e-3, 1e-3) for p in g["params"]}
    assert grouped == {id(p) for p in trainable.values()}

    model.eval()
    pred = model.predict(masked)
    C = 4 if task == "classification" else 1
    assert pred.shape == (*b.valid.shape, C)
    assert torch.isfinite(pred).all()
    assert not pred[~b.valid].any()  # nothing leaks onto padding
    with torch.no_grad():  # how the engine predicts
        assert torch.allclose(model.predict(masked), pred, atol=1e-6)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", NAMES)
def test_batch_and_padding_invariance(name: str, task: str) -> None:
    """A conversation's prediction does not depend on its batch-mates or on padding."""
    mods = SUBSETS[-1]
    model = build(name, mods, task)
    adam_steps(model, mods, task, steps=2)  # MMIN's snapshot and CPM-Net's centroids get set
    model.eval()
    _, _, alone = inputs(mods, [3])
    _, _, padded = inputs(mods, [3], pad_to=alone.valid.shape[1] + 4)
    _, _, together = inputs(mods, [5, 3, 7])
    T = int(alone.valid.sum())
    ref = model.predict(alone)[0, :T]
    assert torch.allclose(model.predict(padded)[0, :T], ref, atol=1e-5)
    assert torch.allclose(model.predict(together)[1, :T], ref, atol=1e-5)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", NAMES)
def test_adam_steps_lower_the_loss(name: str, task: str) -> None:
    model = build(name, SUBSETS[-1], task)
    losses = adam_steps(model, SUBSETS[-1], task, steps=30)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.95 * losses[0], losses


def test_gcnet_graph_respects_windows_and_padding() -> None:
    valid = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    speakers = torch.tensor([[0, 1, 0, 0, 1, 0], [1, 1, 0, 0, 0, 0]])
    adj, temporal, speaker = window_graph(valid, speakers, 2, window_past=2, window_future=1)
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    expect = (j >= i - 2) & (j <= i + 1)
    assert torch.equal(adj, expect[None] & valid[:, :, None] & valid[:, None, :])
    assert temporal[0, 3, 1] == 0 and temporal[0, 3, 3] == 1 and temporal[0, 3, 4] == 2
    assert speaker[0, 1, 0] == 1 * 2 + 0 and speaker[1, 0, 1] == 1 * 2 + 1
    full, _, _ = window_graph(valid, speakers, 2, window_past=-1, window_future=-1)
    assert torch.equal(full, valid[:, :, None] & valid[:, None, :])


def test_cpmnet_enc_inference_fits_the_present_views_deterministically() -> None:
    mods = SUBSETS[-1]
    model = build("cpmnet-enc", mods, "classification", infer_steps=10)
    adam_steps(model, mods, "classification", steps=5)
    model.eval()
    _, _, masked = inputs(mods, [0, 1])
    u = utterances(masked, model.spec)
    flags = u.present.float()
    start = model.encoder(torch.cat([u.concat(model.spec.modalities), flags], -1))
    with torch.no_grad():
        h = model.infer(u, differentiable=False)
        before = model.view_errors(start, u, per_dim=True)
        after = model.view_errors(h, u, per_dim=True)
    assert (after <= before + 1e-6).all() and after.mean() < before.mean()
    for p in model.parameters():
        p.grad = None
    with torch.no_grad():
        first = model.predict(masked)
    assert torch.equal(model.predict(masked), first)  # no sampling anywhere
    assert all(p.grad is None for p in model.parameters())  # inference leaves weights alone


def test_mmin_snapshots_its_pretrained_encoders_once() -> None:
    mods = SUBSETS[-1]
    model = build("mmin", mods, "classification")
    b, full, masked = inputs(mods, [0, 1])
    model.train()
    opt = torch.optim.Adam([p for g in model.param_groups(1e-2, 1e-2) for p in g["params"]], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model.pretrain_loss(full, b.labels).total.backward()
        opt.step()
    pretrained = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    for _ in range(3):
        opt.zero_grad()
        model.training_loss(full, masked, b.labels).total.backward()
        opt.step()
    assert bool(model.teacher_ready)
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, pretrained[k])  # frozen at the end of stage 1
    assert not torch.equal(model.encoders.state_dict()[k], pretrained[k])  # the encoders go on


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown ae option"):
        build("ae", ("text",), "classification", n_blokcs=3)
    build("gcnet", ("text",), "classification", pretrain_epochs=2)  # read by the engine: allowed


# ---------------------------------------------------------------------------- CPM-Net (original)
def _trained_cpmnet(task: str = "classification", **kw: Any) -> nn.Module:
    model = build("cpmnet", SUBSETS[-1], task, **kw)
    adam_steps(model, SUBSETS[-1], task, steps=3)
    return model


def test_cpmnet_codes_persist_per_utterance() -> None:
    """A training utterance keeps its code (and Adam state) from batch to batch, whichever
    batch it comes in, found by its complete features; new utterances get new codes."""
    mods = SUBSETS[-1]
    model = build("cpmnet", mods, "classification")
    model.train()
    for dialogues in ([0, 1], [1, 2], [2, 1, 0]):
        b, full, masked = inputs(mods, dialogues)
        model.training_loss(full, masked, b.labels)
    n_utt = {d: int(collate(corpus(mods), [d]).valid.sum()) for d in (0, 1, 2)}
    assert model.codes.shape[0] == sum(n_utt.values())
    assert sorted(model.code_t.tolist()) == sorted([2] * n_utt[0] + [3] * n_utt[1] + [2] * n_utt[2])
    labels = torch.cat([collate(corpus(mods), [d]).labels[0, : n_utt[d]] for d in (0, 1, 2)])
    assert sorted(model.code_labels.tolist()) == sorted(labels.tolist())


def test_cpmnet_test_codes_are_the_originals_adam_fit() -> None:
    """`fit_codes` = Adam from zero on each utterance's reconstruction of its present views,
    decoders fixed (checked against torch.optim.Adam and autograd; TF and torch Adam differ
    only in where eps enters)."""
    model = _trained_cpmnet(test_steps=40, test_lr=0.01)
    _, _, masked = inputs(SUBSETS[-1], [4, 5])
    u = utterances(masked, model.spec)
    got = model.fit_codes(u)
    h = torch.zeros(u.present.shape[0], model.latent, requires_grad=True)
    opt = torch.optim.Adam([h], lr=0.01, eps=1e-8)
    for _ in range(40):
        opt.zero_grad()
        model.view_errors(h, u, detach_decoders=True).sum().backward()
        opt.step()
    torch.testing.assert_close(got, h.detach(), atol=1e-5, rtol=1e-4)
    model.eval()
    with torch.no_grad():  # scores: similarity to each class's mean training code (classfiy.ave)
        means = torch.stack([model.codes[model.code_labels == c].mean(0) for c in range(4)])
        torch.testing.assert_close(model.predict(masked)[masked.valid], got @ means.T)


def test_cpmnet_state_dict_carries_the_code_table() -> None:
    """The code table grows in training; a fresh model loads a saved one of any size."""
    model = _trained_cpmnet()
    fresh = build("cpmnet", SUBSETS[-1], "classification")
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.codes, model.codes) and torch.equal(fresh.code_keys, model.code_keys)
    _, _, masked = inputs(SUBSETS[-1], [6])
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh.predict(masked), model.predict(masked))


# ---------------------------------------------------------------------------- Table 5
# The paper's feature sizes (text 1024, audio 512, visual 1024), four classes, two speakers,
# each method at its recipe's sizes. Hand-derived from the reference architectures
# (zeroQiaoba/GCNet@c2dfd3b; docs/METHOD-NOTES.md, "Baselines and their recipes"):
#   FcClassifier(d, [128, 128], o) = (128d + 128) + (128·128 + 128) + (128o + o)
#     netA 512→128: 98,688; netL/netV 1024→128: 164,224 each          encoders   427,136
#     netAA 384→512: 131,840; netLL/netVV 384→1024: 197,888 each       decoders   527,616
#     netC 384→4: 66,308 (AE, CRA; MMIN's stage-1 netC too)
#   SimpleFcAE(384, [256, 128]): 98,560 + 32,896 + 33,024 + 98,688 = 263,168
#   ResidualAE(384, [256, 128]) block 263,168; transition 2·(384² + 384) = 295,680
#   ResidualAE(384, [256, 128, 64]) block 98,560 + 32,896 + 8,256 + 8,320 + 33,024 + 98,688
#     = 279,744; × 5 + 295,680 = 1,694,400; MMIN netC 320→4: 41,088 + 16,512 + 516 = 58,116
#   AE   = 427,136 + 527,616 + 66,308 + 263,168                      = 1,284,228 (paper 1.29M)
#   CRA  = 427,136 + 527,616 + 66,308 + 3·263,168 + 295,680          = 2,106,244 (paper 2.11M)
#   MMIN = 427,136 + 2·1,694,400 + 58,116                            = 3,874,052 (paper 3.87M)
#   CPM-Net decoders 128 → 512/1024/1024: 128·2,560 + 2,560          =   330,240 (+ 128 per code)
#   GCNet, D_e = 200, graph 100, input 2,560 (gcnet/model.py):
#     BiLSTM(2560, 200, 2 layers): 2·(800·2,760 + 1,600) + 2·(800·600 + 1,600) = 5,382,400
#     per branch: RGCN R·40,000 + 40,100; GraphConv 20,100; BiLSTM(500, 500, 2 layers)
#       2·(2,000·1,000 + 4,000) + 2·(2,000·1,500 + 4,000) = 10,016,000; Linear 1,000→500 500,500
#       temporal (R = 3) 10,696,700; speaker (R = 2² = 4) 10,736,700
#     smax_fc 500→4: 2,004; linear_rec 500→2,560: 1,282,560          = 28,100,364 used
#     built but never called: GRU(2560, 200, 2 layers, bi) 4,036,800 and, time_attn off, two
#     MatchingAttention('general2') Linear(1,000, 1,000) 1,001,000 each   +6,038,800
#                                                                    = 34,139,164 (paper 34.14M)
HAND_COUNTS = {"ae": 1_284_228, "cra": 2_106_244, "mmin": 3_874_052, "cpmnet": 330_240, "gcnet": 28_100_364}
TABLE5 = {"ae": 1.29e6, "cra": 2.11e6, "mmin": 3.87e6, "gcnet": 34.14e6}
GCNET_UNUSED = 4_036_800 + 2 * 1_001_000


@pytest.mark.parametrize("name", sorted(HAND_COUNTS))
def test_parameter_counts_at_the_papers_sizes(name: str) -> None:
    from iteacnet.config import ExperimentConfig
    from iteacnet.config import replace as cfg_replace
    from iteacnet.models.base import count_parameters
    from iteacnet.training.recipes import apply_recipe

    cfg = apply_recipe(cfg_replace(ExperimentConfig(), **{"model.method": name}), name).model
    spec = ModelSpec(dims=(("text", 1024), ("audio", 512), ("visual", 1024)), num_outputs=4, num_speakers=2)
    model = METHODS[name](spec, cfg)
    count = count_parameters(model)
    if name == "mmin":  # stage 1's classifier and the frozen encoder snapshot are separate models there
        count -= count_parameters(model.pretrain_classifier) + count_parameters(model.teacher)
    assert count == HAND_COUNTS[name]
    if name == "gcnet":
        count += GCNET_UNUSED
    if name in TABLE5:
        assert abs(count / TABLE5[name] - 1) < 0.02, (name, count)


def test_reference_init_is_the_mmin_code_bases() -> None:
    """N(0, 0.02) Linear weights and zero biases (AE/CRA, MMIN stage 2); Kaiming for MMIN's
    stage-1 networks; the frozen snapshot starts equal to the encoders."""
    spec = ModelSpec(dims=(("text", 300), ("audio", 200)), num_outputs=4)
    torch.manual_seed(0)
    ae = METHODS["ae"](spec, ModelConfig(method="ae", hidden=64, baseline=(("init", "normal"),)))
    weights = torch.cat([m.weight.detach().flatten() for m in ae.modules() if isinstance(m, nn.Linear)])
    assert abs(float(weights.std()) - 0.02) < 1e-3
    assert all(not m.bias.any() for m in ae.modules() if isinstance(m, nn.Linear))
    mmin = METHODS["mmin"](spec, ModelConfig(method="mmin", hidden=64, baseline=(("init", "reference"),)))
    first = mmin.encoders.nets["text"][0].weight  # Kaiming-normal, fan_in 300: std sqrt(2/300)
    assert abs(float(first.detach().std()) / (2 / 300) ** 0.5 - 1) < 0.05
    assert abs(float(mmin.classifier[0].weight.detach().std()) - 0.02) < 2e-3
    assert all(torch.equal(a, b) for a, b in zip(mmin.teacher.state_dict().values(), mmin.encoders.state_dict().values()))
    with pytest.raises(ValueError, match="init must be"):
        METHODS["cra"](spec, ModelConfig(method="cra", hidden=8, baseline=(("init", "xavier"),)))
