"""Apply a model -- a run's best checkpoint, an exported folder, a catalog model -- to new
recordings of any length, and return the cleaned text.

Long recordings are cut at pauses into pieces the model can hear (the recipe's evaluation
path, the same one that scores runs), transcribed piece by piece and joined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from engine.runfiles import RunFiles, read_json
from engine.workspace import Workspace
from engine.errors import VoxtuneError


class TranscribeError(VoxtuneError, ValueError):
    """Bad model or audio argument; the message says which and what to do."""


@dataclass(frozen=True)
class Target:
    ref: str  # folder or hub id handed to engine.loading
    recipe: str
    config: dict  # run options that matter for inference (language, max_new_tokens)


def target_for_run(ws: Workspace, run_id: str) -> Target:
    from engine.export import ExportError, pick_checkpoint

    files = RunFiles(ws.run_dir(run_id))
    cfg = read_json(files.config)
    if cfg is None:
        raise TranscribeError(f"no run {run_id!r} in {ws.runs_dir}; `voxtune runs ls` lists them")
    if cfg.get("eval_only"):  # nothing trained: the run's model is its base model
        return Target(cfg["model_ref"], cfg.get("recipe") or "whisper", cfg)
    try:
        ckpt = pick_checkpoint(files)
    except ExportError as e:
        raise TranscribeError(str(e)) from e
    return Target(str(ckpt), cfg.get("recipe") or "whisper", cfg)


def target_for_model(model: str) -> Target:
    """A catalog name/hub id, a local checkpoint folder, or an exported adapter folder."""
    from engine import catalog

    path = Path(model).expanduser()
    if path.is_dir() and (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
        inner = target_for_model(base)
        return Target(str(path.resolve()), inner.recipe, inner.config)
    try:
        entry = catalog.get_model(model)
    except catalog.UnknownModel as e:
        raise TranscribeError(str(e)) from e
    ref = str(path.resolve()) if path.is_dir() else entry.hub_id
    return Target(ref, entry.recipe, {})


def transcribe(audio_paths: Sequence[str | Path], target: Target, **options) -> list[str]:
    """One cleaned transcript per audio file, in order."""
    return [r["text"] for r in transcribe_detailed(audio_paths, target, **options)]


def transcribe_detailed(audio_paths: Sequence[str | Path], target: Target, *, device: str | None = None,
                        max_new_tokens: int | None = None, batch_size: int = 4,
                        progress: Callable[[str], None] | None = None) -> list[dict]:
    """Per file: {audio, text, duration_s, pieces} (pieces: how many windows it was cut into).
    `progress(line)` is told what happens: loading, cutting, then each batch of pieces done."""
    import time

    import torch

    from engine.quiet import quiet_worker_logs

    quiet_worker_logs()  # no per-generate max_length notice, no deprecations, no progress bars
    say = progress or (lambda _line: None)

    from engine import loading
    from engine.audio import AudioError, probe
    from engine.recipes import get_recipe
    from engine.training import join_predictions

    rows = []
    for i, p in enumerate(audio_paths):
        try:
            info = probe(p)
        except AudioError as e:
            raise TranscribeError(str(e)) from e
        rows.append({"id": f"{i:05d}", "audio": str(Path(p).resolve()), "duration": info.duration, "text": ""})
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = "fp32" if device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    recipe = get_recipe(target.recipe)
    say(f"loading {target.ref} on {device} ({precision})")
    if hasattr(recipe, "configure"):
        recipe.configure(target.config)
    try:
        loaded = loading.load_model(recipe, target.ref, method="full", precision=precision, device=device,
                                    trainable=False, trust_remote_code=bool(target.config.get("trust_remote_code")))
    except loading.ModelNotAvailable as e:
        raise TranscribeError(str(e)) from e
    model = loaded.model.to(device).eval()
    max_new = int(max_new_tokens or target.config.get("max_new_tokens") or 440)
    minutes = sum(r["duration"] for r in rows) / 60
    say(f"cutting {len(rows)} file(s), {minutes:.1f} min of audio, into pieces the model hears whole")
    examples = recipe.examples(rows, loaded, for_training=False)
    names = {r["id"]: Path(p).name for r, p in zip(rows, audio_paths)}
    preds: list[str] = []
    t0 = time.monotonic()
    with torch.no_grad():
        for k in range(0, len(examples), batch_size):
            batch = examples[k:k + batch_size]
            preds.extend(recipe.generate(model, loaded, batch, max_new))
            files = ", ".join(dict.fromkeys(names.get(ex.clip_id, "?") for ex in batch))
            say(f"{len(preds)}/{len(examples)} pieces transcribed ({files}; {time.monotonic() - t0:.0f} s)")
    texts = join_predictions(rows, examples, preds)
    pieces = {r["id"]: sum(1 for ex in examples if ex.clip_id == r["id"]) for r in rows}
    return [{"audio": str(p), "text": t, "duration_s": round(r["duration"], 3), "pieces": pieces[r["id"]]}
            for p, r, t in zip(audio_paths, rows, texts)]
