"""Which queued run starts next, and why the others wait. Pure: no store, no processes.

Order is priority (higher first), then insertion order. Admission follows the user's one
GPU: by default one training run per device, started only when the estimator's peak fits
the device's *free* memory (a desktop card also holds the display). The queue is strict
FIFO within that order -- a run that may fit later blocks the ones behind it, so a big run
is never starved by small ones -- except a run that can never fit (needs more than the
device's total memory), which is skipped with a reason instead of blocking everyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

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
    start: list[tuple[str, str]] = field(default_factory=list)  # (run_id, device_id)
    waiting: dict[str, str] = field(default_factory=dict)  # run_id -> one-line reason


def order(runs: Iterable[dict]) -> list[dict]:
    """Queue order: priority desc, then seq asc."""
    return sorted(runs, key=lambda r: (-int(r.get("priority") or 0), int(r.get("seq") or 0)))


def _gb(x: float) -> str:
    return f"{x:.1f} GB"


def plan(
    queued: Sequence[dict],
    active: Sequence[dict],
    devices: Sequence[Device],
    *,
    paused: bool = False,
    max_per_device: int = 1,
) -> Plan:
    """Decide what to start now.

    `queued`: run records with status queued (any order). `active`: running records, each
    with a `device` field naming where it runs. `devices`: GPUs, or empty for a CPU-only host.
    """
    result = Plan()
    runs = order(queued)
    if paused:
        for r in runs:
            result.waiting[r["id"]] = "waiting: queue paused (voxtune queue resume)"
        return result

    devs = list(devices) or [Device(CPU, "CPU")]
    busy: dict[str, list[str]] = {d.id: [] for d in devs}
    for a in active:
        busy.setdefault(str(a.get("device") or CPU), []).append(a["id"])

    blocked_by: str | None = None
    for r in runs:
        rid = r["id"]
        if blocked_by is not None:
            result.waiting[rid] = f"waiting: behind {blocked_by}"
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
        busy[chosen.id].append(rid)
        if chosen.free_gb is not None and need is not None:
            # Later admissions on the same device see the memory this run will take.
            devs = [
                Device(d.id, d.name, d.free_gb - need, d.total_gb) if d.id == chosen.id else d for d in devs
            ]
    return result
