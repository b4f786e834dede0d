"""MMIN baseline: Missing Modality Imagination Network, utterance by utterance.

Paper: J. Zhao, R. Li, Q. Jin, "Missing Modality Imagination Network for Emotion
Recognition with Uncertain Missing Modalities", ACL 2021. Facts from AIM3-RUC/MMIN
(models/mmin_model.py, models/utt_fusion_model.py, models/networks/autoencoder.py,
scripts/CAP_mmin.sh) and GCNet's copy (zeroQiaoba/GCNet baseline-mmin, README runs).

Stage 1, `pretrain_loss` (MMIN's `utt_fusion` model): per-modality encoders
  d_m → [D, D] → D (MLPs on utterance-level features as in GCNet's copy; AIM3's original
  runs LSTM/TextCNN encoders on frame-level features) and a fusion classifier
  (M·D) → [D, D] → C, trained with L_emo on complete data.
Stage 2, `training_loss`: the encoders continue from stage 1; a frozen snapshot of them
  (the "pretrained encoder", taken at the first `training_loss` call) embeds the *missing*
  modalities of the complete input (present ones zeroed: MMIN's `*_reverse`) as the
  imagination target. From the masked embedding e (M·D) a cascaded residual autoencoder
  imagines ê ≈ target (forward), and a second one maps ê back to e (backward/cycle):
    L = ce_weight · L_emo(classifier(latents)) + mse_weight · MSE(ê, target)
        + cycle_weight · MSE(cycle(ê), stopgrad(e)),
  the classifier (n_blocks·ae_layers[-1]) → [D, D] → C reading the forward AE's
  concatenated block latents. MSE is the mean over utterances and embedding dimensions.
`predict`: encoders → forward AE → classifier on the masked input; the cycle AE and the
  stage-1 classifier are training-only.

Sizes: D = cfg.hidden (embd_size 128 and cls_layers 128,128 in the original); dropout =
cfg.dropout in stage 2 (0.5, zeroQiaoba/GCNet README.md:114) and `pretrain_dropout` in
stage 1 (0.3, README.md:111): the encoders' dropout switches with the stage.

Options (`ModelConfig.baseline`):
  pretrain_epochs  (read by the engine; its default 0) epochs of stage 1 before stage 2.
                   Set it: without stage 1 the imagination target comes from the encoders'
                   random initialisation. MMIN trains stage 1 for 20 epochs, GCNet's runs 100.
  ae_layers        (2·D, D, D/2)  widths of each residual AE (original: 256,128,64)
  n_blocks         5     residual AEs per cascade (original: --n_blocks=5)
  ce_weight        1.0   (original: --ce_weight=1.0)
  mse_weight       4.0   imagination loss weight (original: --mse_weight=4.0)
  cycle_weight     2.0   cycle-consistency loss weight (original: --cycle_weight=2.0)
  pretrain_dropout None  stage-1 dropout of the encoders and fusion classifier (None: cfg.dropout;
                         the original's stage 1: 0.3); only where cfg.dropout > 0 built dropout
  init             None  None: PyTorch's default init; "reference": the original's, stage-1 networks
                         (encoders, fusion classifier) Kaiming-normal (README.md:111 --init_type
                         kaiming), stage-2 ones (both AEs, classifier) N(0, 0.02) (README.md:114)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from iteacnet.config import ModelConfig
from iteacnet.models.base import (
    METHODS,
    BatchTotals,
    LossOutput,
    ModelInput,
    ModelSpec,
    batch_totals,
    is_dense,
    loss_parts,
    masked_mse,
)
from iteacnet.models.baselines.common import (
    MLP,
    ModalityEncoders,
    ResidualAE,
    UtteranceBaseline,
    Utterances,
    baseline_options,
    flatten_valid,
    reference_init,
    utterance_task_loss,
    utterances,
)

DEFAULTS = {"ae_layers": None, "n_blocks": 5, "ce_weight": 1.0, "mse_weight": 4.0, "cycle_weight": 2.0,
            "pretrain_dropout": None, "init": None}


class MMIN(UtteranceBaseline):
    teacher_ready: torch.Tensor  # () bool buffer: the imagination target has been snapshotted

    def __init__(
        self, spec: ModelSpec, hidden: int, dropout: float, ae_layers: tuple[int, ...], n_blocks: int,
        ce_weight: float, mse_weight: float, cycle_weight: float, pretrain_dropout: float | None = None,
    ) -> None:
        super().__init__(spec)
        self.encoders = ModalityEncoders(spec, (hidden, hidden), hidden, dropout)
        d = self.encoders.d_out  # M·D
        # Stage 1's fusion classifier (MMIN's utt_fusion netC); not used after stage 1.
        self.pretrain_classifier = MLP(d, (hidden, hidden), spec.num_outputs, dropout)
        # The frozen imagination target: a snapshot of the encoders taken when stage 2 starts.
        self.teacher = copy.deepcopy(self.encoders).requires_grad_(False)
        self.register_buffer("teacher_ready", torch.zeros((), dtype=torch.bool))
        self.imagine = ResidualAE(d, ae_layers, n_blocks)
        self.cycle = ResidualAE(d, ae_layers, n_blocks)
        self.classifier = MLP(self.imagine.d_latent, (hidden, hidden), spec.num_outputs, dropout)
        self.ce_weight, self.mse_weight, self.cycle_weight = float(ce_weight), float(mse_weight), float(cycle_weight)
        self.dropout = float(dropout)
        self.pretrain_dropout = self.dropout if pretrain_dropout is None else float(pretrain_dropout)

    def set_dropout(self, p: float) -> None:
        """The dropout rate of the encoders and both classifiers (the stages differ in it)."""
        for part in (self.encoders, self.pretrain_classifier, self.classifier):
            for mod in part.modules():
                if isinstance(mod, nn.Dropout):
                    mod.p = p

    def train(self, mode: bool = True) -> MMIN:
        super().train(mode)
        self.teacher.eval()  # the pretrained encoder runs in test mode (no dropout), as in MMIN
        return self

    def utterance_outputs(self, u: Utterances) -> torch.Tensor:
        _, latent = self.imagine(self.encoders(u.features))  # (N, n_blocks·ae_layers[-1])
        return self.classifier(latent)  # (N, C)

    def pretrain_loss(self, full: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None) -> LossOutput:
        """Stage 1: encoders + fusion classifier with L_emo on complete data."""
        n = batch_totals(full, full, totals).valid
        self.set_dropout(self.pretrain_dropout)
        u = utterances(full, self.spec)
        logits = self.pretrain_classifier(self.encoders(u.features))  # (N, C)
        rows = flatten_valid(full.valid, full.valid)  # (N,) all True, but under dense_layout
        task = utterance_task_loss(logits, flatten_valid(labels, full.valid), self.spec, n, rows)
        return LossOutput(task, loss_parts(loss=task, task=task))

    @torch.no_grad()
    def end_pretraining(self) -> None:
        """Stage 2 begins: the encoders, as stage 1 left them, become the frozen imagination
        target (once). The engine calls it before the first stage-2 epoch, so the snapshot
        never depends on which batch (or data-parallel shard) comes first."""
        if not bool(self.teacher_ready):
            self.teacher.load_state_dict(self.encoders.state_dict())
            self.teacher_ready.fill_(True)

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        n = batch_totals(full, masked, totals).valid
        if not is_dense():  # a stack's members snapshot at the stage boundary, as the engine does
            self.end_pretraining()  # no-op after the first call
        self.set_dropout(self.dropout)
        u = utterances(masked, self.spec)
        complete = utterances(full, self.spec)
        emb = self.encoders(u.features)  # (N, M·D) what the model sees
        imagined, latent = self.imagine(emb)  # (N, M·D), (N, n_blocks·ae_layers[-1])
        back, _ = self.cycle(imagined)  # (N, M·D)
        with torch.no_grad():
            # MMIN's "reverse" input: only the modalities the mask hid, the present ones zeroed.
            hidden = {m: x * (~u.present[:, j : j + 1]).to(x.dtype)
                      for j, (m, x) in enumerate(complete.features.items())}
            target = self.teacher(hidden)  # (N, M·D)
        rows = flatten_valid(masked.valid, masked.valid)  # (N,) all True, but under dense_layout
        task = utterance_task_loss(self.classifier(latent), flatten_valid(labels, masked.valid), self.spec, n, rows)
        # Means over (N, M·D) elements, N counted on the whole batch; padding weighs 0.
        imagination = masked_mse(imagined, target, rows, n)
        cycle = masked_mse(back, emb.detach(), rows, n)
        total = self.ce_weight * task + self.mse_weight * imagination + self.cycle_weight * cycle
        return LossOutput(total, loss_parts(loss=total, task=task, imagination=imagination, cycle=cycle))


@METHODS.register("mmin")
def build_mmin(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    o = baseline_options(cfg, DEFAULTS, "mmin")
    h = cfg.hidden
    layers = tuple(int(w) for w in (o["ae_layers"] or (2 * h, h, max(1, h // 2))))
    model = MMIN(spec, h, cfg.dropout, layers, int(o["n_blocks"]), o["ce_weight"], o["mse_weight"],
                 o["cycle_weight"], o["pretrain_dropout"])
    if o["init"] is not None:
        if o["init"] != "reference":
            raise ValueError(f"mmin init must be None or 'reference', got {o['init']!r}")
        stage1: tuple[nn.Module, ...] = (model.encoders, model.pretrain_classifier)
        stage2: tuple[nn.Module, ...] = (model.imagine, model.cycle, model.classifier)
        for part in stage1:
            reference_init(part, "kaiming")
        for part in stage2:
            reference_init(part, "normal")
        model.teacher.load_state_dict(model.encoders.state_dict())  # replaced at the stage boundary anyway
    return model
