"""benchmarks/gcnet_official.py: the patch list applies to text shaped like the official files
and refuses text that differs; the timing lines the patches print are the ones it parses.
The official code itself is not here (it is not ours to commit), so nothing runs it."""

from __future__ import annotations

import contextlib
import io
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import load_benchmark


@pytest.fixture(scope="module")
def mod():
    return load_benchmark("gcnet_official.py")


def fake_official(root: Path, patch_list, drop: int | None = None) -> None:
    """A folder whose files hold each patch's expected text `count` times, among other lines."""
    files: dict[str, str] = {}
    for i, p in enumerate(patch_list):
        n = p.count - (1 if i == drop else 0)
        files[p.path] = files.get(p.path, "# official line\n") + (p.old + "\n# between\n") * n
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_patches_apply_to_the_expected_text(mod, tmp_path):
    plist = mod.patches(Path("/data/CMUMOSI"))
    fake_official(tmp_path / "src", plist)
    mod.apply_patches(tmp_path / "src", tmp_path / "dst", plist)
    config = (tmp_path / "dst" / "config.py").read_text()
    train = (tmp_path / "dst" / "gcnet" / "train_gcnet.py").read_text()
    assert "'/data/CMUMOSI'" in config and mod.OFFICIAL_DATA_DIR not in config
    assert "np.int)" not in train and train.count(".astype(int)") == 4
    assert "torch.manual_seed(args.seed)" in train and "sys.exit(0)" in train
    assert train.count("time.perf_counter()") == 3  # t0, t1, and the print's end of epoch
    assert (tmp_path / "src" / "gcnet" / "train_gcnet.py").read_text().count("[bench]") == 0  # the source is untouched
    assert all(p.reason and p.reason.split(" ")[0][0] in "PNSTE" for p in plist)  # every patch says why


@pytest.mark.parametrize("drop", [1, 3])  # one np.int too few; the timer's anchor line missing
def test_a_patch_that_does_not_match_exactly_fails(mod, tmp_path, drop):
    plist = mod.patches(Path("/data"))
    fake_official(tmp_path / "src", plist, drop=drop)
    with pytest.raises(mod.PatchError, match="expected"):
        mod.apply_patches(tmp_path / "src", tmp_path / "dst", plist)


def test_the_printed_timing_line_is_the_one_parsed(mod):
    (t1,) = [p for p in mod.patches(Path("/d")) if "print the epoch" in p.reason]
    added = textwrap.dedent(t1.new[len(t1.old):])
    buf = io.StringIO()
    scope = {"epoch": 0, "_bench_t0": time.perf_counter() - 2.0, "_bench_t1": time.perf_counter() - 0.5,
             "time": time, "torch": torch}
    with contextlib.redirect_stdout(buf):
        exec(added, scope)
    out = "Model have 1234 paramerters in total\nepoch:1; train_fscore:50.00%\n" + buf.getvalue()
    res = mod.parse_official(out)
    assert res["parameters"] == 1234
    (e,) = res["epochs"]
    assert e["epoch"] == 1 and e["threads"] == torch.get_num_threads()
    assert 1.4 < e["train_s"] < e["epoch_s"] < 3.0


def test_summary_drops_the_warmup_epoch_and_divides_by_official(mod):
    def run(*secs):
        return {"parameters": 1, "epochs": [{"train_s": s, "epoch_s": 2 * s} for s in secs]}

    s = mod.summarize({"official": [run(9.0, 4.0, 4.0)], "its": [run(9.0, 2.0), run(9.0, 2.0)]})
    assert s["official"]["train_s"] == 4.0 and s["its"]["epoch_s"] == 4.0 and s["its"]["epochs_counted"] == 2
    assert s["its"]["speedup_train_s"] == 2.0 and s["official"]["speedup_epoch_s"] == 1.0
