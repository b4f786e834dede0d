"""The in-memory corpus: utterances in spoken order, grouped into dialogues, with features.

Axis legend: N = utterances in the corpus, n = dialogues, d_m = feature size of modality m.

Utterances are stored flat, dialogue after dialogue; dialogue `i` owns rows
`offsets[i]:offsets[i+1]`. This keeps the cache a plain npz and batching a gather.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.config import MODALITIES
from iteacnet.errors import UserError

CORPUS_SPECS: dict[str, dict] = {
    # name: task, class names (empty for regression), default feature folders (GCNet names)
    "iemocap4": {
        "task": "classification",
        "classes": ("happy+excited", "sad", "neutral", "angry"),
        "label_file": "IEMOCAP_features_raw_4way.pkl",
        "defaults": {"text": "deberta-large-4-UTT", "audio": "wav2vec-large-c-UTT", "visual": "manet_UTT"},
    },
    "iemocap6": {
        "task": "classification",
        "classes": ("happy", "sad", "neutral", "angry", "excited", "frustrated"),
        "label_file": "IEMOCAP_features_raw_6way.pkl",
        "defaults": {"text": "deberta-large-4-UTT", "audio": "wav2vec-large-c-UTT", "visual": "manet_UTT"},
    },
    "cmumosi": {
        "task": "regression",
        "classes": (),
        "label_file": "CMUMOSI_features_raw_2way.pkl",
        "defaults": {"text": "deberta-large-4-FRA", "audio": "wav2vec-large-c-UTT", "visual": "manet_FRA"},
    },
    "cmumosei": {
        "task": "regression",
        "classes": (),
        "label_file": "CMUMOSEI_features_raw_2way.pkl",
        "defaults": {"text": "deberta-large-4-FRA", "audio": "wav2vec-large-c-UTT", "visual": "manet_FRA"},
    },
    "synthetic": {"task": "classification", "classes": (), "label_file": "", "defaults": {}},
}
SPEAKER_SCHEMES: tuple[str, ...] = ("identities", "roles")


class CorpusError(UserError):
    """The corpus on disk (or its description) is malformed; the message names the file,
    line or field at fault."""


@dataclass
class Corpus:
    """One corpus in memory. Features are float32, one (N, d_m) matrix per modality present."""

    name: str
    task: str  # "classification" | "regression"
    class_names: tuple[str, ...]
    dialogue_ids: list[str]
    offsets: np.ndarray  # (n+1,) int64
    utterance_ids: list[str]
    speakers: np.ndarray  # (N,) int64 index into speaker_names
    speaker_names: tuple[str, ...]
    labels: np.ndarray  # (N,) int64 class index | float32 score
    features: dict[str, np.ndarray]  # modality -> (N, d_m) float32, ordered as MODALITIES
    available: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N,) bool
    transcripts: list[str] | None = None
    # Split membership from the label file, dialogue id -> "train" | "valid" | "test".
    file_split: dict[str, str] = field(default_factory=dict)
    # Facts the loader wants the user to see (missing files treated as missing modalities …).
    notes: list[str] = field(default_factory=list)
    # Cross-validation folds, dialogue id -> fold id (IEMOCAP: its session); empty if none.
    folds: dict[str, str] = field(default_factory=dict)
    # "identities": one index per speaker name across the corpus (IEMOCAP's F/M);
    # "roles": per dialogue, first speaker = 0, next new speaker = 1, … (data/assemble.py).
    speaker_scheme: str = "identities"

    def __post_init__(self) -> None:
        for m in self.features:
            if m not in MODALITIES:
                raise UserError(f"unknown modality {m!r}; expected one of {MODALITIES}")
            self.available.setdefault(m, np.ones(len(self.utterance_ids), dtype=bool))
        self.features = {m: self.features[m] for m in MODALITIES if m in self.features}

    # ------------------------------------------------------------------ views
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def num_utterances(self) -> int:
        return len(self.utterance_ids)

    @property
    def num_dialogues(self) -> int:
        return len(self.dialogue_ids)

    @property
    def num_classes(self) -> int:
        """Output size of the classifier: classes, or 1 for a regression corpus."""
        return len(self.class_names) if self.task == "classification" else 1

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, dialogue: int) -> slice:
        return slice(int(self.offsets[dialogue]), int(self.offsets[dialogue + 1]))

    def rows_of(self, dialogues: Sequence[int]) -> np.ndarray:
        """(N,) rows of these dialogues, dialogue after dialogue in the given order."""
        if len(dialogues) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in dialogues])

    def dialogue_index(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.dialogue_ids)}

    def available_matrix(self) -> np.ndarray:
        """(N, M) bool, modality order = `self.modalities`."""
        return np.stack([self.available[m] for m in self.modalities], axis=1)

    # ------------------------------------------------------------------ transforms
    def standardization_stats(self, train_dialogues: list[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-modality mean and std over the available rows of the training dialogues only."""
        rows = self.rows_of(train_dialogues)
        stats = {}
        for m, x in self.features.items():
            use = rows[self.available[m][rows]]
            if len(use) == 0:
                raise UserError(f"modality {m!r} has no available training utterance to standardize with")
            mu = x[use].mean(0, dtype=np.float64)
            sd = x[use].std(0, dtype=np.float64)
            stats[m] = (mu.astype(np.float32), np.where(sd < 1e-8, 1.0, sd).astype(np.float32))
        return stats

    def standardized(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> Corpus:
        """Copy with features standardized by `stats`; unavailable rows stay zero."""
        feats = {}
        for m, x in self.features.items():
            mu, sd = stats[m]
            z = ((x - mu) / sd).astype(np.float32)
            z[~self.available[m]] = 0.0
            feats[m] = z
        return self.with_features(feats)

    def with_features(self, features: dict[str, np.ndarray]) -> Corpus:
        return Corpus(
            name=self.name, task=self.task, class_names=self.class_names,
            dialogue_ids=self.dialogue_ids, offsets=self.offsets, utterance_ids=self.utterance_ids,
            speakers=self.speakers, speaker_names=self.speaker_names, labels=self.labels,
            features=features, available={m: self.available[m] for m in features},
            transcripts=self.transcripts, file_split=self.file_split, notes=list(self.notes),
            folds=self.folds, speaker_scheme=self.speaker_scheme,
        )

    def select_modalities(self, modalities: tuple[str, ...]) -> Corpus:
        missing = [m for m in modalities if m not in self.features]
        if missing:
            raise UserError(f"corpus {self.name} has no {missing} features; it has {self.modalities}")
        return self.with_features({m: self.features[m] for m in modalities})

    # ------------------------------------------------------------------ cache
    def save(self, path: str | Path) -> None:
        """npz (arrays) + JSON (ids, names, splits) side by side: `<path>.npz`, `<path>.json`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Annotated as Any: numpy's stubs type savez's **kwds as its allow_pickle flag.
        arrays: dict[str, Any] = {"offsets": self.offsets, "speakers": self.speakers, "labels": self.labels}
        for m in self.modalities:
            arrays[f"feat_{m}"] = self.features[m]
            arrays[f"avail_{m}"] = self.available[m]
        np.savez(path.with_suffix(".npz"), **arrays)
        meta = {
            "name": self.name, "task": self.task, "class_names": list(self.class_names),
            "dialogue_ids": self.dialogue_ids, "utterance_ids": self.utterance_ids,
            "speaker_names": list(self.speaker_names), "modalities": list(self.modalities),
            "transcripts": self.transcripts, "file_split": self.file_split, "notes": self.notes,
            "folds": self.folds, "speaker_scheme": self.speaker_scheme,
        }
        path.with_suffix(".json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        mods = meta["modalities"]
        return cls(
            name=meta["name"], task=meta["task"], class_names=tuple(meta["class_names"]),
            dialogue_ids=meta["dialogue_ids"], offsets=arrays["offsets"],
            utterance_ids=meta["utterance_ids"], speakers=arrays["speakers"],
            speaker_names=tuple(meta["speaker_names"]), labels=arrays["labels"],
            features={m: arrays[f"feat_{m}"] for m in mods},
            available={m: arrays[f"avail_{m}"] for m in mods},
            transcripts=meta["transcripts"], file_split=meta["file_split"], notes=meta["notes"],
            folds=meta.get("folds", {}), speaker_scheme=meta.get("speaker_scheme", "identities"),
        )
