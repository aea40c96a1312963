"""How fast the TUI opens on a busy workspace, and how fast `voxtune --help` answers.

Prints ratios against baselines measured in the same run on the same machine:
  - start to first frame of the Runs screen, and to the full table, with 1,000 past runs,
    against an empty Textual app started the same way;
  - `voxtune --help` against `python -c pass`.
Usage: .venv/bin/python tests/benchmarks/bench_tui_start.py [--runs 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# Child: start an app headless, print seconds from interpreter start to the first frame
# and to "ready" (for voxtune: every run in the table), then exit.
CHILD = r"""
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
kind, home, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
from textual.app import App
marks = {{}}
if kind == "empty":
    from textual.widgets import Static
    class Bench(App):
        def compose(self):
            yield Static("hello")
    app = Bench()
    ready = lambda: True
else:
    from engine.workspace import Workspace
    from tui.app import VoxtuneApp
    app = VoxtuneApp(Workspace(__import__("pathlib").Path(home)))
    def ready():
        try:
            return app.screen.query_one("#runs-table").row_count >= expected
        except Exception:
            return False

async def pilot(p):
    await p.pause()
    marks["first_frame"] = time.perf_counter() - t0
    while not ready():
        await p.pause(0.01)
    marks["ready"] = time.perf_counter() - t0
    app.exit()

app.run(headless=True, size=(80, 24), auto_pilot=pilot)
print(marks["first_frame"], marks["ready"])
"""


def make_workspace(home: Path, n: int) -> float:
    """n finished runs with metrics files, through the real store. Returns setup seconds."""
    from engine.runfiles import RunFiles, append_jsonl
    from engine.store import Store
    from engine.workspace import Workspace

    t = time.perf_counter()
    ws = Workspace(home).ensure()
    store = Store(ws)
    with store.locked():
        for i in range(n):
            run_id = f"1125-{i:04d}-whisper-small-lora"
            store.add_run({"id": run_id, "model": "whisper-small", "method": "lora", "dataset": "demo",
                           "status": "finished" if i % 10 else "failed", "finished_at": 1764000000 + i,
                           "best": {"step": 100, "wer": 0.1 + (i % 50) / 500, "checkpoint": None}})
            files = RunFiles(ws.run_dir(run_id)).create()
            for s in (50, 100):
                append_jsonl(files.metrics, {"kind": "train", "step": s, "max_steps": 100, "loss": 0.5, "time": s})
            append_jsonl(files.metrics, {"kind": "eval", "step": 100, "max_steps": 100, "wer": 0.2, "time": 101})
    return time.perf_counter() - t


def child(kind: str, home: Path, expected: int) -> tuple[float, float]:
    code = CHILD.format(repo=str(REPO))
    out = subprocess.run([sys.executable, "-c", code, kind, str(home), str(expected)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{out.stderr[-2000:]}")
    first, ready = map(float, out.stdout.split()[-2:])
    return first, ready


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "ws"
        setup = make_workspace(home, args.runs)
        print(f"workspace with {args.runs} runs built in {setup:.1f} s")
        base, first, ready = [], [], []
        for _ in range(args.repeat):
            base.append(child("empty", home, 0)[0])
            f, r = child("voxtune", home, args.runs)
            first.append(f)
            ready.append(r)
        b, f, r = statistics.median(base), statistics.median(first), statistics.median(ready)
        print(f"empty Textual app, start to first frame:       {b:.3f} s (baseline = 1.00)")
        print(f"voxtune, start to first frame ({args.runs} runs):   {f:.3f} s = {f / b:.2f}x baseline")
        print(f"voxtune, start to full runs table:              {r:.3f} s = {r / b:.2f}x baseline")
        exe = str(Path(sys.executable).with_name("voxtune"))
        py = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(args.repeat))
        hp = statistics.median(wall([exe, "--help"]) for _ in range(args.repeat))
        print(f"python -c pass:                                 {py:.3f} s (baseline = 1.00)")
        print(f"voxtune --help:                                 {hp:.3f} s = {hp / py:.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
