"""What every model and baseline shares: its input, its outputs, its loss, its registry.

Axis legend: B = conversations, T = utterances (padded), M = modalities, D = hidden size,
C = classifier outputs (classes, or 1 for regression), d_m = input size of modality m.

Models know tensors only: no files, corpora, training loops or CLI.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from iteacnet.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """What a model must know about its data, and nothing more."""

    dims: tuple[tuple[str, int], ...]  # ((modality, d_m), ...) in canonical order text, audio, visual
    num_outputs: int  # classes, or 1 for regression
    task: str = "classification"  # classification | regression
    num_speakers: int = 2
    regression_loss: str = "mse"  # mse | mae

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.dims)

    @property
    def dim_of(self) -> dict[str, int]:
        return dict(self.dims)


@dataclass
class ModelInput:
    """A padded batch of conversations as a model sees it.

    `features[m]` is already zero wherever `present[..., m]` is False (a missing modality is
    an all-zero vector, METHOD §0) and on padding.
    """

    features: dict[str, torch.Tensor]  # modality -> (B, T, d_m)
    present: torch.Tensor  # (B, T, M) bool, 1 = present, modality order = ModelSpec.modalities
    valid: torch.Tensor  # (B, T) bool, 1 = real utterance
    speakers: torch.Tensor  # (B, T) int64


@dataclass(frozen=True)
class BatchTotals:
    """Whole-batch denominators of a method's mean-type losses.

    Every mean in a training loss (over valid utterances, over incomplete ones, ...) is
    written as a sum over the utterances the method sees divided by a count taken here.
    In one process the counts come from the batch itself. In a data-parallel step each rank
    sees a shard of the batch while the counts come from the whole batch (every rank holds it
    before sharding), so the ranks' losses add up to the one-process loss and their summed
    gradients to its gradient, whichever utterances a term averages over.
    """

    full: ModelInput  # the whole batch, complete; only `present` and `valid` are read
    masked: ModelInput  # the whole batch under the training mask

    def count(self, select: Callable[[ModelInput, ModelInput], torch.Tensor]) -> torch.Tensor:
        """() float: how many (B, T) utterances `select(full, masked)` picks; at least 1."""
        return select(self.full, self.masked).sum().clamp(min=1).float()

    @property
    def valid(self) -> torch.Tensor:
        """() float: valid utterances of the whole batch."""
        return self.count(lambda full, masked: masked.valid)


def batch_totals(full: ModelInput, masked: ModelInput, totals: BatchTotals | None) -> BatchTotals:
    """`totals`, or, where none is given, the totals of this (whole) batch."""
    return totals if totals is not None else BatchTotals(full, masked)


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar to backpropagate
    parts: dict[str, float] = field(default_factory=dict)  # named components, for logging


class Method(Protocol):
    """A trainable method: ITEACNet under some framework, or a baseline.

    `training_loss` sees the same conversations twice: complete (`full`, only the modalities
    the data has) and with the training mask applied (`masked`). Methods that learn only from
    masked input ignore `full`. Its means divide by counts from `totals` (see BatchTotals;
    None: this batch is the whole batch). `predict` returns (B, T, C) logits or (B, T, 1)
    scores. A method whose loss couples the utterances of a batch (CPM-Net's class
    similarities) sets `couples_batch = True`: it cannot train on shards of a batch.
    """

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput: ...

    def predict(self, x: ModelInput) -> torch.Tensor: ...

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]: ...


# name -> builder(spec: ModelSpec, cfg: ModelConfig) -> nn.Module implementing Method
METHODS: Registry[Any] = Registry("method")


_DENSE: contextvars.ContextVar[bool] = contextvars.ContextVar("dense_layout", default=False)


@contextmanager
def dense_layout() -> Iterator[None]:
    """Within: losses are masked sums over the padded (B, T) layout instead of sums over
    boolean-indexed gathers, utterance flattening keeps every padded position, and
    `loss_parts` keeps its terms as tensors. That is what `torch.func.vmap` needs (stacked
    training, training/stacked.py): a gather's size may differ between the stacked runs, and
    a float() would sync. The same values, up to the order of float summation."""
    token = _DENSE.set(True)
    try:
        yield
    finally:
        _DENSE.reset(token)


def is_dense() -> bool:
    """Whether `dense_layout` is on (see there)."""
    return _DENSE.get()


def emotion_loss(
    pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, spec: ModelSpec, count: torch.Tensor | None = None
) -> torch.Tensor:
    """L_emo over valid utterances: cross-entropy, or MSE/MAE on scores (METHOD §5).

    Summed over `valid` and divided by `count` (default: how many are valid, the mean)."""
    n = valid.sum().clamp(min=1).float() if count is None else count
    if _DENSE.get():  # padding (and invalid rows) weighted by 0; labels there are a valid 0
        w = valid.to(pred.dtype)
        if spec.task == "classification":
            ce = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), labels.reshape(-1).long(), reduction="none")
            return (ce.reshape(valid.shape) * w).sum() / n
        diff = pred[..., 0] - labels.to(pred.dtype)
        return ((diff.abs() if spec.regression_loss == "mae" else diff.pow(2)) * w).sum() / n
    if spec.task == "classification":
        return F.cross_entropy(pred[valid], labels[valid].long(), reduction="sum") / n
    score = pred[..., 0][valid]
    target = labels[valid].float()
    err = (score - target).abs() if spec.regression_loss == "mae" else (score - target).pow(2)
    return err.sum() / n


def masked_mse(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, count: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error over the utterances where `rows` (B, T) is True, per element: the mean
    when `count` is None, else divided by `count` utterances × D; 0 if no row is True."""
    n = rows.sum().clamp(min=1).float() if count is None else count  # no row: an exact 0, with a graph
    if _DENSE.get():
        return ((a - b).pow(2) * rows[..., None].to(a.dtype)).sum() / (n * a.shape[-1])
    return (a[rows] - b[rows]).pow(2).sum() / (n * a.shape[-1])


def loss_parts(**terms: torch.Tensor) -> dict[str, float]:
    """Named scalar loss terms → floats for logging (0-d tensors under `dense_layout`)."""
    if _DENSE.get():
        return {k: cast(float, v.detach()) for k, v in terms.items()}
    return {k: float(v.detach()) for k, v in terms.items()}


def default_param_groups(module: nn.Module, lr: float) -> list[dict[str, Any]]:
    return [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr, "name": "weights"}]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
