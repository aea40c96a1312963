"""History with many runs: time to open, sort and filter, against a baseline measured in the
same run (reading the same records from TinyDB and building the same sorted rows, no UI).

    .venv/bin/python tests/benchmarks/bench_history.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine import compare  # noqa: E402
from engine.store import AtomicJSONStorage, Store  # noqa: E402
from engine.workspace import Workspace  # noqa: E402

MODELS = ["whisper-tiny", "whisper-small", "whisper-large-v3-turbo", "distil-large-v3", "w2v-bert-2.0", "voxtral-mini"]
METHODS = ["full", "lora", "qlora", "lora8"]
STATUSES = ["finished"] * 6 + ["failed", "cancelled", "interrupted", "queued"]


def fill(ws: Workspace, n: int) -> None:
    """n realistic run records written straight into the TinyDB file (one write, not n)."""
    Store(ws)  # creates the file with its schema version
    storage = AtomicJSONStorage(ws.db_path)
    data = storage.read()
    rnd = random.Random(0)
    runs = {}
    t0 = 1.76e9
    for i in range(n):
        model, method, status = rnd.choice(MODELS), rnd.choice(METHODS), rnd.choice(STATUSES)
        created = t0 + i * 600
        rec = {"id": f"r{i:05d}-{model}-{method}", "seq": i + 1, "priority": 0, "model": model, "method": method,
               "dataset": rnd.choice(["meetings", "calls", "podcast"]), "eval_only": False, "status": status,
               "status_reason": None, "history": [{"status": status, "time": created, "reason": None}],
               "created_at": created, "estimate_gb": round(rnd.uniform(2, 11), 2)}
        if status != "queued":
            wer = rnd.uniform(0.05, 0.6)
            rec.update(started_at=created + 5, finished_at=created + rnd.uniform(60, 7200),
                       metrics={"step": 1000, "wer": wer, "cer": wer / 2, "eval_loss": rnd.uniform(0.3, 2)},
                       best={"step": 800, "wer": wer * 0.95, "checkpoint": "checkpoints/checkpoint-800"},
                       peak_memory={"device": "cuda:0", "allocated_gb": 5.0, "reserved_gb": rnd.uniform(2, 11.5)})
        runs[str(i + 1)] = rec
    data["runs"] = runs
    storage.write(data)


def baseline(ws: Workspace) -> float:
    t = time.perf_counter()
    rows = [compare.summarize(r) for r in Store(ws).list_runs()]
    rows = compare.sort_rows(compare.filter_rows(rows, ""), "created_at", True)
    [[compare.fmt_value(k, r.get(k)) for k, _ in compare.COLUMNS] for r in rows]
    return time.perf_counter() - t


async def main(n: int) -> None:
    from textual.widgets import DataTable

    from tui.app import VoxtuneApp
    from tui.screens.history import HistoryScreen

    ws = Workspace(Path(tempfile.mkdtemp()) / "ws").ensure()
    fill(ws, n)
    size_mb = ws.db_path.stat().st_size / 2**20
    base = min(baseline(ws) for _ in range(3))
    app = VoxtuneApp(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        t = time.perf_counter()
        await pilot.press("4")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        while not screen.loaded:
            await asyncio.sleep(0.005)
        await pilot.pause()
        opened = time.perf_counter() - t
        assert screen.query_one(DataTable).row_count == n
        sorts = []
        for _ in range(4):
            t = time.perf_counter()
            await pilot.press("s")
            sorts.append(time.perf_counter() - t)
        t = time.perf_counter()
        await pilot.press("r")
        reverse = time.perf_counter() - t
        await pilot.press("slash")
        t = time.perf_counter()
        await pilot.press(*"method=qlora")
        typed = (time.perf_counter() - t) / len("method=qlora")
        shown = screen.query_one(DataTable).row_count
        # key latency while the table is full: a cursor move
        await pilot.press("escape")
        screen.query_one(DataTable).focus()
        t = time.perf_counter()
        for _ in range(20):
            await pilot.press("down")
        down = (time.perf_counter() - t) / 20

    print(f"history benchmark: {n:,} runs ({size_mb:.1f} MiB TinyDB file), 80x24, headless")
    print(f"baseline (read TinyDB, summarise, sort, format; no UI): {base * 1000:.0f} ms")
    print(f"open History until all rows are in the table: {opened * 1000:.0f} ms = {opened / base:.1f}x baseline")
    print(f"sort (s), per key press: median {sorted(sorts)[len(sorts) // 2] * 1000:.0f} ms = "
          f"{sorted(sorts)[len(sorts) // 2] / base:.1f}x baseline; reverse (r) {reverse * 1000:.0f} ms = {reverse / base:.1f}x")
    print(f"filter as you type, per character: {typed * 1000:.0f} ms = {typed / base:.1f}x baseline ({shown:,} rows match method=qlora)")
    print(f"cursor down in the full table: {down * 1000:.1f} ms = {down / base:.2f}x baseline")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10000)
    args = ap.parse_args()
    asyncio.run(main(args.runs))
