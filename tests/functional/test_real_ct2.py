"""Opt-in, with a real checkpoint: VOXTUNE_TEST_MODEL=/path/to/whisper-tiny.en (a local folder).

A short LoRA run on the demo data, exported as a Transformers model (--merge) and as a
CTranslate2 model with the default float16 weights; faster-whisper on the CPU transcribes the
demo's short recordings like the Transformers model does (same greedy decoding, same 30 s
input window: decode_helpers.pad_to_window): the WER of faster-whisper's text against the
Transformers model's text is at most 0.05. The figure without padding (the two runtimes'
front ends differ on clips under 30 s) is printed for information.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from decode_helpers import FW_GREEDY, fw_greedy, hf_greedy  # noqa: E402

from engine.runfiles import RunFiles, read_json  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.functional]
MAX_NEW_TOKENS = 200  # a short clip's transcript is far shorter; both runtimes stop at <|endoftext|>


def test_faster_whisper_export_transcribes_like_transformers(ws, tmp_path, monkeypatch, capsys):
    from faster_whisper import WhisperModel
    from transformers import WhisperProcessor

    from engine import datasets, metrics, queue, training
    from engine.audio import load_audio
    from engine.export import export_run

    model = Path(os.environ["VOXTUNE_TEST_MODEL"]).expanduser().resolve()
    assert (model / "config.json").exists(), f"VOXTUNE_TEST_MODEL={model} is not a checkpoint folder"
    monkeypatch.setenv("VOXTUNE_DEVICE", os.environ.get("VOXTUNE_DEVICE", "cpu"))
    datasets.ensure_demo(ws)
    run_id = queue.add(ws, model=str(model), dataset="demo", method="lora", max_steps=2, batch_size=2, grad_accum=1,
                       lr=1e-4, warmup_steps=0, lora_rank=8, lora_alpha=16, lora_dropout=0.0, eval_every=2,
                       save_every=2, max_new_tokens=100, precision="fp32", seed=0)
    assert training.run(ws.run_dir(run_id)) == 0, read_json(RunFiles(ws.run_dir(run_id)).result)
    merged = export_run(ws, run_id, merge=True, out=tmp_path / "merged")
    ct2 = export_run(ws, run_id, format="ct2")  # default float16 weights
    assert ct2.name == "export-ct2-float16" and (ct2 / "README.md").exists()

    tok = WhisperProcessor.from_pretrained(merged).tokenizer
    rows = [r for r in datasets.load_rows(ws, "demo", "all") if r["id"].startswith("short_")]
    hf_texts, fw_texts, fw_unpadded = [], [], []
    fw = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=1)
    for row in rows:
        audio = load_audio(row["audio"])
        hf_texts.append(tok.decode(hf_greedy(merged, audio, MAX_NEW_TOKENS), skip_special_tokens=True).strip())
        fw_texts.append(fw_greedy(ct2, audio, None)[1].strip())
        fw_unpadded.append("".join(s.text for s in fw.transcribe(audio, **FW_GREEDY)[0]).strip())
    wer = metrics.wer(hf_texts, fw_texts)
    with capsys.disabled():
        print(f"\nfaster-whisper (ct2 float16) vs transformers on {len(rows)} demo clips: WER {wer:.4f} "
              f"(clips not padded to 30 s: {metrics.wer(hf_texts, fw_unpadded):.4f})")
        for h, f in zip(hf_texts, fw_texts):
            if h != f:
                print(f"  hf: {h}\n  fw: {f}")
    assert all(hf_texts) and wer <= 0.05
