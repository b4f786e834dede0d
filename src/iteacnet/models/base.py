"""What every model and baseline shares: its input, its outputs, its loss, its registry.

Axis legend: B = conversations, T = utterances (padded), M = modalities, D = hidden size,
C = classifier outputs (classes, or 1 for regression), d_m = input size of modality m.

Models know tensors only: no files, corpora, training loops or CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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


def emotion_loss(
    pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, spec: ModelSpec, count: torch.Tensor | None = None
) -> torch.Tensor:
    """L_emo over valid utterances: cross-entropy, or MSE/MAE on scores (METHOD §5).

    Summed over `valid` and divided by `count` (default: how many are valid, the mean)."""
    n = valid.sum().clamp(min=1).float() if count is None else count
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
    return (a[rows] - b[rows]).pow(2).sum() / (n * a.shape[-1])


def loss_parts(**terms: torch.Tensor) -> dict[str, float]:
    """Named scalar loss terms → floats for logging."""
    return {k: float(v.detach()) for k, v in terms.items()}


def default_param_groups(module: nn.Module, lr: float) -> list[dict[str, Any]]:
    return [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr, "name": "weights"}]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
