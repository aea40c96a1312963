"""A finished run's model as a folder other tools load: the LoRA adapter (small, needs the
base model), or with merge=True a standalone model folder with its processor that
`from_pretrained` loads without peft. Full fine-tunes are always standalone.

The checkpoint exported is the best by validation WER when the run named one, else the last.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.runfiles import RunFiles, read_json
from engine.workspace import Workspace
from engine.errors import VoxtuneError

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


def export_run(ws: Workspace, run_id: str, merge: bool = False, out: str | Path | None = None) -> Path:
    """Write the run's model to `out` (default runs/<id>/export or export-merged); return it."""
    files = RunFiles(ws.run_dir(run_id))
    cfg = read_json(files.config)
    if cfg is None:
        raise ExportError(f"run {run_id}: {files.config} is missing")
    if cfg.get("eval_only"):
        raise ExportError(f"run {run_id} is an evaluation-only run; it trained no model to export")
    ckpt = pick_checkpoint(files)
    adapter = is_adapter(ckpt)
    target = Path(out).expanduser().resolve() if out else files.root / ("export-merged" if merge and adapter else "export")
    if target.exists() and any(target.iterdir()):
        raise ExportError(f"{target} already exists and is not empty; choose another --out or remove it")
    target.mkdir(parents=True, exist_ok=True)
    try:
        if adapter and merge:
            _merge(cfg, ckpt, target)
        else:
            for f in ckpt.iterdir():  # adapter or full model + processor files, no optimizer state
                if f.is_file() and f.name not in SKIP and f.suffix in WEIGHT_SUFFIXES:
                    shutil.copy2(f, target / f.name)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # never leave half an export behind
        raise
    (target / "VOXTUNE_EXPORT.txt").write_text(
        f"run: {run_id}\ncheckpoint: {ckpt.name}\nbase model: {cfg.get('model_ref')}\nmethod: {cfg.get('method')}\n"
        f"kind: {'merged model' if adapter and merge else 'LoRA adapter' if adapter else 'full model'}\n",
        encoding="utf-8")
    return target


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
