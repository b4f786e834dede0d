#!/usr/bin/env python
"""Load time of a large corpus folder: one matrix per modality vs per-utterance files.

    python benchmarks/load_corpus.py [--utterances 100000] [--per-file-utterances 10000]
                                     [--dims 384,73] [--dir DIR] [--out FILE.json]

Generates a classification corpus folder (data/table.py) of `--utterances` utterances in
dialogues of 4–16 (random float32 features, `--dims` per modality: text 384 and audio 73 by
default, the sizes of the shared IEMOCAP/MOSI features), then times
`iteacnet.data.table.load_table_corpus` (CSV table + features -> Corpus), best of
`--repeats`:

- `matrix`: features as one (N, d) .npy per modality with its ids (.ids.txt);
- `per-file`: the same table with features in the GCNet layout, one .npy per utterance and
  modality. Writing and reading millions of small files is slow, so this layout is generated
  with `--per-file-utterances` (default 10,000) and its time is extrapolated linearly to
  `--utterances`; the output says so. `--per-file-utterances 0` uses the full size.

Both layouts are read right after being written, so the operating system's file cache is
warm: a cold first read of per-file features from a disk is slower still.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.data.table import load_table_corpus

MODS = ("text", "audio", "visual")


def write_corpus(root: Path, n: int, dims: list[int], per_file: bool, seed: int = 0) -> None:
    """A corpus folder of n utterances; features as matrices or one file per utterance."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    with (root / "utterances.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dialogue", "id", "order", "speaker", "label", "split", "text"])
        d = 0
        while len(ids) < n:
            length = min(int(rng.integers(4, 17)), n - len(ids))
            split = ("train", "train", "train", "valid", "test")[d % 5]
            for t in range(length):
                uid = f"d{d:06d}_u{t:02d}"
                ids.append(uid)
                w.writerow([f"d{d:06d}", uid, t, f"spk{d}_{t % 3}", int(rng.integers(0, 4)), split, f"utterance {uid}"])
            d += 1
    features: dict[str, Any] = {}
    (root / "features").mkdir(exist_ok=True)
    for m, dim in zip(MODS, dims):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        if per_file:
            folder = root / "features" / f"{m}-{dim}"
            folder.mkdir()
            for uid, row in zip(ids, x):
                np.save(folder / f"{uid}.npy", row)
            features[m] = f"features/{m}-{dim}"
        else:
            np.save(root / "features" / f"{m}.npy", x)
            (root / "features" / f"{m}.ids.txt").write_text("".join(u + "\n" for u in ids))
            features[m] = {"matrix": f"features/{m}.npy", "ids": f"features/{m}.ids.txt"}
    desc = {"name": "generated", "task": "classification", "classes": ["a", "b", "c", "d"], "features": features}
    (root / "corpus.json").write_text(json.dumps(desc))


def time_load(root: Path, repeats: int) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        corpus = load_table_corpus(root)
        best = min(best, time.perf_counter() - t0)
        n = corpus.num_utterances
        del corpus
    return best, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=100_000)
    p.add_argument("--per-file-utterances", type=int, default=10_000,
                   help="size of the per-file corpus (extrapolated to --utterances); 0: the full size")
    p.add_argument("--dims", default="384,73", help="feature sizes, text[,audio[,visual]]")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", help="where to generate (default: a temporary folder, removed after)")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",") if d][: len(MODS)]
    n_file = args.per_file_utterances or args.utterances
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="load-corpus-"))
    try:
        t0 = time.perf_counter()
        write_corpus(base / "matrix", args.utterances, dims, per_file=False)
        write_matrix = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_corpus(base / "per-file", n_file, dims, per_file=True)
        write_files = time.perf_counter() - t0
        t_matrix, n_matrix = time_load(base / "matrix", args.repeats)
        t_files, n_files = time_load(base / "per-file", args.repeats)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    scale = args.utterances / n_files
    result = {
        "utterances": args.utterances, "dims": dict(zip(MODS, dims)), "repeats": args.repeats,
        "matrix": {"utterances": n_matrix, "load_s": round(t_matrix, 3), "write_s": round(write_matrix, 1)},
        "per_file": {"utterances": n_files, "load_s": round(t_files, 3), "write_s": round(write_files, 1),
                     "load_s_at_full_size": round(t_files * scale, 1), "extrapolated": scale != 1.0},
    }
    print(f"corpus: {args.utterances:,} utterances, features {dict(zip(MODS, dims))}, best of {args.repeats} loads")
    print(f"  one matrix per modality : {t_matrix:8.2f} s")
    extra = f" (measured {t_files:.2f} s at {n_files:,} utterances, x{scale:g}: EXTRAPOLATED linearly)" if scale != 1.0 else ""
    print(f"  one file per utterance  : {t_files * scale:8.2f} s{extra}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
