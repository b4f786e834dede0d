"""Audio feature extraction (openSMILE) and prediction from recordings.

Every clip is written here: tones, noise, and, where `espeak-ng` is installed, spoken
sentences. Checked: the vectors equal the `opensmile` package's own output for the same file
(also for converted clips and segments); segments of a long recording equal the cut files;
layout, manifest and resume; every bad input is a named error with nothing written; and
extract -> train -> predict from the recordings gives the evaluation path's predictions.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

_HINT = 'needs the optional audio dependencies: pip install -e ".[audio]"'
opensmile = pytest.importorskip("opensmile", reason=_HINT)
sf = pytest.importorskip("soundfile", reason=_HINT)

from conftest import load_benchmark, tiny_config  # noqa: E402
from gcnet_layout import write_iemocap_like  # noqa: E402
from iteacnet.cli import main  # noqa: E402
from iteacnet.config import DataConfig, ExperimentConfig, replace  # noqa: E402
from iteacnet.data import audio as au  # noqa: E402
from iteacnet.data.audio import (  # noqa: E402
    AudioClip,
    AudioConversionWarning,
    AudioListError,
    AudioNotFound,
    AudioSettings,
    AudioUnavailable,
    AudioUnreadable,
    EmptyAudio,
    SegmentOutOfRange,
    SilentAudio,
    audio_extractor_check,
    audio_files_in,
    extract_audio_features,
    read_audio_list,
)
from iteacnet.data.conversation import ConversationError, read_conversation_jsonl, split_dialogues  # noqa: E402
from iteacnet.data.loading import load_corpus  # noqa: E402
from iteacnet.inference import PredictError, Predictor  # noqa: E402
from iteacnet.models.base import ModelSpec  # noqa: E402
from iteacnet.training.engine import fit, predict_split, prepare  # noqa: E402

SR = 16000


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A tone with a little noise and a slow tremolo, so every descriptor has something to measure."""
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    x = amp * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * freq * t + np.sin(2 * np.pi * 5 * t))
    return (x + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def noise(seconds: float, sr: int = SR, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def own(path: Path, feature_set: str = "eGeMAPSv02", **kw: Any) -> np.ndarray:
    """The opensmile package's own functionals for a file (or a segment: start=, end= seconds)."""
    import pandas as pd

    start, end = kw.pop("start", None), kw.pop("end", None)
    smile = opensmile.Smile(feature_set=feature_set, feature_level="Functionals", **kw)
    seg = {} if start is None else {"start": pd.to_timedelta(start, "s"), "end": pd.to_timedelta(end, "s")}
    return smile.process_file(str(path), **seg).to_numpy()[0].astype(np.float32)


def extract(items: list[tuple[str, Any]], out: Path, **kw: Any) -> au.AudioExtractReport:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioConversionWarning)
        return extract_audio_features(items, out, progress=False, workers=2, **kw)


# --------------------------------------------------------------------------- equal to opensmile
@pytest.mark.parametrize("feature_set", ["eGeMAPSv02", "ComParE_2016"])
def test_equals_opensmile_on_the_same_file(tmp_path: Path, feature_set: str) -> None:
    files = {"tone": write(tmp_path / "tone.wav", tone(220, 0.8)),
             "noise": write(tmp_path / "noise.flac", noise(0.5, seed=3)),
             "float": write(tmp_path / "float.wav", tone(330, 0.5, amp=0.5), subtype="FLOAT")}
    out = tmp_path / "out"
    report = extract(list(files.items()), out, settings=AudioSettings(feature_set))
    assert (report.written, report.resampled, report.downmixed) == (3, 0, 0)
    for uid, path in files.items():
        got = np.load(out / f"{uid}.npy")
        assert got.shape == (au.FEATURE_SETS[feature_set],) and got.dtype == np.float32
        np.testing.assert_array_equal(got, own(path, feature_set))


def test_converted_clips_equal_opensmile_resample_and_mixdown(tmp_path: Path) -> None:
    stereo = np.stack([tone(200, 0.7, sr=44100), noise(0.7, sr=44100, seed=1)], axis=1)
    path = write(tmp_path / "stereo44k.wav", stereo, sr=44100)
    low = write(tmp_path / "mono8k.wav", tone(300, 0.7, sr=8000), sr=8000)
    with pytest.warns(AudioConversionWarning) as caught:
        report = extract_audio_features([("s", path), ("m", low)], tmp_path / "out", progress=False)
    text = " | ".join(str(w.message) for w in caught)
    assert "2 clip(s) resampled to 16000 Hz with audresample" in text and "44100 Hz: s" in text and "8000 Hz: m" in text
    assert "1 clip(s) with several channels downmixed to mono" in text and "s (2 ch)" in text
    assert (report.resampled, report.downmixed, report.clipped) == (2, 1, 0)
    ref = own(path, sampling_rate=SR, resample=True, channels=[0, 1], mixdown=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "s.npy"), ref)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "m.npy"), own(low, sampling_rate=SR, resample=True))


def test_out_of_range_samples_are_clipped_and_said(tmp_path: Path) -> None:
    path = write(tmp_path / "loud.wav", 1.5 * tone(250, 0.5, amp=0.9), subtype="FLOAT")
    with pytest.warns(AudioConversionWarning, match=r"1 clip\(s\) clipped to \[-1, 32767/32768\]"):
        report = extract_audio_features([("loud", path)], tmp_path / "out", progress=False)
    assert report.clipped == 1
    clipped = write(tmp_path / "clipped.wav", np.clip(sf.read(str(path), dtype="float32")[0], -1, 32767 / 32768),
                    subtype="FLOAT")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "loud.npy"), own(clipped))


def test_spoken_sentences(tmp_path: Path) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); tones and noise cover the rest")
    sentences = {"s1": "I can't believe you did that.", "s2": "That's wonderful, I'm so proud of you."}
    for uid, text in sentences.items():
        subprocess.run([espeak, "-w", str(tmp_path / f"{uid}.wav"), text], check=True, capture_output=True)
    assert sf.info(str(tmp_path / "s1.wav")).samplerate == 22050  # espeak-ng's rate: resampled
    extract(audio_files_in(tmp_path), tmp_path / "out")
    for uid in sentences:
        ref = own(tmp_path / f"{uid}.wav", sampling_rate=SR, resample=True)
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{uid}.npy"), ref)
    a, b = (np.load(tmp_path / "out" / f"{u}.npy") for u in sentences)
    assert not np.allclose(a, b)


# --------------------------------------------------------------------------- segments
def test_segments_of_a_long_recording_equal_the_cut_files(tmp_path: Path) -> None:
    long = np.concatenate([tone(180, 1.0), noise(0.5, seed=2), tone(400, 0.75, amp=0.2)])
    rec = write(tmp_path / "rec" / "session.wav", long)
    bounds = [(0.0, 1.0), (1.0, 1.5), (1.5, None), (0.25, 0.6)]
    lines = ["id,path,start,end"]
    cuts = []
    for k, (start, end) in enumerate(bounds):
        lines.append(f"seg{k},rec/session.wav,{start},{'' if end is None else end}")
        cut = long[int(start * SR): None if end is None else int(end * SR)]
        cuts.append((f"seg{k}", write(tmp_path / "cuts" / f"seg{k}.wav", cut)))
    (tmp_path / "segments.csv").write_text("\n".join(lines) + "\n")
    items = read_audio_list(tmp_path / "segments.csv")
    assert items[0] == ("seg0", AudioClip(tmp_path / "rec" / "session.wav", 0.0, 1.0))
    assert items[2][1].end is None
    extract(items, tmp_path / "segmented")
    extract(cuts, tmp_path / "cut")
    for uid, _ in cuts:
        np.testing.assert_array_equal(np.load(tmp_path / "segmented" / f"{uid}.npy"), np.load(tmp_path / "cut" / f"{uid}.npy"))
    # Off-sample boundaries are rounded as opensmile's own reader (audiofile) rounds them.
    (tmp_path / "odd.jsonl").write_text(json.dumps({"id": "odd", "path": str(rec), "start": 0.30003, "end": 1.23456}) + "\n")
    extract(read_audio_list(tmp_path / "odd.jsonl"), tmp_path / "odd")
    np.testing.assert_array_equal(np.load(tmp_path / "odd" / "odd.npy"), own(rec, start=0.30003, end=1.23456))


# --------------------------------------------------------------------------- layout, manifest, resume
def test_layout_manifest_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = [(f"u{k}", write(tmp_path / "wav" / f"u{k}.wav", tone(150 + 40 * k, 0.3, seed=k))) for k in range(6)]
    out = tmp_path / "CORPUS" / "features" / "audio-egemaps-88"
    first = extract(clips[:4], out)
    assert (first.written, first.skipped) == (4, 0)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"] + [f"u{k}.npy" for k in range(4)]
    m = json.loads((out / "manifest.json").read_text())
    assert m["extractor"] == "audio-opensmile" and m["feature_set"] == "eGeMAPSv02" and m["dim"] == 88
    assert (m["sample_rate"], m["feature_level"], m["downmix"], m["dtype"]) == (16000, "functionals", "mean", "float32")
    assert m["opensmile_version"] == opensmile.__version__ and m["count"] == 4
    assert AudioSettings.from_manifest(m) == AudioSettings("eGeMAPSv02", 16000, opensmile.__version__)

    # An interrupted run keeps whole files only; the next one does just the rest.
    stamp = {u: (out / f"{u}.npy").stat().st_mtime_ns for u, _ in clips[:4]}
    real, calls = au.featurize, []

    def interrupted(clip: AudioClip, settings: AudioSettings) -> Any:
        calls.append(clip)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(clip, settings)

    monkeypatch.setattr(au, "featurize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_audio_features(clips, out, progress=False, workers=1)
    monkeypatch.undo()
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")] and len(names) == 1 + 5  # one of the two new ones
    again = extract(clips, out)
    assert (again.written, again.skipped) == (1, 5)
    assert stamp == {u: (out / f"{u}.npy").stat().st_mtime_ns for u, _ in clips[:4]}
    assert json.loads((out / "manifest.json").read_text())["count"] == 6

    # Another feature set or sample rate never mixes into the folder.
    with pytest.raises(ValueError, match=r"another extractor .*sample_rate=16000"):
        extract(clips, out, settings=AudioSettings("eGeMAPSv02", 8000))
    with pytest.raises(ValueError, match="another extractor"):
        extract(clips, out, settings=AudioSettings("ComParE_2016"))
    np.save(out / "u5.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match=r"u5\.npy exists but is not a \(88,\) float32 array"):
        extract(clips, out)
    assert extract(clips, out, overwrite=True).written == 6


def test_folder_listing(tmp_path: Path) -> None:
    write(tmp_path / "b.wav", tone(200, 0.2))
    write(tmp_path / "a.flac", tone(200, 0.2))
    (tmp_path / "notes.txt").write_text("not audio")
    write(tmp_path / "sub" / "c.wav", tone(200, 0.2))
    assert [u for u, _ in audio_files_in(tmp_path)] == ["a", "b"]
    assert [u for u, _ in audio_files_in(tmp_path, recursive=True)] == ["a", "b", "c"]
    write(tmp_path / "sub" / "a.wav", tone(200, 0.2))
    with pytest.raises(AudioListError, match="two files for utterance 'a'"):
        audio_files_in(tmp_path, recursive=True)
    with pytest.raises(AudioListError, match=r"no audio files .*--recursive"):
        audio_files_in(_empty(tmp_path))
    with pytest.raises(AudioListError, match="no such folder"):
        audio_files_in(tmp_path / "nope")


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("")
    return tmp_path / "empty"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("m.csv", "id,file\na,x.wav\n", r":1: header must name columns 'id' and 'path'"),
        ("m.csv", "id,path,start,end\na,x.wav,2,1\n", r":2: 'end' \(1 s\) must come after 'start' \(2 s\)"),
        ("m.csv", "id,path,start,end\na,x.wav,-1,\n", r":2: 'start' must be a finite number of seconds >= 0"),
        ("m.csv", "id,path,start\na,x.wav,soon\n", r":2: 'start' must be a number of seconds, got 'soon'"),
        ("m.csv", "id,path\na,x.wav\na,y.wav\n", r":3: duplicate id 'a' \(first at .*:2\)"),
        ("m.csv", "id,path\na,\n", r":2: audio needs a non-empty 'path'"),
        ("m.csv", "id,path\na,feats/a.npy\n", r":2: .*a\.npy is a feature file, not a recording"),
        ("m.jsonl", '{"id": "a", "path": "x.wav", "end": "inf"}\n', r":1: 'end' must be a finite number"),
        ("m.jsonl", '{"id": "a", "path": "x.wav", "start": true}\n', r":1: 'start' must be a number of seconds, got bool"),
        ("m.jsonl", '{"id": "a"}\n', r":1: missing key\(s\) \['path'\]"),
        ("m.jsonl", "", "empty file, no audio files"),
    ],
)
def test_manifest_errors(tmp_path: Path, name: str, content: str, match: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(AudioListError, match=match):
        read_audio_list(tmp_path / name)


# --------------------------------------------------------------------------- bad audio
def _bad(tmp_path: Path, kind: str) -> tuple[Any, type[Exception], str]:
    d = tmp_path / "bad"
    if kind == "missing":
        return d / "nope.wav", AudioNotFound, "no such audio file"
    if kind == "unreadable":
        d.mkdir(parents=True, exist_ok=True)
        (d / "text.wav").write_text("this is not a RIFF file")
        return d / "text.wav", AudioUnreadable, r"not a readable audio file .*ffmpeg"
    if kind == "directory":
        (d / "dir.wav").mkdir(parents=True)
        return d / "dir.wav", AudioUnreadable, "not a file"
    if kind == "zero-length":
        return write(d / "empty.wav", np.zeros(0, dtype=np.float32)), EmptyAudio, "zero-length recording"
    if kind == "too short":
        return write(d / "short.wav", tone(200, 0.05)), EmptyAudio, r"50\.0 ms of audio; .* at least 60 ms"
    if kind == "silent":
        return write(d / "silent.wav", np.zeros(SR, dtype=np.float32)), SilentAudio, r"silent \(digital zero"
    if kind == "below one step":
        x = np.full(SR, 0.4 / 32768, dtype=np.float32)
        return write(d / "hum.wav", x, subtype="FLOAT"), SilentAudio, r"silent \(peak -98\.\d dBFS"
    if kind == "stereo cancels":
        x = tone(200, 0.5)
        return write(d / "cancel.wav", np.stack([x, -x], 1)), SilentAudio, "silent"
    path = write(d / "two.wav", tone(200, 2.0))
    if kind == "segment after end":
        return {"path": path, "start": 2.5, "end": 3.0}, SegmentOutOfRange, r"outside the recording, which is 2\.000 s long"
    if kind == "segment past end":
        return {"path": path, "start": 1.0, "end": 2.1}, SegmentOutOfRange, "outside the recording"
    assert kind == "empty segment"
    return {"path": path, "start": 1.0, "end": 1.00001}, EmptyAudio, "zero-length segment"


BAD = ["missing", "unreadable", "directory", "zero-length", "too short", "silent", "below one step",
       "stereo cancels", "segment after end", "segment past end", "empty segment"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_audio_is_named_and_nothing_is_written(tmp_path: Path, kind: str) -> None:
    clip, error, match = _bad(tmp_path, kind)
    good = [("g0", write(tmp_path / "g0.wav", tone(220, 0.3))), ("g1", write(tmp_path / "g1.wav", tone(260, 0.3)))]
    fresh = tmp_path / "fresh"
    with pytest.raises(error, match=match) as info:
        extract([good[0], ("bad", clip), good[1]], fresh)
    assert "utterance 'bad'" in str(info.value) and isinstance(info.value, au.AudioError)
    assert not fresh.exists()
    # In a folder with earlier results nothing changes either.
    done = tmp_path / "done"
    extract(good[:1], done)
    before = {p.name: p.read_bytes() for p in done.iterdir()}
    with pytest.raises(error):
        extract([good[1], ("bad", clip)], done)
    assert {p.name: p.read_bytes() for p in done.iterdir()} == before


def test_several_bad_clips_are_listed_together(tmp_path: Path) -> None:
    items = [(k, _bad(tmp_path / k, k)[0]) for k in ("missing", "silent", "too short")]
    with pytest.raises(AudioNotFound) as info:
        extract(items, tmp_path / "out")
    msg = str(info.value)
    assert "and 2 more bad clip(s)" in msg and "SilentAudio" in msg and "EmptyAudio" in msg


def test_bad_settings_and_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown openSMILE feature set 'GeMAPS'"):
        AudioSettings("GeMAPS")
    with pytest.raises(ValueError, match="sample rate"):
        AudioSettings(sample_rate=16000.0)  # type: ignore[arg-type]
    wav = write(tmp_path / "a.wav", tone(200, 0.2))
    with pytest.raises(ValueError, match="cannot be used as a file name"):
        extract([("../a", wav)], tmp_path / "out")
    with pytest.raises(ValueError, match="duplicate utterance id 'a'"):
        extract([("a", wav), ("a", wav)], tmp_path / "out")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        extract_audio_features([("a", wav)], tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


def test_missing_extra_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "opensmile", None)  # import now raises ImportError
    wav = write(tmp_path / "a.wav", tone(200, 0.2))
    with pytest.raises(AudioUnavailable, match=r'pip install -e "\.\[audio\]"') as info:
        extract([("a", wav)], tmp_path / "out")
    assert info.value.missing == "opensmile" and "iteacnet[audio]" in str(info.value)
    assert main(["extract", "audio", "--folder", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert re.search(r"^iteacnet extract: audio: AudioUnavailable: .*\.\[audio\]", capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- CLI
def test_cli_extract_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "wav" / "a.wav", tone(200, 0.3))
    write(tmp_path / "wav" / "b.wav", np.stack([tone(300, 0.3, sr=22050)] * 2, 1), sr=22050)
    out = tmp_path / "features" / "audio-egemaps-88"
    assert main(["extract", "audio", "--folder", str(tmp_path / "wav"), "--out", str(out), "--workers", "2"]) == 0
    cap = capsys.readouterr()
    assert "2 written, 0 kept" in cap.out and "eGeMAPSv02, 88-d, 16000 Hz" in cap.out
    assert "note: 1 clip(s) resampled to 16000 Hz" in cap.err and "note: 1 clip(s) with several channels" in cap.err
    (tmp_path / "m.csv").write_text("id,path,start,end\nc,wav/a.wav,0.0,0.2\n")
    assert main(["extract", "audio", "--manifest", str(tmp_path / "m.csv"), "--out", str(out)]) == 0
    assert "1 written, 0 kept" in capsys.readouterr().out
    assert main(["extract", "audio", "--out", str(out)]) == 2
    assert "exactly one of --folder or --manifest" in capsys.readouterr().err
    assert main(["extract", "text", "--folder", str(tmp_path / "wav"), "--out", str(out)]) == 2  # a user error
    assert "exactly one of --label-file or --transcripts" in capsys.readouterr().err
    write(tmp_path / "quiet" / "z.wav", np.zeros(SR, dtype=np.float32))
    assert main(["extract", "audio", "--folder", str(tmp_path / "quiet"), "--out", str(tmp_path / "q")]) == 2
    assert "SilentAudio: utterance 'z'" in capsys.readouterr().err
    assert main(["extract", "audio", "--folder", str(tmp_path / "none"), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "AudioListError" in err and "no such folder" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()


# --------------------------------------------------------------------------- predict from recordings
FREQS = (140.0, 220.0, 330.0, 500.0)  # the synthetic label is the pitch class


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An IEMOCAP-like corpus whose audio is wav files (label = pitch), extracted and trained on."""
    tmp = tmp_path_factory.mktemp("audio-roundtrip")
    layout = write_iemocap_like(tmp / "IEMOCAP")
    ids, labels = layout.items[0], layout.items[1]
    wavs = tmp / "wavs"
    for did, utts in ids.items():
        for k, u in enumerate(utts):
            y = labels[did][k]
            write(wavs / f"{u}.wav", tone(FREQS[y] * (1 + 0.03 * k), 0.25 + 0.05 * (k % 3), seed=k))
    folder = layout.root / "features" / "audio-egemaps-88"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioConversionWarning)
        assert main(["extract", "audio", "--folder", str(wavs), "--out", str(folder)]) == 0
    cfg = replace(tiny_config(epochs=3), name="tiny-audio",
                  data=DataConfig(corpus="iemocap4", root=str(layout.root), text_feature="none",
                                  audio_feature="audio-egemaps-88", visual_feature="visual-v-5",
                                  split="loso", fold=0, cache_dir=str(tmp / "cache")))
    raw = load_corpus(cfg.data)
    data = prepare(raw, cfg)
    result = fit(cfg, data, out_dir=tmp / "ckpt")
    return {"cfg": cfg, "raw": raw, "data": data, "method": result.method, "folder": tmp / "ckpt",
            "wavs": wavs, "layout": layout, "tmp": tmp}


def _reference(t: dict[str, Any], present: np.ndarray | None = None) -> np.ndarray:
    return predict_split(t["method"], t["data"].corpus, t["data"].split.test, present)


def _probs(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def test_predict_from_wav_files_equals_the_evaluation_path(audio_ckpt: dict[str, Any]) -> None:
    t = audio_ckpt
    p = Predictor.from_checkpoint(t["folder"])
    assert p.audio_settings == AudioSettings("eGeMAPSv02", 16000, opensmile.__version__), p.audio_reason
    meta = json.loads((t["folder"] / "meta.json").read_text())
    assert meta["feature_manifests"]["audio"]["extractor"] == "audio-opensmile"
    raw, layout, tmp = t["raw"], t["layout"], t["tmp"]
    vis = layout.folder("visual")
    lines = []
    for d in t["data"].split.test:
        did = raw.dialogue_ids[d]
        for r in range(raw.offsets[d], raw.offsets[d + 1]):
            u = raw.utterance_ids[r]
            spk = raw.speaker_names[raw.speakers[r]]
            lines.append(json.dumps({"id": u, "speaker": spk, "dialogue": did, "audio": f"wavs/{u}.wav",
                                     "features": {"visual": str(vis / u / f"compress_{spk}.npy")}}))
    src = tmp / "conversation.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp / "pred.json"
    assert main(["predict", "--checkpoint", str(t["folder"]), "--input", str(src), "--output", str(out)]) == 0
    got = json.loads(out.read_text())["predictions"]
    assert [r["modalities"] for r in got] == [["audio", "visual"]] * len(lines)
    np.testing.assert_allclose([list(r["probabilities"].values()) for r in got], _probs(_reference(t)), atol=1e-5)

    # Audio alone (visual missing), from the API, with clips as path strings.
    convs = [[{"id": u["id"], "speaker": u["speaker"], "audio": str(u["audio"].path)} for u in conv]
             for conv in split_dialogues(read_conversation_jsonl(src))]
    assert p.modalities == ("audio", "visual") and len(convs) == len(t["data"].split.test)
    present = np.zeros((len(lines), 2), dtype=bool)
    present[:, 0] = True
    np.testing.assert_allclose(np.concatenate(p.predict_outputs(convs)), _reference(t, present), atol=1e-5)


def test_predict_from_segments_of_one_recording(audio_ckpt: dict[str, Any]) -> None:
    t = audio_ckpt
    raw, tmp = t["raw"], t["tmp"]
    d = t["data"].split.test[0]
    utts = raw.utterance_ids[raw.offsets[d]:raw.offsets[d + 1]]
    pieces, bounds, at = [], [], 0
    for u in utts:
        x, sr = sf.read(str(t["wavs"] / f"{u}.wav"), dtype="int16")
        pieces += [x, np.zeros(SR // 10, dtype=np.int16)]  # 100 ms pause between turns
        bounds.append((at / SR, (at + len(x)) / SR))
        at += len(x) + SR // 10
    sf.write(str(tmp / "session.wav"), np.concatenate(pieces), SR, subtype="PCM_16")
    conv = [{"id": u, "speaker": u.rsplit("_", 1)[-1][0], "audio": {"path": str(tmp / "session.wav"), "start": s, "end": e}}
            for u, (s, e) in zip(utts, bounds)]
    present = np.zeros((len(t["data"].corpus.rows_of(t["data"].split.test)), 2), dtype=bool)
    present[:, 0] = True  # audio only
    got = Predictor.from_checkpoint(t["folder"]).predict_outputs([conv])[0]
    np.testing.assert_allclose(got, _reference(t, present)[: len(conv)], atol=1e-5)


def test_predict_audio_errors(audio_ckpt: dict[str, Any], tmp_path: Path) -> None:
    p = Predictor.from_checkpoint(audio_ckpt["folder"])
    silent = write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32))
    good = str(audio_ckpt["wavs"] / f"{audio_ckpt['raw'].utterance_ids[0]}.wav")
    conv = [{"id": "a", "speaker": "F", "audio": good}, {"id": "b", "speaker": "M", "audio": str(silent)}]
    with pytest.raises(PredictError, match=r"SilentAudio: conversation 0, utterance 1 \(id 'b'\): .*silent") as info:
        p.predict_conversation(conv)
    assert isinstance(info.value.__cause__, SilentAudio)
    conv[1]["audio"] = str(tmp_path / "nope.wav")
    with pytest.raises(PredictError, match=r"AudioNotFound: .*utterance 1 .*no such audio file"):
        p.predict_conversation(conv)
    conv[1]["audio"] = {"path": good, "start": 5.0, "end": 6.0}
    with pytest.raises(PredictError, match=r"SegmentOutOfRange"):
        p.predict_conversation(conv)
    conv[1]["audio"] = {"path": good, "begin": 1}
    with pytest.raises(PredictError, match=r"unknown key\(s\) \['begin'\]"):
        p.predict_conversation(conv)
    with pytest.raises(PredictError, match=r"no modality at all; give at least one of features.audio, features.visual "
                                           r"or raw 'audio'"):
        p.predict_conversation([{"id": "a", "speaker": "F"}])
    # The JSONL reader: a feature file or a vector is not a recording.
    src = tmp_path / "c.jsonl"
    src.write_text('{"id": "a", "audio": "feats/a.npy"}\n')
    with pytest.raises(ConversationError, match=r"c\.jsonl:1 .*a\.npy is a feature file, not a recording"):
        read_conversation_jsonl(src)
    src.write_text('{"id": "a", "audio": [1, 2]}\n')
    with pytest.raises(ConversationError, match="under 'features'"):
        read_conversation_jsonl(src)
    src.write_text('{"id": "a", "audio": null, "text": "hi"}\n')
    assert "audio" not in read_conversation_jsonl(src)[0]


def test_raw_audio_needs_extracted_audio_features(audio_ckpt: dict[str, Any], tmp_path: Path) -> None:
    # The same checkpoint, as if its audio features had come from elsewhere: no record, no manifest.
    folder = tmp_path / "ckpt"
    shutil.copytree(audio_ckpt["folder"], folder, ignore=shutil.ignore_patterns("last"))
    meta = json.loads((folder / "meta.json").read_text())
    del meta["feature_manifests"]
    (folder / "meta.json").write_text(json.dumps(meta))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["data"]["root"] = str(tmp_path / "gone")
    (folder / "config.json").write_text(json.dumps(cfg))
    p = Predictor.from_checkpoint(folder)
    assert p.audio_settings is None
    wav = write(tmp_path / "a.wav", tone(200, 0.3))
    with pytest.raises(PredictError, match=r"raw audio given .* not made by `iteacnet extract audio` \(its audio folder "
                                           r".*gone/features/audio-egemaps-88 has no manifest.json.*give features.audio"):
        p.predict_conversation([{"id": "a", "speaker": "F", "audio": str(wav)}])
    with pytest.raises(PredictError, match=r"no modality at all; give at least one of features.audio, "
                                           r"features.visual$"):  # no raw-audio hint here
        p.predict_conversation([{"id": "a", "speaker": "F"}])


def test_audio_extractor_check(tmp_path: Path) -> None:
    spec = ModelSpec(dims=(("audio", 88),), num_outputs=4)
    folder = tmp_path / "features" / "audio-egemaps-88"
    folder.mkdir(parents=True)
    cfg = ExperimentConfig(data=DataConfig(corpus="iemocap4", root=str(tmp_path), audio_feature="audio-egemaps-88"))
    settings, why = audio_extractor_check(cfg, {}, spec)
    assert settings is None and "has no manifest.json" in why
    fields = AudioSettings().manifest_fields()
    (folder / "manifest.json").write_text(json.dumps(fields))
    assert audio_extractor_check(cfg, {}, spec)[0] == AudioSettings(opensmile_version=fields["opensmile_version"])
    settings, why = audio_extractor_check(cfg, {}, ModelSpec(dims=(("audio", 6373),), num_outputs=4))
    assert settings is None and "88-d features, the model's audio is 6373-d" in why
    (folder / "manifest.json").write_text(json.dumps({**fields, "extractor": "text-minilm-384"}))
    assert "its extractor is 'text-minilm-384'" in audio_extractor_check(cfg, {}, spec)[1]
    # What the checkpoint recorded wins over the folder (which may be gone by then).
    recorded = {"feature_manifests": {"audio": {**fields, "sample_rate": 8000}}}
    assert audio_extractor_check(cfg, recorded, spec)[0] == AudioSettings("eGeMAPSv02", 8000, fields["opensmile_version"])
    assert audio_extractor_check(cfg, {}, ModelSpec(dims=(("text", 8),), num_outputs=4))[1] == "the model has no audio modality"


def test_version_mismatch_is_said(tmp_path: Path) -> None:
    wav = write(tmp_path / "a.wav", tone(200, 0.3))
    with pytest.warns(AudioConversionWarning, match="made with opensmile 0.0.1"):
        vecs = au.featurize_clips([wav], AudioSettings(opensmile_version="0.0.1"))
    np.testing.assert_array_equal(vecs[0], own(wav))


def test_cli_predict_notes_and_errors(audio_ckpt: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path / "a22k.wav", np.stack([tone(200, 0.4, sr=22050)] * 2, 1), sr=22050)
    write(tmp_path / "quiet.wav", np.zeros(SR // 2, dtype=np.float32))
    src = tmp_path / "c.jsonl"
    src.write_text('{"id": "a", "speaker": "F", "audio": "a22k.wav"}\n')
    assert main(["predict", "--checkpoint", str(audio_ckpt["folder"]), "--input", str(src)]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["predictions"][0]["modalities"] == ["audio"]
    assert "iteacnet predict: note: 1 clip(s) resampled to 16000 Hz" in cap.err and "downmixed to mono" in cap.err
    src.write_text('{"id": "a", "speaker": "F", "audio": "a22k.wav"}\n{"id": "b", "speaker": "M", "audio": "quiet.wav"}\n')
    assert main(["predict", "--checkpoint", str(audio_ckpt["folder"]), "--input", str(src)]) == 2  # a user error
    assert re.search(r"iteacnet predict: .*c\.jsonl:2 \(utterance 'b'\): .*quiet\.wav: silent", capsys.readouterr().err)


# --------------------------------------------------------------------------- scripts
ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_script_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("audio_extract.py")
    assert bench.main(["--clips", "3", "--seconds", "0.5", "--feature-sets", "eGeMAPSv02", "--workers", "1",
                       "--out", str(tmp_path / "b.json")]) == 0
    assert "clips/s" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert row["clips"] == 3 and row["clips_per_second"] > 0


def test_example_speech_corpus(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); the README example needs it")
    script = ROOT / "docs" / "examples" / "make_speech_corpus.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "c"), "--dialogues-per-session", "1",
                    "--turns", "2"], check=True, capture_output=True)
    assert len(list((tmp_path / "c" / "wav").glob("*.wav"))) == 10
    # The segments of session.wav are the turns' own files, sample for sample.
    turns = read_conversation_jsonl(tmp_path / "c" / "new" / "conversation.jsonl")
    clips = read_conversation_jsonl(tmp_path / "c" / "new" / "conversation-clips.jsonl")
    for seg, clip in zip(turns, clips):
        a = au.load_clip(seg["audio"], 22050).signal
        np.testing.assert_array_equal(a, au.load_clip(clip["audio"], 22050).signal)
