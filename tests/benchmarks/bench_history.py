"""History with many runs: time to open, sort and filter, against a baseline measured in the
same run (reading the same records from TinyDB and building the same sorted rows, no UI).

    .venv/bin/python tests/benchmarks/bench_history.py [--runs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
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
    Store(ws).set_meta("bench", True)  # creates the file with its schema version
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


async def measure_ui(app, n: int) -> dict:
    """Wall times from key press until the app is idle again (what the user waits for)."""
    from tui.screens.history import HistoryScreen
    from tui.widgets.run_list import RunList

    out = {}
    t = time.perf_counter()  # History alone: opening includes the app's start
    async with app.run_test(size=(80, 24)) as pilot:
        if isinstance(app.screen, HistoryScreen):
            screen = app.screen
        else:
            from tui.screens.runs import RunsScreen

            runs = app.screen
            assert isinstance(runs, RunsScreen)
            while runs.poller is None or runs.poller.cycles < 1:  # the home screen has loaded
                await asyncio.sleep(0.01)
            await pilot.pause()
            t = time.perf_counter()  # full app: from pressing 4 on the Runs screen
            await pilot.press("4")
            screen = app.screen
        assert isinstance(screen, HistoryScreen)
        while not screen.loaded:
            await asyncio.sleep(0.005)
        await pilot.pause()
        out["open"] = time.perf_counter() - t
        floor = []
        for _ in range(3):  # the test harness's own cost of one key press (an unbound key)
            t = time.perf_counter()
            await pilot.press("f12")
            await pilot.pause()
            floor.append(time.perf_counter() - t)
        out["key_floor"] = sorted(floor)[1]
        assert screen.query_one(RunList).row_count == n
        sorts = []
        for _ in range(4):
            t = time.perf_counter()
            await pilot.press("s")
            sorts.append(time.perf_counter() - t)
        out["sort"] = sorted(sorts)[len(sorts) // 2]
        t = time.perf_counter()
        await pilot.press("r")
        out["reverse"] = time.perf_counter() - t
        await pilot.press("slash")
        t = time.perf_counter()
        await pilot.press(*"method=qlora")
        out["type"] = (time.perf_counter() - t) / len("method=qlora")
        out["matching"] = screen.query_one(RunList).row_count
        await pilot.press("enter")
        t = time.perf_counter()
        for _ in range(20):
            await pilot.press("down")
        out["down"] = (time.perf_counter() - t) / 20
    return out


class HistoryOnly:
    """History in an app of its own: the screen's cost without the other screens' pollers."""

    @staticmethod
    def make(ws):
        from textual.app import App

        from tui.screens.history import HistoryScreen

        class _App(App):
            def __init__(self) -> None:
                super().__init__()
                self.workspace = ws

            def on_mount(self) -> None:
                self.push_screen(HistoryScreen())

        return _App()


async def main(n: int) -> None:
    from tui.app import VoxtuneApp

    ws = Workspace(Path(tempfile.mkdtemp()) / "ws").ensure()
    fill(ws, n)
    size_mb = ws.db_path.stat().st_size / 2**20
    base = min(baseline(ws) for _ in range(3))
    results = [("History screen alone", await measure_ui(HistoryOnly.make(ws), n)),
               ("full app (Runs screen polling too)", await measure_ui(VoxtuneApp(ws), n))]
    print(f"history benchmark: {n:,} runs ({size_mb:.1f} MiB TinyDB file), 80x24, headless")
    print(f"baseline (read TinyDB, summarise, sort, format all rows; no UI): {base * 1000:.0f} ms")
    full_open, floor = results[1][1]["open"], results[1][1]["key_floor"]
    print(f"goal: the full app opens History with {n:,} runs in under 300 ms: {full_open * 1000:.0f} ms from the "
          f"key press to the drawn table, of which {floor * 1000:.0f} ms is the test harness's own cost of a key "
          f"press (an unbound key, same run) -> {(full_open - floor) * 1000:.0f} ms "
          f"({'met' if full_open - floor < 0.3 else 'NOT met'})")
    for label, r in results:
        print(f"{label}:")
        print(f"  open until every row is in the table: {r['open'] * 1000:.0f} ms = {r['open'] / base:.2f}x baseline")
        print(f"  sort (s) per press: {r['sort'] * 1000:.0f} ms = {r['sort'] / base:.2f}x; reverse (r) {r['reverse'] * 1000:.0f} ms = {r['reverse'] / base:.2f}x")
        print(f"  filter as you type, per character: {r['type'] * 1000:.0f} ms = {r['type'] / base:.2f}x ({r['matching']:,} rows match method=qlora)")
        print(f"  cursor down: {r['down'] * 1000:.0f} ms = {r['down'] / base:.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10000)
    args = ap.parse_args()
    asyncio.run(main(args.runs))
