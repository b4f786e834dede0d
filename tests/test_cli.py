"""The command line, end to end on tiny settings."""

import json

import pytest

from conftest import require_shared_data
from iteacnet.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("iteacnet", "cpmnet", "mmin", "temporal_mlp", "its", "quick", "local"):
        assert name in out


def test_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--set", "data.synthetic.num_dialogues=12",
                 "--set", "train.progress=false"]) == 0
    text = capsys.readouterr().out
    assert "SYNTHETIC" in text and "| ITEACNet[ITS TF3/NAS4]" in text
    for f in ("results.csv", "results.json", "report.md", "waf_vs_rate.png", "seed0/router.png",
              "seed0/model.safetensors", "seed0/config.json", "seed0/meta.json"):
        assert (out / f).is_file(), f
    rows = json.loads((out / "results.json").read_text())
    assert [r["rate"] for r in rows] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    # evaluate the saved checkpoint again: the same scores
    assert main(["evaluate", "--checkpoint", str(out / "seed0"), "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [r["waf"] for r in again] == [r["waf"] for r in rows]


def test_bad_override_is_a_clear_error(capsys):
    assert main(["train", "--set", "train.nope=1"]) == 2
    assert "unknown config field 'train.nope'" in capsys.readouterr().err
    assert main(["train", "--preset", "does-not-exist"]) == 2
    assert "no preset 'does-not-exist'" in capsys.readouterr().err


@pytest.mark.realdata
def test_data_inspect_on_real_mosi(capsys):
    root = require_shared_data("CMUMOSI")
    assert main(["data", "inspect", "--corpus", "cmumosi", "--root", str(root), "--text", "text-cnn-100",
                 "--audio", "audio-opensmile-73", "--visual", "video-3dcnn-100"]) == 0
    out = capsys.readouterr().out
    for s in ("93", "2,199", "100", "73", "1,284", "229", "686"):
        assert s in out, s


def test_params_prints_the_split_by_module(capsys):
    assert main(["params", "--set", "model.hidden=16", "--set", "model.heads=2", "--dims", "text=8,audio=4"]) == 0
    out = capsys.readouterr().out
    assert "teacher:" in out and "student:" in out and "router" in out and "blocks.audio" in out
    assert main(["params", "--dims", "text"]) == 2
    assert "modality=size" in capsys.readouterr().err
