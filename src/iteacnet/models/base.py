"""What every model and baseline shares: its input, its outputs, its loss, its registry.

Axis legend: B = conversations, T = utterances (padded), M = modalities, D = hidden size,
C = classifier outputs (classes, or 1 for regression), d_m = input size of modality m.

Models know tensors only: no files, corpora, training loops or CLI.
"""

from __future__ import annotations

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


@dataclass
class LossOutput:
    total: torch.Tensor  # scalar to backpropagate
    parts: dict[str, float] = field(default_factory=dict)  # named components, for logging


class Method(Protocol):
    """A trainable method: ITEACNet under some framework, or a baseline.

    `training_loss` sees the same conversations twice: complete (`full`, only the modalities
    the data has) and with the training mask applied (`masked`). Methods that learn only from
    masked input ignore `full`. `predict` returns (B, T, C) logits or (B, T, 1) scores.
    """

    def training_loss(self, full: ModelInput, masked: ModelInput, labels: torch.Tensor) -> LossOutput: ...

    def predict(self, x: ModelInput) -> torch.Tensor: ...

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]: ...


# name -> builder(spec: ModelSpec, cfg: ModelConfig) -> nn.Module implementing Method
METHODS: Registry[Any] = Registry("method")


def emotion_loss(pred: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """L_emo over valid utterances: cross-entropy, or MSE/MAE on scores (METHOD §5)."""
    if spec.task == "classification":
        return F.cross_entropy(pred[valid], labels[valid].long())
    score = pred[..., 0][valid]
    target = labels[valid].float()
    return F.l1_loss(score, target) if spec.regression_loss == "mae" else F.mse_loss(score, target)


def masked_mse(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the utterances where `rows` (B, T) is True; 0 if none."""
    if not bool(rows.any()):
        return a.sum() * 0.0
    return F.mse_loss(a[rows], b[rows])


def default_param_groups(module: nn.Module, lr: float) -> list[dict[str, Any]]:
    return [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr, "name": "weights"}]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
