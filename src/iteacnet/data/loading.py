"""`DataConfig` → `Corpus`, with a disk cache for the GCNet-layout corpora.

`data.corpus_dir` set: the corpus folder there (data/table.py) is the corpus, read without a
cache (give large corpora as one matrix per modality, which loads in seconds).
`data.speakers` / `data.max_roles` re-code speakers (data/assemble.py) of any corpus.

Which feature folders are loaded (fields `text_feature`, `audio_feature`, `visual_feature`):
- a folder name: load `<root>/features/<name>` (it must exist);
- `"none"` (`DROP_FEATURE`): leave the modality out;
- `""` (the default): for a GCNet corpus, use GCNet's default folder from `CORPUS_SPECS`
  if `<root>/features/<default>` exists, else leave the modality out; for `synthetic`,
  keep the modality (the synthetic corpus has all three).

The cache (`Corpus.save`/`Corpus.load`) lives in `cfg.cache_dir`, else the per-user cache
folder `$XDG_CACHE_HOME/iteacnet` (`~/.cache/iteacnet`); never in the data folder. Its file name carries a hash of every input (corpus name, label file
path/size/mtime, each feature folder's path/file count/bytes/latest mtime,
`allow_missing_files`, `LOADER_VERSION`), so any change of the inputs rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from iteacnet.config import MODALITIES, DataConfig
from iteacnet.data.assemble import DEFAULT_MAX_ROLES, recode_speakers
from iteacnet.data.corpus import CORPUS_SPECS, SPEAKER_SCHEMES, Corpus
from iteacnet.data.gcnet import (
    GCNET_CORPORA,
    LOADER_VERSION,
    CorpusError,
    feature_folder,
    load_gcnet_corpus,
)
from iteacnet.data.synthetic import make_synthetic_corpus
from iteacnet.data.table import corpus_name, load_table_corpus

DROP_FEATURE = "none"
CACHE_DIRNAME = ".iteacnet-cache"  # where caches went before; no longer written


def _fields(cfg: DataConfig) -> dict[str, str]:
    return {"text": cfg.text_feature, "audio": cfg.audio_feature, "visual": cfg.visual_feature}


def resolve_feature_folders(cfg: DataConfig) -> dict[str, str]:
    """Modality → feature folder name for a GCNet corpus, by the rule in the module doc."""
    if cfg.corpus not in GCNET_CORPORA:
        raise CorpusError(f"unknown corpus {cfg.corpus!r}; known: synthetic, {', '.join(GCNET_CORPORA)}")
    if not cfg.root:
        raise CorpusError(f"corpus {cfg.corpus!r} needs data.root (the GCNet-layout folder)")
    defaults: dict[str, str] = CORPUS_SPECS[cfg.corpus]["defaults"]
    out: dict[str, str] = {}
    for m, value in _fields(cfg).items():
        if value == DROP_FEATURE:
            continue
        if value:
            out[m] = value
        elif defaults.get(m) and feature_folder(cfg.root, defaults[m]).is_dir():
            out[m] = defaults[m]
    if not out:
        tried = ", ".join(f"{m}={defaults.get(m)!r}" for m in MODALITIES if _fields(cfg)[m] != DROP_FEATURE)
        raise CorpusError(
            f"{cfg.corpus}: no feature folder selected and none of GCNet's defaults ({tried}) exists under "
            f"{Path(cfg.root) / 'features'}; set data.text_feature / audio_feature / visual_feature"
        )
    return out


def _folder_signature(folder: Path) -> dict[str, Any]:
    """File count, total bytes and latest mtime of a feature folder and its subdirectories."""
    count, size, latest = 0, 0, folder.stat().st_mtime_ns
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                st = e.stat()
                latest = max(latest, st.st_mtime_ns)
                if e.is_dir():
                    stack.append(Path(e.path))
                else:
                    count += 1
                    size += st.st_size
    return {"path": str(folder.resolve()), "files": count, "bytes": size, "mtime_ns": latest}


def cache_key(cfg: DataConfig, folders: dict[str, str]) -> str:
    """Hash of everything the loaded corpus depends on."""
    label = Path(cfg.root) / CORPUS_SPECS[cfg.corpus]["label_file"]
    if not label.is_file():
        raise CorpusError(f"{cfg.corpus}: label file not found: {label}")
    st = label.stat()
    parts: dict[str, Any] = {
        "corpus": cfg.corpus,
        "label": {"path": str(label.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns},
        "allow_missing_files": cfg.allow_missing_files,
        "loader_version": LOADER_VERSION,
        "features": {},
    }
    for m, name in folders.items():
        folder = feature_folder(cfg.root, name)
        if not folder.is_dir():
            raise CorpusError(f"{cfg.corpus}: {m} feature folder not found: {folder}")
        parts["features"][m] = _folder_signature(folder)
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _write_protected(directory: Path) -> bool:
    """True if the nearest existing folder has no write bit at all.

    The superuser can write there anyway, so probing alone would put caches inside
    deliberately read-only data folders (e.g. a shared ../shared/data).
    """
    for d in (directory, *directory.parents):
        if d.exists():
            return d.stat().st_mode & 0o222 == 0
    return False


def _writable(directory: Path) -> bool:
    if _write_protected(directory):
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iteacnet"


def cache_directory(cfg: DataConfig) -> Path:
    """Where this config's cache lives (created if needed): `data.cache_dir`, else the
    per-user cache folder. Never the data folder: it may be read-only or shared, and users
    do not expect writes there."""
    d = Path(cfg.cache_dir) if cfg.cache_dir else user_cache_dir()
    if not _writable(d):
        what = "data.cache_dir" if cfg.cache_dir else "the user cache folder ($XDG_CACHE_HOME/iteacnet)"
        raise CorpusError(f"{what} {d} is not writable; set data.cache_dir to a writable folder")
    return d


def cache_path(cfg: DataConfig) -> Path:
    """The `.npz` cache file of this config (it may not exist yet)."""
    return _cache_file(cfg, resolve_feature_folders(cfg))


def _cache_file(cfg: DataConfig, folders: dict[str, str]) -> Path:
    return cache_directory(cfg) / f"{cfg.corpus}-{cache_key(cfg, folders)}.npz"


def _load_or_build(cfg: DataConfig, progress: bool) -> tuple[Corpus, Path]:
    """The GCNet corpus of `cfg` from its cache, built from the source files when absent or stale."""
    folders = resolve_feature_folders(cfg)
    path = _cache_file(cfg, folders)
    corpus = _try_load(path)
    if corpus is None:
        corpus = load_gcnet_corpus(cfg.corpus, cfg.root, folders, cfg.allow_missing_files, progress)
        _save_atomic(corpus, path)
    return corpus, path


def _save_atomic(corpus: Corpus, path: Path) -> None:
    """Write `<stem>.npz` then `<stem>.json` via temporary names, so readers never see half a cache."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.stem}")
    corpus.save(tmp)
    os.replace(tmp.with_suffix(".npz"), path.with_suffix(".npz"))
    os.replace(tmp.with_suffix(".json"), path.with_suffix(".json"))


def _try_load(path: Path) -> Corpus | None:
    if not (path.with_suffix(".npz").is_file() and path.with_suffix(".json").is_file()):
        return None
    try:
        return Corpus.load(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable cache: rebuilt below from the source files


def build_cache(cfg: DataConfig, progress: bool = False) -> Path:
    """Load a GCNet corpus from source if its cache is absent or stale; return the `.npz` path."""
    if cfg.corpus_dir:
        raise CorpusError(f"data.corpus_dir {cfg.corpus_dir}: a corpus folder is read directly and never cached")
    if cfg.corpus == "synthetic":
        raise CorpusError("the synthetic corpus is generated on the fly and never cached")
    return _load_or_build(cfg, progress)[1]


def _synthetic(cfg: DataConfig) -> Corpus:
    corpus = make_synthetic_corpus(cfg.synthetic)
    keep = tuple(m for m, v in _fields(cfg).items() if v != DROP_FEATURE)
    if not keep:
        raise CorpusError(f"all three modalities are set to {DROP_FEATURE!r}; keep at least one")
    return corpus if keep == corpus.modalities else corpus.select_modalities(keep)


def _check_speakers(cfg: DataConfig) -> None:
    if cfg.speakers and cfg.speakers not in SPEAKER_SCHEMES:
        raise CorpusError(f"data.speakers: {cfg.speakers!r} is not one of {', '.join(SPEAKER_SCHEMES)} (or '' for the corpus's own)")
    if cfg.max_roles < 0:
        raise CorpusError(f"data.max_roles: must be >= 0 (0 keeps the corpus's), got {cfg.max_roles}")


def load_corpus(cfg: DataConfig, progress: bool = False) -> Corpus:
    """The corpus of `cfg`: a corpus folder, generated (synthetic) or loaded through the disk cache."""
    _check_speakers(cfg)
    if cfg.corpus_dir:
        return load_table_corpus(cfg.corpus_dir, cfg.allow_missing_files, progress, cfg.speakers, cfg.max_roles)
    corpus = _synthetic(cfg) if cfg.corpus == "synthetic" else _load_or_build(cfg, progress)[0]
    if cfg.speakers == "roles" or (cfg.max_roles and corpus.speaker_scheme == "roles"):
        corpus = recode_speakers(corpus, "roles", cfg.max_roles or DEFAULT_MAX_ROLES)
    return corpus


def corpus_label(cfg: DataConfig) -> str:
    """The corpus's name for result rows: corpus.json's name for a corpus folder."""
    if cfg.corpus_dir:
        try:
            return corpus_name(cfg.corpus_dir)
        except CorpusError:
            return Path(cfg.corpus_dir).name
    return cfg.corpus
