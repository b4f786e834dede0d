#!/usr/bin/env python
"""Speed and memory of ITEACNet on IEMOCAP-six-class shapes, against a naive reference.

    python benchmarks/speed.py [--quick] [--device cpu|cuda] [--epochs-warmup 1] [--out FILE.json]

What it measures (issue 3, "Speed and memory"; METHOD §2 and §8 defaults):
- utterances/second of one Inverted Teacher-Student training epoch through the engine
  (`engine.train_one_epoch`: bucketed batches, `sample_mask`, `TeacherStudent.training_loss`,
  AdamW step) and of student inference (`engine.predict_split` on the test dialogues);
- peak memory of each, measured in a fresh subprocess per configuration (CPU: resident-set
  high-water mark above the process's level after setup; CUDA: `max_memory_allocated`);
- the same for the naive reference, in the same run: ECCE that materialises the span features
  C_ij in R^D as a (B, T, T, D) tensor before Linear(D -> H) (O(T²·D) memory instead of
  O(T²·H)), and every batch padded to the longest dialogue of the corpus instead of bucketing;
- forward + backward of the ITS training loss on one synthetic 1,000-utterance conversation
  on CPU, PASS/FAIL against 2 GiB of peak memory.

Timings of the optimized and naive paths are interleaved (ABBA order over rounds) so that a
machine shared with other work slows both alike; the ratios are the figures to read.
The corpus is random float32 features with the real IEMOCAP dialogue lengths (from the label
file) and GCNet's feature sizes (text 1024, audio 512, visual 1024): speed does not depend on
the values, and random features are already standardized, so no standardization step is run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iteacnet.config import ModelConfig, TrainConfig
from iteacnet.data.batching import Batch, bucketed_batches, collate
from iteacnet.data.corpus import CORPUS_SPECS, Corpus
from iteacnet.data.safe_pickle import load_label_file
from iteacnet.data.splits import Split, iemocap_session
from iteacnet.masking import sample_mask
from iteacnet.models.base import ModelSpec
from iteacnet.models.ecce import ECCE, span_means
from iteacnet.training import engine
from iteacnet.training.frameworks import TeacherStudent, build_method

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LABEL_FILE = REPO.parent / "shared" / "data" / "IEMOCAP" / "IEMOCAP_features_raw_6way.pkl"
MODALITIES = ("text", "audio", "visual")
LIMIT_MB = 2048.0  # "under 2 GB": 2 GiB
MB = 1024.0 * 1024.0


# ---------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    """Everything that differs between a full and a `--quick` run."""

    dims: tuple[int, int, int] = (1024, 512, 1024)  # text, audio, visual (GCNet's features)
    hidden: int = 128
    heads: int = 8
    batch_size: int = 32
    train_dialogues: int = 0  # 0: all of sessions 1–4; else the first n (quick)
    test_dialogues: int = 0  # 0: all of session 5
    len_divisor: int = 1  # lengths ceil(L / len_divisor): same spread, shorter (quick)
    long_len: int = 1000  # the long-conversation check
    repeats: int = 3  # timed rounds per path
    infer_passes: int = 3  # inference passes per round: one pass is short, so noisy


FULL = Sizes()
QUICK = Sizes(
    dims=(48, 24, 48), hidden=32, heads=4, batch_size=4,
    train_dialogues=8, test_dialogues=3, len_divisor=5, long_len=48, repeats=1,
    infer_passes=1,
)


@dataclass(frozen=True)
class Options:
    """What a worker subprocess needs to rebuild the main process's setup exactly."""

    sizes: Sizes
    device: str
    label_file: str
    seed: int
    allow_synthetic_lengths: bool
    threads: int = 0  # torch intra-op threads; 0 = torch's default


def apply_threads(opts: Options) -> None:
    # On a busy machine, OpenMP threads that spin-wait for a core can slow torch ~10x: pin them.
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)


def options_to_json(o: Options) -> str:
    return json.dumps(dataclasses.asdict(o))


def options_from_json(text: str) -> Options:
    d = json.loads(text)
    s = d.pop("sizes")
    s["dims"] = tuple(s["dims"])
    return Options(sizes=Sizes(**s), **d)


# ---------------------------------------------------------------------------- corpus
def dialogue_lengths(opts: Options) -> tuple[list[str], list[int], str]:
    """Dialogue ids and lengths of IEMOCAP (six classes) from its label file (videoIDs)."""
    path = Path(opts.label_file)
    if path.is_file():
        video_ids = load_label_file(path)[0]  # GCNet layout: [videoIDs, videoLabels, ...]
        ids = sorted(video_ids)
        return ids, [len(video_ids[d]) for d in ids], f"label file {path}"
    if not opts.allow_synthetic_lengths:
        sys.exit(
            f"error: the IEMOCAP label file {path} is missing; the benchmark uses its real "
            "dialogue lengths. Pass --label-file PATH, or --allow-synthetic-lengths to use "
            "made-up lengths (figures then do not describe IEMOCAP)."
        )
    # Same count and spread as IEMOCAP (151 dialogues, 120 in sessions 1–4, lengths 8–110).
    rng = np.random.default_rng(0)
    ids = [f"Ses0{1 + i * 4 // 120}F_synth{i:03d}" for i in range(120)]
    ids += [f"Ses05F_synth{i:03d}" for i in range(31)]
    lengths = np.clip(rng.normal(49, 20, len(ids)).round(), 8, 110).astype(int).tolist()
    print("!" * 78 + "\n!! NOTE: label file absent -> SYNTHETIC dialogue lengths, not IEMOCAP's\n"
          + "!" * 78, file=sys.stderr)
    return ids, lengths, "SYNTHETIC lengths (label file absent)"


def make_corpus(ids: Sequence[str], lengths: Sequence[int], dims: Sequence[int], seed: int) -> Corpus:
    """Random float32 features, 6 classes, two speakers, in the package's Corpus."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    # float32 straight from the generator: no float64 temporary to inflate the setup peak.
    feats = {m: rng.standard_normal((n, d), dtype=np.float32) for m, d in zip(MODALITIES, dims)}
    return Corpus(
        name="iemocap6", task="classification", class_names=CORPUS_SPECS["iemocap6"]["classes"],
        dialogue_ids=list(ids), offsets=offsets,
        utterance_ids=[f"{d}_{k}" for d, L in zip(ids, lengths) for k in range(L)],
        speakers=rng.integers(0, 2, n).astype(np.int64), speaker_names=("F", "M"),
        labels=rng.integers(0, 6, n).astype(np.int64), features=feats,
    )


@dataclass
class Setup:
    data: engine.PreparedData
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    lengths_source: str
    max_len: int  # longest dialogue of the corpus: the naive reference pads to it


def build_setup(opts: Options) -> Setup:
    s = opts.sizes
    ids, lengths, source = dialogue_lengths(opts)
    session = [iemocap_session(d) for d in ids]
    train = [i for i, x in enumerate(session) if x <= 4]
    test = [i for i, x in enumerate(session) if x == 5]
    if s.train_dialogues:
        train = train[: s.train_dialogues]
    if s.test_dialogues:
        test = test[: s.test_dialogues]
    keep = train + test
    lens = [-(-lengths[i] // s.len_divisor) for i in keep]
    corpus = make_corpus([ids[i] for i in keep], lens, s.dims, opts.seed)
    n_train = len(train)
    # Validation is unused here; the Split type wants one, so it mirrors test (flagged).
    split = Split(
        train=tuple(range(n_train)), valid=tuple(range(n_train, len(keep))),
        test=tuple(range(n_train, len(keep))), name="bench", selection="gcnet-compatible",
    )
    spec = ModelSpec(dims=tuple(corpus.dims.items()), num_outputs=6, num_speakers=2)
    max_len = int(max(lens))
    # METHOD defaults (its / TF x3 teacher / NAS x4 student); temporal_mlp must cover max_len.
    model_cfg = ModelConfig(hidden=s.hidden, heads=s.heads, max_len=max(128, max_len))
    train_cfg = TrainConfig(batch_size=s.batch_size, device=opts.device, progress=False)
    return Setup(engine.PreparedData(corpus, split, spec, {}), model_cfg, train_cfg, source, max_len)


# ---------------------------------------------------------------------------- naive reference
class NaiveECCE(ECCE):
    """ECCE as Eq. 6 reads: span features C_ij in R^D as a (B, T, T, D) tensor, then W C + b.

    Same parameters (conv, proj) and the same result as ECCE, which projects to H first and
    so never holds more than (B, T, T, H).
    """

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
        if self.proj is None:
            return None
        c = span_means(self.local_context(h, valid), valid)  # (B, T, T, D): the O(T²·D) tensor
        return self.to_bias(self.proj(c), valid)  # W C + b: (B, T, T, H) -> (B, H, T, T)

    @classmethod
    def from_ecce(cls, e: ECCE) -> NaiveECCE:
        assert e.proj is not None
        kernel = e.conv.kernel_size[0] if e.conv is not None else 7
        naive = cls(e.proj.in_features, e.heads, kernel, e.max_span, local=e.conv is not None)
        naive.load_state_dict(e.state_dict())  # same weights: outputs must match
        return naive.to(e.proj.weight.device)


def naive_model(method: TeacherStudent) -> TeacherStudent:
    """A copy of `method` (same weights) whose every ECCE is the naive one."""
    naive = copy.deepcopy(method)
    for net in (naive.teacher, naive.student):
        for mod in list(net.ecce.keys()):
            e = net.ecce[mod]
            assert isinstance(e, ECCE)
            net.ecce[mod] = NaiveECCE.from_ecce(e)
    return naive


def padded_iterate(pad_to: int) -> Callable[..., Iterator[Batch]]:
    """The naive batcher: dialogues in (shuffled) order, no bucketing, all padded to `pad_to`."""

    def iterate(
        corpus: Corpus, dialogues: Sequence[int], batch_size: int,
        generator: torch.Generator | None = None,
    ) -> Iterator[Batch]:
        dialogues = list(dialogues)
        order = (
            torch.randperm(len(dialogues), generator=generator).tolist()
            if generator is not None else list(range(len(dialogues)))
        )
        for s in range(0, len(order), batch_size):
            yield collate(corpus, [dialogues[i] for i in order[s : s + batch_size]], pad_to=pad_to)

    return iterate


@contextmanager
def batching(naive: bool, pad_to: int) -> Iterator[None]:
    """Run the engine with the naive batcher: swap the one name it batches through."""
    if not naive:
        yield
        return
    saved = engine.iterate_batches
    engine.iterate_batches = padded_iterate(pad_to)
    try:
        yield
    finally:
        engine.iterate_batches = saved


def padding_fraction(setup: Setup, naive: bool) -> float:
    """Share of batch cells (B x T) that are padding over one training epoch's batches."""
    lengths = setup.data.corpus.lengths()[list(setup.data.split.train)]
    bs = setup.train_cfg.batch_size
    if naive:
        cells = len(lengths) * setup.max_len  # every row is max_len wide
    else:
        groups = bucketed_batches(lengths, bs, torch.Generator().manual_seed(0))
        cells = sum(len(g) * int(lengths[g].max()) for g in groups)
    return 1.0 - float(lengths.sum()) / cells


# ---------------------------------------------------------------------------- the measured work
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Runner:
    """One method (optimized or naive) with its optimizer and training generator."""

    method: TeacherStudent
    opt: torch.optim.Optimizer
    generator: torch.Generator
    naive: bool

    def train_epoch(self, setup: Setup) -> None:
        with batching(self.naive, setup.max_len):
            engine.train_one_epoch(self.method, self.opt, setup.data, setup.train_cfg, self.generator)

    def infer(self, setup: Setup) -> None:
        with batching(self.naive, setup.max_len):
            engine.predict_split(
                self.method, setup.data.corpus, setup.data.split.test, None,
                setup.train_cfg.batch_size, setup.train_cfg.device,
            )


def make_runner(setup: Setup, naive: bool, seed: int) -> Runner:
    torch.manual_seed(seed)  # both paths start from the same weights
    method = build_method(setup.data.spec, setup.model_cfg).to(setup.train_cfg.device)
    assert isinstance(method, TeacherStudent)
    if naive:
        method = naive_model(method)
    opt = engine.make_optimizer(method, setup.train_cfg)
    return Runner(method, opt, torch.Generator().manual_seed(seed), naive)


@torch.no_grad()
def sanity_check(setup: Setup, opt_r: Runner, naive_r: Runner) -> dict[str, float]:
    """The naive reference must compute the same thing: ECCE bias and student logits."""
    corpus, dev = setup.data.corpus, setup.train_cfg.device
    train = list(setup.data.split.train)
    longest = sorted(train, key=lambda i: -int(corpus.lengths()[i]))[: setup.train_cfg.batch_size]
    bucketed = collate(corpus, longest).to(dev)
    padded = collate(corpus, longest, pad_to=setup.max_len).to(dev)
    a, b = copy.deepcopy(opt_r.method).eval(), copy.deepcopy(naive_r.method).eval()
    h = torch.randn(len(longest), bucketed.valid.shape[1], setup.model_cfg.hidden, device=dev)
    e_opt = a.teacher.ecce["text"](h, bucketed.valid)
    e_naive = b.teacher.ecce["text"](h, bucketed.valid)
    d_ecce = float((e_opt - e_naive).abs().max())
    y_opt = a.predict(engine.model_input(bucketed, bucketed.available))
    y_naive = b.predict(engine.model_input(padded, padded.available))
    T = y_opt.shape[1]
    d_logits = float((y_opt[bucketed.valid] - y_naive[:, :T][bucketed.valid]).abs().max())
    torch.testing.assert_close(e_naive, e_opt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y_naive[:, :T][bucketed.valid], y_opt[bucketed.valid], rtol=1e-4, atol=1e-4)
    return {"ecce_bias_max_abs_diff": d_ecce, "student_logits_max_abs_diff": d_logits}


def timed(fn: Callable[[], object], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def measure_throughput(setup: Setup, opts: Options, warmup: int) -> dict[str, Any]:
    """Interleaved timing of both paths in this process: ABBA order, medians, ratios."""
    corpus = setup.data.corpus
    n_train = int(corpus.lengths()[list(setup.data.split.train)].sum())
    n_test = int(corpus.lengths()[list(setup.data.split.test)].sum())
    runners = {"optimized": make_runner(setup, False, opts.seed), "naive": make_runner(setup, True, opts.seed)}
    sanity = sanity_check(setup, runners["optimized"], runners["naive"])
    for _ in range(warmup):  # allocator, thread pools, optimizer state
        for r in runners.values():
            r.train_epoch(setup)
            r.infer(setup)
    secs: dict[str, dict[str, list[float]]] = {k: {"train": [], "infer": []} for k in runners}
    passes = opts.sizes.infer_passes
    for rnd in range(opts.sizes.repeats):
        order = ["optimized", "naive"] if rnd % 2 == 0 else ["naive", "optimized"]
        for name in order:
            r = runners[name]

            def infer(r: Runner = r) -> None:
                for _ in range(passes):
                    r.infer(setup)

            secs[name]["train"].append(timed(partial(r.train_epoch, setup), opts.device))
            secs[name]["infer"].append(timed(infer, opts.device) / passes)
        print(f"  round {rnd + 1}/{opts.sizes.repeats}: train s/epoch "
              f"opt {secs['optimized']['train'][-1]:.2f} naive {secs['naive']['train'][-1]:.2f}",
              file=sys.stderr)

    def figures(phase: str, n: int) -> dict[str, Any]:
        ups = {k: [n / t for t in secs[k][phase]] for k in runners}
        out: dict[str, Any] = {k: statistics.median(v) for k, v in ups.items()}
        out["speedup"] = out["optimized"] / out["naive"]
        out["speedup_per_round"] = [o / v for o, v in zip(ups["optimized"], ups["naive"])]
        out["seconds"] = {k: secs[k][phase] for k in runners}
        out["utterances"] = n
        return out

    return {
        "sanity": sanity,
        "train_utt_per_s": figures("train", n_train),
        "inference_utt_per_s": figures("infer", n_test),
    }


# ---------------------------------------------------------------------------- memory probes
def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / MB if sys.platform == "darwin" else r / 1024.0  # bytes on macOS, KiB on Linux


class MemoryProbe:
    """Peak memory of what runs between start() and stop(), above the level at start().

    CPU, Linux: reset the RSS high-water mark (write 5 to /proc/self/clear_refs), then
    VmHWM - VmRSS(start). Elsewhere: the ru_maxrss delta, a lower bound when setup peaked
    higher than the work. CUDA: torch.cuda.max_memory_allocated above memory_allocated.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.method = ""
        self.base = 0.0

    def start(self) -> None:
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / MB
            self.method = "torch.cuda.max_memory_allocated - memory_allocated at start"
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            rss = _status_kb("VmRSS")
            assert rss is not None
            self.base = rss / 1024.0
            self.method = "VmHWM after resetting it (/proc/self/clear_refs) - VmRSS at start"
        except (OSError, AssertionError):
            self.base = _maxrss_mb()
            self.method = "ru_maxrss delta (lower bound)"

    def stop(self) -> dict[str, float | str]:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / MB
        elif self.method.startswith("VmHWM"):
            peak = (_status_kb("VmHWM") or 0) / 1024.0
        else:
            peak = _maxrss_mb()
        return {"peak_delta_mb": peak - self.base, "peak_abs_mb": peak, "base_mb": self.base,
                "how": self.method}


# ---------------------------------------------------------------------------- workers
def worker(kind: str, opts: Options) -> dict[str, Any]:
    """One measurement in this (fresh) process: train-*/infer-* per path, or `long`."""
    if kind.startswith("long"):
        return long_conversation(opts)
    phase, path = kind.split("-")
    setup = build_setup(opts)
    runner = make_runner(setup, path == "naive", opts.seed)
    probe = MemoryProbe(opts.device)
    probe.start()
    t = timed(lambda: runner.train_epoch(setup) if phase == "train" else runner.infer(setup), opts.device)
    out: dict[str, Any] = dict(probe.stop())
    out["seconds_single_run"] = t  # not interleaved: for orientation only
    return out


def long_conversation(opts: Options) -> dict[str, Any]:
    """Forward + backward of the ITS training loss on one T-utterance conversation, on CPU."""
    T = opts.sizes.long_len
    corpus = make_corpus(["Ses01F_long"], [T], opts.sizes.dims, opts.seed)
    spec = ModelSpec(dims=tuple(corpus.dims.items()), num_outputs=6, num_speakers=2)
    # temporal_mlp has a (max_len x max_len) weight: it must cover T, so max_len = T here.
    cfg = ModelConfig(hidden=opts.sizes.hidden, heads=opts.sizes.heads, max_len=max(128, T))
    torch.manual_seed(opts.seed)
    method = build_method(spec, cfg)
    assert isinstance(method, TeacherStudent)
    method.train()
    batch = collate(corpus, [0])
    gen = torch.Generator().manual_seed(opts.seed)
    # A mid-range missing rate, so the student's reconstruction loss is active too.
    mask = sample_mask(batch.valid, batch.available.shape[-1], 0.35, gen, batch.available)
    full, masked = engine.model_input(batch, batch.available), engine.model_input(batch, mask)
    probe = MemoryProbe("cpu")
    probe.start()
    t0 = time.perf_counter()
    loss = method.training_loss(full, masked, batch.labels)
    loss.total.backward()
    seconds = time.perf_counter() - t0
    mem = probe.stop()
    peak = float(mem["peak_delta_mb"])
    return {
        **mem, "utterances": T, "seconds": seconds, "limit_mb": LIMIT_MB, "pass": peak < LIMIT_MB,
        "pass_absolute": float(mem["peak_abs_mb"]) < LIMIT_MB, "max_len": cfg.max_len,
        "note": f"ModelConfig.max_len={cfg.max_len} (temporal_mlp's weight must cover T={T}); "
                "pass = peak RSS delta (forward+backward) < 2 GiB; pass_absolute = whole process",
    }


# "long-mmap": the same check with glibc's dynamic mmap threshold pinned. By default glibc
# raises the threshold after a large free, so later ~32 MB (B, H, T, T) buffers come from the
# heap, and what the process keeps of it moves the RSS peak by hundreds of MB between runs
# (+1.2 to +2.1 GB measured); pinned, the RSS follows the tensors (+0.65 to +0.69 GB).
WORKER_ENV: dict[str, dict[str, str]] = {"long-mmap": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}}


def run_workers(kinds: Sequence[str], opts: Options, jobs: int) -> dict[str, dict[str, Any]]:
    """Each kind in its own fresh interpreter; up to `jobs` at a time (memory is per process)."""
    results: dict[str, dict[str, Any]] = {}
    base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pending = list(kinds)
    running: list[tuple[str, subprocess.Popen[str]]] = []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            k = pending.pop(0)
            env = {**base, **WORKER_ENV.get(k, {})}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", k,
                   "--worker-options", options_to_json(opts)]
            running.append((k, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                text=True, env=env)))
        k, p = running.pop(0)
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"memory worker {k!r} failed (exit {p.returncode}):\n{stderr}")
        results[k] = json.loads(stdout.strip().splitlines()[-1])
        print(f"  memory {k}: peak +{results[k]['peak_delta_mb']:.0f} MB", file=sys.stderr)
    return results


# ---------------------------------------------------------------------------- report
def report(res: dict[str, Any]) -> str:
    m, tp, mem, lg = res["meta"], res["throughput"], res["memory"], res["long_conversation"]
    rows = [
        ("train, utterances/s", tp["train_utt_per_s"], "{:.1f}", "speedup"),
        ("inference, utterances/s", tp["inference_utt_per_s"], "{:.1f}", "speedup"),
        ("train, peak memory MB", mem["train"], "{:.0f}", "naive_over_optimized"),
        ("inference, peak memory MB", mem["inference"], "{:.0f}", "naive_over_optimized"),
    ]
    lines = [
        f"ITEACNet speed/memory - {m['date']} - device {m['device']} ({m['torch_threads']} threads)",
        f"corpus: {m['dialogues']} dialogues ({m['train_dialogues']} train / {m['test_dialogues']} test), "
        f"{m['utterances']} utterances, longest {m['max_len']}; lengths from {m['lengths_source']}",
        f"padding share of train batches: bucketed {m['padding_fraction']['optimized']:.1%}, "
        f"padded to {m['max_len']} {m['padding_fraction']['naive']:.1%}",
        "",
        f"{'':28}{'optimized':>12}{'naive':>12}{'ratio':>9}",
    ]
    for label, d, fmt, rk in rows:
        def val(x: Any) -> float:
            return float(x["peak_delta_mb"]) if isinstance(x, dict) else float(x)

        lines.append(f"{label:28}{fmt.format(val(d['optimized'])):>12}{fmt.format(val(d['naive'])):>12}"
                     f"{d[rk]:>8.2f}x")
    lines += [
        "(ratio: speed-up optimized/naive; memory naive/optimized. Memory = peak above the "
        "process's post-setup level, one fresh process each.)",
        "",
        f"{lg['utterances']}-utterance conversation, ITS loss forward+backward on CPU: peak "
        f"+{lg['peak_delta_mb']:.0f} MB (process total {lg['peak_abs_mb']:.0f} MB), "
        f"{lg['seconds']:.1f} s -> {'PASS' if lg['pass'] else 'FAIL'} (< {LIMIT_MB:.0f} MB)",
        f"  {lg['note']}",
        f"  same, glibc mmap threshold pinned to 1 MiB (freed large buffers go back to the OS): "
        f"peak +{res['long_conversation_mmap']['peak_delta_mb']:.0f} MB, {res['long_conversation_mmap']['seconds']:.1f} s",
        f"sanity: naive == optimized (max |diff| ECCE {res['sanity']['ecce_bias_max_abs_diff']:.1e}, "
        f"logits {res['sanity']['student_logits_max_abs_diff']:.1e})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for tests (seconds)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--epochs-warmup", type=int, default=1, help="untimed epochs per path first")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; quick 1)")
    ap.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    ap.add_argument("--label-file", default=str(DEFAULT_LABEL_FILE))
    ap.add_argument("--allow-synthetic-lengths", action="store_true",
                    help="use made-up lengths when the label file is absent (default with --quick)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="memory subprocesses at a time (default 2; quick 5)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's; quick: 1). Use 1 on a shared machine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-options", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:  # a fresh process for one memory measurement: print JSON, nothing else
        wopts = options_from_json(args.worker_options)
        apply_threads(wopts)
        print(json.dumps(worker(args.worker, wopts)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")

    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    threads = args.threads if args.threads is not None else (1 if args.quick else 0)
    opts = Options(sizes, args.device, args.label_file, args.seed,
                   args.allow_synthetic_lengths or args.quick, threads)
    apply_threads(opts)
    setup = build_setup(opts)
    corpus, split = setup.data.corpus, setup.data.split
    lengths = corpus.lengths()
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "quick": args.quick, "sizes": dataclasses.asdict(sizes), "lengths_source": setup.lengths_source,
        "dialogues": corpus.num_dialogues, "utterances": corpus.num_utterances,
        "train_dialogues": len(split.train), "test_dialogues": len(split.test),
        "max_len": setup.max_len, "epochs_warmup": args.epochs_warmup,
        "model": {"hidden": sizes.hidden, "heads": sizes.heads, "teacher": "TF x3", "student": "NAS x4",
                  "batch_size": sizes.batch_size, "max_len": setup.model_cfg.max_len},
        "padding_fraction": {"optimized": padding_fraction(setup, False),
                             "naive": padding_fraction(setup, True)},
        "median_length": float(np.median(lengths)),
    }
    print(f"timing {meta['train_dialogues']}+{meta['test_dialogues']} dialogues, optimized and "
          f"naive interleaved ({sizes.repeats} rounds after {args.epochs_warmup} warm-up) ...",
          file=sys.stderr)
    throughput = measure_throughput(setup, opts, args.epochs_warmup)
    print("memory, one fresh process per configuration ...", file=sys.stderr)
    jobs = args.jobs if args.jobs is not None else (5 if args.quick else 2)
    w = run_workers(["train-optimized", "train-naive", "infer-optimized", "infer-naive", "long", "long-mmap"],
                    opts, jobs)
    memory = {"train": _memory_pair(w, "train"), "inference": _memory_pair(w, "infer")}
    res = {
        "meta": meta, "sanity": throughput.pop("sanity"), "throughput": throughput,
        "memory": memory, "long_conversation": w["long"], "long_conversation_mmap": w["long-mmap"],
    }
    print(report(res))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _memory_pair(w: dict[str, dict[str, Any]], phase: str) -> dict[str, Any]:
    o, n = w[f"{phase}-optimized"], w[f"{phase}-naive"]
    return {"optimized": o, "naive": n,
            "naive_over_optimized": float(n["peak_delta_mb"]) / max(float(o["peak_delta_mb"]), 1e-9)}


if __name__ == "__main__":
    raise SystemExit(main())
