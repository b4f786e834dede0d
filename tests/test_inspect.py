"""`inspect_corpus` / `format_inspect` on synthetic, small GCNet-layout and real corpora."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcnet_layout import write_iemocap_like, write_mosi_like
from iteacnet.config import SyntheticConfig
from iteacnet.data.gcnet import load_gcnet_corpus
from iteacnet.data.inspect import format_inspect, inspect_corpus
from iteacnet.data.synthetic import make_synthetic_corpus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_synthetic_counts_add_up() -> None:
    c = make_synthetic_corpus(SyntheticConfig(num_dialogues=20))
    info = inspect_corpus(c, None)
    assert info["all"]["dialogues"] == 20 and info["all"]["utterances"] == c.num_utterances
    assert list(info["splits"]) == ["train", "valid", "test"]
    assert sum(p["dialogues"] for p in info["splits"].values()) == 20
    assert sum(p["utterances"] for p in info["splits"].values()) == c.num_utterances
    assert sum(info["all"]["labels"]["counts"].values()) == c.num_utterances
    assert info["dims"] == {"text": 32, "audio": 16, "visual": 24}
    assert info["all"]["missing"] == {"text": 0, "audio": 0, "visual": 0}


def test_explicit_splits_are_used() -> None:
    c = make_synthetic_corpus(SyntheticConfig(num_dialogues=10))
    info = inspect_corpus(c, {"fold0": [0, 1, 2], "rest": list(range(3, 8))})
    assert list(info["splits"]) == ["fold0", "rest"]
    assert info["splits"]["fold0"]["utterances"] == int(c.lengths()[:3].sum())
    assert info["unsplit_dialogues"] == 2
    assert "fold0" in format_inspect(info) and "2 dialogue(s) in no split" in format_inspect(info)


def test_out_of_range_split_index_is_an_error() -> None:
    c = make_synthetic_corpus(SyntheticConfig(num_dialogues=5))
    with pytest.raises(ValueError, match=r"split 'x' names dialogue indices outside"):
        inspect_corpus(c, {"x": [7]})


def test_classification_labels_per_class(tmp_path: Path) -> None:
    layout = write_iemocap_like(tmp_path)
    c = load_gcnet_corpus(layout.name, layout.root, layout.folders)
    info = inspect_corpus(c, None)
    counts = info["all"]["labels"]["counts"]
    assert list(counts) == list(c.class_names)
    assert sum(counts.values()) == c.num_utterances
    assert list(info["splits"]) == ["train", "test"]
    text = format_inspect(info)
    assert "happy+excited" in text and "'F', 'M'" in text


def test_regression_summary_and_missing_files(tmp_path: Path) -> None:
    layout = write_mosi_like(tmp_path)
    layout.file("audio", "vidA_4").unlink()
    c = load_gcnet_corpus(layout.name, layout.root, layout.folders, allow_missing_files=True)
    info = inspect_corpus(c, None)
    lab = info["all"]["labels"]
    assert lab["positive"] + lab["zero"] + lab["negative"] == c.num_utterances
    assert lab["zero"] >= 3  # each video starts with a 0.0 score
    assert -3 <= lab["min"] <= lab["mean"] <= lab["max"] <= 3
    assert info["all"]["missing"] == {"text": 0, "audio": 1, "visual": 0}
    assert info["splits"]["valid"]["missing"]["audio"] == 1  # vidA is the valid video
    text = format_inspect(info)
    assert "audio 1 of 21" in text and "no feature file" in text


def test_format_is_plain_text() -> None:
    text = format_inspect(inspect_corpus(make_synthetic_corpus(SyntheticConfig(num_dialogues=6))))
    assert text.endswith("\n") and text.isascii()
    assert "corpus      synthetic (classification)" in text


def test_format_shows_a_named_split_protocol() -> None:
    info = inspect_corpus(make_synthetic_corpus(SyntheticConfig(num_dialogues=6)))
    info["split"] = "loso fold 0"
    assert "split       loso fold 0" in format_inspect(info)


@pytest.mark.realdata
def test_real_mosi_standard_split() -> None:
    root = DATA / "CMUMOSI"
    folders = {"text": "text-cnn-100", "audio": "audio-opensmile-73", "visual": "video-3dcnn-100"}
    if not all((root / "features" / f).is_dir() for f in folders.values()):
        pytest.skip(f"real data absent: {root} (see shared/data/README.md)")
    info = inspect_corpus(load_gcnet_corpus("cmumosi", root, folders), None)
    assert info["all"]["dialogues"] == 93 and info["all"]["utterances"] == 2199
    assert info["dims"] == {"text": 100, "audio": 73, "visual": 100}
    assert {k: v["dialogues"] for k, v in info["splits"].items()} == {"train": 52, "valid": 10, "test": 31}
    assert {k: v["utterances"] for k, v in info["splits"].items()} == {"train": 1284, "valid": 229, "test": 686}
    assert info["all"]["labels"]["min"] >= -3 and info["all"]["labels"]["max"] <= 3
    text = format_inspect(info)
    assert "93 dialogues, 2,199 utterances" in text
    assert "text 100-d, audio 73-d, visual 100-d" in text
