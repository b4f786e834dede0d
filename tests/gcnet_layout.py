"""Small corpora written in the GCNet layout, for the loader, cache and inspect tests.

`write_iemocap_like` writes an IEMOCAP-style root (label file + text, audio and per-speaker
visual directories `<utt>/compress_F.npy`, `<utt>/compress_M.npy`); `write_mosi_like` a
CMU-MOSI-style one (numpy float64 labels, numpy arrays of sentences, one speaker '').
Both return a `Layout` whose fields the tests edit to break things on purpose.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.data.corpus import CORPUS_SPECS

IEMOCAP_FOLDERS = {"text": "text-t-8", "audio": "audio-a-6", "visual": "visual-v-5"}
MOSI_FOLDERS = {"text": "text-t-7", "audio": "audio-a-4", "visual": "video-v-3"}
IEMOCAP_DIMS = {"text": 8, "audio": 6, "visual": 5}
MOSI_DIMS = {"text": 7, "audio": 4, "visual": 3}


@dataclass
class Layout:
    name: str
    root: Path
    items: list[Any]  # the label file's list, as pickled
    folders: dict[str, str]  # modality -> folder name under features/
    utterances: list[str] = field(default_factory=list)

    @property
    def label_file(self) -> Path:
        return self.root / CORPUS_SPECS[self.name]["label_file"]

    def folder(self, modality: str) -> Path:
        return self.root / "features" / self.folders[modality]

    def file(self, modality: str, utt: str) -> Path:
        return self.folder(modality) / f"{utt}.npy"

    def rewrite_labels(self, protocol: int = 4) -> None:
        """Pickle `items` again after a test edited them."""
        write_label_file(self.label_file, self.items, protocol)


def write_label_file(path: Path, items: list[Any], protocol: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(items, f, protocol=protocol)


def write_iemocap_like(
    root: Path,
    name: str = "iemocap4",
    dialogues: dict[str, list[str]] | None = None,
    seed: int = 0,
) -> Layout:
    """Four dialogues (3 train, 1 test); audio is 2-D (time, d); visual is per speaker."""
    rng = np.random.default_rng(seed)
    num_classes = len(CORPUS_SPECS[name]["classes"])
    if dialogues is None:
        dialogues = {}
        for k, did in enumerate(["Ses01F_impro01", "Ses01M_script02_1", "Ses02F_impro03", "Ses03M_impro04"]):
            n = 3 + k
            dialogues[did] = [f"{did}_{'FM'[t % 2]}{t:03d}" for t in range(n)]
    ids, labels, speakers, sentences = {}, {}, {}, {}
    for did, utts in dialogues.items():
        ids[did] = list(utts)
        labels[did] = [int(rng.integers(0, num_classes)) for _ in utts]
        speakers[did] = [u.rsplit("_", 1)[-1][0] for u in utts]
        sentences[did] = [f"sentence {u}" for u in utts]
    names = sorted(dialogues)
    train, test = set(names[:-1]), {names[-1]}
    layout = Layout(name, root, [ids, labels, speakers, sentences, train, test], dict(IEMOCAP_FOLDERS))
    layout.utterances = [u for d in names for u in dialogues[d]]
    layout.rewrite_labels()
    for m in layout.folders:
        layout.folder(m).mkdir(parents=True, exist_ok=True)
    for utt in layout.utterances:
        np.save(layout.file("text", utt), rng.standard_normal(IEMOCAP_DIMS["text"]).astype(np.float32))
        frames = int(rng.integers(2, 5))
        np.save(layout.file("audio", utt), rng.standard_normal((frames, IEMOCAP_DIMS["audio"])).astype(np.float32))
        d = layout.folder("visual") / utt
        d.mkdir()
        for spk in "FM":
            faces = int(rng.integers(1, 4))
            np.save(d / f"compress_{spk}.npy", rng.standard_normal((faces, IEMOCAP_DIMS["visual"])).astype(np.float32))
    return layout


def write_mosi_like(
    root: Path,
    name: str = "cmumosi",
    dialogues: dict[str, list[str]] | None = None,
    seed: int = 0,
) -> Layout:
    """Three videos (train/valid/test); ids `<vid>_1 … <vid>_12` so `_1` neighbours `_10`."""
    rng = np.random.default_rng(seed)
    if dialogues is None:
        dialogues = {vid: [f"{vid}_{t}" for t in range(1, n + 1)] for vid, n in (("vidA", 12), ("vid_B", 5), ("c3", 4))}
    ids, labels, speakers, sentences = {}, {}, {}, {}
    for vid, utts in dialogues.items():
        ids[vid] = list(utts)
        # numpy float64 scores in [-3, 3], with an exact zero, as in the real file
        scores = np.round(rng.uniform(-3, 3, len(utts)), 1)
        scores[0] = 0.0
        labels[vid] = [np.float64(s) for s in scores]
        speakers[vid] = ["" for _ in utts]
        sentences[vid] = np.array([f"SENTENCE {u}" for u in utts])
    names = sorted(dialogues)
    split = [set(names[i::3]) for i in range(3)]  # train, valid, test
    layout = Layout(name, root, [ids, labels, speakers, sentences, *split], dict(MOSI_FOLDERS))
    layout.utterances = [u for d in names for u in dialogues[d]]
    layout.rewrite_labels()
    for m in layout.folders:
        layout.folder(m).mkdir(parents=True, exist_ok=True)
    for utt in layout.utterances:
        np.save(layout.file("text", utt), rng.standard_normal(MOSI_DIMS["text"]).astype(np.float32))
        np.save(layout.file("audio", utt), rng.standard_normal(MOSI_DIMS["audio"]).astype(np.float32))
        np.save(layout.file("visual", utt), rng.standard_normal((3, MOSI_DIMS["visual"])).astype(np.float32))
    return layout
