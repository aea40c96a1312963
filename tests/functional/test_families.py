"""Every non-Whisper family x every method through the real engine path on CPU.

A tiny random model of the family (tests/tiny_families.py: real tokenizers/processors) is
queued with engine.queue.add like the CLI does, and trained by `python -m engine.worker
RUN_DIR` in its own process: a couple of steps, an evaluation that writes every metric
and the pinned samples, a checkpoint carrying the processor. qlora and lora8 go through
bitsandbytes, which runs on CPU here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import tiny_families  # noqa: E402
from tiny_models import make_tiny_dataset  # noqa: E402

from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402

REPO = TESTS.parent
FAMILIES = ["ctc", "seamless", "qwen2_audio", "voxtral", "omni"]
METHODS = ["full", "lora", "qlora", "lora8"]
METRICS = ("wer", "cer", "wer_normalized", "filler_rate", "deletion_rate")
WORKER_TIMEOUT_S = 300

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def tiny_model_dirs(tmp_path_factory):
    """One tiny model folder per family, built once for the module (seconds each)."""
    root = tmp_path_factory.mktemp("tiny_families")
    return {key: tiny_families.build(key, root / key) for key in FAMILIES}


def run_worker(run_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO), VOXTUNE_DEVICE="cpu")
    with open(RunFiles(run_dir).log, "ab") as log:
        return subprocess.run([sys.executable, "-m", "engine.worker", str(run_dir)], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=WORKER_TIMEOUT_S)


def queue_run(ws, model_dir: Path, method: str, **overrides) -> Path:
    """Queue like `voxtune queue add` does. Where the catalog still marks a family as not
    trainable (data/catalog.json is another module's; Qwen2.5-Omni was marked before its recipe
    existed), write the same config.json directly so the recipe is still tested end to end."""
    from engine import queue
    from tiny_models import write_run_config

    options = dict(model=str(model_dir), dataset="tiny", method=method, max_steps=2, batch_size=2,
                   grad_accum=1, eval_every=2, save_every=2, lr=1e-3, warmup_steps=0, seed=0, max_new_tokens=8,
                   gradient_checkpointing=False, optimizer="adamw", precision="fp32")
    if method != "full":
        options.update(lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    options.update(overrides)
    try:
        run_id = queue.add(ws, **options)
    except queue.QueueError as e:
        if "cannot be fine-tuned here" not in str(e):
            raise
        from engine.catalog import entry_from_folder

        entry = entry_from_folder(model_dir)
        fields = {k: v for k, v in options.items() if k not in ("model", "dataset")}
        return write_run_config(ws, model_ref=str(model_dir), dataset=options["dataset"], family=entry.family,
                                recipe=entry.recipe, **fields)
    return ws.run_dir(run_id)


def log_tail(run_dir: Path, n: int = 40) -> str:
    lines = RunFiles(run_dir).log.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_evaluates_and_checkpoints(ws, tiny_model_dirs, family, method):
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [0, 1], "test": [2, 3]}, pinned=2)
    run_dir = queue_run(ws, tiny_model_dirs[family], method)
    files = RunFiles(run_dir)
    cfg = read_json(files.config)
    assert cfg["recipe"] == family and cfg["method"] == method

    proc = run_worker(run_dir)
    result = read_json(files.result) or {}
    assert proc.returncode == 0 and result.get("status") == "finished", \
        f"{family}/{method}: exit {proc.returncode}, result {result}\n{log_tail(run_dir)}"

    train = [r for r in read_jsonl(files.metrics) if r.get("kind") == "train"]
    assert train and all(math.isfinite(r["loss"]) for r in train), f"{family}/{method}: no finite train loss"
    evals = [r for r in read_jsonl(files.metrics) if r.get("kind") == "eval"]
    assert evals, f"{family}/{method}: no evaluation record\n{log_tail(run_dir)}"
    for name in METRICS:
        value = evals[-1].get(name)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, \
            f"{family}/{method}: metric {name} = {value!r}"
    samples = read_jsonl(files.samples)
    assert {s["sample_id"] for s in samples} == {"clip00", "clip01"}, f"{family}/{method}: samples {samples}"
    assert all(isinstance(s["prediction"], str) and s["reference"] for s in samples)
    assert result["metrics"]["wer"] == evals[-1]["wer"]

    ckpts = sorted(files.checkpoints.glob("checkpoint-*"))
    assert ckpts, f"{family}/{method}: no checkpoint saved"
    saved = {p.name for p in ckpts[-1].iterdir()}
    weights = "adapter_model.safetensors" if method != "full" else "model.safetensors"
    assert weights in saved, f"{family}/{method}: {ckpts[-1]} holds {sorted(saved)}"
    processor_file = {"ctc": "vocab.json", "seamless": "tokenizer.json", "qwen2_audio": "tokenizer.json",
                      "voxtral": "tekken.json", "omni": "tokenizer.json"}[family]
    assert processor_file in saved, f"{family}/{method}: processor not saved with the checkpoint: {sorted(saved)}"
    if family == "ctc" and method != "full":  # the new head trains and is saved with the adapter
        adapter_cfg = json.loads((ckpts[-1] / "adapter_config.json").read_text())
        assert "lm_head" in (adapter_cfg.get("modules_to_save") or [])

    check_export_and_transcribe(ws, run_dir, family, method)
    if method == "lora":  # "test before/after": score the run's exported model with --eval-only
        check_eval_only(ws, run_dir / "export-merged", family)


def check_eval_only(ws, checkpoint: Path, family: str) -> None:
    run_dir = queue_run(ws, checkpoint, "lora", eval_only=True, split="test")
    proc = run_worker(run_dir)
    files = RunFiles(run_dir)
    result = read_json(files.result) or {}
    assert proc.returncode == 0 and result.get("status") == "finished", \
        f"{family} eval-only: exit {proc.returncode}, result {result}\n{log_tail(run_dir)}"
    evals = [r for r in read_jsonl(files.metrics) if r.get("kind") == "eval"]
    assert len(evals) == 1 and evals[0]["step"] == 0 and evals[0]["clips"] == 2
    assert all(isinstance(evals[0][m], (int, float)) for m in METRICS)
    assert not [r for r in read_jsonl(files.metrics) if r.get("kind") == "train"]


MODEL_CLASSES = {"ctc": "Wav2Vec2BertForCTC", "seamless": "SeamlessM4Tv2ForSpeechToText",
                 "qwen2_audio": "Qwen2AudioForConditionalGeneration", "voxtral": "VoxtralForConditionalGeneration",
                 "omni": "Qwen2_5OmniThinkerForConditionalGeneration"}


def check_export_and_transcribe(ws, run_dir: Path, family: str, method: str) -> None:
    """The run's model leaves voxtune as a folder transformers loads, and transcribes new audio."""
    import transformers
    from transformers import AutoProcessor

    from engine import export, transcribe

    run_id = run_dir.name
    merged = export.export_run(ws, run_id, merge=True)
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists(), \
        f"{family}/{method}: export is not a standalone model: {sorted(p.name for p in merged.iterdir())}"
    model = getattr(transformers, MODEL_CLASSES[family]).from_pretrained(merged)
    processor = AutoProcessor.from_pretrained(merged)
    assert model is not None and processor is not None
    if family == "ctc":  # the run's alphabet, not a fresh one, went with the weights
        assert model.config.vocab_size == len(processor.tokenizer)

    clip = Path(ws.home) / "sources" / "tiny" / "clip02.wav"
    texts = transcribe.transcribe([clip], transcribe.target_for_run(ws, run_id), device="cpu", max_new_tokens=6)
    assert len(texts) == 1 and isinstance(texts[0], str), f"{family}/{method}: transcribe gave {texts!r}"
    again = transcribe.transcribe([clip], transcribe.target_for_model(str(merged)), device="cpu", max_new_tokens=6)
    assert again == texts, f"{family}/{method}: merged export transcribes {again!r}, the run {texts!r}"


# ---- recipe details, in-process (no worker): what the matrix above cannot see ------------------

def _rows(tmp_path: Path, durations: list[float], texts: list[str]) -> list[dict]:
    import soundfile as sf
    from tiny_models import synth_clip

    rows = []
    for i, (dur, text) in enumerate(zip(durations, texts)):
        path = tmp_path / f"r{i}.wav"
        sf.write(path, synth_clip(i, dur), 16000)
        rows.append({"id": f"r{i}", "audio": str(path), "duration": dur, "text": text})
    return rows


def _load(key: str, folder: Path, texts=()):
    import torch

    from engine.recipes import get_recipe

    recipe = get_recipe(key)
    return recipe, recipe.load(str(folder), dtype=torch.float32, quantization_config=None, device_map=None,
                               trust_remote_code=False, train_texts=list(texts))


def test_ctc_vocabulary_keeps_case_and_punctuation(tmp_path):
    from engine.recipes.ctc import DELIM, PAD, build_vocab, make_tokenizer

    texts = ["Hello, World!", "Ça va? Yes: fine."]
    vocab = build_vocab(texts)
    assert vocab == build_vocab(list(reversed(texts)))  # same texts, same ids
    assert vocab[PAD] == 0 and DELIM in vocab and " " not in vocab
    for ch in "HWeÇ,!?:.":
        assert ch in vocab, ch
    tok = make_tokenizer(vocab, tmp_path)
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, group_tokens=False) == text
        assert tok.unk_token_id not in ids


@pytest.mark.parametrize("key", ["qwen2_audio", "voxtral", "omni"])
def test_audio_llm_loss_only_on_answer_and_placeholders_match_encoder(tmp_path, tiny_model_dirs, key):
    """A 6 s clip is longer than the tiny Qwen2-Audio/Voxtral 4 s window: Qwen2-Audio gets it as
    two audio items, Voxtral as one item of two stacked chunks, the Omni thinker (8 s) as one
    item; the forward pass (which checks that the placeholder count equals the encoder's
    output) and generation both work."""
    import torch

    recipe, loaded = _load(key, tiny_model_dirs[key])
    texts = ["Send me the report.", "We meet on Monday, okay?"]
    examples = recipe.examples(_rows(tmp_path, [6.0, 1.0], texts), loaded, for_training=True)
    if key == "qwen2_audio":
        assert isinstance(examples[0].audio, list) and len(examples[0].audio) == 2
    batch = recipe.collate(examples, loaded)
    n_audio = batch["input_features"].shape[0]
    # Qwen2-Audio: audio items (2 + 1); Voxtral: 4 s mel chunks (2 + 1); Omni: whole clips (1 + 1)
    assert n_audio == {"qwen2_audio": 3, "voxtral": 3, "omni": 2}[key]
    for i, text in enumerate(texts):
        answer = batch["labels"][i][batch["labels"][i] != -100].tolist()
        decoded = recipe._decode(answer, loaded)
        assert decoded.strip() == text, (decoded, text)
        # the answer is the end of the sequence: nothing after it but padding
        last = int(batch["attention_mask"][i].sum())
        assert batch["labels"][i][last - len(answer):last].tolist() == answer
    out = loaded.model(**batch)
    assert torch.isfinite(out.loss)
    preds = recipe.generate(loaded.model, loaded, examples, max_new_tokens=4)
    assert len(preds) == 2 and all(isinstance(p, str) for p in preds)


def test_seamless_labels_follow_the_generation_prefix(tmp_path, tiny_model_dirs):
    recipe, loaded = _load("seamless", tiny_model_dirs["seamless"])
    tok = loaded.processor.tokenizer
    examples = recipe.examples(_rows(tmp_path, [1.0], ["Thank you very much."]), loaded, for_training=True)
    batch = recipe.collate(examples, loaded)
    dec, labels = batch["decoder_input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert dec[:2] == [loaded.model.config.decoder_start_token_id, tok.convert_tokens_to_ids("__eng__")]
    assert labels[0] == -100 and labels[-1] == tok.eos_token_id
    assert labels[1:-1] == dec[2:]  # teacher forcing: each label is the next decoder input
    assert tok.decode(labels[1:-1]) == "Thank you very much."


def test_windowed_long_clip_is_segmented_not_truncated(tmp_path, tiny_model_dirs):
    """A 70 s clip for a 30 s-window family: eval pieces cover the audio; training segments
    carry slices of the clean text that join back to all of it."""
    recipe, loaded = _load("ctc", tiny_model_dirs["ctc"], texts=["x"])
    text = " ".join(["We moved the release to Friday."] * 12)
    rows = _rows(tmp_path, [70.0], [text])
    ev = recipe.examples(rows, loaded, for_training=False)
    assert len(ev) >= 3 and all(e.end_s - e.start_s <= 30.05 for e in ev)
    assert sum(e.end_s - e.start_s for e in ev) == pytest.approx(70.0, abs=0.05)
    tr = recipe.examples(rows, loaded, for_training=True)
    assert len(tr) >= 3 and " ".join(e.text for e in tr) == text


def test_qwen_audio_v1_needs_explicit_remote_code_opt_in(tiny_model_dirs):
    from engine.recipes import get_recipe

    recipe = get_recipe("qwen_audio")
    with pytest.raises(PermissionError, match="trust-remote-code"):
        recipe.load("Qwen/Qwen-Audio", dtype=None, quantization_config=None, device_map=None,
                    trust_remote_code=False, train_texts=[])


def test_omni_thinker_loads_from_a_full_omni_checkpoint(tmp_path, tiny_model_dirs):
    """Released Qwen2.5-Omni checkpoints hold thinker + talker + vocoder under `thinker.` /
    `talker.` prefixes (the pre-refactor key layout); the recipe takes the thinker alone."""
    import shutil

    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration

    src = tiny_model_dirs["omni"]
    thinker = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(src)
    renames = [("model.audio_tower.", "thinker.audio_tower."), ("model.visual.", "thinker.visual."),
               ("model.language_model.", "thinker.model."), ("lm_head.", "thinker.lm_head.")]
    old = {}
    for key, value in thinker.state_dict().items():
        new = next(n + key[len(p):] for p, n in renames if key.startswith(p))
        old[new] = value.contiguous()
    old["talker.codec_head.weight"] = torch.zeros(4, 4)  # speech-output weights the thinker ignores
    full = tmp_path / "full"
    full.mkdir()
    save_file(old, str(full / "model.safetensors"), metadata={"format": "pt"})
    Qwen2_5OmniConfig(thinker_config=thinker.config.to_dict(), enable_audio_output=False).save_pretrained(full)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(src / name, full / name)

    recipe, loaded = _load("omni", full)
    got = loaded.model.state_dict()
    want = thinker.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


# Granite Speech was refused here until issue 14; it now trains (its shipped speech adapter is
# merged at load): tests/functional/test_families_2026.py covers it.


def test_ctc_new_head_trains_fully_under_lora(tmp_path, tiny_model_dirs):
    """PEFT freezes all but the adapters; the random new CTC head must still learn."""
    from engine import loading
    from engine.recipes import get_recipe

    recipe = get_recipe("ctc")
    loaded = loading.load_model(recipe, str(tiny_model_dirs["ctc"]), method="lora", train_texts=["Hello world."],
                                lora={"r": 4, "alpha": 8, "targets": list(recipe.default_lora_targets)})
    recipe.examples(_rows(tmp_path, [1.0], ["Hello world."]), loaded, for_training=True)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert any("lm_head" in n and "modules_to_save" in n for n in trainable), sorted(trainable)
    assert any("lora_" in n for n in trainable)
    assert not any("feature_projection" in n for n in trainable)
