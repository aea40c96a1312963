"""Disfluency clean-up benchmark: voxtune's defaults against the base model and a bare Hugging
Face Seq2SeqTrainer script given the same wall time, on a synthetic spoken set.

    VOXTUNE_TEST_MODEL=/work/shared/models/whisper-tiny.en \\
    .venv/bin/python tests/benchmarks/bench_cleanup.py [--quick] [--seeds 3] [--sizes 10,50]
        [--methods full,lora] [--test-clips 24] [--long-clips 3] [--no-bare] [--work DIR]

The set (built once per --work folder, cached): espeak-ng speech (voices and rates varied)
converted to 16 kHz mono with sox, of sentences with fillers (um, uh, you know, like),
repetitions ("I I think"), false starts ("we should- we need to") and self-corrections
("on Monday, no, on Tuesday"); the target is the clean, punctuated sentence. Training and test
sentences come from disjoint templates. Some test clips are 2-5 minutes long (several
sentences joined with silence).

Each configuration runs the product path: `voxtune data import` -> `voxtune queue add` -> the
engine (daemon + worker) -> evaluation, in a fresh workspace, for N seeds. Printed per
configuration: mean +- sd of normalised WER, filler rate and deletion rate on the held-out
clips, wall time, and the long/short clip WER ratio. The training runs early-stop on their own
validation clips (3 of each training set) and the held-out clips are scored by an eval-only
run of the best checkpoint, so the test set never chooses anything.

--quick: 1 seed, 10 training clips, LoRA only, 6 short + 1 long test clips (a smoke run;
its numbers say little). Cost on 2 shared CPU cores with whisper-tiny.en: about 15 s per
training step of 4 x 30 s windows, so one 10-clip default run (45 steps) takes about 12
minutes and the full table (3 seeds x {full, LoRA} x {10, 50} clips, plus the bare script at
equal time) many hours: run it on a GPU machine (the engine uses CUDA when present).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# -- the synthetic set ---------------------------------------------------------------------
NAMES = ["Anna", "Marcus", "Priya", "Tom", "Sofia", "Daniel", "Keiko", "Omar", "Lena", "Victor"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
TIMES = ["nine", "ten", "eleven", "two", "three", "four"]
THINGS = ["the report", "the budget", "the slides", "the contract", "the invoice", "the schedule", "the draft"]
PLACES = ["the office", "the warehouse", "the lab", "the station", "the library", "the cafe"]
NUMBERS = ["two", "three", "four", "five", "six", "twelve", "twenty"]
# disjoint template sets: a test sentence's structure was never trained on
TRAIN_TEMPLATES = [
    "{name} will send {thing} on {day}.",
    "We should meet at {place} at {time}.",
    "Please check {thing} before {day}.",
    "I think {name} has {number} questions about {thing}.",
    "The train to {place} leaves at {time}.",
    "Can you call {name} about {thing}?",
    "Let's move {thing} to {day} afternoon.",
    "{name} said {thing} needs {number} more pages.",
]
TEST_TEMPLATES = [
    "Remind {name} that {thing} is due on {day}.",
    "I left {thing} at {place} yesterday.",
    "There are {number} boxes waiting at {place}.",
    "Could we push the call with {name} to {time}?",
    "{name} wants to review {thing} on {day} morning.",
    "The meeting at {place} starts at {time} sharp.",
]
FILLERS = ["um", "uh", "you know", "like", "I mean"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(name=rng.choice(NAMES), day=rng.choice(DAYS), time=rng.choice(TIMES),
                           thing=rng.choice(THINGS), place=rng.choice(PLACES), number=rng.choice(NUMBERS))


def disfluent(clean: str, rng: random.Random) -> str:
    """The spoken version: fillers, a repetition, a false start or a self-correction."""
    words = clean.rstrip(".?").split()
    out: list[str] = []
    for i, w in enumerate(words):
        r = rng.random()
        if r < 0.12:
            out.append(rng.choice(FILLERS) + ",")
        elif r < 0.18:
            out.append(w)  # repetition: "the the"
        elif r < 0.22 and i + 2 < len(words):
            out += [w, words[i + 1] + "-"]  # false start: "we should- we should meet"
        if w in DAYS and rng.random() < 0.5:
            other = rng.choice([d for d in DAYS if d != w])
            out += [other + ",", "no,", "sorry,"]  # self-correction: "on Monday, no, sorry, on Tuesday"
        out.append(w)
    if rng.random() < 0.4:
        out.insert(0, rng.choice(["um,", "so,", "uh,", "okay so,"]))
    return " ".join(out) + clean[-1]


VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3", "en+f2", "en-gb-scotland", "en-029"]


def speak(text: str, wav: Path, rng: random.Random) -> None:
    """Synthesise `text` to `wav` (16 kHz mono) unless it exists. The voice is drawn from `rng`
    either way, so a cached set consumes the same random numbers as a fresh build and every
    later clip keeps the text it was spoken with."""
    voice, rate, pitch = rng.choice(VOICES), rng.randint(135, 185), rng.randint(35, 65)
    if wav.exists():
        return
    raw = wav.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), text],
                   check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True, capture_output=True)
    raw.unlink()


def join_wavs(parts: list[Path], out: Path) -> None:
    silence = out.with_suffix(".sil.wav")
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(silence), "trim", "0", "0.6"], check=True)
    seq: list[str] = []
    for p in parts:
        seq += [str(p), str(silence)]
    subprocess.run(["sox", *seq, str(out)], check=True, capture_output=True)
    silence.unlink()


def make_set(folder: Path, templates: list[str], n: int, seed: int, long_clips: int = 0,
             long_minutes: tuple[float, float] = (2.0, 5.0)) -> Path:
    """n short clips (one sentence each) + long_clips clips of 2-5 minutes, as clipNNN.wav + .txt."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        clean = _fill(rng.choice(templates), rng)
        wav = folder / f"clip{i:03d}.wav"
        speak(disfluent(clean, rng), wav, rng)  # draws its random numbers even when the file is cached
        (folder / f"clip{i:03d}.txt").write_text(clean + "\n")
    tmp = folder / ".parts"
    for j in range(long_clips):
        wav = folder / f"long{j:02d}.wav"
        target_s = rng.uniform(*long_minutes) * 60
        texts: list[str] = []
        if not wav.exists():
            tmp.mkdir(exist_ok=True)
            parts, total = [], 0.0
            while total < target_s:
                clean = _fill(rng.choice(templates), rng)
                part = tmp / f"l{j}_{len(parts)}.wav"
                speak(disfluent(clean, rng), part, rng)
                total += _duration(part) + 0.6
                parts.append(part)
                texts.append(clean)
            join_wavs(parts, wav)
            for p in parts:
                p.unlink()
            (folder / f"long{j:02d}.txt").write_text(" ".join(texts) + "\n")
    return folder


def _duration(wav: Path) -> float:
    import soundfile as sf

    return sf.info(str(wav)).duration


# -- the product path -------------------------------------------------------------------------
def voxtune(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))  # VOXTUNE_DEVICE=cpu forces the CPU on a GPU machine
    p = subprocess.run([sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())",
                        "--home", str(home), *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=4 * 3600)
    if check and p.returncode != 0:
        raise RuntimeError(f"voxtune {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return p


def wait_run(home: Path, run_id: str, timeout_s: float = 4 * 3600) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        show = json.loads(voxtune(home, "runs", "show", run_id, "--json").stdout)
        if show["status"] in ("finished", "failed", "cancelled", "interrupted"):
            return show
        time.sleep(2)
    raise TimeoutError(run_id)


def clip_scores(home: Path, run_id: str) -> dict:
    """Held-out metrics of an eval-only run: overall, and short vs long clips (normalised WER)."""
    from engine import clips, metrics

    recs = clips.latest(clips.read(home / "runs" / run_id))
    refs, hyps = [r["reference"] for r in recs], [r["prediction"] for r in recs]
    short = [r for r in recs if not r["clip_id"].startswith("long")]
    long_ = [r for r in recs if r["clip_id"].startswith("long")]

    def nwer(rs):
        return metrics.wer_normalized([r["reference"] for r in rs], [r["prediction"] for r in rs]) if rs else None

    evals = [json.loads(line) for line in (home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    last = evals[-1] if evals else {}
    return {"wer_normalized": metrics.wer_normalized(refs, hyps), "filler_rate": metrics.filler_rate(refs, hyps),
            "deletion_rate": metrics.deletion_rate(refs, hyps), "short": nwer(short), "long": nwer(long_),
            "fallback": last.get("decode_fallback"), "pieces": last.get("decode_pieces")}


def product_run(work: Path, model: str, train_dir: Path, test_dir: Path, n_train: int, method: str | None,
                seed: int) -> dict:
    """A fresh workspace: import, queue (defaults), engine, then score the best checkpoint on
    the held-out set with an eval-only run. Returns the scores and the wall time of training."""
    home = Path(tempfile.mkdtemp(prefix="bench-cleanup-", dir=work))
    voxtune(home, "data", "import", str(test_dir), "--name", "heldout", "--split", "0/0/1")
    t0 = time.time()
    if method is None:  # the base model
        rid = voxtune(home, "queue", "add", "--eval-only", "--model", model, "--dataset", "heldout",
                      "--split", "test", "--seed", str(seed), "--batch", "4").stdout.strip()
        wait_run(home, rid)
        voxtune(home, "engine", "stop", check=False)
        return {**clip_scores(home, rid), "wall_s": time.time() - t0, "note": "base"}
    subset = home / "train-clips"  # the first n_train + 3 clips (3 for validation)
    subset.mkdir()
    for wav in sorted(train_dir.glob("clip*.wav"))[:n_train + 3]:
        for f in (wav, wav.with_suffix(".txt")):
            (subset / f.name).symlink_to(f)
    voxtune(home, "data", "import", str(subset), "--name", "train", "--split", f"{n_train}/3/0")
    p = voxtune(home, "queue", "add", "--model", model, "--dataset", "train", "--method", method,
                "--seed", str(seed))
    rid = p.stdout.strip()
    note = next((line.split("defaults: ", 1)[1] for line in p.stderr.splitlines() if "defaults: " in line), "")
    show = wait_run(home, rid)
    wall = time.time() - t0
    if show["status"] != "finished":
        voxtune(home, "engine", "stop", check=False)
        raise RuntimeError(f"{rid}: {show['status']} {show.get('reason')}")
    best = (show.get("result") or {}).get("best") or {}
    ckpt = home / "runs" / rid / (best.get("checkpoint") or (show["result"] or {}).get("last_checkpoint") or "")
    ev = voxtune(home, "queue", "add", "--eval-only", "--model", str(ckpt), "--dataset", "heldout",
                 "--split", "test", "--batch", "4").stdout.strip()
    wait_run(home, ev)
    voxtune(home, "engine", "stop", check=False)
    return {**clip_scores(home, ev), "wall_s": wall, "note": note,
            "steps": (show["progress"] or {}).get("step")}


# -- the bare script --------------------------------------------------------------------------
def bare_run(work: Path, model_dir: str, train_dir: Path, test_dir: Path, n_train: int, method: str, seed: int,
             budget_s: float) -> dict:
    """What one writes by hand: Seq2SeqTrainer, batch 4, lr 1e-5 (full) / 1e-3 (LoRA r32 on
    q,v), stopped when the wall-time budget (voxtune's training time) is used up; scored with
    plain greedy generate on 30 s pieces."""
    import soundfile as sf
    import torch
    from transformers import (Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback,
                              WhisperForConditionalGeneration, WhisperProcessor, set_seed)

    from engine import metrics

    set_seed(seed)
    t0 = time.time()
    processor = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05,
                                                 target_modules=["q_proj", "v_proj"], bias="none"))
    names = sorted(p.stem for p in train_dir.glob("clip*.wav"))[:n_train]
    data = [(sf.read(train_dir / f"{n}.wav", dtype="float32")[0], (train_dir / f"{n}.txt").read_text().strip())
            for n in names]

    def collate(batch):
        feats = processor.feature_extractor([a for a, _ in batch], sampling_rate=16000,
                                            return_tensors="pt").input_features
        enc = processor.tokenizer([t for _, t in batch], padding=True, return_tensors="pt")
        labels = enc.input_ids.masked_fill(enc.attention_mask.ne(1), -100)
        if (labels[:, 0] == model.config.decoder_start_token_id).all():
            labels = labels[:, 1:]
        return {"input_features": feats, "labels": labels}

    class Budget(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if time.time() - t0 >= budget_s:
                control.should_training_stop = True

    args = Seq2SeqTrainingArguments(output_dir=str(work / f"bare-{method}-{seed}"), per_device_train_batch_size=4,
                                    learning_rate=1e-3 if method == "lora" else 1e-5, max_steps=100_000,
                                    warmup_steps=0, logging_steps=10, save_strategy="no", seed=seed,
                                    use_cpu=not torch.cuda.is_available(), report_to="none", disable_tqdm=True,
                                    remove_unused_columns=False, label_names=["labels"])
    Seq2SeqTrainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Budget()]).train()
    wall = time.time() - t0
    model.eval()
    refs, hyps, kinds = [], [], []
    for wav in sorted(test_dir.glob("*.wav")):
        audio = sf.read(wav, dtype="float32")[0]
        pieces = [audio[i:i + 480_000] for i in range(0, len(audio), 480_000)]
        out = []
        for k in range(0, len(pieces), 4):
            feats = processor.feature_extractor(pieces[k:k + 4], sampling_rate=16000,
                                                return_tensors="pt").input_features.to(model.device)
            with torch.no_grad():
                ids = model.generate(input_features=feats, max_new_tokens=440)
            out += processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        refs.append(wav.with_suffix(".txt").read_text().strip())
        hyps.append(" ".join(t.strip() for t in out))
        kinds.append(wav.stem.startswith("long"))

    def nwer(sel):
        r = [x for x, k in zip(refs, kinds) if k == sel]
        h = [x for x, k in zip(hyps, kinds) if k == sel]
        return metrics.wer_normalized(r, h) if r else None

    return {"wer_normalized": metrics.wer_normalized(refs, hyps), "filler_rate": metrics.filler_rate(refs, hyps),
            "deletion_rate": metrics.deletion_rate(refs, hyps), "short": nwer(False), "long": nwer(True),
            "wall_s": wall, "note": f"bare Seq2SeqTrainer, {budget_s:.0f} s budget", "fallback": None}


# -- the table ---------------------------------------------------------------------------------
def _ms(values: list[float | None], fmt: str = ".3f") -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{statistics.mean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}"


def print_table(rows: dict[str, list[dict]]) -> None:
    print(f"\n{'configuration':<22} {'n':>2} {'norm. WER':>15} {'filler rate':>15} {'deletion':>15} "
          f"{'long/short':>11} {'wall s':>9} {'fallback':>8}")
    for name, runs in rows.items():
        ratios = [r["long"] / r["short"] for r in runs if r.get("long") is not None and r.get("short")]
        print(f"{name:<22} {len(runs):>2} {_ms([r['wer_normalized'] for r in runs]):>15} "
              f"{_ms([r['filler_rate'] for r in runs]):>15} {_ms([r['deletion_rate'] for r in runs]):>15} "
              f"{_ms(ratios, '.2f'):>11} {_ms([r['wall_s'] for r in runs], '.0f'):>9} "
              f"{_ms([r.get('fallback') for r in runs], '.0f'):>8}")
    for name, runs in rows.items():
        if runs and runs[0].get("note") and runs[0]["note"] != "base":
            print(f"  {name}: {runs[0]['note']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("VOXTUNE_TEST_MODEL"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sizes", default="10,50")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--test-clips", type=int, default=24)
    ap.add_argument("--long-clips", type=int, default=3)
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "voxtune-bench-cleanup"))
    a = ap.parse_args()
    if not a.model:
        print("give --model or VOXTUNE_TEST_MODEL (a local whisper checkpoint folder)", file=sys.stderr)
        return 2
    if a.quick:
        a.seeds, a.sizes, a.methods, a.test_clips, a.long_clips = 1, "10", "lora", 6, 1
    sizes = [int(s) for s in a.sizes.split(",")]
    work = Path(a.work)
    t0 = time.time()
    train_dir = make_set(work / "train", TRAIN_TEMPLATES, max(sizes) + 3, seed=1)
    test_dir = work / ("test-quick" if a.quick else "test")
    make_set(test_dir, TEST_TEMPLATES, a.test_clips, seed=2, long_clips=a.long_clips,
             long_minutes=(2.0, 2.5) if a.quick else (2.0, 5.0))
    print(f"set: {max(sizes) + 3} training clips, {a.test_clips} + {a.long_clips} long test clips "
          f"({time.time() - t0:.0f} s to build)", flush=True)
    rows: dict[str, list[dict]] = {"base": []}
    rows["base"].append(product_run(work, a.model, train_dir, test_dir, 0, None, 0))
    print_table(rows)
    for n in sizes:
        for method in a.methods.split(","):
            key = f"voxtune {method} {n}"
            rows[key] = []
            if not a.no_bare:
                rows[f"bare {method} {n}"] = []
            for seed in range(a.seeds):
                res = product_run(work, a.model, train_dir, test_dir, n, method, seed)
                rows[key].append(res)
                if not a.no_bare:
                    rows[f"bare {method} {n}"].append(bare_run(work, a.model, train_dir, test_dir, n, method, seed,
                                                               res["wall_s"]))
                print_table(rows)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
