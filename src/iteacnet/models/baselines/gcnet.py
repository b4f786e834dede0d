"""GCNet baseline: Graph Completion Network, over whole conversations.

Paper: Z. Lian, L. Chen, L. Sun, B. Liu, J. Tao, "GCNet: Graph Completion Network for
Incomplete Multimodal Learning in Conversation", IEEE TPAMI 2023. Facts from
zeroQiaoba/GCNet (gcnet/model.py, graph.py, loss.py, train_gcnet.py, README run:
--hidden=200 --windowp=2 --windowf=2 --base-model=LSTM --loss-recon, no --time-attn).

Model, on the masked features concatenated per utterance (Σ d_m):
  1. sequence encoder: 2-layer BiLSTM (or GRU), hidden D → U (B, T, 2D);
  2. two graph branches over each conversation's utterances, edges j → i for
     i − window_past ≤ j ≤ i + window_future (self loop included; padding never connected;
     -1 = unlimited), each: relational graph conv (PyG `RGCNConv`: root weight + bias +
     per-relation mean over neighbours) 2D → G, graph conv (PyG `GraphConv`: root weight +
     sum over neighbours) G → G, concatenation [U, ·] (2D + G), 2-layer BiLSTM (or GRU)
     hidden 2D + G, Linear 2(2D + G) → 2D + G, ReLU.
     The temporal branch's relations are the neighbour's position (past / now / future);
     the speaker branch's are the speaker pairs (speaker of i, speaker of j): S² relations;
  3. the two branches are summed: hidden (B, T, 2D + G);
  4. Linear → C for the emotion, Linear → Σ d_m reconstructing the complete features.
Loss: L_emo + rec_weight · L_rec, L_rec = Σ_m Σ_{missing cells} ||x̂_m − x_m||² / d_m divided
by the number of valid utterances (GCNet's `MaskedReconLoss`, on cells the mask hid).

Dense formulation (no PyTorch Geometric): the graph of a batch is a (B, T, T) adjacency
[target i, source j] plus a (B, T, T) relation index; graph convolutions are masked batched
matmuls, and the recurrent layers run on packed sequences, so padding never reaches a real
utterance and conversations never mix. Padding must be a suffix of each row of `valid`.
The original names its windows from the source's side (a node sends to window_past
earlier ... window_future later nodes); here they are the receiver's: the same graph for the
symmetric defaults.

Sizes: D = cfg.hidden (200 in GCNet's run), G = D // 2 (as its `build_model`), dropout =
cfg.dropout between recurrent layers (0.5 in GCNet).

Options (`ModelConfig.baseline`):
  window_past    2       past neighbours (GCNet's run: --windowp=2; -1 = all)
  window_future  2       future neighbours (GCNet's run: --windowf=2; -1 = all)
  graph_hidden   D // 2  G
  rec_weight     1.0     weight of L_rec (GCNet: loss = loss1 + loss2)
  base_model     "lstm"  "lstm" | "gru" for the recurrent layers
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from iteacnet.config import ModelConfig
from iteacnet.models.base import (
    METHODS,
    BatchTotals,
    LossOutput,
    ModelInput,
    ModelSpec,
    batch_totals,
    default_param_groups,
    emotion_loss,
    loss_parts,
)
from iteacnet.models.baselines.common import (
    baseline_options,
    concat_features,
    flatten_valid,
    imputation_cells,
    missing_recon_loss,
    split_features,
)

DEFAULTS: dict[str, Any] = {
    "window_past": 2, "window_future": 2, "graph_hidden": None, "rec_weight": 1.0, "base_model": "lstm",
}

TEMPORAL_RELATIONS = 3  # the neighbour is in the past, is the utterance itself, is in the future


def window_graph(
    valid: torch.Tensor, speakers: torch.Tensor, num_speakers: int, window_past: int, window_future: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The conversation graphs of a batch.

    Returns adjacency (B, T, T) bool [target i, source j], temporal relation (B, T, T) in
    {0 past, 1 now, 2 future} and speaker relation (B, T, T) = speaker_i · S + speaker_j.
    """
    B, T = valid.shape
    pos = torch.arange(T, device=valid.device)
    offset = pos[None, :] - pos[:, None]  # (T, T) j − i
    near = torch.ones(T, T, dtype=torch.bool, device=valid.device)
    if window_past >= 0:
        near &= offset >= -window_past
    if window_future >= 0:
        near &= offset <= window_future
    adj = near[None] & valid[:, :, None] & valid[:, None, :]  # (B, T, T)
    temporal = (offset.sign() + 1).expand(B, T, T)
    spk = speakers.clamp(0, num_speakers - 1)
    speaker = spk[:, :, None] * num_speakers + spk[:, None, :]  # (B, T, T)
    return adj, temporal, speaker


class RelationalGraphConv(nn.Module):
    """x_i W_root + b + Σ_r mean_{j ∈ N_r(i)} x_j W_r (PyG's RGCNConv, mean aggregation)."""

    def __init__(self, d_in: int, d_out: int, num_relations: int) -> None:
        super().__init__()
        self.num_relations = num_relations
        self.weight = nn.Parameter(torch.empty(num_relations, d_in, d_out))
        nn.init.xavier_uniform_(self.weight)
        self.root = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor, adj: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        # x (B, T, d_in); adj, relation (B, T, T)
        edges = F.one_hot(relation, self.num_relations).to(x.dtype) * adj[..., None].to(x.dtype)  # (B, T, T, R)
        edges = edges / edges.sum(2, keepdim=True).clamp(min=1)  # mean over each relation's neighbours
        xw = torch.einsum("bjd,rde->bjre", x, self.weight)  # (B, T, R, d_out)
        return self.root(x) + torch.einsum("bijr,bjre->bie", edges, xw)  # (B, T, d_out)


class GraphConv(nn.Module):
    """x_i W_root + (Σ_{j ∈ N(i)} x_j) W_rel + b (PyG's GraphConv, sum aggregation)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.root = nn.Linear(d_in, d_out, bias=False)
        self.rel = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.root(x) + self.rel(adj.to(x.dtype) @ x)  # (B, T, d_out)


class SequenceEncoder(nn.Module):
    """Bidirectional 2-layer LSTM/GRU over packed conversations: (B, T, d) → (B, T, 2h)."""

    def __init__(self, d_in: int, d_hidden: int, kind: str, dropout: float, num_layers: int = 2) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind)
        if rnn is None:
            raise ValueError(f"base_model must be 'lstm' or 'gru', got {kind!r}")
        self.rnn = rnn(d_in, d_hidden, num_layers=num_layers, bidirectional=True, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        lengths = valid.sum(1).clamp(min=1).cpu()  # packing keeps padding out of both directions
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * valid[..., None].to(out.dtype)


class GraphBranch(nn.Module):
    """RGCN → GraphConv → [input, graph] → BiRNN → Linear + ReLU (GCNet's `GraphNetwork`)."""

    def __init__(self, d_in: int, d_graph: int, num_relations: int, kind: str, dropout: float) -> None:
        super().__init__()
        self.rgcn = RelationalGraphConv(d_in, d_graph, num_relations)
        self.gconv = GraphConv(d_graph, d_graph)
        d_h = d_in + d_graph
        self.rnn = SequenceEncoder(d_h, d_h, kind, dropout)
        self.out = nn.Linear(2 * d_h, d_h)
        self.d_out = d_h

    def forward(self, u: torch.Tensor, valid: torch.Tensor, adj: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        g = self.gconv(self.rgcn(u, adj, relation), adj)  # (B, T, G)
        h = self.rnn(torch.cat([u, g], dim=-1), valid)  # (B, T, 2(2D+G))
        return F.relu(self.out(h))  # (B, T, 2D+G)


class GCNet(nn.Module):
    def __init__(
        self, spec: ModelSpec, hidden: int, graph_hidden: int, dropout: float,
        window_past: int, window_future: int, rec_weight: float, base_model: str,
    ) -> None:
        super().__init__()
        self.spec = spec
        d_in = sum(d for _, d in spec.dims)
        self.window_past, self.window_future = int(window_past), int(window_future)
        self.num_speakers = max(1, spec.num_speakers)
        self.rec_weight = float(rec_weight)
        self.encoder = SequenceEncoder(d_in, hidden, base_model, dropout)
        self.temporal = GraphBranch(2 * hidden, graph_hidden, TEMPORAL_RELATIONS, base_model, dropout)
        self.speaker = GraphBranch(2 * hidden, graph_hidden, self.num_speakers**2, base_model, dropout)
        d_h = self.temporal.d_out
        self.classifier = nn.Linear(d_h, spec.num_outputs)
        self.reconstruct = nn.Linear(d_h, d_in)

    def forward(self, x: ModelInput) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) outputs and (B, T, Σ d_m) reconstructed features."""
        u = self.encoder(concat_features(x, self.spec), x.valid)  # (B, T, 2D)
        adj, temporal, speaker = window_graph(
            x.valid, x.speakers, self.num_speakers, self.window_past, self.window_future)
        hidden = self.temporal(u, x.valid, adj, temporal) + self.speaker(u, x.valid, adj, speaker)
        mask = x.valid[..., None].to(hidden.dtype)
        return self.classifier(hidden) * mask, self.reconstruct(hidden) * mask

    def predict(self, x: ModelInput) -> torch.Tensor:
        return self(x)[0]

    def training_loss(
        self, full: ModelInput, masked: ModelInput, labels: torch.Tensor, totals: BatchTotals | None = None
    ) -> LossOutput:
        n = batch_totals(full, masked, totals).valid
        out, recon = self(masked)
        task = emotion_loss(out, labels, masked.valid, self.spec, n)
        missing = flatten_valid(imputation_cells(full, masked), masked.valid)  # (N, M)
        rec = missing_recon_loss(
            split_features(flatten_valid(recon, masked.valid), self.spec),
            {m: flatten_valid(full.features[m], masked.valid) for m in self.spec.modalities},
            missing, self.spec.modalities, n,
        )
        total = task + self.rec_weight * rec
        return LossOutput(total, loss_parts(loss=total, task=task, rec=rec))

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]:
        return default_param_groups(self, lr)


@METHODS.register("gcnet")
def build_gcnet(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    o = baseline_options(cfg, DEFAULTS, "gcnet")
    graph_hidden = int(o["graph_hidden"] or max(1, cfg.hidden // 2))
    return GCNet(spec, cfg.hidden, graph_hidden, cfg.dropout, o["window_past"], o["window_future"],
                 o["rec_weight"], str(o["base_model"]).lower())
