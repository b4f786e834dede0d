"""A corpus as data: a folder with `corpus.json`, an utterance table and feature files.

    my-corpus/
      corpus.json          {"name": "my-corpus", "task": "classification",
                            "classes": ["neutral", "joy", ...], "speakers": "roles",
                            "features": {"text": "features/text-minilm-384",
                                         "audio": {"matrix": "features/audio.npy",
                                                   "ids": "features/audio.ids.txt"}}}
      utterances.csv       dialogue,id,order,speaker,label,split,text   (or utterances.jsonl)
      features/...

`corpus.json` fields (unknown fields are an error, so typos do not pass silently):
- `name` (required), `task`: classification | regression (required);
- `classes`: class names in label order (classification, required);
- `binary`: how scores become classes for the binary metrics of a regression corpus;
  "sign" (positive vs negative, label-0 utterances left out, as for CMU-MOSI) is the one rule;
- `score_range`: [lo, hi] that regression labels must lie in (optional);
- `table`: the utterance table, relative to the folder (default `utterances.csv`, else
  `utterances.jsonl`); `.csv` is read as CSV, anything else as JSONL (one object a line);
- `speakers`: roles (default) | identities; `max_roles` (default 8): see data/assemble.py;
- `features`: modality -> a folder in the GCNet layout (`<folder>/<utterance id>.npy`,
  1-D or (time, d), averaged over time), or {"matrix": (N_m, d) .npy, "ids": its
  utterance ids, a .txt with one id a line or a .json list} (fast for large corpora).

Table columns: `dialogue`, `id` (utterance id, unique in the corpus), `speaker`, `label`
(a class name or class index; a score for regression), `split` (train | valid | test,
aliases dev/val/validation; or a fold id), optional `order` (position in the dialogue;
default: table order), `fold` (fold id, for leave-one-fold-out) and `text` (transcript).
Other columns are ignored. Dialogues are ordered by id, utterances by `order`.

Every defect is a `CorpusError` naming the file and the line (table), the field
(corpus.json) or the row/utterance (features).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.config import MODALITIES
from iteacnet.data.assemble import DEFAULT_MAX_ROLES, UtteranceRows, assemble_corpus
from iteacnet.data.corpus import SPEAKER_SCHEMES, Corpus, CorpusError
from iteacnet.data.gcnet import _load_modality, _short

DESCRIPTION = "corpus.json"
TABLE_NAMES = ("utterances.csv", "utterances.jsonl")
COLUMNS = ("dialogue", "id", "order", "speaker", "label", "split", "fold", "text")
REQUIRED_COLUMNS = ("dialogue", "id", "speaker", "label", "split")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "validation": "valid", "test": "test"}
_FIELDS = ("name", "task", "classes", "binary", "score_range", "table", "speakers", "max_roles", "features")


class TableError(CorpusError):
    """A corpus folder's description or table is malformed (file and line/field named)."""


# --------------------------------------------------------------------------- corpus.json


@dataclass(frozen=True)
class FeatureSource:
    """Where one modality's features are: a GCNet-layout folder, or a matrix with its ids."""

    folder: Path | None = None
    matrix: Path | None = None
    ids: Path | None = None


@dataclass(frozen=True)
class Description:
    root: Path
    name: str
    task: str
    classes: tuple[str, ...]
    table: Path
    speakers: str = "roles"
    max_roles: int = DEFAULT_MAX_ROLES
    score_range: tuple[float, float] | None = None
    features: dict[str, FeatureSource] = field(default_factory=dict)


def _field_error(path: Path, key: str, msg: str) -> TableError:
    return TableError(f"{path}: field {key!r}: {msg}")


def read_description(root: str | Path) -> Description:
    """Parse and check `<root>/corpus.json`."""
    root = Path(root)
    path = root / DESCRIPTION
    if not root.is_dir():
        raise TableError(f"corpus folder not found: {root}")
    if not path.is_file():
        raise TableError(f"{root}: no {DESCRIPTION} (a corpus folder needs one; see README, 'Your own corpus')")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise TableError(f"{path}: not UTF-8 text ({e})") from None
    if not isinstance(d, dict):
        raise TableError(f"{path}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise TableError(f"{path}: unknown field(s) {unknown}; known: {list(_FIELDS)}")
    for key in ("name", "task"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            raise _field_error(path, key, "required, a non-empty string")
    task = d["task"]
    if task not in ("classification", "regression"):
        raise _field_error(path, "task", f"{task!r} is not 'classification' or 'regression'")
    classes = d.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise _field_error(path, "classes", "a list of class names (strings) in label order")
    if task == "classification" and len(classes) < 2:
        raise _field_error(path, "classes", f"a classification corpus needs at least 2 class names, got {classes}")
    if task == "regression" and classes:
        raise _field_error(path, "classes", "a regression corpus has no classes")
    if len(set(classes)) != len(classes):
        raise _field_error(path, "classes", f"duplicate class names in {classes}")
    binary = d.get("binary", "sign")
    if binary != "sign":
        raise _field_error(path, "binary", f"{binary!r}; the one rule is 'sign' (positive vs negative, zero left out)")
    score_range = d.get("score_range")
    if score_range is not None:
        ok = (isinstance(score_range, list) and len(score_range) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in score_range)
              and score_range[0] < score_range[1])
        if not ok or task != "regression":
            raise _field_error(path, "score_range", "[lo, hi] with lo < hi, for a regression corpus only")
        score_range = (float(score_range[0]), float(score_range[1]))
    speakers = d.get("speakers", "roles")
    if speakers not in SPEAKER_SCHEMES:
        raise _field_error(path, "speakers", f"{speakers!r} is not one of {list(SPEAKER_SCHEMES)}")
    max_roles = d.get("max_roles", DEFAULT_MAX_ROLES)
    if not isinstance(max_roles, int) or isinstance(max_roles, bool) or max_roles < 1:
        raise _field_error(path, "max_roles", f"a positive integer, got {max_roles!r}")
    if "table" in d:
        if not isinstance(d["table"], str) or not d["table"]:
            raise _field_error(path, "table", "a file name relative to the corpus folder")
        table = root / d["table"]
        if not table.is_file():
            raise _field_error(path, "table", f"file not found: {table}")
    else:
        found = [root / n for n in TABLE_NAMES if (root / n).is_file()]
        if not found:
            raise TableError(f"{root}: no utterance table ({' or '.join(TABLE_NAMES)}) and no 'table' field in {path.name}")
        table = found[0]
    features = d.get("features", {})
    if not isinstance(features, dict) or not features:
        raise _field_error(path, "features", "a non-empty object {modality: folder | {\"matrix\": ..., \"ids\": ...}}")
    sources: dict[str, FeatureSource] = {}
    for m, spec in features.items():
        key = f"features.{m}"
        if m not in MODALITIES:
            raise _field_error(path, key, f"unknown modality {m!r}; expected some of {MODALITIES}")
        if isinstance(spec, str) and spec:
            sources[m] = FeatureSource(folder=root / spec)
        elif isinstance(spec, dict) and set(spec) == {"matrix", "ids"} and all(isinstance(v, str) and v for v in spec.values()):
            sources[m] = FeatureSource(matrix=root / spec["matrix"], ids=root / spec["ids"])
        else:
            raise _field_error(path, key, 'a folder name, or {"matrix": "<file>.npy", "ids": "<file>.txt"}')
    return Description(root, d["name"].strip(), task, tuple(classes), table, speakers, max_roles, score_range,
                       {m: sources[m] for m in MODALITIES if m in sources})


# --------------------------------------------------------------------------- the table


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV (header line 1) or JSONL table."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise TableError(f"{path}: empty file, expected a header line {','.join(COLUMNS)}")
                missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
                if missing:
                    raise TableError(f"{path}: line 1: missing column(s) {missing}; the header has {reader.fieldnames}")
                for row in reader:
                    if None in row:
                        raise TableError(f"{path}: line {reader.line_num}: more fields than the header's {len(reader.fieldnames)}")
                    yield reader.line_num, row
            else:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise TableError(f"{path}: line {n}: malformed JSON ({e.msg})") from None
                    if not isinstance(obj, dict):
                        raise TableError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
                    yield n, obj
    except UnicodeDecodeError as e:
        raise TableError(f"{path}: not UTF-8 text ({e})") from None
    except csv.Error as e:
        raise TableError(f"{path}: malformed CSV ({e})") from None


def _text(row: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise TableError(f"{where}: column {key!r} is empty or missing")
        return "" if v is None or key != "text" else v
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise TableError(f"{where}: column {key!r} must be a string or number, got {type(v).__name__}")
    return str(v).strip() if key != "text" else str(v)


def _label(v: str, desc: Description, where: str) -> int | float:
    if desc.task == "classification":
        if v in desc.classes:
            return desc.classes.index(v)
        try:
            y = int(v)
        except ValueError:
            raise TableError(f"{where}: label {v!r} is not one of the classes {list(desc.classes)} nor a class index") from None
        if not 0 <= y < len(desc.classes):
            raise TableError(f"{where}: label {y} is outside the {len(desc.classes)} classes [0, {len(desc.classes) - 1}]")
        return y
    try:
        s = float(v)
    except ValueError:
        raise TableError(f"{where}: label {v!r} is not a number (a regression corpus)") from None
    if not math.isfinite(s):
        raise TableError(f"{where}: label {v!r} is not finite")
    if desc.score_range is not None and not desc.score_range[0] <= s <= desc.score_range[1]:
        lo, hi = desc.score_range
        raise TableError(f"{where}: label {s:g} is outside score_range [{lo:g}, {hi:g}]")
    return s


def read_table(desc: Description) -> UtteranceRows:
    """The utterance table of `desc` as rows: dialogues sorted by id, utterances by order."""
    path = desc.table
    dialogues: dict[str, list[tuple[float, int, str, str, Any, str]]] = {}
    split_of: dict[str, tuple[str, int]] = {}
    fold_of: dict[str, tuple[str, int]] = {}
    owner: dict[str, int] = {}
    has_order: bool | None = None
    count = 0
    for line, row in _records(path):
        where = f"{path}: line {line}"
        did = _text(row, "dialogue", where)
        uid = _text(row, "id", where)
        if uid in owner:
            raise TableError(f"{where}: duplicate utterance id {uid!r} (first on line {owner[uid]})")
        owner[uid] = line
        spk = _text(row, "speaker", where, required=False)  # empty: one unnamed speaker (CMU-MOSI's '')
        y = _label(_text(row, "label", where), desc, where)
        order_text = _text(row, "order", where, required=False)
        if has_order is None:
            has_order = bool(order_text)
        elif has_order != bool(order_text):
            raise TableError(f"{where}: column 'order' is {'empty' if has_order else 'given'} here but not on other lines; give it on every line or none")
        if order_text:
            try:
                order = float(order_text)
            except ValueError:
                raise TableError(f"{where}: order {order_text!r} is not a number") from None
        else:
            order = float(count)
        for key, table in (("split", split_of), ("fold", fold_of)):
            v = _text(row, key, where, required=False)
            if key == "split" and v.lower() in SPLIT_ALIASES:
                v = SPLIT_ALIASES[v.lower()]
            if v and did in table and table[did][0] != v:
                first, first_line = table[did]
                raise TableError(f"{where}: dialogue {did!r} has {key} {v!r} here but {first!r} on line {first_line}")
            if v:
                table.setdefault(did, (v, line))
        dialogues.setdefault(did, []).append((order, line, uid, spk, y, _text(row, "text", where, required=False)))
        count += 1
    if not count:
        raise TableError(f"{path}: no utterances (only a header or blank lines)")

    # The split column holds train/valid/test, or fold ids (then it is the fold column).
    standard = set(SPLIT_ALIASES.values())
    values = {v for v, _ in split_of.values()}
    if values - standard:
        if values & standard:
            odd = next((did, ln) for did, (v, ln) in split_of.items() if v not in standard)
            raise TableError(
                f"{path}: line {odd[1]}: split {split_of[odd[0]][0]!r} is neither train/valid/test nor usable as a fold id, "
                f"since other lines use {sorted(values & standard)}; put fold ids in a 'fold' column"
            )
        if fold_of:
            raise TableError(f"{path}: the split column holds fold ids {sorted(values)[:5]} and a fold column is given too")
        fold_of, split_of = split_of, {}

    dialogue_ids = sorted(dialogues)
    utt_ids: list[str] = []
    speakers: list[str] = []
    labels: list[Any] = []
    transcripts: list[str] = []
    offsets = [0]
    for did in dialogue_ids:
        utts = dialogues[did]
        utts.sort(key=lambda u: (u[0], u[1]))
        for a, b in zip(utts, utts[1:]):
            if a[0] == b[0] and has_order:
                raise TableError(f"{path}: line {b[1]}: order {b[0]:g} of dialogue {did!r} repeats line {a[1]}")
        for _, _, uid, spk, y, text in utts:
            utt_ids.append(uid)
            speakers.append(spk)
            labels.append(y)
            transcripts.append(text)
        offsets.append(offsets[-1] + len(utts))
    is_class = desc.task == "classification"
    return UtteranceRows(
        dialogue_ids=dialogue_ids,
        utterance_ids=utt_ids,
        offsets=np.asarray(offsets, dtype=np.int64),
        speakers=speakers,
        labels=np.asarray(labels, dtype=np.int64 if is_class else np.float32),
        transcripts=transcripts,
        file_split={d: v for d, (v, _) in split_of.items()},
        folds={d: v for d, (v, _) in fold_of.items()},
    )


# --------------------------------------------------------------------------- features


def read_ids(path: Path) -> list[str]:
    """Utterance ids of a feature matrix: a .json list, else one id a line."""
    if not path.is_file():
        raise TableError(f"feature ids file not found: {path}")
    if path.suffix.lower() == ".json":
        try:
            ids = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise TableError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise TableError(f"{path}: expected a JSON list of utterance ids (strings)")
        return ids
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise TableError(f"{path}: line {n}: empty utterance id")
    return [line.strip() for line in lines]


def load_matrix(
    modality: str, matrix: Path, ids_path: Path, rows: UtteranceRows, allow_missing: bool, table: Path
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """(N, d) float32 in table order, (N,) availability, utterances without a row, unused rows."""
    if not matrix.is_file():
        raise TableError(f"{modality} feature matrix not found: {matrix}")
    try:
        x = np.load(matrix, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise TableError(f"corrupt feature matrix {matrix}: {e}") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        shape = getattr(x, "shape", None)
        raise TableError(f"feature matrix {matrix} has shape {shape}; expected (utterances, d)")
    if x.dtype.kind not in "biuf":
        raise TableError(f"feature matrix {matrix} has non-numeric dtype {x.dtype}")
    ids = read_ids(ids_path)
    if len(ids) != x.shape[0]:
        raise TableError(f"{ids_path}: {len(ids)} ids for the {x.shape[0]} rows of {matrix}")
    where = dict(zip(ids, range(len(ids))))
    if len(where) != len(ids):  # name the first duplicate
        seen: dict[str, int] = {}
        for n, uid in enumerate(ids):
            if uid in seen:
                raise TableError(f"{ids_path}: line {n + 1}: duplicate utterance id {uid!r} (first on line {seen[uid] + 1})")
            seen[uid] = n
    src = np.fromiter(map(where.get, rows.utterance_ids, itertools.repeat(-1)), dtype=np.int64, count=len(rows.utterance_ids))
    available = src >= 0
    missing = [rows.utterance_ids[int(i)] for i in np.flatnonzero(~available)]
    if missing and not allow_missing:
        raise TableError(
            f"{len(missing)} of {len(src)} utterances of {table.name} have no row in {matrix} ({ids_path.name}): "
            f"{_short(missing)}; pass allow_missing_files (--allow-missing-files) to treat them as missing modalities"
        )
    if not available.any():
        raise TableError(f"no utterance of {table.name} has a row in {matrix}")
    out = np.zeros((len(src), x.shape[1]), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        out[available] = x[src[available]]  # one gather, cast to float32
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        first = int(src[np.flatnonzero(bad)[0]])
        raise TableError(f"feature matrix {matrix}: row {first} (utterance {ids[first]!r}) contains NaN or Inf "
                         "(or a value beyond float32)")
    return out, available, missing, len(ids) - int(available.sum())


# --------------------------------------------------------------------------- public


def load_table_corpus(
    root: str | Path,
    allow_missing_files: bool = False,
    progress: bool = False,
    speakers: str = "",
    max_roles: int = 0,
) -> Corpus:
    """The corpus of a corpus folder. `speakers`/`max_roles` override corpus.json's when set."""
    desc = read_description(root)
    rows = read_table(desc)
    notes = [f"{desc.name} loaded from {desc.table} ({len(rows.dialogue_ids)} dialogues, {len(rows.utterance_ids)} utterances)"]
    feats: dict[str, np.ndarray] = {}
    available: dict[str, np.ndarray] = {}
    for m, src in desc.features.items():
        if src.folder is not None:
            if not src.folder.is_dir():
                raise TableError(f"{desc.root / DESCRIPTION}: field 'features.{m}': folder not found: {src.folder}")
            x, avail, missing = _load_modality(m, src.folder, rows, False, allow_missing_files, desc.table, progress)
            notes.append(f"{m}: {src.folder.name} ({x.shape[1]}-d, one file per utterance)")
        else:
            assert src.matrix is not None and src.ids is not None
            x, avail, missing, unused = load_matrix(m, src.matrix, src.ids, rows, allow_missing_files, desc.table)
            notes.append(f"{m}: {src.matrix.name} ({x.shape[1]}-d matrix)")
            if unused:
                notes.append(f"{m}: {unused} row(s) of {src.matrix.name} belong to no utterance of the table; not used")
        feats[m], available[m] = x, avail
        if missing:
            notes.append(f"{m}: {len(missing)} of {len(avail)} utterances have no features; loaded as a missing modality "
                         f"(e.g. {_short(missing)})")
    unsplit = [d for d in rows.dialogue_ids if d not in rows.file_split and d not in rows.folds]
    if unsplit:
        notes.append(f"{len(unsplit)} dialogue(s) have an empty split: {_short(unsplit)}")
    scheme = speakers or desc.speakers
    return assemble_corpus(desc.name, desc.task, desc.classes, rows, feats, available, notes,
                           speaker_scheme=scheme, max_roles=max_roles or desc.max_roles)


def corpus_name(root: str | Path) -> str:
    """The `name` of a corpus folder's corpus.json."""
    return read_description(root).name


# --------------------------------------------------------------------------- writing


def write_corpus_folder(
    out: str | Path,
    name: str,
    task: str,
    classes: tuple[str, ...],
    rows: UtteranceRows,
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    speakers: str = "roles",
    max_roles: int = DEFAULT_MAX_ROLES,
    score_range: tuple[float, float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a corpus folder: corpus.json, utterances.csv and one matrix (+ ids) per modality.

    `features` maps modality -> ((N, d) matrix in table order, (N,) availability); rows of
    unavailable utterances are not written. The split column holds train/valid/test; folds
    go to a `fold` column.
    """
    out = Path(out)
    if (out / DESCRIPTION).exists() and not overwrite:
        raise TableError(f"{out / DESCRIPTION} exists; choose another --out or pass --overwrite")
    (out / "features").mkdir(parents=True, exist_ok=True)
    feature_spec: dict[str, Any] = {}
    for m, (x, avail) in features.items():
        np.save(out / "features" / f"{m}.npy", np.ascontiguousarray(x[avail], dtype=np.float32))
        ids = [u for u, ok in zip(rows.utterance_ids, avail) if ok]
        (out / "features" / f"{m}.ids.txt").write_text("".join(f"{u}\n" for u in ids), encoding="utf-8")
        feature_spec[m] = {"matrix": f"features/{m}.npy", "ids": f"features/{m}.ids.txt"}
    with (out / "utterances.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for i, did in enumerate(rows.dialogue_ids):
            for k, r in enumerate(range(int(rows.offsets[i]), int(rows.offsets[i + 1]))):
                y = rows.labels[r]
                label = classes[int(y)] if task == "classification" else repr(float(y))
                w.writerow([did, rows.utterance_ids[r], k, rows.speakers[r], label, rows.file_split.get(did, ""),
                            rows.folds.get(did, ""), rows.transcripts[r] if rows.transcripts else ""])
    desc: dict[str, Any] = {"name": name, "task": task}
    if task == "classification":
        desc["classes"] = list(classes)
    elif score_range is not None:
        desc["score_range"] = list(score_range)
    desc |= {"table": "utterances.csv", "speakers": speakers, "max_roles": max_roles, "features": feature_spec}
    (out / DESCRIPTION).write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")
    return out
