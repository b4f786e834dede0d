"""New conversations for `iteacnet predict`: one utterance per JSONL line, in spoken order.

Schema (one JSON object per line; blank lines are ignored):

    {"id": "u1", "speaker": "F", "text": "Where were you?"}
    {"id": "u2", "speaker": "M", "features": {"audio": "feats/u2.npy", "visual": [0.1, -0.3, ...]}}
    {"id": "u3", "speaker": "F", "text": "Fine.", "features": {"text": "text/u3.npy"}, "dialogue": "d1"}

- `id` (string or integer, required): unique in the file; becomes the output's `id`.
- `speaker` (string, required for models that tell speakers apart; ignored otherwise).
- `text` (string, optional): the raw transcript. The predictor embeds it when the model's
  text features came from `iteacnet extract text` and no `features.text` is given.
- `audio` (optional): the recording, a path (`"clips/u1.wav"`) or `{"path": ..., "start": s,
  "end": s}` for a segment of a longer one (seconds; relative paths against the JSONL's
  folder). The predictor featurises it when the model's audio features came from
  `iteacnet extract audio` and no `features.audio` is given.
- `features` (object, optional): modality (`text`, `audio`, `visual`) -> a feature vector,
  either inline (a JSON list of numbers) or a path to a `.npy` file (relative paths are
  resolved against the JSONL file's folder), or null. Raw, unstandardized values, the same
  kind of vector as the training corpus's `features/<folder>/<utt>.npy`: a (time, d) array is
  averaged over time, as the corpus loader does. A modality that is not given is missing.
- `dialogue` (optional): holds several conversations in one file. Either every line has it
  or none does; utterances are grouped by it, keeping the file's order.

Readers return plain dicts: `id`, `speaker` (None if absent), `text` and `audio` (an
`iteacnet.data.audio.AudioClip`) if given,
`features` (modality -> float32 (d,) array), `dialogue` (if given) and `where`
(`file:line`, used by every later error message). Errors name the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.config import MODALITIES
from iteacnet.data.audio import AudioListError, parse_clip
from iteacnet.errors import UserError
from iteacnet.files import check_npy_size


class ConversationError(UserError):
    """A conversation file (or an utterance given to the predictor) is malformed."""


def as_feature_vector(value: Any, where: str) -> np.ndarray:
    """A (d,) float32 vector from a list/array; (time, d) is averaged over time (as the loader does)."""
    try:
        x = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise ConversationError(f"{where}: not a numeric array ({e})") from None
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise ConversationError(f"{where}: feature values must be numbers, got dtype {x.dtype}")
    while x.ndim > 2 and x.shape[0] == 1:  # GCNet squeezes leading singleton axes
        x = x[0]
    if x.ndim == 0 or x.ndim > 2 or x.size == 0:
        raise ConversationError(f"{where}: feature shape {x.shape}; expected (d,) or (time, d), non-empty")
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    rows = rows.astype(np.float64, copy=False)
    if not np.isfinite(rows).all():
        raise ConversationError(f"{where}: feature contains NaN or Inf")
    v = rows.mean(axis=0).astype(np.float32)
    if not np.isfinite(v).all():
        raise ConversationError(f"{where}: feature overflows float32")
    return v


def _load_npy(path: Path, where: str) -> np.ndarray:
    try:
        check_npy_size(path)
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConversationError(f"{where}: feature file not found: {path}") from None
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise ConversationError(f"{where}: unreadable feature file {path} ({e})") from None
    if not isinstance(x, np.ndarray):  # an .npz archive opens as a lazy NpzFile
        x.close()
        raise ConversationError(f"{where}: {path} is not a single .npy array")
    return x


def _feature(value: Any, base: Path, where: str) -> np.ndarray:
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base / path
        return as_feature_vector(_load_npy(path, where), f"{where} ({path})")
    if isinstance(value, list):
        return as_feature_vector(value, where)
    raise ConversationError(
        f"{where}: expected a list of numbers or a path to a .npy file, got {type(value).__name__}"
    )


def _name(value: Any, key: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConversationError(f"{where}: {key!r} must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ConversationError(f"{where}: empty {key!r}")
    return text


def _is_clip(key: str, value: Any) -> bool:
    """Top-level `audio` may name a recording (a path or {"path", ...}); a vector goes under features."""
    return key == "audio" and (value is None or isinstance(value, (str, dict)))


def parse_utterance(obj: Any, where: str, base: Path) -> dict[str, Any]:
    """Validate one decoded JSON line (see the module doc) into the reader's dict."""
    if not isinstance(obj, dict):
        raise ConversationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "id" not in obj:
        raise ConversationError(f"{where}: missing 'id'")
    uid = _name(obj["id"], "id", where)
    where = f"{where} (utterance {uid!r})"
    stray = [k for k in obj if (k in MODALITIES and k != "text" and not _is_clip(k, obj[k])) or k == "text_feature"]
    if stray:
        # A common slip: vectors belong under "features" ("text" at top level is the transcript).
        raise ConversationError(f"{where}: put feature vectors under 'features', e.g. "
                                f'"features": {{"{stray[0].replace("_feature", "")}": ...}}')
    out: dict[str, Any] = {"id": uid, "where": where}
    speaker = obj.get("speaker")
    out["speaker"] = None if speaker is None else _name(speaker, "speaker", where)
    if obj.get("text") is not None:
        if not isinstance(obj["text"], str):
            raise ConversationError(f"{where}: 'text' must be a string, got {type(obj['text']).__name__}")
        out["text"] = obj["text"]
    if obj.get("audio") is not None:
        try:
            out["audio"] = parse_clip(obj["audio"], base, f"{where}, audio")
        except AudioListError as e:
            raise ConversationError(str(e)) from None
    feats = obj.get("features")
    if feats is None:
        feats = {}
    if not isinstance(feats, dict):
        raise ConversationError(f"{where}: 'features' must be an object {{modality: vector or path}}")
    unknown = [m for m in feats if m not in MODALITIES]
    if unknown:
        raise ConversationError(f"{where}: unknown modality {unknown[0]!r} in 'features'; expected {MODALITIES}")
    out["features"] = {
        m: _feature(v, base, f"{where}, features.{m}") for m, v in feats.items() if v is not None
    }
    if "dialogue" in obj:
        out["dialogue"] = _name(obj["dialogue"], "dialogue", where)
    return out


def _json_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not valid JSON")


def read_conversation_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Utterances of a conversation JSONL file (schema in the module doc), in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise ConversationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConversationError(f"{path}: unreadable ({e})") from None
    out: list[dict[str, Any]] = []
    first: dict[str, str] = {}
    with_dialogue: bool | None = None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line, parse_constant=_json_constant)
        except json.JSONDecodeError as e:
            raise ConversationError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        except ValueError as e:  # NaN / Infinity literals
            raise ConversationError(f"{where}: {e}") from None
        except RecursionError:
            raise ConversationError(f"{where}: JSON nested too deeply (an utterance is one flat object)") from None
        utt = parse_utterance(obj, where, path.parent)
        if utt["id"] in first:
            raise ConversationError(f"{where}: duplicate id {utt['id']!r} (first at {first[utt['id']]})")
        first[utt["id"]] = where
        has = "dialogue" in utt
        if with_dialogue is None:
            with_dialogue = has
        elif has != with_dialogue:
            raise ConversationError(
                f"{where}: 'dialogue' is given on {'this line but not on earlier ones' if has else 'earlier lines but not this one'}; "
                "give it on every line or on none"
            )
        out.append(utt)
    if not out:
        raise ConversationError(f"{path}: no utterances (empty file)")
    return out


def split_dialogues(utterances: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group utterances by their `dialogue` key (first-appearance order, file order within)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for u in utterances:
        groups.setdefault(u.get("dialogue"), []).append(u)
    return list(groups.values())
