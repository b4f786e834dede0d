"""Training frameworks for ITEACNet (METHOD §5, the paper's Table 2), registered as methods.

Axis legend: B = conversations, T = utterances, D = hidden size, C = outputs.

- `its`  Inverted Teacher-Student: a simple teacher (default 3-layer TF) on complete input,
         a complex student (default 4-layer NAS) on masked input, layer-wise imputation loss.
- `ts`   vanilla teacher-student: the same objective with the capacities the other way round
         (default 4-layer NAS teacher, 3-layer TF student). ITS and TS differ only in which
         side is larger, so both are one class; `framework_defaults` gives each its sizes.
- `gcnet` one model (described by the teacher fields, as Table 2 lists it in that column);
          every step sums the emotion losses of the complete and the masked batch.
- `complete` one model (the teacher fields) trained on complete data only: the paper's
          Table 1 scores "the teacher on complete data" this way (ECCE ablation).
At test time only the student (or the single model) runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iteacnet.config import ModelConfig
from iteacnet.errors import UserError
from iteacnet.models.base import (
    METHODS,
    BatchTotals,
    LossOutput,
    ModelInput,
    ModelSpec,
    batch_totals,
    emotion_loss,
    loss_parts,
    masked_mse,
)
from iteacnet.models.iteacnet import ITEACNet

FRAMEWORKS = ("its", "ts", "gcnet", "complete")


def framework_defaults(framework: str) -> dict[str, Any]:
    """Teacher/student kinds and depths of each framework as the paper's Table 2 uses them."""
    table = {
        "its": {"teacher_kind": "TF", "teacher_layers": 3, "student_kind": "NAS", "student_layers": 4},
        "ts": {"teacher_kind": "NAS", "teacher_layers": 4, "student_kind": "TF", "student_layers": 3},
        "gcnet": {"teacher_kind": "TF", "teacher_layers": 3},
        "complete": {"teacher_kind": "TF", "teacher_layers": 3},
    }
    if framework not in table:
        raise UserError(f"unknown framework {framework!r}; choices: {', '.join(FRAMEWORKS)}")
    return table[framework]


def _param_groups(models: list[ITEACNet], lr: float, router_lr: float) -> list[dict[str, Any]]:
    weights = [p for m in models for p in m.non_router_parameters()]
    router = [p for m in models for p in m.router_parameters()]
    groups: list[dict[str, Any]] = [{"params": weights, "lr": lr, "name": "weights"}]
    if router:
        groups.append({"params": router, "lr": router_lr, "name": "router"})
    return groups


def incomplete_rows(full: ModelInput, masked: ModelInput) -> torch.Tensor:
    """(B, T) utterances that miss at least one modality the complete input has."""
    return masked.valid & (masked.present.sum(-1) < full.present.sum(-1))


class TeacherStudent(nn.Module):
    """ITS (and vanilla TS): `L = L_emo(T) + L_emo(S) + Σ_k λ_k MSE(h_S^{-k}, sg(h_T^{-k}))`."""

    def __init__(self, spec: ModelSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.spec = spec
        self.teacher = ITEACNet(spec, cfg, kind=cfg.teacher_kind, layers=cfg.teacher_layers)
        self.student = ITEACNet(spec, cfg, kind=cfg.student_kind, layers=cfg.student_layers)
        k = min(len(cfg.rec_weights), cfg.teacher_layers, cfg.student_layers)
        self.rec_weights = tuple(cfg.rec_weights[:k])

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        totals = batch_totals(full, masked, totals)
        out_t = self.teacher(full)
        out_s = self.student(masked)
        n_valid = totals.valid
        l_t = emotion_loss(out_t.logits, labels, full.valid, self.spec, n_valid)
        l_s = emotion_loss(out_s.logits, labels, masked.valid, self.spec, n_valid)
        rows = incomplete_rows(full, masked)
        n_rows = totals.count(incomplete_rows)
        l_rec = out_s.logits.sum() * 0.0
        for k, lam in enumerate(self.rec_weights, start=1):
            # hiddens[-1] is the layer next to the classifier (k = 1).
            target = out_t.hiddens[-k].detach()  # teacher states are constants for L_rec
            l_rec = l_rec + lam * masked_mse(out_s.hiddens[-k], target, rows, n_rows)
        total = l_t + l_s + l_rec
        return LossOutput(total, loss_parts(loss=total, emo_t=l_t, emo_s=l_s, rec=l_rec))

    def predict(self, x: ModelInput) -> torch.Tensor:
        return self.student(x).logits

    def inference_model(self) -> ITEACNet:
        return self.student

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]:
        return _param_groups([self.teacher, self.student], lr, router_lr)


class SingleModel(nn.Module):
    """One model. `gcnet`: each step accumulates gradients from the complete and the masked
    batch. `complete`: the complete batch only (the masked one is ignored)."""

    def __init__(self, spec: ModelSpec, cfg: ModelConfig, use_masked: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.use_masked = use_masked
        self.model = ITEACNet(spec, cfg, kind=cfg.teacher_kind, layers=cfg.teacher_layers)

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        n_valid = batch_totals(full, masked, totals).valid
        l_full = emotion_loss(self.model(full).logits, labels, full.valid, self.spec, n_valid)
        if not self.use_masked:
            return LossOutput(l_full, loss_parts(loss=l_full))
        l_masked = emotion_loss(self.model(masked).logits, labels, masked.valid, self.spec, n_valid)
        total = l_full + l_masked
        return LossOutput(total, loss_parts(loss=total, emo_full=l_full, emo_masked=l_masked))

    def predict(self, x: ModelInput) -> torch.Tensor:
        return self.model(x).logits

    def inference_model(self) -> ITEACNet:
        return self.model

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]:
        return _param_groups([self.model], lr, router_lr)


@METHODS.register("iteacnet")
def build_iteacnet(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    if cfg.framework in ("its", "ts"):
        return TeacherStudent(spec, cfg)
    if cfg.framework in ("gcnet", "complete"):
        return SingleModel(spec, cfg, use_masked=cfg.framework == "gcnet")
    raise UserError(f"unknown framework {cfg.framework!r}; choices: {', '.join(FRAMEWORKS)}")


def build_method(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    """Instantiate `cfg.method` from the registry (ITEACNet here, baselines in models/)."""
    import iteacnet.models  # noqa: F401  (registers the baselines)

    return METHODS[cfg.method](spec, cfg)
