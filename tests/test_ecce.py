"""ECCE equals the naive O(T³) definition, respects padding and span, and stays O(T²·H)."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import lengths_to_valid
from iteacnet.models.ecce import ECCE


def ecce_reference_naive(ecce: ECCE, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The definition, loop by loop: conv over valid utterances, span mean, linear, cutoff."""
    B, T, D = h.shape
    H = ecce.heads
    assert ecce.proj is not None
    W, b = ecce.proj.weight, ecce.proj.bias  # (H, D), (H,)
    out = torch.zeros(B, H, T, T, dtype=h.dtype)
    for n in range(B):
        if ecce.conv is None:
            L = h[n] * valid[n, :, None]
        else:
            w, cb = ecce.conv.weight, ecce.conv.bias  # (D, D, k), (D,)
            k = w.shape[-1]
            L = torch.zeros(T, D, dtype=h.dtype)
            for t in range(T):
                if not valid[n, t]:
                    continue
                acc = cb.clone()
                for o in range(k):
                    s = t + o - k // 2
                    if 0 <= s < T and valid[n, s]:
                        acc = acc + w[:, :, o] @ h[n, s]
                L[t] = acc
        for i in range(T):
            for j in range(T):
                if not (valid[n, i] and valid[n, j]) or abs(i - j) > ecce.max_span:
                    continue
                ks = [k for k in range(min(i, j), max(i, j) + 1) if valid[n, k]]
                c = torch.stack([L[k] for k in ks]).mean(0)  # (D,)
                out[n, :, i, j] = W @ c + b
    return out


@pytest.mark.parametrize("local", [True, False])
@pytest.mark.parametrize("max_span", [3, 30])
def test_matches_naive_reference(local: bool, max_span: int) -> None:
    torch.manual_seed(0)
    B, T, D, H = 3, 9, 16, 2
    ecce = ECCE(D, H, kernel=5, max_span=max_span, local=local).double()
    torch.nn.init.normal_(ecce.proj.bias)  # type: ignore[union-attr]  # make b visible
    valid = lengths_to_valid([9, 6, 2], T)
    h = torch.randn(B, T, D, dtype=torch.float64)
    got = ecce(h, valid)
    assert got is not None and got.shape == (B, H, T, T)
    torch.testing.assert_close(got, ecce_reference_naive(ecce, h, valid))


def test_padding_and_batch_invariance() -> None:
    torch.manual_seed(1)
    D, H = 16, 2
    ecce = ECCE(D, H, max_span=4)
    h = torch.randn(1, 7, D)
    alone = ecce(h, torch.ones(1, 7, dtype=torch.bool))
    # same conversation padded to 11 (garbage in the padding) next to another conversation
    batch = torch.randn(2, 11, D)
    batch[1, :7] = h[0]
    valid = lengths_to_valid([11, 7], 11)
    both = ecce(batch, valid)
    assert alone is not None and both is not None
    torch.testing.assert_close(both[1, :, :7, :7], alone[0], atol=1e-6, rtol=1e-5)
    assert both[1, :, 7:].abs().sum() == 0 and both[1, :, :, 7:].abs().sum() == 0


def test_span_cutoff_and_disabled() -> None:
    torch.manual_seed(2)
    ecce = ECCE(16, 2, max_span=2)
    bias = ecce(torch.randn(1, 8, 16), torch.ones(1, 8, dtype=torch.bool))
    assert bias is not None
    far = (torch.arange(8)[:, None] - torch.arange(8)[None, :]).abs() > 2
    assert bias[0][:, far].abs().sum() == 0
    assert bias[0][:, ~far].abs().sum() > 0
    off = ECCE(16, 2, enabled=False)
    assert off(torch.randn(1, 8, 16), torch.ones(1, 8, dtype=torch.bool)) is None
    assert sum(p.numel() for p in off.parameters()) == 0
    assert ECCE(16, 2, local=False).conv is None


class _LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_is_t2_h_not_t2_d() -> None:
    T, D, H = 300, 64, 2
    ecce = ECCE(D, H)
    h = torch.randn(1, T, D)
    valid = torch.ones(1, T, dtype=torch.bool)
    with torch.no_grad(), _LargestTensor() as probe:
        bias = ecce(h, valid)
    assert bias is not None and bias.shape == (1, H, T, T)
    assert probe.largest < T * T * D // 8, f"a tensor of {probe.largest} elements suggests O(T²·D)"
