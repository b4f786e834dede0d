"""Protocol splits (METHOD §7): which dialogues train, select and score a model.

- IEMOCAP (`iemocap4`, `iemocap6`): 5-fold leave-one-session-out; fold k tests session k+1
  (session = 5th character of the dialogue id, `Ses01F_impro01` -> '1'). A seeded
  `val_fraction` of the training sessions' dialogues is held out for model selection.
- CMU-MOSI / MOSEI: `standard` is the train/valid/test video split in the label file;
  `poria` reads `poria_split.json` (train/test videos) and carves validation out of train.
- synthetic (and any other corpus): the split stored with the corpus (`Corpus.file_split`);
  without validation dialogues (a train/test split) validation is carved out of train.
- a corpus with folds (`Corpus.folds`, dialogue -> fold id: IEMOCAP's sessions, or a corpus
  folder whose split column holds fold ids): leave-one-fold-out, fold k tests the k-th fold
  id in sorted order (numeric ids numerically), validation carved out of train as for
  IEMOCAP. It shares IEMOCAP's split name (`loso-fold<k>`) and seeds, so an IEMOCAP copy
  given as a corpus folder splits and masks exactly as the original.

`selection="gcnet-compatible"` reproduces GCNet, which selects the model on the test set:
validation := test. Such a split is `flagged` and says so in its `note`.

Every split lists its dialogues sorted by dialogue id, so the flat utterance order that
fixed masks are drawn over does not depend on the order a loader happened to produce.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iteacnet.config import DataConfig
from iteacnet.data.corpus import Corpus
from iteacnet.errors import UserError
from iteacnet.masking import stable_seed

SELECTIONS: tuple[str, ...] = ("validation", "gcnet-compatible")
IEMOCAP_CORPORA: tuple[str, ...] = ("iemocap4", "iemocap6")
NUM_FOLDS = 5
GCNET_NOTE = "gcnet-compatible: model selection uses the test fold (GCNet's behaviour); scores are optimistic"


@dataclass(frozen=True)
class Split:
    """Dialogue indices (into the corpus) of each part of a protocol split."""

    train: tuple[int, ...]
    valid: tuple[int, ...]
    test: tuple[int, ...]
    name: str  # e.g. "loso-fold0", "standard", "poria"; seeds the fixed masks
    selection: str = "validation"  # "validation" | "gcnet-compatible"
    note: str = ""

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise UserError(f"unknown selection {self.selection!r}; expected one of {SELECTIONS}")
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        for part, ids in parts.items():
            if len(ids) == 0:
                raise UserError(f"split {self.name!r}: the {part} part is empty")
            if len(set(ids)) != len(ids):
                raise UserError(f"split {self.name!r}: the {part} part lists a dialogue twice")
        pairs = [("train", "valid"), ("train", "test")]
        if self.flagged:
            if set(self.valid) != set(self.test):
                raise UserError(f"split {self.name!r}: gcnet-compatible selection needs valid == test")
        else:
            pairs.append(("valid", "test"))
        for a, b in pairs:
            both = set(parts[a]) & set(parts[b])
            if both:
                raise UserError(f"split {self.name!r}: dialogue(s) {sorted(both)[:5]} are in both {a} and {b}")

    @property
    def flagged(self) -> bool:
        """True when the model is selected on the test set (gcnet-compatible)."""
        return self.selection == "gcnet-compatible"


def iemocap_folds() -> range:
    """The IEMOCAP folds: fold k tests session k+1."""
    return range(NUM_FOLDS)


def iemocap_session(dialogue_id: str) -> int:
    """Session number 1..5 of an IEMOCAP dialogue id (its 5th character)."""
    if len(dialogue_id) < 5 or not dialogue_id.startswith("Ses") or dialogue_id[4] not in "12345":
        raise UserError(f"{dialogue_id!r} is not an IEMOCAP dialogue id like 'Ses01F_impro01'")
    return int(dialogue_id[4])


def _sorted_by_id(corpus: Corpus, dialogues: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(dialogues, key=lambda i: corpus.dialogue_ids[i]))


def _carve_validation(
    corpus: Corpus, train: tuple[int, ...], fraction: float, seed: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Hold out round(fraction · n) (at least 1) of `train` as validation, seeded.

    The draw permutes the dialogues sorted by id with `np.random.default_rng(seed)`, so it
    depends on the set of dialogue ids and the seed only.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"val_fraction must be in (0, 1) for validation selection, got {fraction}")
    if len(train) < 2:
        raise UserError(f"cannot hold out validation from {len(train)} training dialogue(s)")
    ordered = _sorted_by_id(corpus, train)
    n_val = min(max(1, round(fraction * len(ordered))), len(ordered) - 1)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val = {ordered[i] for i in perm[:n_val]}
    return _sorted_by_id(corpus, (i for i in ordered if i not in val)), _sorted_by_id(corpus, val)


def _finish(
    corpus: Corpus,
    cfg: DataConfig,
    name: str,
    train: tuple[int, ...],
    test: tuple[int, ...],
    valid: tuple[int, ...] | None,
    seed_parts: tuple,
    notes: list[str],
) -> Split:
    """Apply the selection rule. `valid=None`: carve validation out of `train` (honest
    selection only); a given `valid` is used as is."""
    if cfg.selection == "gcnet-compatible":
        # GCNet trains on everything but the test set and selects on test.
        if valid is not None:
            notes.append(f"the {len(valid)} validation dialogue(s) of the file split are not used")
        notes.insert(0, GCNET_NOTE)
        return Split(train, test, test, name, "gcnet-compatible", "; ".join(notes))
    if cfg.selection != "validation":
        raise UserError(f"unknown selection {cfg.selection!r}; expected one of {SELECTIONS}")
    if valid is None:
        seed = stable_seed("validation", *seed_parts, cfg.split_seed)
        train, valid = _carve_validation(corpus, train, cfg.val_fraction, seed)
        notes.append(f"validation: {len(valid)} dialogue(s) held out of train (fraction {cfg.val_fraction}, seed {cfg.split_seed})")
    return Split(train, valid, test, name, "validation", "; ".join(notes))


def _iemocap_split(corpus: Corpus, cfg: DataConfig) -> Split:
    if cfg.split not in ("loso", "standard"):
        raise UserError(f"unknown split {cfg.split!r} for {corpus.name}; expected 'loso' (alias 'standard')")
    if cfg.fold not in iemocap_folds():
        raise UserError(f"IEMOCAP fold must be in 0..{NUM_FOLDS - 1}, got {cfg.fold}")
    session = cfg.fold + 1
    sessions = [iemocap_session(d) for d in corpus.dialogue_ids]
    test = _sorted_by_id(corpus, (i for i, s in enumerate(sessions) if s == session))
    train = _sorted_by_id(corpus, (i for i, s in enumerate(sessions) if s != session))
    if not test:
        raise UserError(f"{corpus.name}: no dialogue of session {session} (fold {cfg.fold})")
    notes = [f"leave-one-session-out: test = session {session}"]
    return _finish(corpus, cfg, f"loso-fold{cfg.fold}", train, test, None, ("loso", cfg.fold), notes)


def fold_ids(corpus: Corpus) -> list[str]:
    """The corpus's fold ids in fold order (numeric ids numerically, else as strings)."""
    ids = set(corpus.folds.values())
    numeric = all(i.lstrip("-").isdigit() for i in ids)
    return sorted(ids, key=(lambda i: (int(i), i)) if numeric else str)


def _fold_split(corpus: Corpus, cfg: DataConfig) -> Split:
    if cfg.split not in ("loso", "standard"):
        raise UserError(f"unknown split {cfg.split!r} for {corpus.name}; its folds take 'loso' (alias 'standard')")
    ids = fold_ids(corpus)
    if not 0 <= cfg.fold < len(ids):
        raise UserError(f"{corpus.name}: fold must be in 0..{len(ids) - 1} (fold ids {ids}), got {cfg.fold}")
    held = ids[cfg.fold]
    index = corpus.dialogue_index()
    test = _sorted_by_id(corpus, (index[d] for d, f in corpus.folds.items() if f == held and d in index))
    train = _sorted_by_id(corpus, (index[d] for d, f in corpus.folds.items() if f != held and d in index))
    notes = [f"leave-one-fold-out: test = fold {held!r}"]
    left_out = corpus.num_dialogues - len(test) - len(train)
    if left_out:
        notes.append(f"{left_out} dialogue(s) of the corpus are in no fold and are left out")
    return _finish(corpus, cfg, f"loso-fold{cfg.fold}", train, test, None, ("loso", cfg.fold), notes)


def _file_split(corpus: Corpus, cfg: DataConfig) -> Split:
    if not corpus.file_split:
        raise UserError(f"{corpus.name}: the corpus carries no file split (Corpus.file_split is empty)")
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    index = corpus.dialogue_index()
    for did, part in corpus.file_split.items():
        if part not in parts:
            raise UserError(f"{corpus.name}: dialogue {did!r} has unknown split part {part!r}")
        if did in index:
            parts[part].append(index[did])
    unassigned = corpus.num_dialogues - sum(len(p) for p in parts.values())
    notes = ["the train/valid/test split of the label file"]
    if unassigned:
        notes.append(f"{unassigned} dialogue(s) of the corpus are in no part and are left out")
    train, valid, test = (_sorted_by_id(corpus, parts[p]) for p in ("train", "valid", "test"))
    if not valid:  # a train/test split (e.g. DialogueRNN's pickles): validation is carved out of train
        notes.append("the file split has no validation dialogues")
        return _finish(corpus, cfg, "standard", train, test, None, ("standard",), notes)
    return _finish(corpus, cfg, "standard", train, test, valid, ("standard",), notes)


def _poria_split(corpus: Corpus, cfg: DataConfig, path: Path | None) -> Split:
    if path is None:
        if not cfg.root:
            raise UserError("the poria split needs DataConfig.root (or poria_split_path)")
        path = Path(cfg.root) / "poria_split.json"
    if not path.is_file():
        raise UserError(f"no Poria split file at {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not {"train", "test"} <= set(data):
        raise UserError(f"{path}: expected a JSON object with 'train' and 'test' video lists")
    index = corpus.dialogue_index()
    both = set(data["train"]) & set(data["test"])
    if both:
        raise UserError(f"{path}: video(s) {sorted(both)[:5]} are in both train and test")
    train = _sorted_by_id(corpus, (index[v] for v in data["train"] if v in index))
    test = _sorted_by_id(corpus, (index[v] for v in data["test"] if v in index))
    notes = [f"Poria et al. train/test videos from {path.name}"]
    absent = len(set(data["train"]) | set(data["test"])) - len(train) - len(test)
    left_out = corpus.num_dialogues - len(train) - len(test)
    if absent:
        notes.append(f"{absent} video(s) of the split file are not in the corpus")
    if left_out:
        notes.append(f"{left_out} dialogue(s) of the corpus are in neither list and are left out")
    return _finish(corpus, cfg, "poria", train, test, None, ("poria",), notes)


def make_split(corpus: Corpus, cfg: DataConfig, poria_split_path: Path | None = None) -> Split:
    """The protocol split of `corpus` under `cfg` (split, fold, val_fraction, split_seed,
    selection). Raises ValueError for a fold outside 0..4, an unknown split name, an empty
    part or a dialogue in two parts."""
    if corpus.folds:
        return _fold_split(corpus, cfg)
    if corpus.name in IEMOCAP_CORPORA:
        return _iemocap_split(corpus, cfg)
    if cfg.split == "standard":
        return _file_split(corpus, cfg)
    if cfg.split == "poria":
        return _poria_split(corpus, cfg, poria_split_path)
    raise UserError(f"unknown split {cfg.split!r} for {corpus.name}; expected 'standard' or 'poria'")
