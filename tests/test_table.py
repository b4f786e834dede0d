"""Corpus folders (corpus.json + CSV/JSONL table + features): loading, speakers, splits, errors,
and a corpus given only as files that trains, evaluates, runs in the grid and predicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import tiny_config
from iteacnet.cli import main
from iteacnet.config import replace
from iteacnet.data.assemble import speakers_for_training
from iteacnet.data.corpus import CorpusError
from iteacnet.data.loading import load_corpus
from iteacnet.data.table import TableError, load_table_corpus
from iteacnet.evaluation.splits import make_split

CLASSES = ["neutral", "joy", "anger"]
DIMS = {"text": 6, "audio": 4}


def write_folder(
    root: Path,
    dialogues: int = 12,
    fmt: str = "csv",
    split: str = "standard",
    speakers_per_dialogue: int = 2,
    desc: dict[str, Any] | None = None,
    audio_as_folder: bool = True,
    seed: int = 0,
) -> tuple[Path, list[dict[str, Any]]]:
    """A small classification corpus folder: text as a matrix, audio as GCNet-layout files.

    Rows are written shuffled (the loader orders them by dialogue id and `order`); names
    are unique per dialogue, so a many-speaker corpus.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for d in range(dialogues):
        did = f"dlg{d:02d}"
        part = ("train", "train", "train", "train", "valid", "test")[d % 6] if split == "standard" else str(d % 3 + 1)
        for t in range(3 + d % 4):
            rows.append({"dialogue": did, "id": f"{did}_u{t}", "order": t,
                         "speaker": f"{did}-spk{t % speakers_per_dialogue}",
                         "label": CLASSES[int(rng.integers(0, 3))], "split": part, "text": f"line {t}, \"quoted\""})
    root.mkdir(parents=True, exist_ok=True)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    if fmt == "csv":
        with (root / "utterances.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(shuffled)
    else:
        (root / "utterances.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shuffled))
    ids = [r["id"] for r in shuffled]
    (root / "features").mkdir(exist_ok=True)
    np.save(root / "features" / "text.npy", rng.normal(size=(len(ids), DIMS["text"])).astype(np.float32))
    (root / "features" / "text.ids.txt").write_text("\n".join(ids) + "\n")
    features: dict[str, Any] = {"text": {"matrix": "features/text.npy", "ids": "features/text.ids.txt"}}
    if audio_as_folder:
        folder = root / "features" / "audio-a-4"
        folder.mkdir()
        for u in ids:
            np.save(folder / f"{u}.npy", rng.normal(size=(2, DIMS["audio"])))  # (time, d): averaged
        features["audio"] = "features/audio-a-4"
    body = {"name": "mine", "task": "classification", "classes": CLASSES, "features": features, **(desc or {})}
    (root / "corpus.json").write_text(json.dumps(body))
    return root, rows


def edit_json(root: Path, **changes: Any) -> None:
    d = json.loads((root / "corpus.json").read_text())
    d.update(changes)
    (root / "corpus.json").write_text(json.dumps(d))


# --------------------------------------------------------------------------- good folders


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_folder_loads_in_dialogue_and_order(tmp_path: Path, fmt: str) -> None:
    root, rows = write_folder(tmp_path / "c", fmt=fmt)
    c = load_table_corpus(root)
    assert c.name == "mine" and c.task == "classification" and c.class_names == tuple(CLASSES)
    assert c.dialogue_ids == sorted({r["dialogue"] for r in rows})
    assert c.utterance_ids == [r["id"] for r in rows]  # rows were written in dialogue/order
    assert c.labels.tolist() == [CLASSES.index(r["label"]) for r in rows]
    assert c.transcripts == [r["text"] for r in rows]
    assert c.dims == DIMS and c.modalities == ("text", "audio")
    assert c.file_split["dlg00"] == "train" and c.file_split["dlg04"] == "valid" and c.file_split["dlg05"] == "test"
    ids = (root / "features" / "text.ids.txt").read_text().split()
    x = np.load(root / "features" / "text.npy")
    r = ids.index("dlg03_u2")
    np.testing.assert_array_equal(c.features["text"][c.utterance_ids.index("dlg03_u2")], x[r])
    audio = np.load(root / "features" / "audio-a-4" / "dlg03_u2.npy").mean(0).astype(np.float32)
    np.testing.assert_allclose(c.features["audio"][c.utterance_ids.index("dlg03_u2")], audio, rtol=1e-6)


def test_roles_are_the_default_and_identities_a_setting(tmp_path: Path) -> None:
    root, rows = write_folder(tmp_path / "c", speakers_per_dialogue=3)
    c = load_table_corpus(root)
    assert c.speaker_scheme == "roles" and c.speaker_names == ("role0", "role1", "role2")
    assert c.speakers[c.rows(0)].tolist() == [0, 1, 2]
    capped = load_table_corpus(root, max_roles=2)
    assert capped.speaker_names == ("role0", "role1") and capped.speakers[capped.rows(0)].tolist() == [0, 1, 1]
    assert any("share role 1" in n for n in capped.notes)
    ident = load_table_corpus(root, speakers="identities")
    assert len(ident.speaker_names) == len({r["speaker"] for r in rows})
    # Identities of speakers who never speak in a training dialogue: refused, pointing to roles.
    split = make_split(ident, replace(tiny_config(), **{"data.corpus": "mine"}).data)
    with pytest.raises(CorpusError, match=r"only outside the training dialogues.*roles"):
        speakers_for_training(ident, list(split.train))


def test_roles_above_any_training_dialogue_take_the_top_trained_role(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c", speakers_per_dialogue=2)
    c = load_table_corpus(root)
    test = c.dialogue_index()["dlg05"]
    c.speakers[c.rows(test)] = np.arange(c.lengths()[test]) % 3  # a third role, in a test dialogue only
    c.speaker_names = ("role0", "role1", "role2")
    train = [c.dialogue_index()[d] for d in c.dialogue_ids if c.file_split[d] == "train"]
    out, notes = speakers_for_training(c, train)
    assert out.speakers.max() == 1 and out.speaker_names == ("role0", "role1") and "take role 1" in notes[0]


def test_fold_ids_in_the_split_column_give_leave_one_fold_out(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c", split="folds")
    c = load_table_corpus(root)
    assert not c.file_split and set(c.folds.values()) == {"1", "2", "3"}
    data = replace(tiny_config(), **{"data.fold": 1}).data
    split = make_split(c, data)
    assert split.name == "loso-fold1"
    assert {c.folds[c.dialogue_ids[i]] for i in split.test} == {"2"}
    assert "2" not in {c.folds[c.dialogue_ids[i]] for i in split.train + split.valid}
    with pytest.raises(ValueError, match=r"fold must be in 0..2"):
        make_split(c, replace(data, fold=3))


def test_missing_matrix_rows_only_with_allow_missing_files(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c")
    ids = (root / "features" / "text.ids.txt").read_text().split()
    x = np.load(root / "features" / "text.npy")
    keep = [i for i, u in enumerate(ids) if u != "dlg02_u1"]
    np.save(root / "features" / "text.npy", x[keep])
    (root / "features" / "text.ids.txt").write_text("\n".join(ids[i] for i in keep) + "\nnot_in_table\n")
    np.save(root / "features" / "text.npy", np.concatenate([x[keep], x[:1]]))
    with pytest.raises(TableError, match=r"1 of \d+ utterances of utterances.csv have no row in .*'dlg02_u1'"):
        load_table_corpus(root)
    c = load_table_corpus(root, allow_missing_files=True)
    assert not c.available["text"][c.utterance_ids.index("dlg02_u1")] and c.available["text"].sum() == len(ids) - 1
    assert any("1 row(s) of text.npy belong to no utterance" in n for n in c.notes)


# --------------------------------------------------------------------------- bad folders

BAD_TABLE = {
    "unknown class": (lambda r: r.__setitem__("label", "sadness"), r"line \d+: label 'sadness' is not one of the classes"),
    "class index out of range": (lambda r: r.__setitem__("label", "7"), r"line \d+: label 7 is outside the 3 classes"),
    "empty id": (lambda r: r.__setitem__("id", " "), r"line \d+: column 'id' is empty"),
    "bad order": (lambda r: r.__setitem__("order", "x"), r"line \d+: order 'x' is not a number"),
    "split changes in a dialogue": (lambda r: r.__setitem__("split", "test"), r"line \d+: dialogue 'dlg00' has split 'test' here but 'train' on line \d+"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLE))
def test_bad_table_lines_are_named(tmp_path: Path, case: str) -> None:
    root, rows = write_folder(tmp_path / "c")
    edit, match = BAD_TABLE[case]
    lines = (root / "utterances.csv").read_text().splitlines()
    header = lines[0].split(",")
    recs = list(csv.DictReader(lines))
    target = next(i for i, r in enumerate(recs) if r["dialogue"] == "dlg00" and r["order"] == "1")
    edit(recs[target])
    with (root / "utterances.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(recs)
    with pytest.raises(TableError, match=rf"utterances.csv: {match}") as e:
        load_table_corpus(root)
    assert f"line {target + 2}" in str(e.value)


def test_more_table_defects(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c")
    path = root / "utterances.csv"
    text = path.read_text()
    lines = text.splitlines()
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[1] + "\n")
    with pytest.raises(TableError, match=r"line 3: duplicate utterance id .* \(first on line 2\)"):
        load_table_corpus(root)
    path.write_text(lines[0].replace("speaker", "who") + "\n" + lines[1] + "\n")
    with pytest.raises(TableError, match=r"line 1: missing column\(s\) \['speaker'\]"):
        load_table_corpus(root)
    path.write_text(lines[0] + "\n")
    with pytest.raises(TableError, match=r"no utterances"):
        load_table_corpus(root)
    path.write_text(lines[0] + "\n" + lines[1] + ",extra\n")
    with pytest.raises(TableError, match=r"line 2: more fields than the header"):
        load_table_corpus(root)
    path.write_bytes(b"dialogue,id\n\xff\xfe\n")
    with pytest.raises(TableError, match=r"not UTF-8"):
        load_table_corpus(root)


def test_jsonl_defects(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c", fmt="jsonl")
    path = root / "utterances.jsonl"
    good = path.read_text().splitlines()
    path.write_text(good[0] + "\n{not json\n")
    with pytest.raises(TableError, match=r"utterances.jsonl: line 2: malformed JSON"):
        load_table_corpus(root)
    path.write_text(good[0] + "\n[1, 2]\n")
    with pytest.raises(TableError, match=r"line 2: expected a JSON object"):
        load_table_corpus(root)
    rec = json.loads(good[0]) | {"speaker": {"a": 1}}
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(TableError, match=r"line 1: column 'speaker' must be a string or number"):
        load_table_corpus(root)


BAD_JSON = {
    "no name": ({"name": ""}, r"field 'name': required"),
    "bad task": ({"task": "ranking"}, r"field 'task': 'ranking' is not"),
    "one class": ({"classes": ["a"]}, r"field 'classes': a classification corpus needs at least 2"),
    "duplicate classes": ({"classes": ["a", "a", "b"]}, r"field 'classes': duplicate"),
    "typo": ({"clases": ["a", "b"]}, r"unknown field\(s\) \['clases'\]"),
    "bad speakers": ({"speakers": "names"}, r"field 'speakers': 'names' is not one of"),
    "bad max_roles": ({"max_roles": 0}, r"field 'max_roles': a positive integer"),
    "bad modality": ({"features": {"smell": "features/x"}}, r"field 'features.smell': unknown modality"),
    "bad feature spec": ({"features": {"text": {"matrix": "a.npy"}}}, r"field 'features.text': a folder name"),
    "no features": ({"features": {}}, r"field 'features': a non-empty object"),
    "missing table": ({"table": "nope.csv"}, r"field 'table': file not found"),
    "bad binary": ({"binary": "median"}, r"field 'binary': 'median'"),
    "score range on classification": ({"score_range": [-1, 1]}, r"field 'score_range'"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_description_fields_are_named(tmp_path: Path, case: str) -> None:
    root, _ = write_folder(tmp_path / "c", audio_as_folder=False)
    change, match = BAD_JSON[case]
    edit_json(root, **change)
    with pytest.raises(TableError, match=rf"corpus.json: {match}"):
        load_table_corpus(root)


def test_missing_and_malformed_description(tmp_path: Path) -> None:
    with pytest.raises(TableError, match=r"corpus folder not found"):
        load_table_corpus(tmp_path / "nowhere")
    root, _ = write_folder(tmp_path / "c", audio_as_folder=False)
    (root / "corpus.json").write_text('{"name": "x",\n "task": }')
    with pytest.raises(TableError, match=r"corpus.json: line 2: malformed JSON"):
        load_table_corpus(root)
    (root / "corpus.json").unlink()
    with pytest.raises(TableError, match=r"no corpus.json"):
        load_table_corpus(root)


def test_bad_feature_files_are_named(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c")
    x = np.load(root / "features" / "text.npy")
    ids = (root / "features" / "text.ids.txt").read_text().split()
    x[5, 2] = np.nan
    np.save(root / "features" / "text.npy", x)
    with pytest.raises(TableError, match=rf"text.npy: row 5 \(utterance '{ids[5]}'\) contains NaN"):
        load_table_corpus(root)
    np.save(root / "features" / "text.npy", x[:-1])
    with pytest.raises(TableError, match=rf"text.ids.txt: {len(ids)} ids for the {len(ids) - 1} rows"):
        load_table_corpus(root)
    (root / "features" / "text.ids.txt").write_text("\n".join([ids[0], *ids[:-2]]) + "\n")
    with pytest.raises(TableError, match=r"text.ids.txt: line 2: duplicate utterance id"):
        load_table_corpus(root)
    (root / "features" / "text.npy").write_bytes(b"not an npy")
    with pytest.raises(TableError, match=r"corrupt feature matrix .*text.npy"):
        load_table_corpus(root)
    root2, _ = write_folder(tmp_path / "d")
    (root2 / "features" / "audio-a-4" / "dlg01_u0.npy").unlink()
    with pytest.raises(CorpusError, match=r"1 of \d+ utterances of utterances.csv have no audio feature file .*'dlg01_u0'"):
        load_table_corpus(root2)


def test_regression_folder(tmp_path: Path) -> None:
    root, rows = write_folder(tmp_path / "c", audio_as_folder=False)
    lines = list(csv.DictReader((root / "utterances.csv").read_text().splitlines()))
    for k, r in enumerate(lines):
        r["label"] = f"{(k % 7) - 3}.5"
    with (root / "utterances.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    edit_json(root, task="regression", classes=[], score_range=[-3, 3])
    with pytest.raises(TableError, match=r"line 2: label -3.5 is outside score_range \[-3, 3\]"):
        load_table_corpus(root)
    edit_json(root, score_range=[-4, 4])
    c = load_table_corpus(root)
    assert c.task == "regression" and c.num_classes == 1 and c.labels.dtype == np.float32


# --------------------------------------------------------------------------- no code edits


def _tiny_cli_args(root: Path) -> list[str]:
    return ["--corpus-dir", str(root), "--set", "model.hidden=16", "--set", "model.heads=2", "--set", "model.max_len=16",
            "--set", "train.batch_size=4", "--set", "train.progress=false", "--set", "eval.rates=[0.0,0.5]"]


def test_a_folder_trains_evaluates_and_predicts_without_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, rows = write_folder(tmp_path / "c", speakers_per_dialogue=3)
    out = tmp_path / "run"
    assert main(["train", *_tiny_cli_args(root), "--epochs", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["corpus"] for r in res] == ["mine", "mine"] and [r["rate"] for r in res] == [0.0, 0.5]
    meta = json.loads((out / "seed0" / "meta.json").read_text())
    assert meta["speaker_scheme"] == "roles" and meta["class_names"] == CLASSES
    assert main(["evaluate", "--checkpoint", str(out / "seed0"), "--out", str(tmp_path / "ev")]) == 0
    again = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [r["waf"] for r in again] == [r["waf"] for r in res]
    # predict: names never seen in training are roles, no warning for a roles model
    conv = tmp_path / "conv.jsonl"
    conv.write_text("".join(json.dumps({"id": f"n{t}", "speaker": ["Ann", "Bo"][t % 2],
                                        "features": {"text": [0.1] * 6, "audio": [0.0] * 4}}) + "\n" for t in range(3)))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out / "seed0"), "--input", str(conv)]) == 0
    captured = capsys.readouterr()
    preds = json.loads(captured.out)["predictions"]
    assert [p["id"] for p in preds] == ["n0", "n1", "n2"] and preds[0]["label"] in CLASSES
    assert "unknown to the model" not in captured.err
    # params reads dims, classes and speakers from the configured corpus
    assert main(["params", *_tiny_cli_args(root)]) == 0
    assert "dims {'text': 6, 'audio': 4}" in capsys.readouterr().out


def test_a_folder_runs_in_the_benchmark_grid(tmp_path: Path) -> None:
    from iteacnet.benchmark.grid import GridSpec, expand, run_cell

    root, _ = write_folder(tmp_path / "c")
    base = replace(tiny_config(), **{"train.epochs": 1, "eval.rates": (0.0,)})
    spec = GridSpec.from_dict({"variants": ["iteacnet"], "corpora": {"mine": {"corpus_dir": str(root)}},
                               "seeds": [0], "protocols": ["ume"]})
    cells = expand(spec, base)
    assert len(cells) == 1
    rows = run_cell(cells[0])
    assert rows and rows[0]["corpus"] == "mine" and 0.0 <= rows[0]["waf"] <= 100.0


def test_one_modality_warns_at_train_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = write_folder(tmp_path / "c", audio_as_folder=False)
    assert main(["train", *_tiny_cli_args(root), "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "one modality (text)" in err and "eval.rates=[0.0]" in err
    assert main(["train", *_tiny_cli_args(root), "--set", "eval.rates=[0.0]", "--epochs", "1",
                 "--out", str(tmp_path / "run2")]) == 0
    assert "one modality" not in capsys.readouterr().err


def test_data_config_speakers_override_and_errors(tmp_path: Path) -> None:
    root, _ = write_folder(tmp_path / "c", audio_as_folder=False)
    cfg = replace(tiny_config(), **{"data.corpus_dir": str(root)}).data
    assert load_corpus(cfg).speaker_scheme == "roles"
    assert load_corpus(replace(cfg, speakers="identities")).speaker_scheme == "identities"
    with pytest.raises(CorpusError, match=r"data.speakers: 'names'"):
        load_corpus(replace(cfg, speakers="names"))
    synthetic_roles = load_corpus(replace(tiny_config().data, speakers="roles"))
    assert synthetic_roles.speaker_scheme == "roles" and synthetic_roles.speaker_names[0] == "role0"


def test_raw_text_in_predict_follows_the_folders_manifest(tmp_path: Path) -> None:
    """A corpus folder's text folder with the extractor's manifest: raw text may be embedded."""
    from iteacnet.data import extract as ex
    from iteacnet.inference import text_extractor_check
    from iteacnet.models.base import ModelSpec

    root, _ = write_folder(tmp_path / "c", audio_as_folder=False)
    folder = root / "features" / "text-minilm-384"
    folder.mkdir()
    edit_json(root, features={"text": "features/text-minilm-384"})
    cfg = replace(tiny_config(), **{"data.corpus_dir": str(root)})
    spec = ModelSpec(dims=(("text", ex.EMBED_DIM),), num_outputs=3)
    ok, why = text_extractor_check(cfg, {}, spec)
    assert not ok and "no manifest.json" in why
    (folder / ex.MANIFEST_NAME).write_text(json.dumps({
        "extractor": ex.EXTRACTOR_NAME, "encoder_package": ex.ENCODER_PACKAGE, "encoder_version": ex.ENCODER_VERSION,
        "pooling": ex.POOLING, "normalization": ex.NORMALIZATION, "dim": ex.EMBED_DIM}))
    ok, why = text_extractor_check(cfg, {}, spec)
    assert ok and "matches" in why
    edit_json(root, features={"text": {"matrix": "features/text.npy", "ids": "features/text.ids.txt"}})
    assert text_extractor_check(cfg, {}, spec) == (False, "its text features are a matrix, which records no extractor")


def test_grid_runs_every_fold_of_a_folder_with_folds(tmp_path: Path) -> None:
    from iteacnet.benchmark.grid import GridSpec, expand

    folds, _ = write_folder(tmp_path / "folds", split="folds", audio_as_folder=False)
    plain, _ = write_folder(tmp_path / "plain", audio_as_folder=False)
    spec = GridSpec.from_dict({"variants": ["iteacnet"], "corpora": {"f": {"corpus_dir": str(folds)}, "p": {"corpus_dir": str(plain)}},
                               "seeds": [0], "protocols": ["ume"], "folds": [0, 1, 2]})
    cells = expand(spec, tiny_config())
    assert sorted((c.corpus, c.config["data"]["fold"]) for c in cells) == [("f", 0), ("f", 1), ("f", 2), ("p", 0)]


def test_cli_data_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = write_folder(tmp_path / "c", audio_as_folder=False)
    edit_json(root, speakers="names")
    assert main(["data", "inspect", "--corpus-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "corpus.json: field 'speakers': 'names' is not one of" in err and "Traceback" not in err
    assert main(["train", "--corpus-dir", str(tmp_path / "nowhere"), "--epochs", "1"]) == 2
    assert "corpus folder not found" in capsys.readouterr().err
