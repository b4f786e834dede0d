"""benchmarks/load_corpus.py at tiny sizes: both layouts load the same corpus, figures well-formed.

No timing thresholds: the figures depend on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import load_benchmark
from iteacnet.data.table import load_table_corpus


def _module():
    return load_benchmark("load_corpus.py")


def test_layouts_give_the_same_corpus(tmp_path: Path) -> None:
    mod = _module()
    mod.write_corpus(tmp_path / "m", 60, [5, 3], per_file=False)
    mod.write_corpus(tmp_path / "f", 60, [5, 3], per_file=True)
    a, b = load_table_corpus(tmp_path / "m"), load_table_corpus(tmp_path / "f")
    assert a.num_utterances == 60 and a.utterance_ids == b.utterance_ids and a.dims == {"text": 5, "audio": 3}
    for m in a.modalities:
        np.testing.assert_array_equal(a.features[m], b.features[m])


def test_script_writes_figures(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fig.json"
    assert _module().main(["--utterances", "80", "--per-file-utterances", "40", "--repeats", "1", "--out", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["matrix"]["utterances"] == 80 and fig["per_file"]["utterances"] == 40
    assert fig["per_file"]["extrapolated"] is True and fig["per_file"]["load_s_at_full_size"] >= 0
    assert "EXTRAPOLATED" in capsys.readouterr().out
