"""voxtune's training driver versus a plain Hugging Face Trainer script: same model, data,
seed and steps. Prints samples/s of both, their ratio (goal >= 0.98) and both final losses
(which should match: the same training, step for step).

    .venv/bin/python tests/benchmarks/bench_trainer_overhead.py [--steps 40] [--repeats 2]
        [--model FOLDER] [--method full|lora] [--threads N]

Without --model a tiny random Whisper is built; --model /work/shared/models/whisper-tiny.en
gives a real-sized one. Runs alternate (baseline, voxtune, baseline, ...) and the best of
each is compared, so a busy machine penalises both alike. No validation split: the driver's
generation eval is out of the comparison (it only runs every eval_every steps anyway).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plain_trainer(model_dir: Path, audio_text: list[tuple[str, str]], out: Path, *, steps: int, batch: int,
                  lr: float, seed: int, method: str, use_cpu: bool) -> tuple[float, float]:
    """The baseline: what one would write by hand with transformers + peft."""
    import soundfile as sf
    import torch
    from transformers import Trainer, TrainingArguments, WhisperForConditionalGeneration, WhisperProcessor, set_seed

    set_seed(seed)
    processor = WhisperProcessor.from_pretrained(model_dir)
    processor.tokenizer.set_prefix_tokens(predict_timestamps=False)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], bias="none"))
    data = [(sf.read(a, dtype="float32")[0], t) for a, t in audio_text]

    def collate(batch_):
        feats = processor.feature_extractor([a for a, _ in batch_], sampling_rate=16000,
                                            return_tensors="pt").input_features
        enc = processor.tokenizer([t for _, t in batch_], padding=True, return_tensors="pt")
        labels = enc.input_ids.masked_fill(enc.attention_mask.ne(1), -100)
        if (labels[:, 0] == model.config.decoder_start_token_id).all():
            labels = labels[:, 1:]
        return {"input_features": feats, "labels": labels}

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, learning_rate=lr,
                             max_steps=steps, warmup_steps=0, logging_steps=1, save_strategy="steps",
                             save_steps=steps, seed=seed, data_seed=seed, use_cpu=use_cpu, report_to="none",
                             disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
                             dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return result.metrics["train_samples_per_second"], losses[-1]


def voxtune_driver(ws, model_dir: Path, *, steps: int, batch: int, lr: float, seed: int, method: str) -> tuple[float, float]:
    from tiny_models import write_run_config

    from engine import training
    from engine.runfiles import RunFiles, read_json

    run_dir = write_run_config(ws, model_ref=str(model_dir), dataset="bench", method=method, max_steps=steps, batch_size=batch,
                               lr=lr, seed=seed, eval_every=steps * 10, save_every=steps * 10, lora_rank=8,
                               lora_alpha=16, precision="auto", log_every=1)
    assert training.run(run_dir) == 0, (run_dir / "result.json").read_text()
    result = read_json(RunFiles(run_dir).result)
    return result["train_samples_per_s"], result["final_loss"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", help="checkpoint folder (default: a tiny random Whisper)")
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    opts = ap.parse_args()

    import torch

    if opts.threads:
        torch.set_num_threads(opts.threads)
    os.environ["VOXTUNE_DEVICE"] = "cuda" if torch.cuda.is_available() else "cpu"
    from tiny_models import make_tiny_dataset, make_tiny_whisper

    from engine.datasets import load_rows
    from engine.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="voxtune-bench-"))
    model_dir = Path(opts.model) if opts.model else make_tiny_whisper(tmp / "tiny-whisper")
    ws = Workspace(tmp / "ws").ensure()
    n = 8
    make_tiny_dataset(ws, "bench", n=n, splits={"train": list(range(n)), "validation": [], "test": []}, pinned=0)
    rows = load_rows(ws, "bench", "train")
    audio_text = [(r["audio"], r["text"]) for r in rows]
    use_cpu = not torch.cuda.is_available()

    base, vox = [], []
    for k in range(opts.repeats):
        t = time.time()
        base.append(plain_trainer(model_dir, audio_text, tmp / f"plain-{k}", steps=opts.steps, batch=opts.batch,
                                  lr=1e-3, seed=0, method=opts.method, use_cpu=use_cpu))
        t_base = time.time() - t
        t = time.time()
        vox.append(voxtune_driver(ws, model_dir, steps=opts.steps, batch=opts.batch, lr=1e-3, seed=0,
                                  method=opts.method))
        print(f"round {k + 1}: plain {base[-1][0]:.3f} samples/s ({t_base:.1f} s wall), "
              f"voxtune {vox[-1][0]:.3f} samples/s ({time.time() - t:.1f} s wall)", flush=True)
    b, v = max(base), max(vox)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}"
    print(f"\nmodel {model_dir.name}, method {opts.method}, {opts.steps} steps x batch {opts.batch}, {device}")
    print(f"plain HF Trainer : {b[0]:.3f} samples/s, final loss {b[1]:.5f}")
    print(f"voxtune driver   : {v[0]:.3f} samples/s, final loss {v[1]:.5f}")
    print(f"ratio voxtune/plain: {v[0] / b[0]:.3f} (goal >= 0.98); final losses "
          f"{'match' if abs(b[1] - v[1]) <= 1e-3 * max(1.0, abs(b[1])) else 'DIFFER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
