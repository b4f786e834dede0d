"""The restricted unpickler admits label-file contents and refuses everything else."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from iteacnet.data.safe_pickle import UnsafePickleError, load_label_file, safe_load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def dump(tmp_path: Path, obj: object, protocol: int = 4, name: str = "labels.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class _Plain:
    x: int = 1


# --------------------------------------------------------------------------- admitted


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_label_file_contents_round_trip(tmp_path: Path, protocol: int) -> None:
    obj = [
        {"d1": ["u1", "u2"]},
        {"d1": [np.float64(2.4), np.float64(-0.8)], "d2": [1, 2]},
        {"d1": ["", ""]},
        {"d1": np.array(["A SENTENCE", "ANOTHER"])},
        {"d1"}, frozenset({"d2"}), ("t", 1.5, None, True, b"\xe9bytes"),
        np.arange(6, dtype=np.int64).reshape(2, 3), np.array([0.5, np.nan], np.float32),
        np.array([True, False]), np.int32(7), np.array(3 + 1j),
    ]
    back = load_label_file(dump(tmp_path, obj, protocol))
    assert back[:3] == obj[:3] and back[4:7] == obj[4:7]
    np.testing.assert_array_equal(back[3]["d1"], obj[3]["d1"])  # type: ignore[index]
    for a, b in zip(back[7:], obj[7:]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype  # type: ignore[union-attr]


@pytest.mark.parametrize("spelling", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_both_numpy_core_spellings(tmp_path: Path, spelling: bytes) -> None:
    # protocol 2 names globals as text lines, so the module name can be swapped in place
    raw = pickle.dumps([np.array([1.0, 2.0]), np.float64(3.0)], protocol=2)
    for s in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        raw = raw.replace(s + b"\n", spelling + b"\n")
    assert spelling + b"\n" in raw
    path = tmp_path / "l.pkl"
    path.write_bytes(raw)
    arr, scalar = load_label_file(path)
    np.testing.assert_array_equal(arr, [1.0, 2.0])
    assert scalar == 3.0 and isinstance(scalar, np.float64)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "rel, items",
    [
        ("CMUMOSI/CMUMOSI_features_raw_2way.pkl", 7),
        ("IEMOCAP/IEMOCAP_features_raw_4way.pkl", 6),
        ("IEMOCAP/IEMOCAP_features_raw_6way.pkl", 6),
    ],
)
def test_real_label_files_are_accepted(rel: str, items: int) -> None:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"real data absent: {path} (see shared/data/README.md)")
    obj = load_label_file(path)
    assert len(obj) == items and all(isinstance(x, dict) for x in obj[:4])
    if items == 7:  # MOSI: numpy float64 labels, numpy arrays of sentences
        first = next(iter(obj[1].values()))[0]
        assert isinstance(first, np.float64)
        assert isinstance(next(iter(obj[3].values())), np.ndarray)


# --------------------------------------------------------------------------- refused


def test_refuses_os_system_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = dump(tmp_path, [_RunsCommand(marker)], name="evil.pkl")
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused global (posix|nt|os)\.system"):
        load_label_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_refuses_class_instance(tmp_path: Path, protocol: int) -> None:
    path = dump(tmp_path, {"x": _Plain()}, protocol)
    with pytest.raises(UnsafePickleError, match=r"labels\.pkl: refused global (.*_Plain|copy_?reg\._reconstructor)"):
        load_label_file(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_refuses_object_arrays(tmp_path: Path, protocol: int) -> None:
    path = dump(tmp_path, [np.array(["a", 1], dtype=object)], protocol)
    with pytest.raises(UnsafePickleError, match=r"labels\.pkl: refused numpy dtype '\|O'"):
        load_label_file(path)


def test_refuses_structured_arrays(tmp_path: Path) -> None:
    arr = np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])
    path = dump(tmp_path, [arr])
    with pytest.raises(UnsafePickleError, match=r"refused numpy dtype"):
        load_label_file(path)


def test_refuses_array_subclass(tmp_path: Path) -> None:
    path = dump(tmp_path, [np.ma.masked_array([1.0, 2.0])])
    with pytest.raises(UnsafePickleError, match=r"refused global numpy\.ma"):
        load_label_file(path)


@pytest.mark.parametrize(
    "target, name", [(eval, "builtins.eval"), (getattr, "builtins.getattr"), (__import__, "builtins.__import__"), (open, "io.open")]
)
def test_refuses_builtins(tmp_path: Path, target: object, name: str) -> None:
    class Evil:
        def __reduce__(self):
            return (target, ("1",))

    path = dump(tmp_path, Evil())
    with pytest.raises(UnsafePickleError, match=rf"refused global {name}"):
        safe_load(path)


def test_refuses_codecs_encode_other_than_latin1(tmp_path: Path) -> None:
    raw = pickle.dumps(b"\xe9", protocol=2)
    assert b"latin1" in raw
    path = tmp_path / "l.pkl"
    path.write_bytes(raw.replace(b"latin1", b"utf_16"))
    with pytest.raises(UnsafePickleError, match=r"_codecs\.encode with encoding 'utf_16'"):
        safe_load(path)


def test_garbage_is_a_named_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafePickleError, match=r"garbage\.pkl: not a readable label pickle"):
        load_label_file(path)


def test_top_level_must_be_a_list(tmp_path: Path) -> None:
    path = dump(tmp_path, {"a": 1})
    with pytest.raises(UnsafePickleError, match=r"labels\.pkl: expected a pickled list, got dict"):
        load_label_file(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_label_file(tmp_path / "absent.pkl")


def test_unsafe_pickle_error_is_a_value_error() -> None:
    assert issubclass(UnsafePickleError, ValueError)
