"""One run on two processes through the real launcher (torchrun, gloo on the CPU), started
by the real daemon, against the same run on one process with the same global batch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import cleanup, wait_status  # noqa: E402

from engine import daemon, queue  # noqa: E402
from engine.runfiles import RunFiles, read_json  # noqa: E402
from engine.store import Store  # noqa: E402

pytestmark = pytest.mark.functional
LOSS_RTOL = 2e-3  # float reduction order differs between 1 and 2 processes; nothing else may


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(ws, tmp_path, monkeypatch):
    from tests.tiny_models import make_tiny_dataset, make_tiny_whisper

    monkeypatch.delenv("VOXTUNE_WORKER_ENTRY", raising=False)
    model = make_tiny_whisper(tmp_path / "tiny-whisper")
    make_tiny_dataset(ws, "tiny", n=8, splits={"train": list(range(8)), "validation": [0, 1], "test": []})
    common = dict(model=str(model), dataset="tiny", method="full", max_steps=4, save_every=2, eval_every=4,
                  grad_accum=1, lr=1e-3, warmup_steps=0, max_new_tokens=4, seed=0)
    one = queue.add(ws, batch_size=4, **common)
    two = queue.add(ws, batch_size=2, gpus=2, **common)  # 2 processes x 2 = the same 4 examples a step
    try:
        daemon.start(ws)
        for rid in (one, two):
            run = wait_status(ws, rid, ("finished", "failed", "cancelled"), 300)
            assert run["status"] == "finished", (rid, run["status_reason"])
    finally:
        cleanup(ws)

    record = Store(ws).require_run(two)
    assert record["device"] == "cpu" and record["procs"] == 2 and record["strategy"] == "ddp"
    files = {rid: RunFiles(ws.run_dir(rid)) for rid in (one, two)}
    losses = {rid: [m["loss"] for m in f.iter_metrics("train")] for rid, f in files.items()}
    print(f"\n1 process  (batch 4):     {losses[one]}\n2 processes (batch 2 x 2): {losses[two]}")
    assert [m["step"] for m in files[two].iter_metrics("train")] == [1, 2, 3, 4]  # rank 0 alone wrote them
    assert losses[two] == pytest.approx(losses[one], rel=LOSS_RTOL)
    assert losses[two][-1] < losses[two][0]  # it trained

    result = read_json(files[two].result)
    assert result["status"] == "finished" and result["world_size"] == 2 and result["strategy"] == "ddp"
    assert [(r["rank"], r["status"], r["step"]) for r in result["ranks"]] == [(0, "finished", 4), (1, "finished", 4)]
    assert result["exit_code"] == 0  # completed by the daemon, as for a single process
    assert len(list(files[two].iter_metrics("eval"))) == 1  # one evaluation, written once
    assert sorted(p.name for p in files[two].checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert "2 processes (ddp)" in files[two].log.read_text()
    assert files[two].log.read_text().count("voxtune: step 4/4") == 1  # one voice in the log


def test_cancel_stops_every_rank_at_the_same_step_with_a_checkpoint(ws, tmp_path, monkeypatch):
    from tests.engine_helpers import current_step, wait_for
    from tests.tiny_models import make_tiny_dataset, make_tiny_whisper

    monkeypatch.delenv("VOXTUNE_WORKER_ENTRY", raising=False)
    model = make_tiny_whisper(tmp_path / "tiny-whisper")
    make_tiny_dataset(ws, "tiny", n=4)
    rid = queue.add(ws, model=str(model), dataset="tiny", method="full", max_steps=500, save_every=250,
                    eval_every=500, batch_size=1, lr=1e-3, warmup_steps=0, max_new_tokens=4, seed=0, gpus=2)
    try:
        daemon.start(ws)
        wait_for(lambda: current_step(ws, rid) >= 2, 300, what="two steps on two processes")
        queue.cancel(ws, rid)
        run = wait_status(ws, rid, ("finished", "failed", "cancelled"), 120)
    finally:
        cleanup(ws)
    assert run["status"] == "cancelled", run["status_reason"]
    result = read_json(RunFiles(ws.run_dir(rid)).result)
    steps = {r["step"] for r in result["ranks"]}
    assert [r["status"] for r in result["ranks"]] == ["cancelled", "cancelled"] and len(steps) == 1
    assert (RunFiles(ws.run_dir(rid)).checkpoints / f"checkpoint-{steps.pop()}").is_dir()
