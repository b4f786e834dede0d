"""Experiment configuration: frozen dataclasses nested into one `ExperimentConfig`.

Every result and checkpoint is saved next to `config.json` (`ExperimentConfig.to_json`).
Defaults follow METHOD.md §8; every choice the spec leaves open is a field here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from iteacnet.errors import ConfigError

MODALITIES: tuple[str, ...] = ("text", "audio", "visual")
EVAL_RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


# ---------------------------------------------------------------------------- validation
# Every dataclass below ends with a `__post_init__` calling `check_fields`: each field is
# checked against its annotation (bool, int, float, str, Literal, tuple, nested config), so a
# new field is type-checked without more code; `rules` adds ranges and allowed values. A
# bad value is a ConfigError naming the field (`train.epochs`) and what it accepts.
Rule = Callable[[Any], str | None]  # None if the value is fine, else what the field accepts


def at_least(lo: float, integer: bool = False) -> Rule:
    return lambda v: None if v >= lo else f"{'an integer' if integer else 'a number'} >= {lo:g}"


def above(lo: float) -> Rule:
    return lambda v: None if v > lo else f"a number > {lo:g}"


def unit_interval(closed_right: bool = False) -> Rule:
    right = "]" if closed_right else ")"
    return lambda v: None if 0 <= v and (v <= 1 if closed_right else v < 1) else f"a number in [0, 1{right}"


def one_of(*choices: str) -> Rule:
    return lambda v: None if v in choices else f"one of {', '.join(map(repr, choices))}"


def each(rule: Rule) -> Rule:
    return lambda v: next((f"a list of {r}" for x in v if (r := rule(x)) is not None), None)


def non_empty(v: Any) -> str | None:
    return None if len(v) else "a non-empty list"


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: Any) -> dict[str, Any]:
    """A class's resolved annotations (cached: every config construction needs them)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_problem(tp: Any, v: Any) -> str | None:
    """What `tp` accepts if `v` is not of it, else None (JSON lists count as tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return None
    if origin is Literal:
        choices = typing.get_args(tp)
        return None if v in choices else f"one of {', '.join(map(repr, choices))}"
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(a, v) for a in typing.get_args(tp)]
        return None if any(p is None for p in problems) else " or ".join(p for p in problems if p)
    if tp is bool:
        return None if isinstance(v, bool) else "true or false"
    if tp is int:
        return None if isinstance(v, int) and not isinstance(v, bool) else "an integer"
    if tp is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return None if ok else "a finite number"
    if tp is str:
        return None if isinstance(v, str) else "a string"
    if origin is tuple:
        if not isinstance(v, (tuple, list)):
            return "a list"
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            inner = next((p for x in v if (p := _type_problem(args[0], x)) is not None), None)
            return None if inner is None else f"a list of {inner}"
        if args and len(args) != len(v):
            return f"a list of {len(args)} values"
        inner = next((p for a, x in zip(args, v) if (p := _type_problem(a, x)) is not None), None)
        return None if inner is None else f"a list of {inner}"
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return None if isinstance(v, tp) else f"a {tp.__name__} mapping"
    return None


def check_fields(obj: Any, rules: dict[str, Rule] | None = None) -> None:
    """Type-check every field of a config dataclass by its annotation, then `rules`."""
    section = getattr(obj, "SECTION", "")
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        tp = _hints(type(obj))[f.name]
        if isinstance(v, list) and typing.get_origin(tp) is tuple:  # JSON has no tuples
            v = tuple(v)
            object.__setattr__(obj, f.name, v)
        if tp is float and isinstance(v, int) and not isinstance(v, bool):
            object.__setattr__(obj, f.name, float(v))
        problem = _type_problem(tp, v)
        if problem is None and rules and f.name in rules:
            problem = rules[f.name](v)
        if problem is not None:
            raise ConfigError(f"{section + '.' if section else ''}{f.name}: expected {problem}, got {v!r}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of the generated synthetic corpus (named `synthetic` everywhere)."""

    num_dialogues: int = 120
    min_len: int = 8
    max_len: int = 24
    num_classes: int = 4
    dims: tuple[int, int, int] = (32, 16, 24)  # text, audio, visual
    # Signal-to-noise per modality: text strongest, as in real corpora.
    informativeness: tuple[float, float, float] = (1.2, 0.6, 0.4)
    shift_prob: float = 0.15  # chance per utterance that a speaker's state changes
    seed: int = 0

    SECTION: ClassVar[str] = "data.synthetic"

    def __post_init__(self) -> None:
        check_fields(self, {
            "num_dialogues": at_least(3, True), "min_len": at_least(1, True), "num_classes": at_least(2, True),
            "max_len": lambda v: None if v >= self.min_len else f"an integer >= min_len ({self.min_len})",
            "dims": each(at_least(1, True)), "informativeness": each(at_least(0)),
            "shift_prob": unit_interval(closed_right=True),
        })


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, which features, which split."""

    corpus: str = "synthetic"  # synthetic | iemocap4 | iemocap6 | cmumosi | cmumosei
    root: str = ""  # GCNet-layout folder (e.g. ../shared/data/CMUMOSI); empty for synthetic
    # A corpus folder (corpus.json + utterance table + features, data/table.py); when set it
    # is the corpus, and `corpus`/`root` are not used.
    corpus_dir: str = ""
    # Speaker coding: "" keeps the corpus's own (paper corpora: identities; corpus folders:
    # their corpus.json, default roles); "identities" | "roles" overrides it.
    speakers: str = ""
    max_roles: int = 0  # roles: at most this many per dialogue; 0 keeps the corpus's (default 8)
    # Feature folder per modality under <root>/features: "none" drops the modality; "" takes
    # the GCNet default folder if it exists (see data/loading.py).
    text_feature: str = ""
    audio_feature: str = ""
    visual_feature: str = ""
    allow_missing_files: bool = False  # treat missing feature files as missing modalities
    split: str = "standard"  # cmumosi/cmumosei: standard | poria ; iemocap: loso
    fold: int = 0  # iemocap: test session index 0..4 (session fold+1)
    val_fraction: float = 0.1  # iemocap: dialogues of the training sessions held out
    split_seed: int = 0
    # "validation": select on the validation split (honest); "gcnet-compatible": select on
    # test as GCNet's code does; flagged in every output it touches.
    selection: Literal["validation", "gcnet-compatible"] = "validation"
    cache_dir: str = ""  # empty: $XDG_CACHE_HOME/iteacnet (~/.cache/iteacnet); synthetic is never cached
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    SECTION: ClassVar[str] = "data"

    def __post_init__(self) -> None:
        check_fields(self, {"fold": at_least(0, True), "val_fraction": unit_interval()})


# DataConfig fields that choose the split, not the corpus: runs differing only in these
# can share one loaded corpus (the benchmark grid does).
SPLIT_FIELDS: tuple[str, ...] = ("split", "fold", "val_fraction", "split_seed", "selection")


@dataclass(frozen=True)
class ECCEConfig:
    """Emotion Context Change Encoding (METHOD §2); `local`/`enabled` are Table 1's switches."""

    enabled: bool = True  # False: vanilla self-attention, no bias
    local: bool = True  # False: L = H (no Conv1d)
    kernel: int = 7
    max_span: int = 30
    # Variants of the local stage and the bias (models/ecce.py): dense Conv1d(D, D, k) or one
    # softmax-normalised k-tap kernel shared over channels; dropout after it; one bias value
    # per head or one per utterance pair shared by the heads.
    local_kind: Literal["dense", "shared"] = "dense"
    local_dropout: float = 0.0
    bias: Literal["head", "pair"] = "head"

    SECTION: ClassVar[str] = "model.ecce"

    def __post_init__(self) -> None:
        odd = lambda v: None if v >= 1 and v % 2 == 1 else "an odd integer >= 1"  # noqa: E731
        check_fields(self, {"kernel": odd, "max_span": at_least(1, True), "local_dropout": unit_interval()})


@dataclass(frozen=True)
class ModelConfig:
    """ITEACNet architecture and training framework (METHOD §2–§5)."""

    method: str = "iteacnet"  # a key of the METHODS registry (iteacnet, ae, cra, mmin, cpmnet, gcnet)
    framework: str = "its"  # iteacnet only: its | gcnet | ts
    hidden: int = 128
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # projections, MLP, cross-attention output
    # Dropout on attention weights. 0 lets PyTorch use its fused, memory-lean attention
    # kernel where no bias gradient is needed (cross-attention); the paper gives no value.
    attn_dropout: float = 0.0
    # In training, recompute each encoder layer in the backward pass (activation
    # checkpointing) for batches longer than this many utterances; 0 never does.
    checkpoint_above: int = 256
    input_dropout: float = 0.1
    ecce: ECCEConfig = field(default_factory=ECCEConfig)
    teacher_kind: str = "TF"  # TF | NAS
    teacher_layers: int = 3
    student_kind: str = "NAS"
    student_layers: int = 4
    rec_weights: tuple[float, ...] = (1.0, 0.5, 0.25)  # λ_k, k = 1 next to the classifier
    routing: Literal["soft", "top1"] = "soft"  # NAS routing at inference
    mixers: tuple[str, ...] = ("skip", "dwconv3", "conv1x1", "avgpool", "attention", "temporal_mlp")
    max_len: int = 128  # temporal_mlp's maximum conversation length
    # A learned speaker embedding added to every modality's projection (not in the paper;
    # cheap, and only built when a corpus has more than one speaker).
    speaker_embedding: bool = True
    # Baselines: free-form hyper-parameters, documented in each baseline's module.
    baseline: tuple[tuple[str, Any], ...] = ()

    def baseline_kwargs(self) -> dict[str, Any]:
        return dict(self.baseline)

    SECTION: ClassVar[str] = "model"

    def __post_init__(self) -> None:
        check_fields(self, {
            "hidden": at_least(1, True), "mlp_ratio": above(0), "dropout": unit_interval(),
            "heads": lambda v: None if v >= 1 and self.hidden % v == 0 else f"an integer >= 1 dividing model.hidden ({self.hidden})",
            "attn_dropout": unit_interval(), "input_dropout": unit_interval(), "checkpoint_above": at_least(0, True),
            "teacher_kind": one_of("TF", "NAS"), "student_kind": one_of("TF", "NAS"),
            "teacher_layers": at_least(1, True), "student_layers": at_least(1, True),
            "rec_weights": each(at_least(0)), "mixers": non_empty, "max_len": at_least(1, True),
        })


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the training-time missing-modality protocol (METHOD §5–§6)."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 5e-4
    router_lr: float = 5e-3
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    seed: int = 0
    protocol: Literal["ume", "ime"] = "ume"
    rate: float = 0.0  # ime: the training (and scoring) rate
    # UME training rate per batch (see masking.RateDistribution): "uniform" on
    # [rate_values[0], rate_values[1]], "fixed" at rate_values[0], or "choice" among rate_values.
    rate_dist: Literal["uniform", "fixed", "choice"] = "uniform"
    rate_values: tuple[float, ...] = (0.0, 0.7)
    # Training recipe (training/recipes.py): "shared" trains with the fields as given; "own"
    # asks for the method's registered recipe (its reference code's optimizer, lr, sizes,
    # epochs, batch unit), resolved at load time into the recipe's name, which results record.
    recipe: str = "shared"
    optimizer: Literal["adamw", "adam"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    # "linear": the lr stays constant for lr_constant_epochs, then decays linearly towards 0
    # at the last epoch (MMIN's code base's `lambda` policy).
    lr_schedule: Literal["constant", "linear"] = "constant"
    lr_constant_epochs: int = 0
    # "conversations": batches of whole conversations; "utterances": batches of single
    # utterances (utterance-level baselines, as their reference code trains them).
    batch_unit: Literal["conversations", "utterances"] = "conversations"
    # Early stopping: stop after this many evaluations without a better validation score
    # (0: off, as in the paper presets).
    patience: int = 0
    regression_loss: Literal["mse", "mae"] = "mse"
    device: str = "cpu"
    eval_every: int = 1
    num_workers: int = 0
    progress: bool = True

    SECTION: ClassVar[str] = "train"

    def __post_init__(self) -> None:
        device = re.compile(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?")
        check_fields(self, {
            "epochs": at_least(1, True), "batch_size": at_least(1, True), "lr": above(0), "router_lr": above(0),
            "weight_decay": at_least(0), "grad_clip": at_least(0), "rate": unit_interval(),
            "ume_max_rate": unit_interval(), "eval_every": at_least(1, True), "num_workers": at_least(0, True),
            "device": lambda v: None if device.fullmatch(v) else "cpu, cuda, cuda:N or mps",
            "rate_values": lambda v: non_empty(v) or each(unit_interval())(v), "betas": each(unit_interval()),
            "lr_constant_epochs": at_least(0, True), "patience": at_least(0, True),
        })


@dataclass(frozen=True)
class EvalConfig:
    """Scoring: rates, mask seed, fixed patterns."""

    rates: tuple[float, ...] = EVAL_RATES
    mask_seed: int = 0
    patterns: tuple[str, ...] = ()  # e.g. ("t", "ta", "tv"): fixed-pattern scenarios

    SECTION: ClassVar[str] = "eval"

    def __post_init__(self) -> None:
        pattern = re.compile(r"(?!.*(.).*\1)[tav]{1,3}")  # t/a/v letters, none repeated
        check_fields(self, {
            "rates": lambda v: non_empty(v) or each(unit_interval())(v),
            "patterns": each(lambda p: None if pattern.fullmatch(p) else "modality letters t, a, v, each at most once"),
        })


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        return from_dict(cls, d)

    @classmethod
    def from_json(cls, path: str | Path) -> ExperimentConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """Dataclass → JSON-able dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(x) for x in obj]
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """JSON value -> the annotation's shape (nested configs, tuples); types are checked later."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(a, v, where) for a, v in zip(args, value))
        return tuple(value)
    return value


def from_dict(cls: type[T], d: dict[str, Any], where: str = "") -> T:
    """Dict -> dataclass; unknown keys are an error (typos must not pass silently)."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of {cls.__name__} fields, got {d!r}")
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in d.items()}
    if cls is ModelConfig and "baseline" in kwargs:
        b = d["baseline"]
        try:
            kwargs["baseline"] = tuple(sorted(b.items())) if isinstance(b, dict) else tuple(tuple(x) for x in b)
        except TypeError:
            raise ConfigError(f"model.baseline: expected a mapping of hyper-parameters, got {b!r}") from None
    return cls(**kwargs)


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `over`, recursively for nested dicts (presets over defaults)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def replace(cfg: T, **changes: Any) -> T:
    """`dataclasses.replace` with dotted keys: replace(cfg, **{"train.epochs": 3})."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, sub in nested.items():
        flat[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **flat)  # type: ignore[type-var]


def set_override(d: dict[str, Any], text: str) -> dict[str, Any]:
    """A config dict with one `section.field=value` applied (value parsed as JSON, else kept
    as a string); the field must exist, the value is validated when the config is built."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: not of the form section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {key}=...: value nested too deeply") from None
    d = json.loads(json.dumps(d))  # a deep copy
    node = d
    parts = key.split(".")
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], dict):
            raise ConfigError(f"--set {text!r}: unknown config section {p!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"--set {text!r}: unknown config field {key!r}; known here: {sorted(node)}")
    node[parts[-1]] = value
    return d


def parse_override(cfg: ExperimentConfig, text: str) -> ExperimentConfig:
    """Apply one `section.field=value` override."""
    try:
        return ExperimentConfig.from_dict(set_override(cfg.to_dict(), text))
    except ConfigError as e:
        if str(e).startswith("--set"):
            raise
        raise ConfigError(f"--set {text!r}: {e}") from None


# Fields that change nothing a run computes: a resumed run or a rerun grid may differ in them.
RERUN_FREE_FIELDS: tuple[str, ...] = ("name", "train.progress", "train.device", "train.num_workers", "data.cache_dir")


def config_differences(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """Dotted names of the fields where two config dicts differ ('train.lr: 0.001 -> 0.01'),
    leaving out the `ignore`d names (fields that do not change what is computed)."""
    out: list[str] = []
    for k in sorted(set(old) | set(new)):
        name = f"{prefix}{k}"
        if name in ignore:
            continue
        a, b = old.get(k, "(absent)"), new.get(k, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, ignore, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out
