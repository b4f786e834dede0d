"""Every token mixer: shape, gradients, no NaN, and the padding contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import lengths_to_valid
from iteacnet.models.mixers import MIXERS

D, H, MAX_LEN = 16, 2, 16
KW = {"heads": H, "max_len": MAX_LEN, "dropout": 0.0}


def make(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    mixer = MIXERS[name](D, **KW)
    return mixer.eval()


def test_registry_has_the_six_candidates() -> None:
    assert MIXERS.names() == ["skip", "dwconv3", "conv1x1", "avgpool", "attention", "temporal_mlp"]


@pytest.mark.parametrize("name", MIXERS.names())
def test_shape_gradients_no_nan(name: str) -> None:
    mixer = make(name).train()
    T = 10
    valid = lengths_to_valid([10, 7, 0], T)  # the last conversation is all padding
    x = torch.randn(3, T, D, requires_grad=True)
    bias = torch.randn(3, H, T, T, requires_grad=True)
    y = mixer(x, valid, bias)
    assert y.shape == (3, T, D)
    assert torch.isfinite(y).all()
    assert y[~valid].abs().sum() == 0
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} gets no gradient"
    if name == "attention":
        assert bias.grad is not None and bias.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MIXERS.names())
def test_padding_and_batch_invariance(name: str) -> None:
    mixer = make(name)
    torch.manual_seed(1)
    x = torch.randn(1, 6, D)
    bias = torch.randn(1, H, 6, 6)
    alone = mixer(x, torch.ones(1, 6, dtype=torch.bool), bias)
    # padded to 9 with garbage, next to a longer conversation and a fully padded one
    xb = torch.randn(3, 9, D) * 5
    xb[1, :6] = x[0]
    bb = torch.randn(3, H, 9, 9) * 5
    bb[1, :, :6, :6] = bias[0]
    both = mixer(xb, lengths_to_valid([9, 6, 0], 9), bb)
    torch.testing.assert_close(both[1, :6], alone[0], atol=1e-5, rtol=1e-4)
    assert both[1, 6:].abs().sum() == 0 and both[2].abs().sum() == 0


def test_avgpool_is_poolformer_pooling() -> None:
    mixer = make("avgpool")
    x = torch.randn(1, 7, D)
    want = F.avg_pool1d(x.transpose(1, 2), 3, 1, 1, count_include_pad=False).transpose(1, 2) - x
    torch.testing.assert_close(mixer(x, torch.ones(1, 7, dtype=torch.bool), None), want)


def test_attention_matches_softmax_with_bias() -> None:
    mixer = make("attention")
    T = 5
    x, bias = torch.randn(1, T, D), torch.randn(1, H, T, T)
    q, k, v = mixer.qkv(x).split(D, -1)  # type: ignore[operator]
    q, k, v = (t.view(1, T, H, D // H).transpose(1, 2) for t in (q, k, v))
    a = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5 + bias, -1)
    want = mixer.proj((a @ v).transpose(1, 2).reshape(1, T, D))  # type: ignore[operator]
    torch.testing.assert_close(mixer(x, torch.ones(1, T, dtype=torch.bool), bias), want)


def test_temporal_mlp_rejects_long_conversations() -> None:
    mixer = make("temporal_mlp")
    T = MAX_LEN + 1
    with pytest.raises(ValueError, match="max_len"):
        mixer(torch.randn(1, T, D), torch.ones(1, T, dtype=torch.bool), None)
