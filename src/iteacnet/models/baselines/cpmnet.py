"""CPM-Net baseline as the original method: a free latent code per utterance, test ones too.

Paper: C. Zhang, Z. Han, Y. Cui, H. Fu, J. T. Zhou, Q. Hu, "CPM-Nets: Cross Partial
Multi-View Networks", NeurIPS 2019, as GCNet (Lian et al., TPAMI 2023) runs it
(zeroQiaoba/GCNet at c2dfd3b, baseline-cpmnet/util/model.py, test_lianzheng.py,
util/classfiy.py; README.md:140 --lsd-dim=128 --lamb=1 --epochs-train=30 --epochs-test=300).

The original (model.py; line numbers at that commit):
  * every utterance n has a free code h_n (lsd_dim); view v is decoded by one Linear
    g_v(h) = W_v h + b_v (layer_size [[d_v]], test_lianzheng.py:50; model.py:97-102);
  * L_rec = Σ_n Σ_v s_nv ||g_v(h_n) − x_nv||², only the views present (model.py:122-128);
  * L_cls = Σ_n relu(1[argmax_c s_nc ≠ y_n] + max_c s_nc − s_n,y_n), s_nc the mean of h_nᵀh_m
    over the other training utterances m of class c (model.py:139-160): no parameters;
  * training alternates Adam on the decoders (L_rec, lr 0.001) and Adam on the training codes
    (L_rec + lamb·L_cls, lr 0.01), model.py:70-76, test_lianzheng.py:52;
  * a test code is fit by Adam (lr 0.001) on L_rec of its present views with the decoders
    fixed, 5 steps per test epoch (model.py:80-81, 197-200), from a random start;
  * prediction: argmax_c h_nᵀ μ_c, μ_c the mean training code of class c (classfiy.py:31-46).

Here, inside an engine that trains on batches and predicts on unseen utterances:
  * Test (and validation) codes: `predict` fits a code per utterance exactly as the original's
    test phase: TensorFlow's Adam update, lr `test_lr`, `test_steps` steps (300 epochs × 5),
    decoders fixed. Adam is elementwise, so each code depends on its own utterance only (the
    original's batch sum changes nothing), which keeps predictions batch- and padding-invariant.
    The start is 0 instead of a small random draw (Xavier bound ≈ 0.03 for thousands of rows).
  * Training codes persist between batches, keyed by the utterance's complete features (an
    exact integer hash of their float32 bits: the engine hands models no utterance identity,
    and models do not know corpora). Each `training_loss` call first takes `code_steps`
    Adam steps (lr `code_lr`) on the batch's codes for L_rec + lamb·L_cls with the decoders
    fixed (the original's h step), then returns L_rec at the updated codes for the engine's
    optimizer to step the decoders (the original's net step). Codes, their Adam moments and
    labels are buffers, saved with the model.
  * L_cls compares the codes of a batch (the original: of the whole training set, one batch);
    a recipe can make the batch the whole training split.
  * Regression (MOSI/MOSEI): L_cls needs classes, so a Linear lsd → 1 head trained with
    L_emo takes its place (L = L_rec + lamb · L_emo) and predicts from the fitted code.
The code updates are state changes inside `training_loss`, so a batch cannot be split over
data-parallel ranks (`couples_batch`).

Sizes: lsd_dim = cfg.hidden (128 in GCNet's runs). No dropout (one-layer decoders have none).

Options (`ModelConfig.baseline`):
  lamb         1.0    weight of L_cls (README.md:140 --lamb=1; test_lianzheng.py:23 default 10)
  code_lr      0.01   Adam lr of the training codes (test_lianzheng.py:52 learning_rate[1])
  code_steps   1      code steps per training batch (the original: 5 per epoch, after 5 net steps)
  test_lr      0.001  Adam lr of test codes (test_lianzheng.py:52 learning_rate[0]; model.py:80)
  test_steps   1500   Adam steps of a test code (--epochs-test=300 × 5, model.py:197-198)
"""

from __future__ import annotations

from typing import Any, cast

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

DEFAULTS: dict[str, Any] = {"lamb": 1.0, "code_lr": 0.01, "code_steps": 1, "test_lr": 0.001, "test_steps": 1500}
# TensorFlow 1.x AdamOptimizer defaults (the original's optimizer for codes and decoders).
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
CODE_BUFFERS = ("code_keys", "codes", "code_m", "code_v", "code_t", "code_labels")


def cpm_classification_loss(h: torch.Tensor, y: torch.Tensor, num_classes: int, reduction: str = "sum") -> torch.Tensor:
    """CPM-Net's structured loss (model.py:139-160). h (N, L) codes, y (N,) classes.

    s_nc = mean of h_nᵀh_m over the other utterances m of class c; a class with no other
    utterance in the batch is no candidate, and an utterance alone in its class is skipped
    (the original divides by zero there; its one batch is the whole training set).
    """
    onehot = nn.functional.one_hot(y.long(), num_classes).to(h.dtype)  # (N, C)
    sim = h @ h.T  # (N, N)
    sim = sim - torch.diag_embed(torch.diagonal(sim))  # exclude self (the original's diag removal)
    count = onehot.sum(0, keepdim=True) - onehot  # (N, C) others of each class
    mean_sim = (sim @ onehot) / count.clamp(min=1)  # (N, C)
    mean_sim = mean_sim.masked_fill(count == 0, float("-inf"))
    usable = (count * onehot).sum(-1) > 0  # (N,)
    if not bool(usable.any()):
        return h.sum() * 0.0
    mean_sim, y = mean_sim[usable], y[usable].long()  # (N', C), (N',)
    own = mean_sim.gather(-1, y[:, None])[:, 0]  # (N',) s_n,y_n
    best, pred = mean_sim.max(-1)  # (N',)
    theta = (pred != y).to(h.dtype)  # margin 1 only where the utterance is misclassified
    per = torch.relu(theta + best - own)
    return per.mean() if reduction == "mean" else per.sum()


def tf_adam_step(
    h: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One TensorFlow-1 Adam step, elementwise; t (N,) is each row's step count after this step.
    Returns (new h, new m, new v)."""
    m = BETA1 * m + (1 - BETA1) * grad
    v = BETA2 * v + (1 - BETA2) * grad * grad
    tf = t.to(h.dtype)[:, None]
    lr_t = lr * torch.sqrt(1 - BETA2**tf) / (1 - BETA1**tf)  # (N, 1)
    return h - lr_t * m / (torch.sqrt(v) + EPS), m, v


class CPMNet(UtteranceBaseline):
    code_keys: torch.Tensor  # (K,) int64, sorted: the training utterances seen so far
    codes: torch.Tensor  # (K, L) their codes
    code_m: torch.Tensor  # (K, L) Adam first moments
    code_v: torch.Tensor  # (K, L) Adam second moments
    code_t: torch.Tensor  # (K,) Adam steps taken
    code_labels: torch.Tensor  # (K,) class of each code (classification)
    multipliers: torch.Tensor  # (Σ d_m,) int64, the hash's fixed odd multipliers

    def __init__(
        self, spec: ModelSpec, latent: int, lamb: float, code_lr: float, code_steps: int,
        test_lr: float, test_steps: int,
    ) -> None:
        super().__init__(spec)
        self.latent = latent
        self.decoders = ModalityDecoders(spec, latent, (), 0.0)  # one Linear lsd → d_v per view
        self.lamb, self.code_lr, self.code_steps = float(lamb), float(code_lr), int(code_steps)
        self.test_lr, self.test_steps = float(test_lr), int(test_steps)
        self.head: nn.Linear | None = None if spec.task == "classification" else nn.Linear(latent, 1)
        self.register_buffer("code_keys", torch.zeros(0, dtype=torch.long))
        self.register_buffer("codes", torch.zeros(0, latent))
        self.register_buffer("code_m", torch.zeros(0, latent))
        self.register_buffer("code_v", torch.zeros(0, latent))
        self.register_buffer("code_t", torch.zeros(0, dtype=torch.long))
        self.register_buffer("code_labels", torch.zeros(0, dtype=torch.long))
        g = torch.Generator().manual_seed(20190101)
        width = sum(d for _, d in spec.dims)
        odd = torch.randint(1, 2**62, (width,), generator=g, dtype=torch.long) * 2 + 1
        self.register_buffer("multipliers", odd, persistent=False)

    @property
    def couples_batch(self) -> bool:
        """`training_loss` updates the batch's codes in place: a batch cannot be sharded."""
        return True

    # ------------------------------------------------------------------ decoders
    def linear_views(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(W_v (d_v, L), b_v (d_v,)) per view in modality order."""
        layers = [cast(nn.Linear, cast(nn.Sequential, self.decoders.nets[m])[-1]) for m in self.spec.modalities]
        return [(lin.weight, lin.bias) for lin in layers]

    def view_errors(self, h: torch.Tensor, u: Utterances, detach_decoders: bool = False) -> torch.Tensor:
        """(N,) Σ_v s_nv ||g_v(h_n) − x_nv||²: the reconstruction of the present views."""
        err = h.new_zeros(h.shape[0])
        for j, (m, (w, b)) in enumerate(zip(self.spec.modalities, self.linear_views())):
            if detach_decoders:
                w, b = w.detach(), b.detach()
            sq = (h @ w.T + b - u.features[m]).pow(2).sum(-1)  # (N,)
            err = err + sq * u.present[:, j].to(h.dtype)
        return err

    # ------------------------------------------------------------------ test-time codes
    @torch.no_grad()
    def fit_codes(self, u: Utterances) -> torch.Tensor:
        """(N, L) codes fit to the present views, decoders fixed: the original's test phase.

        ∇_h ℓ_n = 2 Σ_v s_nv (W_vᵀW_v h_n + W_vᵀ(b_v − x_nv)); the Gram matrices and the
        constant terms are computed once, so a step costs three (N, L) × (L, L) products."""
        n = u.present.shape[0]
        dtype = u.features[self.spec.modalities[0]].dtype
        h = torch.zeros(n, self.latent, dtype=dtype, device=u.present.device)
        terms = []
        for j, (m, (w, b)) in enumerate(zip(self.spec.modalities, self.linear_views())):
            s = u.present[:, j : j + 1].to(dtype)  # (N, 1)
            terms.append((w.T @ w, (b - u.features[m]) @ w * s, s))  # (L, L), (N, L), (N, 1)
        m1, m2 = torch.zeros_like(h), torch.zeros_like(h)
        for step in range(1, self.test_steps + 1):
            grad = sum(2 * (s * (h @ gram) + c) for gram, c, s in terms)
            t = torch.full((n,), step, dtype=torch.long, device=h.device)
            h, m1, m2 = tf_adam_step(h, grad, m1, m2, t, self.test_lr)  # type: ignore[arg-type]
        return h

    def class_means(self) -> torch.Tensor:
        """(C, L) μ_c: the mean training code of each class (zeros before any training)."""
        onehot = nn.functional.one_hot(self.code_labels, self.spec.num_outputs).to(self.codes.dtype)  # (K, C)
        return (onehot.T @ self.codes) / onehot.sum(0).clamp(min=1)[:, None]

    def utterance_outputs(self, u: Utterances) -> torch.Tensor:
        h = self.fit_codes(u)
        if self.head is not None:
            return self.head(h)  # (N, 1)
        return h @ self.class_means().T  # (N, C): classfiy.ave's scores

    # ------------------------------------------------------------------ training codes
    def utterance_keys(self, full: ModelInput) -> torch.Tensor:
        """(N,) int64 key of each valid utterance: an exact hash of its complete features'
        float32 bits (integer sums do not depend on batch order or composition)."""
        x = torch.cat([flatten_valid(full.features[m], full.valid) for m in self.spec.modalities], -1)
        bits = x.to(torch.float32).contiguous().view(torch.int32).to(torch.long)  # (N, Σ d_m)
        return (bits * self.multipliers).sum(-1)

    @torch.no_grad()
    def slots(self, keys: torch.Tensor) -> torch.Tensor:
        """(N,) rows of `codes` for `keys`; unseen keys get new zero codes (kept sorted)."""
        known = self.code_keys
        if known.numel():
            pos = torch.searchsorted(known, keys).clamp(max=known.numel() - 1)
            found = known[pos] == keys
        else:
            found = torch.zeros_like(keys, dtype=torch.bool)
        if not bool(found.all()):
            new = torch.unique(keys[~found])
            order = torch.argsort(torch.cat([known, new]))
            k, width = new.numel(), self.latent
            grow = {
                "code_keys": new, "codes": self.codes.new_zeros(k, width), "code_m": self.code_m.new_zeros(k, width),
                "code_v": self.code_v.new_zeros(k, width), "code_t": self.code_t.new_zeros(k),
                "code_labels": self.code_labels.new_zeros(k),
            }
            for name, extra in grow.items():
                setattr(self, name, torch.cat([getattr(self, name), extra])[order])
            known = self.code_keys
        return torch.searchsorted(known, keys)

    def code_objective(self, h: torch.Tensor, u: Utterances, y: torch.Tensor) -> torch.Tensor:
        """L_rec + lamb · L_cls (or lamb · L_emo of the head) as sums, decoders held fixed."""
        rec = self.view_errors(h, u, detach_decoders=True).sum()
        if self.head is None:
            return rec + self.lamb * cpm_classification_loss(h, y, self.spec.num_outputs)
        pred = nn.functional.linear(h, self.head.weight.detach(), self.head.bias.detach())
        return rec + self.lamb * utterance_task_loss(pred, y, self.spec, torch.ones((), device=h.device))

    def step_codes(self, slots: torch.Tensor, u: Utterances, y: torch.Tensor) -> float:
        """`code_steps` Adam steps on the batch's codes (the original's h step); the objective."""
        value = 0.0
        rows, inverse = torch.unique(slots, return_inverse=True)  # an utterance twice in a batch: one code
        for _ in range(self.code_steps):
            h = self.codes[slots].detach().requires_grad_(True)
            with torch.enable_grad():
                objective = self.code_objective(h, u, y)
                (grad,) = torch.autograd.grad(objective, h)
            value = float(objective.detach())
            with torch.no_grad():
                g = grad.new_zeros(rows.numel(), self.latent).index_add_(0, inverse, grad)
                t = self.code_t[rows] + 1
                new, m, v = tf_adam_step(self.codes[rows], g, self.code_m[rows], self.code_v[rows], t, self.code_lr)
                self.codes[rows], self.code_m[rows], self.code_v[rows], self.code_t[rows] = new, m, v, t
        return value

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        n = batch_totals(full, masked, totals).valid
        u = utterances(masked, self.spec)
        y = flatten_valid(labels, masked.valid)  # (N,)
        slots = self.slots(self.utterance_keys(full))
        if self.head is None:
            self.code_labels[slots] = y.long()
        code_objective = self.step_codes(slots, u, y)
        h = self.codes[slots].detach()  # (N, L) after the h step
        rec = self.view_errors(h, u).sum() / n  # the net step: decoders on L_rec
        total = rec
        parts: dict[str, torch.Tensor] = {}
        if self.head is not None:
            task = utterance_task_loss(self.head(h), y, self.spec, n)
            total = rec + self.lamb * task
            parts["task"] = task
        with torch.no_grad():
            missing = flatten_valid(imputation_cells(full, masked), masked.valid)
            target = utterances(full, self.spec).features
            recon = self.decoders(h)
            imputation = missing_recon_loss(recon, target, missing, self.spec.modalities, n)
        out = loss_parts(loss=total, rec=rec, imputation=imputation, **parts)
        out["code_objective"] = code_objective
        return LossOutput(total, out)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The code table grows during training: take the saved table's size before loading.
        for name in CODE_BUFFERS:
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, getattr(self, name).new_zeros(saved.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@METHODS.register("cpmnet")
def build_cpmnet(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    o = baseline_options(cfg, DEFAULTS, "cpmnet")
    return CPMNet(spec, cfg.hidden, float(o["lamb"]), float(o["code_lr"]), int(o["code_steps"]),
                  float(o["test_lr"]), int(o["test_steps"]))
