#!/usr/bin/env python
"""One process against N data-parallel processes: the same training, how close the results.

    python benchmarks/ddp_equivalence.py --preset cmumosi --nproc 2 --seeds 0,1,2 --out runs/ddp-eq
    python benchmarks/ddp_equivalence.py --preset cmumosi --nproc 2 --no-dropout ...   # exactness

It runs `iteacnet train` (one process) and `torchrun --nproc_per_node=N -m iteacnet.cli train
--distributed` on the same config and seeds, in that order, then prints, per seed and
missing rate, both test WAFs and their difference, and as a yardstick the spread of the
one-process WAF over the seeds. Every process gets `--threads` torch threads (default: the
machine's cores / N, so both runs use the same cores) and the wall time of each run is
printed, so the figures are the speed-up too.

With `--no-dropout` (every dropout of the model set to 0) the N-process run should equal the
one-process run up to floating-point reduction order, and the script exits 1 where a test
metric differs by more than `--tol`. With dropout on, each rank draws its own dropout noise
(as in any data-parallel run), so the N-process run is another draw of the same training:
compare its differences with the seed spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from iteacnet.config import replace
from iteacnet.evaluation.reports import read_rows
from iteacnet.presets import load_config

DROPOUTS = ("model.dropout", "model.input_dropout", "model.attn_dropout")


def _run(cmd: list[str], threads: int, log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def _rows(folder: Path) -> dict[tuple[int, float], dict[str, Any]]:
    """A run's test rows by (seed, rate); fixed-pattern rows left out."""
    return {(int(r["seed"]), float(r["rate"])): r for r in read_rows(folder / "results.json") if not r.get("pattern")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cmumosi")
    ap.add_argument("--config", help="an ExperimentConfig JSON file instead of a preset")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default cores / nproc)")
    ap.add_argument("--no-dropout", action="store_true", help="every dropout 0: the runs must agree")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest test-metric difference (percent points) with --no-dropout")
    ap.add_argument("--out", type=Path, default=Path("runs/ddp-equivalence"))
    args = ap.parse_args(argv)

    cfg = load_config(args.preset, args.config, args.set)
    if args.no_dropout:
        cfg = replace(cfg, **dict.fromkeys(DROPOUTS, 0.0))
    cfg = replace(cfg, **{"train.progress": False})
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "config.json"
    cfg.to_json(config)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.nproc)
    common = ["--config", str(config), "--seeds", args.seeds]
    one, many = args.out / "one", args.out / f"ddp{args.nproc}"
    print(f"{cfg.name}: {cfg.model.method}/{cfg.model.framework}, {cfg.train.epochs} epochs, device {cfg.train.device}, "
          f"dropout {'off' if args.no_dropout else 'on'}, seeds {args.seeds}, {threads} threads per process", flush=True)
    t_one = _run([sys.executable, "-m", "iteacnet.cli", "train", *common, "--out", str(one)], threads, args.out / "one.log")
    print(f"1 process: {t_one:.0f} s", flush=True)
    t_many = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                   "-m", "iteacnet.cli", "train", "--distributed", *common, "--out", str(many)],
                  threads, args.out / f"ddp{args.nproc}.log")
    print(f"{args.nproc} processes: {t_many:.0f} s (wall-time ratio {t_one / t_many:.2f}x)", flush=True)

    a, b = _rows(one), _rows(many)
    if sorted(a) != sorted(b):
        sys.exit(f"the runs scored different (seed, rate) cells: {sorted(set(a) ^ set(b))}")
    metrics = [k for k, v in a[min(a)].items() if k in ("waf", "acc", "f1", "mae", "corr") and isinstance(v, float)]
    print(f"\n| seed | rate | WAF 1 proc | WAF {args.nproc} proc | diff |\n|---|---|---|---|---|")
    for key in sorted(a):
        print(f"| {key[0]} | {key[1]:.1f} | {a[key]['waf']:.2f} | {b[key]['waf']:.2f} | {b[key]['waf'] - a[key]['waf']:+.2f} |")
    worst = {m: max(abs(b[k][m] - a[k][m]) for k in a) for m in metrics}
    rates = sorted({r for _, r in a})
    seeds = sorted({s for s, _ in a})
    spread = [statistics.stdev([a[(s, r)]["waf"] for s in seeds]) for r in rates] if len(seeds) > 1 else []
    mean_one, mean_many = (statistics.mean(x[k]["waf"] for k in x) for x in (a, b))  # every seed has every rate
    summary = {
        "config": cfg.name, "nproc": args.nproc, "seeds": seeds, "dropout": not args.no_dropout,
        "threads_per_process": threads, "seconds_one": t_one, "seconds_many": t_many,
        "max_abs_diff": worst, "mean_waf_one": mean_one, "mean_waf_many": mean_many,
        "seed_std_waf_one_mean_over_rates": statistics.mean(spread) if spread else None,
    }
    print("\nlargest |difference| over seeds and rates: " + ", ".join(f"{m} {v:.2e}" for m, v in worst.items()))
    print(f"average WAF over rates and seeds: 1 process {mean_one:.2f}, {args.nproc} processes {mean_many:.2f}")
    if spread:
        print(f"seed-to-seed std of the 1-process WAF (mean over rates): {summary['seed_std_waf_one_mean_over_rates']:.2f}")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"summary: {args.out / 'summary.json'}")
    if args.no_dropout and max(worst.values()) > args.tol:
        print(f"FAIL: with dropout off the runs differ by more than {args.tol}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
