"""A finished run's model as a folder other tools load.

Formats:
- `hf` (default): the LoRA adapter (small, needs the base model), or with merge=True a
  standalone model folder with its processor that `from_pretrained` loads without peft.
  Full fine-tunes are always standalone.
- `ct2`: a CTranslate2 model for faster-whisper (Whisper family only), converted by
  CTranslate2's own `TransformersConverter` from the standalone model (LoRA runs are merged
  first, into a temporary folder), with the `tokenizer.json` and `preprocessor_config.json`
  faster-whisper reads next to `model.bin`. Weights are stored as `quantization`
  (default float16, as the published faster-whisper models; faster-whisper converts at load
  time with its `compute_type`).

whisper.cpp's ggml format is not offered: its converter is a script in the whisper.cpp
repository, not a package (see the README); run it on a `--merge` export.

Every export folder gets a model card (README.md, engine.modelcard). The checkpoint exported
is the best by validation WER when the run named one, else the last.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from engine.runfiles import RunFiles, read_json
from engine.workspace import Workspace
from engine.errors import VoxtuneError

FORMATS = ("hf", "ct2")
# weight types CTranslate2's converter accepts (ctranslate2.converters.Converter.convert, 4.x)
CT2_QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                     "float32")
CT2_DEFAULT_QUANTIZATION = "float16"
CT2_RECIPES = ("whisper",)  # families faster-whisper runs (CTranslate2's Whisper model type)
CT2_EXTRA_FILES = ("tokenizer.json",)  # copied from the model folder; preprocessor_config.json is written

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".tiktoken", ".py", ".jinja")
SKIP = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin", "scaler.pt"}


class ExportError(VoxtuneError, ValueError):
    """The run has nothing exportable; the message says why and what to do."""


def pick_checkpoint(files: RunFiles) -> Path:
    """Best checkpoint named in result.json, else the highest-numbered one."""
    result = read_json(files.result, {}) or {}
    best = (result.get("best") or {}).get("checkpoint")
    if best and (files.root / best).is_dir():
        return files.root / best
    ckpts = [p for p in files.checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    if not ckpts:
        raise ExportError(f"run {files.root.name} has no checkpoint in {files.checkpoints}; "
                          "only runs that trained at least until their first save can be exported")
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]))


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").exists()


def export_run(ws: Workspace, run_id: str, merge: bool = False, out: str | Path | None = None,
               format: str = "hf", quantization: str | None = None) -> Path:
    """Write the run's model to `out` in `format`; return the folder.

    Default folders: runs/<id>/export (adapter or full model), export-merged (--merge of an
    adapter), export-ct2-<quantization>. Raises ExportError (refusals the user can act on:
    unknown format, a family CTranslate2/faster-whisper cannot run, a missing package, no
    checkpoint, a non-empty target)."""
    files = RunFiles(ws.run_dir(run_id))
    cfg = read_json(files.config)
    if cfg is None:
        raise ExportError(f"run {run_id}: {files.config} is missing")
    if format not in FORMATS:
        raise ExportError(f"--format {format!r} is not one of {', '.join(FORMATS)}", field="format")
    if quantization is not None and format != "ct2":
        raise ExportError("--quantization applies to --format ct2 only", field="quantization")
    if cfg.get("eval_only"):
        raise ExportError(f"run {run_id} is an evaluation-only run; it trained no model to export")
    if format == "ct2":
        quantization = quantization or CT2_DEFAULT_QUANTIZATION
        _check_ct2(cfg, run_id, quantization)
    ckpt = pick_checkpoint(files)
    adapter = is_adapter(ckpt)
    kind = "merged model" if adapter and (merge or format == "ct2") else "LoRA adapter" if adapter else "full model"
    default = {"hf": "export-merged" if merge and adapter else "export", "ct2": f"export-ct2-{quantization}"}[format]
    target = Path(out).expanduser().resolve() if out else files.root / default
    if target.exists() and any(target.iterdir()):
        raise ExportError(f"{target} already exists and is not empty; choose another --out or remove it")
    target.mkdir(parents=True, exist_ok=True)
    try:
        if format == "ct2":
            _export_ct2(cfg, ckpt, adapter, target, quantization)
        elif adapter and merge:
            _merge(cfg, ckpt, target)
        else:
            for f in ckpt.iterdir():  # adapter or full model + processor files, no optimizer state
                if f.is_file() and f.name not in SKIP and f.suffix in WEIGHT_SUFFIXES:
                    shutil.copy2(f, target / f.name)
        (target / "VOXTUNE_EXPORT.txt").write_text(
            f"run: {run_id}\ncheckpoint: {ckpt.name}\nbase model: {cfg.get('model_ref')}\nmethod: {cfg.get('method')}\n"
            f"kind: {kind}\nformat: {format}" + (f" ({quantization})" if format == "ct2" else "") + "\n",
            encoding="utf-8")
        from engine.modelcard import write_model_card

        write_model_card(ws, run_id, cfg, ckpt, target, kind=kind, fmt=format, quantization=quantization)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave half an export behind
        raise
    return target


def _check_ct2(cfg: dict, run_id: str, quantization: str) -> None:
    """Refuse before any work: a family faster-whisper cannot run, an unknown weight type,
    CTranslate2 not installed."""
    recipe = cfg.get("recipe") or ""
    if recipe not in CT2_RECIPES:
        raise ExportError(
            f"run {run_id}: --format ct2 is for the Whisper family only (faster-whisper runs CTranslate2's "
            f"Whisper models); {cfg.get('model')} is family {cfg.get('family') or '?'} (recipe {recipe or '?'}), "
            "which CTranslate2 cannot convert for it; use --format hf", field="format")
    if quantization not in CT2_QUANTIZATIONS:
        raise ExportError(f"--quantization {quantization!r} is not one of {', '.join(CT2_QUANTIZATIONS)}",
                          field="quantization")
    if importlib.util.find_spec("ctranslate2") is None:
        raise ExportError("--format ct2 needs CTranslate2; install it with pip install 'voxtune[ct2]'",
                          field="format")


def _export_ct2(cfg: dict, ckpt: Path, adapter: bool, target: Path, quantization: str) -> None:
    """CTranslate2's TransformersConverter on the standalone model, plus the files faster-whisper
    reads: tokenizer.json (copied) and preprocessor_config.json (the feature extractor's
    settings; transformers 5 saves them inside processor_config.json, which faster-whisper
    does not read, so they are written with the feature extractor's own serialiser)."""
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperFeatureExtractor

    staging = Path(tempfile.mkdtemp(prefix=".ct2-merge-", dir=target.parent)) if adapter else None
    try:
        source = ckpt
        if staging is not None:  # LoRA: merge into a plain model first
            _merge(cfg, ckpt, staging)
            source = staging
        missing = [name for name in CT2_EXTRA_FILES if not (source / name).is_file()]
        if missing:
            raise ExportError(f"{source}: {', '.join(missing)} missing; faster-whisper needs it next to the model")
        TransformersConverter(str(source), trust_remote_code=bool(cfg.get("trust_remote_code"))).convert(
            str(target), quantization=quantization, force=True)
        for name in CT2_EXTRA_FILES:
            shutil.copy2(source / name, target / name)
        WhisperFeatureExtractor.from_pretrained(str(source)).to_json_file(str(target / "preprocessor_config.json"))
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _merge(cfg: dict, ckpt: Path, target: Path) -> None:
    """Base model in 16/32-bit (never the 4/8-bit one: merging into quantised weights is lossy)
    + adapter, merged and saved with the processor."""
    from engine import loading
    from engine.recipes import get_recipe

    recipe = get_recipe(cfg.get("recipe") or "whisper")
    if hasattr(recipe, "configure"):
        recipe.configure(cfg)
    loaded = loading.load_model(recipe, str(ckpt), method="full", precision="fp32", device="cpu", trainable=False,
                                trust_remote_code=bool(cfg.get("trust_remote_code")))
    loaded.model.save_pretrained(str(target))
    recipe.save(loaded, str(target))
