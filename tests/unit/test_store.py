"""The TinyDB store: atomic replacement, migration with backup, no lost update across threads."""

from __future__ import annotations

import json
import threading

import pytest

from engine import runfiles
from engine.store import SCHEMA_VERSION, Store, StoreError


def test_round_trip_and_status_history(ws):
    store = Store(ws)
    rid = store.add_run({"model": "whisper-small", "method": "lora", "dataset": "d"})
    assert rid.endswith("whisper-small-lora")
    store.set_status(rid, "running")
    store.set_status(rid, "failed", "killed by SIGKILL")
    run = store.require_run(rid)
    assert [h["status"] for h in run["history"]] == ["queued", "running", "failed"]
    assert run["status_reason"] == "killed by SIGKILL" and run["finished_at"] >= run["started_at"]
    with pytest.raises(StoreError, match="unknown status"):
        store.set_status(rid, "exploded")


def test_run_ids_are_unique_and_never_reuse_a_folder(ws):
    store = Store(ws)
    a = store.add_run({"model": "m", "method": "lora"})
    b = store.add_run({"model": "m", "method": "lora"})
    assert a != b and b == a + "-2"
    store.remove_run(a)
    (ws.engine_dir / "trash" / a).mkdir(parents=True)  # its folder went to the trash
    assert store.new_run_id("m", "lora") not in (a, b)


def test_failed_write_leaves_the_old_file_whole(ws, monkeypatch):
    store = Store(ws)
    rid = store.add_run({"model": "m", "method": "lora"})
    before = ws.db_path.read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runfiles.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.update_run(rid, priority=5)
    monkeypatch.undo()
    assert ws.db_path.read_text() == before
    assert not [p for p in ws.home.iterdir() if p.name.endswith(".tmp")]
    assert Store(ws).get_run(rid)["priority"] == 0


def test_reader_never_sees_a_partial_file(ws):
    store = Store(ws)
    ids = [store.add_run({"model": "m", "method": "lora", "pad": "x" * 2000}) for _ in range(20)]
    stop, bad = threading.Event(), []

    def reader():
        while not stop.is_set():
            try:
                json.loads(ws.db_path.read_text())
            except json.JSONDecodeError as e:
                bad.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(60):
        store.update_run(ids[i % 20], n=i)
    stop.set()
    t.join()
    assert bad == []


def test_concurrent_threads_lose_no_update(ws):
    def work(k: int):
        store = Store(ws)  # one instance per thread, like separate callers
        for i in range(10):
            rid = store.add_run({"model": f"m{k}", "method": "lora"})
            store.update_run(rid, owner=k, i=i)
            with store.locked():
                store.set_meta("counter", store.get_meta("counter", 0) + 1)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = Store(ws)
    runs = store.list_runs()
    assert len(runs) == 60 and all("owner" in r for r in runs)
    assert store.get_meta("counter") == 60
    assert sorted(r["seq"] for r in runs) == list(range(1, 61))


def test_migrates_a_v1_file_and_keeps_a_backup(ws):
    v1 = {"_meta": {"1": {"key": "queue_paused", "value": False}},
          "runs": {"1": {"id": "1101-1200-whisper-small-lora", "status": "finished", "created_at": 5}}}
    ws.db_path.write_text(json.dumps(v1))
    store = Store(ws)
    assert store.schema_version == SCHEMA_VERSION
    backup = ws.home / "voxtune.json.bak-v1"
    assert json.loads(backup.read_text()) == v1
    run = store.get_run("1101-1200-whisper-small-lora")
    assert run["history"] == [{"status": "finished", "time": 5, "reason": None}]
    assert store.list_measurements() == []
    store.add_measurement({"model": "m", "peak_allocated_gb": 1.0})
    assert Store(ws).list_measurements()[0]["model"] == "m"


def test_newer_schema_and_corrupt_file_are_refused_with_a_message(ws):
    ws.db_path.write_text(json.dumps({"_meta": {"1": {"key": "schema_version", "value": SCHEMA_VERSION + 1}}}))
    with pytest.raises(StoreError, match="newer voxtune"):
        Store(ws)
    ws.db_path.write_text('{"runs": {"1": {"id": ')
    with pytest.raises(StoreError, match=r"voxtune.json is not valid JSON.*restore"):
        Store(ws)


def _count_reads(monkeypatch) -> list[int]:
    """Wrap the real storage read (TinyDB file parse) with a counter."""
    from engine import store as store_mod

    calls = [0]
    real = store_mod.AtomicJSONStorage.read

    def counting(self):
        calls[0] += 1
        return real(self)

    monkeypatch.setattr(store_mod.AtomicJSONStorage, "read", counting)
    store_mod._CACHE.clear()
    return calls


def test_reads_parse_the_file_once_until_it_changes(ws, monkeypatch):
    store = Store(ws)
    rid = store.add_run({"model": "m", "method": "lora"})
    calls = _count_reads(monkeypatch)
    for _ in range(5):
        assert [r["id"] for r in Store(ws).list_runs()] == [rid]
        assert Store(ws).get_meta("run_seq") == 1 and Store(ws).get_run(rid)["model"] == "m"
    assert calls[0] == 1
    store.update_run(rid, model="m2")  # a write (it parses the file itself)
    before = calls[0]
    assert Store(ws).get_run(rid)["model"] == "m2" and Store(ws).list_runs()[0]["model"] == "m2"
    assert calls[0] == before + 1  # the change is seen, with one parse


def test_a_runs_screen_poll_reads_the_store_at_most_once(ws, monkeypatch):
    from tui.screens.runs import ProgressCache, load_view

    store = Store(ws)
    for i in range(3):
        store.add_run({"model": f"m{i}", "method": "lora"})
    calls = _count_reads(monkeypatch)
    view = load_view(ws, ProgressCache())
    assert len(view.rows) == 3
    assert calls[0] <= 1


def test_reading_a_missing_store_creates_nothing(tmp_path):
    home = tmp_path / "nowhere"
    store = Store(home / "voxtune.json")
    assert store.list_runs() == [] and store.get_meta("queue_paused", False) is False
    assert not home.exists()


def test_writes_create_the_store_with_its_schema(tmp_path):
    store = Store(tmp_path / "ws" / "voxtune.json")
    store.set_meta("queue_paused", True)
    assert store.schema_version == SCHEMA_VERSION and store.get_meta("queue_paused") is True
