"""Several processes adding and updating runs at once lose no update (fcntl lock + atomic replace)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.store import Store

pytestmark = pytest.mark.functional
REPO = Path(__file__).resolve().parents[2]

WRITER = r"""
import sys
from engine.store import Store
home, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store(home + "/voxtune.json")
for i in range(n):
    rid = store.add_run({"model": f"m{k}", "method": "lora", "writer": k, "i": i})
    store.set_status(rid, "running")
    store.update_run(rid, step=i)
    with store.locked():  # read-modify-write across processes
        store.set_meta("counter", store.get_meta("counter", 0) + 1)
    shared = store.list_runs()[0]["id"]
    with store.locked():
        run = store.get_run(shared)
        store.update_run(shared, hits=run.get("hits", 0) + 1)
"""


def test_processes_lose_no_update(ws):
    procs, n, writers = [], 12, 5
    Store(ws).add_run({"model": "shared", "method": "lora"})
    for k in range(writers):
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, str(ws.home), str(k), str(n)], cwd=REPO,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read()
    store = Store(ws)
    runs = [r for r in store.list_runs() if "writer" in r]
    assert len(runs) == writers * n
    assert {(r["writer"], r["i"]) for r in runs} == {(k, i) for k in range(writers) for i in range(n)}
    assert all(r["status"] == "running" and r["step"] == r["i"] for r in runs)
    assert store.get_meta("counter") == writers * n
    assert store.list_runs()[0]["hits"] == writers * n
    assert len({r["id"] for r in store.list_runs()}) == writers * n + 1
