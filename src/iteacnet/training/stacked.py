"""Stacked training: K runs of one configuration that differ only in seed, as one model.

One optimizer step advances all K runs ("members"): their parameters are stacked along a
new leading axis (`torch.func.stack_module_state`) and one `torch.func.vmap` of the
method's training loss (`functional_call`) computes the K losses in one set of kernels, so
a small model fills more of a GPU than one run per process can (issue 13). A member alone in
its call runs the lone kernels, without vmap; on a CPU (`CPU_GROUP`) the grid's stacks train
their members one after another instead, each as alone: there a stack has nothing to win.

Each member is the run `fit` would train alone: the same seeded initialisation
(`init_method`), data order, training rates and masks (its own `batch_generator`, drawn in
the same order by the engine's `training_mask`), the same optimizer (`make_optimizer`, its
state elementwise, hence per member), its own gradient clipping norm, validation selection
(`score_masks`' metrics; all members predict a batch in one vmapped call, `score_members`),
`last/` training state and checkpoint folder, in `fit`'s formats: a member's folder resumes in `fit` and the other way round. At step j the
members' j-th batches are padded to a common (B, T) and stacked; padding is invisible to
every stackable method (the models' padding contract; losses are masked sums with the
run's own denominators, `dense_layout`), so without dropout a member's metrics equal the
lone run's up to float summation order. Dropout draws come from the one global stream,
with `vmap(randomness="different")`: each member gets its own independent Bernoulli masks
(the same distribution as alone, not the same draws).

Axis legend: K = stacked runs, B = conversations, T = utterances, M = modalities.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iteacnet.config import ExperimentConfig, TrainConfig
from iteacnet.data.batching import Batch
from iteacnet.masking import stable_seed
from iteacnet.models.base import ModelInput, dense_layout
from iteacnet.training.checkpoint import load_training_state, save_training_state
from iteacnet.training.engine import (
    FitResult,
    PreparedData,
    batch_generator,
    check_device,
    check_lengths,
    eval_masks,
    init_method,
    make_optimizer,
    predict_split,
    save_result,
    selection_rates,
    selection_score,
    set_epoch_lr,
    split_metrics,
    stage1_epochs,
    step_loss,
    stopped_early,
    training_batches,
    training_mask,
    whole_batch_totals,
)

# Methods whose training step vmaps: no data-dependent shapes or control flow, no state
# changed inside the step. The others, and why, in `stack_blocker`.
STACKABLE = frozenset({"iteacnet", "ae", "cra", "mmin"})
NOT_STACKABLE = {
    "gcnet": "its GRUs pack each conversation to its own length (pack_padded_sequence: data-dependent shapes)",
    "cpmnet": "its loss couples a batch's utterances through class centroids updated inside the step",
}


class StackError(ValueError):
    """These runs cannot share a stack; train them separately (`fit`)."""


def stack_blocker(cfg: ExperimentConfig) -> str | None:
    """Why `cfg` cannot be trained in a stack, or None if it can."""
    method = cfg.model.method
    if method not in STACKABLE:
        why = NOT_STACKABLE.get(method, "its training step is not known to vmap")
        return f"{method} is not stackable: {why}"
    return None


def stack_key(cfg: ExperimentConfig) -> str:
    """What runs sharing a stack must have in common: everything but the seed (and the
    progress bar). Two configs with equal keys are the same run up to its seed."""
    d = cfg.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("seed", "progress")}
    return json.dumps(d, sort_keys=True, default=str)


# ---------------------------------------------------------------------------- pieces
class _Step(nn.Module):
    """One member's training step as a module, so `functional_call` can swap its weights."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.pretrain = False  # a method's stage 1 (`step_loss`'s pretrain): set per step by `Stack.losses`

    def forward(self, batch: Batch, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        out = step_loss(self.method, batch, mask, whole_batch_totals(batch, mask), self.pretrain)
        return out.total, out.parts


class _Predict(nn.Module):
    """One member's inference outputs as a module, for `functional_call` (same weight names)."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: ModelInput) -> torch.Tensor:
        return self.method.predict(x)  # type: ignore[operator,no-any-return]


class _StackedGroups:
    """Duck-typed `Method` for `make_optimizer`: member 0's param groups (weights, router,
    their learning rates), each parameter replaced by its stacked (K, ...) tensor."""

    def __init__(self, member: nn.Module, stacked: dict[str, torch.Tensor]) -> None:
        self.member, self.stacked = member, stacked
        self.name_of = {id(p): n for n, p in member.named_parameters()}

    def param_groups(self, lr: float, router_lr: float) -> list[dict[str, Any]]:
        groups = self.member.param_groups(lr, router_lr)  # type: ignore[operator]
        return [{**g, "params": [self.stacked[self.name_of[id(p)]] for p in g["params"]]} for g in groups]


def _pad(x: torch.Tensor, B: int, T: int, fill: float | int | bool) -> torch.Tensor:
    """(b, t, ...) -> (B, T, ...): `fill` beyond the given rows and positions."""
    out = x.new_full((B, T, *x.shape[2:]), fill)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def stack_batches(batches: Sequence[Batch], masks: Sequence[torch.Tensor]) -> tuple[dict[str, Any], torch.Tensor]:
    """The members' batches (and masks) padded to the largest (B, T) and stacked: (K, B, T, ...).
    Padded conversations and positions are invalid, absent and unlabelled, as collate pads."""
    B = max(b.valid.shape[0] for b in batches)
    T = max(b.valid.shape[1] for b in batches)
    parts: dict[str, Any] = {
        "features": {m: torch.stack([_pad(b.features[m], B, T, 0.0) for b in batches]) for m in batches[0].features},
        "available": torch.stack([_pad(b.available, B, T, False) for b in batches]),
        "valid": torch.stack([_pad(b.valid, B, T, False) for b in batches]),
        "speakers": torch.stack([_pad(b.speakers, B, T, 0) for b in batches]),
        "labels": torch.stack([_pad(b.labels, B, T, 0) for b in batches]),
        "index": torch.stack([_pad(b.index, B, T, -1) for b in batches]),
    }
    return parts, torch.stack([_pad(m, B, T, False) for m in masks])


def length_buckets(lengths: Sequence[int], slack: float = 1.25, most: int | None = None) -> list[list[int]]:
    """Members grouped for one vmapped call each: sorted by batch length T (longest first),
    a group takes members while the group's longest is at most `slack` times theirs, and
    while it has fewer than `most` members (None: no limit)."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    groups: list[list[int]] = []
    for k in order:
        if groups and lengths[groups[-1][0]] <= slack * lengths[k] and (most is None or len(groups[-1]) < most):
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


# Members per call on a CPU: one, and a stack of one-member calls trains its members one
# after another, each exactly as `fit` alone (ONE_BY_ONE: `train_and_score_stacked`). A CPU
# step is bound by arithmetic, not by kernel launches, so a wider call shares nothing, while
# vmap's batching rules cost up to ~20% on linear and dropout and twice the time on fused
# attention (no CPU batching rule: a loop), and its (K, ...) activations outgrow the
# allocator's reuse (4 per call at 0.80-1.00x of lone steps, 16 at 0.6-0.83x). Members
# interleaved step by step without vmap (`Stack._alone`) still lose 2-6% of whole cells, with
# the step itself at parity; the cause is not pinned down (benchmarks/README.md). Run one
# after another, they lose nothing. A GPU takes the whole stack in one call.
CPU_GROUP = 1


def default_group(device: str, K: int) -> int:
    """How many members one vmapped call takes by default on `device`."""
    return min(K, CPU_GROUP) if torch.device(device).type == "cpu" else K


def _to(parts: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: ({m: x.to(device) for m, x in v.items()} if isinstance(v, dict) else v.to(device)) for k, v in parts.items()}


def clip_per_member(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """`clip_grad_norm_` for each member on its own: the norm over member k's gradients."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    K = grads[0].shape[0]
    norms = torch.stack([g.reshape(K, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(K, *([1] * (g.dim() - 1))))


@torch.no_grad()
def load_member(module: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], k: int) -> None:
    """Copy member k's slice of the stacked weights into its own module (to score or save it)."""
    for n, p in module.named_parameters():
        p.copy_(params[n][k])
    for n, b in module.named_buffers():
        b.copy_(buffers[n][k])


@torch.no_grad()
def store_member(module: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], k: int) -> None:
    """`load_member`'s inverse: a module's weights and buffers into member k's slice."""
    for n, p in module.named_parameters():
        params[n][k].copy_(p)
    for n, b in module.named_buffers():
        buffers[n][k].copy_(b)


def _sliceable(key: str, v: Any, shape: torch.Size) -> bool:
    return key != "step" and torch.is_tensor(v) and v.shape == shape


def member_optimizer_state(state: dict[str, Any], shapes: list[torch.Size], k: int) -> dict[str, Any]:
    """Member k's optimizer state from the stacked one (`shapes`: a member's parameter shapes):
    elementwise state (K, ...) sliced, the step shared."""
    out = {pid: {key: (v[k] if torch.is_tensor(v) and _sliceable(key, v[0] if v.dim() else v, shapes[pid]) else v)
                 for key, v in st.items()}
           for pid, st in state["state"].items()}
    return {"state": out, "param_groups": state["param_groups"]}


def stacked_optimizer_state(states: list[dict[str, Any]], member_shapes: list[torch.Size]) -> dict[str, Any]:
    """The stacked optimizer state from the members' (the inverse of `member_optimizer_state`)."""
    out: dict[int, dict[str, Any]] = {}
    for pid, st in states[0]["state"].items():
        out[pid] = {key: (torch.stack([s["state"][pid][key] for s in states])
                          if _sliceable(key, v, member_shapes[pid]) else v) for key, v in st.items()}
    return {"state": out, "param_groups": states[0]["param_groups"]}


class Stack:
    """K members' weights stacked (K, ...) and their training step, vmapped over K."""

    def __init__(self, members: Sequence[nn.Module], group: int | None = None) -> None:
        self.K = len(members)
        self.group = group  # most members per vmapped call (None: all)
        self.params, self.buffers = torch.func.stack_module_state(list(members))  # type: ignore[arg-type]
        self.step = _Step(copy.deepcopy(members[0]))  # its own weights are never used
        self._predict = _Predict(self.step.method)
        weights = {f"method.{n}": p for n, p in self.params.items()}
        consts = {f"method.{n}": b for n, b in self.buffers.items()}

        def member_loss(w: dict[str, torch.Tensor], b: dict[str, torch.Tensor], parts: dict[str, Any],
                        mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
            batch = Batch(**parts, dialogues=[])
            return torch.func.functional_call(self.step, (w, b), (batch, mask))  # type: ignore[no-any-return]

        self._vmapped = torch.func.vmap(member_loss, randomness="different")
        self._weights, self._consts = weights, consts

    def train(self, mode: bool = True) -> None:
        self.step.train(mode)

    def optimizer(self, train: TrainConfig) -> torch.optim.Optimizer:
        """`make_optimizer` over the stacked weights: one step advances every member."""
        return make_optimizer(_StackedGroups(self.step.method, self.params), train)  # type: ignore[arg-type]

    def losses(
        self, batches: Sequence[Batch], masks: Sequence[torch.Tensor], device: str, slack: float = 1.25,
        backward: bool = False, pretrain: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(K,) training losses of the members on their own batches under their own masks
        (CPU batches, as drawn), and (K,) named terms (`pretrain`: of the method's stage 1,
        `step_loss`'s); differentiable in `params`. With
        `backward`, each group's gradients are accumulated into `params` at once (its
        activations freed before the next group runs) and the losses come back detached.

        Members whose batches have similar lengths (`length_buckets`) run as one vmapped call,
        padded to their longest: each member's batches come in its own random order, and one
        pad to the longest of all K would multiply the work of short batches. A call takes at
        most `group` members (`default_group`). A step that runs out of device memory is run
        again from the start with half as many members per call, and the stack keeps that."""
        self.step.pretrain = pretrain
        while True:
            try:
                return self._losses(batches, masks, device, slack, backward)
            except torch.OutOfMemoryError:
                size = self.group or self.K
                if size <= 1:
                    raise
                self.group = size // 2
                for p in self.params.values():  # a partial step's gradients: the step runs again
                    p.grad = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(f"note: a stacked step ran out of memory with {size} members per vmapped call; "
                      f"now {self.group} (--stack-group sets it)", file=sys.stderr)

    def _losses(
        self, batches: Sequence[Batch], masks: Sequence[torch.Tensor], device: str, slack: float, backward: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outs: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        order: list[int] = []
        for group in length_buckets([b.valid.shape[1] for b in batches], slack, self.group):
            if len(group) == 1:  # alone in its call: the lone run's own kernels, no vmap
                outs.append(self._alone(group[0], batches[group[0]], masks[group[0]], device, backward))
                order += group
                continue
            parts, mask = stack_batches([batches[k] for k in group], [masks[k] for k in group])
            whole = group == list(range(self.K))
            w, c = self._slice(group)  # a gather but for all K: gradients flow back into the slices
            if backward and not whole:  # the gather's own leaves: see below
                w = {n: v.detach().requires_grad_() for n, v in w.items()}
            with dense_layout():
                total, terms = self._vmapped(w, c, _to(parts, device), mask.to(device))
            if backward:  # the members are independent: d(sum)/d(member k) = member k's gradient
                if whole:
                    total.sum().backward()
                else:  # into the members' rows of .grad: a gather's backward would add a zero-padded
                    # (K, ...) tensor per group, K/group times the gradient memory traffic of a step
                    self._copy_grads(group, w, total.sum())
                total = total.detach()
            outs.append((total, terms))
            order += group
        if len(outs) == 1 and order == list(range(self.K)):
            return outs[0]
        inv = torch.argsort(torch.tensor(order))
        total = torch.cat([o[0] for o in outs])[inv.to(outs[0][0].device)]
        terms = {n: torch.cat([o[1][n] for o in outs])[inv.to(outs[0][0].device)] for n in outs[0][1]}
        return total, terms

    def _alone(self, k: int, batch: Batch, mask: torch.Tensor, device: str,
               backward: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Member k's loss as `fit` computes it (no vmap, no `dense_layout`): (1,) and (1,)
        terms. vmap's batching rules cost a CPU time against the lone kernels (fused bias, dropout,
        attention; `stack_step.py`'s ops, benchmarks/README.md), which a one-member call need not pay."""
        w, c = self._member(k)
        if backward:
            w = {n: v.detach().requires_grad_() for n, v in w.items()}
        total, parts = torch.func.functional_call(self.step, (w, c), (batch.to(device), mask.to(device)))
        if backward:
            self._copy_grads([k], w, total)
            total = total.detach()
        terms = {n: torch.as_tensor(v, dtype=total.dtype, device=total.device).reshape(1) for n, v in parts.items()}
        return total.reshape(1), terms

    def load_member(self, module: nn.Module, k: int) -> None:
        load_member(module, self.params, self.buffers, k)

    def each_member(self, fn: Callable[[nn.Module], Any], modules: Sequence[nn.Module]) -> None:
        """`fn` on each member as a lone module (modules[k] given member k's weights), its
        weights and buffers written back to member k's rows: a method's hook between steps
        (MMIN's `end_pretraining`), which no vmap need see."""
        for k, module in enumerate(modules):
            self.load_member(module, k)
            fn(module)
            store_member(module, self.params, self.buffers, k)

    def _copy_grads(self, group: list[int], w: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Members `group`'s gradients of `loss` (in `w`, their gathered weights) written into
        their rows of the stacked parameters' .grad; each member is in one group per step."""
        names = list(w)
        grads = torch.autograd.grad(loss, [w[n] for n in names], allow_unused=True)
        idx = torch.tensor(group, device=loss.device)
        for n, g in zip(names, grads):
            if g is None:  # unused by the method, as in a lone run: no gradient at all
                continue
            p = self._weights[n]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.index_copy_(0, idx, g.reshape(len(group), *p.shape[1:]))  # `_alone`: no K axis

    def _member(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Member k's weights and buffers: views of its rows, no K axis."""
        return {n: p[k] for n, p in self._weights.items()}, {n: b[k] for n, b in self._consts.items()}

    def _slice(self, group: list[int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The weights of members `group`, (len(group), ...)."""
        if group == list(range(self.K)):
            return self._weights, self._consts
        idx = torch.tensor(group, device=next(iter(self.params.values())).device)
        return ({n: p.index_select(0, idx) for n, p in self._weights.items()},
                {n: b.index_select(0, idx) for n, b in self._consts.items()})

    def predictor(self, members: Sequence[int]) -> Callable[[ModelInput], torch.Tensor]:
        """ModelInput -> (len(members), B, T, C): the members' inference outputs on one shared
        batch (eval mode, no gradient), at most `group` members per vmapped call."""
        members = list(members)
        size = self.group or len(members)

        @torch.no_grad()
        def forward(x: ModelInput) -> torch.Tensor:
            self.step.eval()
            def member_out(w: dict[str, torch.Tensor], c: dict[str, torch.Tensor]) -> torch.Tensor:
                return torch.func.functional_call(self._predict, (w, c), (x,))  # type: ignore[no-any-return]

            outs = []
            for s in range(0, len(members), size):
                if size == 1:  # as `_alone`: the lone kernels
                    outs.append(member_out(*self._member(members[s]))[None])
                    continue
                with dense_layout():
                    outs.append(torch.func.vmap(member_out, randomness="error")(*self._slice(members[s : s + size])))
            return torch.cat(outs)

        return forward


def score_members(
    stack: Stack, members: Sequence[int], data: PreparedData, split_name: str, masks: dict[Any, np.ndarray],
    batch_size: int, device: str,
) -> list[dict[Any, dict[str, float]]]:
    """`score_masks` of each of the stack's `members` (its weights as they are now), all
    members predicting each batch in one pass: one dict per member, in `members`' order."""
    dialogues = getattr(data.split, split_name)
    labels = data.corpus.labels[data.corpus.rows_of(dialogues)]
    forward = stack.predictor(members)
    scores: list[dict[Any, dict[str, float]]] = [{} for _ in members]
    for key, mask in masks.items():
        outputs = predict_split(stack.step, data.corpus, dialogues, mask, batch_size, device, forward=forward)  # (K', N, C)
        for i in range(len(members)):
            scores[i][key] = split_metrics(outputs[i], labels, data.corpus.task, mask)
    return scores


# ---------------------------------------------------------------------------- fit
def fit_stacked(
    cfgs: Sequence[ExperimentConfig],
    data: PreparedData,
    out_dirs: Sequence[Path | None] | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    group: int | None = None,
) -> list[FitResult]:
    """`fit` for runs that differ only in seed, trained as one stack; one FitResult each.
    `group`: the most members per vmapped call (default: `default_group` of the device).

    `out_dirs[k]` is member k's folder, exactly as `fit(cfgs[k], data, out_dirs[k])` would
    write it (`last/` every epoch, the checkpoint at the end). A member's `seconds` is its
    share of the stack's time (the stack's / K). Raises StackError for runs that cannot share
    a stack (see `stack_blocker`, and runs that resume from different epochs).
    """
    cfgs = list(cfgs)
    K = len(cfgs)
    if K == 0:
        raise ValueError("fit_stacked needs at least one run")
    for c in cfgs:
        why = stack_blocker(c)
        if why is not None:
            raise StackError(why)
    if len({stack_key(c) for c in cfgs}) > 1:
        raise StackError("runs of a stack may differ only in train.seed")
    dirs = list(out_dirs) if out_dirs is not None else [None] * K
    if len(dirs) != K:
        raise ValueError(f"{K} runs but {len(dirs)} output folders")
    cfg, train = cfgs[0], cfgs[0].train
    check_device(train.device)
    members = [init_method(c, data.spec) for c in cfgs]
    check_lengths(members[0], data)
    stage1 = stage1_epochs(cfg, members[0])  # the same for every member: it is in the stack key
    gens = [batch_generator(c) for c in cfgs]
    alone = [make_optimizer(m, train) for m in members]  # each member's own, for its last/ state
    val_masks = eval_masks(data, "valid", selection_rates(cfg), cfg.eval.mask_seed)

    best: list[dict[str, torch.Tensor] | None] = [None] * K
    best_score, best_epoch = [float("-inf")] * K, [-1] * K
    history: list[list[dict[str, float]]] = [[] for _ in range(K)]
    starts: list[int] = []
    seconds_before = 0.0  # a resumed stack's earlier segments (per member)
    lasts = [d / "last" if d is not None else None for d in dirs]
    for k in range(K):
        restored = load_training_state(lasts[k], members[k], alone[k], gens[k]) if lasts[k] is not None and resume else None  # type: ignore[arg-type]
        if restored is None:
            starts.append(0)
            continue
        best[k], info = restored
        seconds_before = max(seconds_before, float(info.get("seconds", 0.0)))
        best_score[k], best_epoch[k], history[k] = info["best_score"], info["best_epoch"], info["history"]
        starts.append(info["epoch"] + 1)
    # A member that stopped early (train.patience) keeps its place in the stack, frozen: its
    # weights still move but its history, selection and files no longer do.
    active = [not stopped_early(history[k], best_epoch[k], train) for k in range(K)]
    running = {starts[k] for k in range(K) if active[k]} or {max(starts)}
    if len(running) > 1:
        raise StackError(f"the members resume from different epochs {starts}: train them separately")
    start = running.pop()
    if start == 0:  # the stack's dropout stream; on resume it comes from last/ (load_training_state)
        torch.manual_seed(stable_seed("stack-dropout", *[c.train.seed for c in cfgs]))

    stack = Stack(members, group or default_group(train.device, K))
    params = stack.params
    shapes = [p.shape for group in members[0].param_groups(train.lr, train.router_lr)  # type: ignore[operator]
              for p in group["params"]]
    opt = stack.optimizer(train)
    if start > 0:
        opt.load_state_dict(stacked_optimizer_state([o.state_dict() for o in alone], shapes))
    t0 = time.perf_counter()
    done_here = 0

    def results(final: bool, seconds: float) -> list[FitResult]:
        out = []
        for k in range(K):
            stack.load_member(members[k], k)
            if final and best[k] is not None:
                members[k].load_state_dict(best[k])  # type: ignore[arg-type]
            out.append(FitResult(members[k], best_epoch[k], best_score[k], history[k], seconds))
        return out

    for epoch in range(start, train.epochs):
        active = [a and not stopped_early(history[k], best_epoch[k], train) for k, a in enumerate(active)]
        if not any(active):
            break
        set_epoch_lr(opt, train, epoch)
        pretrain = epoch < stage1  # as `fit`: stage-1 batches complete, unclipped, no selection
        if not pretrain and epoch == max(start, stage1) and hasattr(members[0], "end_pretraining"):
            stack.each_member(lambda m: m.end_pretraining(), members)  # type: ignore[operator]  # stage 2 starts (a no-op once done)
        stack.train()
        lists = [list(training_batches(data, train, g)) for g in gens]
        if len({len(x) for x in lists}) > 1:
            raise StackError("the members' epochs have different numbers of batches")
        sums: dict[str, torch.Tensor] = {}
        for j in range(len(lists[0])):
            batches = [x[j] for x in lists]
            masks = [training_mask(b, train, g, pretrain) for b, g in zip(batches, gens)]  # each member's own draws
            opt.zero_grad(set_to_none=True)
            _, terms = stack.losses(batches, masks, train.device, backward=True, pretrain=pretrain)  # gradients into params
            if train.grad_clip > 0 and not pretrain:
                clip_per_member(list(params.values()), train.grad_clip)
            opt.step()
            for name, v in terms.items():
                sums[name] = sums.get(name, 0) + v.detach()
        n = max(len(lists[0]), 1)
        prefix = "pre_" if pretrain else ""
        means = {prefix + name: (v / n).cpu().tolist() for name, v in sums.items()}  # one sync per epoch
        rows: list[dict[str, float]] = [{"epoch": epoch, **{name: vs[k] for name, vs in means.items()}} for k in range(K)]
        evaluate = not pretrain and ((epoch + 1) % train.eval_every == 0 or epoch + 1 == train.epochs)
        live = [k for k in range(K) if active[k]]
        scores = dict(zip(live, score_members(stack, live, data, "valid", val_masks, train.batch_size, train.device))) \
            if evaluate else {}
        elapsed = seconds_before + (time.perf_counter() - t0) / K  # as last/ records it: a resume adds to this
        for k in live:
            loaded = False
            if evaluate:
                score = selection_score(scores[k])
                rows[k]["val_waf"] = score
                if score > best_score[k]:
                    best_score[k], best_epoch[k] = score, epoch
                    stack.load_member(members[k], k)
                    loaded = True
                    best[k] = {n: v.detach().to("cpu", copy=True) for n, v in members[k].state_dict().items()}
            history[k].append(rows[k])
            if lasts[k] is not None:
                if not loaded:
                    stack.load_member(members[k], k)
                alone[k].load_state_dict(member_optimizer_state(opt.state_dict(), shapes, k))
                info = {"epoch": epoch, "best_score": best_score[k], "best_epoch": best_epoch[k], "history": history[k],
                        "seconds": elapsed}
                save_training_state(lasts[k], members[k], best[k], alone[k], gens[k], info)  # type: ignore[arg-type]
        done_here += 1
        if stop_after is not None and done_here >= stop_after and epoch + 1 < train.epochs:
            return results(final=False, seconds=elapsed)
    out = results(final=True, seconds=seconds_before + (time.perf_counter() - t0) / K)
    for k in range(K):
        if dirs[k] is not None:
            save_result(dirs[k], out[k], data, cfgs[k], stacked=K)  # type: ignore[arg-type]
    return out
