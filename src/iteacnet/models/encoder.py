"""The ITEAC encoder (METHOD §3) and the encoder layer with cross-modal fusion (METHOD §4).

Axis legend: B = conversations, T = utterances (padded), D = hidden size, H = attention heads,
K = token-mixer candidates.

    ITEACBlock   MetaFormer block  x = x + Mixer(LN(x));  x = x + MLP(LN(x))
                 TF:  Mixer = self-attention with the ECCE bias, Router = identity
                 NAS: Mixer = sum_k alpha_k(x) op_k(x), alpha = softmax(Router(LN(x))) per utterance
    CrossAttention  t = t + CA(q = LN(t), k = v = LN(a))
    EncoderLayer    one block per modality, then cross-attention rounds into the fusion target

Padding: every module zeroes its outputs at padding, and valid outputs never see padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from iteacnet.models.mixers import MIXERS, Attention, attention, key_padding_mask

KINDS = ("TF", "NAS")
ROUTINGS = ("soft", "top1")


class MLP(nn.Module):
    """Channel MLP of the MetaFormer block: Linear(D -> ratio*D), GELU, Dropout, Linear(-> D)."""

    def __init__(self, dim: int, ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


class ITEACBlock(nn.Module):
    """One MetaFormer block; `kind` "TF" (attention only) or "NAS" (routed mixture of `mixers`).

    forward(x (B, T, D), valid (B, T), bias (B, H, T, T) | None) -> (x (B, T, D), alpha (B, T, K) | None).
    `routing` ("soft" | "top1") is a settable attribute; top-1 (one-hot argmax per utterance)
    applies at inference only (`eval()`), training always uses the soft mixture so the router
    gets gradients. alpha is 0 at padding.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kind: str = "TF",
        mixers: Sequence[str] = tuple(MIXERS.names()),
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_len: int = 128,
        routing: str = "soft",
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown encoder kind {kind!r}; choices: {', '.join(KINDS)}")
        self.kind = kind
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_ratio, dropout)
        self.mlp_drop = nn.Dropout(dropout)
        self.mixer_names: tuple[str, ...]
        self.router: nn.Linear | None
        if kind == "TF":
            self.mixer_names = ("attention",)
            self.mixers = nn.ModuleList([Attention(dim, heads=heads, dropout=dropout, attn_dropout=attn_dropout)])
            self.router = None  # identity router: the single mixer gets weight 1
        else:
            if not mixers:
                raise ValueError("a NAS block needs at least one token mixer")
            self.mixer_names = tuple(mixers)
            self.mixers = nn.ModuleList(
                [
                    MIXERS[n](dim, heads=heads, dropout=dropout, max_len=max_len, attn_dropout=attn_dropout)
                    for n in self.mixer_names
                ]
            )
            self.router = nn.Linear(dim, len(self.mixer_names))
        self.routing = routing

    @property
    def routing(self) -> str:
        return self._routing

    @routing.setter
    def routing(self, mode: str) -> None:
        if mode not in ROUTINGS:
            raise ValueError(f"unknown routing {mode!r}; choices: {', '.join(ROUTINGS)}")
        self._routing = mode

    def route(self, xn: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mixture weights alpha (B, T, K) from the normed input xn (B, T, D)."""
        assert self.router is not None
        alpha = F.softmax(self.router(xn), dim=-1)  # (B, T, K)
        if self.routing == "top1" and not self.training:
            alpha = F.one_hot(alpha.argmax(-1), alpha.shape[-1]).to(alpha.dtype)
        return alpha * valid.to(alpha.dtype).unsqueeze(-1)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = valid.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        xn = self.norm1(x)  # (B, T, D)
        alpha: torch.Tensor | None = None
        if self.router is None:
            mixed = self.mixers[0](xn, valid, bias)  # (B, T, D)
        else:
            alpha = self.route(xn, valid)  # (B, T, K)
            mixed = torch.zeros_like(x)
            hard = self.routing == "top1" and not self.training
            for k, op in enumerate(self.mixers):
                w = alpha[..., k : k + 1]  # (B, T, 1)
                if hard and not bool(w.any()):
                    continue  # top-1: skip candidates no utterance chose
                mixed = mixed + w * op(xn, valid, bias)
        x = x + mixed
        x = x + self.mlp_drop(self.mlp(self.norm2(x))) * m  # LN(0) != 0, so re-zero padding
        return x, alpha


class CrossAttention(nn.Module):
    """Fusion round: `t + CA(q = LN(t), k = v = LN(a))`, keys masked to valid utterances."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, t: torch.Tensor, a: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        B, T, D = t.shape
        q = self.q(self.norm_q(t))  # (B, T, D)
        k, v = self.kv(self.norm_kv(a)).split(D, dim=-1)  # 2 x (B, T, D)
        q, k, v = (
            z.view(B, T, self.heads, D // self.heads).transpose(1, 2) for z in (q, k, v)
        )  # (B, H, T, D/H)
        y = attention(q, k, v, key_padding_mask(valid, q.dtype), self.attn_dropout if self.training else 0.0)  # (B, H, T, D/H)
        y = self.proj_drop(self.proj(y.transpose(1, 2).reshape(B, T, D)))  # (B, T, D)
        return t + y * valid.to(t.dtype).unsqueeze(-1)


def fusion_target(modalities: Sequence[str]) -> str:
    """The modality the others are fused into: text, else the first one present."""
    if not modalities:
        raise ValueError("an encoder layer needs at least one modality")
    return "text" if "text" in modalities else modalities[0]


class EncoderLayer(nn.Module):
    """One ITEAC block per modality (own weights), then sequential cross-attention into text.

    Paper Eq. 7 / METHOD §4: `t <- t + CA(t, audio)`, then `t <- t + CA(t, visual)`, one round
    per non-text modality present, in `modalities` order (canonically audio, then visual).
    Text-only layers have no cross-attention. The fused text is the layer's latent h^l; the
    other modalities pass on their block outputs unchanged. Without text (e.g. audio+visual
    data), the first modality present plays text's role.

    forward(xs {m: (B, T, D)}, valid (B, T), biases {m: (B, H, T, T) | None})
        -> (xs {m: (B, T, D)}, routes {m: (B, T, K)}; routes empty for TF)
    """

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        heads: int,
        kind: str = "TF",
        mixers: Sequence[str] = tuple(MIXERS.names()),
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        max_len: int = 128,
        routing: str = "soft",
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.target = fusion_target(self.modalities)
        self.blocks = nn.ModuleDict(
            {
                m: ITEACBlock(dim, heads, kind, mixers, mlp_ratio, dropout, max_len, routing, attn_dropout)
                for m in self.modalities
            }
        )
        self.sources = tuple(m for m in self.modalities if m != self.target)
        self.cross = nn.ModuleDict({m: CrossAttention(dim, heads, dropout, attn_dropout) for m in self.sources})

    def forward(
        self,
        xs: dict[str, torch.Tensor],
        valid: torch.Tensor,
        biases: dict[str, torch.Tensor | None],
        recompute: bool = False,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out: dict[str, torch.Tensor] = {}
        routes: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            if recompute:  # one block at a time: the recomputation holds one block's T x T terms
                out[m], alpha = checkpoint(self.blocks[m], xs[m], valid, biases.get(m), use_reentrant=False)
            else:
                out[m], alpha = self.blocks[m](xs[m], valid, biases.get(m))  # (B, T, D), (B, T, K)
            if alpha is not None:
                routes[m] = alpha
        t = out[self.target]
        for m in self.sources:  # sequential rounds: each one sees the previous fusion
            if recompute:
                t = checkpoint(self.cross[m], t, out[m], valid, use_reentrant=False)
            else:
                t = self.cross[m](t, out[m], valid)  # (B, T, D)
        out[self.target] = t
        return out, routes
