"""Command-line interface: parse, build an ExperimentConfig, call data/training/evaluation.

    iteacnet demo                        ITS on the synthetic corpus, UME table and plots
    iteacnet train --preset P [--set section.field=value ...]
    iteacnet evaluate --checkpoint DIR
    iteacnet data inspect|cache --corpus C --root DIR [--text F --audio F --visual F]
    iteacnet data inspect --corpus-dir DIR        a corpus folder (corpus.json + table + features)
    iteacnet data import --from gcnet|dialoguernn|mmsa --input FILE --out DIR
    iteacnet extract text --out DIR (--label-file PKL | --transcripts FILE)
    iteacnet extract audio --out DIR (--folder DIR | --manifest FILE) [--feature-set S]
    iteacnet predict --checkpoint DIR --input conversation.jsonl [--output out.json|out.csv]
    iteacnet list                        methods, mixers, frameworks, presets
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iteacnet.config import (
    RERUN_FREE_FIELDS,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    SyntheticConfig,
    TrainConfig,
    config_differences,
    merge_dicts,
    replace,
)
from iteacnet.errors import ConfigError, DeviceError, IncompleteResults, ResultsError, UserError
from iteacnet.presets import (  # noqa: F401  (find_preset: one of the CLI's public names)
    apply_overrides,
    find_preset,
    list_presets,
    overrides_of,
    parse_seeds,
    read_config_body,
)
from iteacnet.presets import load_config as load_preset_config

if TYPE_CHECKING:  # the CLI imports torch-heavy modules lazily
    from iteacnet.training.engine import PreparedData

# Config loading lives below the CLI (training.distributed uses it too); re-exported here.
_seeds = parse_seeds


def load_config(preset: str | None, config: str | None, overrides: list[str], resolve: bool = True) -> ExperimentConfig:
    """Defaults, then the preset, then the config file, then `--set` overrides, validated
    (`iteacnet.presets.load_config`). With `resolve`, `train.recipe="own"` becomes the
    method's recipe, under the overrides (which win); the benchmark grid resolves per variant."""
    cfg = load_preset_config(preset, config, overrides)
    return resolve_recipe_with(cfg, overrides) if resolve else cfg


def resolve_recipe_with(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    from iteacnet.training.recipes import resolve_recipe

    try:
        return resolve_recipe(cfg, lambda c: apply_overrides(c, overrides))
    except ConfigError:
        raise
    except (ValueError, KeyError) as e:
        raise ConfigError(f"bad configuration: {str(e).strip(chr(39))}") from None


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    ch: dict[str, Any] = {}
    for flag, key in (("corpus", "corpus"), ("root", "root"), ("corpus_dir", "corpus_dir"), ("text", "text_feature"), ("audio", "audio_feature"),
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
    g.add_argument("--corpus-dir", help="a corpus folder (corpus.json, utterance table, features); replaces --corpus/--root")
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
    from iteacnet.data.splits import make_split

    if args.action == "import":
        return _data_import(args)
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


def _data_import(args: argparse.Namespace) -> int:
    from iteacnet.data import importers

    if not (args.format and args.input and args.out):
        raise UserError("data import: give --from FORMAT, --input FILE and --out DIR "
                        f"(formats: {', '.join(importers.FORMATS)})")
    ignored = [flag for flag, v in (("--set", args.set), ("--preset", args.preset), ("--config", args.config)) if v]
    if ignored:
        raise UserError(f"data import: {', '.join(ignored)} would be ignored (an import reads no experiment config)")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    common = {"name": args.name or "", "speakers": args.speakers or "", "overwrite": args.overwrite}
    notes: list[str] = []
    if args.format == "gcnet":
        folders = {m: v for m, v in (("text", args.text), ("audio", args.audio), ("visual", args.visual)) if v}
        out = importers.import_gcnet(args.input, args.out, folders, root=args.root, classes=classes,
                                     allow_missing_files=args.allow_missing_files, **common)
    elif args.format == "dialoguernn":
        out = importers.import_dialoguernn(args.input, args.out, layout=args.layout, meld_labels=args.meld_labels,
                                           classes=classes, **common)
    else:
        out, notes = importers.import_mmsa(args.input, args.out, **common)
    for n in notes:
        print(f"note: {n}")
    print(f"corpus folder written: {out} (check it with `iteacnet data inspect --corpus-dir {out}`)")
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


def train_seeds(cfg: ExperimentConfig, out: Path, protocol: str, seeds: list[int], threads: int | None = None) -> list[dict[str, Any]]:
    from iteacnet.data.loading import load_corpus
    from iteacnet.evaluation.reports import write_report
    from iteacnet.training.engine import prepare

    data = prepare(load_corpus(cfg.data, progress=cfg.train.progress), cfg)  # the seed changes no split
    if data.split.selection == "gcnet-compatible":
        print(f"WARNING: {data.split.note}", file=sys.stderr)
    if len(data.corpus.modalities) == 1 and any(r > 0 for r in cfg.eval.rates):
        (m,) = data.corpus.modalities
        print(f"WARNING: the corpus has one modality ({m}): nothing can be masked, so every missing rate of the "
              "UME table scores the same complete data. For the complete-data framework, train with "
              "--set 'eval.rates=[0.0]'; for missing-modality results, add a second modality "
              "(corpus.json \"features\", or --audio/--visual).", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        c = replace(cfg, **{"train.seed": seed})
        rows.extend(_run_one(c, data, out / f"seed{seed}", protocol))
    for row in rows:  # the thread count changes the speed, so every row says it
        row["threads"] = threads if threads is not None else torch_threads()
    cfg.to_json(out / "config.json")
    md = write_report(rows, out, title=f"{cfg.name} ({protocol.upper()})")
    print(md.read_text())
    print(f"results: {out / 'results.csv'}  {out / 'results.json'}  {md}  {out / 'waf_vs_rate.png'}")
    return rows


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.preset, args.config, args.set)
    cfg = replace(cfg, **_data_overrides(args))
    if args.epochs is not None:
        cfg = replace(cfg, **{"train.epochs": args.epochs})
    out = Path(args.out or f"runs/{cfg.name}")
    seeds = parse_seeds(args.seeds) if args.seeds else [cfg.train.seed]
    from iteacnet.training.engine import check_device

    check_device(cfg.train.device)  # before the corpus loads
    if args.restart:
        restart(out)
    if args.distributed:  # one rank of a torchrun job (training/distributed.py)
        from iteacnet.training.distributed import TORCHRUN_HINT, train_distributed, under_torchrun

        if not under_torchrun():
            raise UserError(f"--distributed: {TORCHRUN_HINT}")
        train_distributed(cfg, out, args.protocol or cfg.train.protocol, seeds)
        return 0
    train_seeds(cfg, out, args.protocol or cfg.train.protocol, seeds, args.threads)
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def restart(out: Path) -> None:
    """`--restart`: forget the resumable training states under `out` (every `last/` folder);
    finished checkpoints and results stay until the new run replaces them."""
    for last in sorted(out.glob("**/last")):
        if last.is_dir():
            shutil.rmtree(last)


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
    train_seeds(cfg, out, "ume", [cfg.train.seed], args.threads)
    print(f"router plot: {out / 'seed0' / 'router.png'}   checkpoint: {out / 'seed0'}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from iteacnet.data.loading import load_corpus
    from iteacnet.evaluation.protocols import result_rows, score_test
    from iteacnet.evaluation.reports import write_report
    from iteacnet.training.checkpoint import load_checkpoint_weights, read_checkpoint_files
    from iteacnet.training.engine import prepare
    from iteacnet.training.frameworks import build_method

    ckpt = Path(args.checkpoint)
    cfg, meta = read_checkpoint_files(ckpt)
    cfg = scoring_device(apply_overrides(cfg, args.set), args.set)
    data = prepare(load_corpus(cfg.data), cfg)
    method = build_method(data.spec, cfg.model)
    load_checkpoint_weights(method, ckpt, meta)
    method.to(cfg.train.device)
    rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else cfg.eval.rates
    rows = result_rows(cfg, "ume", score_test(method, data, cfg, rates), {"checkpoint": str(ckpt)})
    md = write_report(rows, Path(args.out or ckpt / "evaluation"), title=f"{cfg.name}: evaluation of {ckpt}")
    print(md.read_text())
    return 0


def scoring_device(cfg: ExperimentConfig, sets: list[str] | None) -> ExperimentConfig:
    """`cfg` with a device this machine has: a checkpoint trained on a GPU scores on the CPU
    of a machine without one (with a note); a device asked for with --set must be there."""
    from iteacnet.training.engine import check_device

    try:
        check_device(cfg.train.device)
    except DeviceError:
        if overrides_of(sets, "train.device"):
            raise
        print(f"note: the checkpoint was trained on {cfg.train.device}, which this machine lacks; scoring on cpu",
              file=sys.stderr)
        return replace(cfg, **{"train.device": "cpu"})
    return cfg


def cmd_benchmark(args: argparse.Namespace) -> int:
    from iteacnet.benchmark.grid import GridSpec, ResultStore, expand, run_grid
    from iteacnet.evaluation.reports import grid_report

    preset = "quick" if args.quick else args.preset
    if preset is None and args.config is None:
        raise UserError("give --preset NAME (see `iteacnet list`), --config FILE or --quick")
    for flag, value in (("--workers", args.workers), ("--stack", args.stack), ("--stack-group", args.stack_group)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    src = find_preset(preset) if preset else Path(args.config)
    body = read_config_body(src)
    if not isinstance(body.get("grid"), dict):
        raise ConfigError(f"{src} has no `grid` section (an object)")
    cfg = load_config(preset, args.config, args.set, resolve=False)
    grid = dict(body["grid"])
    if args.seeds:
        grid["seeds"] = parse_seeds(args.seeds)
    if args.protocols:
        grid["protocols"] = [p for p in args.protocols.split(",") if p]
    if args.tables:
        grid["tables"] = parse_seeds(args.tables, "--tables")
        grid.pop("variants", None)
    if args.variants:
        grid["variants"] = [v for v in args.variants.split(",") if v]
        grid.pop("tables", None)
    try:
        spec = GridSpec.from_dict(grid)
    except (ValueError, KeyError, TypeError) as e:
        flags = " ".join(f"--{n} {v}" for n, v in (("seeds", args.seeds), ("protocols", args.protocols),
                                                     ("tables", args.tables), ("variants", args.variants)) if v)
        raise ConfigError(f"bad grid in {src}{' with ' + flags if flags else ''}: {str(e).strip(chr(39))}") from None
    try:
        cells = expand(spec, cfg, reapply=lambda c: apply_overrides(c, args.set))
    except UserError:
        raise
    except (ValueError, KeyError) as e:
        raise ConfigError(str(e).strip(chr(39))) from None
    if not cells:
        raise ConfigError(f"the grid of {src} has no cells: its variants {list(spec.variants)} run none of "
                          f"the protocols {list(spec.protocols)}")
    from iteacnet.training.engine import check_device

    check_device(cfg.train.device)
    out = Path(args.out or f"runs/benchmark-{src.stem}")
    out.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {"address": args.address} if args.executor == "ray" else {"stack": args.stack,
                                                                                   "stack_group": args.stack_group}
    if args.executor == "ray" and args.stack > 1:
        raise SystemExit("iteacnet benchmark: --stack works with the local executor")
    if args.stack > 1 and args.stack_group in (None, 1) and cfg.train.device == "cpu":
        print("note: on a CPU a stack's members train one after another, each as alone (a stacked step "
              "does not pay there: benchmarks/README.md); --stack-group G > 1 vmaps G members a call", file=sys.stderr)
    if args.executor == "local":  # the process's threads, shared among the workers
        kw["threads_per_worker"] = max(1, args.threads // max(1, args.workers))
    with ResultStore(out / "cells.jsonl") as store:
        _same_base_or_restart(out, store, cfg, args.restart)
        (out / "grid.json").write_text(json.dumps({"preset": str(src), "grid": grid, "base": cfg.to_dict()}, indent=2))
        print(f"grid: {len(cells)} cells ({len(store.done().keys() & {c.id for c in cells})} already done) -> {out}")
        rows = run_grid(cells, store, executor=args.executor, workers=args.workers, **kw)
    md = grid_report(rows, out, title=f"Benchmark {src.stem}")
    print(md.read_text())
    print(f"results: {out / 'results.csv'}  report: {md}")
    return 0


def _same_base_or_restart(out: Path, store: Any, cfg: ExperimentConfig, restart: bool) -> None:
    """A rerun on an `--out` whose grid.json records another base config would mix two
    experiments in one results file: refuse, naming the fields, unless `--restart` (which
    moves the old results aside)."""
    old_file = out / "grid.json"
    if restart:
        if store.path.is_file():
            aside = store.path.with_name(f"{store.path.name}.{time.strftime('%Y%m%d-%H%M%S')}.old")
            store.path.rename(aside)
            print(f"--restart: previous results moved to {aside}", file=sys.stderr)
        return
    if not old_file.is_file() or not store.path.is_file():
        return
    try:
        old = json.loads(old_file.read_text())["base"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return  # an unreadable grid.json records nothing to compare with; it is rewritten
    # A field added to the config since grid.json was written counts at its default.
    diff = config_differences(merge_dicts(ExperimentConfig().to_dict(), old), cfg.to_dict(), RERUN_FREE_FIELDS)
    if diff:
        raise ResultsError(f"{out} holds results of another configuration ({'; '.join(diff[:6])}"
                           f"{'; ...' if len(diff) > 6 else ''}); give another --out, or --restart to start over")


def cmd_report(args: argparse.Namespace) -> int:
    from iteacnet.evaluation.reports import grid_report, read_rows

    path = Path(args.results)
    rows = read_rows(path)
    if not rows:
        raise UserError(f"{path} holds no result rows")
    if not args.paired and (args.where or args.metric != "waf"):
        raise UserError("--where and --metric apply to --paired A B only (the report has every metric)")
    if args.paired:
        from iteacnet.evaluation.reports import paired_difference, paired_table, parse_selector

        try:
            a, b = (parse_selector(x) for x in args.paired)
            where = parse_selector(args.where) if args.where else {}
            result = paired_difference(rows, a, b, args.metric, where)
        except ValueError as e:
            raise UserError(str(e)) from None
        print(paired_table(result, args.paired[0], args.paired[1], args.metric))
        return 0
    out = Path(args.out or path.parent)
    md = grid_report(rows, out, title=f"Report of {path.name}")
    print(md.read_text())
    print(f"report: {md}")
    return 0


def cmd_extract_audio(args: argparse.Namespace) -> int:
    from iteacnet.data import audio

    if (args.folder is None) == (args.manifest is None) or args.label_file or args.transcripts:
        raise UserError("audio: give exactly one of --folder or --manifest")
    try:
        settings = audio.AudioSettings(args.feature_set, args.sample_rate)
        items = (audio.audio_files_in(args.folder, args.recursive) if args.folder is not None
                 else audio.read_audio_list(args.manifest))
        with audio.notes_to_stderr("iteacnet extract audio"):
            report = audio.extract_audio_features(items, Path(args.out), settings, workers=args.workers,
                                                  overwrite=args.overwrite)
    except (audio.AudioUnavailable, ValueError) as e:  # AudioError is a ValueError; the class names the fault
        raise UserError(f"audio: {type(e).__name__}: {e}") from None
    print(f"{report.written} written, {report.skipped} kept (already there) -> {report.out_dir} "
          f"({report.seconds:.1f} s; {settings.feature_set}, {settings.dim}-d, {settings.sample_rate} Hz); "
          f"manifest: {report.out_dir / 'manifest.json'}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    if args.what == "audio":
        return cmd_extract_audio(args)
    from iteacnet.data.extract import (
        extract_text_features,
        read_transcripts,
        transcripts_from_label_file,
    )

    if (args.label_file is None) == (args.transcripts is None) or args.folder or args.manifest:
        raise UserError("give exactly one of --label-file or --transcripts")
    if args.label_file is not None:
        items = transcripts_from_label_file(Path(args.label_file))
    else:
        items = read_transcripts(Path(args.transcripts))
    report = extract_text_features(items, Path(args.out), batch_size=args.batch_size, overwrite=args.overwrite)
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
    from iteacnet.data.conversation import read_conversation_jsonl, split_dialogues
    from iteacnet.files import atomic_write_text
    from iteacnet.inference import Predictor, UnknownSpeakerWarning

    out = Path(args.output) if args.output else None
    fmt = "json" if out is None else out.suffix.lower().lstrip(".")
    if fmt not in ("json", "csv"):
        raise UserError(f"--output must end in .json or .csv, got {out}")
    predictor = Predictor.from_checkpoint(args.checkpoint)
    conversations = split_dialogues(read_conversation_jsonl(args.input))
    with warnings.catch_warnings(record=True) as caught:  # one plain line each, no source line
        warnings.simplefilter("always", UnknownSpeakerWarning)
        with notes_to_stderr("iteacnet predict"):  # clips resampled or downmixed on the fly
            results = [r for conv in predictor.predict_batch(conversations) for r in conv]
    for w in caught:
        if issubclass(w.category, UnknownSpeakerWarning):
            print(f"WARNING: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
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
    cfg = replace(cfg, **_data_overrides(args))
    dims: tuple[tuple[str, int], ...] = ()
    if args.dims is not None:
        try:
            dims = tuple((m, int(d)) for m, d in (kv.split("=") for kv in args.dims.split(",")))
        except ValueError:
            raise UserError(f"--dims takes modality=size pairs, got {args.dims!r}") from None
    classes, speakers, task = args.classes, args.speakers, "classification"
    if not dims or classes is None or speakers is None:
        # What the flags leave open comes from the configured corpus, as training would see it.
        from iteacnet.data.loading import load_corpus

        corpus = load_corpus(cfg.data)
        dims = dims or tuple(corpus.dims.items())
        classes = corpus.num_classes if classes is None else classes
        speakers = max(1, len(corpus.speaker_names)) if speakers is None else speakers
        task = corpus.task if args.classes is None else task
    spec = ModelSpec(dims=dims, num_outputs=classes, task=task, num_speakers=speakers)
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
            sp.add_argument("--preset", help="named preset (packaged, or ./configs/NAME.json; see `iteacnet list`)")
            sp.add_argument("--config", help="an ExperimentConfig JSON file (e.g. a run's config.json)")
        sp.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field, value as JSON (repeatable)")
        sp.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the cores available to this process; "
                             "the benchmark divides them among its workers)")
        sp.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    sp.add_argument("--restart", action="store_true",
                    help="start over: ignore (and delete) the resumable state in --out, even if the config changed")
    sp.add_argument("--distributed", action="store_true",
                    help="data-parallel over the processes of a torchrun job (see README, Scaling out)")

    sp = add("evaluate", cmd_evaluate, "score a checkpoint on its test split at every rate", config=False)
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--rates", help="comma-separated rates (default: the config's)")
    sp.add_argument("--out")

    sp = add("data", cmd_data, "inspect a corpus, build its cache, or import one into a corpus folder")
    sp.add_argument("action", choices=["inspect", "cache", "import"])
    add_data_args(sp)
    g = sp.add_argument_group("import (see README, 'Your own corpus')")
    g.add_argument("--from", dest="format", choices=["gcnet", "dialoguernn", "mmsa"], help="the input's format")
    g.add_argument("--input", help="gcnet: the label pickle (features under --root, default its folder); "
                                   "dialoguernn / mmsa: the pickle")
    g.add_argument("--out", help="the corpus folder to write")
    g.add_argument("--name", help="corpus name (default: the known corpus, else the file's name)")
    g.add_argument("--classes", help="class names in label order, comma-separated")
    g.add_argument("--layout", choices=["iemocap", "meld"], default="iemocap", help="dialoguernn: the pickle's layout")
    g.add_argument("--meld-labels", choices=["emotion", "sentiment"], default="emotion",
                   help="dialoguernn, MELD layout: which labels (item 3: emotion; item 9: sentiment)")
    g.add_argument("--speakers", choices=["identities", "roles"],
                   help="speaker scheme written to corpus.json (default: identities for IEMOCAP, else roles)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing corpus folder")

    sp = add("benchmark", cmd_benchmark, "run a grid of methods x corpora x protocols x seeds x folds x rates (resumable)")
    sp.add_argument("--quick", action="store_true", help="the tiny synthetic grid (preset `quick`)")
    sp.add_argument("--out", help="output folder (default runs/benchmark-<preset>)")
    sp.add_argument("--workers", type=int, default=1,
                    help="cells (or stacks) run in parallel worker processes; with device cuda they share the GPU")
    sp.add_argument("--stack", type=int, default=1,
                    help="train up to K cells that differ only in seed as one stacked run (local executor)")
    sp.add_argument("--stack-group", type=int, default=None, metavar="G",
                    help="at most G stack members per vmapped call: bounds a stack's activation memory "
                         "(default: the whole stack on a GPU; 1 on a CPU, where the members train one after another, "
                         "each exactly as alone: a stacked step does not pay on a CPU)")
    sp.add_argument("--executor", default="local", help="local | ray")
    sp.add_argument("--address", default=None, help="ray: cluster address (default: start a local Ray)")
    sp.add_argument("--seeds", help="override the grid's seeds, e.g. 0,1,2")
    sp.add_argument("--restart", action="store_true",
                    help="start over on an --out that holds results (of this or another configuration)")
    sp.add_argument("--tables", help="only these tables' variants, e.g. 2,4")
    sp.add_argument("--protocols", help="only these protocols, e.g. ume (Table 1's `complete` always runs)")
    sp.add_argument("--variants", help="only these variants (see `iteacnet list`), e.g. iteacnet,gcnet")

    sp = add("report", cmd_report, "rebuild tables and plots from a results file, without training", config=False)
    sp.add_argument("results", help="cells.jsonl, results.json or results.csv")
    sp.add_argument("--out", help="output folder (default: beside RESULTS)")
    sp.add_argument("--paired", nargs=2, metavar=("A", "B"),
                    help="print the paired mean difference A - B with a 95%% interval; A, B: a variant name or "
                         "key=value[,key=value] over result columns (e.g. ecce=none, train_rate=0.7)")
    sp.add_argument("--where", help="key=value[,key=value] both sides must match (e.g. protocol=ume)")
    sp.add_argument("--metric", default="waf", help="metric column for --paired (default waf)")

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
    add_data_args(sp)
    sp.add_argument("--dims", help="modality=size pairs, e.g. text=1024,audio=512,visual=1024 (GCNet's IEMOCAP "
                                   "sizes); default: the configured corpus's")
    sp.add_argument("--classes", type=int, help="outputs (default: the configured corpus's)")
    sp.add_argument("--speakers", type=int, help="speakers (default: the configured corpus's)")

    add("list", cmd_list, "list methods, mixers, frameworks and presets", config=False)
    return p


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(args: argparse.Namespace) -> int:
    """torch's intra-op threads for this command: `--threads`, else $OMP_NUM_THREADS if set
    (torchrun sets 1 per rank), else every available core. The benchmark divides them among
    its workers (benchmark.executors)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = args.threads if args.threads is not None else int(env) if env.isdigit() and int(env) > 0 else available_cores()
    if n < 1:
        raise UserError(f"--threads must be >= 1, got {n}")
    if args.command != "benchmark":
        import torch

        torch.set_num_threads(n)
    return n


# OSErrors of a path the user named: their input, exit 2 as a UserError (a full disk stays 1).
NAMED_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (bad data, config, checkpoint, input) is one line on
    stderr and exit status 2; anything else is a bug: one line and exit 1. `--debug` shows
    the traceback either way."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    prog = f"iteacnet {args.command}"
    try:
        args.threads = set_threads(args)
        return int(args.fn(args))
    except KeyboardInterrupt:
        print("interrupted; finished work is on disk and a rerun resumes it", file=sys.stderr)
        return 130
    except (UserError, OSError, IncompleteResults) as e:
        # OSError: a file the user named is missing or unreadable, a disk is full; the
        # message carries the file name.
        if debug:
            traceback.print_exc()
        print(f"{prog}: {_one_line(e)}", file=sys.stderr)
        return 2 if isinstance(e, (UserError, *NAMED_FILE_ERRORS)) else 1
    except Exception as e:  # noqa: BLE001  (a bug: say so in one line, the traceback on --debug)
        if debug:
            traceback.print_exc()
        print(f"{prog}: internal error ({type(e).__name__}: {_one_line(e)}); rerun with --debug for the "
              "traceback and report it", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
