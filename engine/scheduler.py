"""Which queued run starts next, and why the others wait. Pure: no store, no processes.

Order is priority (higher first), then insertion order. Admission follows the user's one
GPU: by default one training run per device, started only when the estimator's peak fits
the device's *free* memory (a desktop card also holds the display). The queue is strict
FIFO within that order -- a run that may fit later blocks the ones behind it, so a big run
is never starved by small ones -- except a run that can never fit (needs more than the
device's total memory), which is skipped with a reason instead of blocking everyone.

A run may ask for several devices (`gpus`: a number, or "all"): it then reserves that many
idle GPUs at once (no other run shares them), each with the per-device memory the estimator
gives for DDP -- or FSDP when the run does not fit one card but fits sharded. On a host
without GPUs such a run gets the CPU and that many processes (gloo), one run at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from engine.estimator import choose_strategy

CPU = "cpu"


@dataclass(frozen=True)
class Device:
    """A place a run can execute: a GPU (index as a string) or the CPU."""

    id: str
    name: str = ""
    free_gb: float | None = None  # None: unknown (no telemetry); admission then trusts the estimate
    total_gb: float | None = None

    @property
    def is_gpu(self) -> bool:
        return self.id != CPU


@dataclass
class Plan:
    start: list[tuple[str, str]] = field(default_factory=list)  # (run_id, device ids joined by ",")
    waiting: dict[str, str] = field(default_factory=dict)  # run_id -> one-line reason
    procs: dict[str, int] = field(default_factory=dict)  # run_id -> training processes (started runs)
    strategy: dict[str, str] = field(default_factory=dict)  # run_id -> ddp | fsdp (several processes)


def requested_devices(run: dict, n_gpus: int) -> int:
    """How many devices a run asks for: its `gpus` (default 1); "all" = every GPU of the host."""
    want = run.get("gpus")
    if want in (None, ""):
        return 1
    if str(want).lower() == "all":
        return max(1, n_gpus)
    try:
        return max(1, int(want))
    except (TypeError, ValueError):
        return 1


def device_ids(device: str | None) -> list[str]:
    """A run record's `device` ("0", "0,1", "cpu") as the ids it occupies."""
    return [d for d in str(device or CPU).split(",") if d]


def order(runs: Iterable[dict]) -> list[dict]:
    """Queue order: priority desc, then seq asc."""
    return sorted(runs, key=lambda r: (-int(r.get("priority") or 0), int(r.get("seq") or 0)))


def _gb(x: float) -> str:
    return f"{x:.1f} GiB"


def plan(
    queued: Sequence[dict],
    active: Sequence[dict],
    devices: Sequence[Device],
    *,
    paused: bool = False,
    max_per_device: int = 1,
) -> Plan:
    """Decide what to start now.

    `queued`: run records with status queued (any order); while `paused`, only those with
    `start_now` set are placed. `active`: running records, each
    with a `device` field naming where it runs. `devices`: GPUs, or empty for a CPU-only host.
    """
    result = Plan()
    runs = order(queued)
    if paused:  # only runs the user started by hand (`runs resume` while paused; pueue's `start`)
        for r in runs:
            if not r.get("start_now"):
                result.waiting[r["id"]] = "waiting: queue paused (voxtune queue resume)"
        runs = [r for r in runs if r.get("start_now")]
        if not runs:
            return result

    devs = list(devices) or [Device(CPU, "CPU")]
    n_gpus = sum(1 for d in devs if d.is_gpu)
    busy: dict[str, list[str]] = {d.id: [] for d in devs}
    for a in active:
        for dev in device_ids(a.get("device")):
            busy.setdefault(dev, []).append(a["id"])

    blocked_by: str | None = None
    for r in runs:
        rid = r["id"]
        if blocked_by is not None:
            result.waiting[rid] = f"waiting: behind {blocked_by}"
            continue
        want = requested_devices(r, n_gpus)
        if want > 1 and n_gpus:
            if _plan_multi(r, want, devs, busy, result):
                blocked_by = rid
            continue
        need = r.get("estimate_gb")
        never = [d for d in devs if d.is_gpu and need is not None and d.total_gb is not None and need > d.total_gb]
        if len(never) == len(devs) and all(d.is_gpu for d in devs):
            biggest = max(d.total_gb or 0 for d in devs)
            result.waiting[rid] = (
                f"waiting: needs {_gb(need)}, the largest GPU has {_gb(biggest)} in total -- it cannot fit; "
                "cancel it or clone it with a smaller batch, QLoRA or gradient checkpointing"
            )
            continue
        chosen, reasons = None, []
        for d in devs:
            if len(busy[d.id]) >= max_per_device:
                reasons.append(f"{d.name or d.id} busy with {', '.join(busy[d.id])}")
                continue
            if d.is_gpu and need is not None and d.free_gb is not None and need > d.free_gb:
                reasons.append(f"needs {_gb(need)}, {_gb(d.free_gb)} free")
                continue
            chosen = d
            break
        if chosen is None:
            result.waiting[rid] = "waiting: " + "; ".join(reasons)
            blocked_by = rid
            continue
        result.start.append((rid, chosen.id))
        result.procs[rid] = want if not chosen.is_gpu else 1  # CPU host: `gpus` N = N gloo processes
        if result.procs[rid] > 1:
            result.strategy[rid] = "ddp"
        busy[chosen.id].append(rid)
        if chosen.free_gb is not None and need is not None:
            # Later admissions on the same device see the memory this run will take.
            devs = [
                Device(d.id, d.name, d.free_gb - need, d.total_gb) if d.id == chosen.id else d for d in devs
            ]
    return result


def _plan_multi(run: dict, want: int, devs: list[Device], busy: dict[str, list[str]], result: Plan) -> bool:
    """Admit `run` on `want` idle GPUs, or record why it waits. Returns True when the run
    blocks the queue (it may fit later), False when it started or can never fit."""
    rid = run["id"]
    gpus = [d for d in devs if d.is_gpu]
    if want > len(gpus):
        result.waiting[rid] = (f"waiting: needs {want} GPUs, this machine has {len(gpus)} -- it cannot start here; "
                               "cancel it or clone it with --gpus " + str(len(gpus)))
        return False
    totals = [d.total_gb for d in gpus if d.total_gb is not None]
    smallest = min(totals) if totals else None
    strategy, need = choose_strategy(run.get("estimate_devices"), want, smallest, run.get("estimate_gb"))
    if need is not None and smallest is not None and sum(1 for t in totals if need <= t) < want:
        result.waiting[rid] = (f"waiting: needs {_gb(need)} on each of {want} GPUs ({strategy}) -- it cannot fit; "
                               "cancel it or clone it with a smaller batch or QLoRA")
        return False
    idle, reasons = [], []
    for d in sorted(gpus, key=lambda d: -(d.free_gb if d.free_gb is not None else float("inf"))):
        if busy.get(d.id):
            reasons.append(f"{d.name or d.id} busy with {', '.join(busy[d.id])}")
        elif need is not None and d.free_gb is not None and need > d.free_gb:
            reasons.append(f"{d.name or d.id} has {_gb(d.free_gb)} free")
        else:
            idle.append(d)
    if len(idle) < want:
        per = f", {_gb(need)} each" if need is not None else ""
        result.waiting[rid] = f"waiting: needs {want} idle GPUs{per}; " + "; ".join(reasons)
        return True
    chosen = sorted(idle[:want], key=lambda d: d.id)
    result.start.append((rid, ",".join(d.id for d in chosen)))
    result.procs[rid] = want
    result.strategy[rid] = strategy
    for d in chosen:
        busy[d.id].append(rid)
    return False
