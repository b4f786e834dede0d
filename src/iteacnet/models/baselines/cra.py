"""CRA baseline: cascaded residual autoencoder imputation, utterance by utterance.

Paper: L. Tran, X. Liu, J. Zhou, R. Jin, "Missing Modalities Imputation via Cascaded
Residual Autoencoder", CVPR 2017, in the multimodal form of the CRA baseline of MMIN's code
base (J. Zhao, R. Li, Q. Jin, ACL 2021) as GCNet (Lian et al., TPAMI 2023) runs it
(zeroQiaoba/GCNet, baseline-mmin/models/mmin_CRA_model.py).

Model: the AE baseline (see `ae.py`: per-modality encoders d_m → [D, D] → D, classifier and
per-modality decoders on the completed (M·D) code) with the autoencoder replaced by a
cascade of `n_blocks` residual autoencoders (`ResidualAE` in common.py): block k sees the
input plus the residuals of blocks < k and predicts another residual; a Linear-ReLU-Linear
transition follows. Autoencoder widths ae_layers, no dropout inside, as the original.
Loss: L_emo + rec_weight · L_rec on the missing cells (see `ae.py`).

Sizes: D = cfg.hidden (128 in the original), dropout = cfg.dropout (0.5 in GCNet's runs).

Options (`ModelConfig.baseline`):
  ae_layers      (2·D, D)  widths of each residual autoencoder (GCNet's CRA run: 256,128)
  n_blocks       3         autoencoders in the cascade (mmin_CRA_model.py:36 default, and the
                           count behind the paper's Table 5; GCNet's runs pass --n_blocks=2,
                           README.md:126)
  rec_weight     0.8       weight of L_rec (GCNet's CRA run: --mse_weight=0.8)
  rec_batch      256       utterances L_rec sums over (see ae.py; GCNet's run: --batch_size=256)
  init           None      as ae.py ("normal": the original's --init_type normal)
"""

from __future__ import annotations

from torch import nn

from iteacnet.config import ModelConfig
from iteacnet.models.base import METHODS, ModelSpec
from iteacnet.models.baselines.ae import AEImputer
from iteacnet.models.baselines.common import ResidualAE, baseline_options, reference_init

DEFAULTS = {"ae_layers": None, "n_blocks": 3, "rec_weight": 0.8, "rec_batch": 256, "init": None}


@METHODS.register("cra")
def build_cra(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    o = baseline_options(cfg, DEFAULTS, "cra")
    layers = tuple(int(w) for w in (o["ae_layers"] or (2 * cfg.hidden, cfg.hidden)))
    core = ResidualAE(cfg.hidden * len(spec.dims), layers, int(o["n_blocks"]))
    model = AEImputer(spec, core, cfg.hidden, cfg.dropout, o["rec_weight"], o["rec_batch"])
    if o["init"] is not None:
        reference_init(model, str(o["init"]))
    return model
