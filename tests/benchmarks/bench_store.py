"""For 10,000 run records: time to list and sort them and to update one, as ratios against
json.load of the same file measured in the same run (and TinyDB's own JSONStorage update,
which writes in place without fsync or lock).

    .venv/bin/python tests/benchmarks/bench_store.py [N]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tinydb import Query, TinyDB  # noqa: E402

from engine.scheduler import order  # noqa: E402
from engine.store import SCHEMA_VERSION, Store  # noqa: E402


def make_file(path: Path, n: int) -> None:
    runs = {}
    for i in range(1, n + 1):
        t = 1.79e9 + i
        runs[str(i)] = {
            "id": f"1125-{i:05d}-whisper-small-lora", "seq": i, "priority": i % 3, "model": "whisper-small",
            "method": "lora", "dataset": "calls", "eval_only": False, "status": "finished", "status_reason": None,
            "history": [{"status": "queued", "time": t, "reason": None}, {"status": "running", "time": t + 1, "reason": None},
                        {"status": "finished", "time": t + 600, "reason": None}],
            "created_at": t, "started_at": t + 1, "finished_at": t + 600, "pid": None, "estimate_gb": 7.9,
            "peak_memory": {"device": "0", "allocated_gb": 7.1, "reserved_gb": 7.6, "rss_gb": 3.2},
            "metrics": {"wer": 0.21, "cer": 0.08, "eval_loss": 0.7}, "best": {"step": 300, "wer": 0.2},
        }
    meta = {"1": {"key": "schema_version", "value": SCHEMA_VERSION}, "2": {"key": "run_seq", "value": n}}
    path.write_text(json.dumps({"_meta": meta, "runs": runs}, separators=(",", ":")))


def timeit(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "voxtune.json"
        make_file(path, n)
        size_mb = path.stat().st_size / 1e6
        store = Store(path)
        target = f"1125-{n // 2:05d}-whisper-small-lora"
        base = timeit(lambda: json.loads(path.read_text()))
        list_sort = timeit(lambda: order(store.list_runs()))
        by_time = timeit(lambda: sorted(store.list_runs(), key=lambda r: r["created_at"], reverse=True))
        update = timeit(lambda: store.update_run(target, priority=7))
        status = timeit(lambda: store.set_status(target, "finished", "bench"))
        get_one = timeit(lambda: store.get_run(target))
        plain = Path(d) / "plain.json"
        make_file(plain, n)
        db = TinyDB(plain)
        tiny_update = timeit(lambda: db.table("runs", cache_size=0).update({"priority": 7}, Query().id == target))
    print(f"{n} run records, file {size_mb:.1f} MB; baseline json.load of the file: {base * 1000:.1f} ms")
    for name, t in (("list + sort by queue order", list_sort), ("list + sort by created_at", by_time),
                    ("get one run", get_one), ("update one run (lock + atomic write)", update),
                    ("set_status of one run", status), ("TinyDB JSONStorage update, in place", tiny_update)):
        print(f"  {name:<40} {t / base:6.2f} x baseline  ({t * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
