"""The model card (README.md) every `voxtune runs export` folder gets, in Hugging Face's format:
YAML front matter (base_model, library_name, tags, license when the catalog knows it,
pipeline_tag) written by huggingface_hub's own `ModelCardData`, then Markdown sections.

It states what a reader needs to trust and use the model: the base model, the method and
its hyper-parameters, the dataset's statistics (clips and minutes per split -- never a
transcript: the card is meant to be published, the data may not be), the final and best
evaluation metrics with the split and number of clips they were measured on, the voxtune
and library versions, and how to load the folder in its format. The folder is then ready
for `huggingface-cli upload USER/REPO FOLDER`; voxtune itself uploads nothing.

Light module: huggingface_hub is imported inside `write_model_card` only.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path
from typing import Any

from engine.runfiles import RunFiles, read_json
from engine.workspace import Workspace

# catalog licence -> Hugging Face license identifier (https://hf.co/docs/hub/repositories-licenses)
HF_LICENSES = {"mit": "mit", "apache-2.0": "apache-2.0", "cc-by-nc-4.0": "cc-by-nc-4.0", "cc-by-4.0": "cc-by-4.0"}
ASR_PIPELINE_RECIPES = ("whisper", "ctc")  # families transformers' ASR pipeline loads
METRIC_COLUMNS = (("wer", "WER"), ("cer", "CER"), ("wer_normalized", "WER (normalised)"),
                  ("filler_rate", "filler rate"), ("deletion_rate", "deletion rate"), ("eval_loss", "eval loss"))


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _num(v: Any, spec: str = ".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _step_of(ckpt: Path) -> int | None:
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def is_local_ref(ref: str | None) -> bool:
    return bool(ref) and (Path(str(ref)).is_absolute() or Path(str(ref)).expanduser().exists())


def dataset_stats(ws: Workspace, cfg: dict) -> dict:
    """{name, splits: {split: {clips, minutes}}, changed: bool} from the dataset as it is now;
    {name, missing: reason} when it cannot be read. Durations only: no text leaves here."""
    from engine import datasets

    name = cfg.get("dataset")
    try:
        record = datasets.get(ws, name)
        splits = {}
        for split in ("train", "validation", "test"):
            rows = datasets.load_rows(ws, name, split)
            splits[split] = {"clips": len(rows), "minutes": sum(float(r.get("duration") or 0) for r in rows) / 60}
    except Exception as e:  # noqa: BLE001 -- a removed dataset must not block an export
        return {"name": name, "missing": str(e).splitlines()[0] if str(e) else type(e).__name__}
    changed = bool(cfg.get("dataset_manifest_hash")) and record.get("manifest_hash") != cfg.get("dataset_manifest_hash")
    return {"name": name, "splits": splits, "changed": changed}


def run_metrics(files: RunFiles, ckpt: Path) -> dict:
    """The final evaluation, the best one (by WER, as the driver chose it) and the exported
    checkpoint's, each an eval record of metrics.jsonl (or None)."""
    evals = list(files.iter_metrics("eval"))
    result = read_json(files.result, {}) or {}
    best = result.get("best") or {}
    by_step = {e.get("step"): e for e in evals}
    return {"final": evals[-1] if evals else None,
            "best": by_step.get(best.get("step")) or ({"step": best["step"], "wer": best.get("wer")}
                                                      if best.get("step") is not None else None),
            "exported": by_step.get(_step_of(ckpt)),
            "final_loss": result.get("final_loss"),
            "duration_s": result.get("duration_s"),
            "status": result.get("status")}


def _front_matter(cfg: dict, entry: Any, library: str, fmt: str) -> Any:
    from huggingface_hub import ModelCardData

    base = cfg.get("model_ref")
    licence = str(getattr(entry, "licence", "") or "").strip()
    tags = ["voxtune", cfg.get("recipe") or "", "automatic-speech-recognition", "fine-tuned"]
    if cfg.get("method") != "full":
        tags += ["lora", str(cfg.get("method"))]
    if fmt == "ct2":
        tags += ["ctranslate2", "faster-whisper"]
    return ModelCardData(
        base_model=None if is_local_ref(base) else base,
        library_name=library,
        license=HF_LICENSES.get(licence.lower()),
        pipeline_tag="automatic-speech-recognition",
        tags=list(dict.fromkeys(t for t in tags if t)),
    )


def _hyper_parameters(cfg: dict) -> list[tuple[str, Any]]:
    batch, accum = int(cfg.get("batch_size") or 1), int(cfg.get("grad_accum") or 1)
    rows: list[tuple[str, Any]] = [("method", cfg.get("method"))]
    if cfg.get("max_steps"):
        rows.append(("steps", cfg.get("max_steps")))
    else:
        rows.append(("epochs", cfg.get("epochs")))
    rows += [("batch size (per step)", batch), ("gradient accumulation", accum), ("effective batch", batch * accum),
             ("learning rate", cfg.get("lr")), ("warmup steps", cfg.get("warmup_steps")),
             ("optimizer", cfg.get("optimizer")), ("precision", cfg.get("precision")), ("seed", cfg.get("seed"))]
    if cfg.get("method") != "full":
        rows += [("LoRA rank", cfg.get("lora_rank")), ("LoRA alpha", cfg.get("lora_alpha")),
                 ("LoRA dropout", cfg.get("lora_dropout")),
                 ("LoRA target modules", ", ".join(cfg.get("lora_targets") or []) or "family default")]
    rows += [("gradient checkpointing", cfg.get("gradient_checkpointing")),
             ("audio encoder frozen", cfg.get("freeze_audio_encoder")),
             ("evaluation every (steps)", cfg.get("eval_every")), ("max new tokens (evaluation)", cfg.get("max_new_tokens")),
             ("language", cfg.get("language") or "the model's default")]
    return rows


def _usage(cfg: dict, entry: Any, kind: str, fmt: str, folder: str) -> str:
    model_class = getattr(entry, "model_class", None) or "AutoModel"
    recipe = cfg.get("recipe") or ""
    if fmt == "ct2":
        lang = f', language="{cfg["language"]}"' if cfg.get("language") else ""
        return (
            "CTranslate2 model for [faster-whisper](https://github.com/SYSTRAN/faster-whisper) "
            "(`pip install faster-whisper`):\n\n```python\nfrom faster_whisper import WhisperModel\n\n"
            f'model = WhisperModel("{folder}", device="cpu", compute_type="int8")  # GPU: device="cuda", '
            'compute_type="float16"\n'
            f'segments, info = model.transcribe("audio.wav", beam_size=5{lang})\n'
            'print(" ".join(s.text.strip() for s in segments))\n```\n')
    if kind == "LoRA adapter":
        base = cfg.get("model_ref")
        return (
            "A PEFT LoRA adapter: it needs its base model (`pip install transformers peft`).\n\n"
            f"```python\nfrom peft import PeftModel\nfrom transformers import AutoProcessor, {model_class}\n\n"
            f'base = {model_class}.from_pretrained("{base}")\n'
            f'model = PeftModel.from_pretrained(base, "{folder}")  # .merge_and_unload() for a plain model\n'
            f'processor = AutoProcessor.from_pretrained("{folder}")\n```\n\n'
            f"With voxtune: `voxtune transcribe --model {folder} audio.wav`.\n")
    if recipe in ASR_PIPELINE_RECIPES:
        snippet = ('from transformers import pipeline\n\n'
                   f'asr = pipeline("automatic-speech-recognition", model="{folder}")\n'
                   'print(asr("audio.wav")["text"])')
    else:
        snippet = (f"from transformers import AutoProcessor, {model_class}\n\n"
                   f'model = {model_class}.from_pretrained("{folder}")\n'
                   f'processor = AutoProcessor.from_pretrained("{folder}")')
    return ("A standalone Transformers model with its processor (`pip install transformers`).\n\n"
            f"```python\n{snippet}\n```\n\nWith voxtune: `voxtune transcribe --model {folder} audio.wav`.\n")


def render_body(cfg: dict, entry: Any, *, run_id: str, ckpt: Path, kind: str, fmt: str, quantization: str | None,
                stats: dict, metrics: dict, folder: str) -> str:
    """The Markdown below the front matter (pure: every input is given)."""
    base = cfg.get("model_ref")
    base_text = (f"a local checkpoint (`{Path(str(base)).name}`)" if is_local_ref(base)
                 else f"[{base}](https://huggingface.co/{base})")
    what = {"hf": kind, "ct2": f"CTranslate2 model, weights {quantization}"}[fmt]
    best_step = (metrics.get("best") or {}).get("step")
    out = [f"# {run_id}", "",
           f"A speech-recognition model (voxtune recipe `{cfg.get('recipe')}`) fine-tuned from {base_text} with "
           f"voxtune, method `{cfg.get('method')}`. This folder: {what}, from `{ckpt.name}` "
           + ("(the best checkpoint by validation WER)." if best_step is not None and best_step == _step_of(ckpt)
              else "(the last checkpoint)."), ""]

    out += ["## Training", "", "| hyper-parameter | value |", "| --- | --- |"]
    out += [f"| {k} | {v if v is not None else '-'} |" for k, v in _hyper_parameters(cfg)]
    if metrics.get("final_loss") is not None:
        out.append(f"| final training loss | {_num(metrics['final_loss'])} |")
    if metrics.get("duration_s"):
        out.append(f"| training time | {metrics['duration_s'] / 60:.1f} min |")
    out.append("")

    out += ["## Data", ""]
    if stats.get("missing"):
        out += [f"Dataset `{stats.get('name')}`: its statistics are not available ({stats['missing']}).", ""]
    else:
        out += [f"Dataset `{stats['name']}` (private; no transcripts are included here).", "",
                "| split | clips | minutes |", "| --- | ---: | ---: |"]
        out += [f"| {s} | {v['clips']} | {v['minutes']:.1f} |" for s, v in stats["splits"].items()]
        if stats.get("changed"):
            out += ["", "The dataset changed after this run was queued; these figures are of the dataset as it is now."]
        out.append("")

    out += ["## Evaluation", ""]
    rows: list[tuple[str, dict]] = []  # one row per evaluated step: "final, best (by WER), exported"
    for key, label in (("final", "final"), ("best", "best (by WER)"), ("exported", f"exported ({ckpt.name})")):
        rec = metrics.get(key)
        if not rec:
            continue
        same = next((i for i, (_, r) in enumerate(rows) if r.get("step") == rec.get("step")), None)
        if same is None:
            rows.append((label, rec))
        else:
            rows[same] = (f"{rows[same][0]}, {label}", rows[same][1])
    if rows:
        out += ["Measured by generation on the **validation** split at the given training step. WER and CER "
                "on the texts as written (case and punctuation count); normalised WER after lower-casing and "
                "removing punctuation; filler rate: fillers left in per predicted word; deletion rate: "
                "reference words dropped per reference word (corpus-level, jiwer).", "",
                "| evaluation | step | split (clips) | " + " | ".join(lbl for _, lbl in METRIC_COLUMNS) + " |",
                "| --- | ---: | --- | " + " | ".join("---:" for _ in METRIC_COLUMNS) + " |"]
        for label, rec in rows:
            clips = f"validation ({rec['clips']})" if rec.get("clips") is not None else "validation"
            out.append(f"| {label} | {rec.get('step', '-')} | {clips} | "
                       + " | ".join(_num(rec.get(k)) for k, _ in METRIC_COLUMNS) + " |")
    else:
        out.append("The run recorded no evaluation (its dataset has no validation clips).")
    out.append("")

    out += ["## How to use", "", _usage(cfg, entry, kind, fmt, folder),
            f"Upload (optional, voxtune uploads nothing): `huggingface-cli upload USER/REPO {folder}`.", ""]

    trained = cfg.get("versions") or {}
    out += ["## Versions", "", "| | when trained | when exported |", "| --- | --- | --- |"]
    names = ["voxtune", "python", "torch", "transformers", "peft"] + (["ctranslate2"] if fmt == "ct2" else [])
    for name in names:
        now = platform.python_version() if name == "python" else _version(name)
        out.append(f"| {name} | {trained.get(name) or '-'} | {now or '-'} |")
    out.append("")
    return "\n".join(out)


def write_model_card(ws: Workspace, run_id: str, cfg: dict, ckpt: Path, target: Path, *, kind: str, fmt: str,
                     quantization: str | None = None) -> Path:
    """Write target/README.md for an export of run `run_id` from checkpoint `ckpt`; return its path.

    kind: "LoRA adapter" | "merged model" | "full model"; fmt: "hf" | "ct2"."""
    from huggingface_hub import ModelCard

    from engine import catalog

    try:
        entry = catalog.get_model(str(cfg.get("model") or cfg.get("model_ref")))
    except Exception:  # noqa: BLE001 -- a model folder that moved away: no licence, generic snippets
        entry = None
    library = "ctranslate2" if fmt == "ct2" else ("peft" if kind == "LoRA adapter" else "transformers")
    files = RunFiles(ws.run_dir(run_id))
    body = render_body(cfg, entry, run_id=run_id, ckpt=ckpt, kind=kind, fmt=fmt, quantization=quantization,
                       stats=dataset_stats(ws, cfg), metrics=run_metrics(files, ckpt), folder=target.name)
    data = _front_matter(cfg, entry, library, fmt)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    path = Path(target) / "README.md"
    card.save(str(path))
    return path
