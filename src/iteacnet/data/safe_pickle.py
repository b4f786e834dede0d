"""A restricted unpickler for GCNet label files.

GCNet ships its labels as Python pickles, and `pickle.load` runs whatever callables a file
names. These files only ever need builtin containers, strings and numbers plus numpy
arrays/scalars of numbers or strings, so everything else is refused before it is called.

Admitted globals (both the numpy<2 `numpy.core.*` and numpy>=2 `numpy._core.*` spellings):
- `numpy.core.multiarray._reconstruct` + `numpy.ndarray` (arrays, protocols 2–4),
- `numpy.core.numeric._frombuffer` (arrays, protocol 5),
- `numpy.core.multiarray.scalar` (numpy scalars such as MOSI's float64 labels),
- `numpy.dtype`, restricted to bool/int/uint/float/complex/bytes/str kinds,
- `builtins.set` / `frozenset` (protocols < 4 rebuild sets by calling them),
- `_codecs.encode` restricted to latin-1 (protocol 2 stores bytes through it).
Object and structured (void) dtypes are refused: they can embed arbitrary objects. Only
`safe_load(..., object_arrays=True)` (MMSA's pickles hold ids and raw text as object arrays)
admits plain object arrays, whose elements were unpickled through the same restricted
`find_class` and must each be a string or number (checked after loading).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.errors import UserError

# Numeric and string kinds only: no "O" (object), "V" (void/structured), "M"/"m" (datetime).
_SAFE_DTYPE_KINDS = frozenset("biufcSU")
_MAX_DEPTH = 64


class UnsafePickleError(UserError):
    """A label pickle asked for something outside the admitted set."""


def _numpy_core_attr(module: str, name: str) -> Any:
    """Resolve a numpy internal under whichever package name this numpy uses."""
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            mod = importlib.import_module(f"{prefix}.{module}")
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise ImportError(f"numpy has no {module}.{name}")


def _check_dtype(dt: np.dtype, where: str) -> np.dtype:
    if dt.kind not in _SAFE_DTYPE_KINDS or dt.hasobject or dt.fields is not None:
        raise UnsafePickleError(f"{where}: refused numpy dtype {dt.str!r} (only numeric and string arrays are admitted)")
    return dt


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: str, object_arrays: bool = False) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path
        self._object_arrays = object_arrays
        self._allowed = self._build_allowed()

    def _build_allowed(self) -> dict[tuple[str, str], Callable[..., Any]]:
        where = self._path
        reconstruct = _numpy_core_attr("multiarray", "_reconstruct")
        scalar = _numpy_core_attr("multiarray", "scalar")
        frombuffer = _numpy_core_attr("numeric", "_frombuffer")

        def safe_dtype(*args: Any, **kwargs: Any) -> np.dtype:
            if args and not isinstance(args[0], (str, bytes)):
                raise UnsafePickleError(f"{where}: refused numpy dtype built from {type(args[0]).__name__}")
            dt = np.dtype(*args, **kwargs)
            if self._object_arrays and dt == np.dtype(object):
                return dt
            return _check_dtype(dt, where)

        def safe_reconstruct(cls: Any, *args: Any) -> Any:
            if cls is not np.ndarray:
                raise UnsafePickleError(f"{where}: refused array subclass {cls!r}")
            return reconstruct(cls, *args)

        def safe_scalar(dtype: Any, *args: Any) -> Any:
            return scalar(_check_dtype(np.dtype(dtype), where), *args)

        def safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
            return frombuffer(buf, _check_dtype(np.dtype(dtype), where), shape, order)

        def safe_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
            if encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
                raise UnsafePickleError(f"{where}: refused _codecs.encode with encoding {encoding!r}")
            if not isinstance(obj, str):
                raise UnsafePickleError(f"{where}: refused _codecs.encode of {type(obj).__name__}")
            return obj.encode("latin-1", errors)

        allowed: dict[tuple[str, str], Callable[..., Any]] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): safe_dtype,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("__builtin__", "set"): set,
            ("__builtin__", "frozenset"): frozenset,
            ("_codecs", "encode"): safe_encode,
        }
        for prefix in ("numpy.core", "numpy._core"):
            allowed[(f"{prefix}.multiarray", "_reconstruct")] = safe_reconstruct
            allowed[(f"{prefix}.multiarray", "scalar")] = safe_scalar
            allowed[(f"{prefix}.numeric", "_frombuffer")] = safe_frombuffer
        return allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refused global {module}.{name}; label files may only hold "
                "builtin containers, strings, numbers and numeric/string numpy arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: refused persistent id {pid!r}")


def _check_tree(obj: Any, where: str, object_arrays: bool = False) -> None:
    """Second line of defence: every object in the result is of an admitted type.

    Each container is walked once (by identity): a pickle may share one list many times
    (`x = [x, x]` forty levels deep is 2.6 KB on disk but 2**40 paths), and the memo keeps
    the check linear in the number of distinct objects. With `object_arrays`, object arrays
    are admitted when every element is a string or number."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        o, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise UnsafePickleError(f"{where}: nesting deeper than {_MAX_DEPTH} levels")
        if o is None or isinstance(o, (bool, int, float, complex, str, bytes)):
            continue
        if isinstance(o, np.generic):
            _check_dtype(o.dtype, where)
            continue
        if isinstance(o, np.ndarray):
            if type(o) is not np.ndarray:
                raise UnsafePickleError(f"{where}: refused array subclass {type(o).__name__}")
            if object_arrays and o.dtype == np.dtype(object):
                for v in o.flat:
                    if not (v is None or isinstance(v, (bool, int, float, str, bytes, np.number, np.str_, np.bytes_))):
                        raise UnsafePickleError(f"{where}: refused object array element of type {type(v).__qualname__}")
                continue
            _check_dtype(o.dtype, where)
            continue
        if type(o) not in (dict, list, tuple, set, frozenset):
            raise UnsafePickleError(f"{where}: refused object of type {type(o).__module__}.{type(o).__qualname__}")
        if id(o) in seen:
            continue
        seen.add(id(o))
        items = [x for kv in o.items() for x in kv] if type(o) is dict else list(o)
        stack.extend((x, depth + 1) for x in items)


def safe_load(path: str | Path, object_arrays: bool = False) -> Any:
    """Unpickle `path` (latin-1, as GCNet's files need) with the restricted unpickler."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = _RestrictedUnpickler(f, str(path), object_arrays).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RecursionError, MemoryError) as e:
        raise UnsafePickleError(f"{path}: not a readable label pickle ({type(e).__name__}: {e})") from e
    _check_tree(obj, str(path), object_arrays=object_arrays)
    return obj


def load_label_file(path: str | Path) -> list:
    """Load a GCNet label file: a pickled list (IEMOCAP: 6 items, MOSI/MOSEI: 7)."""
    obj = safe_load(path)
    if isinstance(obj, tuple):
        obj = list(obj)
    if not isinstance(obj, list):
        raise UnsafePickleError(f"{path}: expected a pickled list, got {type(obj).__name__}")
    return obj
