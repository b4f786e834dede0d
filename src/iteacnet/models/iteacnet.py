"""ITEACNet's network: one teacher or one student of the Inverted Teacher-Student framework.

Axis legend: B = conversations, T = utterances (padded), D = hidden size, H = attention heads,
K = token-mixer candidates, C = classifier outputs, d_m = input size of modality m.

    x_m (B, T, d_m) -> Dropout -> Linear(d_m -> D) [+ speaker embedding]       per modality
                    -> ECCE_m: bias (B, H, T, T), computed once, reused by every attention
                       mixer of modality m in every layer
                    -> `layers` x EncoderLayer (ITEAC block per modality, cross-attention into text)
                    -> h^L (fused text) -> Linear(D -> C)

`kind` "TF" (teacher in ITS) or "NAS" (student). The training frameworks that pair two of these
live in iteacnet.training.frameworks; this module knows tensors only.

Deviation (documented, not in the paper): a learned speaker embedding (one D-vector per speaker)
is added to every modality's projection when the data has more than one speaker (IEMOCAP).
It is cheap (num_speakers x D parameters) and gives the encoder who-is-speaking, which the
paper's features lack; set `ModelConfig.speaker_embedding=False` for the paper's exact input path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from iteacnet.config import ModelConfig
from iteacnet.models.base import ModelInput, ModelSpec
from iteacnet.models.ecce import ECCE
from iteacnet.models.encoder import EncoderLayer, ITEACBlock, fusion_target


@dataclass
class EncoderOutput:
    logits: torch.Tensor  # (B, T, C), 0 on padding
    hiddens: list[torch.Tensor]  # [h^1 .. h^L], each (B, T, D); h^L feeds the classifier
    routes: list[dict[str, torch.Tensor]] = field(
        default_factory=list
    )  # per layer: m -> (B, T, K); empty for TF


def _init_weights(module: nn.Module) -> None:
    # timm/nanoGPT convention: small truncated-normal linears, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


class ITEACNet(nn.Module):
    """forward(x: ModelInput) -> EncoderOutput. Deterministic given `torch.manual_seed`."""

    def __init__(
        self,
        spec: ModelSpec,
        cfg: ModelConfig,
        kind: str,
        layers: int,
        speaker_embedding: bool | None = None,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"ITEACNet needs at least one encoder layer, got {layers}")
        self.spec = spec
        self.kind = kind
        self.modalities = spec.modalities
        self.target = fusion_target(self.modalities)
        D, H = cfg.hidden, cfg.heads
        self.input_drop = nn.Dropout(cfg.input_dropout)
        self.proj = nn.ModuleDict({m: nn.Linear(d, D) for m, d in spec.dims})
        self.speaker = (
            nn.Embedding(spec.num_speakers, D)
            if ((cfg.speaker_embedding if speaker_embedding is None else speaker_embedding) and spec.num_speakers > 1)
            else None
        )
        # ECCE only where some attention mixer reads it (a NAS student without `attention` has none).
        uses_attention = kind == "TF" or "attention" in cfg.mixers
        e = cfg.ecce
        self.ecce = nn.ModuleDict(
            {m: ECCE(D, H, e.kernel, e.max_span, e.local, e.enabled, e.local_kind, e.local_dropout, e.bias)
             for m in self.modalities}
            if (uses_attention and e.enabled)
            else {}
        )
        self.layers = nn.ModuleList(
            [
                EncoderLayer(
                    self.modalities,
                    D,
                    H,
                    kind,
                    cfg.mixers,
                    cfg.mlp_ratio,
                    cfg.dropout,
                    cfg.max_len,
                    cfg.routing,
                    cfg.attn_dropout,
                )
                for _ in range(layers)
            ]
        )
        self.classifier = nn.Linear(D, spec.num_outputs)
        self.checkpoint_above = cfg.checkpoint_above
        self.apply(_init_weights)

    # -- forward ---------------------------------------------------------------------------

    def forward(self, x: ModelInput) -> EncoderOutput:
        valid = x.valid  # (B, T)
        m = valid.to(self.classifier.weight.dtype).unsqueeze(-1)  # (B, T, 1)
        spk = None
        if self.speaker is not None:
            ids = x.speakers.clamp(0, self.spec.num_speakers - 1)
            spk = self.speaker(ids)  # (B, T, D)
        hs: dict[str, torch.Tensor] = {}
        biases: dict[str, torch.Tensor | None] = {}
        # Long conversations: trade compute for activation memory (ECCE, then block by block).
        recompute = self.training and 0 < self.checkpoint_above < valid.shape[1]
        for mod in self.modalities:
            h = self.proj[mod](self.input_drop(x.features[mod]))  # (B, T, D)
            if spk is not None:
                h = h + spk
            hs[mod] = h * m
            biases[mod] = None
            if mod in self.ecce:
                ecce = self.ecce[mod]
                biases[mod] = checkpoint(ecce, hs[mod], valid, use_reentrant=False) if recompute else ecce(hs[mod], valid)  # (B, H, T, T)
        hiddens: list[torch.Tensor] = []
        routes: list[dict[str, torch.Tensor]] = []
        for layer in self.layers:
            hs, r = layer(hs, valid, biases, recompute)
            hiddens.append(hs[self.target])  # h^l: the fused text
            if r:
                routes.append(r)
        logits = self.classifier(hiddens[-1]) * m  # (B, T, C)
        return EncoderOutput(logits=logits, hiddens=hiddens, routes=routes)

    # -- routing and parameter groups ----------------------------------------------------

    def _layers(self) -> list[EncoderLayer]:
        return [layer for layer in self.layers if isinstance(layer, EncoderLayer)]

    def _blocks(self) -> Iterator[ITEACBlock]:
        for module in self.modules():
            if isinstance(module, ITEACBlock):
                yield module

    def set_routing(self, mode: str) -> None:
        """ "soft" or "top1" for every NAS block (top-1 acts in eval mode only)."""
        for block in self._blocks():
            block.routing = mode

    def router_parameters(self) -> list[nn.Parameter]:
        """The routers' parameters: their own AdamW group (METHOD §3, lr 5e-3)."""
        return [p for b in self._blocks() if b.router is not None for p in b.router.parameters()]

    def non_router_parameters(self) -> list[nn.Parameter]:
        router = {id(p) for p in self.router_parameters()}
        return [p for p in self.parameters() if id(p) not in router]

    def parameter_report(self) -> dict[str, int]:
        """Parameter counts split by module (for comparison with the paper's Table 5)."""

        def n(params: Iterable[nn.Parameter]) -> int:
            return sum(p.numel() for p in params)

        router = {id(p) for p in self.router_parameters()}
        report = {
            "input_projection": n(self.proj.parameters()),
            "speaker_embedding": n(self.speaker.parameters()) if self.speaker is not None else 0,
            "ecce": n(self.ecce.parameters()),
        }
        for mod in self.modalities:
            report[f"blocks.{mod}"] = n(
                p
                for layer in self._layers()
                for p in layer.blocks[mod].parameters()
                if id(p) not in router
            )
        report["cross_attention"] = n(
            p for layer in self._layers() for p in layer.cross.parameters()
        )
        report["router"] = n(self.router_parameters())
        report["classifier"] = n(self.classifier.parameters())
        report["total"] = n(self.parameters())
        return report
