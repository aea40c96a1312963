"""A chatty run with the dashboard open: does every line reach the log, does the app keep
its memory and stay responsive?

A child process plays the worker: it prints RATE numbered lines a second to stdout, which
is redirected to the run's log.txt exactly as the daemon does it, and appends a train
metric every second. The dashboard is open headless (App.run_test) in this process.

Phase 1 (baseline): the dashboard open on an idle run for DURATION seconds.
Phase 2 (load): the same, with the writer running.
Printed: lines written vs lines in the file (must be equal), lines the dashboard showed or
knowingly skipped, RSS growth of the app process and key-press latency (key event to the
tab-switch action running on the UI thread),
each as a ratio to the baseline.

    .venv/bin/python tests/benchmarks/bench_dashboard.py [--duration 60] [--rate 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tui"))

from dashboard_fixtures import make_run  # noqa: E402

from engine.runfiles import RunFiles  # noqa: E402
from engine.workspace import Workspace  # noqa: E402

WRITER = r"""
import json, sys, time
rate, duration, metrics = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
start = time.monotonic(); n = 0; step = 40
while True:
    elapsed = time.monotonic() - start
    if elapsed >= duration:
        break
    due = int(elapsed * rate)
    while n < due:
        sys.stdout.write(f"{time.time():.3f} step {step} line {n} loss=0.1234 lr=1e-4 grad_norm=1.0 tokens/s=9000\n")
        n += 1
    sys.stdout.flush()
    if int(elapsed) + 41 > step:
        step += 1
        with open(metrics, "a") as f:
            f.write(json.dumps({"kind": "train", "step": step, "max_steps": 10000, "loss": 1 / step, "time": time.time()}) + "\n")
    time.sleep(0.01)
sys.stdout.flush()
sys.stderr.write(f"{n}\n")
"""


async def measure(app, pilot, screen, duration: float, writer_cmd: list[str] | None, log_path: Path):
    """Key-press latencies and RSS growth over `duration` seconds (with the writer if given)."""
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    child = None
    if writer_cmd:
        out = open(log_path, "ab")
        child = subprocess.Popen(writer_cmd, stdout=out, stderr=subprocess.PIPE)
        out.close()
    latencies = []
    handled: list[float] = []
    original = type(screen).action_tab

    def timed_tab(tab: str) -> None:  # the moment the key's action runs on the UI thread
        original(screen, tab)
        handled.append(time.perf_counter())

    screen.action_tab = timed_tab
    start = time.monotonic()
    keys = ["p", "l"]
    i = 0
    while time.monotonic() - start < duration:
        t = time.perf_counter()
        handled.clear()
        await pilot.press(keys[i % 2])
        if handled:
            latencies.append(handled[0] - t)
        i += 1
        await asyncio.sleep(0.2)
    del screen.action_tab
    written = None
    if child:
        _, err = child.communicate(timeout=60)
        written = int(err.decode().strip().splitlines()[-1])
    # let the dashboard catch up with the end of the file
    for _ in range(40):
        await screen.poller.refresh()
        if screen._tail.offsets["log"] >= log_path.stat().st_size:
            break
    await pilot.press("l")
    rss1 = proc.memory_info().rss
    return latencies, (rss1 - rss0) / 2**20, written


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main(duration: float, rate: int) -> None:
    from tui.app import VoxtuneApp
    from tui.screens.dashboard import DashboardScreen
    from tui.widgets.logview import LogView

    ws = Workspace(Path(tempfile.mkdtemp()) / "ws").ensure()
    rid = make_run(ws, status="running", log_lines=100)
    rf = RunFiles(ws.run_dir(rid))
    app = VoxtuneApp(ws)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = DashboardScreen(rid)
        await app.push_screen(screen)
        await screen.poller.refresh()
        await pilot.pause()
        log = screen.query_one(LogView)

        base_lat, base_mem, _ = await measure(app, pilot, screen, duration, None, rf.log)
        lines_before = log.total_lines
        size_before = rf.log.stat().st_size
        cmd = [sys.executable, "-c", WRITER, str(rate), str(duration), str(rf.metrics)]
        load_lat, load_mem, written = await measure(app, pilot, screen, duration, cmd, rf.log)

        in_file = rf.log.read_bytes()[size_before:].count(b"\n")
        shown = log.total_lines - lines_before
        print(f"dashboard benchmark: {rate} lines/s for {duration:.0f} s, 80x24, headless")
        print(f"lines written by the worker: {written:,}; lines in log.txt: {in_file:,} "
              f"({'all there' if in_file == written else 'MISSING LINES'})")
        print(f"lines the dashboard read: {shown:,} ({shown / max(1, written):.2f} of written; "
              f"{screen.skipped_bytes:,} bytes skipped to keep up, announced in the log panel)")
        print(f"log panel keeps {len(log.lines):,} lines (cap {log.max_lines:,})")
        print(f"RSS growth: idle {base_mem:+.1f} MiB, under load {load_mem:+.1f} MiB "
              f"(difference {load_mem - base_mem:+.1f} MiB)")
        bm, lm = statistics.median(base_lat), statistics.median(load_lat)
        print(f"key-press latency median: idle {bm * 1000:.1f} ms, under load {lm * 1000:.1f} ms "
              f"-> ratio {lm / bm:.2f}x")
        bp, lp = pct(base_lat, 0.95), pct(load_lat, 0.95)
        print(f"key-press latency p95:    idle {bp * 1000:.1f} ms, under load {lp * 1000:.1f} ms "
              f"-> ratio {lp / bp:.2f}x  ({len(base_lat)} / {len(load_lat)} presses)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase (default 60)")
    ap.add_argument("--rate", type=int, default=5000, help="log lines per second (default 5000)")
    args = ap.parse_args()
    asyncio.run(main(args.duration, args.rate))
