"""Importers: each format written here as its reference code lays it out (good and bad), then
read back as a corpus folder; the IEMOCAP round trip on the real label files."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import require_shared_data
from gcnet_layout import IEMOCAP_FOLDERS, write_iemocap_like, write_label_file, write_mosi_like
from iteacnet.cli import main
from iteacnet.config import DataConfig
from iteacnet.data.corpus import Corpus, CorpusError
from iteacnet.data.gcnet import load_gcnet_corpus
from iteacnet.data.importers import ImportFormatError, import_dialoguernn, import_gcnet, import_mmsa
from iteacnet.data.loading import load_corpus
from iteacnet.data.table import load_table_corpus
from iteacnet.evaluation.splits import make_split


def same_corpus(a: Corpus, b: Corpus) -> None:
    for f in ("name", "task", "class_names", "dialogue_ids", "utterance_ids", "speaker_names", "transcripts",
              "file_split", "folds", "speaker_scheme", "modalities"):
        assert getattr(a, f) == getattr(b, f), f
    for f in ("offsets", "speakers", "labels"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert getattr(a, f).dtype == getattr(b, f).dtype, f
    for m in a.modalities:
        np.testing.assert_array_equal(a.features[m], b.features[m])
        np.testing.assert_array_equal(a.available[m], b.available[m])


# --------------------------------------------------------------------------- gcnet


def test_gcnet_round_trip_of_the_paper_corpora(tmp_path: Path) -> None:
    """GCNet layout -> corpus folder -> Corpus equals the GCNet-layout loader's Corpus."""
    iemo = write_iemocap_like(tmp_path / "IEMOCAP", name="iemocap6")
    ref = load_gcnet_corpus("iemocap6", iemo.root, iemo.folders)
    out = import_gcnet(iemo.label_file, tmp_path / "iemo", iemo.folders)
    same_corpus(ref, load_table_corpus(out))
    assert ref.folds == {d: d[4] for d in ref.dialogue_ids}
    mosi = write_mosi_like(tmp_path / "CMUMOSI")
    ref = load_gcnet_corpus("cmumosi", mosi.root, mosi.folders)
    out = import_gcnet(mosi.label_file, tmp_path / "mosi", mosi.folders)
    same_corpus(ref, load_table_corpus(out))


def test_gcnet_label_file_of_any_name_and_class_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dialogues = {f"conv{d}": [f"conv{d}_{t}" for t in range(2 + d)] for d in range(5)}
    ids = dict(dialogues)
    labels = {d: [int(rng.integers(0, 7)) for _ in u] for d, u in dialogues.items()}
    labels["conv0"][0] = 6  # seven classes
    speakers = {d: [f"{d}-{name}" for name in ("ann", "bo") * 4][: len(u)] for d, u in dialogues.items()}
    sentences = {d: [f"s {x}" for x in u] for d, u in dialogues.items()}
    path = tmp_path / "MyCorpus" / "my_labels.pkl"
    write_label_file(path, [ids, labels, speakers, sentences, ["conv0", "conv1", "conv2"], ["conv3"], ["conv4"]])
    folder = path.parent / "features" / "t"
    folder.mkdir(parents=True)
    for u in (x for us in dialogues.values() for x in us):
        np.save(folder / f"{u}.npy", rng.normal(size=3))
    out = import_gcnet(path, tmp_path / "out", {"text": "t"})
    c = load_table_corpus(out)
    assert c.name == "my_labels" and c.num_classes == 7 and c.class_names == tuple(str(i) for i in range(7))
    assert c.speaker_scheme == "roles" and c.speaker_names == ("role0", "role1")
    assert c.file_split == {"conv0": "train", "conv1": "train", "conv2": "train", "conv3": "valid", "conv4": "test"}
    named = import_gcnet(path, tmp_path / "named", {"text": "t"}, name="mine", classes=list("abcdefg"), overwrite=True)
    assert load_table_corpus(named).class_names == tuple("abcdefg")
    with pytest.raises(CorpusError, match=r"my_labels.pkl: label 6 of utterance 'conv0_0' is outside the 3 classes"):
        import_gcnet(path, tmp_path / "few", {"text": "t"}, classes=["a", "b", "c"])
    with pytest.raises(CorpusError, match=r"corpus.json exists"):
        import_gcnet(path, tmp_path / "out", {"text": "t"})


def test_gcnet_bad_inputs(tmp_path: Path) -> None:
    iemo = write_iemocap_like(tmp_path / "IEMOCAP")
    with pytest.raises(ImportFormatError, match=r"input file not found"):
        import_gcnet(tmp_path / "nope.pkl", tmp_path / "o", iemo.folders)
    with pytest.raises(ImportFormatError, match=r"text feature folder not found"):
        import_gcnet(iemo.label_file, tmp_path / "o", {"text": "missing"})
    with pytest.raises(ImportFormatError, match=r"no feature folder given"):
        import_gcnet(iemo.label_file, tmp_path / "o", {})
    iemo.items = iemo.items[:5]
    iemo.rewrite_labels()
    with pytest.raises(ImportFormatError, match=r"6 or 7 items, got a list of 5"):
        import_gcnet(iemo.label_file, tmp_path / "o", iemo.folders)
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(ImportFormatError, match=r"refused global"):
        import_gcnet(bad, tmp_path / "o", iemo.folders)


# --------------------------------------------------------------------------- dialoguernn


def dialoguernn_items(layout: str, seed: int = 0) -> list[Any]:
    """A DialogueRNN pickle's tuple (conv-emotion DialogueRNN/dataloader.py, IEMOCAPDataset
    and MELDDataset), with per-dialogue (T, d) feature arrays or lists of vectors."""
    rng = np.random.default_rng(seed)
    dids = ["Ses01F_impro01", "Ses02M_script01_1", "Ses03F_impro02", "Ses05M_impro03"] if layout == "iemocap" else ["0", "1", "2", "3"]
    ids, spk, lab, text, audio, visual, sent = {}, {}, {}, {}, {}, {}, {}
    for k, d in enumerate(dids):
        n = 2 + k
        ids[d] = [f"{d}_{'FM'[t % 2]}{t:03d}" for t in range(n)]
        if layout == "iemocap":
            spk[d] = ["FM"[t % 2] for t in range(n)]
        else:
            spk[d] = [list(np.eye(9)[t % 3]) for t in range(n)]  # MELD: one-hot rows
        lab[d] = [int(rng.integers(0, 6)) for _ in range(n)]
        text[d] = rng.normal(size=(n, 5)).astype(np.float32)
        audio[d] = [rng.normal(size=3) for _ in range(n)]
        visual[d] = rng.normal(size=(n, 4))
        sent[d] = [f"sentence {t}" for t in range(n)]
    train, test = dids[:3], dids[3:]
    if layout == "iemocap":
        return [ids, spk, lab, text, audio, visual, sent, train, test]
    sentiment = {d: [y % 3 for y in v] for d, v in lab.items()}
    return [ids, spk, lab, text, audio, sent, train, test, sentiment]


@pytest.mark.parametrize("layout", ["iemocap", "meld"])
def test_dialoguernn_pickle(tmp_path: Path, layout: str) -> None:
    items = dialoguernn_items(layout)
    path = tmp_path / f"{layout}.pkl"
    path.write_bytes(pickle.dumps(tuple(items), protocol=2))
    c = load_table_corpus(import_dialoguernn(path, tmp_path / "out", layout=layout))
    ids = items[0]
    assert c.dialogue_ids == sorted(ids) and c.utterance_ids == [u for d in sorted(ids) for u in ids[d]]
    assert c.labels.tolist() == [y for d in sorted(ids) for y in items[2][d]]
    d0 = sorted(ids)[1]
    r = c.rows(1)
    np.testing.assert_allclose(c.features["text"][r], np.asarray(items[3][d0]), rtol=1e-6)
    np.testing.assert_allclose(c.features["audio"][r], np.asarray(items[4][d0]), rtol=1e-6)
    assert c.file_split[sorted(ids)[3]] == "test"
    if layout == "iemocap":
        assert c.modalities == ("text", "audio", "visual") and c.speaker_names == ("F", "M")
        assert c.class_names[0] == "happy" and set(c.folds.values()) == {"1", "2", "3", "5"}
    else:
        assert c.modalities == ("text", "audio") and c.speaker_scheme == "roles"
        assert c.speakers[c.rows(2)].tolist() == [0, 1, 2, 0]
        senti = load_table_corpus(import_dialoguernn(path, tmp_path / "senti", layout="meld", meld_labels="sentiment"))
        assert senti.labels.tolist() == [y for d in sorted(ids) for y in items[8][d]]


DIALOGUERNN_BAD = {
    "eight items": (lambda it: it.pop(), r"expected DialogueRNN's tuple of 9 items \(iemocap layout\), got 8 items"),
    "length mismatch": (lambda it: it[2]["Ses01F_impro01"].pop(), r"dialogue 'Ses01F_impro01' has 2 utterance ids but 1 labels"),
    "feature shape": (lambda it: it.__setitem__(3, {**it[3], "Ses01F_impro01": np.zeros((3, 5))}), r"videoText\['Ses01F_impro01'\] has shape \(3, 5\), expected \(2, d\)"),
    "feature NaN": (lambda it: it[5]["Ses01F_impro01"].__setitem__((0, 0), np.nan), r"videoVisual\['Ses01F_impro01'\] contains NaN"),
    "unknown split member": (lambda it: it[8].append("nope"), r"dialogue 'nope' of testVid is not in videoIDs"),
    "negative label": (lambda it: it[2]["Ses01F_impro01"].__setitem__(0, -1), r"label of utterance 'Ses01F_impro01_F000' is -1"),
    "missing dialogue": (lambda it: it[6].pop("Ses01F_impro01"), r"dialogue 'Ses01F_impro01' is in videoIDs but not in videoSentence"),
}


@pytest.mark.parametrize("case", sorted(DIALOGUERNN_BAD))
def test_dialoguernn_bad_inputs(tmp_path: Path, case: str) -> None:
    items = dialoguernn_items("iemocap")
    edit, match = DIALOGUERNN_BAD[case]
    edit(items)
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(tuple(items)))
    with pytest.raises(ImportFormatError, match=rf"bad.pkl: {match}"):
        import_dialoguernn(path, tmp_path / "out")


# --------------------------------------------------------------------------- mmsa


def mmsa_dict(aligned: bool, seed: int = 0) -> dict[str, Any]:
    """An MMSA pickle (thuiar/MMSA src/MMSA/data_loader.py): per split, id / raw_text / text /
    audio / vision / regression_labels, plus audio_lengths / vision_lengths when unaligned."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    videos = {"train": ["vA", "vB"], "valid": ["vC"], "test": ["vD"]}
    for split, vids in videos.items():
        ids = [f"{v}$_${c}" for v in vids for c in (2, 10, 1)]  # clip ids out of order on purpose
        n, L = len(ids), 4
        text = np.zeros((n, L, 5), dtype=np.float32)
        tl = rng.integers(1, L + 1, n)
        for i in range(n):
            text[i, : tl[i]] = rng.normal(size=(tl[i], 5))
        part = {
            "id": np.asarray(ids, dtype=object), "raw_text": np.asarray([f"text of {u}" for u in ids], dtype=object),
            "text": text, "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "classification_labels": np.zeros(n, dtype=np.float32),
            "text_bert": np.stack([np.zeros((n, L)), (np.arange(L)[None] < tl[:, None]).astype(float), np.zeros((n, L))], axis=1),
        }
        if aligned:
            part["audio"] = rng.normal(size=(n, L, 3)).astype(np.float32)
            part["vision"] = rng.normal(size=(n, L, 2)).astype(np.float32)
        else:
            part["audio"] = rng.normal(size=(n, 6, 3)).astype(np.float32)
            part["vision"] = rng.normal(size=(n, 7, 2)).astype(np.float32)
            part["audio_lengths"] = list(rng.integers(1, 7, n))
            part["vision_lengths"] = list(rng.integers(1, 8, n))
        part["audio"][0, 0, 0] = -np.inf  # MMSA's loader zeroes -inf audio
        out[split] = part
    return out


@pytest.mark.parametrize("aligned", [True, False])
def test_mmsa_pickle(tmp_path: Path, aligned: bool) -> None:
    data = mmsa_dict(aligned)
    path = tmp_path / "MOSI" / ("aligned_50.pkl" if aligned else "unaligned_50.pkl")
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(data, protocol=4))
    out, notes = import_mmsa(path, tmp_path / "out")
    c = load_table_corpus(out)
    assert c.name == "MOSI" and c.task == "regression" and c.dialogue_ids == ["vA", "vB", "vC", "vD"]
    assert c.utterance_ids[:3] == ["vA$_$1", "vA$_$2", "vA$_$10"]  # clips in clip order
    assert c.file_split == {"vA": "train", "vB": "train", "vC": "valid", "vD": "test"}
    assert notes and "NaN/Inf" in notes[0]
    tr = data["train"]
    i = list(tr["id"]).index("vA$_$10")
    row = c.utterance_ids.index("vA$_$10")
    tl = int(tr["text_bert"][i, 1].sum())
    np.testing.assert_allclose(c.features["text"][row], tr["text"][i, :tl].mean(0), rtol=1e-5)
    al = tl if aligned else int(tr["audio_lengths"][i])
    np.testing.assert_allclose(c.features["audio"][row], tr["audio"][i, :al].mean(0), rtol=1e-5)
    assert c.labels[row] == pytest.approx(float(tr["regression_labels"][i]))
    assert c.transcripts[row] == "text of vA$_$10"
    assert c.speakers.max() == 0  # one speaker per video


def test_mmsa_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "m.pkl"
    data = mmsa_dict(True)
    del data["valid"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ImportFormatError, match=r"m.pkl: expected a dict with 'train', 'valid' and 'test'"):
        import_mmsa(path, tmp_path / "o")
    data = mmsa_dict(True)
    del data["test"]["text"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ImportFormatError, match=r"\['test'\]: missing key 'text' .*text_bert holds BERT token ids"):
        import_mmsa(path, tmp_path / "o")
    data = mmsa_dict(True)
    data["train"]["vision"] = data["train"]["vision"][:, :, 0]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ImportFormatError, match=r"\['train'\]: vision has shape \(6, 4\), expected \(6, length, d\)"):
        import_mmsa(path, tmp_path / "o")
    data = mmsa_dict(True)
    data["test"]["id"][0] = "vA$_$2"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ImportFormatError, match=r"duplicate id 'vA\$_\$2'"):
        import_mmsa(path, tmp_path / "o")
    data = mmsa_dict(True)
    data["test"]["id"] = np.asarray([Path("x")] * 3, dtype=object)
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ImportFormatError, match=r"refused global"):
        import_mmsa(path, tmp_path / "o")


def test_cli_import_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = dialoguernn_items("iemocap")
    path = tmp_path / "iemocap.pkl"
    path.write_bytes(pickle.dumps(tuple(items)))
    out = tmp_path / "folder"
    assert main(["data", "import", "--from", "dialoguernn", "--input", str(path), "--out", str(out)]) == 0
    assert "corpus folder written" in capsys.readouterr().out
    assert main(["data", "inspect", "--corpus-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "iemocap (classification)" in text and "14 utterances" in text and "leave-one-fold-out" in text
    capsys.readouterr()
    assert main(["data", "import", "--from", "mmsa"]) == 2
    assert "give --from FORMAT, --input FILE and --out DIR" in capsys.readouterr().err
    assert main(["data", "import", "--from", "dialoguernn", "--input", str(path), "--out", str(tmp_path / "x"),
                 "--set", "train.epochs=3"]) == 2
    assert "--set would be ignored" in capsys.readouterr().err


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.parametrize("way", ["4way", "6way"])
def test_real_iemocap_round_trip(tmp_path: Path, way: str) -> None:
    """GCNet layout -> corpus folder -> Corpus on the real IEMOCAP label files and text features."""
    root = require_shared_data("IEMOCAP", f"IEMOCAP_features_raw_{way}.pkl").parent
    name = "iemocap4" if way == "4way" else "iemocap6"
    folders = {"text": "text-minilm-384"}
    ref = load_gcnet_corpus(name, root, folders)
    out = import_gcnet(root / f"IEMOCAP_features_raw_{way}.pkl", tmp_path / name, folders)
    got = load_corpus(DataConfig(corpus_dir=str(out)))
    same_corpus(ref, got)
    split_ref = make_split(ref, DataConfig(corpus=name, split="loso", fold=2))
    split_got = make_split(got, DataConfig(corpus_dir=str(out), split="loso", fold=2))
    assert split_ref == split_got


def test_iemocap_like_folders_import(tmp_path: Path) -> None:
    """IEMOCAP's per-speaker visual directories are resolved by the importer too."""
    iemo = write_iemocap_like(tmp_path / "IEMOCAP")
    out = import_gcnet(iemo.label_file, tmp_path / "o", {"visual": IEMOCAP_FOLDERS["visual"]})
    np.testing.assert_array_equal(load_table_corpus(out).features["visual"],
                                  load_gcnet_corpus("iemocap4", iemo.root, {"visual": IEMOCAP_FOLDERS["visual"]}).features["visual"])


def test_a_train_test_split_carves_validation_out_of_train(tmp_path: Path) -> None:
    items = dialoguernn_items("meld")
    path = tmp_path / "meld.pkl"
    path.write_bytes(pickle.dumps(tuple(items)))
    c = load_table_corpus(import_dialoguernn(path, tmp_path / "out", layout="meld"))
    assert set(c.file_split.values()) == {"train", "test"}
    split = make_split(c, DataConfig(corpus_dir=str(tmp_path / "out")))
    assert len(split.valid) == 1 and len(split.train) == 2 and "no validation dialogues" in split.note
    assert set(split.train + split.valid) == {c.dialogue_index()[d] for d, s in c.file_split.items() if s == "train"}
