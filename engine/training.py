"""The training driver every recipe shares: one run folder in, result.json out.

`run(run_dir)` is what `python -m engine.worker RUN_DIR` calls. It reads config.json, picks
device and precision, loads the model through the family's recipe (quantised for qlora /
lora8, PEFT LoRA for every method but full), and trains with the Hugging Face Trainer. A
TrainerCallback is the only voxtune code inside the loop: it appends a train record per
logging step, checks for runs/<id>/cancel.request, and every `eval_every` steps scores the
validation split by generation (WER and the cleanup metrics, pinned samples' predictions),
asking the Trainer to checkpoint whenever validation WER improves so the best checkpoint
is kept (Trainer's rotation spares `state.best_model_checkpoint`) and named in result.json.
The evaluation set is the dataset's validation split, or `eval_dataset` (NAME:SPLIT); with
`early_stop` N the run stops after N evaluations without a better WER (result.json:
`stopped_early_at`). Every evaluation appends every clip's result to clips.jsonl (engine.clips).

Failures never escape as tracebacks alone: out-of-memory is recorded with its step and the
peak reached; any other exception becomes status "failed" with a one-line reason; both exit
nonzero. Memory sizes are GiB (1024**3 bytes).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from engine import clips as clips_mod
from engine import distributed
from engine import metrics as metrics_mod
from engine.config import (DEFAULT_LORA_ALPHA, DEFAULT_LORA_RANK, SEQ2SEQ_MAX_NEW_TOKENS, ConfigError, RunConfig,
                           as_config)
from engine.reporting import Reporter
from engine.errors import VoxtuneError
from engine.enums import Method, RunStatus
from engine.runfiles import RunFiles, append_jsonl, atomic_write_json

GIB = 1024**3
DEFAULT_SAMPLES = 3  # clips an eval-only run shows when none of its split's clips is pinned (datasets.DEFAULT_PINNED)
OPTIMIZERS = {"adamw": "adamw_torch", "adamw8bit": "adamw_bnb_8bit", "adafactor": "adafactor"}


def say(text: str) -> None:
    """A progress line in log.txt; in a multi-process run only rank 0 prints (one log, one voice)."""
    if distributed.is_main():
        print(text, flush=True)


# -- pure decisions (unit-tested without torch) -----------------------------------------------
def pick_precision(device: str, requested: str | None, bf16_supported: bool) -> str:
    """bf16 where supported, else fp16 on GPU; fp32 on CPU (unless asked for bf16)."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"config.json: precision {requested!r} is not one of auto, bf16, fp16, fp32")
    if requested == "auto":
        if device == "cpu":
            return "fp32"
        return "bf16" if bf16_supported else "fp16"
    if requested == "fp16" and device == "cpu":
        raise ConfigError("config.json: precision fp16 needs a GPU; use fp32 or bf16 on CPU")
    if requested == "bf16" and device != "cpu" and not bf16_supported:
        raise ConfigError("config.json: this GPU does not support bf16; use precision fp16 or auto")
    return requested


def optimizer_name(name: str | None) -> str:
    key = (name or "adamw").lower()
    if key not in OPTIMIZERS:
        raise ConfigError(f"config.json: optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key]


def is_oom(exc: BaseException) -> bool:
    """CUDA/HIP OOM, the CPU allocator's "can't allocate memory", MemoryError, ENOMEM (engine.faults)."""
    from engine import faults

    return faults.is_oom(exc)


def _disk_full(e: BaseException, files: RunFiles, tracker: "Tracker") -> dict | None:
    """A failed result for a full disk ("no space left on device while saving checkpoint-N"),
    with the half-written checkpoint removed; None when `e` is not a full disk."""
    from engine import faults

    if faults.disk_full_error(e) is None:
        return None
    reason, partial = faults.disk_full_reason(e, files.checkpoints, tracker.step)
    faults.drop_partial(partial)
    return {"status": RunStatus.FAILED, "oom": False, "disk_full": True, "reason": reason}


def eval_due(step: int, eval_every: int | None, max_steps: int) -> bool:
    """Every eval_every steps, and always at the last step."""
    return step >= max_steps or bool(eval_every and eval_every > 0 and step % eval_every == 0)


def join_predictions(rows: Sequence[dict], examples: Sequence[Any], predictions: Sequence[str]) -> list[str]:
    """A clip's segment predictions, in segment order, joined into one transcript per row."""
    parts: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for ex, pred in zip(examples, predictions):
        parts[ex.clip_id].append((ex.segment, pred.strip()))
    return [" ".join(p for _, p in sorted(parts.get(r["id"], [])) if p) for r in rows]


def oom_advice(cfg: RunConfig | dict) -> str:
    cfg = as_config(cfg)
    tips = []
    if int(cfg.batch_size or 1) > 1:
        b = int(cfg.batch_size)
        tips.append(f"--batch {max(1, b // 2)} --grad-accum {int(cfg.grad_accum or 1) * 2}")
    if not cfg.gradient_checkpointing:
        tips.append("gradient checkpointing")
    if cfg.method in (Method.FULL, Method.LORA):
        tips.append("--method qlora")
    if (cfg.optimizer or "adamw") == "adamw" and cfg.method == Method.FULL:
        tips.append("--optimizer adamw8bit")
    return "try " + ", ".join(tips) if tips else "try a smaller model"


def peak_memory(device: str) -> dict:
    """Peak memory of this process: the GPU's allocator peaks, and peak RSS on the host."""
    out: dict[str, Any] = {"device": device, "allocated_gb": None, "reserved_gb": None,
                           "rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 4)}
    if device.startswith("cuda"):
        try:
            import torch

            out["allocated_gb"] = round(torch.cuda.max_memory_allocated() / GIB, 4)
            out["reserved_gb"] = round(torch.cuda.max_memory_reserved() / GIB, 4)
        except Exception:  # telemetry must never turn a result into a failure
            pass
    return out


# -- dataset rows -----------------------------------------------------------------------------
def eval_set(cfg: RunConfig) -> tuple[str, str]:
    """(dataset, split) a run evaluates on: an eval-only run its split; a training run its
    --eval-dataset NAME:SPLIT, else its dataset's validation split."""
    if cfg.eval_only:
        return cfg.dataset, cfg.split or "validation"
    if cfg.eval_dataset:
        name, _, split = str(cfg.eval_dataset).partition(":")
        return name, split or "all"
    return cfg.dataset, "validation"


def load_rows(workspace: str | Path, dataset: str, split: str) -> list[dict]:
    from engine import datasets
    from engine.workspace import Workspace

    return datasets.load_rows(Workspace(Path(workspace)), dataset, split)


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Tracker:
    """What the error path needs to know about how far the run got."""

    step: int = 0
    device: str = "cpu"
    last_eval: dict = field(default_factory=dict)
    best: dict | None = None
    final_loss: float | None = None
    cancelled: bool = False
    evals_without_gain: int = 0  # evaluations since validation WER last improved (early stopping)
    stopped_early: int | None = None  # the step early stopping ended the run at


def run(run_dir: str | Path) -> int:
    """Train or evaluate as runs/<id>/config.json says; write result.json; exit status."""
    from engine.quiet import quiet_worker_logs

    quiet_worker_logs()  # the run's log shows real warnings, not library noise (engine/quiet.py)
    files = RunFiles(Path(run_dir).resolve())
    started = time.time()
    tracker = Tracker()
    result: dict[str, Any]
    cfg = RunConfig()
    try:
        cfg = RunConfig.load(files.config)
        result = _run(cfg, files, tracker)
    except BaseException as e:  # noqa: BLE001 -- every ending must leave a result.json
        traceback.print_exc()
        full = None if isinstance(e, KeyboardInterrupt) else _disk_full(e, files, tracker)
        if isinstance(e, KeyboardInterrupt):
            result = {"status": RunStatus.CANCELLED, "reason": "interrupted (SIGINT)", "oom": False}
        elif full is not None:
            result = full
        elif is_oom(e):
            peak = peak_memory(tracker.device)
            used = peak["reserved_gb"] or peak["rss_gb"]
            result = {"status": RunStatus.FAILED, "oom": True, "oom_step": tracker.step,
                      "reason": f"out of memory at step {tracker.step} (peak {used:.2f} GiB); {oom_advice(cfg)}"}
        else:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            why = first if isinstance(e, VoxtuneError) else f"{type(e).__name__}: {first}"
            result = {"status": RunStatus.FAILED, "oom": False, "reason": why[:500]}
    result.setdefault("oom", False)
    result.setdefault("oom_step", None)
    result.setdefault("metrics", tracker.last_eval or None)
    result.setdefault("best", tracker.best)
    result.setdefault("final_loss", tracker.final_loss)
    result.setdefault("train_samples_per_s", None)
    result["peak_memory"] = peak_memory(tracker.device)
    result["duration_s"] = round(time.time() - started, 3)
    result["step"] = tracker.step
    try:
        if distributed.is_main():
            atomic_write_json(files.result, result)
        else:  # one result.json per run: the worker folds this rank's ending into it
            distributed.write_rank_result(files, result)
    except OSError as e:  # a full disk even for result.json: the exit status and the log tell the engine
        from engine import faults

        if faults.disk_full_error(e) is None:
            raise
        say(f"voxtune: run {result['status']}: {result.get('reason')} (result.json not written: {e})")
        return faults.DISK_FULL_EXIT
    say(f"voxtune: run {result['status']}" + (f": {result['reason']}" if result.get("reason") else ""))
    return 0 if result["status"] in (RunStatus.FINISHED, RunStatus.CANCELLED) else (3 if result["oom"] else 1)


def _run(cfg: RunConfig, files: RunFiles, tracker: Tracker) -> dict:
    import torch
    from transformers import set_seed

    from engine import loading
    from engine.recipes import get_recipe

    method = cfg.method or Method.FULL  # an eval-only run without a method loads the plain model
    if method not in Method.values():
        raise ConfigError(f"config.json: method {method!r} is not one of {', '.join(Method.values())}", field="method")
    device = os.environ.get("VOXTUNE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and distributed.world_size() > 1:  # one card per process (torchrun's LOCAL_RANK)
        device = f"cuda:{int(os.environ.get('LOCAL_RANK') or 0)}"
        torch.cuda.set_device(device)
    tracker.device = device
    precision = pick_precision(device, cfg.precision,
                               device != "cpu" and torch.cuda.is_bf16_supported())
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seed = int(cfg.seed or 0)
    set_seed(seed)

    recipe = get_recipe(cfg.recipe or "whisper")
    if hasattr(recipe, "configure"):
        recipe.configure(cfg)
    model_ref = cfg.model_ref or cfg.model
    source = loading.resolve(model_ref)
    say(f"voxtune: {method} {model_ref} on {device} ({precision}), recipe {recipe.key}")
    reporter = Reporter.from_config(cfg, files.root).start(cfg.to_dict())
    try:
        return _run_model(cfg, files, tracker, recipe, source, method, device, precision, seed, reporter)
    finally:
        reporter.close()


def _run_model(cfg: RunConfig, files: RunFiles, tracker: Tracker, recipe, source, method: str, device: str,
               precision: str, seed: int, reporter: Reporter) -> dict:
    from engine import loading

    split = cfg.split or "validation"
    if cfg.eval_only:
        train_rows: list[dict] = []
        eval_rows = load_rows(cfg.workspace, cfg.dataset, split)
    else:
        train_rows = load_rows(cfg.workspace, cfg.dataset, "train")
        eval_name, split = eval_set(cfg)
        eval_rows = load_rows(cfg.workspace, eval_name, split)
        if not train_rows:
            raise ConfigError(f"dataset {cfg.dataset!r} has no clips in its train split; "
                              "check `voxtune data show` and its splits")

    loaded = loading.load_model(
        recipe, source, method=method, precision=precision, device=device,
        train_texts=[r["text"] for r in train_rows],
        trust_remote_code=bool(cfg.trust_remote_code),
        lora=None if not cfg.adapter else {
            "r": int(cfg.lora_rank or DEFAULT_LORA_RANK), "alpha": float(cfg.lora_alpha or DEFAULT_LORA_ALPHA),
            "dropout": float(cfg.lora_dropout or 0.0),
            "targets": list(cfg.lora_targets or recipe.default_lora_targets)},
        gradient_checkpointing=bool(cfg.gradient_checkpointing) and not cfg.eval_only,
        trainable=not cfg.eval_only,
        context={"workspace": cfg.workspace, "dataset": cfg.dataset, "model": cfg.model,
                 "manifest_hash": cfg.dataset_manifest_hash},
    )
    if cfg.freeze_audio_encoder and not cfg.eval_only:
        base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
        for p in recipe.audio_encoder(base).parameters():
            p.requires_grad_(False)
    say(f"voxtune: model {describe_model(loaded.model)}")
    evaluator = Evaluator(recipe, loaded, eval_rows, files, cfg, device, precision, reporter, split=split)
    if cfg.eval_only:
        if device != "cpu" and not getattr(loaded.model, "hf_device_map", None):
            loaded.model.to(device)
        rec = evaluator(loaded.model, step=0, max_steps=0)
        tracker.last_eval = _metrics_of(rec)
        return {"status": RunStatus.FINISHED, "reason": None, "metrics": tracker.last_eval}
    return _train(cfg, files, tracker, recipe, loaded, train_rows, evaluator, device, precision, seed, reporter)


def describe_model(model) -> str:
    """Parameter counts and quantised layers, for the log (and the tests that read it)."""
    total = trainable = 0
    for p in model.parameters():
        n = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)  # packed 2 per byte
        total += n
        trainable += n if p.requires_grad else 0
    kinds: dict[str, int] = {}
    for m in model.modules():
        where, name = type(m).__module__, type(m).__name__
        kind = ("LoRA" if where.startswith("peft") and hasattr(m, "lora_A")
                else "4-bit" if where.startswith("bitsandbytes") and name == "Linear4bit"
                else "8-bit" if where.startswith("bitsandbytes") and name == "Linear8bitLt" else None)
        if kind:
            kinds[kind] = kinds.get(kind, 0) + 1
    layers = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "plain"
    return f"{total / 1e6:.2f}M params, {trainable / 1e6:.3f}M trainable; layers: {layers}"


def _metrics_of(rec: dict | None) -> dict:
    if not rec:
        return {}
    return {k: rec[k] for k in ("step", "eval_loss", "wer", "cer", "wer_normalized", "filler_rate", "deletion_rate") if k in rec}


class Evaluator:
    """Scores a model on the evaluation rows: generation -> joined clip transcripts -> metrics."""

    def __init__(self, recipe, loaded, rows: list[dict], files: RunFiles, cfg: RunConfig, device: str,
                 precision: str, reporter: Reporter | None = None, split: str | None = None):
        self.recipe, self.loaded, self.rows, self.files = recipe, loaded, rows, files
        eval_name, eval_split = eval_set(cfg)
        self.split = split or eval_split
        self.dataset = eval_name
        self.reporter = reporter or Reporter([], files.root, files.root.name)
        self.batch = max(1, int(cfg.get("eval_batch_size") or cfg.batch_size or 1))
        self.max_new_tokens = int(cfg.max_new_tokens or SEQ2SEQ_MAX_NEW_TOKENS)
        self.device, self.precision = device, precision
        pinned = set(cfg.get("pinned") or _pinned(cfg, eval_name))
        self.pinned = [r["id"] for r in rows if r["id"] in pinned]
        if not self.pinned and (cfg.eval_only or cfg.eval_dataset):  # pins in another split: this one's first clips
            self.pinned = [r["id"] for r in rows[:DEFAULT_SAMPLES]]
        self._examples = None

    @property
    def examples(self):
        if self._examples is None:  # prepared once, on first use
            self._examples = self.recipe.examples(self.rows, self.loaded, for_training=False)
        return self._examples

    def _autocast(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=dtype)

    def __call__(self, model, step: int, max_steps: int) -> dict | None:
        import torch

        if not self.rows:
            return None
        was_training = model.training
        model.eval()
        t0 = time.time()
        try:
            exs = self.examples
            preds: list[str] = []
            loss_sum, loss_n = 0.0, 0
            dev = next(model.parameters()).device
            if hasattr(self.recipe, "decode_stats"):  # the loop guard's counts, for this evaluation
                from engine.decoding import DecodeStats

                self.recipe.decode_stats = DecodeStats()
            with torch.no_grad(), self._autocast():
                for i in range(0, len(exs), self.batch):
                    batch = exs[i:i + self.batch]
                    preds.extend(self.recipe.generate(model, self.loaded, batch, self.max_new_tokens))
                    scored = [ex for ex in batch if ex.text and ex.meta.get("score_text", True)]
                    if scored:
                        inputs = self.recipe.collate(scored, self.loaded)
                        inputs = {k: v.to(dev) if hasattr(v, "to") else v for k, v in inputs.items()}
                        loss = model(**inputs).loss
                        if loss is not None and torch.isfinite(loss):
                            loss_sum += float(loss) * len(scored)
                            loss_n += len(scored)
        finally:
            if was_training:
                model.train()
        hyps = join_predictions(self.rows, exs, preds)
        refs = [r.get("text", "") for r in self.rows]
        now = time.time()
        rec = {"kind": "eval", "step": step, "max_steps": max_steps,
               "eval_loss": round(loss_sum / loss_n, 6) if loss_n else None,
               **{k: round(v, 6) for k, v in metrics_mod.score(refs, hyps).items()},
               **(self.recipe.decode_stats.as_record() if hasattr(self.recipe, "decode_stats") else {}),
               "clips": len(self.rows), "split": self.split, "eval_dataset": self.dataset, "eval_s": round(now - t0, 3), "time": now}
        if distributed.is_main():  # FSDP: every rank scores (in lockstep); one writes
            append_jsonl(self.files.metrics, rec)
            with open(self.files.clips, "a", encoding="utf-8") as f:  # every clip, one write per evaluation
                f.write("".join(json.dumps(c, ensure_ascii=False) + "\n"
                                for c in clips_mod.clip_records(self.rows, hyps, step, self.split, now)))
            by_id = {r["id"]: (r, h) for r, h in zip(self.rows, hyps)}
            samples = []
            for cid in self.pinned:
                row, hyp = by_id[cid]
                sample = {"step": step, "sample_id": cid, "prediction": hyp, "reference": row.get("text", ""),
                          "time": now}
                append_jsonl(self.files.samples, sample)
                samples.append(sample)
            self.reporter.log_eval(rec, samples)
        say(f"voxtune: eval step {step}: wer {rec['wer']:.4f} cer {rec['cer']:.4f} "
            f"eval_loss {rec['eval_loss']} ({rec['eval_s']:.1f} s)")
        return rec


def _pinned(cfg: RunConfig, dataset: str | None = None) -> list[str]:
    try:
        from engine.store import Store
        from engine.workspace import Workspace

        rec = Store(Workspace(Path(cfg.workspace))).get_dataset(dataset or cfg.dataset) or {}
        return list(rec.get("pinned") or [])
    except Exception:
        return []


def _make_callback(files: RunFiles, tracker: Tracker, evaluator: Evaluator, eval_every: int | None,
                   samples_per_step: int, reporter: Reporter | None = None, early_stop: int = 0):
    from transformers import TrainerCallback

    class VoxtuneCallback(TrainerCallback):
        """voxtune's only code inside the training loop; cheap on ordinary steps."""

        def __init__(self) -> None:
            self.last_log = (time.time(), 0)

        def on_train_begin(self, args, state, control, **kw):
            tracker.step = state.global_step
            self.last_log = (time.time(), state.global_step)
            if state.best_metric is not None and state.best_global_step:
                tracker.best = {"step": state.best_global_step, "wer": state.best_metric,
                                "checkpoint": _rel(files, state.best_model_checkpoint)}

        def on_step_begin(self, args, state, control, **kw):
            tracker.step = state.global_step + 1

        def on_step_end(self, args, state, control, model=None, **kw):
            # Several processes: rank 0 decides (cancel, best checkpoint) and every rank follows
            # at the same step -- DDP/FSDP hang if one rank saves or stops while others go on.
            step = tracker.step = state.global_step
            multi = distributed.world_size() > 1
            cancel = files.cancel_request.exists() if distributed.is_main() else False
            if multi:
                cancel = bool(distributed.broadcast_from_main([cancel])[0])
            if cancel:
                tracker.cancelled = True
                control.should_save = True
                control.should_training_stop = True
                say(f"voxtune: cancel requested: checkpointing at step {step} and stopping")
                return control
            if evaluator.rows and eval_due(step, eval_every, state.max_steps):
                rec = None
                # DDP: rank 0 scores the plain model while the others wait; FSDP: parameters are
                # sharded, so every rank generates in lockstep (transformers syncs FSDP generate)
                if distributed.is_main() or distributed.strategy() == "fsdp":
                    rec = evaluator(model, step, state.max_steps)
                    tracker.last_eval = _metrics_of(rec)
                improved = bool(rec and (state.best_metric is None or rec["wer"] < state.best_metric))
                wer = rec["wer"] if improved else -1.0
                if multi:
                    improved_f, wer = distributed.broadcast_from_main([float(improved), wer])
                    improved = bool(improved_f)
                if improved:
                    state.best_metric, state.best_global_step = wer, step
                    control.should_save = True
                    tracker.evals_without_gain = 0
                elif rec is not None or multi:
                    tracker.evals_without_gain += 1
                    if early_stop and tracker.evals_without_gain >= early_stop and step < state.max_steps:
                        tracker.stopped_early = step
                        control.should_save = True
                        control.should_training_stop = True
                        say(f"voxtune: stopping early at step {step}: no better validation WER in {early_stop} "
                            f"evaluations (best {state.best_metric:.4f} at step {state.best_global_step})")
            if step >= state.max_steps:
                control.should_save = True  # the final model is always on disk
            return control

        def on_save(self, args, state, control, **kw):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir() and distributed.is_main():
                evaluator.recipe.save(evaluator.loaded, str(ckpt))  # processor/vocab with the weights
            if state.best_global_step:
                best_dir = Path(args.output_dir) / f"checkpoint-{state.best_global_step}"
                if best_dir.is_dir():
                    tracker.best = {"step": state.best_global_step, "wer": state.best_metric,
                                    "checkpoint": _rel(files, best_dir)}

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs:
                return
            check_finite(logs, state.global_step)
            now, step = time.time(), state.global_step
            t_prev, s_prev = self.last_log
            rate = (step - s_prev) * samples_per_step / (now - t_prev) if now > t_prev and step > s_prev else None
            self.last_log = (now, step)
            tracker.final_loss = float(logs["loss"])
            if not distributed.is_main():
                return
            rec = {"kind": "train", "step": step, "max_steps": state.max_steps, "epoch": logs.get("epoch", state.epoch),
                   "loss": logs["loss"], "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                   "time": now, "samples_per_s": round(rate, 4) if rate else None}
            append_jsonl(files.metrics, rec)
            if reporter is not None:
                reporter.log_train(rec)
            say(f"voxtune: step {step}/{state.max_steps} loss {logs['loss']:.4f}")

    return VoxtuneCallback()


class NonFiniteLoss(VoxtuneError):
    """The loss or gradient norm became NaN/Inf: the run stops instead of training on garbage."""


def check_finite(logs: dict, step: int) -> None:
    """Raise NonFiniteLoss naming the step and the likely cause when a logged loss or gradient
    norm is NaN/Inf (the Trainer's logging_nan_inf_filter is off, so they are not hidden)."""
    bad = [(k, logs[k]) for k in ("loss", "grad_norm")
           if isinstance(logs.get(k), (int, float)) and not math.isfinite(float(logs[k]))]
    if not bad:
        return
    what = " and ".join(f"{'gradient norm' if k == 'grad_norm' else k} is {float(v)}" for k, v in bad)
    raise NonFiniteLoss(
        f"{what} at step {step}: training diverged; likely causes: NaN/Inf samples in a clip "
        "(re-import the dataset: import reports them), or a learning rate too high for this "
        "precision (lower --lr, or try --precision fp32)", field="lr")


def loss_counts_items(model) -> bool:
    """Does the model's forward normalise its loss by `num_items_in_batch` (transformers' shared
    loss functions do; a hand-written CrossEntropyLoss().mean() does not)? True when unsure
    (the Trainer's own assumption)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        source = inspect.getsource(type(base).forward)
    except (OSError, TypeError):
        return True
    return "num_items_in_batch" in source or "self.loss_function" in source


def _rel(files: RunFiles, path: str | Path | None) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(files.root))
    except ValueError:
        return str(path)


def training_arguments(cfg: RunConfig | dict, output_dir: Path, device: str, precision: str, n_train: int):
    """TrainingArguments from the run's configuration (also used by the overhead benchmark's
    baseline). Returns (arguments, total optimizer steps). Raises ConfigError naming the field."""
    from transformers import TrainingArguments

    cfg = as_config(cfg)
    batch = int(cfg.batch_size or 1)
    accum = int(cfg.grad_accum or 1)
    if batch < 1 or accum < 1:
        raise ConfigError("config.json: batch_size and grad_accum must be at least 1", field="batch_size")
    lr = float(cfg.lr or 0)
    if not lr > 0 or not math.isfinite(lr):
        raise ConfigError("config.json: lr must be positive", field="lr")
    max_steps = int(cfg.max_steps or 0)
    epochs = float(cfg.epochs or 0)
    if max_steps <= 0 and not (epochs > 0 and math.isfinite(epochs)):
        raise ConfigError("config.json: give max_steps or epochs (a positive number)", field="max_steps")
    world = distributed.world_size()  # processes share each epoch: batch is per device
    total = cfg.total_steps(n_train, devices=world)
    save_every = int(cfg.save_every or 0)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        learning_rate=lr,
        warmup_steps=int(cfg.warmup_steps or 0),
        max_steps=max_steps if max_steps > 0 else -1,
        num_train_epochs=epochs if max_steps <= 0 else 1.0,
        logging_steps=int(cfg.get("log_every") or (1 if total <= 100 else 5)),
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must show (and stop the run), not be averaged away
        save_strategy="steps" if save_every > 0 else "no",
        save_steps=save_every if save_every > 0 else 500,
        save_total_limit=cfg.get("save_total_limit", 3),
        eval_strategy="no",  # evaluation is generation-based, run by the callback
        optim=optimizer_name(cfg.optimizer),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        seed=int(cfg.seed or 0),
        data_seed=int(cfg.seed or 0),
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=True,
        save_safetensors=True,
    )
    if world > 1:
        kwargs.update(ddp_timeout=int(os.environ.get("VOXTUNE_DDP_TIMEOUT", "3600")))  # rank 0 evaluates meanwhile
        if distributed.strategy() == "fsdp":
            # FSDP2 full sharding (ZeRO-3: weights, gradients, optimizer state), one unit per
            # transformer layer (the model's _no_split_modules: transformers' default wrap policy)
            kwargs.update(fsdp=True, fsdp_config={"reshard_after_forward": True})
    import inspect

    accepted = inspect.signature(TrainingArguments.__init__).parameters
    if "activation_checkpointing" in accepted:  # transformers >= 5.x renamed it
        kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
        kwargs["activation_checkpointing_kwargs"] = kwargs.pop("gradient_checkpointing_kwargs")
    return TrainingArguments(**{k: v for k, v in kwargs.items() if k in accepted}), total


def _train(cfg, files, tracker, recipe, loaded, train_rows, evaluator, device, precision, seed, reporter) -> dict:
    from transformers import PrinterCallback, Trainer

    from dataclasses import replace

    from engine import loading

    examples = recipe.examples(train_rows, loaded, for_training=True)
    if cfg.gradient_checkpointing and not loading.whole_model_checkpointing(loaded.model):
        # the Trainer would call the model's gradient_checkpointing_enable, which raises for
        # classes without it (Granite Speech): checkpoint its parts instead, or run without
        parts = loading.enable_checkpointing(loaded.model)
        cls = type(loading.unwrapped(loaded.model)).__name__
        say(f"voxtune: gradient checkpointing on {', '.join(parts)} ({cls} has none of its own)" if parts else
            f"voxtune: {cls} supports no gradient checkpointing; running without it (more memory than the estimate)")
        cfg = replace(cfg, gradient_checkpointing=False)
    args, total = training_arguments(cfg, files.checkpoints, device, precision, len(examples))
    samples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * distributed.world_size()
    callback = _make_callback(files, tracker, evaluator, int(cfg.eval_every or 0), samples_per_step, reporter,
                              early_stop=int(cfg.early_stop or 0))
    trainer = Trainer(model=loaded.model, args=args, train_dataset=examples,
                      data_collator=lambda batch: recipe.collate(batch, loaded),
                      callbacks=[*reporter.trainer_callbacks(), callback])
    trainer.remove_callback(PrinterCallback)  # our callback prints one line per log instead
    if not loss_counts_items(loaded.model):
        # The Trainer takes any forward(**kwargs) to normalise its loss by the token count it
        # passes (num_items_in_batch) and then neither divides by grad-accum nor undoes its
        # x world-size scaling; Whisper, SeamlessM4T and CTC compute a plain mean and ignore it.
        trainer.model_accepts_loss_kwargs = False
    resume = None
    if cfg.resume_from_checkpoint:
        resume = _resumable_checkpoint(files)
        if resume is None:
            say("voxtune: no checkpoint to resume from; starting at step 0")
        else:
            say(f"voxtune: resuming from {resume}")
    say(f"voxtune: training on {len(examples)} examples, {total} steps")
    effective = ("fsdp" if getattr(trainer, "is_fsdp_enabled", False) else "ddp") if distributed.world_size() > 1 else None
    if effective and effective != distributed.strategy():
        say(f"voxtune: {distributed.strategy()} is not available on {device}; training with {effective}")
    out = trainer.train(resume_from_checkpoint=resume)
    tracker.step = trainer.state.global_step
    status = RunStatus.CANCELLED if tracker.cancelled else RunStatus.FINISHED
    reason = f"cancelled at step {tracker.step}; checkpoint saved, `voxtune runs resume` continues" \
        if tracker.cancelled else None
    return {"status": status, "reason": reason, "metrics": tracker.last_eval or None, "best": tracker.best,
            "final_loss": tracker.final_loss, "train_samples_per_s": out.metrics.get("train_samples_per_second"),
            "last_checkpoint": _rel(files, _last_checkpoint(files)), "strategy": effective,
            "stopped_early_at": tracker.stopped_early}


def _checkpoints(files: RunFiles) -> list[Path]:
    return sorted((p for p in files.checkpoints.glob("checkpoint-*") if p.is_dir()),
                  key=lambda p: int(p.name.rsplit("-", 1)[1]) if p.name.rsplit("-", 1)[1].isdigit() else -1)


def _last_checkpoint(files: RunFiles) -> Path | None:
    ckpts = _checkpoints(files)
    return ckpts[-1] if ckpts else None


def _resumable_checkpoint(files: RunFiles) -> str | None:
    """The newest checkpoint the Trainer finished writing.

    A kill -9 mid-save leaves a folder without a readable trainer_state.json (the Trainer
    writes it last); resuming from it would fail, so fall back to the one before.
    """
    for ckpt in reversed(_checkpoints(files)):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            say(f"voxtune: skipping incomplete checkpoint {ckpt.name}")
            continue
        return str(ckpt)
    return None


if __name__ == "__main__":  # `python -m engine.training RUN_DIR`, same as the worker
    sys.exit(run(sys.argv[1]))
