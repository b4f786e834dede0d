#!/usr/bin/env python
"""A tiny SYNTHETIC spoken corpus in the GCNet IEMOCAP layout, spoken by espeak-ng.

    python docs/examples/make_speech_corpus.py --out speech-synthetic

Writes, under --out:
- `IEMOCAP_features_raw_4way.pkl`: the label file (ids, four-class labels, speakers 'F'/'M',
  transcripts, train/test dialogue sets), dialogue ids `Ses0<s>F_synth<k>` over sessions 1-5,
  so the `iemocap4` preset's leave-one-session-out split applies;
- `wav/<utt>.wav`: one recording per utterance;
- `new/`: a conversation the model has not seen: `u1.wav` ... and the same turns as one
  recording, `session.wav`, with `conversation.jsonl` (transcript + segment of session.wav
  per turn) and `conversation-clips.jsonl` (transcript + per-turn file).

Nothing here is real emotion: the "emotion" of an utterance only sets espeak-ng's pitch, speed
and loudness (happy: high and quick, sad: low, slow and soft, angry: loud and fast, neutral:
the defaults), and half of the sentences are drawn from a pool shared by all emotions, so
that the transcript alone cannot always tell. Emotions stay put for a few turns, as in a
conversation. It exists to run `extract audio` / `extract text` / `train` / `predict` end to
end (README, "From a recording and its transcript to emotions"), not to measure anything.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np

CLASSES = ("happy+excited", "sad", "neutral", "angry")  # iemocap4's label order
PROSODY = {  # espeak-ng: -p pitch (0-99), -s words per minute, -a amplitude (0-200)
    0: (78, 195, 130),
    1: (28, 115, 55),
    2: (50, 160, 100),
    3: (58, 215, 195),
}
SENTENCES = {
    0: ["I got the job, they called me this morning!", "This is the best day in ages.",
        "We did it, we actually did it!", "I love this place, let's come back soon."],
    1: ["I miss her so much.", "Nothing I do seems to matter anymore.",
        "I wish things had turned out differently.", "He never even said goodbye."],
    2: ["The meeting moved to Thursday.", "I put the keys on the table.",
        "The train leaves from platform two.", "We need milk and bread."],
    3: ["Don't you dare talk to me like that!", "You lied to me again!",
        "Get out of my way, right now!", "This is the third time you've done this!"],
}
SHARED = ["I didn't expect that.", "Are you serious?", "Okay, tell me everything.", "So that's what happened.",
          "Well, here we are.", "I heard what you said.", "Let's talk about it tonight.", "You know what I mean."]
NEW_TURNS = [  # the unseen conversation: (speaker, emotion, sentence)
    ("F", 0, "Guess what, I passed the exam!"),
    ("M", 0, "Really? That's fantastic news!"),
    ("F", 2, "The results were posted at noon."),
    ("M", 3, "Why didn't you tell me before everyone else?"),
    ("F", 3, "Stop shouting, I only just found out!"),
    ("M", 1, "Sorry. I feel like I'm always the last to know."),
]
VOICES = {"F": "en+f3", "M": "en+m3"}


def speak(espeak: str, text: str, speaker: str, emotion: int, path: Path, rng: np.random.Generator) -> None:
    pitch, speed, amp = PROSODY[emotion]
    jitter = rng.integers(-4, 5, 3)
    cmd = [espeak, "-v", VOICES[speaker], "-p", str(pitch + jitter[0]), "-s", str(speed + 3 * jitter[1]),
           "-a", str(amp + 2 * jitter[2]), "-w", str(path), text]
    subprocess.run(cmd, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dialogues-per-session", type=int, default=8)
    ap.add_argument("--turns", type=int, default=10, help="utterances per dialogue")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("needs espeak-ng (Debian/Ubuntu: apt-get install espeak-ng)")
    out = Path(args.out)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    ids, labels, speakers, sentences = {}, {}, {}, {}
    for session in range(1, 6):
        for k in range(args.dialogues_per_session):
            did = f"Ses0{session}F_synth{k:02d}"
            emotion = int(rng.integers(0, 4))
            ids[did], labels[did], speakers[did], sentences[did] = [], [], [], []
            for t in range(args.turns):
                if rng.random() > 0.7:  # emotions stay put for a few turns
                    emotion = int(rng.integers(0, 4))
                spk = "FM"[t % 2]
                pool = SENTENCES[emotion] if rng.random() < 0.5 else SHARED
                text = pool[int(rng.integers(0, len(pool)))]
                uid = f"{did}_{spk}{t:03d}"
                speak(espeak, text, spk, emotion, out / "wav" / f"{uid}.wav", rng)
                ids[did].append(uid)
                labels[did].append(emotion)
                speakers[did].append(spk)
                sentences[did].append(text)
    train = {d for d in ids if d[4] != "5"}
    with (out / "IEMOCAP_features_raw_4way.pkl").open("wb") as f:
        pickle.dump([ids, labels, speakers, sentences, train, set(ids) - train], f, protocol=4)

    import soundfile as sf

    new = out / "new"
    new.mkdir(exist_ok=True)
    pieces, lines, clip_lines, at, rate = [], [], [], 0, 0
    for t, (spk, emotion, text) in enumerate(NEW_TURNS, 1):
        speak(espeak, text, spk, emotion, new / f"u{t}.wav", rng)
        x, rate = sf.read(str(new / f"u{t}.wav"), dtype="int16")
        pause = np.zeros(int(0.4 * rate), dtype=np.int16)
        lines.append({"id": f"u{t}", "speaker": spk, "text": text,
                      "audio": {"path": "session.wav", "start": at / rate, "end": (at + len(x)) / rate}})
        clip_lines.append({"id": f"u{t}", "speaker": spk, "text": text, "audio": f"u{t}.wav"})
        pieces += [x, pause]
        at += len(x) + len(pause)
    sf.write(str(new / "session.wav"), np.concatenate(pieces), rate, subtype="PCM_16")
    (new / "conversation.jsonl").write_text("".join(json.dumps(v) + "\n" for v in lines))
    (new / "conversation-clips.jsonl").write_text("".join(json.dumps(v) + "\n" for v in clip_lines))
    (new / "truth.json").write_text(json.dumps({f"u{t}": CLASSES[e] for t, (_, e, _) in enumerate(NEW_TURNS, 1)}) + "\n")
    n = sum(len(v) for v in ids.values())
    print(f"{n} utterances in {len(ids)} dialogues -> {out} (SYNTHETIC speech); new conversation: {new}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
