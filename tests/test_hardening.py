"""Hardening (issue 14): no bad input ends in a traceback or a silently wrong result, faults
lose nothing, the engine is free of the command line. Each case below was a reproduced
failure. `python tests/test_hardening.py` prints the table of docs/BAD-INPUTS.md."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest
import torch

from conftest import tiny_config
from gcnet_layout import write_mosi_like
from iteacnet.benchmark.grid import Cell, ResultStore, run_grid
from iteacnet.cli import main
from iteacnet.config import ExperimentConfig, check_fields, replace
from iteacnet.data.conversation import ConversationError, read_conversation_jsonl
from iteacnet.data.gcnet import CorpusError, load_gcnet_corpus
from iteacnet.data.loading import load_corpus
from iteacnet.data.safe_pickle import safe_load
from iteacnet.errors import CheckpointError, ConfigError, IncompleteResults, ResultsError, UserError
from iteacnet.evaluation.reports import read_rows
from iteacnet.inference import MAX_UTTERANCES, PredictError, Predictor
from iteacnet.presets import apply_overrides, list_presets, load_config
from iteacnet.training.checkpoint import read_checkpoint_files
from iteacnet.training.engine import fit, prepare

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures
@dataclass
class Run:
    cfg: ExperimentConfig
    folder: Path  # a finished checkpoint
    config_file: Path  # the run's config as a --config file


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("hard")
    cfg = tiny_config(epochs=1)
    fit(cfg, prepare(load_corpus(cfg.data), cfg), tmp / "ckpt")
    cfg.to_json(tmp / "cfg.json")
    return Run(cfg, tmp / "ckpt", tmp / "cfg.json")


def copy_ckpt(run: Run, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(run.folder, dst)
    return dst


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# --------------------------------------------------------------------------- a crafted label pickle
def test_shared_references_are_checked_once(tmp_path: Path) -> None:
    x: list = []
    for _ in range(40):  # 2**40 paths through 40 distinct lists
        x = [x, x]
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps(x, protocol=4))
    assert path.stat().st_size < 4000
    t0 = time.perf_counter()
    y = safe_load(path)
    assert time.perf_counter() - t0 < 2.0
    for _ in range(40):  # the same shape, sharing kept (comparing with == would walk 2**40 paths)
        assert len(y) == 2 and y[0] is y[1]
        y = y[0]
    assert y == []


# --------------------------------------------------------------------------- config validation
BAD_OVERRIDES = [
    ("train.epochs=-3", "train.epochs: expected an integer >= 1"),
    ("train.epochs=0", "train.epochs: expected an integer >= 1"),
    ("train.epochs=1.5", "train.epochs: expected an integer"),
    ("train.lr=NaN", "train.lr: expected a finite number"),
    ("train.lr=0", "train.lr: expected a number > 0"),
    ('train.protocol="xyz"', "train.protocol: expected one of 'ume', 'ime'"),
    ('train.batch_size="abc"', "train.batch_size: expected an integer"),
    ("train.batch_size=abc", "train.batch_size: expected an integer"),  # not JSON: kept as a string
    ("train.rate=1.5", "train.rate: expected a number in [0, 1)"),
    ('train.device="gpu"', "train.device: expected cpu, cuda"),
    ("train.progress=2", "train.progress: expected true or false"),
    ("model.heads=3", "model.heads: expected an integer >= 1 dividing model.hidden"),
    ("model.dropout=1.0", "model.dropout: expected a number in [0, 1)"),
    ('model.student_kind="RNN"', "model.student_kind: expected one of 'TF', 'NAS'"),
    ('model.routing="hard"', "model.routing: expected one of 'soft', 'top1'"),
    ("model.ecce.kernel=4", "model.ecce.kernel: expected an odd integer"),
    ("model.rec_weights=[1, -1]", "model.rec_weights: expected a list of a number >= 0"),
    ("model.mixers=[]", "model.mixers: expected a non-empty list"),
    ("model.baseline=3", "model.baseline: expected a mapping"),
    ("data.fold=-1", "data.fold: expected an integer >= 0"),
    ("data.val_fraction=1", "data.val_fraction: expected a number in [0, 1)"),
    ('data.selection="test"', "data.selection: expected one of 'validation', 'gcnet-compatible'"),
    ("data.synthetic.dims=[4, 4]", "data.synthetic.dims: expected a list of 3 values"),
    ("data.synthetic.max_len=2", "data.synthetic.max_len: expected an integer >= min_len"),
    ("eval.rates=[]", "eval.rates: expected a non-empty list"),
    ("eval.rates=[0.5, 1.0]", "eval.rates: expected a list of a number in [0, 1)"),
    ('eval.patterns=["tx"]', "eval.patterns: expected a list of modality letters"),
    ("data=5", "data: expected a mapping of DataConfig fields"),
    ("train.epochs", "not of the form section.field=value"),
    ("train.nope=1", "unknown config field 'train.nope'"),
    ("nope.x=1", "unknown config section 'nope'"),
    ("model.hidden=" + "[" * 100000, "nested too deeply"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES, ids=[o[:30] for o, _ in BAD_OVERRIDES])
def test_every_bad_override_names_its_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        apply_overrides(ExperimentConfig(), [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_fields_that_constrain_each_other_change_together() -> None:
    cfg = apply_overrides(ExperimentConfig(), ["model.hidden=60", "model.heads=4"])
    assert (cfg.model.hidden, cfg.model.heads) == (60, 4)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="train.epochs"):
        replace(tiny_config(), **{"train.epochs": 0})
    assert isinstance(replace(tiny_config(), **{"train.lr": 1}).train.lr, float)


def test_a_new_field_is_checked_by_its_annotation_alone() -> None:
    """A field added next to the others is type-checked without code of its own."""

    @dataclass(frozen=True)
    class Section:
        SECTION: ClassVar[str] = "train"
        patience: int = 0
        optimizer: Literal["adamw", "sgd"] = "adamw"
        ratio: float = 0.5

        def __post_init__(self) -> None:
            check_fields(self)

    with pytest.raises(ConfigError, match="train.patience: expected an integer"):
        Section(patience="3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="train.optimizer: expected one of 'adamw', 'sgd'"):
        Section(optimizer="adam")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="train.ratio: expected a finite number"):
        Section(ratio=float("inf"))


def test_config_files_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "train": {"epochs": 3,}\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.json: line 2 column .*malformed JSON"):
        load_config(None, str(bad), [])
    bad.write_text('{"train": {"epochs": "many"}}')
    with pytest.raises(ConfigError, match=r"bad\.json: train\.epochs: expected an integer"):
        load_config(None, str(bad), [])
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(None, str(bad), [])
    with pytest.raises(ConfigError, match="no config file at"):
        load_config(None, str(tmp_path / "absent.json"), [])


# --------------------------------------------------------------------------- checkpoints
def test_flipped_weight_bytes_are_detected(run: Run, tmp_path: Path) -> None:
    ckpt = copy_ckpt(run, tmp_path)
    w = ckpt / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-50] ^= 0xFF  # inside the last tensor: a valid file with wrong numbers
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        Predictor.from_checkpoint(ckpt)


@pytest.mark.parametrize("damage,message", [
    ("zero_std", r"standardization\.text\.std has a value <= 0"),
    ("nan_mean", r"standardization\.text\.mean must be 8 finite numbers"),
    ("short_std", r"standardization\.audio\.std must be 6 finite numbers"),
    ("no_spec", "'spec' must hold dims"),
    ("not_json", "meta.json: not valid JSON"),
    ("not_object", "meta.json: expected a JSON object"),
    ("missing", "meta.json is missing"),
])
def test_bad_meta_json_is_refused(run: Run, tmp_path: Path, damage: str, message: str) -> None:
    ckpt = copy_ckpt(run, tmp_path)
    path = ckpt / "meta.json"
    meta = json.loads(path.read_text())
    std = meta["standardization"]
    if damage == "zero_std":
        std["text"]["std"][0] = 0.0
    elif damage == "nan_mean":
        std["text"]["mean"][0] = float("nan")
    elif damage == "short_std":
        std["audio"]["std"] = std["audio"]["std"][:-1]
    elif damage == "no_spec":
        del meta["spec"]
    path.write_text(json.dumps(meta))
    if damage == "not_json":
        path.write_text("{")
    elif damage == "not_object":
        path.write_text("[]")
    elif damage == "missing":
        path.unlink()
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint_files(ckpt)


def test_truncated_foreign_and_mismatched_checkpoints(run: Run, tmp_path: Path) -> None:
    ckpt = copy_ckpt(run, tmp_path)
    meta = json.loads((ckpt / "meta.json").read_text())
    del meta["weights_sha256"]  # as an older checkpoint: the loader itself must notice
    (ckpt / "meta.json").write_text(json.dumps(meta))
    w = ckpt / "model.safetensors"
    good = w.read_bytes()
    w.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Predictor.from_checkpoint(ckpt)
    w.write_bytes(b"PK\x03\x04 a zip, not weights")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Predictor.from_checkpoint(ckpt)
    w.write_bytes(good)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model"]["hidden"], cfg["model"]["heads"] = 32, 4  # config.json of another run
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        Predictor.from_checkpoint(ckpt)
    cfg["train"]["epochs"] = -1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: train\.epochs"):
        Predictor.from_checkpoint(ckpt)


# --------------------------------------------------------------------------- sizes
def forged_npy(path: Path, shape: tuple[int, ...]) -> Path:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    path.write_bytes(buf.getvalue() + b"\0" * 64)
    return path


def test_npy_header_claiming_too_much_is_refused_by_name(tmp_path: Path) -> None:
    layout = write_mosi_like(tmp_path / "MOSI")
    bad = forged_npy(layout.file("text", layout.utterances[0]), (10**11,))
    with pytest.raises(CorpusError, match=rf"{bad.name}.*claims shape \(100000000000,\)"):
        load_gcnet_corpus("cmumosi", layout.root, layout.folders)
    conv = tmp_path / "conv.jsonl"
    conv.write_text(json.dumps({"id": "u1", "features": {"text": "big.npy"}}) + "\n")
    forged_npy(tmp_path / "big.npy", (10**6, 10**5))
    with pytest.raises(ConversationError, match=r"conv\.jsonl:1.*big\.npy.*claims shape"):
        read_conversation_jsonl(conv)


def test_overlong_conversation_is_refused_before_any_work(run: Run) -> None:
    from iteacnet.models.base import ModelSpec
    from iteacnet.training.frameworks import build_method

    cfg = replace(run.cfg, **{"model.student_kind": "TF"})  # no temporal_mlp to bound the length
    _, meta = read_checkpoint_files(run.folder)
    spec = ModelSpec(dims=(("text", 8), ("audio", 6), ("visual", 5)), num_outputs=4, task="classification",
                     num_speakers=2)
    p = Predictor(build_method(spec, cfg.model), spec, cfg, meta)
    assert p.max_utterances == MAX_UTTERANCES
    conv = [{"id": str(i), "speaker": "A", "features": {"text": [0.0] * 8}} for i in range(MAX_UTTERANCES + 1)]
    with pytest.raises(PredictError, match=f"has {MAX_UTTERANCES + 1} utterances; this model handles at most"):
        p.predict_conversation(conv)


# --------------------------------------------------------------------------- resume under a changed config
def test_resume_with_a_changed_config_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3)
    data = prepare(load_corpus(cfg.data), cfg)
    fit(cfg, data, tmp_path, stop_after=1)
    with pytest.raises(CheckpointError, match=r"another configuration \(train\.lr: 0\.0005 -> 0\.01\)"):
        fit(replace(cfg, **{"train.lr": 0.01}), data, tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.hidden: 16 -> 32"):
        fit(replace(cfg, **{"model.hidden": 32}), data, tmp_path)
    fit(replace(cfg, **{"train.progress": True, "name": "renamed"}), data, tmp_path, stop_after=1)  # cosmetic: resumes


def test_cli_refuses_a_changed_config_unless_restart(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    base = ["train", "--config", str(run.config_file), "--out", out, "--epochs", "2", "--threads", "1"]
    # an interrupted run leaves seed0/last; simulate by training 1 epoch of a 2-epoch run
    cfg = replace(run.cfg, **{"train.epochs": 2})
    fit(cfg, prepare(load_corpus(cfg.data), cfg), tmp_path / "out" / "seed0", stop_after=1)
    assert main([*base, "--set", "train.lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.0005 -> 0.01" in err and "--restart" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--set", "train.lr=0.01", "--restart"]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["threads"] for r in rows} == {1}  # each row records its thread count


def test_benchmark_refuses_another_base_config(tmp_path: Path) -> None:
    from iteacnet.cli import _same_base_or_restart

    cfg = tiny_config()
    (tmp_path / "grid.json").write_text(json.dumps({"base": cfg.to_dict()}))
    store = ResultStore(tmp_path / "cells.jsonl")
    store.path.write_text('{"cell": "a", "rows": []}\n')
    _same_base_or_restart(tmp_path, store, replace(cfg, **{"train.progress": True}), restart=False)
    older = cfg.to_dict()
    del older["train"]["patience"]  # written before the field existed: it counts at its default
    (tmp_path / "grid.json").write_text(json.dumps({"base": older}))
    _same_base_or_restart(tmp_path, store, cfg, restart=False)
    with pytest.raises(ResultsError, match=r"train\.epochs: 2 -> 5.*--restart"):
        _same_base_or_restart(tmp_path, store, replace(cfg, **{"train.epochs": 5}), restart=False)
    _same_base_or_restart(tmp_path, store, replace(cfg, **{"train.epochs": 5}), restart=True)
    assert not store.path.exists() and list(tmp_path.glob("cells.jsonl.*.old"))


# --------------------------------------------------------------------------- the results file
def _cell(i: int) -> Cell:
    return Cell(f"c{i}", "iteacnet", "synthetic", "ume", tiny_config().to_dict())


def test_torn_tail_is_cut_before_appending(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "cells.jsonl")
    store.add(_cell(0), [{"waf": 1.0}])
    with store.path.open("a") as f:
        f.write('{"cell": "c1", "rows": [{"wa')  # the disk filled up mid-line
    with store:
        store.add(_cell(2), [{"waf": 3.0}])
    lines = store.path.read_text().splitlines()
    assert [json.loads(line)["cell"] for line in lines] == ["c0", "c2"]  # every line parses
    assert set(store.done()) == {"c0", "c2"}


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "cells.jsonl")
    with store:
        with pytest.raises(ResultsError, match=f"in use by process {os.getpid()}"):
            ResultStore(tmp_path / "cells.jsonl").open()
    with ResultStore(tmp_path / "cells.jsonl"):  # released on close
        pass


def test_a_cell_recorded_twice_counts_once(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "cells.jsonl")
    for _ in range(2):  # two runs on one --out before the lock existed
        store.add(_cell(0), [{"method": "iteacnet", "waf": 1.0}, {"method": "iteacnet", "waf": 2.0}])
    assert len(read_rows(store.path)) == 2 and len(store.done()) == 1


def test_grid_table_is_checked_against_the_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import iteacnet.benchmark.executors as executors

    monkeypatch.setattr(executors, "run_cells", lambda cells, group=None: [[{"cell": c.id}] for c in cells])
    store = ResultStore(tmp_path / "cells.jsonl")
    monkeypatch.setattr(store, "add", lambda cell, rows: None)  # a write that got lost
    with pytest.raises(IncompleteResults, match="2 of 2 cells have no record"):
        run_grid([_cell(0), _cell(1)], store, progress=False)


WORKER_DRIVER = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from iteacnet.benchmark.executors import _init_worker
def pid_then_sleep():
    return os.getpid()
if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(1, os.getpid())) as pool:
        print(pool.submit(pid_then_sleep).result(), flush=True)
        time.sleep(60)
"""


def test_grid_workers_die_with_the_driver(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(WORKER_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        worker = int(driver.stdout.readline())  # type: ignore[union-attr]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.1)
        assert not _alive(worker), f"worker {worker} outlived its driver"
    finally:
        driver.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie waiting for its reaper is dead too
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")


# --------------------------------------------------------------------------- kill during a checkpoint write
def test_crash_between_state_and_manifest_resumes_exactly(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=4)
    data = prepare(load_corpus(cfg.data), cfg)
    full = fit(cfg, data, tmp_path / "a")
    fit(cfg, data, tmp_path / "b", stop_after=2)
    last = tmp_path / "b" / "last"
    info = json.loads((last / "info.json").read_text())
    assert info["state_file"] == "state-1.safetensors" and info["epoch"] == 1
    # killed after writing epoch 2's state but before its manifest, and mid-write of a temporary
    shutil.copy(last / "state-1.safetensors", last / "state-2.safetensors")
    pid = dead_pid()
    (last / f".state-3.safetensors.{pid}.tmp").write_bytes(b"half")
    (tmp_path / "b" / f".model.safetensors.{pid}.tmp").write_bytes(b"half")  # the final checkpoint's
    (tmp_path / "b" / f".model.safetensors.{os.getppid()}.tmp").write_bytes(b"another live writer")
    resumed = fit(cfg, data, tmp_path / "b")
    assert resumed.history == full.history  # resumed from epoch 1's manifest, not one off
    assert sorted(p.name for p in last.iterdir()) == ["info.json", "state-3.safetensors"]
    assert sorted(p.name for p in (tmp_path / "b").glob(".*.tmp")) == [f".model.safetensors.{os.getppid()}.tmp"]


def test_damaged_training_state_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3)
    data = prepare(load_corpus(cfg.data), cfg)
    fit(cfg, data, tmp_path, stop_after=1)
    state = tmp_path / "last" / "state-0.safetensors"
    state.write_bytes(state.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="checksum does not match"):
        fit(cfg, data, tmp_path)


# --------------------------------------------------------------------------- the command line
@dataclass
class Case:
    name: str
    argv: Callable[[Run, Path], list[str]]
    message: str  # a fragment of the one-line error
    code: int = 2


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _ckpt_with(run: Run, tmp: Path, name: str, content: bytes | None) -> str:
    ckpt = copy_ckpt(run, tmp)
    if content is None:
        (ckpt / name).unlink()
    else:
        (ckpt / name).write_bytes(content)
    return str(ckpt)


def _results(tmp: Path) -> Path:
    rows = [{"variant": v, "corpus": "c", "protocol": "ume", "seed": 0, "rate": 0.0, "waf": 50.0} for v in "ab"]
    return _write(tmp / "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def _conv(run: Run, tmp: Path, text: str) -> list[str]:
    return ["predict", "--checkpoint", str(run.folder), "--input", str(_write(tmp / "c.jsonl", text))]


CLI_CASES = [
    Case("--set without =", lambda r, t: ["train", "--set", "train.epochs"], "not of the form section.field=value"),
    Case("--set bad type", lambda r, t: ["train", "--set", "train.batch_size=abc"], "train.batch_size: expected an integer"),
    Case("--set NaN", lambda r, t: ["train", "--set", "train.lr=NaN"], "train.lr: expected a finite number"),
    Case("--epochs 0", lambda r, t: ["train", "--epochs", "0"], "train.epochs: expected an integer >= 1"),
    Case("--epochs -3", lambda r, t: ["train", "--epochs", "-3"], "train.epochs: expected an integer >= 1"),
    Case("--config malformed", lambda r, t: ["train", "--config", str(_write(t / "c.json", "{\n]"))], "line 2 column 1: malformed JSON"),
    Case("--config absent", lambda r, t: ["train", "--config", str(t / "nope.json")], "no config file at"),
    Case("--preset unknown", lambda r, t: ["train", "--preset", "nope"], "no preset 'nope'"),
    Case("--seeds abc", lambda r, t: ["train", "--seeds", "a,b"], "--seeds takes comma-separated integers"),
    Case("--threads 0", lambda r, t: ["train", "--threads", "0"], "--threads must be >= 1"),
    Case("unknown method", lambda r, t: ["params", "--set", 'model.method="nope"'], "unknown method 'nope'"),
    Case("unknown corpus", lambda r, t: ["data", "inspect", "--corpus", "meld", "--root", str(t)], "unknown corpus 'meld'"),
    Case("corpus without root", lambda r, t: ["data", "inspect", "--corpus", "cmumosi"], "needs data.root"),
    Case("missing label file", lambda r, t: ["data", "inspect", "--corpus", "cmumosi", "--root", str(t), "--text", "x"],
         "label file not found"),
    Case("evaluate: not a checkpoint", lambda r, t: ["evaluate", "--checkpoint", str(t)], "not an iteacnet checkpoint"),
    Case("evaluate: truncated weights", lambda r, t: ["evaluate", "--checkpoint", _ckpt_with(r, t, "model.safetensors", b"\x10\x00")],
         "checksum does not match"),
    Case("evaluate: meta.json missing", lambda r, t: ["evaluate", "--checkpoint", _ckpt_with(r, t, "meta.json", None)],
         "meta.json is missing"),
    Case("evaluate: config.json malformed", lambda r, t: ["evaluate", "--checkpoint", _ckpt_with(r, t, "config.json", b"{")],
         "config.json: not valid JSON"),
    Case("predict: 100k-deep JSON line", lambda r, t: _conv(r, t, "[" * 100000 + "]" * 100000 + "\n"), "c.jsonl:1: JSON nested too deeply"),
    Case("predict: malformed line", lambda r, t: _conv(r, t, '{"id": "u1",\n'), "c.jsonl:1: malformed JSON"),
    Case("predict: NaN feature", lambda r, t: _conv(r, t, '{"id": "u1", "speaker": "A", "features": {"text": [NaN]}}\n'),
         "c.jsonl:1: non-finite number NaN"),
    Case("predict: wrong dimension", lambda r, t: _conv(r, t, '{"id": "u1", "speaker": "A", "features": {"text": [1, 2]}}\n'),
         "text feature has dimension 2, the model expects 8"),
    Case("predict: output suffix", lambda r, t: [*_conv(r, t, "{}\n"), "--output", str(t / "p.txt")], "--output must end in .json or .csv"),
    Case("predict: input absent", lambda r, t: ["predict", "--checkpoint", str(r.folder), "--input", str(t / "none.jsonl")], "no such file"),
    Case("report: absent", lambda r, t: ["report", str(t / "none.jsonl")], "no results file at"),
    Case("report: malformed JSON", lambda r, t: ["report", str(_write(t / "r.json", "{"))], "not a results JSON"),
    Case("report: empty JSONL", lambda r, t: ["report", str(_write(t / "r.jsonl", "\n"))], "holds no result rows"),
    Case("report: --where without --paired", lambda r, t: ["report", str(_results(t)), "--where", "seed=0"],
         "--where and --metric apply to --paired A B only"),
    Case("report: unknown --metric", lambda r, t: ["report", str(_results(t)), "--paired", "a", "b", "--metric", "nope"],
         "no row has a 'nope' column; columns here:"),
    Case("extract audio: no such folder", lambda r, t: ["extract", "audio", "--folder", str(t / "none"), "--out", str(t / "f")],
         "audio: AudioListError:"),
    Case("benchmark: no grid", lambda r, t: ["benchmark", "--config", str(r.config_file)], "has no `grid` section"),
    Case("benchmark: bad grid", lambda r, t: ["benchmark", "--config", str(_write(t / "g.json", '{"grid": {"variants": ["x"], "corpora": {"s": {}}}}'))],
         "unknown method variant 'x'"),
    Case("benchmark: unknown protocol", lambda r, t: ["benchmark", "--quick", "--protocols", "xyz", "--out", str(t)],
         "grid protocols must be some of ['ume', 'ime', 'complete'], got ['xyz']"),
    Case("benchmark: unknown table", lambda r, t: ["benchmark", "--quick", "--tables", "9", "--out", str(t)],
         "no variant belongs to table 9; tables: 1, 2, 3, 4"),
    Case("train: conversations over model.max_len",
         lambda r, t: ["train", "--preset", "quick", "--epochs", "1", "--set", "model.max_len=2", "--out", str(t)],
         "model.max_len is 2, but conversation"),
    Case("train: a device not here", lambda r, t: ["train", "--set", 'train.device="cuda:99"', "--out", str(t)],
         "train.device is 'cuda:99', but this machine"),
    Case("extract: transcripts absent", lambda r, t: ["extract", "text", "--out", str(t / "f"), "--transcripts", str(t / "none.jsonl")],
         "No such file or directory"),
    Case("extract: both sources", lambda r, t: ["extract", "text", "--out", str(t), "--label-file", "a", "--transcripts", "b"],
         "give exactly one of --label-file or --transcripts"),
    Case("extract: malformed transcripts", lambda r, t: ["extract", "text", "--out", str(t / "f"), "--transcripts", str(_write(t / "t.jsonl", "{\n"))],
         "t.jsonl:1: malformed JSON"),
]


def run_case(case: Case, run: Run, tmp: Path, capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str]:
    """Run one case; (exit status, stderr)."""
    argv = case.argv(run, tmp)
    if capsys is None:
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        return code, err.getvalue()
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.name)
def test_user_errors_are_one_line_and_exit_2(case: Case, run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if case.name.startswith("extract: malformed"):
        pytest.importorskip("sentence_transformers")
    code, err = run_case(case, run, tmp_path, capsys)
    assert code == case.code, err
    assert case.message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--epochs", "0", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err


def test_internal_errors_exit_1_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import iteacnet.cli as cli

    def boom(args: object) -> int:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(cli, "cmd_list", boom)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: a bug over two lines)" in err and "--debug" in err


def test_thread_count_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from iteacnet.cli import available_cores, set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's per-rank setting is kept
        assert set_threads(argparse.Namespace(threads=None, command="train")) == 1 == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_threads(argparse.Namespace(threads=None, command="benchmark")) == available_cores()
        assert torch.get_num_threads() == 1  # the benchmark leaves them to its workers
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- presets travel
def test_presets_are_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert {"quick", "cmumosi", "iemocap4", "paper-mosi"} <= set(list_presets())
    assert load_config("cmumosi", None, []).data.corpus == "cmumosi"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cmumosi.json").write_text('{"name": "mine", "data": {"corpus": "cmumosi"}}')
    assert load_config("cmumosi", None, []).name == "mine"  # the user's own file counts first


def test_wheel_carries_the_presets(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a clean copy: no build/ or egg-info of other runs
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".ci-venv", "runs", "build", "*.egg-info", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("iteacnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for p in ("quick", "cmumosi", "iemocap4", "iemocap6", "paper-mosi", "paper-iemocap"):
        assert f"iteacnet/presets/{p}.json" in names, p
    # installed (without its dependencies, which this interpreter has) and run from another folder
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    listed = subprocess.run([sys.executable, "-m", "iteacnet.cli", "list"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "presets:    cmumosi, iemocap4, iemocap6, paper-iemocap, paper-mosi, quick" in listed.stdout
    override = 'data.root="/data/MOSI"'
    script = f"import iteacnet.presets as p; print(p.load_config('cmumosi', None, [{override!r}]).data.root, p.__file__)"
    where = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    root, file = where.stdout.split()
    assert root == "/data/MOSI" and file.startswith(str(target))  # the wheel's copy, not the source tree


# --------------------------------------------------------------------------- dependencies point one way
def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iteacnet"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("iteacnet")}
    return out


def _modules() -> Iterator[tuple[str, set[str]]]:
    src = ROOT / "src" / "iteacnet"
    for p in sorted(src.rglob("*.py")):
        yield ".".join(("iteacnet", *p.relative_to(src).with_suffix("").parts)), _imports(p)


def _under(mod: str, *packages: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in packages)


BASE = ("iteacnet.config", "iteacnet.errors", "iteacnet.files", "iteacnet.registry", "iteacnet.presets",
        "iteacnet.metrics", "iteacnet.masking")
ABOVE_TRAINING = ("iteacnet.cli", "iteacnet.evaluation.protocols", "iteacnet.evaluation.reports",
                  "iteacnet.benchmark.grid", "iteacnet.benchmark.executors", "iteacnet.inference")


def test_dependencies_point_one_way() -> None:
    wrong = []
    for mod, deps in _modules():
        for dep in deps:
            if _under(dep, "iteacnet.cli") and not _under(mod, "iteacnet.cli"):
                wrong.append((mod, dep))
            if _under(mod, "iteacnet.models") and _under(dep, "iteacnet.data", "iteacnet.training", "iteacnet.evaluation",
                                                          "iteacnet.benchmark", "iteacnet.inference", "iteacnet.presets"):
                wrong.append((mod, dep))
            if _under(mod, "iteacnet.data") and _under(dep, "iteacnet.models", "iteacnet.training", "iteacnet.evaluation",
                                                        "iteacnet.benchmark", "iteacnet.inference"):
                wrong.append((mod, dep))
            if _under(mod, "iteacnet.training") and mod != "iteacnet.training.distributed" and _under(dep, *ABOVE_TRAINING):
                wrong.append((mod, dep))
            if _under(mod, *BASE) and not _under(dep, *BASE):
                wrong.append((mod, dep))
    assert not wrong, wrong


def test_distributed_does_not_import_the_cli() -> None:
    code = "import sys, iteacnet.training.distributed; assert 'iteacnet.cli' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_a_device_this_machine_lacks_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from iteacnet.errors import DeviceError
    from iteacnet.training.engine import check_device

    check_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="has no cuda device"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(DeviceError, match=r"has 2 cuda device\(s\): cuda:0 to cuda:1"):
        check_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = replace(tiny_config(epochs=1), **{"train.device": "cuda"})
    with pytest.raises(DeviceError):  # the engine checks too: a grid worker or a script calls it directly
        fit(cfg, prepare(load_corpus(cfg.data), cfg))


def test_evaluate_scores_a_gpu_checkpoint_on_a_machine_without_one(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import iteacnet.training.checkpoint as checkpoint

    read = checkpoint.read_checkpoint_files

    def trained_on_cuda(folder: Path) -> tuple[ExperimentConfig, dict]:
        cfg, meta = read(folder)
        return replace(cfg, **{"train.device": "cuda"}), meta

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(checkpoint, "read_checkpoint_files", trained_on_cuda)
    assert main(["evaluate", "--checkpoint", str(run.folder), "--out", str(tmp_path / "a")]) == 0
    assert "trained on cuda, which this machine lacks; scoring on cpu" in capsys.readouterr().err
    assert (tmp_path / "a" / "report.md").exists()
    asked = ["evaluate", "--checkpoint", str(run.folder), "--out", str(tmp_path / "b"), "--set", 'train.device="cuda"']
    assert main(asked) == 2  # asked for by name: not replaced
    assert "train.device is 'cuda', but this machine" in capsys.readouterr().err


def test_user_error_classes_share_one_base() -> None:
    from iteacnet.data.extract import ExtractUnavailable, TranscriptError
    from iteacnet.data.safe_pickle import UnsafePickleError
    from iteacnet.errors import DeviceError

    for cls in (CorpusError, ConversationError, PredictError, UnsafePickleError, TranscriptError, ExtractUnavailable,
                ConfigError, CheckpointError, ResultsError, DeviceError):
        assert issubclass(cls, UserError), cls


# --------------------------------------------------------------------------- the docs table
if __name__ == "__main__":  # python tests/test_hardening.py > table (docs/BAD-INPUTS.md)
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tiny_config(epochs=1)
        fit(cfg, prepare(load_corpus(cfg.data), cfg), tmp / "ckpt")
        cfg.to_json(tmp / "cfg.json")
        r = Run(cfg, tmp / "ckpt", tmp / "cfg.json")
        overrides = [Case(f"`--set {o[:40]}{'…' if len(o) > 40 else ''}`", lambda r, t, o=o: ["train", "--set", o], m)  # type: ignore[misc]
                     for o, m in BAD_OVERRIDES]
        print("| input | exit | message (stderr) |\n|---|---|---|")
        for i, case in enumerate(CLI_CASES + overrides):
            t = tmp / f"case{i}"
            t.mkdir()
            code, err = run_case(case, r, t)
            msg = err.strip().replace(d, "…").replace("|", "\\|")
            print(f"| {case.name} | {code} | `{msg}` |")
