"""Regenerate the shipped demo dataset (data/demo_clips/) with espeak-ng and sox.

The recordings are spoken *with* fillers, false starts and repetitions (the verbatim text);
the targets are the clean sentences, as the user's real data is. Long clips are synthesised
sentence by sentence, so each sentence's start and end time is exact: those timings go in
the manifest as `verbatim_segments`. Deterministic: same script, same text and timings.

    python data/make_demo.py [OUT_DIR]
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
GAP_S = 0.45  # pause between sentences of a long clip

SHORT = [
    "The meeting moved to Thursday afternoon.",
    "Please send me the final budget by Friday.",
    "We tested the new microphone in the small studio.",
    "Our train was delayed by almost an hour.",
    "The garden needs water every second day in summer.",
    "She finished the report before lunch.",
    "I think the second design is much easier to read.",
    "The library opens at nine on weekdays.",
    "He bought fresh bread and two kinds of cheese.",
    "Remember to back up the laptop tonight.",
    "The river was higher than last spring.",
    "We should call the plumber about the kitchen sink.",
]

LONG = {
    "long_project": [
        "Today I want to talk about how our project went over the last three months.",
        "We started with a very small team of four people.",
        "The first month was mostly about collecting recordings from volunteers.",
        "Each volunteer read a short story and answered a few questions.",
        "We quickly learned that the quality of the microphones varied a lot.",
        "Some recordings had a strong hum from the power supply.",
        "Others were so quiet that we could barely hear the speaker.",
        "So we wrote a simple checklist for everyone who recorded at home.",
        "The checklist asked people to sit close to the microphone and close the window.",
        "In the second month we cleaned up all the transcripts by hand.",
        "That took much longer than we expected.",
        "People repeat words, start sentences twice and fill pauses with small sounds.",
        "We removed those so the text reads like a written document.",
        "Then we trained a first model on about fifty recordings.",
        "The results were better than the base model but still not good enough.",
        "It kept writing the filler words that we had removed from the targets.",
        "After we doubled the data the model learned to drop most of them.",
        "The third month was about testing the model on new speakers.",
        "We found that it struggled with fast speech and long sentences.",
        "Splitting the recordings at natural pauses helped a great deal.",
        "We also kept a few fixed samples to compare every training run.",
        "Those samples made it easy to see when a change made things worse.",
        "Next quarter we want to collect recordings from two hundred more people.",
        "We also plan to try a larger model on the new graphics card.",
        "Thank you all for listening, and I am happy to take questions.",
    ],
    "long_recipe": [
        "Let me walk you through my favourite bread recipe.",
        "You need flour, water, salt and a little bit of yeast.",
        "Start by mixing the flour and the water in a large bowl.",
        "Let the dough rest for about half an hour before you add the salt.",
        "This rest gives the flour time to soak up the water.",
        "Then add the salt and the yeast and knead the dough for ten minutes.",
        "The dough should feel smooth and a little sticky.",
        "Cover the bowl with a towel and leave it somewhere warm.",
        "After two hours the dough should have doubled in size.",
        "Turn it out onto a floured table and shape it into a round loaf.",
        "Be gentle so you keep the air bubbles inside.",
        "Put the loaf into a basket lined with a cloth.",
        "Let it rise again for about an hour.",
        "Meanwhile heat the oven as hot as it will go.",
        "Put a heavy pot with a lid into the oven to heat up as well.",
        "When the loaf is ready, tip it carefully into the hot pot.",
        "Cut a line across the top with a sharp knife.",
        "Bake it with the lid on for twenty minutes.",
        "Then take the lid off and bake for another twenty minutes.",
        "The crust should be deep brown and sound hollow when you tap it.",
        "Let the bread cool for at least an hour before you cut it.",
        "If you cut it too early the inside will be gummy.",
        "Once you have made it a few times you can try adding seeds or herbs.",
        "Whole wheat flour also works, but you will need a little more water.",
        "That is really all there is to it, so good luck with your first loaf.",
    ],
}

VOICES = ["en-us", "en-us+f3", "en-gb", "en-us+m3", "en-gb+f2", "en-us+f4"]
FILLERS = ["um", "uh", "I mean", "you know", "like"]


def verbatim_of(clean: str, rng: random.Random) -> str:
    """Spoken form: add a filler, a repeated word or a false start (always at least one)."""
    words = clean.split()
    kinds = rng.sample(["filler", "repeat", "false_start"], k=rng.choice([1, 2]))
    if "repeat" in kinds and len(words) > 3:
        i = rng.randrange(1, len(words) - 1)
        words.insert(i, words[i].strip(",.").lower())
    if "filler" in kinds:
        i = rng.randrange(0, max(1, len(words) - 1))
        words.insert(i, rng.choice(FILLERS) + ",")
    if "false_start" in kinds and len(words) > 4:
        words = words[:2] + ["uh,"] + [words[0].lower()] + words[1:]
    if words[0][0].islower():
        words[0] = words[0][0].upper() + words[0][1:]
    return " ".join(words)


def speak(text: str, voice: str, speed: int, tmp: Path) -> np.ndarray:
    raw, wav = tmp / "raw.wav", tmp / "16k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", str(wav)], check=True)
    audio, sr = sf.read(str(wav), dtype="float32")
    assert sr == SR
    return audio


def write_ogg(path: Path, audio: np.ndarray) -> None:
    # libsndfile's Vorbis encoder can crash on one huge write: feed it in 1 s blocks
    with sf.SoundFile(str(path), "w", SR, 1, format="OGG", subtype="VORBIS") as f:
        for i in range(0, len(audio), SR):
            f.write(audio[i : i + SR])


def build(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(4)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for i, clean in enumerate(SHORT):
            cid = f"short_{i + 1:02d}"
            verbatim = verbatim_of(clean, rng)
            voice, speed = VOICES[i % len(VOICES)], 150 + (i * 7) % 40
            audio = np.concatenate([np.zeros(int(0.2 * SR), np.float32), speak(verbatim, voice, speed, tmp),
                                    np.zeros(int(0.2 * SR), np.float32)])
            write_ogg(out / f"{cid}.ogg", audio)
            rows.append({"id": cid, "audio": f"{cid}.ogg", "text": clean, "verbatim": verbatim,
                         "speaker": voice})
        for j, (cid, sentences) in enumerate(LONG.items()):
            voice, speed = VOICES[(j * 2 + 1) % len(VOICES)], 155 - 10 * j
            pieces, segs, t0 = [], [], 0.0
            verbatims = []
            for clean in sentences:
                verbatim = verbatim_of(clean, rng)
                verbatims.append(verbatim)
                audio = speak(verbatim, voice, speed, tmp)
                dur = len(audio) / SR
                segs.append({"start": round(t0, 3), "end": round(t0 + dur, 3), "text": verbatim})
                pieces += [audio, np.zeros(int(GAP_S * SR), np.float32)]
                t0 += dur + GAP_S
            write_ogg(out / f"{cid}.ogg", np.concatenate(pieces))
            rows.append({"id": cid, "audio": f"{cid}.ogg", "text": " ".join(sentences),
                         "verbatim": " ".join(verbatims), "speaker": voice, "verbatim_segments": segs})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return rows


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "demo_clips"
    rows = build(target)
    total = sum(p.stat().st_size for p in target.iterdir())
    print(f"wrote {len(rows)} clips to {target} ({total / 1e6:.2f} MB)")
