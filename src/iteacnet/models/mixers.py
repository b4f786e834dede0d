"""Token mixers: the NAS candidates of the ITEAC encoder (METHOD §3), one interface.

Axis legend: B = conversations, T = utterances (padded), D = hidden size, H = attention heads.

Every mixer is `cls(dim, **kw)` with `forward(x (B, T, D), valid (B, T) bool, bias) -> (B, T, D)`,
where `bias` is the ECCE bias (B, H, T, T) or None; only `attention` reads it. Keyword
arguments a mixer does not need (heads, max_len, dropout) are accepted and ignored, so the
router can build every candidate the same way.

Padding contract: an output at a valid utterance never depends on padding or on another
conversation of the batch, and outputs at padding are 0. The candidates are BurgerFormer's
token-mixer set adapted from images to utterance sequences.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iteacnet.models.base import is_dense
from iteacnet.registry import Registry

MIXERS: Registry[type[nn.Module]] = Registry("token mixer")


def _mask(valid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return valid.to(x.dtype).unsqueeze(-1)  # (B, T, 1)


def key_padding_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask (B, 1, 1, T): 0 on valid keys, -inf on padding.

    A conversation with no valid utterance at all (a fully padded row of the batch) may attend
    to every key, so its softmax has a finite entry and stays NaN-free; its outputs are zeroed.
    """
    ok = valid | ~valid.any(dim=1, keepdim=True)  # (B, T)
    mask = torch.zeros(ok.shape, dtype=dtype, device=valid.device)
    mask = mask.masked_fill(~ok, float("-inf"))
    return mask[:, None, None, :]  # (B, 1, 1, T)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """`scaled_dot_product_attention` (B, H, T, D/H); under `dense_layout` (stacked training,
    inside vmap) written out, since the fused kernels vmap picks cannot differentiate the
    mask, and ECCE's bias in it is learned."""
    if not is_dense():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + mask  # (B, H, T, T)
    return F.dropout(logits.softmax(-1), dropout_p) @ v


@MIXERS.register("skip")
class Skip(nn.Module):
    """Identity: lets the router switch token mixing off for an utterance."""

    def __init__(self, dim: int, **kw: Any) -> None:
        super().__init__()

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return x * _mask(valid, x)


@MIXERS.register("dwconv3")
class DWConv3(nn.Module):
    """Depthwise Conv1d, kernel 3, along the utterance axis (zero padding = padding zeroed)."""

    def __init__(self, dim: int, **kw: Any) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        m = _mask(valid, x)
        y = self.conv((x * m).transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        return y * m


@MIXERS.register("conv1x1")
class Conv1x1(nn.Module):
    """Pointwise (per-utterance) linear map: mixes channels, not utterances."""

    def __init__(self, dim: int, **kw: Any) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.fc(x) * _mask(valid, x)


@MIXERS.register("avgpool")
class AvgPool(nn.Module):
    """PoolFormer pooling: mean over the valid utterances of a 3-window, minus the input.

    Dividing by the number of valid neighbours is `count_include_pad=False` with padding
    utterances treated like the sequence border. Subtracting x because the block adds it back.
    """

    def __init__(self, dim: int, **kw: Any) -> None:
        super().__init__()

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        m = _mask(valid, x)
        xs = F.pad(x * m, (0, 0, 1, 1))  # (B, T+2, D)
        ms = F.pad(m, (0, 0, 1, 1))  # (B, T+2, 1)
        total = xs[:, :-2] + xs[:, 1:-1] + xs[:, 2:]  # (B, T, D)
        count = ms[:, :-2] + ms[:, 1:-1] + ms[:, 2:]  # (B, T, 1)
        return (total / count.clamp_min(1.0) - x) * m


@MIXERS.register("attention")
class Attention(nn.Module):
    """Multi-head self-attention; ECCE's bias is added to the logits (paper Eqs. 10–11)."""

    def __init__(
        self, dim: int, heads: int = 8, dropout: float = 0.0, attn_dropout: float = 0.0, **kw: Any
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)  # 3 x (B, T, D)
        q, k, v = (
            t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v)
        )  # (B, H, T, D/H)
        mask = key_padding_mask(valid, q.dtype)  # (B, 1, 1, T)
        if bias is not None:
            mask = mask + bias.to(q.dtype)  # (B, H, T, T)
        y = attention(q, k, v, mask, self.attn_dropout if self.training else 0.0)  # (B, H, T, D/H)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj_drop(self.proj(y)) * _mask(valid, x)


@MIXERS.register("temporal_mlp")
class TemporalMLP(nn.Module):
    """MLP-Mixer-style token mixing: a learned (max_len x max_len) map along the time axis.

    out[t] = sum_{s valid} W[t, s] x[s] + b[t]. A conversation of length T uses W[:T, :T], so
    its output does not change when the batch pads it further. Longer conversations are an
    error: the weight is only defined up to `max_len` (ModelConfig.max_len).
    """

    def __init__(self, dim: int, max_len: int = 128, **kw: Any) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, max_len))
        self.bias = nn.Parameter(torch.zeros(max_len))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(
                f"temporal_mlp is defined for conversations of up to max_len={self.max_len} "
                f"utterances, got a batch padded to {T}; raise ModelConfig.max_len"
            )
        m = _mask(valid, x)
        w = self.weight[:T, :T].to(x.dtype)  # (T, T)
        y = torch.einsum("ts,bsd->btd", w, x * m) + self.bias[:T, None].to(x.dtype)  # (B, T, D)
        return y * m


def length_limit(module: nn.Module) -> int | None:
    """The most utterances a conversation may have in `module`: its temporal_mlp mixers'
    smallest max_len (None: no such mixer, no limit from the weights)."""
    limits = [m.max_len for m in module.modules() if isinstance(m, TemporalMLP)]
    return min(limits) if limits else None
