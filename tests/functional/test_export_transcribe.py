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

from decode_helpers import fw_greedy, fw_max_new_tokens, hf_greedy  # noqa: E402
from tiny_models import make_tiny_dataset, make_tiny_whisper, synth_clip  # noqa: E402

from engine.runfiles import RunFiles, read_json  # noqa: E402

REPO = TESTS.parent
pytestmark = pytest.mark.functional


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                PYTHONPATH=str(REPO), VOXTUNE_DEVICE="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Whisper, a workspace with a dataset, and a finished 12-step LoRA run (enough, at
    this learning rate, for the random model to emit a text token, so that transcripts compared
    across runtimes are not empty)."""
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
        run_id = queue.add(ws, model=str(model), dataset="tiny", method="lora", max_steps=12, batch_size=2,
                           eval_every=12, save_every=12, lr=2e-2, warmup_steps=0, lora_rank=4, lora_alpha=8,
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
    # progress on stderr (3 minutes of audio used to take minutes with no output): loading,
    # cutting, then the pieces as they are transcribed, naming the files
    err = proc.stderr
    assert err.index("transcribe: loading") < err.index("transcribe: cutting 2 file(s), 1.1 min of audio") \
        < err.index("transcribe: 4/4 pieces transcribed (short.wav, long.wav")

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


# -- CTranslate2 / faster-whisper and the model card ------------------------------------------
def _card(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def _assert_card_has_no_transcripts(ws, run_id: str, text: str) -> None:
    from engine import datasets
    from engine.runfiles import read_jsonl

    for row in datasets.load_rows(ws, "tiny", "all"):
        assert row["text"] not in text, row["id"]
    for s in read_jsonl(RunFiles(ws.run_dir(run_id)).samples):
        if len(s["prediction"].strip()) > 3:
            assert s["prediction"].strip() not in text


def test_ct2_export_runs_in_faster_whisper_and_matches_transformers(trained, tmp_path):
    """`voxtune runs export ID --format ct2` on a LoRA run: merged, converted by CTranslate2,
    loaded by faster-whisper on the CPU; its greedy tokens and text are the merged
    Transformers model's own, and its encoder is the fine-tuned one, not the base model's."""
    import numpy as np
    import torch
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from engine.export import export_run

    ws, model_dir, run_id = trained
    ct2 = tmp_path / "ct2"
    proc = subprocess.run([sys.executable, "-m", "tui", "--home", str(ws.home), "runs", "export", run_id,
                           "--format", "ct2", "--quantization", "float32", "--out", str(ct2)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(ct2) in proc.stdout
    assert {"model.bin", "config.json", "vocabulary.json", "tokenizer.json", "preprocessor_config.json",
            "README.md"} <= {p.name for p in ct2.iterdir()}
    assert not [p for p in ws.run_dir(run_id).iterdir() if p.name.startswith(".ct2-merge-")]  # staging removed
    merged = export_run(ws, run_id, merge=True, out=tmp_path / "merged")

    audio = synth_clip(1, 2.0)
    n = 8
    hf_tokens = hf_greedy(merged, audio, n)
    fw_tokens, fw_text = fw_greedy(ct2, audio, fw_max_new_tokens(n))
    assert len(hf_tokens) == n, hf_tokens  # the random model never ends early: n tokens to compare
    assert fw_tokens == hf_tokens
    tok = WhisperProcessor.from_pretrained(merged).tokenizer
    assert fw_text.strip() and fw_text.strip() == tok.decode(hf_tokens, skip_special_tokens=True).strip()

    # the converted encoder is the merged (fine-tuned) one: LoRA also adapts the encoder's q/v
    fw = WhisperModel(str(ct2), device="cpu", compute_type="float32", cpu_threads=1)
    feats = pad_or_trim(fw.feature_extractor(audio))[None].astype(np.float32)
    ct2_enc = np.array(fw.encode(feats)).astype(np.float32)
    with torch.no_grad():
        def encode(folder):
            m = WhisperForConditionalGeneration.from_pretrained(folder).eval()
            return m.get_encoder()(torch.from_numpy(feats)).last_hidden_state.numpy()
        tuned, base = encode(merged), encode(model_dir)
    assert np.abs(ct2_enc - tuned).max() < 1e-3
    assert np.abs(ct2_enc - base).max() > 1e-2

    card = _card(ct2)
    assert card.data.library_name == "ctranslate2"
    assert card.data.pipeline_tag == "automatic-speech-recognition"
    assert {"voxtune", "ctranslate2", "faster-whisper", "lora"} <= set(card.data.tags)
    assert "from faster_whisper import WhisperModel" in card.text and "float32" in card.text
    _assert_card_has_no_transcripts(ws, run_id, card.content)


def test_ct2_int8_export_is_smaller_and_loads(trained, tmp_path):
    from engine.export import export_run

    ws, _, run_id = trained
    full = export_run(ws, run_id, format="ct2", quantization="float32", out=tmp_path / "f32")
    small = export_run(ws, run_id, format="ct2", quantization="int8")
    assert small == ws.run_dir(run_id) / "export-ct2-int8"
    ratio = (small / "model.bin").stat().st_size / (full / "model.bin").stat().st_size
    assert ratio < 0.5, ratio  # int8 linear weights; embeddings and norms stay wider
    tokens, _ = fw_greedy(small, synth_clip(2, 1.5), fw_max_new_tokens(4), compute_type="int8")
    assert tokens
    assert "int8" in _card(small).text


def test_every_export_format_writes_a_model_card(trained, tmp_path):
    from engine.export import export_run
    from engine.runfiles import read_json

    ws, model_dir, run_id = trained
    files = RunFiles(ws.run_dir(run_id))
    result = read_json(files.result)
    final = list(files.iter_metrics("eval"))[-1]
    folders = {"adapter": export_run(ws, run_id, out=tmp_path / "adapter"),
               "merged": export_run(ws, run_id, merge=True, out=tmp_path / "merged"),
               "ct2": export_run(ws, run_id, format="ct2", out=tmp_path / "ct2")}
    libraries = {"adapter": "peft", "merged": "transformers", "ct2": "ctranslate2"}
    for kind, folder in folders.items():
        card = _card(folder)
        assert card.data.library_name == libraries[kind], kind
        assert card.data.pipeline_tag == "automatic-speech-recognition"
        assert "voxtune" in card.data.tags and "whisper" in card.data.tags
        assert card.data.base_model is None  # a local base folder is no Hub id; the text names it
        text = card.text
        assert f"local checkpoint (`{model_dir.name}`)" in text
        # method and hyper-parameters
        assert "| method | lora |" in text and "| LoRA rank | 4 |" in text and "| learning rate | 0.02 |" in text
        # dataset statistics: clips per split (4 train, 2 validation, 2 test), minutes
        assert "| train | 4 |" in text and "| validation | 2 |" in text and "| test | 2 |" in text
        # final and best metrics with their split
        assert result["best"]["step"] == final["step"] == 12  # one evaluation: final, best and exported
        assert (f"| final, best (by WER), exported (checkpoint-12) | 12 | validation (2) | {final['wer']:.4f} | "
                f"{final['cer']:.4f} |") in text
        # versions, loading instructions
        assert "| transformers |" in text and "| voxtune |" in text
        assert {"adapter": "PeftModel.from_pretrained", "merged": 'pipeline("automatic-speech-recognition"',
                "ct2": "WhisperModel("}[kind] in text
        _assert_card_has_no_transcripts(ws, run_id, card.content)
