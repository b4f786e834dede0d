"""CPM-Net, amortised redesign (`cpmnet-enc`): a learned encoder plus unrolled code inference.

Kept next to the faithful `cpmnet` (cpmnet.py, per-utterance codes optimised for every
utterance, test ones too) as an inductive variant; see docs/METHOD-NOTES.md, "Baselines and
their recipes", for why both exist.

Paper: C. Zhang, Z. Han, Y. Cui, H. Fu, J. T. Zhou, Q. Hu, "CPM-Nets: Cross Partial
Multi-View Networks", NeurIPS 2019. Facts from GCNet's copy (zeroQiaoba/GCNet,
baseline-cpmnet/util/model.py, util/classfiy.py, README run: --lsd-dim=128 --lamb=1).

The original, per sample n: a free latent code h_n (lsd_dim); per view v a decoder
g_v(h) (one Linear lsd_dim → d_v in GCNet's runs) reconstructing the *available* views,
  L_rec = Σ_n Σ_v s_nv ||g_v(h_n) − x_nv||²    (s_nv = 1 if view v is present);
a parameter-free classification loss on the codes: with s_nc = mean over the other
training samples m of class c of h_nᵀh_m,
  L_cls = Σ_n relu(1[argmax_c s_nc ≠ y_n] + max_c s_nc − s_n,y_n);
training alternates Adam steps on the decoders (L_rec) and on the training codes
(L_rec + lamb·L_cls); a test code is fit to its available views by Adam on L_rec with the
decoders frozen, and is classified by argmax_c h_nᵀ μ_c, μ_c = mean training code of c.

What this implementation does, and why it stays faithful:
  * Codes of unseen utterances cannot be free parameters of a model that is trained once
    and then predicts, so every code is *inferred* the same way at training and test time:
    h⁰ = E(x, s) by an encoder MLP (Σ d_m + M) → [lsd] → lsd on the masked features and the
    presence flags (an amortised initialisation replacing the random one), then `infer_steps`
    steps of gradient descent, h ← h − infer_lr · α_n · ∇_h ℓ_n(h), on the utterance's own
    reconstruction loss ℓ_n = Σ_v s_nv · mean_d (g_v(h) − x_nv)² with the decoders held fixed:
    the original's test-time inference of the code. α_n is the exact line-search step of
    the quadratic ℓ_n (linear decoders), so a few steps do what the original's hundreds of
    small Adam steps do, and no step size needs tuning to the feature scale. Each
    utterance's step depends on that utterance only.
  * Training backpropagates through the unrolled steps (create_graph): the encoder and the
    decoders learn to produce codes that, *after* test-time inference, reconstruct the
    views and separate the classes. The losses are the original ones, averaged over
    utterances: L = L_rec + lamb · L_cls (L_rec summing squared errors over dimensions as the
    original; L_cls with the class means of the other utterances in the batch).
  * Prediction keeps the original classifier: scores h_nᵀ μ_c (returned as the C "logits"),
    μ_c an exponential moving average (momentum `centroid_momentum`) of the batch class
    means of the training codes, updated by every `training_loss` call and saved as buffers.
  * Regression (MOSI/MOSEI): L_cls needs classes (GCNet binarised MOSI for CPM-Net), so a
    Linear lsd → 1 head on h is trained with L_emo in its place (L = L_rec + lamb · L_emo).
  * Deterministic: no sampling anywhere; dropout only in the encoder in training mode.
  * `predict` runs the inner steps under `torch.enable_grad()` (the engine predicts under
    `torch.no_grad()`), differentiating only with respect to h: parameters get no gradient.
The complete input `full` is not used for learning (CPM-Net never sees missing views); the
imputation error of the missing views is logged as `imputation`, as GCNet's copy reports it.

Sizes: lsd_dim = cfg.hidden (128 in GCNet's runs); dropout = cfg.dropout (encoder only).

Options (`ModelConfig.baseline`):
  infer_steps        10    gradient steps of code inference (train and test alike)
  infer_lr           1.0   damping of the line-search step (1 = exact line search)
  lamb               1.0   weight of the classification loss (GCNet's runs: --lamb=1)
  decoder_layers     ()    hidden widths of each view decoder (original: none, one Linear)
  centroid_momentum  0.9   EMA momentum of the class-mean codes used to classify
"""

from __future__ import annotations

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
    loss_parts,
)
from iteacnet.models.baselines.common import (
    MLP,
    ModalityDecoders,
    UtteranceBaseline,
    Utterances,
    baseline_options,
    flatten_valid,
    imputation_cells,
    missing_recon_loss,
    utterance_task_loss,
    utterances,
)
from iteacnet.models.baselines.cpmnet import cpm_classification_loss

DEFAULTS = {"infer_steps": 10, "infer_lr": 1.0, "lamb": 1.0, "decoder_layers": (), "centroid_momentum": 0.9}


class CPMNetEncoder(UtteranceBaseline):
    centroids: torch.Tensor  # (C, L) buffer, classification only
    seen: torch.Tensor  # (C,) bool buffer

    def __init__(
        self, spec: ModelSpec, latent: int, dropout: float, infer_steps: int, infer_lr: float,
        lamb: float, decoder_layers: tuple[int, ...], centroid_momentum: float,
    ) -> None:
        super().__init__(spec)
        d_in = sum(d for _, d in spec.dims) + len(spec.dims)
        self.encoder = MLP(d_in, (latent,), latent, dropout)
        self.decoders = ModalityDecoders(spec, latent, decoder_layers, 0.0)  # no dropout: g must be fixed
        self.infer_steps, self.infer_lr, self.lamb = int(infer_steps), float(infer_lr), float(lamb)
        self.momentum = float(centroid_momentum)
        self.head: nn.Module | None = None
        if spec.task == "classification":
            self.register_buffer("centroids", torch.zeros(spec.num_outputs, latent))  # (C, L) μ_c
            self.register_buffer("seen", torch.zeros(spec.num_outputs, dtype=torch.bool))  # (C,)
        else:
            self.head = nn.Linear(latent, 1)

    @property
    def couples_batch(self) -> bool:
        """Classification: L_cls compares each utterance with the others of its batch and the
        centroids follow batch means, so a batch cannot be split over data-parallel ranks."""
        return self.head is None

    # ------------------------------------------------------------------ code inference
    def view_errors(self, h: torch.Tensor, u: Utterances, per_dim: bool) -> torch.Tensor:
        """(N,) Σ_v s_nv · (mean or sum over d) (g_v(h_n) − x_nv)²: reconstruction of present views."""
        recon = self.decoders(h)
        err = h.new_zeros(h.shape[0])
        for j, m in enumerate(self.spec.modalities):
            sq = (recon[m] - u.features[m]).pow(2)  # (N, d_m)
            sq = sq.mean(-1) if per_dim else sq.sum(-1)
            err = err + sq * u.present[:, j].to(h.dtype)
        return err

    def infer(self, u: Utterances, differentiable: bool) -> torch.Tensor:
        """(N, L) codes: encoder initialisation, then gradient descent on ℓ_n with g fixed.

        differentiable=True (training) keeps the graph through the steps (create_graph);
        False (prediction) detaches and only differentiates with respect to h.
        """
        flags = u.present.to(u.features[self.spec.modalities[0]].dtype)
        h = self.encoder(torch.cat([u.concat(self.spec.modalities), flags], dim=-1))  # (N, L)
        with torch.enable_grad():
            if not differentiable:
                h = h.detach().requires_grad_(True)
            for _ in range(self.infer_steps):
                loss = self.view_errors(h, u, per_dim=True).sum()  # sum of independent ℓ_n
                (grad,) = torch.autograd.grad(loss, h, create_graph=differentiable)  # (N, L)
                h = h - self.infer_lr * self.step_length(h, grad, u)[:, None] * grad
        return h if differentiable else h.detach()

    def step_length(self, h: torch.Tensor, grad: torch.Tensor, u: Utterances) -> torch.Tensor:
        """(N,) exact line search along −∇ℓ_n for a quadratic ℓ_n: α = ||g||² / gᵀ∇²ℓ_n g.

        gᵀ∇²ℓ_n g = 2 Σ_v s_nv · mean_d (J_v g)², with J_v g the secant g_v(h + g) − g_v(h):
        exact for the default linear decoders (ℓ_n is then quadratic), a secant otherwise.
        """
        moved, now = self.decoders(h + grad), self.decoders(h)
        curv = h.new_zeros(h.shape[0])
        for j, m in enumerate(self.spec.modalities):
            curv = curv + (moved[m] - now[m]).pow(2).mean(-1) * u.present[:, j].to(h.dtype)
        return grad.pow(2).sum(-1) / (2 * curv).clamp(min=1e-12)

    # ------------------------------------------------------------------ outputs
    def scores(self, h: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            return self.head(h)  # (N, 1)
        return h @ self.centroids.T  # (N, C) similarity to each class's mean code

    def utterance_outputs(self, u: Utterances) -> torch.Tensor:
        return self.scores(self.infer(u, differentiable=False))

    @torch.no_grad()
    def _update_centroids(self, h: torch.Tensor, y: torch.Tensor) -> None:
        onehot = nn.functional.one_hot(y.long(), self.spec.num_outputs).to(h.dtype)  # (N, C)
        count = onehot.sum(0)  # (C,)
        batch_mean = (onehot.T @ h) / count.clamp(min=1)[:, None]  # (C, L)
        here = count > 0
        blended = self.momentum * self.centroids + (1 - self.momentum) * batch_mean
        new = torch.where(self.seen[:, None], blended, batch_mean)  # first sight: take the mean
        self.centroids.copy_(torch.where(here[:, None], new, self.centroids))
        self.seen |= here

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        n = batch_totals(full, masked, totals).valid
        u = utterances(masked, self.spec)
        y = flatten_valid(labels, masked.valid)  # (N,)
        h = self.infer(u, differentiable=True)  # (N, L)
        rec = self.view_errors(h, u, per_dim=False).sum() / n
        if self.head is None:  # couples the batch: no totals can shard it
            task = cpm_classification_loss(h, y, self.spec.num_outputs, reduction="mean")
            self._update_centroids(h.detach(), y)
        else:
            task = utterance_task_loss(self.scores(h), y, self.spec, n)
        total = rec + self.lamb * task
        with torch.no_grad():
            missing = flatten_valid(imputation_cells(full, masked), masked.valid)
            target = utterances(full, self.spec).features
            imputation = missing_recon_loss(self.decoders(h), target, missing, self.spec.modalities, n)
        return LossOutput(total, loss_parts(loss=total, rec=rec, task=task, imputation=imputation))


@METHODS.register("cpmnet-enc")
def build_cpmnet_enc(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    o = baseline_options(cfg, DEFAULTS, "cpmnet-enc")
    return CPMNetEncoder(
        spec, cfg.hidden, cfg.dropout, int(o["infer_steps"]), float(o["infer_lr"]), float(o["lamb"]),
        tuple(int(w) for w in o["decoder_layers"]), float(o["centroid_momentum"]),
    )
