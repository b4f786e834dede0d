"""Experiment configuration: frozen dataclasses nested into one `ExperimentConfig`.

Every result and checkpoint is saved next to `config.json` (`ExperimentConfig.to_json`).
Defaults follow METHOD.md §8; every choice the spec leaves open is a field here.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

MODALITIES: tuple[str, ...] = ("text", "audio", "visual")
EVAL_RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


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


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, which features, which split."""

    corpus: str = "synthetic"  # synthetic | iemocap4 | iemocap6 | cmumosi | cmumosei
    root: str = ""  # GCNet-layout folder (e.g. ../shared/data/CMUMOSI); empty for synthetic
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
    cache_dir: str = ""  # empty: <root>/.iteacnet-cache ; synthetic is never cached
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


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


@dataclass(frozen=True)
class EvalConfig:
    """Scoring: rates, mask seed, fixed patterns."""

    rates: tuple[float, ...] = EVAL_RATES
    mask_seed: int = 0
    patterns: tuple[str, ...] = ()  # e.g. ("t", "ta", "tv"): fixed-pattern scenarios


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        if args:
            return tuple(_coerce(a, v) for a, v in zip(args, value))
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Dict → dataclass; unknown keys are an error (typos must not pass silently)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v) for k, v in d.items()}
    if cls is ModelConfig and "baseline" in kwargs:
        b = d["baseline"]
        kwargs["baseline"] = tuple(sorted(b.items())) if isinstance(b, dict) else tuple(tuple(x) for x in b)
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


def parse_override(cfg: ExperimentConfig, text: str) -> ExperimentConfig:
    """Apply one `section.field=value` override (value parsed as JSON, else kept as a string)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    d = cfg.to_dict()
    node = d
    parts = key.split(".")
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], dict):
            raise ValueError(f"unknown config section {p!r} in override {text!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ValueError(f"unknown config field {key!r}; known here: {sorted(node)}")
    node[parts[-1]] = value
    return ExperimentConfig.from_dict(d)
