"""Using a run's result: export (adapter or merged), evaluation-only runs on base and
exported models, and `voxtune transcribe` on short and long recordings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from tiny_models import make_tiny_dataset, make_tiny_whisper, synth_clip  # noqa: E402

from engine.runfiles import RunFiles, read_json  # noqa: E402

REPO = TESTS.parent
pytestmark = pytest.mark.functional


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                PYTHONPATH=str(REPO), VOXTUNE_DEVICE="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Whisper, a workspace with a dataset, and a finished 3-step LoRA run."""
    import torch

    from engine import queue, training
    from engine.workspace import Workspace

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    model = make_tiny_whisper(root / "tiny-whisper")
    ws = Workspace(root / "ws").ensure()
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [0, 1], "test": [2, 3]}, pinned=2)
    os.environ["VOXTUNE_DEVICE"] = "cpu"
    try:
        run_id = queue.add(ws, model=str(model), dataset="tiny", method="lora", max_steps=3, batch_size=2,
                           eval_every=3, save_every=3, lr=5e-3, warmup_steps=0, lora_rank=4, lora_alpha=8,
                           lora_dropout=0.0, max_new_tokens=6, precision="fp32", seed=0)
        assert training.run(ws.run_dir(run_id)) == 0
    finally:
        os.environ.pop("VOXTUNE_DEVICE", None)
    return ws, model, run_id


def test_export_adapter_and_merged_model_load_and_agree(trained, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from engine.export import ExportError, export_run

    ws, model_dir, run_id = trained
    adapter = export_run(ws, run_id)
    assert adapter == ws.run_dir(run_id) / "export"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "VOXTUNE_EXPORT.txt"} <= {
        p.name for p in adapter.iterdir()}
    assert not (adapter / "optimizer.pt").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(model_dir)

    merged = export_run(ws, run_id, merge=True, out=tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists()
    standalone = WhisperForConditionalGeneration.from_pretrained(merged).eval()
    processor = WhisperProcessor.from_pretrained(merged)
    with_adapter = PeftModel.from_pretrained(WhisperForConditionalGeneration.from_pretrained(model_dir), adapter).eval()
    feats = processor.feature_extractor([synth_clip(1)], sampling_rate=16000, return_tensors="pt").input_features
    dec = torch.tensor([[50257, 50362, 15496]])
    with torch.no_grad():
        a = standalone(input_features=feats, decoder_input_ids=dec).logits
        b = with_adapter(input_features=feats, decoder_input_ids=dec).logits
    assert torch.allclose(a, b, atol=1e-4)
    # the LoRA actually changed the model (else this comparison would prove nothing)
    base = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    with torch.no_grad():
        c = base(input_features=feats, decoder_input_ids=dec).logits
    assert not torch.allclose(a, c, atol=1e-4)

    with pytest.raises(ExportError, match="not empty"):
        export_run(ws, run_id, merge=True, out=tmp_path / "merged")


def run_worker(run_dir: Path) -> int:
    with open(RunFiles(run_dir).log, "ab") as log:
        return subprocess.run([sys.executable, "-m", "engine.worker", str(run_dir)], cwd=REPO, env=env(),
                              stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode


@pytest.mark.parametrize("which", ["base", "adapter", "merged"])
def test_eval_only_scores_a_base_model_or_an_exported_model(trained, tmp_path, which):
    from engine import queue
    from engine.export import export_run
    from engine.runfiles import atomic_write_json

    ws, model_dir, run_id = trained
    model = str(model_dir)
    if which == "merged":
        model = str(export_run(ws, run_id, merge=True, out=tmp_path / "merged"))
    eval_id = queue.add(ws, model=model, dataset="tiny", method="lora", eval_only=True, split="test",
                        batch_size=2, max_new_tokens=6, precision="fp32")
    if which == "adapter":  # the driver loads an adapter folder on its base model
        out = ws.run_dir(run_id) / "export"
        adapter = out if out.exists() else export_run(ws, run_id)
        cfg = read_json(RunFiles(ws.run_dir(eval_id)).config)
        cfg["model_ref"] = str(adapter)
        atomic_write_json(RunFiles(ws.run_dir(eval_id)).config, cfg)
    run_dir = ws.run_dir(eval_id)
    assert run_worker(run_dir) == 0, RunFiles(run_dir).log.read_text()[-3000:]
    files = RunFiles(run_dir)
    result = read_json(files.result)
    assert result["status"] == "finished"
    (ev,) = list(files.iter_metrics("eval"))
    assert ev["step"] == 0 and ev["clips"] == 2  # the test split
    assert set(result["metrics"]) >= {"wer", "cer", "wer_normalized", "filler_rate", "deletion_rate", "eval_loss"}
    assert not list(files.iter_metrics("train")) and not list(files.checkpoints.glob("checkpoint-*"))


def test_transcribe_cli_handles_short_and_long_recordings(trained, tmp_path):
    import soundfile as sf

    ws, model_dir, run_id = trained
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, synth_clip(2, 1.5), 16000)
    sf.write(long, synth_clip(3, 65.0), 16000)  # over two Whisper windows: cut, transcribed, joined
    cmd = [sys.executable, "-m", "tui", "--home", str(ws.home), "transcribe", "--run", run_id,
           "--max-new-tokens", "4", "--json", str(short), str(long)]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert [o["audio"] for o in out] == [str(short), str(long)]
    assert all(isinstance(o["text"], str) for o in out)
    # the long recording was cut into <= 30 s pieces whose outputs are joined; nothing cut off
    assert [o["pieces"] for o in out] == [1, 3]
    assert out[1]["duration_s"] == pytest.approx(65.0)

    bad = subprocess.run([sys.executable, "-m", "tui", "transcribe", "--model", "no-such-model", str(short)],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no-such-model" in bad.stderr
    missing = subprocess.run([sys.executable, "-m", "tui", "transcribe", "--model", str(model_dir),
                              str(tmp_path / "nope.wav")], cwd=REPO, env=env(), capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "nope.wav: file not found" in missing.stderr


def test_export_refuses_runs_without_checkpoints(trained):
    from engine import queue
    from engine.export import ExportError, export_run

    ws, model_dir, _ = trained
    run_id = queue.add(ws, model=str(model_dir), dataset="tiny", method="lora", max_steps=2)
    with pytest.raises(ExportError, match="no checkpoint"):
        export_run(ws, run_id)
