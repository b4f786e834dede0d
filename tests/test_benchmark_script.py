"""benchmarks/speed.py runs end to end at tiny sizes and writes well-formed figures.

No timing thresholds: the figures depend on the machine. The naive reference it compares
against must compute what ITEACNet computes, which is checked here too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from conftest import load_benchmark
from iteacnet.models.ecce import ECCE

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def _speed_module() -> ModuleType:
    return load_benchmark("speed.py")


@pytest.mark.parametrize("local", [True, False])
def test_naive_ecce_matches_ecce(local: bool) -> None:
    speed = _speed_module()
    torch.manual_seed(0)
    e = ECCE(16, 4, kernel=3, max_span=2, local=local)
    naive = speed.NaiveECCE.from_ecce(e)
    h = torch.randn(2, 7, 16)
    valid = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    torch.testing.assert_close(naive(h, valid), e(h, valid))


def test_padded_batches_all_have_the_corpus_max_length() -> None:
    speed = _speed_module()
    corpus = speed.make_corpus(["Ses01F_a", "Ses01F_b", "Ses05F_c"], [3, 5, 2], (4, 3, 2), seed=0)
    batches = list(speed.padded_iterate(9)(corpus, [0, 1, 2], 2, torch.Generator().manual_seed(0)))
    assert [b.valid.shape for b in batches] == [torch.Size([2, 9]), torch.Size([1, 9])]
    assert sorted(int(b.valid.sum()) for b in batches) in ([2, 8], [3, 7], [5, 5])


@pytest.mark.slow
def test_quick_run_writes_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--epochs-warmup", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert set(res) >= {"meta", "sanity", "throughput", "memory", "long_conversation"}
    assert res["meta"]["quick"] is True and res["meta"]["utterances"] > 0
    for phase in ("train_utt_per_s", "inference_utt_per_s"):
        fig = res["throughput"][phase]
        assert fig["optimized"] > 0 and fig["naive"] > 0 and fig["speedup"] > 0
    for phase in ("train", "inference"):
        mem = res["memory"][phase]
        for path in ("optimized", "naive"):
            assert mem[path]["peak_abs_mb"] > 0 and mem[path]["peak_delta_mb"] >= 0
        assert mem["naive_over_optimized"] >= 0
    assert res["memory"]["train"]["optimized"]["peak_delta_mb"] > 0
    long = res["long_conversation"]
    assert long["utterances"] > 0 and long["peak_delta_mb"] > 0 and isinstance(long["pass"], bool)
    assert res["long_conversation_mmap"]["utterances"] == long["utterances"]
    assert res["sanity"]["student_logits_max_abs_diff"] < 1e-3
    assert "optimized" in proc.stdout and ("PASS" in proc.stdout or "FAIL" in proc.stdout)


@pytest.mark.slow
def test_ddp_equivalence_script_end_to_end(tmp_path: Path) -> None:
    """`iteacnet train` against `torchrun ... train --distributed` (2 gloo ranks), dropout
    off: the script itself asserts the results agree (exit 1 otherwise)."""
    script = SCRIPT.parent / "ddp_equivalence.py"
    out = tmp_path / "eq"
    done = subprocess.run(
        [sys.executable, str(script), "--preset", "quick", "--set", "train.epochs=1", "--seeds", "0",
         "--threads", "1", "--no-dropout", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nproc"] == 2 and summary["dropout"] is False
    assert max(summary["max_abs_diff"].values()) <= 1e-4
    assert json.loads((out / "ddp2" / "results.json").read_text())[0]["world_size"] == 2
