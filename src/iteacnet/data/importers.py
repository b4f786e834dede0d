"""Importers: the layouts users already hold -> a corpus folder (data/table.py).

    iteacnet data import --from gcnet|dialoguernn|mmsa --input FILE --out DIR [...]

Every pickle is read with the restricted unpickler (data/safe_pickle.py); every defect is a
`CorpusError` (an `ImportFormatError`) naming the file and the dialogue, utterance or key.
The formats, as the reference code writes and reads them (see README, "Your own corpus"):

- `gcnet`: a GCNet label pickle of any corpus, `[videoIDs, videoLabels, videoSpeakers,
  videoSentence, trainVids, (valVids,) testVids]`, with per-utterance feature folders
  `<root>/features/<name>/<utt>.npy` (read by the GCNet-layout loader's code). Integer labels
  make a classification corpus (class count: --classes, else the largest label + 1), others
  a regression corpus. IEMOCAP dialogue ids also give the sessions as folds.
- `dialoguernn`: conv-emotion's pickles, a tuple of dicts keyed by dialogue. IEMOCAP
  layout (9 items): videoIDs, videoSpeakers, videoLabels, videoText, videoAudio,
  videoVisual, videoSentence, trainVid, testVid. MELD layout (9 items): videoIDs,
  videoSpeakers (one-hot rows), emotion labels (7 classes), videoText, videoAudio,
  videoSentence, trainVid, testVid, sentiment labels (3 classes; the ones DialogueRNN's
  MELDDataset reads); `meld_labels` picks one. Feature values are per-utterance vectors,
  (T, d) per dialogue.
- `mmsa`: thuiar/MMSA's `aligned_50.pkl` / `unaligned_50.pkl`, a dict train / valid / test
  of dicts: id (`<video>$_$<clip>`), raw_text, text (N, L, d) (or text_bert, token ids:
  not features), audio, vision (N, L, d) with audio_lengths / vision_lengths (unaligned),
  regression_labels. Sequences are averaged over their valid length; a video is a
  dialogue, its clips in clip order, one speaker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.config import MODALITIES
from iteacnet.data.assemble import DEFAULT_MAX_ROLES, UtteranceRows
from iteacnet.data.corpus import CORPUS_SPECS, CorpusError
from iteacnet.data.gcnet import (
    MOSI_LABEL_RANGE,
    _as_sequence,
    _as_str,
    _keyed,
    _load_modality,
    feature_folder,
    parse_label_file,
)
from iteacnet.data.safe_pickle import UnsafePickleError, safe_load
from iteacnet.data.table import write_corpus_folder

FORMATS: tuple[str, ...] = ("gcnet", "dialoguernn", "mmsa")
# conv-emotion DialogueRNN/dataloader.py, the label index mapping of IEMOCAPDataset.
DIALOGUERNN_IEMOCAP_CLASSES = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
MMSA_MODALITIES = {"text": "text", "audio": "audio", "visual": "vision"}


class ImportFormatError(CorpusError):
    """An input file that is not in the format named by --from; the message says where."""


def _load(path: Path, object_arrays: bool = False) -> Any:
    if not path.is_file():
        raise ImportFormatError(f"input file not found: {path}")
    try:
        return safe_load(path, object_arrays=object_arrays)
    except UnsafePickleError as e:
        raise ImportFormatError(str(e)) from None


def _class_names(given: Sequence[str] | None, labels: np.ndarray, default: Sequence[str], where: str) -> tuple[str, ...]:
    top = int(labels.max()) + 1 if len(labels) else 0
    if given:
        if top > len(given):
            raise ImportFormatError(f"{where}: labels reach {top - 1} but only {len(given)} class names were given")
        return tuple(given)
    if default and top <= len(default):
        return tuple(default)
    return tuple(str(i) for i in range(max(top, 2)))


def _iemocap_folds(dialogue_ids: list[str]) -> dict[str, str]:
    """Sessions as folds when every id is IEMOCAP's (`Ses01F_impro01` -> '1'), else none."""
    folds = {d: d[4] for d in dialogue_ids if len(d) >= 5 and d.startswith("Ses") and d[4] in "12345"}
    return folds if len(folds) == len(dialogue_ids) else {}


# --------------------------------------------------------------------------- gcnet


def import_gcnet(
    label_file: str | Path,
    out: str | Path,
    features: dict[str, str],
    root: str | Path | None = None,
    name: str = "",
    classes: Sequence[str] | None = None,
    speakers: str = "",
    max_roles: int = DEFAULT_MAX_ROLES,
    allow_missing_files: bool = False,
    overwrite: bool = False,
) -> Path:
    """A GCNet-layout corpus (label pickle + feature folders under `<root>/features`) -> folder.

    A known label file (IEMOCAP_features_raw_4way.pkl, …) keeps its corpus's name, classes and
    identities; any other is named after the file, with per-dialogue roles unless `speakers`.
    """
    label_file = Path(label_file)
    root = Path(root) if root is not None else label_file.parent
    where = str(label_file)
    known = next((n for n, s in CORPUS_SPECS.items() if s["label_file"] and s["label_file"] == label_file.name), None)
    items = _load(label_file)
    if not isinstance(items, (list, tuple)) or len(items) not in (6, 7):
        got = f"a list of {len(items)} items" if isinstance(items, (list, tuple)) else type(items).__name__
        raise ImportFormatError(f"{where}: expected a GCNet label list [videoIDs, videoLabels, videoSpeakers, "
                                f"videoSentence, train, (valid,) test] of 6 or 7 items, got {got}")
    values = [v for seq in _keyed(items[1], "videoLabels", where).values() for v in _as_sequence(seq, "videoLabels", where)]
    integer = bool(values) and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values)
    if known is not None:
        task = CORPUS_SPECS[known]["task"]
        default_classes: Sequence[str] = CORPUS_SPECS[known]["classes"]
    else:
        task = "classification" if integer or classes else "regression"
        default_classes = ()
    num_classes = len(classes) if classes else (len(default_classes) or (int(max(values)) + 1 if integer else 0))
    score_range = MOSI_LABEL_RANGE if known in ("cmumosi", "cmumosei") else None
    rows = parse_label_file(label_file, task, num_classes, None, score_range)
    rows.folds = _iemocap_folds(rows.dialogue_ids)
    names = _class_names(classes, rows.labels, default_classes, where) if task == "classification" else ()
    feats = {}
    per_speaker = known is not None and known.startswith("iemocap")
    for m in MODALITIES:
        folder_name = features.get(m)
        if not folder_name:
            continue
        folder = feature_folder(root, folder_name)
        if not folder.is_dir():
            raise ImportFormatError(f"{m} feature folder not found: {folder}")
        x, avail, _ = _load_modality(m, folder, rows, per_speaker, allow_missing_files, label_file, False)
        feats[m] = (x, avail)
    if not feats:
        raise ImportFormatError(f"{where}: no feature folder given; name at least one with --text/--audio/--visual")
    scheme = speakers or ("identities" if known else "roles")
    return write_corpus_folder(out, name or known or label_file.stem, task, names, rows, feats, scheme, max_roles,
                               score_range, overwrite)


# --------------------------------------------------------------------------- dialoguernn


def _matrix(value: Any, n: int, what: str, where: str) -> np.ndarray:
    """(n, d) float32 of a per-dialogue feature value (array or list of vectors)."""
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ImportFormatError(f"{where}: {what} is not a numeric (utterances, d) array") from None
    if x.ndim != 2 or x.shape[0] != n or x.shape[1] == 0:
        raise ImportFormatError(f"{where}: {what} has shape {x.shape}, expected ({n}, d): one vector per utterance")
    if not np.isfinite(x).all():
        raise ImportFormatError(f"{where}: {what} contains NaN or Inf")
    return x.astype(np.float32)


def _speaker_name(v: Any, what: str, where: str) -> str:
    if isinstance(v, (str, bytes)):
        return _as_str(v, what, where)
    x = np.asarray(v)
    if x.ndim == 1 and x.size > 0 and x.dtype.kind in "biuf":  # MELD: one-hot rows
        return str(int(np.argmax(x)))
    raise ImportFormatError(f"{where}: {what} is {v!r}, expected a name or a one-hot vector")


def import_dialoguernn(
    path: str | Path,
    out: str | Path,
    layout: str = "iemocap",
    meld_labels: str = "emotion",
    name: str = "",
    classes: Sequence[str] | None = None,
    speakers: str = "",
    max_roles: int = DEFAULT_MAX_ROLES,
    overwrite: bool = False,
) -> Path:
    """A conv-emotion/DialogueRNN-style pickle (IEMOCAP or MELD layout) -> corpus folder."""
    path = Path(path)
    where = str(path)
    items = _load(path)
    if layout not in ("iemocap", "meld"):
        raise ImportFormatError(f"unknown DialogueRNN layout {layout!r}; expected 'iemocap' or 'meld'")
    if not isinstance(items, (list, tuple)) or len(items) != 9:
        got = f"{len(items)} items" if isinstance(items, (list, tuple)) else type(items).__name__
        raise ImportFormatError(f"{where}: expected DialogueRNN's tuple of 9 items ({layout} layout), got {got}")
    if layout == "iemocap":
        ids, spk, lab, text, audio, visual, sent, train, test = items
        mods = {"text": text, "audio": audio, "visual": visual}
        names_of = ("videoIDs", "videoSpeakers", "videoLabels", "videoSentence")
    else:
        if meld_labels not in ("emotion", "sentiment"):
            raise ImportFormatError(f"unknown MELD labels {meld_labels!r}; expected 'emotion' or 'sentiment'")
        ids, spk, emotion, text, audio, sent, train, test, sentiment = items
        lab = emotion if meld_labels == "emotion" else sentiment
        mods = {"text": text, "audio": audio}
        item = "item 3" if meld_labels == "emotion" else "item 9"
        names_of = ("videoIDs", "videoSpeakers", f"videoLabels ({meld_labels}, {item})", "videoSentence")
    ids_by = _keyed(ids, names_of[0], where)
    spk_by = _keyed(spk, names_of[1], where)
    lab_by = _keyed(lab, names_of[2], where)
    sent_by = _keyed(sent, names_of[3], where)
    feat_by = {m: _keyed(v, f"video{m.capitalize()}", where) for m, v in mods.items()}
    file_split: dict[str, str] = {}
    for part, members in (("train", train), ("test", test)):
        for raw in _as_sequence(list(members) if isinstance(members, (set, frozenset)) else members, f"{part}Vid", where):
            did = _as_str(raw, f"a dialogue id of {part}Vid", where)
            if did not in ids_by:
                raise ImportFormatError(f"{where}: dialogue {did!r} of {part}Vid is not in videoIDs")
            if did in file_split:
                raise ImportFormatError(f"{where}: dialogue {did!r} is in both {file_split[did]}Vid and {part}Vid")
            file_split[did] = part
    dialogue_ids = sorted(ids_by)
    utt: list[str] = []
    speakers_l: list[str] = []
    labels: list[int] = []
    sentences: list[str] = []
    offsets = [0]
    blocks: dict[str, list[np.ndarray]] = {m: [] for m in mods}
    seen: dict[str, str] = {}
    for did in dialogue_ids:
        u = [_as_str(x, f"an utterance id of dialogue {did!r}", where) for x in _as_sequence(ids_by[did], f"videoIDs[{did!r}]", where)]
        n = len(u)
        if n == 0:
            raise ImportFormatError(f"{where}: dialogue {did!r} is empty (no utterances)")
        for key, table in ((names_of[1], spk_by), (names_of[2], lab_by), (names_of[3], sent_by), *((f"video{m.capitalize()}", t) for m, t in feat_by.items())):
            if did not in table:
                raise ImportFormatError(f"{where}: dialogue {did!r} is in videoIDs but not in {key}")
        s = _as_sequence(spk_by[did], f"videoSpeakers[{did!r}]", where) if not isinstance(spk_by[did], np.ndarray) or spk_by[did].ndim == 1 else list(spk_by[did])
        y = _as_sequence(lab_by[did], f"videoLabels[{did!r}]", where)
        t = _as_sequence(sent_by[did], f"videoSentence[{did!r}]", where)
        if not n == len(s) == len(y) == len(t):
            raise ImportFormatError(f"{where}: dialogue {did!r} has {n} utterance ids but {len(y)} labels, "
                                    f"{len(s)} speakers and {len(t)} sentences")
        for uid in u:
            if uid in seen:
                raise ImportFormatError(f"{where}: duplicate utterance id {uid!r} (dialogues {seen[uid]!r} and {did!r})")
            seen[uid] = did
        for uid, v in zip(u, y):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or int(v) < 0:
                raise ImportFormatError(f"{where}: label of utterance {uid!r} is {v!r}, expected a class index >= 0")
            labels.append(int(v))
        speakers_l.extend(_speaker_name(v, f"a speaker of dialogue {did!r}", where) for v in s)
        sentences.extend(_as_str(x, f"a sentence of dialogue {did!r}", where) for x in t)
        for m, table in feat_by.items():
            blocks[m].append(_matrix(table[did], n, f"video{m.capitalize()}[{did!r}]", where))
        utt.extend(u)
        offsets.append(offsets[-1] + n)
    feats = {}
    for m, parts in blocks.items():
        dims = sorted({b.shape[1] for b in parts})
        if len(dims) > 1:
            raise ImportFormatError(f"{where}: video{m.capitalize()} vectors differ in size between dialogues: {dims}")
        x = np.concatenate(parts)
        feats[m] = (x, np.ones(len(x), dtype=bool))
    y_arr = np.asarray(labels, dtype=np.int64)
    default = DIALOGUERNN_IEMOCAP_CLASSES if layout == "iemocap" else ()
    names = _class_names(classes, y_arr, default, where)
    rows = UtteranceRows(dialogue_ids, utt, np.asarray(offsets, dtype=np.int64), speakers_l, y_arr, sentences,
                         file_split, _iemocap_folds(dialogue_ids) if layout == "iemocap" else {})
    scheme = speakers or ("identities" if layout == "iemocap" else "roles")
    return write_corpus_folder(out, name or path.stem, "classification", names, rows, feats, scheme, max_roles,
                               None, overwrite)


# --------------------------------------------------------------------------- mmsa


def _valid_lengths(part: dict[str, Any], key: str, n: int, seq_len: int, text_lengths: np.ndarray | None, where: str) -> np.ndarray:
    """Valid frames per sample: `<key>_lengths` (unaligned), else the text's (aligned)."""
    lk = f"{key}_lengths"
    if lk in part:
        lengths = np.asarray(part[lk]).reshape(-1)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iuf":
            raise ImportFormatError(f"{where}: {lk} must be {n} lengths, got shape {lengths.shape}")
        return np.clip(lengths.astype(np.int64), 1, seq_len)
    if text_lengths is not None:
        return np.clip(text_lengths, 1, seq_len)
    return np.full(n, seq_len, dtype=np.int64)


def _average(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, L, d) -> (N, d): mean over the first lengths[i] steps of each sample."""
    steps = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, L)
    return (x * steps[..., None]).sum(axis=1) / lengths[:, None]


def import_mmsa(
    path: str | Path,
    out: str | Path,
    name: str = "",
    speakers: str = "",
    max_roles: int = DEFAULT_MAX_ROLES,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """An MMSA `aligned_50.pkl` / `unaligned_50.pkl` -> a regression corpus folder, and notes."""
    path = Path(path)
    where = str(path)
    data = _load(path, object_arrays=True)
    if not isinstance(data, dict) or not {"train", "valid", "test"} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ImportFormatError(f"{where}: expected a dict with 'train', 'valid' and 'test', got {keys}")
    records: list[tuple[str, float, str, int, str, str, dict[str, np.ndarray]]] = []
    notes_nonfinite = 0
    for split in ("train", "valid", "test"):
        part = data[split]
        pw = f"{where} [{split!r}]"
        if not isinstance(part, dict):
            raise ImportFormatError(f"{pw}: expected a dict of arrays, got {type(part).__name__}")
        for key in ("id", "regression_labels", "audio", "vision"):
            if key not in part:
                raise ImportFormatError(f"{pw}: missing key {key!r}; has {sorted(part)}")
        if "text" not in part:
            hint = " (text_bert holds BERT token ids, not features)" if "text_bert" in part else ""
            raise ImportFormatError(f"{pw}: missing key 'text' (text features (N, L, d)){hint}")
        ids = [_as_str(v, "an id", pw) for v in np.asarray(part["id"]).reshape(-1)]
        n = len(ids)
        y = np.asarray(part["regression_labels"], dtype=np.float64).reshape(-1)
        if y.shape != (n,):
            raise ImportFormatError(f"{pw}: regression_labels has {y.size} values for {n} ids")
        raw = part.get("raw_text")
        texts = [_as_str(v, "a raw_text", pw) for v in np.asarray(raw).reshape(-1)] if raw is not None else [""] * n
        if len(texts) != n:
            raise ImportFormatError(f"{pw}: raw_text has {len(texts)} entries for {n} ids")
        seqs: dict[str, np.ndarray] = {}
        for m, key in MMSA_MODALITIES.items():
            try:
                x = np.asarray(part[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise ImportFormatError(f"{pw}: {key} is not a numeric array") from None
            if x.ndim != 3 or x.shape[0] != n:
                raise ImportFormatError(f"{pw}: {key} has shape {x.shape}, expected ({n}, length, d)")
            seqs[m] = x
        text_lengths = None
        tb = part.get("text_bert")
        if tb is not None and np.asarray(tb).ndim == 3 and np.asarray(tb).shape[1] == 3:
            text_lengths = np.asarray(tb)[:, 1, :].sum(axis=1).astype(np.int64)  # attention mask
            if np.asarray(tb).shape[2] != seqs["text"].shape[1]:
                text_lengths = None
        if text_lengths is None:  # padding steps of the text features are all zero
            nonzero = np.abs(seqs["text"]).sum(axis=2) > 0
            text_lengths = np.where(nonzero.any(axis=1), nonzero.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 1)
        vectors: dict[str, np.ndarray] = {}
        for m, x in seqs.items():
            bad = ~np.isfinite(x)
            if bad.any():
                notes_nonfinite += int(bad.sum())
                x = np.where(bad, 0.0, x)  # MMSA zeroes -inf audio and NaN (data_loader.py)
            key = MMSA_MODALITIES[m]
            lengths = text_lengths if m == "text" else _valid_lengths(part, key, n, x.shape[1], text_lengths, pw)
            vectors[m] = _average(x, np.clip(lengths, 1, x.shape[1])).astype(np.float32)
        for i, uid in enumerate(ids):
            if not math.isfinite(y[i]):
                raise ImportFormatError(f"{pw}: regression label of {uid!r} is not finite")
            video, sep, clip = uid.rpartition("$_$")
            if not sep:
                video, clip = uid, "0"
            position = int(clip) if clip.lstrip("-").isdigit() else i
            records.append((uid, float(y[i]), split, position, video, texts[i], {m: v[i] for m, v in vectors.items()}))
    dialogues: dict[str, list[int]] = {}
    split_of: dict[str, str] = {}
    seen: set[str] = set()
    for k, (uid, _, split, _, video, _, _) in enumerate(records):
        if uid in seen:
            raise ImportFormatError(f"{where}: duplicate id {uid!r}")
        seen.add(uid)
        if split_of.setdefault(video, split) != split:
            raise ImportFormatError(f"{where}: video {video!r} has clips in both {split_of[video]} and {split}")
        dialogues.setdefault(video, []).append(k)
    dialogue_ids = sorted(dialogues)
    order: list[int] = []
    offsets = [0]
    for did in dialogue_ids:
        members = sorted(dialogues[did], key=lambda k: (records[k][3], k))
        order.extend(members)
        offsets.append(offsets[-1] + len(members))
    rows = UtteranceRows(
        dialogue_ids, [records[k][0] for k in order], np.asarray(offsets, dtype=np.int64),
        [records[k][4] for k in order], np.asarray([records[k][1] for k in order], dtype=np.float32),
        [records[k][5] for k in order], split_of,
    )
    feats = {m: (np.stack([records[k][6][m] for k in order]), np.ones(len(order), dtype=bool)) for m in MMSA_MODALITIES}
    folder = write_corpus_folder(out, name or path.parent.name or path.stem, "regression", (), rows, feats,
                                 speakers or "roles", max_roles, None, overwrite)
    notes = [f"{notes_nonfinite} NaN/Inf feature value(s) were set to 0, as MMSA's loader does"] if notes_nonfinite else []
    return folder, notes
