"""Command-line interface: parse, build an ExperimentConfig, call data/training/evaluation.

    iteacnet demo                        ITS on the synthetic corpus, UME table and plots
    iteacnet train --preset P [--set section.field=value ...]
    iteacnet evaluate --checkpoint DIR
    iteacnet data inspect|cache --corpus C --root DIR [--text F --audio F --visual F]
    iteacnet extract text --out DIR (--label-file PKL | --transcripts FILE)
    iteacnet extract audio --out DIR (--folder DIR | --manifest FILE) [--feature-set S]
    iteacnet predict --checkpoint DIR --input conversation.jsonl [--output out.json|out.csv]
    iteacnet list                        methods, mixers, frameworks, presets
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iteacnet.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    SyntheticConfig,
    TrainConfig,
    merge_dicts,
    parse_override,
    replace,
)

if TYPE_CHECKING:  # the CLI imports torch-heavy modules lazily
    from iteacnet.training.engine import PreparedData

PRESET_DIRS = (Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs")


# ---------------------------------------------------------------------------- config
def find_preset(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    for d in PRESET_DIRS:
        if (d / f"{name}.json").is_file():
            return d / f"{name}.json"
    raise SystemExit(f"iteacnet: no preset {name!r}; presets: {', '.join(list_presets()) or '(none found)'}")


def list_presets() -> list[str]:
    seen: list[str] = []
    for d in PRESET_DIRS:
        if d.is_dir():
            seen.extend(p.stem for p in sorted(d.glob("*.json")) if p.stem not in seen)
    return seen


def load_config(preset: str | None, config: str | None, overrides: list[str]) -> ExperimentConfig:
    d = ExperimentConfig().to_dict()
    for src in (find_preset(preset) if preset else None, Path(config) if config else None):
        if src is not None:
            if not src.is_file():
                raise SystemExit(f"iteacnet: no config file at {src}")
            body = json.loads(src.read_text())
            body.pop("grid", None)  # benchmark presets carry a grid section
            d = merge_dicts(d, body)
    try:
        cfg = ExperimentConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"iteacnet: bad configuration: {e}") from None
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """`--set SECTION.FIELD=VALUE` overrides, in order; a bad one ends with a message."""
    try:
        for o in overrides:
            cfg = parse_override(cfg, o)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"iteacnet: bad configuration: {e}") from None
    return cfg


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    ch: dict[str, Any] = {}
    for flag, key in (("corpus", "corpus"), ("root", "root"), ("text", "text_feature"), ("audio", "audio_feature"),
                      ("visual", "visual_feature"), ("split", "split"), ("fold", "fold"), ("selection", "selection")):
        v = getattr(args, flag, None)
        if v is not None:
            ch[f"data.{key}"] = v
    if getattr(args, "allow_missing_files", False):
        ch["data.allow_missing_files"] = True
    return ch


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--corpus", help="synthetic | iemocap4 | iemocap6 | cmumosi | cmumosei")
    g.add_argument("--root", help="GCNet-layout folder holding the label file and features/")
    g.add_argument("--text", help="text feature folder under ROOT/features ('' to drop)")
    g.add_argument("--audio", help="audio feature folder ('' to drop)")
    g.add_argument("--visual", help="visual feature folder ('' to drop)")
    g.add_argument("--split", help="standard | poria (MOSI) | loso (IEMOCAP)")
    g.add_argument("--fold", type=int, help="IEMOCAP fold 0..4 (tests session fold+1)")
    g.add_argument("--selection", choices=["validation", "gcnet-compatible"])
    g.add_argument("--allow-missing-files", action="store_true", help="treat missing feature files as missing modalities")


# ---------------------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    from iteacnet.models.mixers import MIXERS
    from iteacnet.training.frameworks import FRAMEWORKS, METHODS

    print("methods:    " + ", ".join(METHODS.names()))
    print("frameworks: " + ", ".join(FRAMEWORKS))
    print("mixers:     " + ", ".join(MIXERS.names()))
    print("presets:    " + ", ".join(list_presets()))
    from iteacnet.benchmark.executors import EXECUTORS
    from iteacnet.benchmark.variants import VARIANTS

    print("variants:   " + ", ".join(VARIANTS.names()))
    print("executors:  " + ", ".join(EXECUTORS.names()))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from iteacnet.data.inspect import format_inspect, inspect_corpus
    from iteacnet.data.loading import build_cache, load_corpus
    from iteacnet.evaluation.splits import make_split

    cfg = load_config(args.preset, args.config, args.set)
    cfg = replace(cfg, **_data_overrides(args))
    if args.action == "cache":
        path = build_cache(cfg.data)
        print(f"cache written: {path}")
        return 0
    corpus = load_corpus(cfg.data, progress=True)
    split = make_split(corpus, cfg.data)
    splits = {"train": list(split.train), "valid": list(split.valid), "test": list(split.test)}
    info = inspect_corpus(corpus, splits)
    info["split"] = f"{split.name} ({split.note})" if split.note else split.name
    print(format_inspect(info))
    return 0


def _run_one(cfg: ExperimentConfig, data: PreparedData, out: Path, protocol: str, router_plot: bool = True) -> list[dict[str, Any]]:
    """Train + evaluate one seed of `cfg` on `data` under `protocol`, writing under `out`."""
    from iteacnet.evaluation.protocols import router_usage, run_ime, run_ume
    from iteacnet.evaluation.reports import plot_router

    out.mkdir(parents=True, exist_ok=True)
    cfg.to_json(out / "config.json")
    if protocol == "ime":
        return run_ime(cfg, data, out)
    rows, method = run_ume(cfg, data, out)
    if router_plot:
        usage = router_usage(method, data, cfg)
        if usage:
            plot_router(usage, cfg.model.mixers, out / "router.png", title=f"{cfg.name}: mixer weights (test, rate 0.0)")
            (out / "router.json").write_text(json.dumps({m: u.tolist() for m, u in usage.items()}, indent=1))
    return rows


def train_seeds(cfg: ExperimentConfig, out: Path, protocol: str, seeds: list[int]) -> list[dict[str, Any]]:
    from iteacnet.data.loading import load_corpus
    from iteacnet.evaluation.reports import write_report
    from iteacnet.training.engine import prepare

    data = prepare(load_corpus(cfg.data, progress=cfg.train.progress), cfg)  # the seed changes no split
    if data.split.selection == "gcnet-compatible":
        print(f"WARNING: {data.split.note}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        c = replace(cfg, **{"train.seed": seed})
        rows.extend(_run_one(c, data, out / f"seed{seed}", protocol))
    cfg.to_json(out / "config.json")
    md = write_report(rows, out, title=f"{cfg.name} ({protocol.upper()})")
    print(md.read_text())
    print(f"results: {out / 'results.csv'}  {out / 'results.json'}  {md}  {out / 'waf_vs_rate.png'}")
    return rows


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"iteacnet: --seeds takes comma-separated integers, got {text!r}") from None


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, args.config, args.set)
    cfg = replace(cfg, **_data_overrides(args))
    if args.epochs is not None:
        cfg = replace(cfg, **{"train.epochs": args.epochs})
    out = Path(args.out or f"runs/{cfg.name}")
    seeds = _seeds(args.seeds) if args.seeds else [cfg.train.seed]
    if args.distributed:  # one rank of a torchrun job (training/distributed.py)
        from iteacnet.training.distributed import TORCHRUN_HINT, train_distributed, under_torchrun

        if not under_torchrun():
            raise SystemExit(f"iteacnet train --distributed: {TORCHRUN_HINT}")
        train_distributed(cfg, out, args.protocol or cfg.train.protocol, seeds)
        return 0
    train_seeds(cfg, out, args.protocol or cfg.train.protocol, seeds)
    return 0


def demo_config(epochs: int = 40) -> ExperimentConfig:
    """ITS (TF teacher, NAS student) on the synthetic corpus, small enough for a laptop CPU."""
    return ExperimentConfig(
        name="demo-synthetic-its",
        data=DataConfig(corpus="synthetic", synthetic=SyntheticConfig()),
        model=ModelConfig(hidden=64, heads=4, max_len=32),
        train=TrainConfig(epochs=epochs, batch_size=16, seed=0),
    )


def cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cfg = apply_overrides(demo_config(args.epochs), args.set)
    print("iteacnet demo: ITS (TF teacher, NAS student) on the SYNTHETIC corpus (generated, not real data)")
    out = Path(args.out)
    train_seeds(cfg, out, "ume", [cfg.train.seed])
    print(f"router plot: {out / 'seed0' / 'router.png'}   checkpoint: {out / 'seed0'}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from iteacnet.data.loading import load_corpus
    from iteacnet.evaluation.protocols import result_rows, score_test
    from iteacnet.evaluation.reports import write_report
    from iteacnet.training.checkpoint import load_weights, read_checkpoint_files
    from iteacnet.training.engine import prepare
    from iteacnet.training.frameworks import build_method

    ckpt = Path(args.checkpoint)
    cfg, _meta = read_checkpoint_files(ckpt)
    cfg = apply_overrides(cfg, args.set)
    data = prepare(load_corpus(cfg.data), cfg)
    method = build_method(data.spec, cfg.model)
    load_weights(method, ckpt / "model.safetensors")
    rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else cfg.eval.rates
    rows = result_rows(cfg, "ume", score_test(method, data, cfg, rates), {"checkpoint": str(ckpt)})
    md = write_report(rows, Path(args.out or ckpt / "evaluation"), title=f"{cfg.name}: evaluation of {ckpt}")
    print(md.read_text())
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from iteacnet.benchmark.grid import GridSpec, ResultStore, expand, run_grid
    from iteacnet.evaluation.reports import grid_report

    preset = "quick" if args.quick else args.preset
    if preset is None and args.config is None:
        raise SystemExit("iteacnet benchmark: give --preset NAME (see `iteacnet list`), --config FILE or --quick")
    src = find_preset(preset) if preset else Path(args.config)
    body = json.loads(src.read_text())
    if "grid" not in body:
        raise SystemExit(f"iteacnet benchmark: {src} has no `grid` section")
    cfg = load_config(preset, args.config, args.set)
    grid = dict(body["grid"])
    if args.seeds:
        grid["seeds"] = _seeds(args.seeds)
    if args.protocols:
        grid["protocols"] = [p for p in args.protocols.split(",") if p]
    if args.tables:
        grid["tables"] = _seeds(args.tables)
        grid.pop("variants", None)
    if args.variants:
        grid["variants"] = [v for v in args.variants.split(",") if v]
        grid.pop("tables", None)
    try:
        spec = GridSpec.from_dict(grid)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"iteacnet benchmark: bad grid in {src}: {e}") from None
    cells = expand(spec, cfg)
    out = Path(args.out or f"runs/benchmark-{src.stem}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps({"preset": str(src), "grid": grid, "base": cfg.to_dict()}, indent=2))
    store = ResultStore(out / "cells.jsonl")
    print(f"grid: {len(cells)} cells ({len(store.done().keys() & {c.id for c in cells})} already done) -> {out}")
    kw = {"address": args.address} if args.executor == "ray" else {}
    rows = run_grid(cells, store, executor=args.executor, workers=args.workers, **kw)
    md = grid_report(rows, out, title=f"Benchmark {src.stem}")
    print(md.read_text())
    print(f"results: {out / 'results.csv'}  report: {md}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from iteacnet.evaluation.reports import grid_report, read_rows

    path = Path(args.results)
    rows = read_rows(path)
    if not rows:
        raise SystemExit(f"iteacnet report: {path} holds no result rows")
    out = Path(args.out or path.parent)
    md = grid_report(rows, out, title=f"Report of {path.name}")
    print(md.read_text())
    print(f"report: {md}")
    return 0


def cmd_extract_audio(args: argparse.Namespace) -> int:
    from iteacnet.data import audio

    if (args.folder is None) == (args.manifest is None) or args.label_file or args.transcripts:
        raise SystemExit("iteacnet extract audio: give exactly one of --folder or --manifest")
    try:
        settings = audio.AudioSettings(args.feature_set, args.sample_rate)
        items = (audio.audio_files_in(args.folder, args.recursive) if args.folder is not None
                 else audio.read_audio_list(args.manifest))
        with audio.notes_to_stderr("iteacnet extract audio"):
            report = audio.extract_audio_features(items, Path(args.out), settings, workers=args.workers,
                                                  overwrite=args.overwrite)
    except (audio.AudioUnavailable, ValueError, OSError) as e:  # AudioError is a ValueError
        raise SystemExit(f"iteacnet extract audio: {type(e).__name__}: {e}") from None
    print(f"{report.written} written, {report.skipped} kept (already there) -> {report.out_dir} "
          f"({report.seconds:.1f} s; {settings.feature_set}, {settings.dim}-d, {settings.sample_rate} Hz); "
          f"manifest: {report.out_dir / 'manifest.json'}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    if args.what == "audio":
        return cmd_extract_audio(args)
    from iteacnet.data.extract import (
        ExtractUnavailable,
        TranscriptError,
        extract_text_features,
        read_transcripts,
        transcripts_from_label_file,
    )

    if (args.label_file is None) == (args.transcripts is None) or args.folder or args.manifest:
        raise SystemExit("iteacnet extract text: give exactly one of --label-file or --transcripts")
    try:
        if args.label_file is not None:
            items = transcripts_from_label_file(Path(args.label_file))
        else:
            items = read_transcripts(Path(args.transcripts))
        report = extract_text_features(items, Path(args.out), batch_size=args.batch_size, overwrite=args.overwrite)
    except (ExtractUnavailable, TranscriptError, ValueError, OSError) as e:
        raise SystemExit(f"iteacnet extract text: {e}") from None
    print(f"{report.written} written, {report.skipped} kept (already there) -> {report.out_dir} "
          f"({report.seconds:.1f} s); manifest: {report.out_dir / 'manifest.json'}")
    return 0


def _prediction_csv(rows: list[dict[str, Any]], classes: tuple[str, ...]) -> str:
    import csv
    import io

    keys = ["dialogue"] if any("dialogue" in r for r in rows) else []
    keys += ["id", "speaker", "modalities"]
    keys += ["label", *(f"p_{c}" for c in classes)] if classes else ["score"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        flat = {**r, "modalities": "+".join(r["modalities"]), "speaker": r.get("speaker") or ""}
        flat.update({f"p_{c}": f"{p:.6f}" for c, p in r.get("probabilities", {}).items()})
        if "score" in r:
            flat["score"] = f"{r['score']:.6f}"
        w.writerow([flat.get(k, "") for k in keys])
    return buf.getvalue()


def cmd_predict(args: argparse.Namespace) -> int:
    from iteacnet.data.audio import notes_to_stderr
    from iteacnet.data.conversation import (
        ConversationError,
        read_conversation_jsonl,
        split_dialogues,
    )
    from iteacnet.data.extract import ExtractUnavailable
    from iteacnet.files import atomic_write_text
    from iteacnet.inference import PredictError, Predictor

    out = Path(args.output) if args.output else None
    fmt = "json" if out is None else out.suffix.lower().lstrip(".")
    if fmt not in ("json", "csv"):
        raise SystemExit(f"iteacnet predict: --output must end in .json or .csv, got {out}")
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint)
        conversations = split_dialogues(read_conversation_jsonl(args.input))
        with notes_to_stderr("iteacnet predict"):  # clips resampled or downmixed on the fly
            results = [r for conv in predictor.predict_batch(conversations) for r in conv]
    except (PredictError, ConversationError, ExtractUnavailable, FileNotFoundError) as e:
        raise SystemExit(f"iteacnet predict: {e}") from None
    if fmt == "csv":
        text = _prediction_csv(results, predictor.class_names)
    else:
        body = {"checkpoint": str(args.checkpoint), "task": predictor.task,
                "classes": list(predictor.class_names), "predictions": results}
        text = json.dumps(body, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return 0
    # Whole file or nothing: write beside the target, then rename over it.
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(f"{len(results)} predictions -> {out}", file=sys.stderr)
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Parameter counts of the configured method, split by module (METHOD §8)."""
    import torch

    from iteacnet.models.base import ModelSpec, count_parameters
    from iteacnet.training.frameworks import build_method

    cfg = load_config(args.preset, args.config, args.set)
    try:
        dims = tuple((m, int(d)) for m, d in (kv.split("=") for kv in args.dims.split(",")))
    except ValueError:
        raise SystemExit(f"iteacnet params: --dims takes modality=size pairs, got {args.dims!r}") from None
    spec = ModelSpec(dims=dims, num_outputs=args.classes, task="classification", num_speakers=args.speakers)
    torch.manual_seed(0)
    method = build_method(spec, cfg.model)
    print(f"{cfg.model.method} ({cfg.model.framework}), D={cfg.model.hidden}, H={cfg.model.heads}, dims {dict(dims)}")
    for name in ("teacher", "student", "model"):
        part = getattr(method, name, None)
        if part is not None and hasattr(part, "parameter_report"):
            print(f"  {name}:")
            for k, v in part.parameter_report().items():
                print(f"    {k:<22}{v:>12,}")
    print(f"  total (all parts):    {count_parameters(method):>12,}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iteacnet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if config:
            sp.add_argument("--preset", help="named preset in configs/ (see `iteacnet list`)")
            sp.add_argument("--config", help="an ExperimentConfig JSON file (e.g. a run's config.json)")
        sp.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field, value as JSON (repeatable)")
        return sp

    sp = add("demo", cmd_demo, "train ITS on the synthetic corpus and print its UME table", config=False)
    sp.add_argument("--out", default="runs/demo")
    sp.add_argument("--epochs", type=int, default=40)

    sp = add("train", cmd_train, "train and evaluate (UME or IME) over one or more seeds")
    add_data_args(sp)
    sp.add_argument("--protocol", choices=["ume", "ime"])
    sp.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    sp.add_argument("--epochs", type=int)
    sp.add_argument("--out", help="output folder (default runs/<name>)")
    sp.add_argument("--distributed", action="store_true",
                    help="data-parallel over the processes of a torchrun job (see README, Scaling out)")

    sp = add("evaluate", cmd_evaluate, "score a checkpoint on its test split at every rate", config=False)
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--rates", help="comma-separated rates (default: the config's)")
    sp.add_argument("--out")

    sp = add("data", cmd_data, "inspect a corpus or build its cache")
    sp.add_argument("action", choices=["inspect", "cache"])
    add_data_args(sp)

    sp = add("benchmark", cmd_benchmark, "run a grid of methods x corpora x protocols x seeds x folds x rates (resumable)")
    sp.add_argument("--quick", action="store_true", help="the tiny synthetic grid (preset `quick`)")
    sp.add_argument("--out", help="output folder (default runs/benchmark-<preset>)")
    sp.add_argument("--workers", type=int, default=1, help="cells run in parallel")
    sp.add_argument("--executor", default="local", help="local | ray")
    sp.add_argument("--address", default=None, help="ray: cluster address (default: start a local Ray)")
    sp.add_argument("--seeds", help="override the grid's seeds, e.g. 0,1,2")
    sp.add_argument("--tables", help="only these tables' variants, e.g. 2,4")
    sp.add_argument("--protocols", help="only these protocols, e.g. ume (Table 1's `complete` always runs)")
    sp.add_argument("--variants", help="only these variants (see `iteacnet list`), e.g. iteacnet,gcnet")

    sp = add("report", cmd_report, "rebuild tables and plots from a results file, without training", config=False)
    sp.add_argument("results", help="cells.jsonl, results.json or results.csv")
    sp.add_argument("--out", help="output folder (default: beside RESULTS)")

    sp = add("extract", cmd_extract, "embed transcripts or featurise recordings offline into a feature folder "
             "(GCNet layout)", config=False)
    sp.add_argument("what", choices=["text", "audio"],
                    help="text: all-MiniLM-L6-v2, 384-d; audio: openSMILE functionals (eGeMAPSv02 88-d, ComParE_2016 6,373-d)")
    sp.add_argument("--out", required=True, help="feature folder to write, e.g. ROOT/features/text-minilm-384")
    sp.add_argument("--label-file", help="text: a GCNet label pickle (its videoSentence transcripts)")
    sp.add_argument("--transcripts", help="text: JSONL ({\"id\": ..., \"text\": ...} a line) or CSV (id,text header)")
    sp.add_argument("--batch-size", type=int, default=64, help="text: sentences per encoder batch")
    sp.add_argument("--folder", help="audio: a folder of per-utterance audio files (id = file stem)")
    sp.add_argument("--recursive", action="store_true", help="audio: --folder's subfolders too")
    sp.add_argument("--manifest", help="audio: CSV (id,path[,start,end] header) or JSONL; start/end in seconds")
    sp.add_argument("--feature-set", default="eGeMAPSv02", choices=["eGeMAPSv02", "ComParE_2016"], help="audio")
    sp.add_argument("--sample-rate", type=int, default=16000, help="audio: clips at other rates are converted")
    sp.add_argument("--workers", type=int, default=None, help="audio: clips at once (default: one per CPU core)")
    sp.add_argument("--overwrite", action="store_true", help="re-extract utterances whose file exists")

    sp = add("predict", cmd_predict, "label a new conversation (JSONL, one utterance a line) with a checkpoint",
             config=False)
    sp.add_argument("--checkpoint", required=True, help="a checkpoint folder (model.safetensors, config.json, meta.json)")
    sp.add_argument("--input", required=True, help="conversation JSONL: id, speaker, text and/or features per line")
    sp.add_argument("--output", help="out.json or out.csv (default: JSON to stdout)")

    sp = add("params", cmd_params, "parameter counts of the configured method, split by module")
    sp.add_argument("--dims", default="text=1024,audio=512,visual=1024", help="modality=size pairs (GCNet's IEMOCAP sizes by default)")
    sp.add_argument("--classes", type=int, default=4)
    sp.add_argument("--speakers", type=int, default=2)

    add("list", cmd_list, "list methods, mixers, frameworks and presets", config=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        print("interrupted; finished work is on disk and a rerun resumes it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
