"""ITEACNet end to end on tiny tensors: shapes, gradients, padding, routing, seeds, size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import lengths_to_valid
from iteacnet.config import ECCEConfig, ModelConfig
from iteacnet.models.base import ModelInput, ModelSpec
from iteacnet.models.encoder import ITEACBlock
from iteacnet.models.iteacnet import EncoderOutput, ITEACNet

DIMS = {"text": 12, "audio": 8, "visual": 10}
SUBSETS = [("text",), ("text", "audio"), ("text", "audio", "visual")]
KINDS = ["TF", "NAS"]
# tiny; max_span < T so ECCE's linear bias is not a softmax no-op and gets a gradient
CFG = ModelConfig(
    hidden=16, heads=2, dropout=0.0, input_dropout=0.0, max_len=16, ecce=ECCEConfig(max_span=3)
)


def spec_of(mods: tuple[str, ...], outputs: int = 3) -> ModelSpec:
    return ModelSpec(dims=tuple((m, DIMS[m]) for m in mods), num_outputs=outputs, num_speakers=2)


def batch(spec: ModelSpec, lengths: list[int], T: int, seed: int = 0) -> ModelInput:
    g = torch.Generator().manual_seed(seed)
    valid = lengths_to_valid(lengths, T)  # (B, T)
    B, M = len(lengths), len(spec.modalities)
    present = (torch.rand(B, T, M, generator=g) > 0.3) & valid[..., None]
    feats = {
        m: torch.randn(B, T, d, generator=g) * present[..., i : i + 1]
        for i, (m, d) in enumerate(spec.dims)
    }
    speakers = torch.randint(0, 2, (B, T), generator=g) * valid
    return ModelInput(features=feats, present=present, valid=valid, speakers=speakers)


def build(mods: tuple[str, ...], kind: str, layers: int = 2, cfg: ModelConfig = CFG) -> ITEACNet:
    torch.manual_seed(0)
    return ITEACNet(spec_of(mods), cfg, kind=kind, layers=layers)


def select(x: ModelInput, b: int, T: int) -> ModelInput:
    return ModelInput(
        features={m: f[b : b + 1, :T] for m, f in x.features.items()},
        present=x.present[b : b + 1, :T],
        valid=x.valid[b : b + 1, :T],
        speakers=x.speakers[b : b + 1, :T],
    )


@pytest.mark.parametrize("mods", SUBSETS)
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_gradients(mods: tuple[str, ...], kind: str) -> None:
    model = build(mods, kind, layers=2).train()
    x = batch(model.spec, [10, 6, 0], 10)  # includes a fully padded conversation
    out = model(x)
    assert isinstance(out, EncoderOutput)
    assert out.logits.shape == (3, 10, 3) and torch.isfinite(out.logits).all()
    assert out.logits[~x.valid].abs().sum() == 0
    assert len(out.hiddens) == 2 and all(h.shape == (3, 10, 16) for h in out.hiddens)
    if kind == "TF":
        assert out.routes == [] and model.router_parameters() == []
    else:
        assert len(out.routes) == 2 and all(set(r) == set(mods) for r in out.routes)
        assert all(a.shape == (3, 10, 6) for r in out.routes for a in r.values())
    loss = out.logits.pow(2).sum() + sum(h.pow(2).sum() for h in out.hiddens)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize("mods", SUBSETS)
@pytest.mark.parametrize("kind", KINDS)
def test_padding_and_batch_invariance(mods: tuple[str, ...], kind: str) -> None:
    model = build(mods, kind).eval()
    x = batch(model.spec, [11, 7, 0], 11, seed=3)
    for f in x.features.values():  # garbage in the padding must not leak
        f[~x.valid] = 7.0
    out = model(x)
    alone = model(select(x, 1, 7))
    torch.testing.assert_close(out.logits[1, :7], alone.logits[0], atol=1e-5, rtol=1e-4)
    for h, h1 in zip(out.hiddens, alone.hiddens):
        torch.testing.assert_close(h[1, :7], h1[0], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out.logits).all() and out.logits[2].abs().sum() == 0


@pytest.mark.parametrize("mods", SUBSETS)
def test_top1_matches_soft_when_router_is_one_hot(mods: tuple[str, ...]) -> None:
    model = build(mods, "NAS").eval()
    k = 4  # "attention": the path that uses ECCE
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ITEACBlock) and m.router is not None:
                m.router.weight.zero_()
                m.router.bias.zero_()
                m.router.bias[k] = 100.0
    x = batch(model.spec, [9, 5], 9)
    soft = model(x)
    model.set_routing("top1")
    hard = model(x)
    torch.testing.assert_close(hard.logits, soft.logits, atol=1e-5, rtol=1e-4)
    assert all(r[m][..., k][x.valid].eq(1).all() for r in hard.routes for m in r)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_given_seed(kind: str) -> None:
    mods = ("text", "audio", "visual")
    a, b = build(mods, kind), build(mods, kind)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    x = batch(a.spec, [8, 5], 8)
    assert torch.equal(a.eval()(x).logits, b.eval()(x).logits)


def test_parameter_groups_partition_the_parameters() -> None:
    model = build(("text", "audio", "visual"), "NAS")
    router = {id(p) for p in model.router_parameters()}
    rest = {id(p) for p in model.non_router_parameters()}
    assert router and not router & rest
    assert router | rest == {id(p) for p in model.parameters()}
    report = model.parameter_report()
    parts = sum(v for k, v in report.items() if k != "total")
    assert parts == report["total"] == sum(p.numel() for p in model.parameters())


def test_ecce_switches_and_nas_without_attention() -> None:
    mods = ("text", "audio")
    off = build(mods, "TF", cfg=dataclasses.replace(CFG, ecce=ECCEConfig(enabled=False)))
    assert off.parameter_report()["ecce"] == 0
    no_attn = build(mods, "NAS", cfg=dataclasses.replace(CFG, mixers=("skip", "avgpool")))
    assert len(no_attn.ecce) == 0
    out = no_attn(batch(no_attn.spec, [6, 4], 6))
    assert out.routes[0]["text"].shape == (2, 6, 2)


def test_speaker_embedding_is_optional() -> None:
    with_spk = build(("text",), "TF")
    assert with_spk.speaker is not None
    torch.manual_seed(0)
    single = ITEACNet(dataclasses.replace(spec_of(("text",)), num_speakers=1), CFG, "TF", 1)
    assert single.speaker is None
    torch.manual_seed(0)
    off = ITEACNet(spec_of(("text",)), CFG, "TF", 1, speaker_embedding=False)
    assert off.speaker is None


def test_parameter_counts_at_method_defaults() -> None:
    """METHOD §8 sizes; the paper reports 2.19M (teacher) and 3.88M (student)."""
    spec = ModelSpec(dims=(("text", 1024), ("audio", 512), ("visual", 1024)), num_outputs=4)
    cfg = ModelConfig()  # D = 128, H = 8
    teacher = ITEACNet(spec, cfg, "TF", cfg.teacher_layers).parameter_report()
    student = ITEACNet(spec, cfg, "NAS", cfg.student_layers).parameter_report()
    print("\nteacher", teacher, "\nstudent", student)
    assert 1.5e6 < teacher["total"] < 4e6
    assert 2.5e6 < student["total"] < 6e6
    assert student["router"] == 4 * 3 * (128 * 6 + 6)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    """Long conversations recompute layers in backward; results must not change."""
    from iteacnet.config import ModelConfig as _MC
    from iteacnet.models.base import ModelInput as _MI
    from iteacnet.models.base import ModelSpec as _MS
    from iteacnet.models.iteacnet import ITEACNet as _Net

    spec = _MS(dims=(("text", 6), ("audio", 4)), num_outputs=3)
    B, T = 2, 9
    g = torch.Generator().manual_seed(0)
    x = _MI(
        features={"text": torch.randn(B, T, 6, generator=g), "audio": torch.randn(B, T, 4, generator=g)},
        present=torch.ones(B, T, 2, dtype=torch.bool),
        valid=torch.ones(B, T, dtype=torch.bool),
        speakers=torch.zeros(B, T, dtype=torch.long),
    )
    grads = []
    for above in (0, 4):  # never / always (T = 9 > 4)
        torch.manual_seed(0)
        cfg = _MC(hidden=16, heads=2, max_len=16, dropout=0.1, attn_dropout=0.1, checkpoint_above=above)
        net = _Net(spec, cfg, kind="NAS", layers=2).train()
        torch.manual_seed(1)  # same dropout draws
        loss = net(x).logits.square().mean()
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    assert len(grads[0][1]) == len(grads[1][1])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
