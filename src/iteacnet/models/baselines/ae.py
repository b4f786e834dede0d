"""AE baseline: autoencoder imputation of missing modalities, utterance by utterance.

Papers: Y. Duan, Y. Lv, W. Kang, Y. Zhao, "A deep learning based approach for traffic data
imputation", ITSC 2014 (autoencoder imputation), in the multimodal form of the AE baseline
of MMIN's code base (J. Zhao, R. Li, Q. Jin, ACL 2021) as GCNet (Lian et al., TPAMI 2023)
runs it (zeroQiaoba/GCNet, baseline-mmin/models/mmin_AE_model.py).

Model (per valid utterance, conversations never mixed; facts from that code):
  per-modality encoder MLP d_m → [D, D] → D (its `FcClassifier`, cls_layers 128,128,
  embd 128) on the masked features; concatenation (M·D); autoencoder (M·D) → ae_layers →
  (M·D) (`SimpleFcAE`: LeakyReLU encoder, mirrored decoder ending in ReLU, no dropout);
  from the autoencoder output: a classifier MLP (M·D) → [D, D] → C and per-modality
  decoders (M·D) → [D, D] → d_m that reconstruct the complete input features.
Loss: L_emo + rec_weight · L_rec, L_rec = Σ_m Σ_{missing cells} ||x̂_m − x_m||² / d_m,
  the squared error only where the training mask hid a modality the data has, summed over
  the utterances of a batch. The original's batches are 256 utterances; ours are whole
  conversations, so L_rec is computed as rec_batch × its mean per utterance: the weight of
  each utterance relative to L_emo (a mean) is the original's, whatever our batch size.

Sizes: D = cfg.hidden (128 in the original), dropout = cfg.dropout (0.5 in GCNet's runs).

Options (`ModelConfig.baseline`):
  ae_layers      (2·D, D)  autoencoder widths (GCNet's AE run: 256,128)
  rec_weight     0.2       weight of L_rec (GCNet's AE run: --mse_weight=0.2)
  rec_batch      256       utterances L_rec sums over (GCNet's AE run: --batch_size=256)
  init           None      None: PyTorch's default init; "normal": the original's --init_type
                           normal, N(0, 0.02) weights and zero biases (common.reference_init)
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
    ModalityEncoders,
    SimpleAE,
    UtteranceBaseline,
    Utterances,
    baseline_options,
    flatten_valid,
    imputation_cells,
    missing_recon_loss,
    reference_init,
    utterance_task_loss,
    utterances,
)


class AEImputer(UtteranceBaseline):
    """Encoders → autoencoder core → (classifier, decoders). The core is what AE and CRA differ in.

    `core(z)` maps (N, M·D) → ((N, M·D) output, latent); it is a `SimpleAE` here and a
    `ResidualAE` for CRA, exactly the one difference between the two original models.
    """

    def __init__(
        self, spec: ModelSpec, core: nn.Module, hidden: int, dropout: float,
        rec_weight: float, rec_batch: float,
    ) -> None:
        super().__init__(spec)
        self.encoders = ModalityEncoders(spec, (hidden, hidden), hidden, dropout)
        self.core = core
        self.decoders = ModalityDecoders(spec, self.encoders.d_out, (hidden, hidden), dropout)
        self.classifier = MLP(self.encoders.d_out, (hidden, hidden), spec.num_outputs, dropout)
        self.rec_weight, self.rec_batch = float(rec_weight), float(rec_batch)

    def fuse(self, u: Utterances) -> torch.Tensor:
        """(N, M·D): the autoencoder's completion of the concatenated modality embeddings."""
        out, _ = self.core(self.encoders(u.features))
        return out

    def utterance_outputs(self, u: Utterances) -> torch.Tensor:
        return self.classifier(self.fuse(u))  # (N, C)

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        n = batch_totals(full, masked, totals).valid
        u = utterances(masked, self.spec)
        target = utterances(full, self.spec).features  # modality -> (N, d_m), the complete input
        missing = flatten_valid(imputation_cells(full, masked), masked.valid)  # (N, M)
        fused = self.fuse(u)  # (N, M·D)
        rows = flatten_valid(masked.valid, masked.valid)  # (N,) all True, but under dense_layout
        task = utterance_task_loss(self.classifier(fused), flatten_valid(labels, masked.valid), self.spec, n, rows)
        per_utterance = missing_recon_loss(self.decoders(fused), target, missing, self.spec.modalities, n)
        rec = self.rec_batch * per_utterance  # the original's sum over a batch of rec_batch utterances
        total = task + self.rec_weight * rec
        return LossOutput(total, loss_parts(loss=total, task=task, rec=rec))


@METHODS.register("ae")
def build_ae(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    o = baseline_options(cfg, {"ae_layers": None, "rec_weight": 0.2, "rec_batch": 256, "init": None}, "ae")
    layers = tuple(int(w) for w in (o["ae_layers"] or (2 * cfg.hidden, cfg.hidden)))
    core = SimpleAE(cfg.hidden * len(spec.dims), layers)
    model = AEImputer(spec, core, cfg.hidden, cfg.dropout, o["rec_weight"], o["rec_batch"])
    if o["init"] is not None:
        reference_init(model, str(o["init"]))
    return model
