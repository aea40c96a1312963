"""kill -9 at random points, many times: no state file may be corrupt, no queued run lost,
no run trained by two workers at once. Bounded (15 rounds) so it runs in CI."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import (add_dataset, add_step_run, cleanup, daemon_pid, kill9, use_step_job,  # noqa: E402
                                  wait_for)

from engine import daemon, queue  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.worker import lock_holder  # noqa: E402

pytestmark = pytest.mark.functional
ROUNDS = int(os.environ.get("VOXTUNE_RELIABILITY_ROUNDS", "15"))


def corrupt_files(ws) -> list[str]:
    """Every state file must parse; every JSON Lines line must be a whole record."""
    bad = []

    def check_json(path: Path) -> None:
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            bad.append(f"{path}: {e}")

    check_json(ws.db_path)
    if (ws.engine_dir / "engine.pid").exists():
        check_json(ws.engine_dir / "engine.pid")
    for run_dir in ws.runs_dir.iterdir():
        for name in ("config.json", "result.json"):
            if (run_dir / name).exists():
                check_json(run_dir / name)
        for state in run_dir.glob("checkpoints/checkpoint-*/state.json"):
            check_json(state)
        for jl in run_dir.glob("*.jsonl"):
            for n, line in enumerate(jl.read_text().splitlines(), 1):
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    bad.append(f"{jl}:{n}: torn line {line[:60]!r}")
    return bad


def test_repeated_kill9_loses_and_corrupts_nothing(ws, monkeypatch):
    use_step_job(monkeypatch, step_s=0.03)
    add_dataset(ws)
    rng = random.Random(int(os.environ.get("VOXTUNE_RELIABILITY_SEED", "20261125")))
    store = Store(ws)
    ids = [add_step_run(ws, max_steps=30, save_every=4) for _ in range(4)]
    corrupt: list[str] = []
    kills = {"daemon": 0, "worker": 0}
    try:
        for _ in range(ROUNDS):
            daemon.start(ws)
            ids.append(add_step_run(ws, max_steps=12, save_every=3))  # queued while the engine writes
            time.sleep(rng.uniform(0.0, 1.0))
            victim = rng.choice(("daemon", "worker", "both"))
            hit = []
            if victim in ("worker", "both"):
                for run in store.list_runs():
                    if run["status"] == "running":
                        pid = lock_holder(ws.run_dir(run["id"])) or run.get("pid")
                        if pid and pid > 0:
                            kill9(pid)
                            hit.append(run["id"])
                            kills["worker"] += 1
            if victim in ("daemon", "both"):
                kill9(daemon_pid(ws))
                kills["daemon"] += 1
            corrupt += corrupt_files(ws)
            daemon.start(ws)
            for rid in hit:  # the engine (restarted or not) notices the dead worker
                wait_for(lambda rid=rid: store.get_run(rid)["status"] != "running", 30, what=f"{rid} to leave running")
            for run in store.list_runs():
                if run["status"] in ("interrupted", "failed"):
                    queue.resume(ws, run["id"])
            queue.unpause(ws)
        daemon.start(ws)
        try:  # 480 s: a fresh-clone CI run on 2 busy cores once needed more than 240
            wait_for(lambda: all(r["status"] in ("finished", "failed", "cancelled", "interrupted")
                                 for r in store.list_runs()), 480, interval=0.5, what="every run to end")
        except AssertionError as e:
            states = {r["id"]: (r["status"], r.get("status_reason")) for r in store.list_runs()}
            raise AssertionError(f"{e}; paused={store.is_paused() if hasattr(store, 'is_paused') else '?'}; "
                                 f"runs: {states}") from None
        runs = {r["id"]: r for r in store.list_runs()}
        lost = [rid for rid in ids if rid not in runs or runs[rid]["status"] != "finished"]
        corrupt += corrupt_files(ws)
        print(f"rounds {ROUNDS}, kills {kills}, runs {len(ids)}, lost {len(lost)}, corrupt {len(corrupt)}")
        assert corrupt == []
        assert lost == [], {rid: runs.get(rid, {}).get("status_reason") for rid in lost}
        assert kills["daemon"] > 0 and kills["worker"] > 0
        for rid in ids:
            log = (ws.run_dir(rid) / "log.txt").read_text()
            assert "another worker is already running" not in log
            steps = [json.loads(x)["step"] for x in (ws.run_dir(rid) / "metrics.jsonl").read_text().splitlines()]
            assert max(steps) == json.loads((ws.run_dir(rid) / "config.json").read_text())["max_steps"]
    finally:
        cleanup(ws)
