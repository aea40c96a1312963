"""Reliability under faults (issue 13), with real processes and real files. Prints:

1. kill -9 at random moments (engine, worker or both), >= 30 rounds on the step worker
   (tests/engine_helpers.step_job: the driver's file protocol, milliseconds per step) plus a few
   rounds on a tiny Whisper really training: corrupt files, lost runs, failed resumes (a resume
   that did not continue from the last complete checkpoint, or a resumed run that did not finish);
2. a full disk during a checkpoint save (a 20 MiB tmpfs, as root): the run's ending, the queue,
   the engine, and a resume once space is back;
3. the hostile-folder check: an `engine/` package that writes a marker file, planted in the
   caller's folder, the workspace and the run folder;
4. bad-input CLI cases: how many printed one line (+ hint) and exited 2.

    .venv/bin/python tests/benchmarks/bench_faults.py [--quick] [--rounds N] [--real N] [--seed S]

Run it under the CPU lock (helpers' rule): flock /tmp/voxtune-cpu.lock nice -n 5 timeout 600 ...
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from engine import daemon, queue  # noqa: E402
from engine.runfiles import RunFiles, read_jsonl  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.worker import lock_holder  # noqa: E402
from engine.workspace import Workspace  # noqa: E402
from tests.engine_helpers import (STEP_ENTRY, _last_checkpoint, add_dataset, add_step_run, cleanup,  # noqa: E402
                                  current_step, daemon_pid, kill9, wait_for, wait_status)
from tests.functional.test_reliability import corrupt_files  # noqa: E402
from tests.hostile import plant  # noqa: E402

ENDED = ("finished", "failed", "cancelled", "interrupted")


def step_env(step_s: float) -> None:
    os.environ.update({"VOXTUNE_WORKER_ENTRY": STEP_ENTRY, "VOXTUNE_TEST_STEP_S": str(step_s), "VOXTUNE_TEST_FAIL": ""})
    os.environ.pop("VOXTUNE_TEST_CKPT_BYTES", None)


# -- 1. kill -9 rounds --------------------------------------------------------------------------
def kill_rounds(root: Path, rounds: int, rng: random.Random) -> dict:
    step_env(0.03)
    ws = Workspace(root / "kill").ensure()
    add_dataset(ws)
    store = Store(ws)
    ids = [add_step_run(ws, max_steps=30, save_every=4) for _ in range(4)]
    corrupt: list[str] = []
    kills = {"engine": 0, "worker": 0}
    expected: list[tuple[str, int, float]] = []  # (run, checkpoint it must resume from, when)
    try:
        for _ in range(rounds):
            daemon.start(ws)
            ids.append(add_step_run(ws, max_steps=12, save_every=3))
            time.sleep(rng.uniform(0.0, 1.0))
            victim = rng.choice(("engine", "worker", "both"))
            hit = []
            if victim in ("worker", "both"):
                for run in store.list_runs():
                    pid = lock_holder(ws.run_dir(run["id"])) or run.get("pid") if run["status"] == "running" else None
                    if pid and pid > 0:
                        kill9(pid)
                        hit.append(run["id"])
                        kills["worker"] += 1
            if victim in ("engine", "both"):
                kill9(daemon_pid(ws))
                kills["engine"] += 1
            corrupt += corrupt_files(ws)
            daemon.start(ws)
            for rid in hit:
                wait_for(lambda rid=rid: store.get_run(rid)["status"] != "running", 30, what=f"{rid} to leave running")
            for run in store.list_runs():
                if run["status"] in ("interrupted", "failed"):
                    files = RunFiles(ws.run_dir(run["id"]))
                    expected.append((run["id"], _last_checkpoint(files), time.time()))
                    queue.resume(ws, run["id"])
            queue.unpause(ws)
        daemon.start(ws)
        wait_for(lambda: all(r["status"] in ENDED for r in store.list_runs()), 300, interval=0.5, what="every run to end")
        corrupt += corrupt_files(ws)
        runs = {r["id"]: r for r in store.list_runs()}
        lost = [rid for rid in ids if rid not in runs or runs[rid]["status"] != "finished"]
        failed_resumes = 0
        for rid, ckpt, t in expected:
            later = [a for a in read_jsonl(ws.run_dir(rid) / "attempts.jsonl") if a["time"] >= t]
            if not later or later[0]["start"] != ckpt or runs.get(rid, {}).get("status") != "finished":
                failed_resumes += 1
        steps_ok = sum(1 for rid in ids if current_step(ws, rid) ==
                       json.loads((ws.run_dir(rid) / "config.json").read_text())["max_steps"])
    finally:
        cleanup(ws)
    return {"rounds": rounds, "kills": kills, "runs": len(ids), "corrupt_files": len(corrupt), "lost_runs": len(lost),
            "resumes": len(expected), "failed_resumes": failed_resumes, "runs_reaching_max_steps": steps_ok,
            "corrupt_examples": corrupt[:3]}


def real_rounds(root: Path, rounds: int, rng: random.Random) -> dict:
    """kill -9 engine + worker mid-run of a tiny Whisper, resume; it must finish from a checkpoint."""
    from tests.tiny_models import make_tiny_dataset, make_tiny_whisper

    os.environ.pop("VOXTUNE_WORKER_ENTRY", None)
    model = make_tiny_whisper(root / "tiny-whisper")
    ws = Workspace(root / "real").ensure()
    make_tiny_dataset(ws, "tiny", n=4)
    out = {"rounds": rounds, "corrupt_files": 0, "lost_runs": 0, "failed_resumes": 0, "final_losses": []}
    try:
        for _ in range(rounds):
            rid = queue.add(ws, model=str(model), dataset="tiny", method="lora", max_steps=8, save_every=2, eval_every=8,
                            batch_size=2, grad_accum=1, lr=1e-3, warmup_steps=0, max_new_tokens=8, seed=0)
            daemon.start(ws)
            at = rng.randint(3, 6)
            wait_for(lambda rid=rid, at=at: current_step(ws, rid) >= at, 300, interval=0.02, what=f"step {at}")
            time.sleep(rng.uniform(0.0, 0.3))
            worker = Store(ws).get_run(rid)["pid"]
            kill9(daemon_pid(ws))
            kill9(worker)
            out["corrupt_files"] += len(corrupt_files(ws))
            daemon.start(ws)
            wait_status(ws, rid, ("interrupted", "failed"), 60)
            ckpt = _trainer_checkpoint(RunFiles(ws.run_dir(rid)))
            queue.resume(ws, rid)
            queue.unpause(ws)
            run = wait_status(ws, rid, ("finished", "failed", "interrupted"), 300)
            log = (ws.run_dir(rid) / "log.txt").read_text()
            if run["status"] != "finished":
                out["lost_runs"] += 1
            if ckpt and f"checkpoint-{ckpt}" not in log.split("=== ")[-1]:
                out["failed_resumes"] += 1
            result = json.loads((ws.run_dir(rid) / "result.json").read_text())
            out["final_losses"].append(result.get("final_loss"))
        out["corrupt_files"] += len(corrupt_files(ws))
    finally:
        cleanup(ws)
    return out


def _trainer_checkpoint(files: RunFiles) -> int | None:
    steps = []
    for d in files.checkpoints.glob("checkpoint-*"):
        try:
            json.loads((d / "trainer_state.json").read_text())
            steps.append(int(d.name.split("-")[1]))
        except (OSError, ValueError):
            pass
    return max(steps, default=None)


# -- 2. full disk ---------------------------------------------------------------------------------
def fill(mnt: Path, leave: int = 0) -> Path:
    ballast = mnt / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(ballast, max(0, ballast.stat().st_size - leave))
    return ballast


def mount_tmpfs(mnt: Path, size: str = "20m") -> bool:
    mnt.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                          capture_output=True).returncode == 0


def disk_full(root: Path) -> dict:
    mnt = root / "fs"
    if not mount_tmpfs(mnt):
        return {"skipped": "cannot mount a tmpfs (needs root)"}
    step_env(0.02)
    os.environ["VOXTUNE_TEST_CKPT_BYTES"] = str(3 << 20)
    ws = Workspace(mnt / "ws").ensure()
    out: dict = {}
    try:
        add_dataset(ws)
        first = add_step_run(ws, max_steps=40, save_every=5)
        second = add_step_run(ws, max_steps=10, save_every=5)
        ballast = fill(mnt, leave=8 << 20)
        daemon.start(ws)
        t0 = time.monotonic()
        run = wait_status(ws, first, ("failed", "finished"), 60)
        out["run_ended_in_s"] = round(time.monotonic() - t0, 1)
        out["status"] = run["status"]
        out["reason"] = run["status_reason"]
        out["queue_paused"], out["pause_reason"] = queue.is_paused(ws)
        out["next_run_waits"] = Store(ws).get_run(second)["status"] == "queued"
        out["engine_alive"] = daemon.engine_pid(ws) is not None
        out["partial_checkpoint_left"] = (ws.run_dir(first) / "checkpoints" / "checkpoint-15").exists()
        ballast.unlink()
        os.environ["VOXTUNE_TEST_CKPT_BYTES"] = str(1 << 20)
        daemon.stop(ws)
        queue.resume(ws, first)
        queue.unpause(ws)
        daemon.start(ws)
        out["after_space_is_back"] = [wait_status(ws, r, ("failed", "finished"), 60)["status"] for r in (first, second)]
    finally:
        cleanup(ws)
        os.environ.pop("VOXTUNE_TEST_CKPT_BYTES", None)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return out


# -- 3. hostile folders ----------------------------------------------------------------------------
def hostile(root: Path) -> dict:
    step_env(0.01)
    marker = root / "HIJACKED"
    ws = Workspace(root / "hostile-ws").ensure()
    add_dataset(ws)
    rid = add_step_run(ws, max_steps=4, save_every=2)
    for folder in (root / "hostile-cwd", ws.home, ws.run_dir(rid)):
        plant(folder, marker)
    here = os.getcwd()
    os.chdir(root / "hostile-cwd")
    try:
        daemon.start(ws)
        status = wait_status(ws, rid, ("finished", "failed"), 60)["status"]
        from engine.params import compute_in_subprocess

        compute_in_subprocess({"name": "x", "family": "whisper", "hub_id": "/nonexistent"}, timeout=120)
    finally:
        os.chdir(here)
        cleanup(ws)
    return {"hostile_code_ran": marker.exists(), "run_status": status}


# -- 4. bad input --------------------------------------------------------------------------------
def bad_inputs(root: Path) -> dict:
    from tests.data_helpers import make_folder_dataset

    base = root / "bad"
    base.mkdir()
    add = ["queue", "add", "--model", "whisper-small", "--dataset", "demo", "--method", "lora", "--no-start"]
    good = base / "good"
    cases: list[tuple[str, Path, list[str]]] = []

    def case(name: str, home: Path, *args: str) -> None:
        cases.append((name, home, list(args)))

    afile = base / "afile"
    afile.write_text("")
    case("--home is a file: runs ls", afile, "runs", "ls")
    case("--home is a file: queue add", afile, *add)
    for i, content in enumerate(["", "  \n", "null", "[]", '{"runs": "x"}', '{"runs": {"1": {"id": ']):
        home = base / f"damaged{i}"
        home.mkdir()
        (home / "voxtune.json").write_text(content)
        case(f"store {content.strip()[:12]!r}: runs ls", home, "runs", "ls")
        case(f"store {content.strip()[:12]!r}: queue add", home, *add)
    newer = base / "newer"
    newer.mkdir()
    (newer / "voxtune.json").write_text(json.dumps({"_meta": {"1": {"key": "schema_version", "value": 99}}}))
    case("newer schema: runs ls", newer, "runs", "ls")
    subprocess.run([sys.executable, "-m", "tui", "--home", str(good), *add], capture_output=True, timeout=120)
    for flag, value in (("--lr", "nan"), ("--lr", "inf"), ("--epochs", "nan"), ("--batch", "0"), ("--lora-dropout", "1.5"),
                        ("--max-steps", "-3"), ("--lora-rank", "0")):
        case(f"{flag} {value}", good, *add, flag, value)
    case("unknown model", good, "queue", "add", "--model", "no-such-model", "--dataset", "demo", "--method", "lora", "--no-start")
    case("unknown dataset", good, "queue", "add", "--model", "whisper-small", "--dataset", "nope", "--method", "lora", "--no-start")
    case("unknown method for model", good, *add[:-3], "--method", "magic", "--no-start")
    case("import a missing folder", good, "data", "import", str(base / "missing"), "--name", "x")
    case("import a bad name", good, "data", "import", str(base), "--name", "a b/c")
    src_a = make_folder_dataset(base / "src-a", n=3, seconds=1.0)
    src_b = make_folder_dataset(base / "src-b", n=3, seconds=1.0)
    subprocess.run([sys.executable, "-m", "tui", "--home", str(good), "data", "import", str(src_a), "--name", "talks"],
                   capture_output=True, timeout=120)
    case("re-import from another folder", good, "data", "import", str(src_b), "--name", "talks")
    case("runs show unknown id", good, "runs", "show", "nope")
    case("runs resume unknown id", good, "runs", "resume", "nope")
    case("runs rebuild on a readable store", good, "runs", "rebuild")
    mnt = base / "fs"
    if mount_tmpfs(mnt, "20m"):
        full = mnt / "ws"
        subprocess.run([sys.executable, "-m", "tui", "--home", str(full), *add], capture_output=True, timeout=120)
        fill(mnt)
        case("full disk: queue add", full, *add)
        case("full disk: queue pause", full, "queue", "pause")
        case("full disk: data import", full, "data", "import", str(src_a), "--name", "mine")
    ro_view = None
    if os.geteuid() == 0:
        ro_view = base / "good-ro"
        ro_view.mkdir()
        ok = subprocess.run(["mount", "--bind", str(good), str(ro_view)], capture_output=True).returncode == 0 and \
            subprocess.run(["mount", "-o", "remount,ro,bind", str(ro_view)], capture_output=True).returncode == 0
        if ok:
            case("read-only workspace: queue add", ro_view, *add)
            case("read-only workspace: queue pause", ro_view, "queue", "pause")
        else:
            ro_view = None
    failures = []
    one_line = 0
    try:
        for name, home, args in cases:
            cp = subprocess.run([sys.executable, "-m", "tui", "--home", str(home), *args], capture_output=True,
                                text=True, timeout=180)
            lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
            ok = (cp.returncode == 2 and "Traceback" not in cp.stderr + cp.stdout and lines
                  and lines[0].startswith("voxtune: ") and len(lines) <= 2 and all(ln.startswith("  hint: ") for ln in lines[1:]))
            one_line += bool(ok)
            if not ok:
                failures.append(f"{name}: exit {cp.returncode}: {(lines or [''])[0][:120]}")
        reads_ok = None
        if ro_view is not None:
            cp = subprocess.run([sys.executable, "-m", "tui", "--home", str(ro_view), "runs", "ls"], capture_output=True,
                                text=True, timeout=120)
            reads_ok = cp.returncode == 0
    finally:
        if ro_view is not None:
            subprocess.run(["umount", str(ro_view)], capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return {"cases": len(cases), "one_line_exit_2": one_line, "failures": failures, "read_only_runs_ls_works": reads_ok}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 kill rounds, no tiny-Whisper rounds (development)")
    ap.add_argument("--rounds", type=int, default=None, help="kill -9 rounds on the step worker (default 30)")
    ap.add_argument("--real", type=int, default=None, help="kill -9 rounds on a tiny Whisper (default 2)")
    ap.add_argument("--seed", type=int, default=20261207)
    args = ap.parse_args()
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 30)
    real = args.real if args.real is not None else (0 if args.quick else 2)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="voxtune-bench-faults-"))
    t0 = time.monotonic()
    try:
        k = kill_rounds(root, rounds, rng)
        print(f"kill -9 (step worker): {k['rounds']} rounds, kills {k['kills']}, {k['runs']} runs: "
              f"corrupt files {k['corrupt_files']}, lost runs {k['lost_runs']}, failed resumes "
              f"{k['failed_resumes']} of {k['resumes']}, runs reaching max_steps {k['runs_reaching_max_steps']}/{k['runs']}"
              + (f"; e.g. {k['corrupt_examples']}" if k["corrupt_examples"] else ""), flush=True)
        if real:
            r = real_rounds(root, real, rng)
            print(f"kill -9 (tiny Whisper training): {r['rounds']} rounds: corrupt files {r['corrupt_files']}, "
                  f"lost runs {r['lost_runs']}, failed resumes {r['failed_resumes']}, final losses {r['final_losses']}",
                  flush=True)
        d = disk_full(root)
        print("disk full during a save: " + ("skipped: " + d["skipped"] if "skipped" in d else
              f"run {d['status']} in {d['run_ended_in_s']} s ({d['reason']!r}); queue paused {d['queue_paused']} "
              f"({d['pause_reason']!r}); next run waits {d['next_run_waits']}; engine alive {d['engine_alive']}; "
              f"half-written checkpoint left {d['partial_checkpoint_left']}; after freeing space: {d['after_space_is_back']}"),
              flush=True)
        h = hostile(root)
        print(f"hostile engine/ folders (cwd, workspace, run folder): hostile code ran {h['hostile_code_ran']}, "
              f"run {h['run_status']}", flush=True)
        b = bad_inputs(root)
        print(f"bad-input CLI cases: {b['one_line_exit_2']} of {b['cases']} printed one line and exited 2; "
              f"read-only `runs ls` works: {b['read_only_runs_ls_works']}", flush=True)
        for f in b["failures"]:
            print(f"  not one line/exit 2: {f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
