"""One training step of K lone runs against one stacked step of the same K runs (issue 13).

Where `throughput.py` measures whole grid cells, this isolates the step: K members of the
`paper-mosi` ITS cell (CMU-MOSI, its recipe), each on one of the preset's two training batches
(the 32 longest and the 20 shortest videos, as members meet them in an epoch: half on each),
under its own training mask. A step is the loss, its backward and the optimizer's step (Adam,
the preset's). `lone` steps member after member, each with its own optimizer (K lone runs
interleaved step by step); `one member` runs member 0 on the same K batches (K steps of
one run, as `fit` runs them: its weights stay in cache); `stack G` runs
`Stack.losses(..., backward=True)` with at most G members per vmapped call. The first call of each is timed apart (`first`: a process touching its
activation memory for the first time), then `--repeats` calls in ABBA order over rounds;
reported: seconds per member-step (median over rounds) and lone / stack (> 1: the stack is
faster). Then three of the model's ops alone, forward and backward, K lone calls against
one `vmap` over K (the batching rules' own cost, without the model around them): a Linear
D -> 4D with bias, dropout 0.1 on attention weights (B, H, T, T), fused attention.

    python benchmarks/stack_step.py --members 16 --groups 1,4,16 --threads 1
    python benchmarks/stack_step.py --device cuda --members 16 --groups 16
    python benchmarks/stack_step.py --quick        # synthetic, tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


def seconds(f: Callable[[], None], n: int, device: str) -> float:
    """Wall seconds of n calls of f, the device's queue drained before and after."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        f()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def op_ratios(K: int, B: int, T: int, D: int, H: int, repeats: int, device: str) -> dict[str, float]:
    """Per op: seconds of K lone calls / seconds of one vmapped call over K (< 1: vmap slower)."""
    import torch.nn.functional as F
    from torch.func import vmap

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, requires_grad=True)

    ops: dict[str, tuple[Callable[..., torch.Tensor], list[tuple[int, ...]]]] = {
        "linear": (F.linear, [(B, T, D), (4 * D, D), (4 * D,)]),
        "dropout": (lambda a: F.dropout(a, 0.1, True), [(B, H, T, T)]),
        "attention": (F.scaled_dot_product_attention, [(B, H, T, D // H)] * 3),
    }
    out = {}
    for name, (op, shapes) in ops.items():
        lone_args = [[leaf(*sh) for sh in shapes] for _ in range(K)]
        stacked_args = [leaf(K, *sh) for sh in shapes]
        batched = vmap(op, randomness="different")

        def lone(f: Callable[..., torch.Tensor] = op, calls: list[list[torch.Tensor]] = lone_args) -> None:
            for a in calls:
                f(*a).sum().backward()

        def stacked(f: Callable[..., torch.Tensor] = batched, a: list[torch.Tensor] = stacked_args) -> None:
            f(*a).sum().backward()

        lone(), stacked()  # first touch
        out[name] = seconds(lone, repeats, device) / seconds(stacked, repeats, device)
    return out


def main() -> None:
    from iteacnet.cli import load_config
    from iteacnet.config import replace
    from iteacnet.data.batching import Batch
    from iteacnet.data.loading import load_corpus
    from iteacnet.training import engine
    from iteacnet.training.stacked import Stack

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper-mosi")
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--groups", default="1,4,16", help="members per vmapped call, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per path and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="preset `quick` (synthetic, tiny)")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    if args.quick:
        args.preset, args.members, args.groups, args.repeats, args.rounds = "quick", 4, "1,4", 1, 1
    torch.set_num_threads(args.threads)
    K = args.members
    cfg = load_config(args.preset, None, ["train.progress=false", f'train.device="{args.device}"'])
    data = engine.prepare(load_corpus(cfg.data, progress=False), cfg)
    members = [engine.init_method(replace(cfg, **{"train.seed": s}), data.spec) for s in range(K)]
    gen = engine.batch_generator(cfg)
    kinds = sorted(engine.training_batches(data, cfg.train, gen), key=lambda b: -b.valid.shape[1])
    batches = [kinds[k % len(kinds)] for k in range(K)]
    masks = [engine.training_mask(b, cfg.train, gen) for b in batches]

    opts = [engine.make_optimizer(m, cfg.train) for m in members]

    def lone_step(k: int, b: Batch, mask: torch.Tensor) -> None:
        members[k].train()
        opts[k].zero_grad(set_to_none=True)
        bd, md = b.to(args.device), mask.to(args.device)
        engine.step_loss(members[k], bd, md, engine.whole_batch_totals(b, mask)).total.backward()
        opts[k].step()

    def lone() -> None:
        for k, (b, mask) in enumerate(zip(batches, masks)):
            lone_step(k, b, mask)

    def warm() -> None:  # member 0 on every member's batch: its weights stay in cache, as in `fit`
        for b, mask in zip(batches, masks):
            lone_step(0, b, mask)

    def stacked(group: int) -> Callable[[], None]:
        stack = Stack(members, group)
        stack.train()
        opt = stack.optimizer(cfg.train)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            stack.losses(batches, masks, args.device, backward=True)
            opt.step()
        return step

    def timed(f: Callable[[], None], n: int) -> float:
        return seconds(f, n, args.device) / n / K

    paths = {"lone": lone, "one member": warm, **{f"stack {g}": stacked(g) for g in (int(x) for x in args.groups.split(",")) if g <= K}}
    first = {name: round(timed(f, 1) * K, 3) for name, f in paths.items()}  # seconds of the whole first call
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(args.rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            rounds[name].append(timed(paths[name], args.repeats))
    per = {name: statistics.median(v) for name, v in rounds.items()}
    shapes = [tuple(b.valid.shape) for b in kinds]
    print(f"{args.preset}: K = {K} members on batches {shapes} (B, T), {args.device}, {args.threads} thread(s)")
    print(f"{'path':<12} {'first call s':>12} {'s/member-step':>14} {'lone/stack':>10}")
    for name in paths:
        print(f"{name:<12} {first[name]:>12.2f} {per[name]:>14.3f} {per['lone'] / per[name]:>9.2f}x")
    B, T = shapes[0]
    D, H = (16, 2) if args.quick else (128, 8)
    with warnings.catch_warnings():  # vmap's note that fused attention has no batching rule: measured here
        warnings.simplefilter("ignore", UserWarning)
        ops = op_ratios(K, B, T, D, H, 2 if args.quick else 10, args.device)
    print(f"ops alone, {K} lone calls / one vmapped call (forward + backward): "
          + ", ".join(f"{n} {r:.2f}x" for n, r in ops.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "meta": {"preset": args.preset, "members": K, "device": args.device, "threads": args.threads,
                     "batches": shapes, "repeats": args.repeats, "rounds": args.rounds},
            "first_call_s": first, "s_per_member_step_rounds": rounds, "s_per_member_step": per,
            "lone_over_stack": {n: per["lone"] / per[n] for n in paths},
            "ops_lone_over_vmap": ops, "ops_shapes": {"B": B, "T": T, "D": D, "H": H}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
