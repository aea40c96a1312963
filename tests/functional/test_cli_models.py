"""`voxtune models | fit | gpus | doctor` as a user runs them: real processes, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.catalog import load_catalog
from engine.store import Store
from engine.workspace import Workspace

pytestmark = pytest.mark.functional
VOXTUNE = str(Path(sys.executable).with_name("voxtune"))
USER_LIST = {"qwen-audio", "qwen2-audio-7b-instruct", "whisper-large-v3", "whisper-medium", "whisper-small",
             "distil-large-v3", "salmonn-7b", "seamless-m4t-v2-large", "w2v-bert-2.0", "voxtral-mini-3b",
             "voxtral-small-24b", "whisper-large-v3-turbo", "qwen2.5-omni-3b", "qwen2.5-omni-7b",
             "granite-speech-3.3-2b"}


def voxtune(*args, cwd=None, timeout=240):
    return subprocess.run([VOXTUNE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_models_vram_12_json(tmp_path):
    cp = voxtune("models", "--vram", "12", "--json", cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    rows = json.loads(cp.stdout)  # nothing else on stdout
    assert {r["name"] for r in rows} >= USER_LIST
    assert len(rows) == len(load_catalog())
    for r in rows:
        assert r["hub_id"] and r["family"] and r["window_s"] > 0 and isinstance(r["trainable"], bool)
        assert r["params_total"] > 0 and set(r["params"]) >= {"audio_encoder", "decoder", "other"}
        if not r["trainable"]:
            assert r["reason"]
        m = r["methods"]
        assert set(m) == {"full", "lora", "qlora", "lora8"}
        for v in m.values():
            assert set(v) >= {"total_gb", "fits", "max_batch"}
        # a quantised base saves only on nn.Linear weights, so on small models with big
        # vocabularies it is not always below a 16-bit LoRA (engine.estimator)
        assert m["qlora"]["total_gb"] <= m["lora8"]["total_gb"] and m["lora"]["total_gb"] <= m["full"]["total_gb"]
    by = {r["name"]: r for r in rows}
    assert by["whisper-small"]["methods"]["full"]["fits"] is True
    assert by["qwen2-audio-7b-instruct"]["methods"]["full"]["fits"] is False
    assert not (tmp_path / "voxtune.json").exists()  # a read-only command leaves no workspace behind


NEW_2026 = {"qwen3-asr-0.6b", "qwen3-asr-1.7b", "granite-speech-3.3-2b", "parakeet-ctc-0.6b", "moonshine-tiny"}


def test_models_json_lists_the_2026_candidates_trainable(tmp_path):
    """Issue 14: at least 10 models beyond the seed's 15; the named ones trainable with full
    and LoRA, and QLoRA / LoRA-8bit since bitsandbytes quantises their linear layers."""
    rows = json.loads(voxtune("models", "--vram", "12", "--json", cwd=tmp_path).stdout)
    by = {r["name"]: r for r in rows}
    assert len(set(by) - USER_LIST) >= 8 and len(rows) >= len(USER_LIST) + 8
    for name in NEW_2026:
        r = by[name]
        assert r["trainable"] and set(r["supported_methods"]) == {"full", "lora", "qlora", "lora8"}, name
        assert r["params"]["source"] == "computed" and r["audio_tokens_per_s"] > 0 and r["licence"], name
    assert by["parakeet-ctc-0.6b"]["output"] == "delete" and "monotonic" in by["parakeet-ctc-0.6b"]["notes"]
    assert by["qwen3-asr-0.6b"]["output"] == "rewrite" and by["qwen3-asr-0.6b"]["whole_audio_s"] == 1200


def test_models_filters_whole_five_minutes_and_output_kind(tmp_path):
    whole = json.loads(voxtune("models", "--vram", "12", "--takes-whole", "300", "--json", cwd=tmp_path).stdout)
    names = {r["name"] for r in whole}
    assert {"qwen3-asr-0.6b", "voxtral-mini-3b", "granite-speech-3.3-2b"} <= names
    assert not names & {"whisper-small", "moonshine-tiny", "parakeet-ctc-0.6b", "w2v-bert-2.0"}
    assert all(r["whole_audio_s"] is None or r["whole_audio_s"] >= 300 for r in whole)
    delete = json.loads(voxtune("models", "--vram", "12", "--output", "delete", "--json", cwd=tmp_path).stdout)
    assert {r["name"] for r in delete} == {e.name for e in load_catalog() if e.family == "ctc"}
    rewrite = json.loads(voxtune("models", "--vram", "12", "--output", "rewrite", "--json", cwd=tmp_path).stdout)
    assert len(rewrite) + len(delete) == len(load_catalog()) and all(r["output"] == "rewrite" for r in rewrite)
    text = voxtune("models", "--vram", "12", "--takes-whole", "300", "--output", "rewrite", cwd=tmp_path)
    assert text.returncode == 0 and "filter: takes 300 s whole, can rewrite" in text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines()[1:])
    bad = voxtune("models", "--output", "shorten", cwd=tmp_path)
    assert bad.returncode == 2 and "--output" in bad.stderr


def test_models_text_table_and_gpu_preset(tmp_path):
    cp = voxtune("models", "--gpu", "rtx-4090", "--batch", "2", cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    assert "NVIDIA GeForce RTX 4090" in cp.stdout and "whisper-large-v3" in cp.stdout
    assert all(len(line) <= 80 for line in cp.stdout.splitlines()[1:])
    assert "salmonn-7b*" in cp.stdout


def test_fit_json_and_measured_next_to_estimated(tmp_path):
    args = ("fit", "OpenAI/Whisper-Large-V3", "--method", "lora8", "--batch", "8", "--lora-rank", "32",
            "--lora-targets", "q_proj,v_proj", "--gpu", "rx-7700-xt", "--json")
    cp = voxtune(*args, cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert set(out) >= {"total_gb", "breakdown", "fits", "max_batch", "recommendation"}
    assert 4 <= out["total_gb"] <= 12 and out["fits"] is True and out["max_batch"] >= 8
    assert out["measured"] is None
    Store(Workspace(tmp_path)).add_measurement({"model": "whisper-large-v3", "method": "lora8", "batch": 8, "audio_seconds": 30,
                                     "lora_rank": 32, "precision": "auto", "gradient_checkpointing": True,
                                     "optimizer": "adamw", "device": "Tesla T4", "peak_allocated_gb": 7.1,
                                     "peak_reserved_gb": 7.8, "estimate_gb": 7.5, "run_id": "r-t4"})
    out = json.loads(voxtune("--home", str(tmp_path), *args).stdout)
    assert out["measured"]["measured_gb"] == 7.8 and out["measured"]["run_id"] == "r-t4"
    text = voxtune("--home", str(tmp_path), *args[:-1]).stdout
    assert "measured" in text and "7.80 GiB" in text and "activations" in text


def test_unknown_model_or_gpu_exits_2_with_close_matches(tmp_path):
    cp = voxtune("fit", "whisper-larg-v3", "--method", "lora", cwd=tmp_path)
    assert cp.returncode == 2 and "whisper-large-v3" in cp.stderr and cp.stdout == ""
    cp = voxtune("models", "--gpu", "rtx-4080", "--json", cwd=tmp_path)
    assert cp.returncode == 2 and "rtx-4090" in cp.stderr and cp.stdout == ""
    cp = voxtune("fit", "whisper-small", "--method", "half", cwd=tmp_path)
    assert cp.returncode == 2


def test_gpus_json(tmp_path):
    cp = voxtune("gpus", "--json", cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert isinstance(out["detected"], list)
    assert {"rx-7700-xt", "rtx-3060", "rtx-3090", "rtx-4090", "a100-40", "a100-80", "h100-80"} <= {
        g["key"] for g in out["presets"]}


def test_doctor_json_runs_its_probe_in_a_subprocess(tmp_path):
    cp = voxtune("--home", str(tmp_path), "doctor", "--json", timeout=400)
    out = json.loads(cp.stdout)
    checks = {f["check"]: f for f in out}
    assert {"torch", "bitsandbytes", "disk", "ffmpeg", "hf-cache"} <= set(checks)
    assert "torch 2." in checks["torch"]["detail"]
    # progress on stderr as each check starts (the torch import alone takes half a minute)
    assert cp.stderr.index("doctor [1] torch: importing it") < cp.stderr.index("bitsandbytes: importing it")
    assert cp.returncode == (1 if any(f["status"] == "fail" for f in out) else 0)


def test_fit_for_a_local_folder_without_safetensors_counts_it_in_a_child(tmp_path):
    cfg = {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"], "d_model": 64,
           "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
           "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "vocab_size": 100, "num_mel_bins": 80,
           "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 3}
    model = tmp_path / "my-whisper"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(cfg))
    cp = voxtune("fit", str(model), "--method", "full", "--json", cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout)
    assert out["model"] == str(model) and out["trainable_params"] > 100 * 64 and out["fits"] is True
