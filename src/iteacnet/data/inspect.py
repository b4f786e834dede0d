"""A plain summary of a loaded corpus: sizes per split, feature dims, labels, missing files.

`inspect_corpus` returns a JSON-able dict (for tests and machine use); `format_inspect`
renders it as a readable report (for `iteacnet inspect`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from iteacnet.data.corpus import Corpus
from iteacnet.errors import UserError

_SPLIT_ORDER = ("train", "valid", "test")


def _file_splits(corpus: Corpus) -> dict[str, list[int]]:
    """Dialogue indices per split of the label file, train/valid/test first."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(corpus.dialogue_ids):
        split = corpus.file_split.get(d)
        if split is not None:
            groups.setdefault(split, []).append(i)
    names = [s for s in _SPLIT_ORDER if s in groups] + sorted(s for s in groups if s not in _SPLIT_ORDER)
    return {s: groups[s] for s in names}


def _label_summary(corpus: Corpus, rows: np.ndarray) -> dict[str, Any]:
    y = corpus.labels[rows]
    if corpus.task == "classification":
        counts = np.bincount(y.astype(np.int64), minlength=len(corpus.class_names)) if len(y) else np.zeros(len(corpus.class_names), dtype=np.int64)
        names = corpus.class_names or tuple(str(c) for c in range(len(counts)))
        return {"counts": {names[c]: int(counts[c]) for c in range(len(counts))}}
    if len(y) == 0:
        return {"min": None, "max": None, "mean": None, "positive": 0, "zero": 0, "negative": 0}
    return {
        "min": float(y.min()), "max": float(y.max()), "mean": float(y.mean(dtype=np.float64)),
        "positive": int((y > 0).sum()), "zero": int((y == 0).sum()), "negative": int((y < 0).sum()),
    }


def _part(corpus: Corpus, dialogues: list[int]) -> dict[str, Any]:
    rows = corpus.rows_of(dialogues)
    return {
        "dialogues": len(dialogues),
        "utterances": int(len(rows)),
        "labels": _label_summary(corpus, rows),
        "missing": {m: int((~corpus.available[m][rows]).sum()) for m in corpus.modalities},
    }


def inspect_corpus(corpus: Corpus, splits: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Counts per split, feature dims, label distribution, missing files and loader notes.

    `splits` maps split name → dialogue indices; None uses the label file's split
    (`corpus.file_split`).
    """
    if splits is None:
        splits = _file_splits(corpus)
    for name, dialogues in splits.items():
        bad = [i for i in dialogues if not 0 <= i < corpus.num_dialogues]
        if bad:
            raise UserError(f"split {name!r} names dialogue indices outside [0, {corpus.num_dialogues}): {bad[:5]}")
    lengths = corpus.lengths()
    covered = {i for d in splits.values() for i in d}
    return {
        "name": corpus.name,
        "task": corpus.task,
        "classes": list(corpus.class_names),
        "modalities": list(corpus.modalities),
        "dims": corpus.dims,
        "speakers": list(corpus.speaker_names),
        "dialogue_length": {"min": int(lengths.min()), "max": int(lengths.max()), "mean": float(lengths.mean())}
        if len(lengths) else {"min": 0, "max": 0, "mean": 0.0},
        "all": _part(corpus, list(range(corpus.num_dialogues))),
        "splits": {name: _part(corpus, list(d)) for name, d in splits.items()},
        "unsplit_dialogues": corpus.num_dialogues - len(covered),
        "notes": list(corpus.notes),
    }


def _labels_line(labels: dict[str, Any]) -> str:
    if "counts" in labels:
        return ", ".join(f"{k} {v:,}" for k, v in labels["counts"].items())
    if labels["min"] is None:
        return "none"
    return (
        f"min {labels['min']:.3g}, max {labels['max']:.3g}, mean {labels['mean']:.3g}; "
        f"positive {labels['positive']:,}, zero {labels['zero']:,}, negative {labels['negative']:,}"
    )


def format_inspect(info: dict[str, Any]) -> str:
    """`inspect_corpus`'s dict as a plain-text report."""
    a = info["all"]
    lines = [
        f"corpus      {info['name']} ({info['task']})",
        f"size        {a['dialogues']:,} dialogues, {a['utterances']:,} utterances "
        f"(length {info['dialogue_length']['min']}-{info['dialogue_length']['max']}, "
        f"mean {info['dialogue_length']['mean']:.1f})",
        "features    " + ", ".join(f"{m} {d}-d" for m, d in info["dims"].items()),
        "speakers    " + ", ".join(repr(s) for s in info["speakers"]),
    ]
    if info["classes"]:
        lines.append("classes     " + ", ".join(f"{i} {c}" for i, c in enumerate(info["classes"])))
    if info.get("split"):  # a caller may name the split protocol (e.g. the CLI)
        lines.append(f"split       {info['split']}")
    lines.append("")
    width = max([len(s) for s in info["splits"]] + [5])
    lines.append(f"{'split':<{width}}  {'dialogues':>9}  {'utterances':>10}  labels")
    for name, part in [*info["splits"].items(), ("all", a)]:
        lines.append(
            f"{name:<{width}}  {part['dialogues']:>9,}  {part['utterances']:>10,}  {_labels_line(part['labels'])}"
        )
    if info["unsplit_dialogues"]:
        lines.append(f"({info['unsplit_dialogues']:,} dialogue(s) in no split)")
    lines.append("")
    missing = a["missing"]
    if any(missing.values()):
        lines.append(
            "missing     " + ", ".join(f"{m} {n:,} of {a['utterances']:,}" for m, n in missing.items())
        )
    else:
        lines.append("missing     none (every utterance has every modality)")
    if info["notes"]:
        lines.append("notes")
        lines.extend(f"  - {n}" for n in info["notes"])
    return "\n".join(lines) + "\n"
