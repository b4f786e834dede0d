"""Loader for corpora in the GCNet layout (github zeroQiaoba/GCNet).

Layout under a corpus root (e.g. `IEMOCAP/`, `CMUMOSI/`):
- `<label_file>.pkl`: a latin-1 pickle holding a list
  - IEMOCAP: `[videoIDs, videoLabels, videoSpeakers, videoSentence, trainVid, testVid]`
  - CMU-MOSI/MOSEI: `[videoIDs, videoLabels, videoSpeakers, videoSentence, trainVids, valVids, testVids]`
  where each of the first four is a dict keyed by dialogue id with values in utterance order.
- `features/<folder>/<utt>.npy`: one file per utterance, 1-D `(d,)` or 2-D `(time, d)`
  (2-D is averaged over time, as GCNet does). GCNet also accepts suffixed names
  (`<utt>_xxx.npy`), matched here by prefix, and directories `features/<folder>/<utt>/`:
  for IEMOCAP one file per speaker (`compress_F.npy`, `compress_M.npy`), of which the file
  of the utterance's speaker is used; for MOSI/MOSEI all files of the directory are averaged.

Every defect is a `CorpusError` naming the file or utterance at fault; nothing is
silently zero-filled. Only with `allow_missing_files=True` does a missing feature file
become a missing modality (`Corpus.available[m][row] = False`), counted in `Corpus.notes`.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.config import MODALITIES
from iteacnet.data.assemble import UtteranceRows, assemble_corpus
from iteacnet.data.corpus import CORPUS_SPECS, Corpus, CorpusError
from iteacnet.data.safe_pickle import load_label_file
from iteacnet.files import check_npy_size

GCNET_CORPORA: tuple[str, ...] = ("iemocap4", "iemocap6", "cmumosi", "cmumosei")
# Bump when the loader's output for the same inputs changes, so disk caches are rebuilt.
# 2: IEMOCAP corpora carry their sessions as `Corpus.folds`.
LOADER_VERSION = 2
MOSI_LABEL_RANGE: tuple[float, float] = (-3.0, 3.0)
_SPLIT_NAMES_IEMOCAP = ("train", "test")
_SPLIT_NAMES_MOSI = ("train", "valid", "test")
_SHOW = 5  # how many culprits an error message lists


__all__ = ["CorpusError", "GCNET_CORPORA", "load_gcnet_corpus", "parse_label_file"]


def _is_iemocap(name: str) -> bool:
    return name.startswith("iemocap")


def _short(items: Sequence[str]) -> str:
    head = ", ".join(repr(x) for x in items[:_SHOW])
    return head + (f", … ({len(items)} in all)" if len(items) > _SHOW else "")


# --------------------------------------------------------------------------- label file


def _as_str(x: Any, what: str, where: str) -> str:
    if isinstance(x, str):  # np.str_ is a str subclass
        return str(x)
    if isinstance(x, bytes):
        return x.decode("latin-1")
    raise CorpusError(f"{where}: {what} must be a string, got {type(x).__name__} {x!r}")


def _as_sequence(x: Any, what: str, where: str) -> list:
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise CorpusError(f"{where}: {what} must be 1-D, got an array of shape {x.shape}")
        return list(x)
    if isinstance(x, (list, tuple)):
        return list(x)
    raise CorpusError(f"{where}: {what} must be a list, got {type(x).__name__}")


def _keyed(d: Any, what: str, where: str) -> dict[str, Any]:
    """Dict keyed by dialogue id, keys as str; keys that collide as str are duplicates."""
    if not isinstance(d, dict):
        raise CorpusError(f"{where}: {what} must be a dict keyed by dialogue id, got {type(d).__name__}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = _as_str(k, f"a dialogue id of {what}", where)
        if key in out:
            raise CorpusError(f"{where}: duplicate dialogue id {key!r} in {what}")
        out[key] = v
    return out


def _class_label(v: Any, num_classes: int, utt: str, where: str) -> int:
    if isinstance(v, (bool, np.bool_)):
        raise CorpusError(f"{where}: label of utterance {utt!r} is a boolean ({v!r}), expected a class index")
    if isinstance(v, (int, np.integer)):
        y = int(v)
    elif isinstance(v, (float, np.floating)) and math.isfinite(float(v)) and float(v).is_integer():
        y = int(v)
    else:
        raise CorpusError(f"{where}: label of utterance {utt!r} is {v!r}, expected an integer class index")
    if not 0 <= y < num_classes:
        raise CorpusError(
            f"{where}: label {y} of utterance {utt!r} is outside the {num_classes} classes [0, {num_classes - 1}]"
        )
    return y


def _score_label(v: Any, utt: str, where: str, score_range: tuple[float, float] | None = MOSI_LABEL_RANGE) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise CorpusError(f"{where}: label of utterance {utt!r} is {v!r}, expected a sentiment score")
    y = float(v)
    if score_range is None:
        if not math.isfinite(y):
            raise CorpusError(f"{where}: label {y} of utterance {utt!r} is not finite")
        return y
    lo, hi = score_range
    if not (math.isfinite(y) and lo <= y <= hi):
        raise CorpusError(f"{where}: label {y} of utterance {utt!r} is outside [{lo:g}, {hi:g}]")
    return y


def _parse_label_file(name: str, path: Path) -> UtteranceRows:
    spec = CORPUS_SPECS[name]
    split_names = _SPLIT_NAMES_IEMOCAP if _is_iemocap(name) else _SPLIT_NAMES_MOSI
    return parse_label_file(path, spec["task"], len(spec["classes"]), split_names)


def parse_label_file(
    path: Path,
    task: str,
    num_classes: int = 0,
    split_names: tuple[str, ...] | None = None,
    score_range: tuple[float, float] | None = MOSI_LABEL_RANGE,
) -> UtteranceRows:
    """Read a GCNet label pickle of any corpus: `[videoIDs, videoLabels, videoSpeakers,
    videoSentence, <split lists>]`. `split_names` None: 6 items are train/test, 7
    train/valid/test. Classification labels must lie in [0, num_classes)."""
    where = str(path)
    items = load_label_file(path)
    if split_names is None:
        split_names = {6: _SPLIT_NAMES_IEMOCAP, 7: _SPLIT_NAMES_MOSI}.get(len(items), _SPLIT_NAMES_MOSI)
    expected = 4 + len(split_names)
    if len(items) != expected:
        layout = "[videoIDs, videoLabels, videoSpeakers, videoSentence, " + ", ".join(
            f"{s}Vid" for s in split_names) + "]"
        raise CorpusError(f"{where}: expected a list of {expected} items {layout}, got {len(items)}")
    ids = _keyed(items[0], "videoIDs", where)
    labels_by = _keyed(items[1], "videoLabels", where)
    speakers_by = _keyed(items[2], "videoSpeakers", where)
    sentences_by = _keyed(items[3], "videoSentence", where)

    # Split membership: every listed dialogue must exist and be listed once.
    file_split: dict[str, str] = {}
    for split, members in zip(split_names, items[4:]):
        if not isinstance(members, (set, frozenset, list, tuple, np.ndarray)):
            raise CorpusError(f"{where}: the {split} split must be a set or list of dialogue ids, got {type(members).__name__}")
        for raw in members:
            did = _as_str(raw, f"a dialogue id of the {split} split", where)
            if did not in ids:
                raise CorpusError(f"{where}: dialogue {did!r} of the {split} split is not in videoIDs")
            if did in file_split:
                other = file_split[did]
                raise CorpusError(
                    f"{where}: duplicate dialogue id {did!r}: listed "
                    + (f"twice in the {split} split" if other == split else f"in both the {other} and {split} splits")
                )
            file_split[did] = split

    is_class = task == "classification"
    dialogue_ids = sorted(ids)
    utt_ids: list[str] = []
    speakers: list[str] = []
    labels: list[Any] = []
    transcripts: list[str] = []
    offsets = [0]
    owner: dict[str, str] = {}
    for did in dialogue_ids:
        for what, table in (("videoLabels", labels_by), ("videoSpeakers", speakers_by), ("videoSentence", sentences_by)):
            if did not in table:
                raise CorpusError(f"{where}: dialogue {did!r} is in videoIDs but not in {what}")
        u = [_as_str(x, f"an utterance id of dialogue {did!r}", where) for x in _as_sequence(ids[did], f"videoIDs[{did!r}]", where)]
        y = _as_sequence(labels_by[did], f"videoLabels[{did!r}]", where)
        s = _as_sequence(speakers_by[did], f"videoSpeakers[{did!r}]", where)
        t = _as_sequence(sentences_by[did], f"videoSentence[{did!r}]", where)
        if not u:
            raise CorpusError(f"{where}: dialogue {did!r} is empty (no utterances)")
        if not len(u) == len(y) == len(s) == len(t):
            raise CorpusError(
                f"{where}: dialogue {did!r} has {len(u)} utterance ids but {len(y)} labels, "
                f"{len(s)} speakers and {len(t)} sentences"
            )
        for utt in u:
            if utt in owner:
                first = owner[utt]
                place = "twice in dialogue" if first == did else f"in dialogues {first!r} and"
                raise CorpusError(f"{where}: duplicate utterance id {utt!r} ({place} {did!r})")
            owner[utt] = did
        for utt, v in zip(u, y):
            labels.append(_class_label(v, num_classes, utt, where) if is_class else _score_label(v, utt, where, score_range))
        speakers.extend(_as_str(x, f"a speaker of dialogue {did!r}", where) for x in s)
        transcripts.extend(_as_str(x, f"a sentence of dialogue {did!r}", where) for x in t)
        utt_ids.extend(u)
        offsets.append(offsets[-1] + len(u))
    return UtteranceRows(
        dialogue_ids=dialogue_ids,
        utterance_ids=utt_ids,
        offsets=np.asarray(offsets, dtype=np.int64),
        speakers=speakers,
        labels=np.asarray(labels, dtype=np.int64 if is_class else np.float32),
        transcripts=transcripts,
        file_split=file_split,
    )


# --------------------------------------------------------------------------- feature folders

_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")


class _FolderIndex:
    """One listing of a feature folder, resolving utterance ids to files or directories."""

    def __init__(self, folder: Path, known_ids: Iterable[str]) -> None:
        self.folder = folder
        self.dirs: set[str] = set()
        files: set[str] = set()
        with os.scandir(folder) as it:
            for e in it:
                if e.is_dir():
                    self.dirs.add(e.name)
                elif e.name.endswith(".npy"):
                    files.add(e.name)
        self.files = files
        self.sorted_names = sorted(files | self.dirs)
        self.known = set(known_ids)

    def _owner(self, entry: str, utt: str) -> bool:
        """Is `entry` better explained by a longer known utterance id than `utt`?"""
        for k in range(len(utt) + 1, len(entry) + 1):
            if (k == len(entry) or not entry[k].isalnum()) and entry[:k] in self.known:
                return True
        return False

    def resolve(self, utt: str) -> Path | None:
        if utt + ".npy" in self.files:
            return self.folder / (utt + ".npy")
        if utt in self.dirs:
            return self.folder / utt
        i = bisect.bisect_left(self.sorted_names, utt)
        candidates = []
        while i < len(self.sorted_names) and self.sorted_names[i].startswith(utt):
            entry = self.sorted_names[i]
            i += 1
            # `<utt>` must end at a separator: `a_1` must not claim `a_10.npy`.
            if len(entry) > len(utt) and not entry[len(utt)].isalnum() and not self._owner(entry, utt):
                candidates.append(entry)
        if len(candidates) > 1:
            raise CorpusError(
                f"{self.folder}: utterance {utt!r} matches several feature files/directories: {_short(candidates)}"
            )
        return self.folder / candidates[0] if candidates else None


def _speaker_files(directory: Path, speaker: str) -> list[Path]:
    """IEMOCAP visual: the file(s) of `speaker` in a per-utterance directory.

    GCNet files faces by speaker letter in the name (`compress_F.npy`); we take the files
    whose last alphanumeric token of the stem is the letter.
    """
    out = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".npy"):
            continue
        tokens = [t for t in _NON_ALNUM.split(name[: -len(".npy")]) if t]
        if tokens and tokens[-1] == speaker:
            out.append(directory / name)
    return out


def _all_files(directory: Path) -> list[Path]:
    return [directory / n for n in sorted(os.listdir(directory)) if n.endswith(".npy")]


def _read_npy(path: Path) -> np.ndarray:
    """One feature file → (rows, d) float64, validated (readable, non-empty, numeric, finite)."""
    try:
        check_npy_size(path)
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise CorpusError(f"corrupt feature file {path}: {e}") from e
    if not isinstance(x, np.ndarray):  # an .npz archive opens as a lazy NpzFile
        x.close()
        raise CorpusError(f"corrupt feature file {path}: not a single .npy array")
    if x.dtype.kind not in "biuf":
        raise CorpusError(f"feature file {path} has non-numeric dtype {x.dtype}")
    if x.size == 0:
        raise CorpusError(f"feature file {path} is empty (shape {x.shape})")
    while x.ndim > 2 and x.shape[0] == 1:  # GCNet squeezes leading singleton axes
        x = x[0]
    if x.ndim == 0 or x.ndim > 2:
        raise CorpusError(f"feature file {path} has shape {x.shape}; expected (d,) or (time, d)")
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    rows = rows.astype(np.float64, copy=False)
    if not np.isfinite(rows).all():
        raise CorpusError(f"feature file {path} contains NaN or Inf")
    return rows


def _read_feature(paths: list[Path]) -> np.ndarray:
    """Average all rows of the given files (time frames, faces) into one (d,) float32 vector."""
    blocks = [_read_npy(p) for p in paths]
    dims = {b.shape[1] for b in blocks}
    if len(dims) > 1:
        raise CorpusError(f"feature files of different dimensions {sorted(dims)} for one utterance: {_short([str(p) for p in paths])}")
    v = np.concatenate(blocks).mean(axis=0).astype(np.float32)
    if not np.isfinite(v).all():
        raise CorpusError(f"feature file(s) {_short([str(p) for p in paths])} overflow float32")
    return v


def _load_modality(
    modality: str,
    folder: Path,
    labels: UtteranceRows,
    per_speaker_dirs: bool,
    allow_missing_files: bool,
    label_path: Path,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, d) float32 features, (N,) availability, and the utterances without a file."""
    index = _FolderIndex(folder, labels.utterance_ids)
    # Pass 1: resolve every utterance to its file(s), without reading, so that missing
    # files are reported all at once before any slow loading.
    resolved: list[list[Path] | None] = []
    for utt, spk in zip(labels.utterance_ids, labels.speakers):
        hit = index.resolve(utt)
        if hit is None:
            resolved.append(None)
        elif hit.name in index.dirs:
            files = _speaker_files(hit, spk) if per_speaker_dirs else _all_files(hit)
            resolved.append(files or None)
        else:
            resolved.append([hit])
    missing = [u for u, r in zip(labels.utterance_ids, resolved) if r is None]
    if missing and not allow_missing_files:
        first = missing[0]
        raise CorpusError(
            f"{len(missing)} of {len(resolved)} utterances of {label_path.name} have no {modality} feature "
            f"file in {folder}: {_short(missing)} (expected e.g. {folder / (first + '.npy')}"
            + (f" or {folder / first}/<...>_<speaker>.npy" if per_speaker_dirs else "")
            + "); pass allow_missing_files=True to treat them as missing modalities"
        )
    if len(missing) == len(resolved):
        raise CorpusError(f"no utterance of {label_path.name} has a {modality} feature file in {folder}")

    rows = [i for i, r in enumerate(resolved) if r is not None]
    iterator: Iterable[int] = rows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rows, desc=f"{modality} ({folder.name})", unit="utt", leave=False)
    vectors: dict[int, np.ndarray] = {}
    first_file: dict[int, Path] = {}
    for i in iterator:
        paths = resolved[i]
        assert paths is not None  # rows holds only resolved utterances
        vectors[i] = _read_feature(paths)
        first_file[i] = paths[0]

    # Every file of a folder must share one dimension; name the odd ones out.
    dims = Counter(v.shape[0] for v in vectors.values())
    d, _ = dims.most_common(1)[0]
    odd = [i for i in rows if vectors[i].shape[0] != d]
    if odd:
        culprits = [f"{first_file[i]} (dim {vectors[i].shape[0]})" for i in odd]
        raise CorpusError(
            f"{folder}: {len(odd)} feature file(s) differ from the folder's dimension {d}: {_short(culprits)}"
        )
    x = np.zeros((len(resolved), d), dtype=np.float32)
    available = np.zeros(len(resolved), dtype=bool)
    for i, v in vectors.items():
        x[i] = v
        available[i] = True
    return x, available, missing


# --------------------------------------------------------------------------- public


def feature_folder(root: str | Path, folder: str) -> Path:
    """`<root>/features/<folder>` (an absolute `folder` is used as is)."""
    return Path(root) / "features" / folder


def load_gcnet_corpus(
    name: str,
    root: str | Path,
    features: dict[str, str],
    allow_missing_files: bool = False,
    progress: bool = False,
) -> Corpus:
    """Load `iemocap4 | iemocap6 | cmumosi | cmumosei` from a GCNet-layout folder.

    `features` maps modality → folder name under `<root>/features`; an empty folder name
    leaves the modality out. Dialogues are ordered by id; `Corpus.file_split` holds the
    label file's split (IEMOCAP: train/test only).
    """
    if name not in GCNET_CORPORA:
        raise CorpusError(f"unknown GCNet corpus {name!r}; known: {', '.join(GCNET_CORPORA)}")
    unknown = sorted(set(features) - set(MODALITIES))
    if unknown:
        raise CorpusError(f"unknown modality {unknown}; expected some of {MODALITIES}")
    chosen = {m: features[m] for m in MODALITIES if features.get(m)}
    if not chosen:
        raise CorpusError(f"{name}: no modality selected; give a feature folder for at least one of {MODALITIES}")
    root = Path(root)
    label_path = root / CORPUS_SPECS[name]["label_file"]
    if not label_path.is_file():
        raise CorpusError(f"{name}: label file not found: {label_path}")
    folders = {m: feature_folder(root, f) for m, f in chosen.items()}
    for m, folder in folders.items():
        if not folder.is_dir():
            raise CorpusError(f"{name}: {m} feature folder not found: {folder}")

    labels = _parse_label_file(name, label_path)
    spec = CORPUS_SPECS[name]
    notes: list[str] = [f"{name} loaded from {label_path} ({len(labels.dialogue_ids)} dialogues, {len(labels.utterance_ids)} utterances)"]
    feats: dict[str, np.ndarray] = {}
    available: dict[str, np.ndarray] = {}
    for m, folder in folders.items():
        x, avail, missing = _load_modality(
            m, folder, labels, _is_iemocap(name), allow_missing_files, label_path, progress
        )
        feats[m], available[m] = x, avail
        notes.append(f"{m}: {folder.name} ({x.shape[1]}-d)")
        if missing:
            notes.append(
                f"{m}: {len(missing)} of {len(avail)} utterances have no feature file in {folder}; "
                f"loaded as a missing modality (e.g. {_short(missing)})"
            )
    unsplit = [d for d in labels.dialogue_ids if d not in labels.file_split]
    if unsplit:
        notes.append(f"{len(unsplit)} dialogue(s) are in no split of the label file: {_short(unsplit)}")
    if _is_iemocap(name):
        notes.append("the IEMOCAP label file splits train/test only (no validation split)")
        # Leave-one-session-out folds (evaluation/splits.py): session = 5th character. Left
        # empty if an id is not IEMOCAP's, so that the split names the culprit.
        sessions = {d: d[4] for d in labels.dialogue_ids if len(d) >= 5 and d.startswith("Ses") and d[4] in "12345"}
        if len(sessions) == len(labels.dialogue_ids):
            labels.folds = sessions
    return assemble_corpus(name, spec["task"], tuple(spec["classes"]), labels, feats, available, notes)
