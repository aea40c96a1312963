"""The 2026 families through the three generic recipes, end to end on CPU.

Each family's tiny random model (tests/tiny_families.py: real processors, offline tokenizers)
is queued with engine.queue.add like the CLI does and trained by `python -m engine.worker` in
its own process: full fine-tuning and LoRA, loss falls over a few steps on four clips, the
evaluation writes every metric. QLoRA (4-bit) and LoRA on an 8-bit base get a tiny run per
generic recipe (bitsandbytes runs on CPU here). In-process tests check what a run cannot show:
the chat-template label mask, Granite's shipped adapter, the CTC head choice.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_families  # noqa: E402
from test_families import METRICS, _load, _rows, log_tail, run_worker  # noqa: E402
from tiny_models import make_tiny_dataset  # noqa: E402

from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402

pytestmark = pytest.mark.functional

# family (catalog recipe key) -> its generic recipe, as engine.recipes.registry declares it
NEW = {"qwen3_asr": "audio_llm", "granite": "audio_llm", "glmasr": "audio_llm", "audioflamingo3": "audio_llm",
       "gemma3n": "audio_llm", "moonshine": "seq2seq", "parakeet_ctc": "ctc"}
# Gemma 3n's model class builds its vision tower with timm (the `gemma3n` extra)
NEEDS = {"gemma3n": "timm"}
# one family per generic recipe for the quantised runs
QUANTISED = ["qwen3_asr", "moonshine", "parakeet_ctc"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    import importlib.util

    root = tmp_path_factory.mktemp("tiny_2026")
    return {key: getattr(tiny_families, f"build_{key}")(root / key) for key in NEW
            if key not in NEEDS or importlib.util.find_spec(NEEDS[key])}


def queue_run(ws, model_dir: Path, method: str, **overrides) -> Path:
    from engine import queue

    options = dict(model=str(model_dir), dataset="tiny", method=method, max_steps=6, batch_size=2, grad_accum=1,
                   eval_every=6, save_every=6, lr=3e-3, warmup_steps=0, seed=0, max_new_tokens=6,
                   gradient_checkpointing=False, optimizer="adamw", precision="fp32")
    if method != "full":
        options.update(lora_rank=8, lora_alpha=16, lora_dropout=0.0)
    options.update(overrides)
    return ws.run_dir(queue.add(ws, **options))


def finished(run_dir: Path, label: str) -> tuple[list[dict], list[dict], str]:
    proc = run_worker(run_dir)
    files = RunFiles(run_dir)
    result = read_json(files.result) or {}
    assert proc.returncode == 0 and result.get("status") == "finished", \
        f"{label}: exit {proc.returncode}, result {result}\n{log_tail(run_dir)}"
    records = read_jsonl(files.metrics)
    return ([r for r in records if r.get("kind") == "train"], [r for r in records if r.get("kind") == "eval"],
            files.log.read_text(errors="replace"))


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("family", list(NEW))
def test_new_family_trains_loss_falls_and_evaluates(ws, tiny_dirs, family, method):
    if family not in tiny_dirs:
        pytest.skip(f"{family} needs the {NEEDS[family]} package (pip install 'voxtune[{family}]')")
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [0, 1], "test": [2, 3]}, pinned=1)
    # LoRA runs with gradient checkpointing, the default (what fits a 12 GiB card): Granite
    # Speech's class has none of its own (transformers raises), so its parts are checkpointed
    run_dir = queue_run(ws, tiny_dirs[family], method, gradient_checkpointing=method == "lora")
    assert read_json(RunFiles(run_dir).config)["recipe"] == family
    train, evals, log = finished(run_dir, f"{family}/{method}")
    losses = [r["loss"] for r in train]
    assert losses and all(math.isfinite(x) for x in losses), f"{family}/{method}: losses {losses}"
    assert losses[-1] < losses[0], f"{family}/{method}: loss did not fall: {losses}\n{log[-3000:]}"
    assert evals and evals[-1]["step"] == 6
    for name in METRICS:
        value = evals[-1].get(name)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, f"{family}: {name}={value!r}"
    if method == "lora":
        assert "LoRA" in log and "4-bit" not in log
        if family == "granite":
            line = next((x for x in log.splitlines() if "gradient checkpointing on" in x), "")
            assert "model.language_model" in line and "GraniteSpeechForConditionalGeneration" in line, log[-2000:]
        export_and_transcribe(ws, run_dir, family)


def export_and_transcribe(ws, run_dir: Path, family: str) -> None:
    """The run leaves voxtune as a standalone folder (adapter merged, processor beside it) that
    transcribes new audio exactly as the run does."""
    from engine import export, transcribe

    merged = export.export_run(ws, run_dir.name, merge=True)
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists(), family
    clip = Path(ws.home) / "sources" / "tiny" / "clip02.wav"
    texts = transcribe.transcribe([clip], transcribe.target_for_run(ws, run_dir.name), device="cpu", max_new_tokens=5)
    again = transcribe.transcribe([clip], transcribe.target_for_model(str(merged)), device="cpu", max_new_tokens=5)
    assert len(texts) == 1 and isinstance(texts[0], str) and again == texts, f"{family}: {texts!r} vs {again!r}"


@pytest.mark.parametrize("method", ["qlora", "lora8"])
@pytest.mark.parametrize("family", QUANTISED)
def test_quantised_run_per_generic_recipe(ws, tiny_dirs, family, method):
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [0, 1], "test": [2, 3]}, pinned=1)
    run_dir = queue_run(ws, tiny_dirs[family], method, max_steps=2, eval_every=2, save_every=2)
    train, evals, log = finished(run_dir, f"{family}/{method}")
    assert train and all(math.isfinite(r["loss"]) for r in train)
    assert evals and "wer" in evals[-1]
    kind = "4-bit" if method == "qlora" else "8-bit"
    assert kind in log and "LoRA" in log, f"{family}/{method}: no {kind} layers in\n{log[-2000:]}"


# ---- in-process: what a run cannot show --------------------------------------------------------

def test_chat_template_labels_cover_exactly_the_answer(tmp_path, tiny_dirs):
    """Qwen3-ASR: the prompt (system, user turn with the expanded audio placeholders) and the
    forced-language prefill "language English<asr_text>" carry no loss; the answer's tokens and
    the end-of-turn token do, and nothing else."""
    import torch

    recipe, loaded = _load("qwen3_asr", tiny_dirs["qwen3_asr"])
    tok = loaded.processor.tokenizer
    texts = ["Send me the report.", "We meet on Monday, okay?"]
    examples = recipe.examples(_rows(tmp_path, [1.5, 0.6], texts), loaded, for_training=True)
    batch = recipe.collate(examples, loaded)
    audio_id = tok.convert_tokens_to_ids("<|audio_pad|>")
    for i, text in enumerate(texts):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        scored = (labels != -100).nonzero().flatten().tolist()
        want = tok(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert len(scored) == len(want)
        end = int(mask.sum())
        assert scored == list(range(scored[0], scored[0] + len(want))), "one contiguous span"
        assert scored[-1] == end - 1, "the conversation ends with the answer's end-of-turn token"
        assert labels[scored].tolist() == want == ids[scored].tolist()
        prompt = tok.decode(ids[:scored[0]])
        assert prompt.endswith("<|im_start|>assistant\nlanguage English<asr_text>")
        assert int((ids == audio_id).sum()) > 0 and not bool((labels == audio_id).any())
    assert torch.isfinite(loaded.model(**batch).loss)


def test_granite_shipped_adapter_is_merged_and_its_lora_trains_on_top(tiny_dirs):
    """Granite Speech checkpoints ship a speech LoRA adapter next to the weights. voxtune merges
    it (the weights then equal base + B@A scaled), leaves no adapter behind, and its own LoRA
    goes on a plain model."""
    import torch
    from safetensors.torch import load_file
    from transformers import GraniteSpeechForConditionalGeneration

    from engine import loading
    from engine.recipes import get_recipe

    folder = tiny_dirs["granite"]
    adapter = load_file(str(folder / "adapter_model.safetensors"))
    base = load_file(str(folder / "model.safetensors"))
    recipe, loaded = _load("granite", folder)
    model = loaded.model
    assert not getattr(model, "_hf_peft_config_loaded", False) and model.config.has_lora_adapter is False
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    a = next(v for k, v in adapter.items() if "layers.0.self_attn.q_proj.lora_A" in k)
    b = next(v for k, v in adapter.items() if "layers.0.self_attn.q_proj.lora_B" in k)
    stored = next(v for k, v in base.items() if k.endswith("layers.0.self_attn.q_proj.weight"))
    expected = stored + (b @ a) * (8 / 4)  # lora_alpha / r of the shipped adapter
    got = dict(model.named_parameters())[name]
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, stored)

    saved = Path(str(folder) + "-merged")  # a full fine-tune's checkpoint: loads back as the same plain model
    model.save_pretrained(saved)
    reloaded = GraniteSpeechForConditionalGeneration.from_pretrained(saved)
    assert torch.equal(dict(reloaded.named_parameters())[name], got.detach())
    assert not (saved / "adapter_config.json").exists() and reloaded.config.has_lora_adapter is False

    lora = loading.load_model(get_recipe("granite"), str(folder), method="lora", train_texts=["x"],
                              lora={"r": 2, "alpha": 4, "targets": ["q_proj", "v_proj"]})
    trainable = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert isinstance(GraniteSpeechForConditionalGeneration.from_pretrained(folder), torch.nn.Module)


def test_ctc_keeps_an_own_vocabulary_only_if_it_writes_the_targets(tiny_dirs):
    """Parakeet's lower-case vocabulary cannot write "Send me the report." (capital, full stop):
    a character head from the texts replaces it and trains fully under LoRA. Lower-case targets
    it can write keep its own head and tokenizer."""
    from engine import loading
    from engine.recipes import get_recipe

    folder = tiny_dirs["parakeet_ctc"]
    recipe = get_recipe("parakeet_ctc")
    cased = loading.load_model(recipe, str(folder), method="lora", train_texts=["Send me the report."],
                               lora={"r": 2, "alpha": 4, "targets": ["q_proj", "v_proj"]})
    assert cased.extra["new_head"] and not cased.extra["own_vocabulary"]
    assert recipe.modules_to_save == ("ctc_head",)
    assert any("ctc_head" in n and "modules_to_save" in n for n, p in cased.model.named_parameters() if p.requires_grad)
    assert "S" in cased.processor.tokenizer.get_vocab()

    plain = get_recipe("parakeet_ctc")
    lower = loading.load_model(plain, str(folder), method="full", train_texts=["send me the report"])
    assert lower.extra["own_vocabulary"] and not lower.extra["new_head"]
    assert lower.model.config.vocab_size == len(lower.processor.tokenizer)
