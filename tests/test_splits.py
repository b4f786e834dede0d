"""Protocol splits on hand-built corpora and on the real GCNet label files."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from iteacnet.config import DataConfig, SyntheticConfig
from iteacnet.data.corpus import Corpus
from iteacnet.data.splits import GCNET_NOTE, Split, iemocap_folds, iemocap_session, make_split
from iteacnet.data.synthetic import make_synthetic_corpus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_corpus(name: str, dialogue_ids: list[str], file_split: dict[str, str] | None = None, length: int = 3) -> Corpus:
    """A label-only corpus: `length` utterances per dialogue, no features."""
    n = len(dialogue_ids)
    return Corpus(
        name=name, task="classification", class_names=("a", "b"), dialogue_ids=list(dialogue_ids),
        offsets=np.arange(n + 1, dtype=np.int64) * length,
        utterance_ids=[f"{d}_{t}" for d in dialogue_ids for t in range(length)],
        speakers=np.zeros(n * length, dtype=np.int64), speaker_names=("A",),
        labels=np.zeros(n * length, dtype=np.int64), features={}, file_split=file_split or {},
    )


def iemocap_ids(per_session: int = 10) -> list[str]:
    # Shuffled so the corpus order differs from sorted order.
    ids = [f"Ses0{s}{g}_impro{k:02d}" for s in range(1, 6) for g in "FM" for k in range(per_session // 2)]
    return [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]


def parts(split: Split) -> list[set[int]]:
    return [set(split.train), set(split.valid), set(split.test)]


# ---------------------------------------------------------------------------- Split itself
def test_split_rejects_overlap_and_empty() -> None:
    with pytest.raises(ValueError, match="both train and test"):
        Split((0, 1), (2,), (1,), "x")
    with pytest.raises(ValueError, match="both valid and test"):
        Split((0,), (2,), (2,), "x")
    with pytest.raises(ValueError, match="empty"):
        Split((0,), (), (2,), "x")
    with pytest.raises(ValueError, match="twice"):
        Split((0, 0), (1,), (2,), "x")
    with pytest.raises(ValueError, match="selection"):
        Split((0,), (1,), (2,), "x", selection="test")
    with pytest.raises(ValueError, match="valid == test"):
        Split((0,), (1,), (2,), "x", selection="gcnet-compatible")


def test_split_flag() -> None:
    assert not Split((0,), (1,), (2,), "x").flagged
    assert Split((0,), (2,), (2,), "x", selection="gcnet-compatible").flagged


# ---------------------------------------------------------------------------- IEMOCAP
def test_iemocap_session() -> None:
    assert iemocap_session("Ses01F_impro01") == 1
    assert iemocap_session("Ses05M_script02_2") == 5
    for bad in ("Ses06F_impro01", "abc", "Ses0xF_impro01", "Dlg01F"):
        with pytest.raises(ValueError):
            iemocap_session(bad)


def test_iemocap_folds_on_hand_built_corpus() -> None:
    corpus = tiny_corpus("iemocap4", iemocap_ids())
    tests = []
    for fold in iemocap_folds():
        s = make_split(corpus, DataConfig(corpus="iemocap4", split="loso", fold=fold))
        tr, va, te = parts(s)
        assert not (tr & va or tr & te or va & te)
        assert tr | va | te == set(range(50))
        assert {corpus.dialogue_ids[i][4] for i in te} == {str(fold + 1)}
        assert str(fold + 1) not in {corpus.dialogue_ids[i][4] for i in tr | va}
        assert len(va) == 4  # round(0.1 · 40)
        assert s.name == f"loso-fold{fold}" and not s.flagged
        ids = [corpus.dialogue_ids[i] for i in s.train]
        assert ids == sorted(ids), "parts are ordered by dialogue id"
        tests.append(te)
    assert set().union(*tests) == set(range(50))
    assert list(iemocap_folds()) == [0, 1, 2, 3, 4]


def test_iemocap_validation_is_seeded() -> None:
    corpus = tiny_corpus("iemocap6", iemocap_ids(20))
    cfg = DataConfig(corpus="iemocap6", split="loso", fold=2)
    a, b = make_split(corpus, cfg), make_split(corpus, cfg)
    assert a == b
    c = make_split(corpus, replace(cfg, split_seed=1))
    assert set(c.valid) != set(a.valid) and set(c.test) == set(a.test)
    # The draw depends on the ids, not on the corpus order.
    rev = tiny_corpus("iemocap6", corpus.dialogue_ids[::-1])
    d = make_split(rev, cfg)
    assert [rev.dialogue_ids[i] for i in d.valid] == [corpus.dialogue_ids[i] for i in a.valid]
    assert len(make_split(corpus, replace(cfg, val_fraction=0.25)).valid) == 20  # 0.25 · 80


def test_iemocap_errors() -> None:
    corpus = tiny_corpus("iemocap4", iemocap_ids())
    for fold in (-1, 5):
        with pytest.raises(ValueError, match="fold"):
            make_split(corpus, DataConfig(corpus="iemocap4", split="loso", fold=fold))
    with pytest.raises(ValueError, match="unknown split"):
        make_split(corpus, DataConfig(corpus="iemocap4", split="poria"))
    with pytest.raises(ValueError, match="val_fraction"):
        make_split(corpus, DataConfig(corpus="iemocap4", split="loso", val_fraction=0.0))
    only4 = tiny_corpus("iemocap4", [d for d in iemocap_ids() if d[4] != "1"])
    with pytest.raises(ValueError, match="session 1"):
        make_split(only4, DataConfig(corpus="iemocap4", split="loso", fold=0))


def test_iemocap_standard_is_loso() -> None:
    corpus = tiny_corpus("iemocap4", iemocap_ids())
    cfg = DataConfig(corpus="iemocap4", fold=1)
    assert make_split(corpus, cfg) == make_split(corpus, replace(cfg, split="loso"))


def test_iemocap_gcnet_compatible() -> None:
    corpus = tiny_corpus("iemocap4", iemocap_ids())
    s = make_split(corpus, DataConfig(corpus="iemocap4", split="loso", fold=0, selection="gcnet-compatible"))
    assert s.flagged and s.valid == s.test and GCNET_NOTE in s.note
    assert len(s.train) == 40, "GCNet trains on every training-session dialogue"


# ---------------------------------------------------------------------------- file / poria splits
def test_file_split_synthetic() -> None:
    corpus = make_synthetic_corpus(SyntheticConfig(num_dialogues=30))
    s = make_split(corpus, DataConfig())
    for part, ids in (("train", s.train), ("valid", s.valid), ("test", s.test)):
        assert {corpus.file_split[corpus.dialogue_ids[i]] for i in ids} == {part}
    assert (len(s.train), len(s.valid), len(s.test)) == (21, 3, 6)
    g = make_split(corpus, DataConfig(selection="gcnet-compatible"))
    assert g.flagged and g.valid == g.test == s.test and g.train == s.train
    assert "not used" in g.note


def test_file_split_errors() -> None:
    ids = ["v0", "v1", "v2"]
    with pytest.raises(ValueError, match="no file split"):
        make_split(tiny_corpus("cmumosi", ids), DataConfig(corpus="cmumosi"))
    with pytest.raises(ValueError, match="unknown split part"):
        make_split(tiny_corpus("cmumosi", ids, {"v0": "train", "v1": "dev", "v2": "test"}), DataConfig(corpus="cmumosi"))
    with pytest.raises(ValueError, match="the test part is empty"):
        make_split(tiny_corpus("cmumosi", ids, {"v0": "train", "v1": "train", "v2": "valid"}), DataConfig(corpus="cmumosi"))
    # No validation dialogues: validation is carved out of train (a train/test file split).
    s = make_split(tiny_corpus("cmumosi", ids, {"v0": "train", "v1": "train", "v2": "test"}), DataConfig(corpus="cmumosi"))
    assert (len(s.train), len(s.valid), len(s.test)) == (1, 1, 1) and "no validation dialogues" in s.note
    with pytest.raises(ValueError, match="unknown split"):
        make_split(tiny_corpus("cmumosi", ids, {"v0": "train"}), DataConfig(corpus="cmumosi", split="loso"))


def test_file_split_leaves_out_unassigned() -> None:
    corpus = tiny_corpus("cmumosi", ["v0", "v1", "v2", "v3"], {"v0": "train", "v1": "valid", "v2": "test"})
    s = make_split(corpus, DataConfig(corpus="cmumosi"))
    assert (s.train, s.valid, s.test) == ((0,), (1,), (2,)) and "1 dialogue(s)" in s.note


def test_poria_split_hand_built(tmp_path: Path) -> None:
    ids = [f"vid{i:02d}" for i in range(20)]
    (tmp_path / "poria_split.json").write_text(json.dumps({"train": ids[:15], "test": ids[15:] + ["extra"]}))
    corpus = tiny_corpus("cmumosi", ids, {d: "train" for d in ids})
    s = make_split(corpus, DataConfig(corpus="cmumosi", split="poria", root=str(tmp_path)))
    assert set(s.test) == set(range(15, 20))
    assert set(s.train) | set(s.valid) == set(range(15)) and len(s.valid) == 2  # round(1.5) = 2
    assert "not in the corpus" in s.note
    (tmp_path / "bad.json").write_text(json.dumps({"train": ids[:10], "test": ids[9:]}))
    with pytest.raises(ValueError, match="both train and test"):
        make_split(corpus, DataConfig(corpus="cmumosi", split="poria"), tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no Poria split file"):
        make_split(corpus, DataConfig(corpus="cmumosi", split="poria", root=str(tmp_path / "nowhere")))


# ---------------------------------------------------------------------------- real label files
def label_corpus(path: Path, name: str) -> Corpus:
    """A feature-less Corpus straight from a GCNet label pickle (independent of the loader)."""
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (expected ../shared/data next to the repo)")
    with path.open("rb") as f:
        obj = pickle.load(f, encoding="latin1")
    ids_by_dialogue, labels = obj[0], obj[1]
    dialogues = list(ids_by_dialogue)
    lengths = [len(labels[d]) for d in dialogues]
    split_sets = obj[4:]
    names = ("train", "test") if len(split_sets) == 2 else ("train", "valid", "test")
    file_split = {d: part for part, vids in zip(names, split_sets) for d in vids}
    return Corpus(
        name=name, task="classification", class_names=(), dialogue_ids=dialogues,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        utterance_ids=[u for d in dialogues for u in ids_by_dialogue[d]],
        speakers=np.zeros(sum(lengths), dtype=np.int64), speaker_names=("?",),
        labels=np.concatenate([np.asarray(labels[d]) for d in dialogues]), features={},
        file_split=file_split,
    )


def utterances(corpus: Corpus, dialogues: tuple[int, ...]) -> int:
    return int(corpus.lengths()[list(dialogues)].sum())


@pytest.mark.realdata
def test_real_iemocap4_loso() -> None:
    corpus = label_corpus(DATA / "IEMOCAP" / "IEMOCAP_features_raw_4way.pkl", "iemocap4")
    assert corpus.num_dialogues == 151 and corpus.num_utterances == 5531
    seen_test: set[int] = set()
    for fold in iemocap_folds():
        cfg = DataConfig(corpus="iemocap4", split="loso", fold=fold, root=str(DATA / "IEMOCAP"))
        s = make_split(corpus, cfg)
        tr, va, te = parts(s)
        assert not (tr & va or tr & te or va & te) and tr | va | te == set(range(151))
        assert {corpus.dialogue_ids[i][4] for i in te} == {str(fold + 1)}
        assert len(va) == round(0.1 * (151 - len(te)))
        assert s == make_split(corpus, cfg)
        assert not (te & seen_test)
        seen_test |= te
    assert seen_test == set(range(151))
    # Fold 4 tests session 5: exactly the label file's own test dialogues.
    s4 = make_split(corpus, DataConfig(corpus="iemocap4", split="loso", fold=4))
    assert {corpus.dialogue_ids[i] for i in s4.test} == {d for d, p in corpus.file_split.items() if p == "test"}


@pytest.mark.realdata
def test_real_mosi_standard() -> None:
    corpus = label_corpus(DATA / "CMUMOSI" / "CMUMOSI_features_raw_2way.pkl", "cmumosi")
    s = make_split(corpus, DataConfig(corpus="cmumosi", split="standard"))
    assert (len(s.train), len(s.valid), len(s.test)) == (52, 10, 31)
    assert (utterances(corpus, s.train), utterances(corpus, s.valid), utterances(corpus, s.test)) == (1284, 229, 686)
    g = make_split(corpus, DataConfig(corpus="cmumosi", selection="gcnet-compatible"))
    assert g.flagged and g.valid == g.test == s.test and "test fold" in g.note


@pytest.mark.realdata
def test_real_mosi_poria() -> None:
    corpus = label_corpus(DATA / "CMUMOSI" / "CMUMOSI_features_raw_2way.pkl", "cmumosi")
    cfg = DataConfig(corpus="cmumosi", split="poria", root=str(DATA / "CMUMOSI"))
    s = make_split(corpus, cfg)
    poria = json.loads((DATA / "CMUMOSI" / "poria_split.json").read_text())
    assert len(s.train) + len(s.valid) == 62 and len(s.test) == 31 and len(s.valid) == 6
    assert {corpus.dialogue_ids[i] for i in s.train + s.valid} == set(poria["train"])
    assert {corpus.dialogue_ids[i] for i in s.test} == set(poria["test"])
    assert s == make_split(corpus, cfg)
    g = make_split(corpus, replace(cfg, selection="gcnet-compatible"))
    assert g.flagged and len(g.train) == 62 and g.valid == g.test
