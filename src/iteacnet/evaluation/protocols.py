"""UME and IME (METHOD §6–§7): train, then score on fixed test masks; one row per rate.

UME (unified model evaluation): one model trained with a rate drawn per batch, scored at
every rate. IME (individual model evaluation): one model per rate, trained and scored at it.
Rows are the long format every report and the benchmark grid read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iteacnet.config import ExperimentConfig, replace
from iteacnet.data.batching import iterate_batches
from iteacnet.data.loading import corpus_label
from iteacnet.masking import pattern_mask
from iteacnet.training.engine import (
    FitResult,
    Parallel,
    PreparedData,
    batch_presence,
    describe_training_rate,
    eval_masks,
    fit,
    model_input,
    row_positions,
    score_masks,
    selection_rates,
)


def run_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """The columns that say which run a row belongs to."""
    m = cfg.model
    is_its = m.method == "iteacnet"
    single = m.framework in ("gcnet", "complete")  # one model: no student
    return {
        "method": m.method,
        "framework": m.framework if is_its else "",
        "teacher": f"{m.teacher_kind}{m.teacher_layers}" if is_its else "",
        "student": f"{m.student_kind}{m.student_layers}" if is_its and not single else "",
        "ecce": ecce_label(cfg) if is_its else "",
        "recipe": cfg.train.recipe,
        "corpus": corpus_label(cfg.data),
        "split": cfg.data.split,
        "fold": cfg.data.fold,
        "selection": cfg.data.selection,
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
    }


def ecce_label(cfg: ExperimentConfig) -> str:
    """none | global | both, with the non-default variant choices appended (both/shared+drop0.5)."""
    e = cfg.model.ecce
    if not e.enabled:
        return "none"
    label = "both" if e.local else "global"
    extra: list[str] = []
    if e.local and e.local_kind != "dense":
        extra.append(e.local_kind)
    if e.local and e.local_dropout > 0:
        extra.append(f"drop{e.local_dropout:g}")
    if e.bias != "head":
        extra.append("pairbias")
    return label + ("/" + "+".join(extra) if extra else "")


def result_rows(cfg: ExperimentConfig, protocol: str, scores: dict[Any, dict[str, float]], extra: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, metrics in scores.items():
        row = {**run_key(cfg), "protocol": protocol, **extra}
        if isinstance(key, str):
            row.update({"rate": float("nan"), "pattern": key})
        else:
            row.update({"rate": float(key), "pattern": ""})
        row.update(metrics)
        rows.append(row)
    return rows


def test_masks(data: PreparedData, cfg: ExperimentConfig, rates: tuple[float, ...]) -> dict[Any, np.ndarray]:
    """The test split's fixed masks at `rates` and of the configured fixed patterns."""
    masks: dict[Any, np.ndarray] = dict(eval_masks(data, "test", rates, cfg.eval.mask_seed))
    rows = data.corpus.rows_of(data.split.test)
    avail = data.corpus.available_matrix()[rows]
    for pattern in cfg.eval.patterns:
        valid = torch.ones(len(rows), dtype=torch.bool)
        masks[pattern] = pattern_mask(pattern, data.corpus.modalities, valid).numpy() & avail
    return masks


def score_test(method: nn.Module, data: PreparedData, cfg: ExperimentConfig, rates: tuple[float, ...]) -> dict[Any, dict[str, float]]:
    """Scores on the test split at `rates` (fixed masks) and on the configured fixed patterns."""
    return score_masks(method, data, "test", test_masks(data, cfg, rates), cfg.train.batch_size, cfg.train.device)


def train_and_score(
    cfg: ExperimentConfig,
    data: PreparedData,
    out_dir: Path | None = None,
    label: str | None = None,
    columns: dict[str, Any] | None = None,
    parallel: Parallel | None = None,
) -> tuple[list[dict[str, Any]], FitResult]:
    """One training run (`cfg.train.protocol`), scored on the test split at the rates it is
    evaluated on (IME: its own rate; UME: every evaluation rate). Rows are labelled with
    `label` (default the protocol) and carry `columns` before the run's own. With `parallel`,
    every rank trains and only rank 0 scores (the others return no rows)."""
    result = fit(cfg, data, out_dir, parallel=parallel)
    if parallel is not None and parallel.rank > 0:
        return [], result
    return run_rows(cfg, data, result, label, columns), result


def run_rows(
    cfg: ExperimentConfig, data: PreparedData, result: FitResult, label: str | None = None,
    columns: dict[str, Any] | None = None, scores: dict[Any, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """A finished run's result rows: its test scores (see `train_and_score`). Shared with
    `train_and_score_stacked`, whose members each get their own rows."""
    if scores is None:  # a stack passes its members' test scores, predicted together
        scores = score_test(result.method, data, cfg, selection_rates(cfg))
    complete = cfg.model.method == "iteacnet" and cfg.model.framework == "complete"  # never sees a mask
    run = {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "val_waf": result.best_score,
           "train_seconds": result.seconds, "train_rate": "" if complete else describe_training_rate(cfg.train)}
    return result_rows(cfg, label or cfg.train.protocol, scores, {**(columns or {}), **run})


def train_and_score_stacked(
    cfgs: list[ExperimentConfig],
    data: PreparedData,
    out_dirs: list[Path | None] | None = None,
    label: str | None = None,
    columns: list[dict[str, Any]] | None = None,
    group: int | None = None,
) -> list[list[dict[str, Any]]]:
    """`train_and_score` for runs that differ only in seed, trained as one stack
    (training.stacked, at most `group` members per vmapped call; default: `default_group`);
    each run gets its own rows, labelled with its own `columns`. With a group of 1 (a CPU's
    default) the runs train one after another, each exactly as alone (see ONE_BY_ONE in
    training/stacked.py); runs that cannot share a stack do too, with a note on stderr saying why."""
    from iteacnet.training.stacked import (
        Stack,
        StackError,
        default_group,
        fit_stacked,
        score_members,
        stack_blocker,
    )

    dirs = out_dirs if out_dirs is not None else [None] * len(cfgs)
    cols = columns if columns is not None else [{}] * len(cfgs)
    group = group or default_group(cfgs[0].train.device, len(cfgs))
    one_by_one = group == 1  # one member a call: nothing to share, so one after another (ONE_BY_ONE)
    why = stack_blocker(cfgs[0]) if len(cfgs) > 1 else "a single run"
    if why is None and not one_by_one:
        try:
            results = fit_stacked(cfgs, data, dirs, group=group)
            # The members' best weights, stacked again to predict the test split together.
            best = Stack([r.method for r in results], group)
            masks = test_masks(data, cfgs[0], selection_rates(cfgs[0]))
            scores = score_members(best, range(len(cfgs)), data, "test", masks, cfgs[0].train.batch_size,
                                   cfgs[0].train.device)
            return [run_rows(c, data, r, label, {**col, "stacked": len(cfgs)}, s)
                    for c, r, col, s in zip(cfgs, results, cols, scores)]
        except StackError as e:
            why = str(e)
    if len(cfgs) > 1 and not one_by_one:
        print(f"note: {len(cfgs)} runs of {cfgs[0].name} train separately: {why}", file=sys.stderr)
    return [train_and_score(c, data, d, label, col)[0] for c, d, col in zip(cfgs, dirs, cols)]


def run_ume(cfg: ExperimentConfig, data: PreparedData, out_dir: Path | None = None) -> tuple[list[dict[str, Any]], nn.Module]:
    rows, result = train_and_score(replace(cfg, **{"train.protocol": "ume"}), data, out_dir)
    return rows, result.method


def ime_runs(cfg: ExperimentConfig, out_dir: Path | None) -> list[tuple[ExperimentConfig, Path | None]]:
    """IME: one run per evaluation rate, trained at that rate, each in `out_dir/ime-<rate>`."""
    return [(replace(cfg, **{"train.protocol": "ime", "train.rate": r}), out_dir / f"ime-{r:.1f}" if out_dir is not None else None)
            for r in cfg.eval.rates]


def run_ime(cfg: ExperimentConfig, data: PreparedData, out_dir: Path | None = None) -> list[dict[str, Any]]:
    return [row for c, sub in ime_runs(cfg, out_dir) for row in train_and_score(c, data, sub)[0]]


@torch.no_grad()
def router_usage(method: nn.Module, data: PreparedData, cfg: ExperimentConfig, rate: float = 0.0) -> dict[str, np.ndarray]:
    """Mean routing weight per (layer, mixer) of the inference model's NAS blocks on the test
    split, per modality; {} when the inference model has no router (TF)."""
    model = getattr(method, "inference_model", None)
    if model is None:
        return {}
    net = model()
    masks = eval_masks(data, "test", (rate,), cfg.eval.mask_seed)[rate]
    pos = row_positions(data.corpus, data.corpus.rows_of(data.split.test))
    sums: dict[str, np.ndarray] = {}
    count = 0
    net.eval()
    for batch in iterate_batches(data.corpus, list(data.split.test), cfg.train.batch_size):
        mask = batch_presence(batch, masks, pos)  # on the CPU batch
        batch = batch.to(cfg.train.device)
        out = net(model_input(batch, mask.to(cfg.train.device)))
        if not out.routes:
            return {}
        v = batch.valid
        for layer, per_mod in enumerate(out.routes):
            for m, alpha in per_mod.items():  # alpha (B, T, K)
                acc = sums.setdefault(m, np.zeros((len(out.routes), alpha.shape[-1])))
                acc[layer] += alpha[v].sum(0).cpu().numpy()
        count += int(v.sum())
    return {m: s / max(count, 1) for m, s in sums.items()}
