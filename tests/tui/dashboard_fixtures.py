"""Realistic runs for the dashboard/history tests: a TinyDB record via Store and run files
written the way the worker writes them (engine.runfiles), with fixed times so snapshots
are stable."""

from __future__ import annotations

from engine.runfiles import RunFiles, append_jsonl, atomic_write_json
from engine.store import Store
from engine.workspace import Workspace

T0 = 1764000000.0  # fixed clock for deterministic content
REFS = {
    "clip03": "so the meeting moved to thursday because the room was booked",
    "clip07": "we should ship the release after the tests pass",
}
# predictions improving over evaluations: fillers left in early, one word dropped later
PREDS = [
    {"clip03": "so um the meeting moved to uh thursday because the the room was booked",
     "clip07": "we should uh ship the release after like the tests pass"},
    {"clip03": "so the meeting moved to thursday because room was booked",
     "clip07": "we should ship the release after the tests pass"},
]


def config_for(run_id: str, model: str, method: str, dataset: str, **extra) -> dict:
    cfg = {
        "run_id": run_id, "model": model, "model_ref": f"openai/{model}", "family": "seq2seq",
        "recipe": "whisper", "method": method, "dataset": dataset, "eval_only": False,
        "max_steps": 40, "batch_size": 4, "grad_accum": 2, "lr": 1e-4, "warmup_steps": 5,
        "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_targets": None,
        "eval_every": 20, "save_every": 20, "seed": 0, "precision": "bf16", "optimizer": "adamw",
        "gradient_checkpointing": True, "estimate_gb": 6.2,
    }
    cfg.update(extra)
    return cfg


def make_run(
    ws: Workspace,
    model: str = "whisper-small",
    method: str = "lora",
    dataset: str = "meetings",
    status: str = "finished",
    steps: int = 40,
    wer_scale: float = 1.0,
    log_lines: int = 30,
    run_id: str | None = None,
    t0: float = T0,
    gpu: bool = True,
    **config_extra,
) -> str:
    """A run with a full history: train/eval metrics, samples, telemetry, log, result."""
    store = Store(ws)
    run_id = run_id or store.new_run_id(model, method, when=t0)
    cfg = config_for(run_id, model, method, dataset, max_steps=steps, **config_extra)
    rf = RunFiles(ws.run_dir(run_id)).create()
    atomic_write_json(rf.config, cfg)
    evals = []
    with open(rf.log, "w", encoding="utf-8") as log:
        for i in range(log_lines):
            log.write(f"[worker] step {i} loading batch {i} of {log_lines}\n")
    for step in range(5, steps + 1, 5):
        append_jsonl(rf.metrics, {"kind": "train", "step": step, "max_steps": steps, "epoch": step / steps,
                                  "loss": round(2.5 / (1 + step / 10), 4), "lr": 1e-4, "time": t0 + step * 3})
        if step % (steps // 2) == 0:
            k = len(evals)
            wer = round(wer_scale * (0.42 - 0.15 * k), 4)
            ev = {"kind": "eval", "step": step, "max_steps": steps, "eval_loss": round(wer_scale * (1.9 - 0.4 * k), 4),
                  "wer": wer, "cer": round(wer / 2, 4), "wer_normalized": round(wer * 0.8, 4),
                  "filler_rate": round(0.04 / (k + 1), 4), "deletion_rate": 0.01 * (k + 1), "time": t0 + step * 3}
            evals.append(ev)
            append_jsonl(rf.metrics, ev)
            for sid, ref in REFS.items():
                append_jsonl(rf.samples, {"step": step, "sample_id": sid, "prediction": PREDS[min(k, 1)][sid],
                                          "reference": ref, "time": t0 + step * 3})
    for s in range(10):
        append_jsonl(rf.telemetry, {
            "time": t0 + s,
            "gpu": {"name": "AMD Radeon RX 7700 XT", "used_gb": 5.0 + s * 0.2, "total_gb": 12.0, "util_percent": 90 + s % 3} if gpu else None,
            "proc_gpu_gb": 4.8 + s * 0.2 if gpu else None, "cpu_percent": 35.0, "rss_gb": 3.1,
            "ram_used_gb": 9.0, "ram_total_gb": 32.0,
        })
    best = min(evals, key=lambda e: e["wer"]) if evals else None
    rec = {"id": run_id, "model": model, "method": method, "dataset": dataset, "eval_only": False,
           "estimate_gb": cfg["estimate_gb"], "created_at": t0, "priority": 0}
    store.add_run(rec)
    fields = {"started_at": t0 + 5}
    if status != "running":
        result = {"status": status, "reason": None, "oom": False, "oom_step": None,
                  "peak_memory": {"device": "cuda:0", "allocated_gb": 5.1, "reserved_gb": 5.6, "rss_gb": 3.1},
                  "metrics": evals[-1] if evals else {}, "duration_s": steps * 3.0,
                  "best": {"step": best["step"], "wer": best["wer"], "checkpoint": f"checkpoints/checkpoint-{best['step']}"} if best else None,
                  "train_samples_per_s": 2.5, "final_loss": 2.5 / (1 + steps / 10), "exit_code": 0, "signal": None, "error_tail": []}
        atomic_write_json(rf.result, result)
        fields.update(finished_at=t0 + 5 + steps * 3.0, peak_memory=result["peak_memory"],
                      metrics={k: v for k, v in (evals[-1] if evals else {}).items() if k not in ("kind", "time")},
                      best=result["best"])
    store.update_run(run_id, status=status, **fields)
    return run_id
