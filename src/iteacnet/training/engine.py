"""Train and evaluate loops as plain functions (the MAE way): data in, numbers out.

Axis legend: B = conversations, T = utterances, M = modalities, C = outputs,
N = utterances of a split (flat, dialogue after dialogue in the split's order).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from iteacnet.config import ExperimentConfig, TrainConfig
from iteacnet.data.assemble import speakers_for_training
from iteacnet.data.batching import Batch, iterate_batches, iterate_utterance_batches
from iteacnet.data.corpus import Corpus
from iteacnet.data.extract import feature_manifests
from iteacnet.data.splits import Split, make_split
from iteacnet.errors import ConfigError, DeviceError, UserError
from iteacnet.masking import achieved_rate, fixed_mask, sample_mask, stable_seed
from iteacnet.metrics import compute_metrics
from iteacnet.models.base import BatchTotals, LossOutput, Method, ModelInput, ModelSpec
from iteacnet.training.checkpoint import (
    check_resume_config,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from iteacnet.training.frameworks import build_method


# ---------------------------------------------------------------------------- data
@dataclass
class PreparedData:
    """A corpus standardized on its training split, with the split and the model spec."""

    corpus: Corpus  # standardized features
    split: Split
    spec: ModelSpec
    stats: dict[str, tuple[np.ndarray, np.ndarray]]  # modality -> (mean, std) of the training split


def prepare(corpus: Corpus, cfg: ExperimentConfig) -> PreparedData:
    """Split per the protocol, standardize with training statistics, derive the ModelSpec."""
    split = make_split(corpus, cfg.data)
    corpus, _ = speakers_for_training(corpus, list(split.train))  # no index learned from nothing
    stats = corpus.standardization_stats(list(split.train))
    spec = ModelSpec(
        dims=tuple(corpus.dims.items()),
        num_outputs=corpus.num_classes,
        task=corpus.task,
        num_speakers=max(1, len(corpus.speaker_names)),
        regression_loss=cfg.train.regression_loss,
    )
    return PreparedData(corpus.standardized(stats), split, spec, stats)


def check_device(device: str) -> None:
    """Raise DeviceError unless this machine has `device` (a config may be written on one
    machine for another; torch's own failure comes late and reads like a bug)."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": torch.backends.mps}.get(kind)
    if backend is None or not backend.is_available():
        raise DeviceError(f"train.device is {device!r}, but this machine's torch ({torch.__version__}) has no "
                          f"{kind} device; set train.device=\"cpu\" (--set 'train.device=\"cpu\"')")
    count = getattr(backend, "device_count", lambda: 1)()
    if index and int(index) >= count:
        raise DeviceError(f"train.device is {device!r}, but this machine has {count} {kind} device(s): "
                          f"{kind}:0 to {kind}:{count - 1}")


def check_lengths(method: nn.Module, data: PreparedData) -> None:
    """ConfigError before any work if a conversation of the split is longer than the method's
    temporal_mlp mixers are defined for (their weights are (max_len, max_len))."""
    from iteacnet.models.mixers import length_limit

    limit = length_limit(method)
    used = [*data.split.train, *data.split.valid, *data.split.test]
    if limit is None or not used:
        return
    lengths = data.corpus.lengths()[used]
    longest = int(lengths.max())
    if longest > limit:
        name = data.corpus.dialogue_ids[used[int(lengths.argmax())]]
        raise ConfigError(f"model.max_len is {limit}, but conversation {name!r} of {data.corpus.name} has "
                          f"{longest} utterances, and the temporal_mlp mixer is defined for at most model.max_len: "
                          f"raise it (--set model.max_len={longest}) or leave temporal_mlp out of model.mixers")


def row_positions(corpus: Corpus, rows: np.ndarray) -> np.ndarray:
    """(N_corpus,) position of every corpus row within `rows` (a split's order), -1 elsewhere."""
    pos = np.full(corpus.num_utterances, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    return pos


def batch_presence(batch: Batch, present: np.ndarray, pos: np.ndarray) -> torch.Tensor:
    """(B, T, M) a split's fixed (N, M) mask gathered for a batch, limited to what the data has."""
    p = pos[batch.index.clamp(min=0).cpu().numpy()]  # (B, T)
    mask = torch.from_numpy(present[p]).to(batch.valid.device) & batch.available
    return mask & batch.valid[..., None]


def model_input(batch: Batch, present: torch.Tensor) -> ModelInput:
    """Zero every missing (or padded) modality: a missing modality is an all-zero vector."""
    feats = {m: x * present[..., j : j + 1].to(x.dtype) for j, (m, x) in enumerate(batch.features.items())}
    return ModelInput(features=feats, present=present, valid=batch.valid, speakers=batch.speakers)


def training_rate(train: TrainConfig, generator: torch.Generator) -> float:
    """IME: the fixed rate; UME: a rate drawn per batch from `train.rate_dist`: uniform on
    [a, b] = rate_values, fixed at rate_values[0], or a uniform choice among rate_values."""
    if train.protocol == "ime":
        return train.rate
    v = train.rate_values
    if train.rate_dist == "fixed":
        return v[0]
    if train.rate_dist == "choice":
        return v[int(torch.randint(len(v), (), generator=generator))]
    return v[0] + float(torch.rand((), generator=generator)) * (v[1] - v[0])


def describe_training_rate(train: TrainConfig) -> str:
    """The training-rate regime as result rows record it: "0.7", "U[0.0,0.7]", "{0.0,0.7}"."""
    if train.protocol == "ime":
        return f"{train.rate:.1f}"
    v = train.rate_values
    if train.rate_dist == "fixed":
        return f"{v[0]:.1f}"
    if train.rate_dist == "choice":
        return "{" + ",".join(f"{r:.1f}" for r in v) + "}"
    return f"U[{v[0]:.1f},{v[1]:.1f}]"


def training_batches(data: PreparedData, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
    """The training split in batches of conversations or of single utterances (`batch_unit`)."""
    batches = iterate_utterance_batches if train.batch_unit == "utterances" else iterate_batches
    return batches(data.corpus, data.split.train, train.batch_size, generator)


def training_mask(batch: Batch, train: TrainConfig, generator: torch.Generator, pretrain: bool = False) -> torch.Tensor:
    """(B, T, M) the mask of one training batch: its rate, then its cells, from `generator`
    (on the CPU batch); a stage-1 (pretrain) batch is complete. Shared with training.stacked."""
    if pretrain:
        return batch.available
    rate = training_rate(train, generator)
    return sample_mask(batch.valid, batch.available.shape[-1], rate, generator, batch.available)


def stage1_epochs(cfg: ExperimentConfig, method: nn.Module) -> int:
    """Epochs of a method's stage 1 (`pretrain_loss`: MMIN's encoders) before its training
    loss; inside the epoch budget, at most half of it. Shared with training.stacked."""
    if not hasattr(method, "pretrain_loss"):
        return 0
    return min(int(cfg.model.baseline_kwargs().get("pretrain_epochs", 0)), cfg.train.epochs // 2)


def step_loss(method: nn.Module, batch: Batch, mask: torch.Tensor, totals: BatchTotals, pretrain: bool = False) -> LossOutput:
    """The LossOutput of one training step: the method's loss on the complete and the masked
    batch (or its stage-1 objective). Shared with training.stacked, which calls it under vmap."""
    full = model_input(batch, batch.available)
    if pretrain:
        return cast(LossOutput, method.pretrain_loss(full, batch.labels, totals))  # type: ignore[operator]
    return cast(Method, method).training_loss(full, model_input(batch, mask), batch.labels, totals)


# ---------------------------------------------------------------------------- data parallel
class Parallel(Protocol):
    """Data-parallel training over processes (implemented by training.distributed).

    Every rank draws the same batches and masks; each trains on its share of every batch's
    conversations (`shard_batch`) and `sync_grads` sums the gradients over the ranks.
    """

    rank: int
    world: int

    def sync_grads(self, module: nn.Module) -> None: ...

    def all_sum(self, x: torch.Tensor) -> torch.Tensor: ...

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]: ...


def shard_batch(batch: Batch, mask: torch.Tensor, rank: int, world: int) -> tuple[Batch, torch.Tensor]:
    """This rank's conversations of a batch (every `world`-th, from `rank`) and its mask
    rows. T is kept, padding and all. The losses divide by the whole batch's totals
    (`whole_batch_totals`), so the ranks' losses add up to the whole batch's loss."""
    idx = torch.arange(rank, batch.valid.shape[0], world, device=batch.valid.device)
    part = Batch(
        features={m: x[idx] for m, x in batch.features.items()},
        available=batch.available[idx], valid=batch.valid[idx], speakers=batch.speakers[idx],
        labels=batch.labels[idx], index=batch.index[idx],
        dialogues=[batch.dialogues[i] for i in idx.tolist()],
    )
    return part, mask[idx]


def whole_batch_totals(batch: Batch, mask: torch.Tensor) -> BatchTotals:
    """The denominators of a batch's losses, counted on the whole batch (before sharding)."""
    def counts_only(present: torch.Tensor) -> ModelInput:
        return ModelInput(features={}, present=present, valid=batch.valid, speakers=batch.speakers)

    return BatchTotals(counts_only(batch.available), counts_only(mask))


# ---------------------------------------------------------------------------- train
def train_one_epoch(
    method: nn.Module,
    opt: torch.optim.Optimizer,
    data: PreparedData,
    train: TrainConfig,
    generator: torch.Generator,
    parallel: Parallel | None = None,
    pretrain: bool = False,
) -> dict[str, float]:
    """One epoch of the method's training loss on (complete, masked) batches; with `pretrain`,
    of its own stage-1 objective on complete data (MMIN's encoders), unclipped as before."""
    method.train()
    sums: dict[str, float] = {}
    n = 0
    prefix = "pre_" if pretrain else ""
    if not pretrain and hasattr(method, "end_pretraining"):
        method.end_pretraining()  # type: ignore[operator]  # a method's stage 2 starts here, on every rank alike (MMIN)
    for batch in training_batches(data, train, generator):
        # Mask, totals and shard on the CPU batch (the generator's device); then only this
        # rank's part goes to the device. The totals stay 0-d CPU tensors: no device sync.
        mask = training_mask(batch, train, generator, pretrain)
        totals = whole_batch_totals(batch, mask)
        if parallel is not None:
            batch, mask = shard_batch(batch, mask, parallel.rank, parallel.world)
        batch, mask = batch.to(train.device), mask.to(train.device)
        opt.zero_grad(set_to_none=True)
        if batch.dialogues:  # a rank with no conversation in this batch still joins the gradient sum
            out = step_loss(method, batch, mask, totals, pretrain)
            out.total.backward()
            for k, v in out.parts.items():  # each rank's terms are its shares of the batch's terms
                sums[prefix + k] = sums.get(prefix + k, 0.0) + v
        if parallel is not None:
            parallel.sync_grads(method)
        if train.grad_clip > 0 and not pretrain:
            nn.utils.clip_grad_norm_(method.parameters(), train.grad_clip)
        opt.step()
        n += 1
    if parallel is not None:
        sums = parallel.sum_floats(sums)
    return {k: v / max(n, 1) for k, v in sums.items()}


# ---------------------------------------------------------------------------- predict / score
@torch.no_grad()
def predict_split(
    method: nn.Module,
    corpus: Corpus,
    dialogues: tuple[int, ...] | list[int],
    present: np.ndarray | None,
    batch_size: int = 32,
    device: str = "cpu",
    forward: Callable[[ModelInput], torch.Tensor] | None = None,
) -> np.ndarray:
    """(N, C) outputs for a split under a fixed (N, M) presence mask (None: all available).
    `forward` replaces `method.predict` (in eval mode): a function of a batch's ModelInput to
    (..., B, T, C) outputs, giving (..., N, C); a stack's members give (K, N, C)."""
    if forward is None:
        method.eval()
        forward = cast(Method, method).predict
    rows = corpus.rows_of(dialogues)
    pos = row_positions(corpus, rows)
    out: np.ndarray | None = None
    for batch in iterate_batches(corpus, list(dialogues), batch_size):
        mask = batch.available if present is None else batch_presence(batch, present, pos)  # on the CPU batch
        v = batch.valid.numpy()
        where = pos[batch.index.numpy()[v]]  # (n_valid,) positions in the split
        batch = batch.to(device)
        pred = forward(model_input(batch, mask.to(device)))  # (..., B, T, C)
        if out is None:
            out = np.zeros((*pred.shape[:-3], len(rows), pred.shape[-1]), dtype=np.float32)
        out[..., where, :] = pred[..., batch.valid, :].float().cpu().numpy()
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def eval_masks(
    data: PreparedData, split_name: str, rates: tuple[float, ...], seed: int
) -> dict[float, np.ndarray]:
    """Fixed (N, M) masks for one split: identical for every method (METHOD §6)."""
    dialogues = getattr(data.split, split_name)
    rows = data.corpus.rows_of(dialogues)
    avail = data.corpus.available_matrix()[rows]
    key = split_name if data.split.name == "" else f"{data.split.name}/{split_name}"
    return {
        r: fixed_mask(data.corpus.name, key, r, seed, len(rows), avail.shape[1], avail) for r in rates
    }


def score_masks(
    method: nn.Module,
    data: PreparedData,
    split_name: str,
    masks: dict[Any, np.ndarray],
    batch_size: int = 32,
    device: str = "cpu",
    parallel: Parallel | None = None,
) -> dict[Any, dict[str, float]]:
    """Metrics (plus the achieved missing rate) of `method` on a split under each mask.

    With `parallel`, each rank predicts its share of the dialogues and the outputs are
    summed over the ranks, so every rank computes the same metrics."""
    dialogues = getattr(data.split, split_name)
    rows = data.corpus.rows_of(dialogues)
    labels = data.corpus.labels[rows]
    results = {}
    for key, mask in masks.items():
        if parallel is None:
            outputs = predict_split(method, data.corpus, dialogues, mask, batch_size, device)
        else:
            outputs = _predict_sharded(method, data, dialogues, rows, mask, batch_size, device, parallel)
        results[key] = split_metrics(outputs, labels, data.corpus.task, mask)
    return results


def split_metrics(outputs: np.ndarray, labels: np.ndarray, task: str, mask: np.ndarray) -> dict[str, float]:
    """Metrics of a split's (N, C) `outputs` against its (N,) `labels`, plus the missing rate
    its (N, M) `mask` achieved."""
    metrics = compute_metrics(outputs, labels, task)
    metrics["achieved_rate"] = achieved_rate(torch.from_numpy(mask), torch.ones(len(labels), dtype=torch.bool))
    return metrics


def _predict_sharded(
    method: nn.Module, data: PreparedData, dialogues: tuple[int, ...] | list[int], rows: np.ndarray,
    mask: np.ndarray, batch_size: int, device: str, parallel: Parallel,
) -> np.ndarray:
    """`predict_split` over this rank's dialogues, assembled on every rank by a sum."""
    mine = list(dialogues)[parallel.rank :: parallel.world]
    p = row_positions(data.corpus, rows)[data.corpus.rows_of(mine)]
    out = torch.zeros(len(rows), data.spec.num_outputs, dtype=torch.float32, device=device)
    if len(mine):
        part = predict_split(method, data.corpus, mine, mask[p], batch_size, device)
        out[torch.from_numpy(p).to(device)] = torch.from_numpy(part).to(device)
    return parallel.all_sum(out).cpu().numpy()  # x + 0 is exact: each row comes from one rank


# ---------------------------------------------------------------------------- fit
@dataclass
class FitResult:
    method: nn.Module  # best weights on validation loaded
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def stopped_early(history: list[dict[str, float]], best_epoch: int, train: TrainConfig) -> bool:
    """Early stopping (`train.patience` > 0): `patience` evaluations in a row without a better
    validation score. A function of the history alone, so a resumed run stops where it would
    have."""
    if train.patience <= 0 or best_epoch < 0:
        return False
    evals_since = sum(1 for row in history if row["epoch"] > best_epoch and "val_waf" in row)
    return evals_since >= train.patience


def selection_rates(cfg: ExperimentConfig) -> tuple[float, ...]:
    """UME selects on the mean validation WAF over the evaluation rates; IME on its own rate."""
    return (cfg.train.rate,) if cfg.train.protocol == "ime" else cfg.eval.rates


def selection_score(scores: dict[Any, dict[str, float]]) -> float:
    """The validation score a run selects its epoch on: the mean WAF over the selection rates."""
    return float(np.mean([s["waf"] for s in scores.values()]))


def init_method(cfg: ExperimentConfig, spec: ModelSpec) -> nn.Module:
    """A run's method with its seeded initialisation (parameters and the dropout stream)."""
    torch.manual_seed(cfg.train.seed)
    return build_method(spec, cfg.model).to(cfg.train.device)


def batch_generator(cfg: ExperimentConfig) -> torch.Generator:
    """A run's generator of data order, training rates and masks (CPU, seeded per run)."""
    return torch.Generator().manual_seed(stable_seed("train", cfg.train.seed, cfg.data.fold))


def make_optimizer(method: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (L2 in the gradient, as torch.optim.Adam), each
    group remembering its base lr for the schedule."""
    groups = cast(Method, method).param_groups(train.lr, train.router_lr)
    for g in groups:
        g["base_lr"] = g["lr"]
    opt_cls = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
    return opt_cls(groups, betas=train.betas, weight_decay=train.weight_decay)


def lr_factor(train: TrainConfig, epoch: int) -> float:
    """The lr multiplier of an epoch: 1, or MMIN's linear policy (constant for
    `lr_constant_epochs`, then linearly down so that the last epoch trains near 0)."""
    if train.lr_schedule == "constant":
        return 1.0
    decay = max(train.epochs - train.lr_constant_epochs, 0)
    return 1.0 - max(0, epoch - train.lr_constant_epochs) / float(decay + 1)


def set_epoch_lr(opt: torch.optim.Optimizer, train: TrainConfig, epoch: int) -> None:
    """A function of the epoch alone, so a resumed run gets the same lr."""
    f = lr_factor(train, epoch)
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * f


def checkpoint_meta(data: PreparedData, cfg: ExperimentConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint needs to be used on new data: the spec and the standardization."""
    return {
        "spec": {
            "dims": [list(d) for d in data.spec.dims], "num_outputs": data.spec.num_outputs,
            "task": data.spec.task, "num_speakers": data.spec.num_speakers,
            "regression_loss": data.spec.regression_loss,
        },
        "class_names": list(data.corpus.class_names),
        "speaker_names": list(data.corpus.speaker_names),
        "speaker_scheme": data.corpus.speaker_scheme,
        "standardization": {m: {"mean": mu.tolist(), "std": sd.tolist()} for m, (mu, sd) in data.stats.items()},
        "split": {"name": data.split.name, "selection": data.split.selection, "note": data.split.note},
        "feature_manifests": feature_manifests(cfg.data),  # how extracted features were made (predict)
        **extra,
    }


def fit(
    cfg: ExperimentConfig,
    data: PreparedData,
    out_dir: Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    parallel: Parallel | None = None,
) -> FitResult:
    """Train `cfg.model.method` with model selection on validation; checkpoint to `out_dir`.

    With `out_dir`, the state after every epoch goes to `out_dir/last` and training resumes
    from it, giving the same result as an uninterrupted run. `stop_after` ends after that
    many epochs of this call (used to test resumption). With `parallel` (data-parallel
    ranks, see training.distributed), only rank 0 writes files or shows progress.
    """
    train = cfg.train
    check_device(train.device)
    rank = parallel.rank if parallel is not None else 0
    method = init_method(cfg, data.spec)  # parameter init and dropout are seeded per run
    check_lengths(method, data)
    if parallel is not None and getattr(method, "couples_batch", False):
        raise UserError(f"{cfg.model.method} cannot train data-parallel: its loss couples the utterances of a "
                         "batch (see its couples_batch); train it in one process")
    opt = make_optimizer(method, train)
    generator = batch_generator(cfg)
    val_name = "valid"
    val_masks = eval_masks(data, val_name, selection_rates(cfg), cfg.eval.mask_seed)
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch, start, history = -math.inf, -1, 0, []
    seconds_before = 0.0  # training time of earlier segments of a resumed run
    last = out_dir / "last" if out_dir is not None else None
    if last is not None and resume:
        check_resume_config(last, cfg)
        restored = load_training_state(last, method, opt, generator)
        if restored is not None:
            best_state, info = restored
            best_score, best_epoch = info["best_score"], info["best_epoch"]
            start, history = info["epoch"] + 1, info["history"]
            seconds_before = float(info.get("seconds", 0.0))
    if parallel is not None:
        starts = parallel.all_sum(torch.tensor([float(start)], device=train.device))
        if float(starts) != start * parallel.world:
            raise RuntimeError(f"ranks resume from different epochs ({out_dir}/last): out_dir must be one folder every rank sees")
        if rank > 0:  # same initial weights on every rank, but each its own dropout draws
            torch.manual_seed(stable_seed("dropout", train.seed, rank, start))
    t0 = time.perf_counter()
    pretrain_epochs = stage1_epochs(cfg, method)
    bar = tqdm(range(start, train.epochs), desc=cfg.name, disable=not train.progress or rank > 0,
               dynamic_ncols=True, initial=start, total=train.epochs)
    done_here = 0
    for epoch in bar:
        if stopped_early(history, best_epoch, train):
            break
        set_epoch_lr(opt, train, epoch)
        stage1 = epoch < pretrain_epochs
        parts = train_one_epoch(method, opt, data, train, generator, parallel, pretrain=stage1)
        row: dict[str, float] = {"epoch": epoch, **parts}
        # Selection (and early stopping) among the final model's epochs only: a stage-1 model
        # (MMIN's pretrained encoders) is not the method being evaluated.
        if not stage1 and ((epoch + 1) % train.eval_every == 0 or epoch + 1 == train.epochs):
            scores = score_masks(method, data, val_name, val_masks, train.batch_size, train.device, parallel)
            score = selection_score(scores)
            row["val_waf"] = score
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in method.state_dict().items()}
            bar.set_postfix(loss=f"{parts.get('loss', 0.0):.3f}", val_waf=f"{score:.2f}", best=f"{best_score:.2f}")
        history.append(row)
        elapsed = seconds_before + time.perf_counter() - t0  # as last/ records it: a resume adds to this
        if last is not None and rank == 0:
            info = {"epoch": epoch, "best_score": best_score, "best_epoch": best_epoch, "history": history,
                    "seconds": elapsed}
            save_training_state(last, method, best_state, opt, generator, info, cfg)
        done_here += 1
        if stop_after is not None and done_here >= stop_after and epoch + 1 < train.epochs:
            return FitResult(method, best_epoch, best_score, history, elapsed)
    if best_state is not None:
        method.load_state_dict(best_state)
    result = FitResult(method, best_epoch, best_score, history, seconds_before + time.perf_counter() - t0)
    if out_dir is not None and rank == 0:
        save_result(out_dir, result, data, cfg)
    return result


def save_result(out_dir: Path, result: FitResult, data: PreparedData, cfg: ExperimentConfig, **extra: Any) -> None:
    """A finished run's checkpoint folder: its best weights, config and metadata."""
    meta = checkpoint_meta(data, cfg, {"best_epoch": result.best_epoch, "best_val_waf": result.best_score,
                                       "history": result.history, **extra})
    save_checkpoint(out_dir, result.method, cfg, meta)
