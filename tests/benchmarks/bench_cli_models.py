"""How long `voxtune models --json` (and `voxtune fit`) take, as ratios against starting a bare
Python interpreter measured in the same run; plus opening the Models screen in-process.

    .venv/bin/python tests/benchmarks/bench_cli_models.py [--repeat N]
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


def timed(cmd: list[str], repeat: int, cwd: str) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        cp = subprocess.run(cmd, capture_output=True, cwd=cwd)
        runs.append(time.perf_counter() - t)
        if cp.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {cp.stderr.decode()[-500:]}")
    return statistics.median(runs)


def models_screen_open_s(home: Path) -> float:
    """Press 2 in a headless app and wait for the Models table to fill."""
    from engine.workspace import Workspace
    from tui.app import VoxtuneApp

    async def run() -> float:
        app = VoxtuneApp(Workspace(home).ensure())
        async with app.run_test(size=(80, 24)) as pilot:
            t = time.perf_counter()
            await pilot.press("2")
            while app.screen.query("#models-table").first().row_count == 0:
                await pilot.pause(0.001)
            return time.perf_counter() - t

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    voxtune = str(Path(sys.executable).with_name("voxtune"))
    with tempfile.TemporaryDirectory() as home:
        base = timed([sys.executable, "-c", "pass"], args.repeat, home)
        models = timed([voxtune, "models", "--vram", "12", "--json"], args.repeat, home)
        fit = timed([voxtune, "fit", "whisper-large-v3", "--method", "lora8", "--json"], args.repeat, home)
        screen = statistics.median(models_screen_open_s(Path(home)) for _ in range(max(1, args.repeat // 2)))
    print(f"baseline `python -c pass`        {base * 1000:7.0f} ms   1.00x")
    print(f"`voxtune models --vram 12 --json` {models * 1000:7.0f} ms   {models / base:5.2f}x baseline")
    print(f"`voxtune fit ... --json`          {fit * 1000:7.0f} ms   {fit / base:5.2f}x baseline")
    print(f"Models screen: key 2 to filled table {screen * 1000:5.0f} ms   {screen / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
