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
FAMILIES = ["ctc", "seamless", "qwen2_audio", "voxtral"]
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
    from engine import queue

    options = dict(model=str(model_dir), dataset="tiny", method=method, max_steps=2, batch_size=2,
                   grad_accum=1, eval_every=2, save_every=2, lr=1e-3, warmup_steps=0, seed=0, max_new_tokens=8,
                   gradient_checkpointing=False, optimizer="adamw", precision="fp32")
    if method != "full":
        options.update(lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    options.update(overrides)
    run_id = queue.add(ws, **options)
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
                      "voxtral": "tekken.json"}[family]
    assert processor_file in saved, f"{family}/{method}: processor not saved with the checkpoint: {sorted(saved)}"
    if family == "ctc" and method != "full":  # the new head trains and is saved with the adapter
        adapter_cfg = json.loads((ckpts[-1] / "adapter_config.json").read_text())
        assert "lm_head" in (adapter_cfg.get("modules_to_save") or [])
