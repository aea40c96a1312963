"""Where a workspace's runs execute: the engine's own worker processes, or a Slurm cluster.

The daemon stays the one owner of the queue and the run records either way; an executor only
starts a run's worker, reports its state and ends it. The worker (`python -m engine.worker
RUN_DIR`) is the same in both cases, so a run folder looks the same whoever ran it.

- `local` (default): the daemon spawns workers on this machine, admits runs by free GPU
  memory (engine.scheduler) and samples their telemetry -- the code in engine.daemon.
- `slurm`: every queued run becomes one sbatch job (engine.slurm.SlurmExecutor); Slurm decides
  when and where it runs, voxtune follows it with squeue / scontrol / sacct, cancels with
  scancel and turns Slurm's endings (OOM kill, time limit, node failure, preemption) into run
  reasons. The run folder must be on a filesystem the compute nodes share.

The workspace's choice lives in the store's `_meta` table under `executor` ({"kind": ...,
settings}); `voxtune engine start --executor slurm` writes it. Light module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.errors import VoxtuneError
from engine.store import Store
from engine.workspace import Workspace

KINDS = ("local", "slurm")
META_KEY = "executor"


class ExecutorError(VoxtuneError):
    """The executor cannot be used as configured (a missing command, a bad setting)."""


@dataclass
class Ended:
    """A run whose job is over, as the executor saw it. `status`/`reason` are used only when the
    worker left no result.json saying otherwise (it was killed: OOM, time limit, node failure)."""

    run_id: str
    returncode: int | None  # the worker's exit status; negative: killed by that signal
    status: str | None = None  # failed | cancelled | interrupted
    reason: str | None = None
    oom: bool = False
    detail: str | None = None  # what the executor knows beyond the reason (e.g. the memory limit hit)


class Executor(Protocol):
    """What the daemon calls for a remote executor (local execution is the daemon's own)."""

    kind: str

    def submit(self, run: dict, config: dict) -> dict:
        """Start `run`; returns the record fields to store (e.g. slurm_job_id, status_reason)."""

    def poll(self, running: list[dict]) -> tuple[list[Ended], dict[str, str]]:
        """The runs among `running` whose jobs ended, and new status reasons for the others."""

    def cancel(self, run: dict, force: bool) -> None:
        """Stop a run's job (force: after the worker ignored cancel.request)."""


def settings(ws: Workspace, store: Store | None = None) -> dict:
    """The workspace's executor settings: {"kind": "local"|"slurm", ...}."""
    value = (store or Store(ws)).get_meta(META_KEY, None) or {}
    return value if isinstance(value, dict) and value.get("kind") in KINDS else {"kind": "local"}


def configure(ws: Workspace, kind: str, **options) -> dict:
    """Choose the executor for this workspace and keep its options (None values are dropped;
    options not given keep their earlier value when the kind stays the same)."""
    if kind not in KINDS:
        raise ExecutorError(f"executor: {kind!r} is not one of {', '.join(KINDS)}", field="executor")
    store = Store(ws)
    with store.locked():
        old = settings(ws, store)  # the same Store: its lock is re-entrant, a second one would wait for it
        new = dict(old) if old.get("kind") == kind else {}
        new.update({k: v for k, v in options.items() if v is not None}, kind=kind)
        if kind == "slurm":
            from engine import slurm

            slurm.validate_settings(new)
        store.set_meta(META_KEY, new)
    return new


def load(ws: Workspace) -> Executor | None:
    """The workspace's remote executor, or None for local execution."""
    conf = settings(ws)
    if conf["kind"] == "slurm":
        from engine.slurm import SlurmExecutor

        return SlurmExecutor(ws, conf)
    return None
