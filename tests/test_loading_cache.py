"""`load_corpus`: feature-folder rule, synthetic corpus, and the disk cache."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from gcnet_layout import Layout, write_iemocap_like, write_mosi_like
from iteacnet.config import DataConfig, SyntheticConfig
from iteacnet.data import loading
from iteacnet.data.corpus import CORPUS_SPECS, Corpus
from iteacnet.data.gcnet import CorpusError, load_gcnet_corpus
from iteacnet.data.loading import (
    CACHE_DIRNAME,
    build_cache,
    cache_path,
    load_corpus,
    resolve_feature_folders,
)


@pytest.fixture
def mosi(tmp_path: Path) -> Layout:
    return write_mosi_like(tmp_path / "CMUMOSI")


def cfg_for(layout: Layout, **kw) -> DataConfig:
    fields = {f"{m}_feature": folder for m, folder in layout.folders.items()}
    fields.update(kw)
    return DataConfig(corpus=layout.name, root=str(layout.root), **fields)


def no_source_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a, **k):
        raise AssertionError("the corpus was loaded from source instead of the cache")

    monkeypatch.setattr(loading, "load_gcnet_corpus", fail)


def assert_same(a: Corpus, b: Corpus) -> None:
    assert a.utterance_ids == b.utterance_ids and a.dialogue_ids == b.dialogue_ids
    assert a.file_split == b.file_split and a.notes == b.notes and a.transcripts == b.transcripts
    np.testing.assert_array_equal(a.labels, b.labels)
    for m in a.modalities:
        np.testing.assert_array_equal(a.features[m], b.features[m])
        np.testing.assert_array_equal(a.available[m], b.available[m])


# --------------------------------------------------------------------------- synthetic


def test_synthetic_keeps_all_modalities() -> None:
    c = load_corpus(DataConfig(synthetic=SyntheticConfig(num_dialogues=6)))
    assert c.name == "synthetic" and c.modalities == ("text", "audio", "visual")


def test_synthetic_none_drops_a_modality() -> None:
    c = load_corpus(DataConfig(audio_feature="none", synthetic=SyntheticConfig(num_dialogues=6)))
    assert c.modalities == ("text", "visual")


def test_synthetic_all_dropped_is_an_error() -> None:
    cfg = DataConfig(text_feature="none", audio_feature="none", visual_feature="none")
    with pytest.raises(CorpusError, match="keep at least one"):
        load_corpus(cfg)


def test_synthetic_is_never_cached() -> None:
    with pytest.raises(CorpusError, match="never cached"):
        build_cache(DataConfig())


# --------------------------------------------------------------------------- folder rule


def test_explicit_folders_are_used(mosi: Layout) -> None:
    assert resolve_feature_folders(cfg_for(mosi)) == mosi.folders


def test_empty_field_uses_existing_gcnet_default(mosi: Layout) -> None:
    default = CORPUS_SPECS["cmumosi"]["defaults"]["audio"]
    (mosi.root / "features" / mosi.folders["audio"]).rename(mosi.root / "features" / default)
    cfg = cfg_for(mosi, audio_feature="")
    assert resolve_feature_folders(cfg)["audio"] == default
    assert load_corpus(cfg).dims["audio"] == 4


def test_empty_field_drops_modality_without_default_folder(mosi: Layout) -> None:
    assert resolve_feature_folders(cfg_for(mosi, visual_feature="")) == {
        "text": mosi.folders["text"], "audio": mosi.folders["audio"]}


def test_none_drops_even_an_existing_default(mosi: Layout) -> None:
    default = CORPUS_SPECS["cmumosi"]["defaults"]["audio"]
    (mosi.root / "features" / default).mkdir()
    assert "audio" not in resolve_feature_folders(cfg_for(mosi, audio_feature="none"))


def test_nothing_selected_names_the_defaults(mosi: Layout) -> None:
    cfg = DataConfig(corpus="cmumosi", root=str(mosi.root))
    with pytest.raises(CorpusError, match=r"none of GCNet's defaults.*deberta-large-4-FRA"):
        load_corpus(cfg)


def test_unknown_corpus_and_missing_root(mosi: Layout) -> None:
    with pytest.raises(CorpusError, match=r"unknown corpus 'meld'"):
        load_corpus(DataConfig(corpus="meld", root=str(mosi.root)))
    with pytest.raises(CorpusError, match=r"needs data.root"):
        load_corpus(DataConfig(corpus="cmumosi"))


def test_explicit_missing_folder_is_an_error(mosi: Layout) -> None:
    with pytest.raises(CorpusError, match=r"audio feature folder not found: .*nope"):
        load_corpus(cfg_for(mosi, audio_feature="nope"))


# --------------------------------------------------------------------------- cache


def test_cache_miss_then_hit(mosi: Layout, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = cfg_for(mosi)
    first = load_corpus(cfg)
    cached = list((tmp_path / "xdg" / "iteacnet").glob("cmumosi-*"))
    assert not (mosi.root / CACHE_DIRNAME).exists()  # nothing written into the data folder
    assert sorted(p.suffix for p in cached) == [".json", ".npz"]
    assert_same(first, load_gcnet_corpus("cmumosi", mosi.root, mosi.folders))
    no_source_loading(monkeypatch)
    assert_same(load_corpus(cfg), first)


def test_rebuild_when_a_feature_file_changes(mosi: Layout) -> None:
    cfg = cfg_for(mosi)
    before = load_corpus(cfg)
    old_path = cache_path(cfg)
    f = mosi.file("text", "vidA_5")
    np.save(f, np.full(7, 9.0, np.float32))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime, whatever the clock's grain
    assert cache_path(cfg) != old_path
    after = load_corpus(cfg)
    row = after.utterance_ids.index("vidA_5")
    assert (after.features["text"][row] == 9.0).all()
    assert not (before.features["text"][row] == 9.0).all()


def test_rebuild_when_a_feature_file_is_added(mosi: Layout) -> None:
    cfg = cfg_for(mosi)
    old = cache_path(cfg)
    np.save(mosi.folder("audio") / "unrelated.npy", np.zeros(4, np.float32))
    assert cache_path(cfg) != old


def test_rebuild_when_a_per_speaker_visual_file_changes(tmp_path: Path) -> None:
    layout = write_iemocap_like(tmp_path / "IEMOCAP")
    cfg = cfg_for(layout)
    old = cache_path(cfg)
    f = layout.folder("visual") / layout.utterances[0] / "compress_F.npy"
    np.save(f, np.zeros((1, 5), np.float32))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_path(cfg) != old
    assert (load_corpus(cfg).features["visual"][0] == 0).all()


def test_rebuild_when_the_label_file_changes(mosi: Layout) -> None:
    cfg = cfg_for(mosi)
    load_corpus(cfg)
    old = cache_path(cfg)
    mosi.items[1]["c3"][0] = np.float64(-2.5)
    mosi.rewrite_labels()
    assert cache_path(cfg) != old
    assert load_corpus(cfg).labels[0] == np.float32(-2.5)


def test_key_depends_on_allow_missing_and_version(mosi: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_for(mosi)
    base = cache_path(cfg)
    assert cache_path(cfg) == base  # stable
    assert cache_path(dataclasses.replace(cfg, allow_missing_files=True)) != base
    assert cache_path(cfg_for(mosi, visual_feature="none")) != base
    monkeypatch.setattr(loading, "LOADER_VERSION", 999)
    assert cache_path(cfg) != base


def test_build_cache_returns_the_cache_and_reuses_it(mosi: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cfg_for(mosi)
    path = build_cache(cfg)
    assert path.suffix == ".npz" and path.is_file() and path.with_suffix(".json").is_file()
    no_source_loading(monkeypatch)
    assert build_cache(cfg) == path
    assert Corpus.load(path).num_utterances == len(mosi.utterances)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_rebuilt(mosi: Layout, damage: str) -> None:
    cfg = cfg_for(mosi)
    path = build_cache(cfg)
    path.write_bytes(b"broken" if damage == "garbage" else path.read_bytes()[:200])
    assert load_corpus(cfg).num_utterances == len(mosi.utterances)
    assert Corpus.load(path).num_utterances == len(mosi.utterances)


def test_cache_dir_setting_is_used(mosi: Layout, tmp_path: Path) -> None:
    cfg = cfg_for(mosi, cache_dir=str(tmp_path / "elsewhere"))
    assert build_cache(cfg).parent == tmp_path / "elsewhere"
    assert not (mosi.root / CACHE_DIRNAME).exists()


def test_read_only_data_folder_is_never_written(
    mosi: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    mode = mosi.root.stat().st_mode
    mosi.root.chmod(0o555)  # as the shared data folder is
    try:
        path = build_cache(cfg_for(mosi))
    finally:
        mosi.root.chmod(mode)
    assert path.parent == tmp_path / "xdg" / "iteacnet"
    assert not (mosi.root / CACHE_DIRNAME).exists()


def test_unwritable_cache_folder_is_a_clear_error(mosi: Layout, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CorpusError, match="data.cache_dir .* is not writable"):
        build_cache(cfg_for(mosi, cache_dir=str(blocker / "sub")))


def test_missing_files_survive_the_cache(mosi: Layout) -> None:
    mosi.file("visual", "vidA_2").unlink()
    cfg = cfg_for(mosi, allow_missing_files=True)
    load_corpus(cfg)
    c = load_corpus(cfg)  # from the cache
    assert c.available["visual"].sum() == len(mosi.utterances) - 1
    assert any("visual: 1 of" in n for n in c.notes)
