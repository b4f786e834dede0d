#!/usr/bin/env python
"""Per-epoch speed against the official GCNet code on CMU-MOSI (issue 13).

    python benchmarks/gcnet_official.py --official /work/ext/gcnet-official \
        --official-python /work/ext/venv/bin/python --epochs 3 --threads 1 --rounds 2 --out f.json

Three implementations train on the same CMU-MOSI data, modalities and split, one after the
other in one invocation, each in a fresh subprocess with the same torch thread count:
- `official`: zeroQiaoba/GCNet's `gcnet/train_gcnet.py` (its folder is NOT part of this
  repository; point `--official` at a copy, see benchmarks/README.md), run with its own
  interpreter (`--official-python`, a venv with torch_geometric). The script copies the folder
  to a temporary directory and applies `PATCHES` there: small text substitutions, each with
  its reason, which fail loudly when the text they expect is not found exactly;
- `gcnet`: our GCNet baseline through our engine (`model.method=gcnet`, its own recipe);
- `its`: ITEACNet with the Inverted Teacher-Student framework (`model.method=iteacnet`,
  `model.framework=its`, its own recipe).

Same data for all three: the label pickle's standard split (52 train / 10 valid / 31 test
videos) and the feature folders in `FEATURES`; training at one constant missing rate
(`MASK_RATE`, the official `--mask-type constant-0.2`; ours: IME at rate 0.2); batches of 32
videos (the official default; both our recipes use 32 conversations too).

What an "epoch" is, for all three alike: `train_s` is the training pass (batching, mask
drawing, forward, losses, backward, optimizer step over the 52 training videos); `epoch_s`
adds what the official loop does in every epoch, prediction and metrics on the validation
and test videos at the training mask rate (ours: `engine.score_masks` on each split with one
fixed mask at that rate). Official figures come from timers that patch T1 puts into its epoch
loop (`time.perf_counter` around the same calls); ours from the same timers around
`engine.train_one_epoch` and `engine.score_masks`. Data loading and model construction are
outside both. The first epoch of every run is a warm-up and is not counted; the figure is
the median over the remaining epochs of all rounds. Rounds alternate the order (official,
gcnet, its; then its, gcnet, official; ...) so that a load change on a shared machine weighs
on all three alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "CMUMOSI"
OFFICIAL_COMMIT = "c2dfd3b7ab6322a47f39e568692374457c43af12"  # zeroQiaoba/GCNet, the commit the patches were written for
FEATURES = {"text": "text-minilm-384", "audio": "audio-opensmile-73", "visual": "video-3dcnn-100"}
MASK_RATE = 0.2  # GCNet README.md:93 --mask-type='constant-0.2'
BATCH_SIZE = 32  # gcnet/train_gcnet.py --batch-size default; our gcnet and iteacnet recipes: 32 conversations
IMPLEMENTATIONS = ("official", "gcnet", "its")
OUR_METHODS = {"gcnet": ["model.method=gcnet"], "its": ["model.method=iteacnet", "model.framework=its"]}
BENCH_LINE = re.compile(r"^\[bench\] epoch (\d+) train_s ([0-9.]+) epoch_s ([0-9.]+) threads (\d+)$")
OFFICIAL_DATA_DIR = "/share/home/lianzheng/gcnet-master/dataset/CMUMOSI"  # config.py, the authors' machine


# ---------------------------------------------------------------------------- patches
@dataclass(frozen=True)
class Patch:
    """Replace `old` by `new` in `path` (relative to the official folder), exactly `count` times."""

    path: str
    old: str
    new: str
    reason: str
    count: int = 1


class PatchError(RuntimeError):
    """The official text is not what a patch expects: a different commit, or an edited copy."""


def patches(data_root: Path) -> list[Patch]:
    """The patch list: the least that makes train_gcnet.py run here and report its epoch times."""
    loop = "            "  # the body of train_gcnet.py's epoch loop
    return [
        Patch("config.py", repr(OFFICIAL_DATA_DIR), repr(str(data_root)),
              "P1 data path: config.DATA_DIR['CMUMOSI'] is the authors' folder; point it at our data"),
        Patch("gcnet/train_gcnet.py", ".astype(np.int)", ".astype(int)",
              "N1 numpy alias: np.int was removed in NumPy 1.24 (random_mask uses it 4 times)", count=4),
        Patch("gcnet/train_gcnet.py", "    args = parser.parse_args()\n",
              "    args = parser.parse_args()\n"
              "    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)  # [bench] S1\n",
              "S1 seeding: --seed is parsed but seeds nothing (masks come from numpy, init and order from torch)"),
        Patch("gcnet/train_gcnet.py",
              f"{loop}train_acc, train_fscore, train_names, train_loss, trainsave = train_or_eval_model(",
              f"{loop}_bench_t0 = time.perf_counter()  # [bench] T1\n"
              f"{loop}train_acc, train_fscore, train_names, train_loss, trainsave = train_or_eval_model(",
              "T1 timing: a timer before the epoch's training pass"),
        Patch("gcnet/train_gcnet.py",
              f"{loop}val_acc, val_fscore, val_names, val_loss, valsave = train_or_eval_model(",
              f"{loop}_bench_t1 = time.perf_counter()  # [bench] T1\n"
              f"{loop}val_acc, val_fscore, val_names, val_loss, valsave = train_or_eval_model(",
              "T1 timing: a timer between the training pass and the validation/test passes"),
        Patch("gcnet/train_gcnet.py",
              "train_loss1:{train_loss[1]}; train_loss2:{train_loss[2]}')\n",
              "train_loss1:{train_loss[1]}; train_loss2:{train_loss[2]}')\n"
              f"{loop}print(f'[bench] epoch {{epoch+1}} train_s {{_bench_t1-_bench_t0:.6f}} "
              "epoch_s {time.perf_counter()-_bench_t0:.6f} threads {torch.get_num_threads()}', flush=True)  # [bench] T1\n",
              "T1 timing: print the epoch's training and whole-epoch seconds after its own epoch line"),
        Patch("gcnet/train_gcnet.py",
              "        print (f'Step3: saving and testing on the {ii+1} folder')\n",
              "        print (f'Step3: saving and testing on the {ii+1} folder')\n"
              "        sys.exit(0)  # [bench] E1\n",
              "E1 stop after the timed epochs: the saving step asserts --epochs >= 60 and writes a results file"),
    ]


def apply_patches(src: Path, dst: Path, patch_list: list[Patch]) -> None:
    """Copy the official folder `src` to `dst` and apply `patch_list` to the copy."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".git", "saved"))
    for p in patch_list:
        f = dst / p.path
        if not f.is_file():
            raise PatchError(f"{p.path} is missing from {src} (expected zeroQiaoba/GCNet at {OFFICIAL_COMMIT[:7]})")
        text = f.read_text(encoding="utf-8")
        found = text.count(p.old)
        if found != p.count:
            raise PatchError(f"{p.path}: expected {p.count} occurrence(s) of {p.old[:60]!r}, found {found} "
                             f"(patch {p.reason.split(':')[0]}; written for zeroQiaoba/GCNet {OFFICIAL_COMMIT[:7]})")
        f.write_text(text.replace(p.old, p.new), encoding="utf-8")


def official_args(epochs: int, seed: int) -> list[str]:
    """README.md:93's command line (IEMOCAPSix there), on CMUMOSI, our feature folders, CPU."""
    return ["-u", "train_gcnet.py", f"--epochs={epochs}", "--lr=0.001", "--hidden=200",
            f"--mask-type=constant-{MASK_RATE}", "--windowp=2", "--windowf=2", "--base-model=LSTM", "--loss-recon",
            "--dataset=CMUMOSI", f"--audio-feature={FEATURES['audio']}", f"--text-feature={FEATURES['text']}",
            f"--video-feature={FEATURES['visual']}", f"--seed={seed}", f"--batch-size={BATCH_SIZE}", "--no-cuda"]


def parse_official(stdout: str) -> dict[str, Any]:
    """Epoch times from the T1 lines, the parameter count from the script's own print."""
    epochs = []
    for line in stdout.splitlines():
        m = BENCH_LINE.match(line.strip())
        if m:
            epochs.append({"epoch": int(m[1]), "train_s": float(m[2]), "epoch_s": float(m[3]), "threads": int(m[4])})
    params = re.search(r"Model have (\d+) paramerters in total", stdout)
    return {"epochs": epochs, "parameters": int(params[1]) if params else None}


def thread_env(threads: int) -> dict[str, str]:
    # OpenMP/MKL read these at start: the official script sets no thread count of its own.
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_official(folder: Path, python: str, epochs: int, seed: int, threads: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([python, *official_args(epochs, seed)], cwd=folder / "gcnet", capture_output=True,
                         text=True, env=thread_env(threads))
    res = parse_official(out.stdout)
    if out.returncode != 0 or len(res["epochs"]) != epochs:
        raise SystemExit(f"official run failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    return res


# ---------------------------------------------------------------------------- ours
def our_overrides(impl: str, data_root: Path, epochs: int, seed: int) -> list[str]:
    return [*OUR_METHODS[impl], f"data.root={data_root}", f"data.text_feature={FEATURES['text']}",
            f"data.audio_feature={FEATURES['audio']}", f"data.visual_feature={FEATURES['visual']}",
            "data.split=standard", "train.protocol=ime", f"train.rate={MASK_RATE}", f"train.epochs={epochs}",
            f"train.seed={seed}", "train.device=cpu", "train.progress=false"]


def run_ours_here(impl: str, data_root: Path, epochs: int, seed: int, threads: int) -> dict[str, Any]:
    """One run of our `impl`, in this process: the engine's own epoch functions, timed."""
    import torch

    from iteacnet.cli import load_config
    from iteacnet.data.loading import load_corpus
    from iteacnet.training import engine

    torch.set_num_threads(threads)
    cfg = load_config("paper-mosi", None, our_overrides(impl, data_root, epochs, seed))  # the method's own recipe
    data = engine.prepare(load_corpus(cfg.data), cfg)
    method = engine.init_method(cfg, data.spec)
    opt = engine.make_optimizer(method, cfg.train)
    gen = engine.batch_generator(cfg)
    tr = cfg.train
    masks = {s: engine.eval_masks(data, s, (tr.rate,), cfg.eval.mask_seed) for s in ("valid", "test")}
    rows = []
    for epoch in range(epochs):
        engine.set_epoch_lr(opt, tr, epoch)
        t0 = time.perf_counter()
        engine.train_one_epoch(method, opt, data, tr, gen)
        t1 = time.perf_counter()
        for split, m in masks.items():  # as the official loop: validation and test every epoch
            engine.score_masks(method, data, split, m, tr.batch_size, tr.device)
        rows.append({"epoch": epoch + 1, "train_s": round(t1 - t0, 6), "epoch_s": round(time.perf_counter() - t0, 6),
                     "threads": torch.get_num_threads()})
    return {
        "epochs": rows, "parameters": sum(p.numel() for p in method.parameters()),
        "config": {"method": cfg.model.method, "framework": cfg.model.framework, "recipe": tr.recipe,
                   "batch_size": tr.batch_size, "hidden": cfg.model.hidden, "optimizer": tr.optimizer, "lr": tr.lr},
        "utterances": {s: int(len(data.corpus.rows_of(getattr(data.split, s)))) for s in ("train", "valid", "test")},
        "dialogues": {s: len(getattr(data.split, s)) for s in ("train", "valid", "test")},
    }


def run_ours(impl: str, data_root: Path, epochs: int, seed: int, threads: int) -> dict[str, Any]:
    """`run_ours_here` in a fresh subprocess, as the official script gets one."""
    t0 = time.perf_counter()
    env = {**thread_env(threads), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, __file__, "--one", impl, "--data-root", str(data_root), "--epochs", str(epochs),
           "--seed", str(seed), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not line:
        raise SystemExit(f"{impl} run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    res: dict[str, Any] = json.loads(line[0][len("RESULT "):])
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    return res


# ---------------------------------------------------------------------------- summary
def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Median seconds per epoch (each run's first epoch dropped as warm-up) and the speed-up
    against the official script: official seconds / implementation seconds (> 1: faster)."""
    out: dict[str, dict[str, Any]] = {}
    for impl, rs in runs.items():
        counted = [e for r in rs for e in r["epochs"][1:]] or [e for r in rs for e in r["epochs"]]
        out[impl] = {k: statistics.median(e[k] for e in counted) for k in ("train_s", "epoch_s")}
        out[impl]["epochs_counted"] = len(counted)
        out[impl]["parameters"] = rs[0]["parameters"]
    if "official" in out:
        for impl in out:
            for k in ("train_s", "epoch_s"):
                out[impl][f"speedup_{k}"] = out["official"][k] / out[impl][k]
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'implementation':<15}{'params':>10}{'train s/epoch':>15}{'x official':>12}"
             f"{'epoch s (+val,test)':>21}{'x official':>12}"]
    for impl, s in summary.items():
        lines.append(f"{impl:<15}{s['parameters']:>10,}{s['train_s']:>15.3f}{s.get('speedup_train_s', float('nan')):>11.2f}x"
                     f"{s['epoch_s']:>21.3f}{s.get('speedup_epoch_s', float('nan')):>11.2f}x")
    return "\n".join(lines)


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def official_torch(python: str) -> str:
    out = subprocess.run([python, "-c", "import torch, torch_geometric, numpy, pandas, sklearn; print(torch.__version__, "
                          "torch_geometric.__version__, numpy.__version__, pandas.__version__, sklearn.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()[-300:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, help="folder holding zeroQiaoba/GCNet's config.py and gcnet/ (not in this repo)")
    ap.add_argument("--official-python", default=sys.executable, help="interpreter with torch_geometric for the official script")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="CMU-MOSI in the GCNet layout")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the three, in alternating order")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for all three (1 on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(IMPLEMENTATIONS), help="subset of official,gcnet,its")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--one", choices=tuple(OUR_METHODS), help=argparse.SUPPRESS)  # a worker subprocess
    args = ap.parse_args(argv)
    if args.one:
        res = run_ours_here(args.one, args.data_root.resolve(), args.epochs, args.seed, args.threads)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    impls = [i for i in args.only.split(",") if i]
    if any(i not in IMPLEMENTATIONS for i in impls):
        ap.error(f"--only takes names among {','.join(IMPLEMENTATIONS)}")
    data_root = args.data_root.resolve()
    if not (data_root / "CMUMOSI_features_raw_2way.pkl").is_file():
        ap.error(f"no CMU-MOSI label file under {data_root} (--data-root)")
    if "official" in impls and (args.official is None or not (args.official / "gcnet" / "train_gcnet.py").is_file()):
        ap.error("--official must point at a copy of zeroQiaoba/GCNet (config.py, gcnet/train_gcnet.py); see benchmarks/README.md")
    runs: dict[str, list[dict[str, Any]]] = {i: [] for i in impls}
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gcnet-official-") as tmp:
        folder = Path(tmp) / "gcnet-official"
        if "official" in impls:
            apply_patches(args.official, folder, patches(data_root))
        schedule = [i for r in range(args.rounds) for i in (impls if r % 2 == 0 else impls[::-1])]
        for impl in schedule:
            t_load = round(os.getloadavg()[0], 2)
            if impl == "official":
                res = run_official(folder, args.official_python, args.epochs, args.seed, args.threads)
            else:
                res = run_ours(impl, data_root, args.epochs, args.seed, args.threads)
            res["loadavg_1min_before"] = t_load
            runs[impl].append(res)
            ep = ", ".join(f"{e['train_s']:.3f}/{e['epoch_s']:.3f}" for e in res["epochs"])
            print(f"{impl:<9} train/epoch s per epoch: {ep}   (run {res['wall_s']} s, load {t_load})", flush=True)
    summary = summarize(runs)
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "official_commit": OFFICIAL_COMMIT, "official_env": official_torch(args.official_python) if "official" in impls else None,
        "features": FEATURES, "mask_rate": MASK_RATE, "batch_size": BATCH_SIZE, "epochs": args.epochs,
        "rounds": args.rounds, "threads": args.threads, "cpus": os.cpu_count(),
        "loadavg_start": load, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "patches": [p.reason for p in patches(data_root)] if "official" in impls else [],
        "ratio": "official seconds / implementation seconds (> 1: faster than the official script)",
    }
    print(f"\nper-epoch speed on CMU-MOSI - {meta['date']} - commit {meta['commit']} - {args.threads} thread(s), "
          f"median of epochs 2..{args.epochs} over {args.rounds} round(s); load {load} -> {meta['loadavg_end']}")
    print(table(summary))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
