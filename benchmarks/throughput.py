"""Grid throughput: cells per hour for one UME cell of a preset, by workers and stack size.

Issue 13. The cell is the `iteacnet` variant (ITS; `--variant` another) under UME on the preset's corpus (default
`paper-mosi`: CMU-MOSI, text-minilm-384 + audio-opensmile-73, no visual; its recipe), with
the epochs cut to `--epochs` so the measurement takes minutes. Cells differ only in seed. Every mode (W
worker processes, stacks of K seeds) runs in a fresh subprocess, one after the other in one
invocation, through the grid's own executor (`run_grid`, as `iteacnet benchmark --workers W
--stack K` runs it); its wall time covers worker start, corpus loading, training, validation
and test scoring. Reported per mode: cells/hour, the ratio to 1 worker x K = 1 of the same
invocation, and peak memory: the `peak_mb` the grid records per job (CPU: the worker
process's peak resident set, which includes Python, torch and the corpus, given with the
process's resident set before any training; CUDA: `torch.cuda.max_memory_allocated` of the
job), and test WAF: each seed's mean over the rates, then mean ± std over the seeds. With
`--rounds R` the modes run R times in alternating order and each reports its median round (a shared machine's load changes by the minute). `--ballast-mb M` adds a mode:
1 worker, K = 1, with M MB of memory filled before training and never touched again (a
stack holds its members' optimizer states at once: is it the footprint that costs?).
`--group G` sets a stack's members per vmapped call (`--stack-group`; default the device's:
the whole stack on a GPU, 1 on a CPU, which trains the members one after another).

    python benchmarks/throughput.py --rounds 2 --out throughput.json          # CPU, ~15 min
    python benchmarks/throughput.py --device cuda --workers 1,4 --stacks 1,4,16 --epochs 2
    python benchmarks/throughput.py --quick                                   # synthetic, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _cells(preset: str, variant: str, epochs: int, n: int, device: str, overrides: list[str]) -> list[Any]:
    from iteacnet.benchmark.grid import GridSpec, expand
    from iteacnet.cli import apply_overrides, load_config

    sets = [f"train.epochs={epochs}", f"train.device={device}", *overrides]
    cfg = load_config(preset, None, sets)
    spec = GridSpec(variants=(variant,), corpora=((cfg.data.corpus, ()),), seeds=tuple(range(n)), protocols=("ume",))
    # As `iteacnet benchmark` does: the method's recipe (train.recipe="own"), then our overrides win.
    return expand(spec, cfg, reapply=lambda c: apply_overrides(c, sets))


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    """One mode, in this (fresh) process: the grid of `n` cells with W workers, stacks of K."""
    import torch

    from iteacnet.benchmark.grid import ResultStore, run_grid

    torch.set_num_threads(args.threads)
    cells = _cells(args.preset, args.variant, args.epochs, args.one_cells, args.device, args.set)
    ballast = torch.ones(args.one_ballast_mb * 2**18)  # filled: resident, then idle  # noqa: F841
    load0 = os.getloadavg()[0]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = run_grid(cells, ResultStore(Path(tmp) / "cells.jsonl"), workers=args.one_workers,
                        progress=False, stack=args.one_stack, stack_group=args.group, threads_per_worker=args.threads)
        seconds = time.perf_counter() - t0
    seeds = sorted({r["seed"] for r in rows})
    by_seed = [statistics.mean(r["waf"] for r in rows if r["seed"] == s) for s in seeds]  # a run's mean over rates
    return {
        "workers": args.one_workers, "stack": args.one_stack, "ballast_mb": args.one_ballast_mb,
        "cells": len(cells), "seconds": round(seconds, 2),
        "cells_per_hour": round(len(cells) * 3600 / seconds, 1),
        "peak_mb_per_job": max(r["peak_mb"] for r in rows),
        "driver_rss_before_mb": round(rss0, 1),
        "stacked_rows": sum(1 for r in rows if r.get("stacked")), "rows": len(rows),
        "mean_waf": round(statistics.mean(by_seed), 3),
        "std_waf_over_seeds": round(statistics.stdev(by_seed), 3) if len(by_seed) > 1 else None,
        "loadavg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper-mosi")
    p.add_argument("--variant", default="iteacnet", help="the grid variant of the cell (default iteacnet: ITS)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per cell (cut from the preset's for the measurement)")
    p.add_argument("--workers", default="1,2", help="worker counts to measure (K = 1)")
    p.add_argument("--stacks", default="4,16", help="stack sizes to measure (1 worker)")
    p.add_argument("--rounds", type=int, default=1, help="rounds over the modes, in alternating order")
    p.add_argument("--cells", type=int, default=4, help="cells per mode (at least K)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (1: on a shared machine, OpenMP threads waiting for a busy core slow an epoch many times)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--group", type=int, default=None,
                   help="stack members per vmapped call, as --stack-group (default: the device's; 1 on a CPU: one after another)")
    p.add_argument("--set", action="append", default=[], help="extra config override, KEY=VALUE")
    p.add_argument("--ballast-mb", type=int, default=0,
                   help="also run 1 worker, K = 1 holding this many MB of idle, resident memory")
    p.add_argument("--quick", action="store_true", help="preset `quick` (synthetic, tiny), 1 epoch: seconds")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--one-workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--one-stack", type=int, help=argparse.SUPPRESS)
    p.add_argument("--one-cells", type=int, help=argparse.SUPPRESS)
    p.add_argument("--one-ballast-mb", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.preset, args.epochs = "quick", 1
    if args.one_workers is not None:  # a mode's subprocess
        print("RESULT " + json.dumps(run_mode(args)), flush=True)
        return
    modes = [(int(w), 1, 0) for w in args.workers.split(",") if w] + [(1, int(k), 0) for k in args.stacks.split(",") if k and int(k) > 1]
    if args.ballast_mb > 0:
        modes.append((1, 1, args.ballast_mb))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    runs: dict[tuple[int, int, int], list[dict[str, Any]]] = {m: [] for m in modes}
    # Rounds alternate the order (A B C, C B A, ...) so a load change on a shared machine
    # weighs on every mode alike; a mode's figure is its median round.
    schedule = [m for r in range(args.rounds) for m in (modes if r % 2 == 0 else modes[::-1])]
    for w, k, mb in schedule:
        n = max(args.cells, k, w)
        cmd = [sys.executable, __file__, "--preset", args.preset, "--variant", args.variant, "--epochs", str(args.epochs), "--threads",
               str(args.threads), "--device", args.device, "--one-workers", str(w), "--one-stack", str(k),
               "--one-cells", str(n), *(["--group", str(args.group)] if args.group else []), "--one-ballast-mb", str(mb), *[a for s in args.set for a in ("--set", s)]]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            raise SystemExit(f"mode workers={w} stack={k} failed:\n{out.stderr[-3000:]}")
        res = json.loads(line[0][7:])
        runs[(w, k, mb)].append(res)
        print(f"workers={w:<2} stack={k:<3} {f'ballast={mb} MB ' if mb else ''}cells={res['cells']:<3} {res['seconds']:8.1f} s  "
              f"{res['cells_per_hour']:8.1f} cells/h  peak {res['peak_mb_per_job']:.0f} MB/job "
              f"(process before training {res['driver_rss_before_mb']:.0f} MB)  stacked rows {res['stacked_rows']}/{res['rows']}  "
              f"load {res['loadavg_1min_before_after']}  WAF {res['mean_waf']} ± {res['std_waf_over_seeds']} (seeds)", flush=True)
    results = []
    for m in modes:
        rs = runs[m]
        med = dict(rs[0])
        med["cells_per_hour_rounds"] = [r["cells_per_hour"] for r in rs]
        med["cells_per_hour"] = round(statistics.median(med["cells_per_hour_rounds"]), 1)
        med["seconds_rounds"] = [r["seconds"] for r in rs]
        med["loadavg_rounds"] = [r["loadavg_1min_before_after"] for r in rs]
        med["peak_mb_per_job"] = max(r["peak_mb_per_job"] for r in rs)
        for key in ("seconds", "loadavg_1min_before_after"):
            med.pop(key)
        results.append(med)
    base = next((r for r in results if r["workers"] == 1 and r["stack"] == 1 and not r["ballast_mb"]), None)
    if base is not None:
        for r in results:
            r["ratio_to_1x1"] = round(r["cells_per_hour"] / base["cells_per_hour"], 2)
        print("ratios to 1 worker, K = 1: " + ", ".join(
            f"W{r['workers']}/K{r['stack']}{'+' + str(r['ballast_mb']) + 'MB' if r['ballast_mb'] else ''} {r['ratio_to_1x1']}x"
            for r in results))
    meta = {"preset": args.preset, "variant": args.variant, "epochs": args.epochs, "group": args.group, "rounds": args.rounds, "device": args.device, "threads": args.threads,
            "cpus": os.cpu_count(), "set": args.set, "note": "epochs cut for the measurement; cells differ only in seed"}
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "modes": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
