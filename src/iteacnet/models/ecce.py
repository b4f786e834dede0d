"""ECCE: Emotion Context Change Encoding (METHOD §2; paper Eqs. 5–6, 10–11, Algorithm 1).

Axis legend: B = conversations, T = utterances (padded), D = hidden size, H = attention heads.

ECCE turns one modality's utterance sequence into an additive attention bias E (B, H, T, T):

    L    = Conv1d_k(h)                          local context        (Eq. 5; `local=False`: L = h)
    C_ij = mean(L_k, k in [min(i,j), max(i,j)])  context change       (Eq. 6)
    E_ij = W C_ij + b, one value per head;  E_ij = 0 where |i - j| > max_span

Variants (config fields of `ECCEConfig`): the local stage is a dense Conv1d(D, D, k)
(`local_kind="dense"`) or one k-tap kernel shared by all channels, softmax-normalised so it
is a weighted average of neighbours (`"shared"`), optionally followed by dropout
(`local_dropout`); the bias has one value per head (`bias="head"`) or one per utterance pair
shared by all heads (`"pair"`, a reading of the paper's Algorithm 1).

`W` and the span mean are both linear, so `mean(W L_k + b) = W mean(L_k) + b`: we project to
Z = W L + b (B, T, H) first and take span means of Z with prefix sums. Memory is O(B·T²·H),
never O(B·T²·D).
"""

from __future__ import annotations

import torch
from torch import nn


def span_means(z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of z over the valid utterances of every span [min(i,j), max(i,j)].

    z: (B, T, H), valid: (B, T) bool -> (B, T, T, H). Spans with no valid utterance give 0.
    Averaging over valid utterances only keeps the result independent of padding even if a
    batch had padding holes; with right padding it is the plain span mean.
    """
    B, T, H = z.shape
    m = valid.to(z.dtype).unsqueeze(-1)  # (B, T, 1)
    zero = z.new_zeros(B, 1, H)
    # prefix sums with a leading zero: P[t] = sum_{k < t}, so sum over [a, b] = P[b+1] - P[a]
    pz = torch.cat([zero, torch.cumsum(z * m, dim=1)], dim=1)  # (B, T+1, H)
    pn = torch.cat([zero[..., :1], torch.cumsum(m, dim=1)], dim=1)  # (B, T+1, 1)
    idx = torch.arange(T, device=z.device)
    lo = torch.minimum(idx[:, None], idx[None, :])  # (T, T)
    hi = torch.maximum(idx[:, None], idx[None, :]) + 1  # (T, T)
    total = pz[:, hi] - pz[:, lo]  # (B, T, T, H)
    count = pn[:, hi] - pn[:, lo]  # (B, T, T, 1)
    return total / count.clamp_min(1.0)


class ECCE(nn.Module):
    """Per-modality context-change bias for self-attention.

    forward(h (B, T, D), valid (B, T) bool) -> bias (B, H, T, T), or None when `enabled=False`
    (vanilla self-attention, the paper's Table 1 ablation). The bias is zero beyond `max_span`
    and on rows/columns of padding (the attention's key padding mask handles padded keys).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kernel: int = 7,
        max_span: int = 30,
        local: bool = True,
        enabled: bool = True,
        local_kind: str = "dense",
        local_dropout: float = 0.0,
        bias: str = "head",
    ) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"ECCE kernel must be odd to keep the length, got {kernel}")
        if local_kind not in ("dense", "shared") or bias not in ("head", "pair"):
            raise ValueError(f"ECCE: local_kind must be dense|shared and bias head|pair, got {local_kind!r}, {bias!r}")
        self.heads = heads
        self.max_span = max_span
        self.enabled = enabled
        self.kernel = kernel
        # A disabled ECCE owns no parameters, so parameter counts match the ablated model.
        use_local = enabled and local
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2) if use_local and local_kind == "dense" else None
        # Shared kernel: zero logits start as a plain moving average over the window.
        self.shared_kernel = nn.Parameter(torch.zeros(kernel)) if use_local and local_kind == "shared" else None
        self.local_drop = nn.Dropout(local_dropout) if use_local and local_dropout > 0 else None
        self.proj = nn.Linear(dim, heads if bias == "head" else 1) if enabled else None

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
        if self.proj is None:
            return None
        z = self.proj(self.local_context(h, valid))  # (B, T, H)  Z = W L + b, before the O(T²) step
        return self.to_bias(span_means(z, valid), valid)

    def local_context(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """L (B, T, D): the convolved input (Eq. 5), zero on padding."""
        m = valid.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
        L = h * m  # (B, T, D); zero padding so the conv sees zero-padded conversations
        if self.conv is not None:
            L = self.conv(L.transpose(1, 2)).transpose(1, 2) * m  # (B, T, D)
        elif self.shared_kernel is not None:
            D = L.shape[-1]
            w = torch.softmax(self.shared_kernel, 0).to(L.dtype).expand(D, 1, self.kernel)  # (D, 1, k)
            L = nn.functional.conv1d(L.transpose(1, 2), w, padding=self.kernel // 2, groups=D).transpose(1, 2) * m
        if self.local_drop is not None:
            L = self.local_drop(L)
        return L

    def to_bias(self, e: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, T, H) span terms -> (B, H, T, T) bias (H = 1 with one bias per pair; it
        broadcasts over the heads), zero beyond max_span and on padding."""
        T = valid.shape[1]
        idx = torch.arange(T, device=valid.device)
        near = (idx[:, None] - idx[None, :]).abs() <= self.max_span  # (T, T)
        pair = valid[:, :, None] & valid[:, None, :] & near  # (B, T, T)
        e = e * pair.unsqueeze(-1).to(e.dtype)
        return e.permute(0, 3, 1, 2).contiguous()  # (B, H, T, T)
