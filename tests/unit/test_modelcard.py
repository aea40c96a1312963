"""The model card's parts that depend on the run: Hub metadata for a catalog base model, one
evaluation row per step with its split, loading snippets per format, no dataset -> a note."""

from __future__ import annotations

from pathlib import Path

from engine import catalog
from engine.modelcard import _front_matter, render_body

CFG = {"model": "whisper-small", "model_ref": "openai/whisper-small", "recipe": "whisper", "family": "seq2seq",
       "method": "lora", "max_steps": 300, "batch_size": 4, "grad_accum": 2, "lr": 1e-3, "lora_rank": 32,
       "lora_alpha": 64, "lora_dropout": 0.05, "language": None, "versions": {"voxtune": "0.1.0", "torch": "2.14.1"}}
STATS = {"name": "calls", "splits": {"train": {"clips": 120, "minutes": 95.5}, "validation": {"clips": 20, "minutes": 14.0},
                                     "test": {"clips": 20, "minutes": 15.2}}, "changed": False}
FINAL = {"step": 300, "wer": 0.21, "cer": 0.1, "wer_normalized": 0.15, "filler_rate": 0.01, "deletion_rate": 0.02,
         "eval_loss": 0.5, "clips": 20}
BEST = dict(FINAL, step=250, wer=0.19)
METRICS = {"final": FINAL, "best": BEST, "exported": BEST, "final_loss": 0.4, "duration_s": 600}


def test_front_matter_for_a_catalog_base_model():
    data = _front_matter(CFG, catalog.get_model("whisper-small"), "peft", "hf")
    assert data.base_model == "openai/whisper-small" and data.license == "mit" and data.library_name == "peft"
    assert data.pipeline_tag == "automatic-speech-recognition" and "lora" in data.tags
    qwen = dict(CFG, model="qwen-audio", model_ref="Qwen/Qwen-Audio", recipe="qwen_audio")
    assert _front_matter(qwen, catalog.get_model("qwen-audio"), "peft", "hf").license is None  # not an HF id


def test_evaluation_rows_name_step_and_split():
    body = render_body(CFG, catalog.get_model("whisper-small"), run_id="r1", ckpt=Path("/x/checkpoint-250"),
                       kind="LoRA adapter", fmt="hf", quantization=None, stats=STATS, metrics=METRICS,
                       folder="export")
    assert "(the best checkpoint by validation WER)" in body
    assert "| final | 300 | validation (20) | 0.2100 |" in body
    assert "| best (by WER), exported (checkpoint-250) | 250 | validation (20) | 0.1900 |" in body
    assert "| train | 120 | 95.5 |" in body and "| effective batch | 8 |" in body
    assert 'WhisperForConditionalGeneration.from_pretrained("openai/whisper-small")' in body
    assert "[openai/whisper-small](https://huggingface.co/openai/whisper-small)" in body


def test_ct2_snippet_passes_the_run_language_and_a_missing_dataset_is_a_note():
    cfg = dict(CFG, language="de")
    body = render_body(cfg, None, run_id="r1", ckpt=Path("/x/checkpoint-300"), kind="merged model", fmt="ct2",
                       quantization="int8", stats={"name": "calls", "missing": "no dataset 'calls'"},
                       metrics={"final": None, "best": None, "exported": None}, folder="export-ct2-int8")
    assert 'model.transcribe("audio.wav", beam_size=5, language="de")' in body
    assert "CTranslate2 model, weights int8" in body and "(the last checkpoint)" in body
    assert "its statistics are not available (no dataset 'calls')" in body
    assert "The run recorded no evaluation" in body
    assert "| ctranslate2 |" in body
