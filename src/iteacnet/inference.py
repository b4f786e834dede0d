"""Predict emotions for new conversations with a trained checkpoint.

    predictor = Predictor.from_checkpoint("runs/iemocap4/seed0")
    predictor.predict_conversation([
        {"id": "u1", "speaker": "F", "text": "I can't believe you did that."},
        {"id": "u2", "speaker": "M", "features": {"text": vec}},  # vec: raw (384,) array
    ])
    -> [{"id": "u1", "speaker": "F", "modalities": ["text"], "label": "angry",
         "probabilities": {"happy+excited": 0.05, ...}}, ...]

An utterance is a dict: `id`, `speaker`, optional `text` (raw transcript), optional
`features` {modality: raw (d,) vector}; the schema of `iteacnet.data.conversation`, whose
reader produces exactly these dicts. A modality that is not given is missing: present=False
and an all-zero input, as in evaluation. Features are standardized with the checkpoint's
training statistics, so give raw values, as found in the corpus's feature files.

Raw text without `features.text` is embedded on the fly when the checkpoint's text features
came from the `extract text` extractor (see `text_extractor_check`), with the same encoder;
otherwise it is an error. A model without a text modality ignores raw text. Likewise raw
`audio` (a path, or {"path", "start", "end"}) without `features.audio` is featurised with
the openSMILE settings of the checkpoint's `extract audio` manifest
(`iteacnet.data.audio.audio_extractor_check`), and is an error for other audio features.

Speakers follow the training corpus's scheme (`meta.json` "speaker_scheme"): with `roles`,
the first speaker of a conversation is role 0, the next new one role 1, … (capped at the
model's last role). With `identities`, a name the model knows (IEMOCAP: 'F', 'M') keeps its
index; an unknown name gets its role in the conversation, with an `UnknownSpeakerWarning`.
A single-speaker model (CMU-MOSI) ignores speakers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from iteacnet.config import ExperimentConfig
from iteacnet.data import audio as audio_extract  # cheap: opensmile loads on first use
from iteacnet.data.assemble import role_codes
from iteacnet.data.batching import Batch
from iteacnet.data.conversation import ConversationError, as_feature_vector
from iteacnet.data.extract import (
    EMBED_DIM,
    EXTRACTOR_NAME,
    embed_texts,  # cheap: the encoder (sentence-transformers) loads on first use
    manifest_matches,
    read_manifest,
)
from iteacnet.errors import CheckpointError, UserError
from iteacnet.models.base import Method, ModelSpec
from iteacnet.models.mixers import length_limit
from iteacnet.training.checkpoint import load_checkpoint_weights, read_checkpoint_files
from iteacnet.training.engine import model_input
from iteacnet.training.frameworks import build_method

# The longest conversation predicted in one piece (see Predictor._check_length).
MAX_UTTERANCES = 2048


class UnknownSpeakerWarning(UserWarning):
    """A speaker name the checkpoint's identities do not know; it was given its role."""


class PredictError(UserError):
    """An utterance or conversation the checkpoint cannot predict; the message says which."""


def spec_from_meta(meta: dict[str, Any]) -> ModelSpec:
    s = meta["spec"]
    return ModelSpec(
        dims=tuple((str(m), int(d)) for m, d in s["dims"]),
        num_outputs=int(s["num_outputs"]),
        task=str(s["task"]),
        num_speakers=int(s["num_speakers"]),
        regression_loss=str(s.get("regression_loss", "mse")),
    )


def text_extractor_check(cfg: ExperimentConfig, meta: dict[str, Any], spec: ModelSpec) -> tuple[bool, str]:
    """Were the checkpoint's text features made by `extract text` (so raw text can be embedded)?

    Decided from what the checkpoint records, most specific first: an explicit
    `meta["text_extractor"]`; else the training text folder `<data.root>/features/<text_feature>`:
    its manifest if it has one, otherwise its name (the shared `text-minilm-384` folders carry
    no manifest but were made with the same encoder, data/README). The dimension must be 384.
    """
    dims = spec.dim_of
    if "text" not in dims:
        return False, "the model has no text modality"
    if dims["text"] != EMBED_DIM:
        return False, f"its text features are {dims['text']}-d, the extractor's are {EMBED_DIM}-d"
    recorded = meta.get("text_extractor")
    if isinstance(recorded, str):
        return recorded == EXTRACTOR_NAME, f"the checkpoint records text features from {recorded!r}"
    if cfg.data.corpus_dir:  # a corpus folder: its corpus.json names the text features
        from iteacnet.data.corpus import CorpusError
        from iteacnet.data.table import read_description

        try:
            source = read_description(cfg.data.corpus_dir).features.get("text")
        except CorpusError as e:
            return False, f"its corpus folder cannot be read ({e})"
        if source is None or source.folder is None:
            return False, "its text features are a matrix, which records no extractor"
        folder = source.folder
        if read_manifest(folder) is not None:
            ok = manifest_matches(folder)
            return ok, f"{folder}/manifest.json {'matches' if ok else 'does not match'} the {EXTRACTOR_NAME} extractor"
        return False, f"its text feature folder {folder} has no manifest.json"
    name = cfg.data.text_feature
    if cfg.data.corpus == "synthetic" or name in ("", "none"):
        return False, f"it was trained on {cfg.data.corpus!r} text features {name or '(GCNet default)'!r}"
    folder = Path(cfg.data.root) / "features" / name
    if read_manifest(folder) is not None:
        ok = manifest_matches(folder)
        return ok, f"{folder}/manifest.json {'matches' if ok else 'does not match'} the {EXTRACTOR_NAME} extractor"
    ok = name == EXTRACTOR_NAME
    return ok, f"its text feature folder is named {name!r}" + ("" if ok else f", not {EXTRACTOR_NAME!r}")


@dataclass
class _Encoded:
    """One conversation as model inputs (T utterances, M modalities)."""

    features: dict[str, np.ndarray]  # modality -> (T, d_m) standardized, zero where absent
    present: np.ndarray  # (T, M) bool
    speakers: np.ndarray  # (T,) int64


class Predictor:
    """A checkpoint ready to label new conversations (eval mode, no gradients)."""

    def __init__(
        self,
        method: nn.Module,
        spec: ModelSpec,
        cfg: ExperimentConfig,
        meta: dict[str, Any],
        device: str = "cpu",
        source: str = "",
    ) -> None:
        self.method = method.to(device).eval()
        self.spec = spec
        self.cfg = cfg
        self.meta = meta
        self.device = device
        self.source = source
        std = meta.get("standardization", {})
        missing = [m for m in spec.modalities if m not in std]
        if missing:
            raise CheckpointError(f"{source or 'checkpoint'}: meta.json has no standardization for {missing}")
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for m, d in spec.dims:
            mu = np.asarray(std[m]["mean"], dtype=np.float32)
            sd = np.asarray(std[m]["std"], dtype=np.float32)
            if mu.shape != (d,) or sd.shape != (d,):
                raise CheckpointError(f"{source or 'checkpoint'}: standardization of {m} is not {d}-d")
            self.stats[m] = (mu, sd)
        self.speaker_names: tuple[str, ...] = tuple(str(s) for s in meta.get("speaker_names", ()))
        self.speaker_scheme = str(meta.get("speaker_scheme", "identities"))
        names = tuple(str(c) for c in meta.get("class_names", ()))
        if spec.task == "classification" and len(names) != spec.num_outputs:
            names = tuple(str(i) for i in range(spec.num_outputs))  # a corpus without class names
        self._class_names = names if spec.task == "classification" else ()
        self.text_from_extractor, self.text_reason = text_extractor_check(cfg, meta, spec)
        self.audio_settings, self.audio_reason = audio_extract.audio_extractor_check(cfg, meta, spec)
        # temporal_mlp's weight is defined up to max_len utterances; only the part that
        # predicts counts (ITS: the student).
        part = getattr(method, "inference_model", None)
        infer: nn.Module = part() if callable(part) else method
        self.mixer_limit: int | None = length_limit(infer)
        # Attention over a conversation costs memory in the square of its length (a TF
        # student asked for 80 GB at 100,000 utterances): longer ones are refused by name.
        self.max_utterances: int = min(self.mixer_limit or MAX_UTTERANCES, MAX_UTTERANCES)

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "cpu") -> Predictor:
        """Build the method of `config.json` with the spec of `meta.json` and load its weights."""
        folder = Path(folder)
        cfg, meta = read_checkpoint_files(folder)
        spec = spec_from_meta(meta)
        method = build_method(spec, cfg.model)
        load_checkpoint_weights(method, folder, meta)
        return cls(method, spec, cfg, meta, device, source=str(folder))

    # ------------------------------------------------------------------ what the model knows
    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modalities

    @property
    def dims(self) -> dict[str, int]:
        return self.spec.dim_of

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in output order; empty for a regression checkpoint."""
        return self._class_names

    @property
    def task(self) -> str:
        return self.spec.task

    # ------------------------------------------------------------------ prediction
    def predict_conversation(self, utterances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result dict per utterance, in order (see the module doc)."""
        return self.predict_batch([utterances])[0]

    def predict_batch(
        self, conversations: list[list[dict[str, Any]]], batch_size: int = 32
    ) -> list[list[dict[str, Any]]]:
        """`predict_conversation` over several conversations, batched."""
        encoded = self._encode_all(conversations)
        outputs = self._run_all(encoded, batch_size)
        return [
            [self._result(u, row, present) for u, row, present in zip(conv, out, enc.present)]
            for conv, out, enc in zip(conversations, outputs, encoded)
        ]

    def predict_outputs(
        self, conversations: list[list[dict[str, Any]]], batch_size: int = 32
    ) -> list[np.ndarray]:
        """Raw (T, C) model outputs per conversation: logits, or (T, 1) scores for regression."""
        return self._run_all(self._encode_all(conversations), batch_size)

    # ------------------------------------------------------------------ internals
    def _encode_all(self, conversations: list[list[dict[str, Any]]]) -> list[_Encoded]:
        if not isinstance(conversations, list) or not all(isinstance(c, list) for c in conversations):
            raise PredictError("expected a list of conversations, each a list of utterance dicts")
        vectors: list[list[dict[str, np.ndarray]]] = []
        speakers: list[np.ndarray] = []
        to_embed: list[tuple[int, int, str]] = []
        to_hear: list[tuple[int, int, audio_extract.AudioClip, str]] = []
        for c, conv in enumerate(conversations):
            if not conv:
                raise PredictError(f"conversation {c} has no utterances")
            self._check_length(conv, c)
            seen: dict[str, str] = {}
            rows = []
            for t, utt in enumerate(conv):
                where = self._where(utt, c, t)
                uid = str(utt["id"])
                if uid in seen:
                    raise PredictError(f"{where}: duplicate id {uid!r} in this conversation (first at {seen[uid]})")
                seen[uid] = where
                feats = self._features(utt, where)
                text, clip = utt.get("text"), utt.get("audio")
                raw = False
                if "text" in self.dims and "text" not in feats and text is not None:
                    self._check_text(text, where)
                    to_embed.append((c, t, text))
                    raw = True
                if "audio" in self.dims and "audio" not in feats and clip is not None:
                    to_hear.append((c, t, self._check_audio(clip, where), where))
                    raw = True
                if not feats and not raw:
                    hint = " or raw 'text'" if self.text_from_extractor else ""
                    hint += " or raw 'audio'" if self.audio_settings is not None else ""
                    unused = " (this model does not use text)" if text is not None and "text" not in self.dims else ""
                    unused += " (this model does not use audio)" if clip is not None and "audio" not in self.dims else ""
                    raise PredictError(
                        f"{where}: no modality at all{unused}; give at least one of "
                        f"{', '.join('features.' + m for m in self.modalities)}{hint}"
                    )
                rows.append(feats)
            vectors.append(rows)
            speakers.append(self._speakers(conv, c))  # before embedding: fail fast, cheaply
        if to_embed:
            embedded = self._embed([text for _, _, text in to_embed])
            for (c, t, _), vec in zip(to_embed, embedded):
                vectors[c][t]["text"] = vec
        if to_hear:
            heard = self._hear([clip for _, _, clip, _ in to_hear], [where for _, _, _, where in to_hear])
            for (c, t, _, _), vec in zip(to_hear, heard):
                vectors[c][t]["audio"] = vec
        return [self._encode(rows, spk) for rows, spk in zip(vectors, speakers)]

    def _run_all(self, encoded: list[_Encoded], batch_size: int) -> list[np.ndarray]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[np.ndarray] = []
        for start in range(0, len(encoded), batch_size):
            out.extend(self._run(encoded[start:start + batch_size]))
        return out

    @staticmethod
    def _where(utt: Any, c: int, t: int) -> str:
        if not isinstance(utt, dict):
            raise PredictError(f"conversation {c}, utterance {t}: expected a dict, got {type(utt).__name__}")
        if "id" not in utt:
            raise PredictError(f"conversation {c}, utterance {t}: missing 'id'")
        return str(utt.get("where") or f"conversation {c}, utterance {t} (id {str(utt['id'])!r})")

    def _check_length(self, conv: list[dict[str, Any]], c: int) -> None:
        limit = self.max_utterances
        if len(conv) > limit:
            why = ("its temporal_mlp mixer's model.max_len" if self.mixer_limit == limit
                   else "attention memory grows with the square of the length")
            raise PredictError(
                f"conversation {c} (from {self._where(conv[0], c, 0)}) has {len(conv)} utterances; this model "
                f"handles at most {limit} ({why}): split the conversation"
            )

    def _features(self, utt: dict[str, Any], where: str) -> dict[str, np.ndarray]:
        given = utt.get("features") or {}
        if not isinstance(given, dict):
            raise PredictError(f"{where}: 'features' must be a dict {{modality: vector}}")
        out: dict[str, np.ndarray] = {}
        for m, value in given.items():
            if value is None:
                continue
            if m not in self.dims:
                raise PredictError(
                    f"{where}: this model does not use {m!r} features (it uses {', '.join(self.modalities)}); remove them"
                )
            try:
                v = as_feature_vector(value, f"{where}, features.{m}")
            except ConversationError as e:
                raise PredictError(str(e)) from None
            if v.shape[0] != self.dims[m]:
                raise PredictError(f"{where}: {m} feature has dimension {v.shape[0]}, the model expects {self.dims[m]}")
            out[m] = v
        return out

    def _check_text(self, text: Any, where: str) -> None:
        if not isinstance(text, str):
            raise PredictError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        if not self.text_from_extractor:
            raise PredictError(
                f"{where}: raw text given without a text feature, but this checkpoint's text features were "
                f"not made by `iteacnet extract text` ({self.text_reason}), so the text cannot be embedded "
                "the same way; give features.text instead"
            )

    def _embed(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(embed_texts(texts), dtype=np.float32)
        if vecs.shape != (len(texts), self.dims["text"]):
            raise RuntimeError(f"text encoder returned {vecs.shape}, expected ({len(texts)}, {self.dims['text']})")
        return vecs

    def _check_audio(self, clip: Any, where: str) -> audio_extract.AudioClip:
        if self.audio_settings is None:
            raise PredictError(
                f"{where}: raw audio given without an audio feature, but this checkpoint's audio features were "
                f"not made by `iteacnet extract audio` ({self.audio_reason}), so the clip cannot be featurised "
                "the same way; give features.audio instead"
            )
        try:
            return audio_extract.parse_clip(clip, None, f"{where}, audio")
        except audio_extract.AudioError as e:
            raise PredictError(str(e)) from e

    def _hear(self, clips: list[audio_extract.AudioClip], wheres: list[str]) -> np.ndarray:
        assert self.audio_settings is not None
        try:
            vecs = audio_extract.featurize_clips(clips, self.audio_settings, labels=wheres)
        except audio_extract.AudioError as e:  # the message names the utterance; the cause, the kind
            raise PredictError(f"{type(e).__name__}: {e}") from e
        if vecs.shape != (len(clips), self.dims["audio"]):
            raise RuntimeError(f"audio featuriser returned {vecs.shape}, expected ({len(clips)}, {self.dims['audio']})")
        return vecs

    def _speakers(self, conv: list[dict[str, Any]], c: int) -> np.ndarray:
        n = self.spec.num_speakers
        if n <= 1:
            return np.zeros(len(conv), dtype=np.int64)  # one speaker: names do not matter
        known = {s: i for i, s in enumerate(self.speaker_names[:n])}
        names: list[str] = []
        for t, utt in enumerate(conv):
            spk = utt.get("speaker")
            if spk is None or (isinstance(spk, str) and not spk.strip()):
                raise PredictError(
                    f"{self._where(utt, c, t)}: no 'speaker'; this model tells {n} speakers apart "
                    f"(it knows {', '.join(map(repr, known))})"
                )
            names.append(str(spk))
        # Roles (first speaker of the conversation 0, next new one 1, …, capped at n - 1),
        # as the training corpus coded them (data/assemble.py).
        roles = role_codes(np.asarray([0, len(names)]), names, n)
        if self.speaker_scheme == "roles":
            return roles
        # Identities: a known name keeps its index; an unknown one gets its role, never
        # silently some trained identity, and a warning says so.
        out = np.asarray([known.get(s, -1) for s in names], dtype=np.int64)
        unknown = list(dict.fromkeys(s for s in names if s not in known))
        if unknown:
            given = {s: int(roles[names.index(s)]) for s in unknown}
            warnings.warn(
                f"conversation {c}: speaker(s) {', '.join(f'{s!r} -> role {i}' for s, i in given.items())} "
                f"unknown to the model (it knows {', '.join(map(repr, known))}); each takes the index of its "
                "role in the conversation (first speaker 0, next new speaker 1, …)",
                UnknownSpeakerWarning, stacklevel=4,
            )
            out = np.where(out < 0, roles, out)
        return out

    def _encode(self, rows: list[dict[str, np.ndarray]], speakers: np.ndarray) -> _Encoded:
        T = len(rows)
        feats: dict[str, np.ndarray] = {}
        present = np.zeros((T, len(self.modalities)), dtype=bool)
        for j, (m, d) in enumerate(self.spec.dims):
            mu, sd = self.stats[m]
            x = np.zeros((T, d), dtype=np.float32)
            for t, r in enumerate(rows):
                if m in r:
                    # Same float32 arithmetic as Corpus.standardized.
                    x[t] = ((r[m] - mu) / sd).astype(np.float32)
                    present[t, j] = True
            feats[m] = x
        return _Encoded(feats, present, speakers)

    @torch.no_grad()
    def _run(self, group: list[_Encoded]) -> list[np.ndarray]:
        B = len(group)
        T = max(len(e.speakers) for e in group)
        M = len(self.modalities)
        feats = {m: np.zeros((B, T, d), dtype=np.float32) for m, d in self.spec.dims}
        present = np.zeros((B, T, M), dtype=bool)
        valid = np.zeros((B, T), dtype=bool)
        speakers = np.zeros((B, T), dtype=np.int64)
        for b, e in enumerate(group):
            n = len(e.speakers)
            for m in feats:
                feats[m][b, :n] = e.features[m]
            present[b, :n] = e.present
            valid[b, :n] = True
            speakers[b, :n] = e.speakers
        index = np.where(valid, np.arange(B * T).reshape(B, T), -1)
        batch = Batch(
            features={m: torch.from_numpy(x) for m, x in feats.items()},
            available=torch.from_numpy(present), valid=torch.from_numpy(valid),
            speakers=torch.from_numpy(speakers), labels=torch.zeros((B, T), dtype=torch.int64),
            index=torch.from_numpy(index), dialogues=list(range(B)),
        ).to(self.device)
        # model_input is the evaluation path's: missing modalities are zeroed the same way.
        pred = cast(Method, self.method).predict(model_input(batch, batch.available))
        pred_np = pred.float().cpu().numpy()
        return [pred_np[b, : len(e.speakers)].copy() for b, e in enumerate(group)]

    def _result(self, utt: dict[str, Any], row: np.ndarray, present: np.ndarray) -> dict[str, Any]:
        res: dict[str, Any] = {"id": str(utt["id"])}
        if "dialogue" in utt:
            res["dialogue"] = utt["dialogue"]
        res["speaker"] = utt.get("speaker")
        res["modalities"] = [m for m, p in zip(self.modalities, present) if p]
        if self.task == "classification":
            z = row.astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            res["label"] = self.class_names[int(np.argmax(p))]
            res["probabilities"] = {name: float(v) for name, v in zip(self.class_names, p)}
        else:
            res["score"] = float(row[0])
        return res
