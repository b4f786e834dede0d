"""Missing-modality masks (METHOD §6). Polarity: True = the modality is present.

Axis legend: N = utterances (flat), B = conversations, T = utterances per conversation,
M = modalities of the corpus (order = `Corpus.modalities`).

The missing rate `r` is the fraction of (utterance, modality) cells that are missing, over
valid utterances only. Every valid utterance keeps at least one modality, so at most
`n_valid · (M − 1)` cells can go missing: with M = 3 a nominal 0.7 is capped at 2/3
(every utterance keeps exactly one modality). `achieved_rate` reports what a mask really has.

Cells the data itself lacks (`available` False) are missing in every mask and count toward
the rate; the sampler removes further cells only as far as needed to reach the target.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iteacnet.errors import UserError

# Pattern letter -> modality name.
PATTERN_LETTERS: dict[str, str] = {"t": "text", "a": "audio", "v": "visual"}
_LETTER_OF = {m: k for k, m in PATTERN_LETTERS.items()}
# The non-empty proper subsets of (text, audio, visual): the complete pattern is rate 0.0.
PATTERNS: tuple[str, ...] = ("t", "a", "v", "ta", "tv", "av")


# ---------------------------------------------------------------------------- random masks
def _check_rate(rate: float) -> float:
    rate = float(rate)
    if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise ValueError(f"missing rate must be in [0, 1], got {rate}")
    return rate


def missing_target(n_valid: int, num_modalities: int, rate: float) -> int:
    """Cells to make missing: round-half-up(rate · n_valid · M), capped at n_valid · (M − 1).

    The product is rounded to 9 decimals first so float noise (0.1 · 10 · 3 =
    3.0000000000000004) cannot move the result; halves round up, not to even.
    """
    rate = _check_rate(rate)
    total = n_valid * num_modalities
    target = int(math.floor(round(rate * total, 9) + 0.5))
    return min(target, n_valid * max(num_modalities - 1, 0))


def sample_mask(
    valid: torch.Tensor,
    num_modalities: int,
    rate: float,
    generator: torch.Generator,
    available: torch.Tensor | None = None,
) -> torch.Tensor:
    """A random presence mask (..., M) bool over the valid positions of `valid` (...).

    Exactly `missing_target(n_valid, M, rate)` cells are missing (where `available` allows):
    one kept modality per valid utterance is protected, drawn uniformly among its available
    modalities, and the missing cells are drawn uniformly among the remaining available
    cells. Unavailable cells are False and count as missing; if they already reach the
    target nothing more is removed; if too few cells can be removed the rate falls short.
    A valid utterance with no available modality is all False. Invalid positions are False.

    Random numbers come only from `generator` and are drawn on its device (so a CPU
    generator gives the same mask for CPU and CUDA inputs); the result is on `valid`'s
    device. The same generator state and inputs give the same mask.
    """
    rate = _check_rate(rate)
    if num_modalities < 1:
        raise ValueError(f"num_modalities must be >= 1, got {num_modalities}")
    out_device = valid.device
    dev = generator.device
    v = valid.to(dev, torch.bool).reshape(-1)
    if available is not None:
        if tuple(available.shape) != (*valid.shape, num_modalities):
            raise ValueError(
                f"available has shape {tuple(available.shape)}, expected {(*valid.shape, num_modalities)}"
            )
        avail = available.to(dev, torch.bool).reshape(-1, num_modalities)[v]
    else:
        avail = torch.ones(int(v.sum()), num_modalities, dtype=torch.bool, device=dev)
    n_valid = avail.shape[0]

    # Protect one available modality per utterance: argmax of random scores over the
    # available ones (unavailable scored −1, below any uniform draw).
    scores = torch.rand(n_valid, num_modalities, generator=generator, device=dev)
    scores = scores.masked_fill(~avail, -1.0)
    has_any = avail.any(dim=1)
    protected = torch.zeros_like(avail)
    if n_valid > 0:
        protected[torch.arange(n_valid, device=dev), scores.argmax(dim=1)] = True
    protected &= has_any[:, None]

    already_missing = int((~avail).sum())
    need = max(0, missing_target(n_valid, num_modalities, rate) - already_missing)
    candidates = avail & ~protected
    k = min(need, int(candidates.sum()))
    # Uniform k-subset of the candidates: the k smallest of i.i.d. uniform keys.
    keys = torch.rand(n_valid, num_modalities, generator=generator, device=dev)
    keys = keys.masked_fill(~candidates, 2.0).reshape(-1)
    drop = torch.argsort(keys, stable=True)[:k]
    kept = avail.clone().reshape(-1)
    kept[drop] = False

    out = torch.zeros(v.shape[0], num_modalities, dtype=torch.bool, device=dev)
    out[v] = kept.reshape(n_valid, num_modalities)
    return out.reshape(*valid.shape, num_modalities).to(out_device)


def achieved_rate(mask: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray) -> float:
    """Fraction of missing cells of `mask` (..., M) over the valid utterances of `valid` (...).

    0.0 when there is no valid utterance (nothing is missing).
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    v = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
    if m.shape[:-1] != v.shape:
        raise ValueError(f"mask {m.shape} does not match valid {v.shape} + (M,)")
    cells = m[v.astype(bool)]
    if cells.size == 0:
        return 0.0
    return float(1.0 - cells.astype(bool).mean())


# ---------------------------------------------------------------------------- fixed masks
def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from `parts`: sha256 of their repr, stable across processes and runs.

    (Python's `hash` of a string changes per process.) Numpy scalars are turned into Python
    scalars first, since their repr differs between numpy versions.
    """
    norm = tuple(p.item() if isinstance(p, np.generic) else p for p in parts)
    digest = hashlib.sha256(repr(norm).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def fixed_mask(
    corpus_name: str,
    split: str,
    rate: float,
    seed: int,
    num_utterances: int,
    num_modalities: int,
    available: np.ndarray | None = None,
) -> np.ndarray:
    """The (N, M) bool mask of a split's utterances (flat, in the split's order) at `rate`.

    Drawn with `sample_mask` from a CPU generator seeded by
    `stable_seed(corpus_name, split, round(rate, 4), seed)`: bit-for-bit the same in every
    run and process, so every method is scored on identical masks.
    """
    rate = _check_rate(rate)
    gen = torch.Generator().manual_seed(stable_seed(corpus_name, split, round(rate, 4), int(seed)))
    valid = torch.ones(num_utterances, dtype=torch.bool)
    avail = None
    if available is not None:
        avail = torch.from_numpy(np.ascontiguousarray(available, dtype=bool))
    return sample_mask(valid, num_modalities, rate, gen, avail).numpy()


# ---------------------------------------------------------------------------- patterns
def patterns_for(modalities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The non-empty proper subsets of `modalities` as pattern strings, in `PATTERNS` order
    (the complete pattern is rate 0.0 and is left out)."""
    letters = {_LETTER_OF[m] for m in modalities if m in _LETTER_OF}
    return tuple(p for p in PATTERNS if set(p) <= letters and set(p) != letters)


def pattern_mask(pattern: str, modalities: tuple[str, ...] | list[str], valid: torch.Tensor) -> torch.Tensor:
    """(..., M) bool: the modalities named by `pattern` are present at every valid position.

    Letters: t = text, a = audio, v = visual (e.g. "ta" = text and audio, nothing visual).
    An empty pattern, an unknown or repeated letter, or a letter for a modality the corpus
    lacks is a ValueError.
    """
    if not pattern:
        raise UserError("a pattern needs at least one modality letter (t, a, v)")
    if len(set(pattern)) != len(pattern):
        raise UserError(f"pattern {pattern!r} repeats a letter")
    keep = []
    for ch in pattern:
        if ch not in PATTERN_LETTERS:
            raise UserError(f"unknown modality letter {ch!r} in pattern {pattern!r}; use t, a, v")
        m = PATTERN_LETTERS[ch]
        if m not in modalities:
            raise UserError(f"pattern {pattern!r} asks for {m!r}, but the corpus has only {tuple(modalities)}")
        keep.append(m)
    row = torch.tensor([m in keep for m in modalities], dtype=torch.bool, device=valid.device)
    return valid.to(torch.bool)[..., None] & row


# ---------------------------------------------------------------------------- storage
@dataclass
class MaskSet:
    """Fixed masks (rate -> (N, M) bool) with free-form metadata (corpus, split, seed, …)."""

    masks: dict[float, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def rates(self) -> tuple[float, ...]:
        return tuple(self.masks)


def _mask_paths(path: str | Path) -> tuple[Path, Path]:
    """`<path>.npz` and `<path>.json`; a given .npz/.json suffix is dropped first (and only
    those: a name like `test-0.1` keeps its dot)."""
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.parent / f"{p.name}.npz", p.parent / f"{p.name}.json"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=bool).tobytes()).hexdigest()


def save_masks(path: str | Path, masks: dict[float, np.ndarray], meta: dict[str, Any]) -> tuple[Path, Path]:
    """Store masks as `<path>.npz` (arrays) + `<path>.json` (rates, shapes, sha256, meta)."""
    npz, js = _mask_paths(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}  # Any: numpy's savez stub types **kwds as its allow_pickle flag
    entries = []
    for i, (rate, mask) in enumerate(masks.items()):
        a = np.ascontiguousarray(mask, dtype=bool)
        if a.ndim != 2:
            raise UserError(f"mask for rate {rate} must be (N, M), got shape {a.shape}")
        key = f"mask{i}"
        arrays[key] = a
        entries.append({
            "rate": float(rate), "key": key, "shape": list(a.shape), "sha256": _digest(a),
            "achieved_rate": achieved_rate(a, np.ones(a.shape[0], dtype=bool)),
        })
    np.savez(npz, **arrays)
    js.write_text(json.dumps({"format": "iteacnet-masks/1", "masks": entries, "meta": meta}, indent=1) + "\n")
    return npz, js


def load_masks(path: str | Path) -> MaskSet:
    """Read masks written by `save_masks`; a changed array (sha256 mismatch) is a ValueError."""
    npz, js = _mask_paths(path)
    info = json.loads(js.read_text())
    if info.get("format") != "iteacnet-masks/1":
        raise UserError(f"{js}: not an iteacnet mask file (format {info.get('format')!r})")
    masks: dict[float, np.ndarray] = {}
    with np.load(npz, allow_pickle=False) as z:
        for e in info["masks"]:
            a = z[e["key"]].astype(bool)
            if list(a.shape) != e["shape"] or _digest(a) != e["sha256"]:
                raise UserError(f"{npz}: mask for rate {e['rate']} does not match its recorded checksum")
            masks[float(e["rate"])] = a
    return MaskSet(masks, info["meta"])
