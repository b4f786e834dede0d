"""Pieces the baselines share: utterance flattening, feature concatenation, MLPs, the
autoencoders of MMIN's code base, and the reconstruction loss on missing cells.

Axis legend: B = conversations, T = utterances (padded), N = valid utterances of a batch,
flattened in (b, t) order, M = modalities, D = hidden size, d_m = input size of modality m,
C = classifier outputs (classes, or 1 for regression).

The utterance-level baselines (AE, CRA, MMIN, CPM-Net) see every utterance on its own, as
in their original code: they flatten the valid utterances of a batch to (N, ·), which also
makes them padding- and batch-invariant by construction, and scatter outputs back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from iteacnet.config import ModelConfig
from iteacnet.models.base import ModelInput, ModelSpec, default_param_groups, emotion_loss, is_dense

# Keys every baseline accepts: the engine reads `pretrain_epochs` itself.
ENGINE_KWARGS: frozenset[str] = frozenset({"pretrain_epochs"})


def baseline_options(cfg: ModelConfig, defaults: dict[str, Any], method: str) -> dict[str, Any]:
    """`defaults` overridden by `cfg.baseline`; an unknown key is an error (typos must not pass)."""
    given = cfg.baseline_kwargs()
    unknown = set(given) - set(defaults) - ENGINE_KWARGS
    if unknown:
        raise ValueError(f"unknown {method} option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {k: given.get(k, v) for k, v in defaults.items()}


# ---------------------------------------------------------------------------- flatten / scatter
def flatten_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) → (N, ...): the valid utterances, in (b, t) order. Under `dense_layout`
    every position (N = B·T): its sizes may not depend on data there (vmap); losses then
    weigh rows by `flatten_valid(valid, valid)`."""
    if is_dense():
        return x.reshape(-1, *x.shape[valid.dim():])
    return x[valid]


def scatter_valid(y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, ...) → (B, T, ...): back to the padded layout, zero on padding."""
    if is_dense():
        keep = valid.reshape(-1, *([1] * (y.dim() - 1))).to(y.dtype)
        return (y * keep).reshape(tuple(valid.shape) + tuple(y.shape[1:]))
    out = y.new_zeros(tuple(valid.shape) + tuple(y.shape[1:]))
    out[valid] = y
    return out


@dataclass
class Utterances:
    """The valid utterances of a batch, flattened: what utterance-level baselines see."""

    features: dict[str, torch.Tensor]  # modality -> (N, d_m), zero where not present
    present: torch.Tensor  # (N, M) bool, modality order = ModelSpec.modalities

    def concat(self, modalities: Sequence[str]) -> torch.Tensor:
        """(N, Σ d_m): the modalities' features side by side, in `modalities` order."""
        return torch.cat([self.features[m] for m in modalities], dim=-1)


def utterances(x: ModelInput, spec: ModelSpec) -> Utterances:
    return Utterances(
        features={m: flatten_valid(x.features[m], x.valid) for m in spec.modalities},
        present=flatten_valid(x.present, x.valid),
    )


def concat_features(x: ModelInput, spec: ModelSpec) -> torch.Tensor:
    """(B, T, Σ d_m): the modalities' features side by side, in spec order."""
    return torch.cat([x.features[m] for m in spec.modalities], dim=-1)


def split_features(z: torch.Tensor, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """(..., Σ d_m) → modality -> (..., d_m); the inverse of `concat_features`."""
    parts = torch.split(z, [d for _, d in spec.dims], dim=-1)
    return dict(zip(spec.modalities, parts))


def imputation_cells(full: ModelInput, masked: ModelInput) -> torch.Tensor:
    """(B, T, M) bool: cells the data has but the training mask hid (imputation targets).

    A modality the data itself lacks is no target: its "full" features are zeros, not truth.
    """
    return full.present & ~masked.present & masked.valid[..., None]


# ---------------------------------------------------------------------------- losses
def missing_recon_loss(
    recon: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    missing: torch.Tensor,
    modalities: Sequence[str],
    count: torch.Tensor,
) -> torch.Tensor:
    """Squared error on missing cells only, as GCNet's `MaskedReconLoss` and MMIN's AE/CRA.

    recon, target: modality -> (N, d_m); missing: (N, M) bool. Per modality the squared
    error is summed over the missing cells and divided by d_m; the modalities are summed,
    and the sum divided by `count` utterances (the whole batch's, see BatchTotals: GCNet's
    mean; AE/CRA scale it back up to their sum over `rec_batch`). Zero, with a graph, when
    nothing is missing (text-only input, rate 0).
    """
    total = recon[modalities[0]].sum() * 0.0
    for j, m in enumerate(modalities):
        sq = (recon[m] - target[m]).pow(2) * missing[:, j : j + 1].to(recon[m].dtype)  # (N, d_m)
        total = total + sq.sum() / recon[m].shape[-1]
    total = total / count
    return total


def utterance_task_loss(
    out: torch.Tensor, labels: torch.Tensor, spec: ModelSpec, count: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_emo of flattened outputs (N, C) against flattened labels (N,), divided by `count`
    (default N); `rows` (N,) bool limits it to real utterances (`flatten_valid(valid, valid)`:
    all of them, except under `dense_layout`)."""
    every = torch.ones(out.shape[0], dtype=torch.bool, device=out.device) if rows is None else rows
    return emotion_loss(out, labels, every, spec, count)


# ---------------------------------------------------------------------------- networks
INIT_KINDS = ("normal", "kaiming")


def reference_init(module: nn.Module, kind: str) -> None:
    """MMIN code base's `init_weights` (zeroQiaoba/GCNet baseline-mmin/models/networks/
    tools.py:64-89, applied to every network by base_model.py:84-86): Linear weights
    N(0, 0.02) ("normal", --init_type normal) or Kaiming-normal, fan_in ("kaiming"); biases 0."""
    if kind not in INIT_KINDS:
        raise ValueError(f"init must be one of {INIT_KINDS} or None, got {kind!r}")
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if kind == "normal":
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MLP(nn.Sequential):
    """[Linear → ReLU → Dropout] per hidden layer, then Linear (MMIN's `FcClassifier`)."""

    def __init__(self, d_in: int, layers: Sequence[int], d_out: int, dropout: float = 0.0) -> None:
        mods: list[nn.Module] = []
        for width in layers:
            mods += [nn.Linear(d_in, width), nn.ReLU()]
            if dropout > 0:
                mods.append(nn.Dropout(dropout))
            d_in = width
        mods.append(nn.Linear(d_in, d_out))
        super().__init__(*mods)


class ModalityEncoders(nn.Module):
    """One MLP per modality, d_m → D; outputs concatenated in spec order: (N, M·D)."""

    def __init__(self, spec: ModelSpec, layers: Sequence[int], d_out: int, dropout: float) -> None:
        super().__init__()
        self.modalities = spec.modalities
        self.nets = nn.ModuleDict({m: MLP(d, layers, d_out, dropout) for m, d in spec.dims})
        self.d_out = d_out * len(spec.dims)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.nets[m](features[m]) for m in self.modalities], dim=-1)


class ModalityDecoders(nn.Module):
    """One MLP per modality from a shared code, (N, d_in) → modality -> (N, d_m)."""

    def __init__(self, spec: ModelSpec, d_in: int, layers: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.nets = nn.ModuleDict({m: MLP(d_in, layers, d, dropout) for m, d in spec.dims})

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {m: net(z) for m, net in self.nets.items()}


class SimpleAE(nn.Module):
    """Fully connected autoencoder (MMIN code base's `SimpleFcAE`, used by its AE baseline).

    Encoder: Linear + LeakyReLU per layer. Decoder: the mirror image, LeakyReLU between
    layers and a final ReLU, as in that code. Returns (reconstruction, latent).
    """

    def __init__(self, d_in: int, layers: Sequence[int]) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        d = d_in
        for width in layers:
            enc += [nn.Linear(d, width), nn.LeakyReLU()]
            d = width
        widths = [*reversed(layers), d_in]
        dec: list[nn.Module] = []
        for i in range(len(widths) - 1):
            last = i == len(widths) - 2
            dec += [nn.Linear(widths[i], widths[i + 1]), nn.ReLU() if last else nn.LeakyReLU()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(x)  # (N, layers[-1])
        return self.decoder(latent), latent  # (N, d_in), (N, layers[-1])


def _residual_encoder(d_in: int, layers: Sequence[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for width in layers:
        mods += [nn.Linear(d_in, width), nn.LeakyReLU()]
        d_in = width
    return nn.Sequential(*mods[:-1])  # no activation on the latent


class ResidualAE(nn.Module):
    """Cascaded residual autoencoder (Tran et al. 2017; MMIN's `ResidualAE`).

    Block k sees the input plus the outputs of blocks < k and predicts a residual; the sum
    passes a Linear-ReLU-Linear transition. Returns (output (N, d_in), the blocks' latents
    concatenated (N, n_blocks·layers[-1])): MMIN classifies from the latter.
    """

    def __init__(self, d_in: int, layers: Sequence[int], n_blocks: int) -> None:
        super().__init__()
        if n_blocks < 1 or not layers:
            raise ValueError(f"a residual AE needs n_blocks >= 1 and layers, got {n_blocks}, {layers}")
        self.encoders = nn.ModuleList(_residual_encoder(d_in, layers) for _ in range(n_blocks))
        self.decoders = nn.ModuleList(MLP(layers[-1], tuple(reversed(layers))[1:], d_in) for _ in range(n_blocks))  # mirror, ReLU
        self.transition = nn.Sequential(nn.Linear(d_in, d_in), nn.ReLU(), nn.Linear(d_in, d_in))
        self.d_latent = n_blocks * layers[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_in, x_out = x, torch.zeros_like(x)  # (N, d_in)
        latents = []
        for enc, dec in zip(self.encoders, self.decoders):
            x_in = x_in + x_out  # the running sum: input plus all residuals so far
            z = enc(x_in)  # (N, layers[-1])
            x_out = dec(z)
            latents.append(z)
        return self.transition(x_in + x_out), torch.cat(latents, dim=-1)


# ---------------------------------------------------------------------------- method base
class UtteranceBaseline(nn.Module):
    """Base of the utterance-level baselines: `predict` flattens, classifies, scatters back.

    Subclasses implement `utterance_outputs(u) -> (N, C)` and `training_loss`.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec

    def utterance_outputs(self, u: Utterances) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, x: ModelInput) -> torch.Tensor:
        return scatter_valid(self.utterance_outputs(utterances(x, self.spec)), x.valid)  # (B, T, C)

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]:
        return default_param_groups(self, lr)
