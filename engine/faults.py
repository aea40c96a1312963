"""How a run ended badly, told from what the process left: a full disk, an out-of-memory.

Light module (no torch): the worker, the training driver and the daemon all classify with it.

Full disk: an OSError with errno ENOSPC (or EDQUOT) anywhere in the exception's chain, or
"No space left on device" in the log. The reason names what was being saved when the path
says so ("no space left on device while saving checkpoint-15"); a half-written checkpoint is
removed (resuming from it would fail, and it frees the space result.json needs).

Out of memory, every form treated alike (reason + a smaller-batch suggestion):
- CUDA / HIP: torch.OutOfMemoryError, "CUDA out of memory", "HIP out of memory";
- the CPU allocator: "DefaultCPUAllocator: can't allocate memory", MemoryError, ENOMEM
  ("[Errno 12] Cannot allocate memory");
- the kernel's OOM killer: SIGKILL *and* a rise of an oom_kill counter between the worker's
  start and its end -- /proc/vmstat `oom_kill` (whole machine, Linux >= 4.13), the cgroup v2
  `memory.events` `oom_kill` of the engine's cgroup and its parents, or cgroup v1
  `memory.oom_control` `oom_kill`. A SIGKILL without such evidence is only "killed by SIGKILL".
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path
from typing import Iterator

DISK_FULL_EXIT = 28  # the worker's exit status when even result.json could not be written (= ENOSPC)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_MARKERS = ("no space left on device", "disk quota exceeded", "[errno 28]")
OOM_MARKERS = ("out of memory", "outofmemoryerror", "hip out of memory", "cuda out of memory",
               "defaultcpuallocator: can't allocate memory", "can't allocate memory", "cannot allocate memory",
               "memoryerror", "[errno 12]")
_CKPT_RE = re.compile(r"(?:^|/)(checkpoint-\d+)(?:/|$)")


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


# -- out of memory ---------------------------------------------------------------------------
def is_oom(e: BaseException) -> bool:
    """Any out-of-memory form (CUDA, HIP, CPU allocator, MemoryError, ENOMEM) in `e`'s chain."""
    for x in _chain(e):
        if isinstance(x, MemoryError) or type(x).__name__ == "OutOfMemoryError":
            return True
        if isinstance(x, OSError) and x.errno == errno.ENOMEM:
            return True
        if is_oom_text(str(x)):
            return True
    return False


def is_oom_text(text: str) -> bool:
    low = text.lower()
    return any(m in low for m in OOM_MARKERS)


def _counter(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    except (OSError, ValueError):
        return None
    return None


def oom_kill_count(proc: Path = Path("/proc"), cgroup_fs: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The sum of the kernel's OOM-kill counters this process can see (machine-wide and its
    memory cgroups up to the root); None when none is readable. Only a rise means anything."""
    total, found = 0, False
    n = _counter(proc / "vmstat", "oom_kill")
    if n is not None:
        total, found = total + n, True
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        hier, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if hier == "0" and controllers == "":  # cgroup v2
            base, name, key = cgroup_fs, "memory.events", "oom_kill"
        elif "memory" in controllers.split(","):  # cgroup v1
            base, name, key = cgroup_fs / "memory", "memory.oom_control", "oom_kill"
        else:
            continue
        parts = [p for p in rel.strip("/").split("/") if p]
        for i in range(len(parts), -1, -1):
            n = _counter(base.joinpath(*parts[:i]) / name, key)
            if n is not None:
                total, found = total + n, True
    return total if found else None


def signal_reason(sig: str, oom_before: int | None, oom_after: int | None) -> tuple[str, bool]:
    """(reason, oom) for a worker ended by signal `sig` (a name), with the OOM-kill counters
    read when it started and when it ended."""
    if sig == "SIGKILL" and oom_before is not None and oom_after is not None and oom_after > oom_before:
        return "killed by SIGKILL: the kernel's out-of-memory killer (oom_kill count rose while it ran)", True
    return f"killed by {sig}", False


# -- full disk -------------------------------------------------------------------------------
def disk_full_error(e: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError in `e`'s chain (or one whose text says so), else None."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno in DISK_FULL_ERRNOS:
            return x
    for x in _chain(e):
        if any(m in str(x).lower() for m in DISK_FULL_MARKERS):
            return x if isinstance(x, OSError) else OSError(errno.ENOSPC, str(x))
    return None


def is_disk_full_text(text: str) -> bool:
    low = text.lower()
    return any(m in low for m in DISK_FULL_MARKERS)


def _partial_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint folder the Trainer did not finish (no readable trainer_state.json
    and no state.json), or a leftover temp folder."""
    try:
        dirs = [p for p in Path(checkpoints).iterdir() if p.is_dir()]
    except OSError:
        return None
    def step(p: Path) -> int:
        m = re.search(r"(\d+)", p.name)
        return int(m.group(1)) if m else -1
    for p in sorted(dirs, key=step, reverse=True):
        if p.name.startswith("checkpoint-") and not ((p / "trainer_state.json").is_file() or (p / "state.json").is_file()):
            return p
        if p.name.startswith("checkpoint-"):
            return None  # the newest one is complete
    return None


def disk_full_reason(e: BaseException | None, checkpoints: Path, step: int | None = None) -> tuple[str, Path | None]:
    """('no space left on device while saving checkpoint-N', the partial checkpoint folder or None).
    The checkpoint comes from the failing path, else from the newest unfinished folder."""
    err = disk_full_error(e) if e is not None else None
    what = "no space left on device" if err is None or err.errno != errno.EDQUOT else "disk quota exceeded"
    paths = [str(getattr(err, "filename", "") or ""), str(getattr(err, "filename2", "") or "")] if err else []
    name = next((m.group(1) for p in paths for m in [_CKPT_RE.search(p)] if m), None)
    partial = _partial_checkpoint(checkpoints)
    if name is None and partial is not None:
        name = partial.name
    if name:
        where = f" while saving {name}"
    elif any(paths):
        where = f" while writing {Path(next(p for p in paths if p)).name}"
    else:
        where = f" at step {step}" if step is not None else ""
    if partial is not None and name and partial.name != name:
        partial = None
    return f"{what}{where}; free some space, then `voxtune runs resume` continues from the last checkpoint", partial


def drop_partial(partial: Path | None) -> bool:
    """Remove a half-written checkpoint (it cannot be resumed from, and it holds the space)."""
    if partial is None:
        return False
    shutil.rmtree(partial, ignore_errors=True)
    return not partial.exists()
