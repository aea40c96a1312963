"""One run on several devices: the worker starts N training processes through `torchrun`.

voxtune does not implement data parallelism; it hands the run to PyTorch's own launcher
(`python -m torch.distributed.run`, i.e. torchrun, which `accelerate launch` also wraps) and
the Hugging Face Trainer, which sets up DDP or FSDP from the launcher's environment
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT). What voxtune adds is the contract around it:

- The daemon (or a Slurm job) tells the worker how many processes and which strategy through
  the environment: `VOXTUNE_NPROC` (an integer, or `auto` = every visible GPU) and
  `VOXTUNE_STRATEGY` (`ddp` | `fsdp`; unset = `ddp`). `CUDA_VISIBLE_DEVICES` names the cards.
- The worker (`engine.worker`, the process the daemon watches, holding the run's lock) runs
  `torchrun --standalone --nproc-per-node N -m engine.rank RUN_DIR` and waits for it.
- Every rank runs the same training driver. Only rank 0 writes the run files (log lines,
  metrics.jsonl, samples.jsonl, checkpoints' extra files, result.json), so their format is the
  one a single-process run writes; rank r > 0 leaves its ending in `ranks/rank-<r>.json`.
- When torchrun returns, the worker folds every rank's ending into result.json (`ranks`,
  `world_size`, `strategy`), so a reader sees that all ranks finished.

On a host without GPUs the processes run on the CPU with the gloo backend (what the tests
use); with GPUs, NCCL (RCCL on ROCm). Light module: torch is imported inside functions only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from pathlib import Path

from engine.runfiles import RunFiles, atomic_write_json, read_json

NPROC_ENV = "VOXTUNE_NPROC"
STRATEGY_ENV = "VOXTUNE_STRATEGY"
STRATEGIES = ("ddp", "fsdp")
RANKS_DIR = "ranks"


# -- where am I ------------------------------------------------------------------------------
def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK") or 0)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main() -> bool:
    """True in the one process that writes the run files (rank 0, or a plain single process)."""
    return rank() == 0


def strategy() -> str:
    s = (os.environ.get(STRATEGY_ENV) or "ddp").lower()
    return s if s in STRATEGIES else "ddp"


def requested_procs(environ: dict | None = None) -> int:
    """How many training processes the worker starts: VOXTUNE_NPROC, `auto` = the GPUs this
    process sees (CUDA_VISIBLE_DEVICES honoured; 1 when there are none)."""
    raw = str((environ if environ is not None else os.environ).get(NPROC_ENV) or "1").strip().lower()
    if raw == "auto":
        try:
            import torch

            return max(1, torch.cuda.device_count())
        except Exception:  # no torch build with a GPU: one process
            return 1
    try:
        return max(1, int(raw))
    except ValueError:
        return 1


# -- the launcher ----------------------------------------------------------------------------
def launch_command(run_dir: str | Path, nproc: int) -> list[str]:
    """torchrun for `nproc` local processes. `--standalone` picks a free rendezvous port on
    localhost, so two multi-process runs on one box never collide."""
    from engine.procs import python_module

    return python_module("torch.distributed.run", "--standalone", f"--nproc-per-node={int(nproc)}",
                         "-m", "engine.rank", str(Path(run_dir).resolve()))


def launch(run_dir: str | Path, nproc: int) -> int:
    """Run the ranks and wait; returns torchrun's exit status (negative: killed by a signal).

    SIGTERM/SIGINT reaching the worker are passed on to torchrun, which stops its ranks; the
    ranks also die with their launcher (PR_SET_PDEATHSIG, set in engine.rank) if it is killed."""
    files = RunFiles(Path(run_dir).resolve())
    ranks = files.root / RANKS_DIR
    ranks.mkdir(exist_ok=True)
    for old in ranks.glob("rank-*.json"):  # a resumed run's earlier attempt
        old.unlink()
    from engine.procs import safe_env

    env = safe_env()  # PYTHONSAFEPATH: torchrun's `-m engine.rank` children ignore the working folder too
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, nproc))))
    proc = subprocess.Popen(launch_command(files.root, nproc), env=env, cwd=str(files.root))

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent (torchrun's agent) dies, so a killed
    worker never leaves training processes behind (torchrun starts ranks in their own sessions,
    out of reach of the daemon's process-group signals)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def rank_result_path(files: RunFiles, r: int) -> Path:
    return files.root / RANKS_DIR / f"rank-{r}.json"


def write_rank_result(files: RunFiles, result: dict) -> None:
    """Rank r > 0's ending: {rank, status, reason, step, final_loss, oom}."""
    r = rank()
    keep = {k: result.get(k) for k in ("status", "reason", "step", "final_loss", "oom", "duration_s")}
    atomic_write_json(rank_result_path(files, r), dict(keep, rank=r))


def merge_rank_results(files: RunFiles, nproc: int, returncode: int) -> dict | None:
    """Fold every rank's ending into result.json: `ranks` [{rank, status, ...}] in rank order,
    `world_size`, `strategy`. A rank that left no file is listed with status `lost`. If a rank
    failed but rank 0 said finished, the run failed (the reason names the rank). Returns the
    merged result, or None when rank 0 wrote no result.json (the worker's own error path
    writes one then)."""
    try:
        result = read_json(files.result, None)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return None
    ranks = [{"rank": 0, **{k: result.get(k) for k in ("status", "reason", "step", "final_loss", "oom",
                                                         "duration_s")}}]
    for r in range(1, nproc):
        try:
            rec = read_json(rank_result_path(files, r), None)
        except ValueError:
            rec = None
        ranks.append(rec if isinstance(rec, dict) else {"rank": r, "status": "lost",
                                                         "reason": "no result from this rank (killed, or it crashed hard)"})
    result.update(ranks=ranks, world_size=nproc, launcher_exit_code=returncode)
    if not result.get("strategy"):  # the driver records what the Trainer really used
        result["strategy"] = strategy()
    bad = [r for r in ranks[1:] if r.get("status") not in ("finished", "cancelled")]
    if result.get("status") == "finished" and bad:
        first = bad[0]
        result["status"] = "failed"
        result["reason"] = f"rank {first['rank']} {first.get('status')}: {first.get('reason') or 'no reason'}"
        result["oom"] = bool(first.get("oom"))
    atomic_write_json(files.result, result)
    return result


# -- inside a rank -----------------------------------------------------------------------------
def broadcast_from_main(values: list[float]) -> list[float]:
    """rank 0's `values` on every rank (a no-op in a single process). Used so that every rank
    takes the same save/stop decision at the same step: DDP and FSDP hang if one rank stops
    or saves while the others go on."""
    if world_size() <= 1:
        return values
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return [float(v) for v in t.cpu().tolist()]


def barrier() -> None:
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
