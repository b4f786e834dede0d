#!/usr/bin/env python
"""Throughput of `iteacnet extract audio`: clips per second, per openSMILE feature set.

    python benchmarks/audio_extract.py                          # 200 clips of 3 s, both sets
    python benchmarks/audio_extract.py --clips 50 --seconds 1 --workers 1,2 --out bench.json

It writes `--clips` synthetic 16 kHz mono 16-bit WAV files (tones with noise and tremolo,
lengths spread uniformly over [0.5, 2 x --seconds - 0.5] s, so the mean is `--seconds`;
`--rate 44100` writes them at another rate, adding the resampling), then times
`extract_audio_features` into a fresh folder for each feature set and worker count (after an
untimed warm-up that imports opensmile and builds its extractors): the
whole call, i.e. the check pass (every clip read and checked first) plus extraction and
writing. Printed: clips/s (wall clock), audio seconds per wall second (x real time), the
check pass's share of the time, and clips per CPU-second of the process (all threads; on a
machine shared with other work this stays put while the wall-clock figures drop). The 1-
minute load average before and after each measurement is printed too. Clips are synthetic:
the figures measure the extractor, not a corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.data import audio


def make_clips(folder: Path, n: int, mean_seconds: float, rate: int, seed: int = 0) -> list[tuple[str, Path]]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    lo, hi = 0.5, max(0.5, 2 * mean_seconds - 0.5)
    out = []
    for k in range(n):
        seconds = float(rng.uniform(lo, hi))
        t = np.arange(int(seconds * rate)) / rate
        f0 = rng.uniform(100, 300)
        x = 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * f0 * t + np.sin(2 * np.pi * 5 * t))
        x = x + 0.02 * rng.standard_normal(t.shape)
        path = folder / f"clip{k:05d}.wav"
        sf.write(str(path), x.astype(np.float32), rate, subtype="PCM_16")
        out.append((path.stem, path))
    return out


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def time_checks(clips: list[tuple[str, Path]], rate: int, workers: int) -> float:
    """Seconds of the check pass alone (read, convert, check every clip), as the extractor runs it."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda c: audio.load_clip(audio.AudioClip(c[1]), rate), clips))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0, help="mean clip length")
    ap.add_argument("--rate", type=int, default=16000, help="sample rate of the written clips")
    ap.add_argument("--feature-sets", default="eGeMAPSv02,ComParE_2016")
    ap.add_argument("--workers", default=f"1,{audio.default_workers()}", help="comma-separated worker counts")
    ap.add_argument("--out", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    sets = [s for s in args.feature_sets.split(",") if s]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="audio-bench-") as tmp:
        clips = make_clips(Path(tmp), args.clips, args.seconds, args.rate)
        total_audio = sum(audio.load_clip(audio.AudioClip(p), args.rate).signal.shape[0] for _, p in clips) / args.rate
        print(f"{len(clips)} synthetic clips, {total_audio:.0f} s of audio at {args.rate} Hz "
              f"(mean {total_audio / len(clips):.2f} s); {audio.default_workers()} CPU core(s) available")
        for fs in sets:  # untimed warm-up: imports, one openSMILE instance per thread
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", audio.AudioConversionWarning)
                audio.extract_audio_features(clips[: max(workers)], Path(tmp) / f"warm-{fs}", audio.AudioSettings(fs),
                                             workers=max(workers), progress=False)
        for fs in sets:
            for w in workers:
                out = Path(tmp) / f"out-{fs}-{w}"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", audio.AudioConversionWarning)
                    load0 = _load()
                    t0, c0 = time.perf_counter(), time.process_time()
                    report = audio.extract_audio_features(clips, out, audio.AudioSettings(fs), workers=w, progress=False)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                check = time_checks(clips, 16000, w)
                assert report.written == len(clips)
                row = {"feature_set": fs, "dim": audio.FEATURE_SETS[fs], "workers": w, "clips": len(clips),
                       "audio_seconds": round(total_audio, 2), "wall_seconds": round(wall, 3),
                       "clips_per_second": round(len(clips) / wall, 2), "x_real_time": round(total_audio / wall, 1),
                       "check_pass_share": round(check / wall, 3), "cpu_seconds": round(cpu, 3),
                       "clips_per_cpu_second": round(len(clips) / cpu, 2), "load_before_after": [load0, _load()]}
                rows.append(row)
                print(f"{fs:<13} {row['dim']:>5}-d  workers {w}:  {row['clips_per_second']:7.1f} clips/s  "
                      f"{row['x_real_time']:6.1f}x real time  (check pass {100 * row['check_pass_share']:.0f}% of it)  "
                      f"{row['clips_per_cpu_second']:6.1f} clips/CPU-s  load {load0:.1f} -> {_load():.1f}")
    if args.out:
        from importlib.metadata import version

        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine(),
                "cpus": os.cpu_count(), "opensmile": version("opensmile"), "args": vars(args)}
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
