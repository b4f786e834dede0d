"""One code path below the readers: utterance rows + feature matrices -> `Corpus`.

Every reader (the GCNet-layout loader for the four paper corpora, the corpus-folder reader
of `data/table.py`, and through it every importer) produces `UtteranceRows` and feature
matrices and hands them to `assemble_corpus`, so speakers, splits and folds are coded once.

Speakers (`Corpus.speaker_scheme`):
- `identities`: one index per speaker name over the whole corpus, names sorted (IEMOCAP's
  'F'/'M'). Fits corpora with a few recurring speakers.
- `roles`: per dialogue, the first speaker is role 0, the next new speaker role 1, … up to
  `max_roles - 1`, which all further speakers share. Fits corpora with hundreds of names,
  where most names speak in one dialogue only and an identity index would learn nothing.

`speakers_for_training` then makes sure no index is used outside the training dialogues
that those dialogues never trained (see its doc).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iteacnet.data.corpus import SPEAKER_SCHEMES, Corpus, CorpusError

DEFAULT_MAX_ROLES = 8
_SHOW = 5


@dataclass
class UtteranceRows:
    """Utterances flat, dialogue after dialogue; dialogue `i` owns `offsets[i]:offsets[i+1]`."""

    dialogue_ids: list[str]
    utterance_ids: list[str]
    offsets: np.ndarray  # (n+1,) int64
    speakers: list[str]  # raw speaker names, one per utterance
    labels: np.ndarray  # (N,) int64 class index | float32 score
    transcripts: list[str]
    file_split: dict[str, str]  # dialogue id -> train | valid | test
    folds: dict[str, str] = field(default_factory=dict)  # dialogue id -> fold id


def role_codes(offsets: np.ndarray, speakers: list[str], max_roles: int) -> np.ndarray:
    """(N,) per-dialogue roles: first speaker 0, next new speaker 1, …, capped at max_roles - 1."""
    if max_roles < 1:
        raise CorpusError(f"max_roles must be >= 1, got {max_roles}")
    out = np.zeros(len(speakers), dtype=np.int64)
    for i in range(len(offsets) - 1):
        seen: dict[str, int] = {}
        for r in range(int(offsets[i]), int(offsets[i + 1])):
            role = seen.setdefault(speakers[r], len(seen))
            out[r] = min(role, max_roles - 1)
    return out


def role_names(count: int) -> tuple[str, ...]:
    return tuple(f"role{k}" for k in range(count))


def code_speakers(
    offsets: np.ndarray, speakers: list[str], scheme: str, max_roles: int = DEFAULT_MAX_ROLES
) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """(N,) speaker indices, the names of the indices, and notes, under `scheme`."""
    if scheme not in SPEAKER_SCHEMES:
        raise CorpusError(f"unknown speaker scheme {scheme!r}; expected one of {SPEAKER_SCHEMES}")
    if scheme == "identities":
        names = tuple(sorted(set(speakers)))
        code = {s: i for i, s in enumerate(names)}
        return np.asarray([code[s] for s in speakers], dtype=np.int64), names, []
    roles = role_codes(offsets, speakers, max_roles)
    count = int(roles.max()) + 1 if len(roles) else 1
    distinct = len(set(speakers))
    notes = [f"speakers: {distinct} distinct name(s) coded as per-dialogue roles (at most {max_roles}; {count} used)"]
    per_dialogue = [len(set(speakers[int(a):int(b)])) for a, b in zip(offsets[:-1], offsets[1:])]
    over = sum(1 for n in per_dialogue if n > max_roles)
    if over:
        notes.append(f"speakers: {over} dialogue(s) have more than {max_roles} speakers; the extra ones share role {max_roles - 1}")
    return roles, role_names(count), notes


def assemble_corpus(
    name: str,
    task: str,
    class_names: tuple[str, ...],
    rows: UtteranceRows,
    features: dict[str, np.ndarray],
    available: dict[str, np.ndarray],
    notes: list[str],
    speaker_scheme: str = "identities",
    max_roles: int = DEFAULT_MAX_ROLES,
) -> Corpus:
    """The `Corpus` of `rows` with its features, speakers coded under `speaker_scheme`."""
    speakers, speaker_names, speaker_notes = code_speakers(rows.offsets, rows.speakers, speaker_scheme, max_roles)
    return Corpus(
        name=name,
        task=task,
        class_names=tuple(class_names),
        dialogue_ids=rows.dialogue_ids,
        offsets=rows.offsets,
        utterance_ids=rows.utterance_ids,
        speakers=speakers,
        speaker_names=speaker_names,
        labels=rows.labels,
        features=features,
        available=available,
        transcripts=rows.transcripts,
        file_split=rows.file_split,
        notes=[*notes, *speaker_notes],
        folds=rows.folds,
        speaker_scheme=speaker_scheme,
    )


def recode_speakers(corpus: Corpus, scheme: str, max_roles: int = DEFAULT_MAX_ROLES) -> Corpus:
    """`corpus` with its speakers coded under `scheme` (identities -> roles keeps the names'
    order of appearance; roles cannot go back to identities, the names are gone)."""
    if scheme == corpus.speaker_scheme and scheme == "identities":
        return corpus
    if scheme not in SPEAKER_SCHEMES:
        raise CorpusError(f"unknown speaker scheme {scheme!r}; expected one of {SPEAKER_SCHEMES}")
    if corpus.speaker_scheme == "roles":
        if scheme == "identities":
            raise CorpusError(f"{corpus.name}: the corpus was loaded with per-dialogue roles; speaker names are not kept")
        names = [corpus.speaker_names[i] for i in corpus.speakers]  # role names: recoding caps them anew
    else:
        names = [corpus.speaker_names[i] for i in corpus.speakers]
    codes, speaker_names, notes = code_speakers(corpus.offsets, names, scheme, max_roles)
    out = corpus.with_features(corpus.features)
    out.speakers, out.speaker_names, out.speaker_scheme = codes, speaker_names, scheme
    out.notes = [n for n in out.notes if not n.startswith("speakers:")] + notes
    return out


def speakers_for_training(corpus: Corpus, train_dialogues: list[int]) -> tuple[Corpus, list[str]]:
    """Make every speaker index outside training one that training dialogues use.

    - `identities`: a speaker who speaks only outside the training dialogues would get an
      embedding learned from nothing: a `CorpusError` names them and points to `roles`.
    - `roles`: a dialogue outside training with more speakers than any training dialogue
      has roles the model never saw; those take the highest trained role (a note says so).
    Returns the (possibly re-coded) corpus and notes.
    """
    rows = corpus.rows_of(train_dialogues)
    trained = set(np.unique(corpus.speakers[rows]).tolist())
    used = set(np.unique(corpus.speakers).tolist())
    unseen = sorted(used - trained)
    if not unseen:
        return corpus, []
    if corpus.speaker_scheme == "identities":
        names = [corpus.speaker_names[i] for i in unseen]
        head = ", ".join(repr(n) for n in names[:_SHOW]) + (f", … ({len(names)} in all)" if len(names) > _SHOW else "")
        raise CorpusError(
            f"{corpus.name}: speaker(s) {head} speak only outside the training dialogues, so their identity "
            "would be learned from nothing; code speakers as per-dialogue roles instead "
            "(corpus.json \"speakers\": \"roles\", or --set data.speakers=roles)"
        )
    top = max(trained)
    speakers = np.minimum(corpus.speakers, top)
    moved = int((speakers != corpus.speakers).sum())
    out = corpus.with_features(corpus.features)
    out.speakers = speakers
    out.speaker_names = corpus.speaker_names[: top + 1]  # roles in training are 0..top
    note = (f"speakers: {moved} utterance(s) outside training have a role above the highest trained role "
            f"{top}; they take role {top}")
    out.notes = [*out.notes, note]
    return out, [note]
