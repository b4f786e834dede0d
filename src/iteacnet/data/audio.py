"""Audio feature extraction: recordings -> `features/<name>/<utt>.npy` with openSMILE functionals.

One utterance-level vector per clip: the functionals of an openSMILE feature set, computed by
the `opensmile` package from PyPI (its wheel ships the native library and the configurations,
so nothing is fetched at run time): eGeMAPSv02 (88-d, the default) or ComParE_2016 (6,373-d).
The layout and the manifest are those of `extract text` (iteacnet.data.extract), whose helpers
this module shares: `out_dir/<utt>.npy` float32 (d,), each file written whole or not at all,
and `manifest.json` recording the feature set, the package versions and the sample rate.

Each clip (a file, or a [start, end) segment in seconds of a longer recording) is read with
soundfile as float32 and brought to the sample rate of the extraction (16 kHz by default) the
way opensmile's own file reader does it, with the same helper library (audresample):
- several channels are mixed down to mono (mean of the channels, `audresample.remix`);
- another sample rate is converted (`audresample.resample`, its default high quality);
- samples outside [-1, 32767/32768] after conversion are clipped: opensmile hands the native
  library 16-bit integers, and larger values would wrap around.
Each conversion is announced with an `AudioConversionWarning`. On a mono file at the target
rate nothing is converted and the vector is exactly what `opensmile.Smile(...).process_file`
gives for it (the tests check this, as well as the converted cases against opensmile's
`sampling_rate=..., resample=True, mixdown=True`). A segment starts at sample
`round(start * sr)` and spans `round((end - start) * sr)` samples, as audiofile reads it.

Bad audio is a named error (subclasses of `AudioError`), raised before anything is written:
missing file (`AudioNotFound`), unreadable file (`AudioUnreadable`), zero-length clip or one
shorter than openSMILE's 60 ms window (`EmptyAudio`), silent clip (`SilentAudio`: peak below
one 16-bit step, so openSMILE would see only zeros), segment outside its recording
(`SegmentOutOfRange`); a malformed list of files is an `AudioListError`.

Optional dependencies: `pip install -e ".[audio]"`. They are imported inside functions, so
importing this module is free (the predictor imports it).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.data.extract import (
    ExtractReport,
    ExtractUnavailable,
    _clean_id,
    check_ids,
    check_same_extractor,
    pending_ids,
    read_manifest,
    read_records,
    save_feature,
    write_manifest,
)
from iteacnet.errors import UserError

EXTRACTOR_NAME = "audio-opensmile"
FEATURE_SETS = {"eGeMAPSv02": 88, "ComParE_2016": 6373}  # functionals: dimension
DEFAULT_FEATURE_SET = "eGeMAPSv02"
DEFAULT_SAMPLE_RATE = 16000
FEATURE_LEVEL = "functionals"
DOWNMIX = "mean"
MIN_SECONDS = 0.06  # shorter clips give openSMILE no frame (it fills NaN): measured at 8-48 kHz
SILENCE_PEAK = 1 / 32768  # below one 16-bit step: opensmile's int16 conversion gives all zeros
_INT16_MAX = 32767 / 32768
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64", ".rf64")
INSTALL_HINT = 'pip install -e ".[audio]"  (from a source checkout)  or  pip install "iteacnet[audio]"'
SUGGESTED_FOLDER = {"eGeMAPSv02": "audio-egemaps-88", "ComParE_2016": "audio-compare-6373"}
_IDENTITY_KEYS = ("extractor", "feature_set", "feature_level", "opensmile_version", "sample_rate", "downmix", "dim")


# --------------------------------------------------------------------------- errors
class AudioUnavailable(ExtractUnavailable):
    """The optional audio-extraction dependencies (`audio` extra) are not installed."""

    def __init__(self, missing: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        RuntimeError.__init__(
            self,
            f"audio feature extraction needs the optional 'audio' dependencies (opensmile, soundfile), "
            f"but {missing!r} could not be imported{why}. Install them with: {INSTALL_HINT}",
        )
        self.missing = missing


class AudioError(UserError):
    """A clip that cannot be featurised; the subclass says why, the message names the clip."""


class AudioNotFound(AudioError):
    """The audio file does not exist."""


class AudioUnreadable(AudioError):
    """The file exists but is not audio soundfile can decode (or not a file at all)."""


class EmptyAudio(AudioError):
    """Zero samples, or fewer than openSMILE's 60 ms analysis window needs."""


class SilentAudio(AudioError):
    """Every sample is below one 16-bit step: openSMILE would analyse digital silence."""


class SegmentOutOfRange(AudioError):
    """A [start, end) segment that does not lie inside its recording."""


class AudioListError(AudioError):
    """A list of clips (a manifest CSV/JSONL, a folder, an utterance's `audio`) is malformed."""


class AudioFeatureError(AudioError):
    """openSMILE returned something other than a finite vector of the feature set's size."""


class AudioConversionWarning(UserWarning):
    """Clips were downmixed, resampled or clipped before openSMILE saw them."""


# --------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class AudioClip:
    """A recording, or the segment [start, end) seconds of it (None: its beginning / its end)."""

    path: Path
    start: float | None = None
    end: float | None = None

    def __str__(self) -> str:
        if self.start is None and self.end is None:
            return str(self.path)
        end = "end" if self.end is None else f"{self.end:g} s"
        return f"{self.path} [{self.start or 0:g} s - {end}]"


def _seconds(value: Any, key: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise AudioListError(f"{where}: {key!r} must be a number of seconds, got {type(value).__name__}")
    try:
        t = float(value)
    except ValueError:
        raise AudioListError(f"{where}: {key!r} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(t) or t < 0:
        raise AudioListError(f"{where}: {key!r} must be a finite number of seconds >= 0, got {value!r}")
    return t


def parse_clip(value: Any, base: Path | None, where: str) -> AudioClip:
    """An `AudioClip` from a path string, a `{"path", "start", "end"}` dict or an AudioClip.

    Relative paths are resolved against `base` (the folder of the list that names them; None:
    the working directory).
    """
    if isinstance(value, AudioClip):
        return value
    if isinstance(value, (str, os.PathLike)):
        value = {"path": value}
    if not isinstance(value, dict):
        raise AudioListError(
            f"{where}: audio must be a path or an object {{\"path\", \"start\", \"end\"}}, got {type(value).__name__}"
        )
    unknown = sorted(set(value) - {"path", "start", "end"})
    if unknown:
        raise AudioListError(f"{where}: unknown key(s) {unknown} in audio; expected 'path', 'start', 'end'")
    raw = value.get("path")
    if not isinstance(raw, (str, os.PathLike)) or not str(raw).strip():
        raise AudioListError(f"{where}: audio needs a non-empty 'path'")
    path = Path(raw).expanduser()
    if path.suffix.lower() == ".npy":
        raise AudioListError(f"{where}: {path} is a feature file, not a recording; give it as features.audio")
    if base is not None and not path.is_absolute():
        path = base / path
    start, end = _seconds(value.get("start"), "start", where), _seconds(value.get("end"), "end", where)
    if end is not None and end <= (start or 0.0):
        raise AudioListError(f"{where}: 'end' ({end:g} s) must come after 'start' ({start or 0:g} s)")
    return AudioClip(path, start, end)


def read_audio_list(path: str | Path) -> list[tuple[str, AudioClip]]:
    """(utterance id, clip) pairs from a CSV (`id,path[,start,end]` header) or JSONL manifest.

    JSONL: `{"id": ..., "path": ..., "start": s, "end": s}` a line, start/end optional. CSV:
    empty start/end cells mean the whole file. Relative paths are resolved against the
    manifest's folder. Errors name the line.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioListError(f"{path}: no such manifest file")
    out: list[tuple[str, AudioClip]] = []
    seen: dict[str, str] = {}
    for where, rec in read_records(path, ("id", "path"), error=AudioListError, what="audio files"):
        uid = _clean_id(rec["id"], where, AudioListError)
        if uid in seen:
            raise AudioListError(f"{where}: duplicate id {uid!r} (first at {seen[uid]})")
        seen[uid] = where
        clip = {k: rec.get(k) for k in ("path", "start", "end")}
        out.append((uid, parse_clip(clip, path.parent, where)))
    return out


def audio_files_in(folder: str | Path, recursive: bool = False) -> list[tuple[str, AudioClip]]:
    """(file stem, clip) for every audio file (by suffix, AUDIO_SUFFIXES) in `folder`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioListError(f"{folder}: no such folder")
    files = sorted(
        p for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and not p.is_dir()
    )
    if not files:
        nested = "" if recursive else " (add --recursive to look in subfolders)"
        raise AudioListError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}){nested}")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise AudioListError(
                f"{folder}: two files for utterance {p.stem!r}: {seen[p.stem]} and {p}; ids are file stems, "
                "so keep one or list the files in a manifest"
            )
        seen[p.stem] = p
    return [(p.stem, AudioClip(p)) for p in files]


# --------------------------------------------------------------------------- settings
def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except (ImportError, OSError) as e:  # OSError: soundfile without its native libsndfile
        raise AudioUnavailable(name, str(e)) from e


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class AudioSettings:
    """What makes two extractions comparable: the feature set and the sample rate."""

    feature_set: str = DEFAULT_FEATURE_SET
    sample_rate: int = DEFAULT_SAMPLE_RATE
    opensmile_version: str | None = None  # recorded by a manifest; None: whatever is installed

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown openSMILE feature set {self.feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) or not 1000 <= self.sample_rate <= 384000:
            raise ValueError(f"sample rate must be an integer number of Hz in [1000, 384000], got {self.sample_rate!r}")

    @property
    def dim(self) -> int:
        return FEATURE_SETS[self.feature_set]

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's description of this extractor (imports the `audio` extra)."""
        for module in ("opensmile", "soundfile", "audresample"):
            _import(module)
        return {
            "extractor": EXTRACTOR_NAME,
            "feature_set": self.feature_set,
            "feature_level": FEATURE_LEVEL,
            "dim": self.dim,
            "dtype": "float32",
            "opensmile_version": _version("opensmile"),
            "sample_rate": self.sample_rate,
            "downmix": DOWNMIX,
            "resampler": f"audresample {_version('audresample')}",
            "reader": f"soundfile {_version('soundfile')}",
            "min_seconds": MIN_SECONDS,
        }

    @classmethod
    def from_manifest(cls, m: dict[str, Any]) -> AudioSettings:
        """The settings a manifest records; ValueError if it was not written by `extract audio`."""
        if m.get("extractor") != EXTRACTOR_NAME:
            raise ValueError(f"its extractor is {m.get('extractor')!r}, not {EXTRACTOR_NAME!r}")
        if m.get("feature_level") != FEATURE_LEVEL or m.get("downmix") != DOWNMIX:
            raise ValueError(f"feature level {m.get('feature_level')!r} / downmix {m.get('downmix')!r} are not this version's")
        settings = cls(str(m.get("feature_set")), m.get("sample_rate"), m.get("opensmile_version"))  # type: ignore[arg-type]
        if m.get("dim") != settings.dim:
            raise ValueError(f"it records {m.get('dim')}-d features, {settings.feature_set} has {settings.dim}")
        return settings


def audio_extractor_check(cfg: Any, meta: dict[str, Any], spec: Any) -> tuple[AudioSettings | None, str]:
    """The settings that made a checkpoint's audio features, when `extract audio` made them.

    Read from the manifest the checkpoint recorded (`meta["feature_manifests"]["audio"]`),
    else from its training audio folder `<data.root>/features/<audio_feature>/manifest.json`.
    (None, reason) when the model has no audio, or its audio came from elsewhere.
    """
    dims = spec.dim_of
    if "audio" not in dims:
        return None, "the model has no audio modality"
    recorded = (meta.get("feature_manifests") or {}).get("audio")
    source = "the checkpoint's record of its audio features"
    if not isinstance(recorded, dict):
        name = cfg.data.audio_feature
        if cfg.data.corpus == "synthetic" or name in ("", "none"):
            return None, f"it was trained on {cfg.data.corpus!r} audio features {name or '(GCNet default)'!r}"
        folder = Path(cfg.data.root) / "features" / name
        recorded, source = read_manifest(folder), f"{folder}/manifest.json"
        if recorded is None:
            return None, f"its audio folder {folder} has no manifest.json from `iteacnet extract audio`"
    try:
        settings = AudioSettings.from_manifest(recorded)
    except ValueError as e:
        return None, f"{source}: {e}"
    if settings.dim != dims["audio"]:
        return None, f"{source} describes {settings.dim}-d features, the model's audio is {dims['audio']}-d"
    return settings, f"{source}: {settings.feature_set} at {settings.sample_rate} Hz"


# --------------------------------------------------------------------------- reading
@dataclass
class LoadedClip:
    signal: np.ndarray  # (n,) float32, mono, at the target rate, within the 16-bit range
    source_rate: int
    channels: int
    clipped: int  # samples clipped to [-1, 32767/32768]


def load_clip(clip: AudioClip, sample_rate: int) -> LoadedClip:
    """Read, check and convert one clip (module doc); AudioError subclasses name the problem."""
    sf, audresample = _import("soundfile"), _import("audresample")
    path = clip.path
    if not path.exists():
        raise AudioNotFound(f"{clip}: no such audio file")
    if not path.is_file():
        raise AudioUnreadable(f"{clip}: not a file")
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise AudioUnreadable(
            f"{clip}: not a readable audio file ({e}); soundfile reads WAV, FLAC, OGG, MP3, AIFF and "
            "the like: convert other formats first, e.g. `ffmpeg -i in.m4a out.wav`"
        ) from None
    sr, frames, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if frames <= 0:
        raise EmptyAudio(f"{clip}: zero-length recording (no samples)")
    first = 0 if clip.start is None else round(clip.start * sr)
    count = frames - first if clip.end is None else round((clip.end - (clip.start or 0.0)) * sr)
    if first >= frames or first + count > frames + 1:  # one sample of slack for rounding
        raise SegmentOutOfRange(f"{clip}: the segment lies outside the recording, which is {frames / sr:.3f} s long")
    count = min(count, frames - first)
    if count <= 0:
        raise EmptyAudio(f"{clip}: zero-length segment")
    try:
        data, _ = sf.read(str(path), start=first, frames=count, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise AudioUnreadable(f"{clip}: reading the samples failed ({e})") from None
    if data.shape[0] == 0:
        raise EmptyAudio(f"{clip}: no samples could be read (truncated file?)")
    x = np.ascontiguousarray(data.T)  # (channels, n), as audiofile returns it
    if x.shape[0] > 1:
        x = audresample.remix(x, mixdown=True)
    if sr != sample_rate:
        x = audresample.resample(x, sr, sample_rate)
    signal = np.ascontiguousarray(x[0], dtype=np.float32)
    need = math.ceil(round(MIN_SECONDS * sample_rate, 6))
    if signal.shape[0] < need:
        raise EmptyAudio(
            f"{clip}: {1000 * signal.shape[0] / sample_rate:.1f} ms of audio; openSMILE's functionals need at least "
            f"{1000 * MIN_SECONDS:g} ms"
        )
    peak = float(np.max(np.abs(signal)))
    if peak < SILENCE_PEAK:
        level = "digital zero" if peak == 0 else f"peak {20 * math.log10(peak):.1f} dBFS"
        raise SilentAudio(f"{clip}: silent ({level}; below one 16-bit step, openSMILE would see only zeros)")
    out = (signal < -1.0) | (signal > _INT16_MAX)
    clipped = int(out.sum())
    if clipped:
        signal = np.clip(signal, -1.0, _INT16_MAX)
    return LoadedClip(signal, sr, channels, clipped)


# --------------------------------------------------------------------------- openSMILE
_local = threading.local()


def _smile(feature_set: str) -> Any:
    """One `opensmile.Smile` per thread and feature set."""
    cache: dict[str, Any] | None = getattr(_local, "smiles", None)
    if cache is None:
        cache = _local.smiles = {}
    if feature_set not in cache:
        opensmile = _import("opensmile")
        cache[feature_set] = opensmile.Smile(
            feature_set=opensmile.FeatureSet[feature_set], feature_level=opensmile.FeatureLevel.Functionals
        )
    return cache[feature_set]


def _without_signal(c: LoadedClip) -> LoadedClip:
    return LoadedClip(np.zeros(0, dtype=np.float32), c.source_rate, c.channels, c.clipped)


def featurize(clip: AudioClip, settings: AudioSettings) -> tuple[np.ndarray, LoadedClip]:
    """(d,) float32 functionals of one clip, and what reading it took."""
    loaded = load_clip(clip, settings.sample_rate)
    frame = _smile(settings.feature_set).process_signal(loaded.signal, settings.sample_rate)
    vec = np.asarray(frame.to_numpy(), dtype=np.float32).reshape(-1)
    if vec.shape != (settings.dim,) or not np.isfinite(vec).all():
        bad = int((~np.isfinite(vec)).sum())
        raise AudioFeatureError(f"{clip}: openSMILE returned shape {vec.shape} with {bad} non-finite values, "
                                f"expected ({settings.dim},) finite")
    return vec, loaded


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _raise_bad(bad: list[tuple[str, AudioError]]) -> None:
    """Raise the first error (its class), listing the others in the message."""
    (label, first), rest = bad[0], bad[1:]
    msg = f"{label}: {first}"
    if rest:
        shown = "".join(f"\n  {lab}: {type(e).__name__}: {e}" for lab, e in rest[:10])
        more = f"\n  ... and {len(rest) - 10} more" if len(rest) > 10 else ""
        msg += f"\nand {len(rest)} more bad clip(s):{shown}{more}"
    raise type(first)(msg) from first


def _names(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def warn_conversions(loaded: Sequence[tuple[str, LoadedClip]], sample_rate: int) -> None:
    """One AudioConversionWarning per kind of conversion, naming (some of) the clips."""
    by_rate: dict[int, list[str]] = {}
    for label, c in loaded:
        if c.source_rate != sample_rate:
            by_rate.setdefault(c.source_rate, []).append(label)
    if by_rate:
        n = sum(len(v) for v in by_rate.values())
        rates = "; ".join(f"{r} Hz: {_names(v)}" for r, v in sorted(by_rate.items()))
        warnings.warn(AudioConversionWarning(
            f"{n} clip(s) resampled to {sample_rate} Hz with audresample (the resampler of opensmile's own "
            f"file reader): {rates}"), stacklevel=3)
    multi = [(label, c.channels) for label, c in loaded if c.channels > 1]
    if multi:
        warnings.warn(AudioConversionWarning(
            f"{len(multi)} clip(s) with several channels downmixed to mono (mean of the channels, "
            f"audresample.remix): {_names([f'{lab} ({ch} ch)' for lab, ch in multi])}"), stacklevel=3)
    clipped = [f"{label} ({c.clipped} samples)" for label, c in loaded if c.clipped]
    if clipped:
        warnings.warn(AudioConversionWarning(
            f"{len(clipped)} clip(s) clipped to [-1, 32767/32768] after conversion (opensmile reads 16-bit "
            f"integers; larger values would wrap around): {_names(clipped)}"), stacklevel=3)


@contextlib.contextmanager
def notes_to_stderr(prog: str) -> Iterator[None]:
    """Show each AudioConversionWarning as one line, `<prog>: note: ...`, on stderr (for the CLI)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", AudioConversionWarning)
        original = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, AudioConversionWarning):
                print(f"{prog}: note: {message}", file=sys.stderr)
            else:
                original(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _run_all(
    pool: ThreadPoolExecutor, fn: Callable[[AudioClip], Any], clips: Sequence[AudioClip], labels: Sequence[str],
    bar: Any = None,
) -> list[Any]:
    """fn over the clips in the pool, in order; every AudioError is collected, then raised together."""
    def safe(clip: AudioClip) -> Any:
        try:
            return fn(clip)
        except AudioError as e:
            return e

    results = []
    for r in pool.map(safe, clips):
        results.append(r)
        if bar is not None:
            bar.update(1)
    bad = [(lab, r) for lab, r in zip(labels, results) if isinstance(r, AudioError)]
    if bad:
        _raise_bad(bad)
    return results


def featurize_clips(
    clips: Sequence[Any], settings: AudioSettings, labels: Sequence[str] | None = None, workers: int | None = None
) -> np.ndarray:
    """(len(clips), d) float32: `featurize` over several clips at once (threads; used by predict).

    `labels` (default: the clips) prefix the error messages. Bad clips raise the first one's
    AudioError, listing all of them.
    """
    if labels is not None and len(labels) != len(clips):
        raise ValueError(f"{len(labels)} labels for {len(clips)} clips")
    clips = [parse_clip(c, None, str(c) if labels is None else labels[i]) for i, c in enumerate(clips)]
    labels = [str(c) for c in clips] if labels is None else list(labels)
    if not clips:
        return np.zeros((0, settings.dim), dtype=np.float32)
    _import("opensmile")
    installed = _version("opensmile")
    if settings.opensmile_version not in (None, installed):
        warnings.warn(AudioConversionWarning(
            f"these audio features were made with opensmile {settings.opensmile_version}, opensmile {installed} "
            "is installed; values may differ slightly"), stacklevel=2)
    with ThreadPoolExecutor(min(workers or default_workers(), len(clips))) as pool:
        results = _run_all(pool, lambda c: featurize(c, settings), clips, labels)
    warn_conversions([(lab, loaded) for lab, (_, loaded) in zip(labels, results)], settings.sample_rate)
    return np.stack([vec for vec, _ in results]).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class AudioExtractReport(ExtractReport):
    resampled: int
    downmixed: int
    clipped: int


def extract_audio_features(
    items: Iterable[tuple[str, Any]],
    out_dir: Path,
    settings: AudioSettings | None = None,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> AudioExtractReport:
    """Featurise (utterance id, clip) pairs into `out_dir/<utt>.npy` (float32, (d,)) + `manifest.json`.

    A clip is a path, an AudioClip or a {"path", "start", "end"} dict. Every clip still to do is
    read and checked first (in `workers` threads); a bad one stops the run before anything is
    written, with the first problem's AudioError listing all of them. Then the clips are
    featurised in `workers` threads, each file appearing whole as it finishes, so an
    interrupted run resumes when started again; existing files are kept unless `overwrite`.
    """
    t0 = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings = settings or AudioSettings()
    pairs = [(str(u), parse_clip(c, None, f"utterance {u!r}")) for u, c in items]
    ids = [u for u, _ in pairs]
    check_ids(ids)
    fields = settings.manifest_fields()  # AudioUnavailable here, before any work
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        check_same_extractor(out_dir, fields, _IDENTITY_KEYS, overwrite)
        todo, skipped = pending_ids(ids, out_dir, settings.dim, overwrite)
    else:
        todo, skipped = list(range(len(pairs))), 0
    pending = [pairs[i] for i in todo]
    labels = [f"utterance {u!r}" for u, _ in pending]
    n_workers = max(1, min(workers or default_workers(), len(pending) or 1))
    from tqdm.auto import tqdm

    written = 0
    with ThreadPoolExecutor(n_workers) as pool:
        with tqdm(total=len(pending), unit="clip", desc="checking audio", disable=not progress or not pending) as bar:
            # Only what was converted is kept: extraction reads each clip again, in its worker.
            checked = _run_all(pool, lambda c: _without_signal(load_clip(c, settings.sample_rate)),
                               [c for _, c in pending], labels, bar)
        info = [(uid, c) for (uid, _), c in zip(pending, checked)]
        warn_conversions(info, settings.sample_rate)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(out_dir, fields)  # first, so that a resumed run checks against it
        futures = {pool.submit(featurize, clip, settings): uid for uid, clip in pending}
        try:
            with tqdm(total=len(pending), unit="clip", desc=settings.feature_set, disable=not progress) as bar:
                for fut in as_completed(futures):
                    try:
                        vec, _ = fut.result()
                    except AudioError as e:
                        _raise_bad([(f"utterance {futures[fut]!r}", e)])
                    save_feature(out_dir, futures[fut], vec)
                    written += 1
                    bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    write_manifest(out_dir, {**fields, "workers": n_workers})
    return AudioExtractReport(
        written=written, skipped=skipped, out_dir=out_dir, seconds=time.perf_counter() - t0,
        resampled=sum(c.source_rate != settings.sample_rate for _, c in info),
        downmixed=sum(c.channels > 1 for _, c in info), clipped=sum(c.clipped > 0 for _, c in info),
    )
