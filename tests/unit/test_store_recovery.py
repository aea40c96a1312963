"""A lost or damaged store (issue 13, item 4): rotating backups that really exist, a refusal that
names the newest one, and `voxtune runs rebuild` that lists the runs found in runs/*/ again."""

from __future__ import annotations

import itertools
import json

import pytest

from engine import store as store_mod
from engine.runfiles import RunFiles, append_jsonl, atomic_write_json
from engine.store import Store, StoreError, backups
from tests.engine_helpers import add_dataset, add_step_run
from tui.cli import main


@pytest.fixture
def clock(monkeypatch):
    """The store's clock, one minute per call: every write is 'due' a backup when the interval is 0."""
    ticks = itertools.count(1_800_000_000, 60)
    monkeypatch.setattr(store_mod, "now", lambda: float(next(ticks)))


def test_writes_keep_rotating_backups_of_the_previous_file(ws, monkeypatch, clock):
    monkeypatch.setattr(store_mod, "BACKUP_EVERY_S", 0.0)
    monkeypatch.setattr(store_mod, "BACKUP_KEEP", 3)
    store = Store(ws)
    rid = store.add_run({"model": "m", "method": "lora"})
    for i in range(5):
        before = ws.db_path.read_text()
        store.update_run(rid, priority=i)
        newest = backups(ws.db_path)[-1]
        assert newest.read_text() == before  # a snapshot of the file as it was before this write
    baks = backups(ws.db_path)
    assert len(baks) == 3 and all(b.name.startswith("voxtune.json.bak-") for b in baks)
    assert json.loads(baks[-1].read_text())["runs"]  # readable, holds the run
    assert ws.db_path.read_text() != baks[-1].read_text()


def test_backups_are_periodic_not_per_write(ws):
    store = Store(ws)
    rid = store.add_run({"model": "m", "method": "lora"})
    for i in range(20):
        store.update_run(rid, priority=i)
    assert len(backups(ws.db_path)) == 1  # BACKUP_EVERY_S (10 min) has not passed


def test_a_damaged_store_names_its_newest_backup_and_is_never_backed_up(ws, monkeypatch, clock):
    monkeypatch.setattr(store_mod, "BACKUP_EVERY_S", 0.0)
    store = Store(ws)
    rid = store.add_run({"model": "m", "method": "lora"})
    store.update_run(rid, priority=1)
    baks = backups(ws.db_path)
    ws.db_path.write_text("")
    store_mod._CACHE.clear()
    with pytest.raises(StoreError) as e:
        store.update_run(rid, priority=2)
    assert baks[-1].name in e.value.hint and "voxtune runs rebuild" in e.value.hint
    assert backups(ws.db_path) == baks and ws.db_path.read_text() == ""


def _finish(ws, rid: str, status: str = "finished") -> None:
    files = RunFiles(ws.run_dir(rid))
    append_jsonl(files.metrics, {"kind": "train", "step": 3, "max_steps": 3, "loss": 0.5, "time": 1.0})
    atomic_write_json(files.result, {"status": status, "reason": None if status == "finished" else "boom",
                                     "metrics": {"wer": 0.25}, "best": {"step": 3, "wer": 0.25}})


@pytest.mark.parametrize("damage", ["", "  \n", "null", "[]", '{"runs": "x"}', '{"runs": {"1": {"id": '])
def test_rebuild_lists_the_runs_of_a_damaged_store_again(ws, capsys, damage):
    add_dataset(ws)
    done, failed, interrupted, queued = (add_step_run(ws) for _ in range(4))
    _finish(ws, done)
    _finish(ws, failed, "failed")
    atomic_write_json(RunFiles(ws.run_dir(interrupted)).checkpoints / "checkpoint-5" / "state.json", {"step": 5})
    ws.db_path.write_text(damage)
    store_mod._CACHE.clear()
    home = ["--home", str(ws.home)]
    assert main([*home, "runs", "ls"]) == 2  # refused, never started over
    assert ws.db_path.read_text() == damage
    capsys.readouterr()

    assert main([*home, "runs", "rebuild"]) == 0
    out = capsys.readouterr().out
    assert "4 run(s)" in out and ".corrupt-" in out and "queue is paused" in out
    kept = [p for p in ws.home.glob("voxtune.json.corrupt-*")]
    assert len(kept) == 1 and kept[0].read_text() == damage  # the damaged file is kept, byte for byte
    runs = {r["id"]: r for r in Store(ws).list_runs()}
    assert {k: runs[k]["status"] for k in runs} == {done: "finished", failed: "failed",
                                                    interrupted: "interrupted", queued: "queued"}
    assert runs[done]["metrics"] == {"wer": 0.25} and runs[done]["model"] == "whisper-small"
    assert "runs resume" in runs[interrupted]["status_reason"]
    assert Store(ws).get_meta("queue_paused") is True
    assert Store(ws).get_dataset("tiny")["manifest_hash"]  # datasets come back too (from data/*/)
    assert main([*home, "runs", "ls"]) == 0
    listed = capsys.readouterr().out
    assert all(r in listed for r in runs)


def test_rebuild_refuses_a_readable_store_unless_forced(ws, capsys):
    add_dataset(ws)
    rid = add_step_run(ws)
    before = ws.db_path.read_text()
    assert main(["--home", str(ws.home), "runs", "rebuild"]) == 2
    err = capsys.readouterr().err
    assert "is readable (1 runs)" in err and "--force" in err and len(err.strip().splitlines()) == 2
    assert ws.db_path.read_text() == before
    assert main(["--home", str(ws.home), "runs", "rebuild", "--force", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["restored"] == [rid] and ".bak-" in rep["kept"]
    assert (ws.home / rep["kept"].rsplit("/", 1)[1]).read_text() == before
    assert Store(ws).get_dataset("tiny")["manifest_hash"] == "h-tiny"  # kept from the readable store


def test_ls_says_when_run_folders_are_missing_from_the_index(ws, capsys):
    add_dataset(ws)
    rid = add_step_run(ws)
    ws.db_path.unlink()
    store_mod._CACHE.clear()
    assert main(["--home", str(ws.home), "runs", "ls"]) == 0
    err = capsys.readouterr().err
    assert rid in err and "voxtune runs rebuild" in err
