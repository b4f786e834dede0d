"""Shared fixtures: tiny configurations that exercise the real code paths in seconds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from iteacnet.config import DataConfig, ExperimentConfig, ModelConfig, SyntheticConfig, TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(script: str) -> ModuleType:
    """A script of benchmarks/ (not a package) imported as module `bench_<name>`."""
    name = "bench_" + Path(script).stem
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def tiny_config(**train: object) -> ExperimentConfig:
    """A synthetic corpus and a model small enough for a few epochs in a second."""
    return ExperimentConfig(
        name="tiny",
        data=DataConfig(corpus="synthetic", synthetic=SyntheticConfig(num_dialogues=16, min_len=4, max_len=9, dims=(8, 6, 5))),
        model=ModelConfig(hidden=16, heads=2, max_len=16, dropout=0.1, input_dropout=0.1),
        train=TrainConfig(**{"epochs": 2, "batch_size": 4, "progress": False, **train}),  # type: ignore[arg-type]
        eval=ExperimentConfig().eval.__class__(rates=(0.0, 0.3, 0.7)),
    )


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture(autouse=True)
def _private_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _session_cache: Path) -> None:
    # Corpus caches of tests go to a session folder, not the user's ~/.cache; tests on the
    # real data keep the user's cache (building it takes a while).
    if request.node.get_closest_marker("realdata") is None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(_session_cache))


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny models run fastest on one thread, and CI has two cores; the CLI's default
    # (`--threads` absent) follows OMP_NUM_THREADS.
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def lengths_to_valid(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool: the first lengths[b] positions of row b are real utterances."""
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


def require_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data is absent on this machine)")
    return path
