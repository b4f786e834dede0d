"""Whole-or-nothing file writes, shared by checkpoints, extracted features and predictions."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which is then renamed over it:
    readers see the old file or the whole new one, never half; no temporary survives."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def check_npy_size(path: Path) -> None:
    """Refuse an `.npy` whose header claims more data than the file holds, before numpy
    allocates it (a 1 KB file may claim 10**11 values); ValueError with the figures.
    Files that are not plain `.npy` (an `.npz`, garbage) are left to `np.load` to judge."""
    import numpy as np

    fmt = np.lib.format
    with Path(path).open("rb") as f:
        if f.read(6) != fmt.MAGIC_PREFIX:
            return
        f.seek(0)
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read(f)
        claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        held = f.seek(0, 2) - len(fmt.MAGIC_PREFIX) - 2  # an upper bound of the data bytes
    if claimed > held:
        raise ValueError(f"its header claims shape {tuple(shape)} of {dtype} ({claimed:,} bytes), "
                         f"but the file holds {held:,} bytes: truncated or forged")
