"""benchmarks/stack_step.py runs end to end on the tiny synthetic preset and writes
well-formed figures (lone vs stacked steps). No timing thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stack_step_quick_writes_its_figures(tmp_path):
    out = tmp_path / "step.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stack_step.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["s_per_member_step"]) == {"lone", "one member", "stack 1", "stack 4"}
    assert all(v > 0 for v in res["s_per_member_step"].values())
    assert res["lone_over_stack"]["lone"] == 1.0
    assert res["meta"]["members"] == 4 and "s/member-step" in run.stdout
    assert set(res["ops_lone_over_vmap"]) == {"linear", "dropout", "attention"}
    assert all(v > 0 for v in res["ops_lone_over_vmap"].values()) and "ops alone" in run.stdout
