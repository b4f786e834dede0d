"""Conversations → padded batches.

Axis legend: B = conversations in a batch, T = longest conversation in the batch,
d_m = feature size of modality m, M = modalities of the corpus.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from iteacnet.data.corpus import Corpus


@dataclass
class Batch:
    features: dict[str, torch.Tensor]  # modality -> (B, T, d_m) float32, zero on padding
    available: torch.Tensor  # (B, T, M) bool: the data has this modality (1 = present)
    valid: torch.Tensor  # (B, T) bool: real utterance, not padding
    speakers: torch.Tensor  # (B, T) int64, 0 on padding
    labels: torch.Tensor  # (B, T) int64 | float32, 0 on padding
    index: torch.Tensor  # (B, T) int64 row of the corpus, -1 on padding
    dialogues: list[int]  # dialogue indices, batch order

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            features={m: x.to(device) for m, x in self.features.items()},
            available=self.available.to(device), valid=self.valid.to(device),
            speakers=self.speakers.to(device), labels=self.labels.to(device),
            index=self.index.to(device), dialogues=self.dialogues,
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)


def collate(corpus: Corpus, dialogues: Sequence[int], pad_to: int | None = None) -> Batch:
    """Pad the given dialogues to (B, T, ·); `pad_to` forces T (the naive reference uses it)."""
    spans = [corpus.rows(i) for i in dialogues]
    T = max([r.stop - r.start for r in spans] + [pad_to or 0])
    index = np.full((len(dialogues), T), -1, dtype=np.int64)
    for b, r in enumerate(spans):
        index[b, : r.stop - r.start] = np.arange(r.start, r.stop)
    return collate_index(corpus, index, list(dialogues))


def collate_index(corpus: Corpus, index: np.ndarray, dialogues: list[int]) -> Batch:
    """The batch of corpus rows `index` (B, T), -1 on padding; `dialogues` one per batch row."""
    valid = index >= 0
    gather = np.where(valid, index, 0)
    feats = {}
    for m, x in corpus.features.items():
        f = x[gather]  # (B, T, d_m)
        f[~valid] = 0.0
        feats[m] = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))
    # Gather per modality: the batch's rows only, not the corpus's whole (N, M) matrix.
    avail = np.stack([corpus.available[m][gather] for m in corpus.modalities], axis=-1) & valid[..., None]  # (B, T, M)
    labels = corpus.labels[gather].copy()
    labels[~valid] = 0
    speakers = corpus.speakers[gather].copy()
    speakers[~valid] = 0
    return Batch(
        features=feats,
        available=torch.from_numpy(avail),
        valid=torch.from_numpy(valid),
        speakers=torch.from_numpy(speakers),
        labels=torch.from_numpy(labels),
        index=torch.from_numpy(index),
        dialogues=dialogues,
    )


def bucketed_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    generator: torch.Generator | None = None,
    bucket_factor: int = 4,
) -> list[list[int]]:
    """Group positions of `lengths` into batches of similar length.

    With a generator: shuffle, then sort within windows of `bucket_factor · batch_size` by
    length, cut into batches and shuffle the batch order (low padding, still random).
    Without: sorted by length, deterministic (evaluation).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    n = len(lengths)
    if generator is None:
        order = np.argsort(-lengths, kind="stable")
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    perm = torch.randperm(n, generator=generator).numpy()
    window = batch_size * bucket_factor
    batches: list[list[int]] = []
    for s in range(0, n, window):
        chunk = perm[s : s + window][np.argsort(-lengths[perm[s : s + window]], kind="stable")]
        batches.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def iterate_batches(
    corpus: Corpus,
    dialogues: Sequence[int],
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Batches over a subset of dialogues (indices into the corpus)."""
    dialogues = list(dialogues)
    lengths = corpus.lengths()[dialogues]
    for group in bucketed_batches(lengths, batch_size, generator):
        yield collate(corpus, [dialogues[g] for g in group])


def iterate_utterance_batches(
    corpus: Corpus,
    dialogues: Sequence[int],
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Batches of `batch_size` single utterances (B, 1, ·), shuffled with the generator: how
    utterance-level baselines' reference code batches (no conversation context)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = corpus.rows_of(list(dialogues))
    owner = np.repeat(np.arange(corpus.num_dialogues), corpus.lengths())  # (N_corpus,) dialogue of each row
    if generator is not None:
        rows = rows[torch.randperm(len(rows), generator=generator).numpy()]
    for s in range(0, len(rows), batch_size):
        part = rows[s : s + batch_size]
        yield collate_index(corpus, part[:, None], owner[part].tolist())
