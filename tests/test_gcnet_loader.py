"""The GCNet-layout loader: good corpora load exactly; every defect is a named CorpusError."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from gcnet_layout import IEMOCAP_DIMS, MOSI_DIMS, Layout, write_iemocap_like, write_mosi_like
from iteacnet.data.gcnet import CorpusError, load_gcnet_corpus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def iemo(tmp_path: Path) -> Layout:
    return write_iemocap_like(tmp_path / "IEMOCAP")


@pytest.fixture
def mosi(tmp_path: Path) -> Layout:
    return write_mosi_like(tmp_path / "CMUMOSI")


def load(layout: Layout, **kw):
    return load_gcnet_corpus(layout.name, layout.root, layout.folders, **kw)


# --------------------------------------------------------------------------- good corpora


def test_iemocap_like_loads_every_field(iemo: Layout) -> None:
    c = load(iemo)
    assert c.name == "iemocap4" and c.task == "classification" and c.num_classes == 4
    assert c.dialogue_ids == sorted(iemo.items[0])
    assert c.utterance_ids == iemo.utterances
    assert c.num_utterances == 3 + 4 + 5 + 6
    assert c.lengths().tolist() == [len(iemo.items[0][d]) for d in c.dialogue_ids]
    assert c.dims == IEMOCAP_DIMS
    assert c.speaker_names == ("F", "M")
    assert c.labels.dtype == np.int64 and c.speakers.dtype == np.int64
    flat_labels = [y for d in c.dialogue_ids for y in iemo.items[1][d]]
    assert c.labels.tolist() == flat_labels
    assert c.transcripts == [f"sentence {u}" for u in iemo.utterances]
    assert set(c.file_split.values()) == {"train", "test"}
    assert all(a.all() for a in c.available.values())
    assert all(x.dtype == np.float32 for x in c.features.values())


def test_iemocap_rows_match_files(iemo: Layout) -> None:
    c = load(iemo)
    for row, utt in enumerate(c.utterance_ids):
        np.testing.assert_allclose(c.features["text"][row], np.load(iemo.file("text", utt)), rtol=1e-6)
        # 2-D (time, d) audio is averaged over time
        np.testing.assert_allclose(c.features["audio"][row], np.load(iemo.file("audio", utt)).mean(0), rtol=1e-5)
        # visual: the file of the utterance's own speaker, averaged over faces
        spk = c.speaker_names[c.speakers[row]]
        own = np.load(iemo.folder("visual") / utt / f"compress_{spk}.npy").mean(0)
        np.testing.assert_allclose(c.features["visual"][row], own, rtol=1e-5)


def test_iemocap6_uses_six_classes(tmp_path: Path) -> None:
    layout = write_iemocap_like(tmp_path, name="iemocap6")
    c = load(layout)
    assert c.num_classes == 6 and c.class_names[4] == "excited"


def test_mosi_like_loads_regression_corpus(mosi: Layout) -> None:
    c = load(mosi)
    assert c.task == "regression" and c.num_classes == 1
    assert c.labels.dtype == np.float32
    assert float(np.abs(c.labels).max()) <= 3.0 and (c.labels == 0).any()
    assert c.speaker_names == ("",) and (c.speakers == 0).all()
    assert isinstance(c.transcripts, list) and all(type(t) is str for t in c.transcripts)
    assert c.file_split == {"c3": "train", "vidA": "valid", "vid_B": "test"}
    assert c.dims == MOSI_DIMS


def test_mosi_prefix_neighbours_are_not_confused(mosi: Layout) -> None:
    # vidA_1 must read vidA_1.npy, never vidA_10.npy / vidA_11.npy
    c = load(mosi)
    row = c.utterance_ids.index("vidA_1")
    np.testing.assert_array_equal(c.features["text"][row], np.load(mosi.file("text", "vidA_1")))


def test_suffixed_file_name_matches_by_prefix(mosi: Layout) -> None:
    src = mosi.file("text", "vidA_1")
    src.rename(mosi.folder("text") / "vidA_1_text.npy")
    c = load(mosi)
    row = c.utterance_ids.index("vidA_1")
    np.testing.assert_array_equal(c.features["text"][row], np.load(mosi.folder("text") / "vidA_1_text.npy"))


def test_ambiguous_prefix_is_an_error(mosi: Layout) -> None:
    x = np.load(mosi.file("text", "vidA_1"))
    mosi.file("text", "vidA_1").unlink()
    np.save(mosi.folder("text") / "vidA_1_a.npy", x)
    np.save(mosi.folder("text") / "vidA_1_b.npy", x)
    with pytest.raises(CorpusError, match=r"'vidA_1' matches several.*vidA_1_a\.npy"):
        load(mosi)


def test_prefix_file_of_a_longer_utterance_id_is_not_claimed(tmp_path: Path) -> None:
    layout = write_mosi_like(tmp_path, dialogues={"v": ["v_1", "v_1_2"], "w": ["w_1"], "z": ["z_1"]})
    layout.file("text", "v_1").unlink()  # v_1_2.npy belongs to v_1_2, not to v_1
    with pytest.raises(CorpusError, match=r"'v_1'"):
        load(layout)


def test_mosi_directory_of_files_is_averaged(mosi: Layout) -> None:
    utt = "vid_B_2"
    mosi.file("visual", utt).unlink()
    d = mosi.folder("visual") / utt
    d.mkdir()
    np.save(d / "face0.npy", np.ones((2, 3), np.float32))
    np.save(d / "face1.npy", np.full(3, 4.0, np.float32))
    c = load(mosi)
    np.testing.assert_allclose(c.features["visual"][c.utterance_ids.index(utt)], [2.0, 2.0, 2.0])


def test_leading_singleton_axes_are_squeezed(mosi: Layout) -> None:
    x = np.arange(7, dtype=np.float32)
    np.save(mosi.file("text", "c3_1"), x.reshape(1, 1, 7))
    c = load(mosi)
    np.testing.assert_array_equal(c.features["text"][c.utterance_ids.index("c3_1")], x)


def test_empty_folder_name_drops_the_modality(iemo: Layout) -> None:
    c = load_gcnet_corpus("iemocap4", iemo.root, {"text": iemo.folders["text"], "audio": "", "visual": ""})
    assert c.modalities == ("text",)


def test_progress_bar_does_not_change_the_result(mosi: Layout) -> None:
    a, b = load(mosi), load(mosi, progress=True)
    for m in a.modalities:
        np.testing.assert_array_equal(a.features[m], b.features[m])


# --------------------------------------------------------------------------- missing files


def test_missing_feature_file_is_named(iemo: Layout) -> None:
    utt = iemo.utterances[4]
    iemo.file("text", utt).unlink()
    with pytest.raises(CorpusError, match=rf"1 of 18 utterances.*text.*'{utt}'.*allow_missing_files"):
        load(iemo)


def test_label_ids_without_features_are_all_listed(mosi: Layout) -> None:
    ids = mosi.items[0]
    for extra in ("vidA_13", "vidA_14"):
        ids["vidA"].append(extra)
        mosi.items[1]["vidA"].append(np.float64(0.5))
        mosi.items[2]["vidA"].append("")
        mosi.items[3]["vidA"] = np.append(mosi.items[3]["vidA"], "EXTRA")
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"2 of 23 utterances.*'vidA_13', 'vidA_14'"):
        load(mosi)


def test_allow_missing_files_marks_unavailable(iemo: Layout) -> None:
    gone = iemo.utterances[2]
    iemo.file("audio", gone).unlink()
    c = load(iemo, allow_missing_files=True)
    row = c.utterance_ids.index(gone)
    assert not c.available["audio"][row]
    assert c.available["audio"].sum() == c.num_utterances - 1
    assert (c.features["audio"][row] == 0).all()
    assert c.available["text"].all() and c.available["visual"].all()
    assert any("audio: 1 of 18" in n and gone in n for n in c.notes)


def test_visual_directory_without_speaker_file(iemo: Layout) -> None:
    utt = iemo.utterances[0]  # speaker F
    (iemo.folder("visual") / utt / "compress_F.npy").unlink()
    with pytest.raises(CorpusError, match=rf"visual.*'{utt}'"):
        load(iemo)
    c = load(iemo, allow_missing_files=True)
    assert not c.available["visual"][0] and c.available["visual"][1:].all()


def test_all_files_missing_is_an_error_even_when_allowed(mosi: Layout) -> None:
    for f in mosi.folder("audio").iterdir():
        f.unlink()
    with pytest.raises(CorpusError, match=r"no utterance.*audio"):
        load(mosi, allow_missing_files=True)


# --------------------------------------------------------------------------- bad feature files


def test_corrupt_npy_is_named(mosi: Layout) -> None:
    bad = mosi.file("audio", "vidA_3")
    bad.write_bytes(b"this is not numpy")
    with pytest.raises(CorpusError, match=r"corrupt feature file .*vidA_3\.npy"):
        load(mosi)


def test_truncated_npy_is_named(mosi: Layout) -> None:
    bad = mosi.file("audio", "vidA_3")
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(CorpusError, match=r"vidA_3\.npy"):
        load(mosi)


def test_npz_archive_is_named(mosi: Layout) -> None:
    with mosi.file("audio", "vidA_3").open("wb") as f:
        np.savez(f, a=np.zeros(4))
    with pytest.raises(CorpusError, match=r"vidA_3\.npy: not a single \.npy array"):
        load(mosi)


def test_empty_npy_is_named(mosi: Layout) -> None:
    np.save(mosi.file("visual", "c3_2"), np.zeros((0, 3), np.float32))
    with pytest.raises(CorpusError, match=r"c3_2\.npy is empty"):
        load(mosi, allow_missing_files=True)  # an empty file is not a missing file


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_feature_is_named(mosi: Layout, value: float) -> None:
    x = np.zeros(7, np.float32)
    x[3] = value
    np.save(mosi.file("text", "vid_B_4"), x)
    with pytest.raises(CorpusError, match=r"vid_B_4\.npy contains NaN or Inf"):
        load(mosi)


def test_dimension_mismatch_is_named(iemo: Layout) -> None:
    utt = iemo.utterances[7]
    np.save(iemo.file("text", utt), np.zeros(9, np.float32))
    with pytest.raises(CorpusError, match=rf"dimension 8.*{utt}\.npy \(dim 9\)"):
        load(iemo)


def test_non_numeric_npy_is_named(mosi: Layout) -> None:
    np.save(mosi.file("text", "vidA_2"), np.array(["a", "b"]))
    with pytest.raises(CorpusError, match=r"vidA_2\.npy has non-numeric dtype"):
        load(mosi)


def test_three_dimensional_npy_is_named(mosi: Layout) -> None:
    np.save(mosi.file("text", "vidA_2"), np.zeros((2, 2, 7), np.float32))
    with pytest.raises(CorpusError, match=r"vidA_2\.npy has shape \(2, 2, 7\)"):
        load(mosi)


# --------------------------------------------------------------------------- bad label files


def test_iemocap_label_out_of_range(iemo: Layout) -> None:
    did = sorted(iemo.items[0])[1]
    iemo.items[1][did][2] = 4  # iemocap4 has classes 0..3
    iemo.rewrite_labels()
    utt = iemo.items[0][did][2]
    with pytest.raises(CorpusError, match=rf"label 4 of utterance '{utt}' is outside the 4 classes"):
        load(iemo)


def test_iemocap_negative_label(iemo: Layout) -> None:
    did = sorted(iemo.items[0])[0]
    iemo.items[1][did][0] = -1
    iemo.rewrite_labels()
    with pytest.raises(CorpusError, match=rf"'{iemo.items[0][did][0]}' is outside"):
        load(iemo)


def test_iemocap_fractional_label(iemo: Layout) -> None:
    did = sorted(iemo.items[0])[0]
    iemo.items[1][did][1] = 1.5
    iemo.rewrite_labels()
    with pytest.raises(CorpusError, match=rf"'{iemo.items[0][did][1]}' is 1.5, expected an integer"):
        load(iemo)


def test_mosi_label_out_of_range(mosi: Layout) -> None:
    mosi.items[1]["vid_B"][3] = np.float64(3.2)
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"label 3.2 of utterance 'vid_B_4' is outside \[-3, 3\]"):
        load(mosi)


def test_mosi_nan_label(mosi: Layout) -> None:
    mosi.items[1]["c3"][0] = np.float64("nan")
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"'c3_1' is outside"):
        load(mosi)


def test_empty_dialogue_is_named(mosi: Layout) -> None:
    for k in range(4):
        mosi.items[k]["empty_vid"] = []
    mosi.items[4].add("empty_vid")
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"dialogue 'empty_vid' is empty"):
        load(mosi)


def test_duplicate_utterance_across_dialogues(iemo: Layout) -> None:
    a, b = sorted(iemo.items[0])[:2]
    dup = iemo.items[0][a][0]
    iemo.items[0][b][0] = dup
    iemo.rewrite_labels()
    with pytest.raises(CorpusError, match=rf"duplicate utterance id '{dup}' \(in dialogues '{a}' and '{b}'\)"):
        load(iemo)


def test_duplicate_utterance_within_dialogue(mosi: Layout) -> None:
    mosi.items[0]["c3"][2] = "c3_1"
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"duplicate utterance id 'c3_1' \(twice in dialogue 'c3'\)"):
        load(mosi)


def test_dialogue_in_two_splits(iemo: Layout) -> None:
    did = next(iter(iemo.items[5]))
    iemo.items[4].add(did)
    iemo.rewrite_labels()
    with pytest.raises(CorpusError, match=rf"duplicate dialogue id '{did}'.*train and test"):
        load(iemo)


def test_dialogue_listed_twice_in_a_split(mosi: Layout) -> None:
    mosi.items[4] = ["c3", "c3"]
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"duplicate dialogue id 'c3'.*twice in the train split"):
        load(mosi)


def test_duplicate_dialogue_keys(mosi: Layout) -> None:
    # b"c3" and "c3" are one dialogue id once read as text (Python 2 pickles hold bytes)
    for k in range(4):
        mosi.items[k][b"c3"] = mosi.items[k]["c3"]
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"duplicate dialogue id 'c3' in videoIDs"):
        load(mosi)


def test_split_dialogue_not_in_video_ids(mosi: Layout) -> None:
    mosi.items[6].add("ghost")
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"dialogue 'ghost' of the test split is not in videoIDs"):
        load(mosi)


@pytest.mark.parametrize("table", [1, 2, 3])
def test_length_mismatch_is_named(iemo: Layout, table: int) -> None:
    did = sorted(iemo.items[0])[2]
    iemo.items[table][did] = iemo.items[table][did][:-1]
    iemo.rewrite_labels()
    with pytest.raises(CorpusError, match=rf"dialogue '{did}' has 5 utterance ids but"):
        load(iemo)


def test_dialogue_missing_from_a_table(mosi: Layout) -> None:
    del mosi.items[2]["vidA"]
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"'vidA' is in videoIDs but not in videoSpeakers"):
        load(mosi)


def test_wrong_number_of_items(mosi: Layout) -> None:
    mosi.items = mosi.items[:6]
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"CMUMOSI_features_raw_2way\.pkl: expected a list of 7 items"):
        load(mosi)


def test_non_string_dialogue_id(mosi: Layout) -> None:
    mosi.items[0][7] = ["x_1"]
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"a dialogue id of videoIDs must be a string, got int 7"):
        load(mosi)


def test_non_string_speaker(mosi: Layout) -> None:
    mosi.items[2]["c3"][1] = 3
    mosi.rewrite_labels()
    with pytest.raises(CorpusError, match=r"a speaker of dialogue 'c3' must be a string"):
        load(mosi)


# --------------------------------------------------------------------------- bad arguments


def test_unknown_corpus_name(mosi: Layout) -> None:
    with pytest.raises(CorpusError, match=r"unknown GCNet corpus 'meld'"):
        load_gcnet_corpus("meld", mosi.root, mosi.folders)


def test_missing_label_file(mosi: Layout) -> None:
    mosi.label_file.unlink()
    with pytest.raises(CorpusError, match=r"label file not found: .*CMUMOSI_features_raw_2way\.pkl"):
        load(mosi)


def test_missing_feature_folder(mosi: Layout) -> None:
    shutil.rmtree(mosi.folder("visual"))
    with pytest.raises(CorpusError, match=r"visual feature folder not found: .*video-v-3"):
        load(mosi)


def test_unknown_folder_name(mosi: Layout) -> None:
    with pytest.raises(CorpusError, match=r"audio feature folder not found: .*no-such-folder"):
        load_gcnet_corpus("cmumosi", mosi.root, {"text": "text-t-7", "audio": "no-such-folder"})


def test_no_modality_selected(mosi: Layout) -> None:
    with pytest.raises(CorpusError, match=r"no modality selected"):
        load_gcnet_corpus("cmumosi", mosi.root, {"text": "", "audio": "", "visual": ""})


def test_unknown_modality_key(mosi: Layout) -> None:
    with pytest.raises(CorpusError, match=r"unknown modality \['video'\]"):
        load_gcnet_corpus("cmumosi", mosi.root, {"video": "video-v-3"})


def test_corpus_error_is_a_value_error() -> None:
    assert issubclass(CorpusError, ValueError)


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_iemocap() -> dict[str, object]:
    if not (DATA / "IEMOCAP" / "features" / "text-minilm-384").is_dir():
        pytest.skip(f"real data absent: {DATA / 'IEMOCAP'} (see shared/data/README.md)")
    root = DATA / "IEMOCAP"
    return {n: load_gcnet_corpus(n, root, {"text": "text-minilm-384"}) for n in ("iemocap4", "iemocap6")}


@pytest.mark.realdata
@pytest.mark.parametrize("name, utterances, classes", [("iemocap4", 5531, 4), ("iemocap6", 7433, 6)])
def test_real_iemocap_loads(real_iemocap: dict, name: str, utterances: int, classes: int) -> None:
    c = real_iemocap[name]
    assert c.num_dialogues == 151 and c.num_utterances == utterances
    assert c.dims == {"text": 384} and c.num_classes == classes
    assert c.speaker_names == ("F", "M")
    assert sorted(np.unique(c.labels).tolist()) == list(range(classes))
    assert sum(v == "train" for v in c.file_split.values()) == 120
    assert sum(v == "test" for v in c.file_split.values()) == 31
    assert c.transcripts is not None and len(c.transcripts) == utterances
