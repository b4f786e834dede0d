"""ITEAC block (TF / NAS), cross-attention and the encoder layer's fusion."""

from __future__ import annotations

import pytest
import torch

from conftest import lengths_to_valid
from iteacnet.models.encoder import CrossAttention, EncoderLayer, ITEACBlock, fusion_target
from iteacnet.models.mixers import MIXERS

D, H = 16, 2
SUBSETS = [("text",), ("text", "audio"), ("text", "audio", "visual")]


def block(kind: str) -> ITEACBlock:
    torch.manual_seed(0)
    return ITEACBlock(D, H, kind, max_len=16)


@pytest.mark.parametrize("kind", ["TF", "NAS"])
def test_block_shapes_routes_and_gradients(kind: str) -> None:
    b = block(kind).train()
    valid = lengths_to_valid([8, 5], 8)
    x = torch.randn(2, 8, D) * valid[..., None]
    y, alpha = b(x, valid, torch.randn(2, H, 8, 8))
    assert y.shape == (2, 8, D) and y[~valid].abs().sum() == 0
    if kind == "TF":
        assert alpha is None and b.router is None
    else:
        assert alpha is not None and alpha.shape == (2, 8, len(MIXERS))
        torch.testing.assert_close(alpha[valid].sum(-1), torch.ones(int(valid.sum())))
        assert alpha[~valid].abs().sum() == 0
    y.pow(2).sum().backward()
    for name, p in b.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{kind} {name} gets no gradient"


@pytest.mark.parametrize("k", range(len(MIXERS)))
def test_top1_equals_soft_when_router_is_one_hot(k: int) -> None:
    b = block("NAS").eval()
    assert b.router is not None
    with torch.no_grad():
        b.router.weight.zero_()
        b.router.bias.zero_()
        b.router.bias[k] = 100.0
    valid = lengths_to_valid([8, 5], 8)
    x, bias = torch.randn(2, 8, D) * valid[..., None], torch.randn(2, H, 8, 8)
    soft, a_soft = b(x, valid, bias)
    b.routing = "top1"
    hard, a_hard = b(x, valid, bias)
    torch.testing.assert_close(hard, soft, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a_hard, a_soft)
    with pytest.raises(ValueError):
        b.routing = "argmax"


def test_top1_only_at_inference() -> None:
    b = block("NAS")
    b.routing = "top1"
    valid = torch.ones(1, 6, dtype=torch.bool)
    _, alpha = b.train()(torch.randn(1, 6, D), valid)
    assert alpha is not None and (alpha < 1).all()  # soft while training
    _, alpha = b.eval()(torch.randn(1, 6, D), valid)
    assert alpha is not None and set(alpha.unique().tolist()) <= {0.0, 1.0}


def test_cross_attention_masks_padding_keys() -> None:
    torch.manual_seed(0)
    ca = CrossAttention(D, H).eval()
    t, a = torch.randn(1, 5, D), torch.randn(1, 5, D)
    alone = ca(t, a, torch.ones(1, 5, dtype=torch.bool))
    tb, ab = torch.randn(1, 8, D), torch.randn(1, 8, D) * 9
    tb[0, :5], ab[0, :5] = t[0], a[0]
    padded = ca(tb, ab, lengths_to_valid([5], 8))
    torch.testing.assert_close(padded[0, :5], alone[0], atol=1e-5, rtol=1e-4)
    # residual: t + CA(LN t, LN a); padded outputs keep their input
    torch.testing.assert_close(padded[0, 5:], tb[0, 5:])


@pytest.mark.parametrize("mods", SUBSETS + [("audio", "visual")])
@pytest.mark.parametrize("kind", ["TF", "NAS"])
def test_encoder_layer_fusion(mods: tuple[str, ...], kind: str) -> None:
    torch.manual_seed(0)
    layer = EncoderLayer(mods, D, H, kind, max_len=16).eval()
    target = fusion_target(mods)
    assert target == ("text" if "text" in mods else mods[0])
    assert list(layer.cross.keys()) == [m for m in mods if m != target]
    assert list(layer.blocks.keys()) == list(mods)
    valid = lengths_to_valid([7, 4], 7)
    xs = {m: torch.randn(2, 7, D) * valid[..., None] for m in mods}
    out, routes = layer(xs, valid, {m: None for m in mods})
    assert set(out) == set(mods) and all(v.shape == (2, 7, D) for v in out.values())
    assert set(routes) == (set(mods) if kind == "NAS" else set())
    # non-target modalities carry their own block output, untouched by fusion
    for m in mods:
        if m != target:
            torch.testing.assert_close(out[m], layer.blocks[m](xs[m], valid, None)[0])
