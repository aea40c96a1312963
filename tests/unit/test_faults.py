"""Telling how a run ended (issue 13, items 1 and 6): every out-of-memory form is `oom`, a SIGKILL
is only blamed on the OOM killer with evidence, a full disk names the checkpoint it was saving."""

from __future__ import annotations

import errno

import pytest

from engine import faults

CPU_ALLOC = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
             "allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)")


class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name, without importing torch
    pass


@pytest.mark.parametrize("exc", [
    OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("HIP out of memory. Tried to allocate 1.50 GiB"),
    RuntimeError(CPU_ALLOC),
    MemoryError(),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
])
def test_every_out_of_memory_form_is_oom(exc):
    assert faults.is_oom(exc)
    wrapped = RuntimeError("the recipe failed")
    wrapped.__cause__ = exc
    assert faults.is_oom(wrapped)  # also when a library wraps it


@pytest.mark.parametrize("exc", [ValueError("bad value"), OSError(errno.ENOSPC, "No space left on device"),
                                 RuntimeError("a view of a leaf Variable")])
def test_other_errors_are_not_oom(exc):
    assert not faults.is_oom(exc)


def test_training_driver_uses_the_same_rules():
    from engine.training import is_oom

    assert is_oom(RuntimeError(CPU_ALLOC)) and is_oom(OSError(errno.ENOMEM, "x")) and not is_oom(ValueError("x"))


def test_sigkill_is_blamed_on_the_oom_killer_only_with_evidence():
    assert faults.signal_reason("SIGKILL", 3, 3) == ("killed by SIGKILL", False)
    assert faults.signal_reason("SIGKILL", None, None) == ("killed by SIGKILL", False)
    reason, oom = faults.signal_reason("SIGKILL", 3, 4)
    assert oom and "out-of-memory killer" in reason
    assert faults.signal_reason("SIGTERM", 3, 4) == ("killed by SIGTERM", False)


def test_oom_kill_counters_are_read_from_vmstat_and_the_memory_cgroups(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "vmstat").write_text("pgfault 10\noom_kill 2\n")
    (proc / "self" / "cgroup").write_text("0::/user.slice/job\n")
    (cg / "user.slice" / "job").mkdir(parents=True)
    (cg / "user.slice" / "job" / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    (cg / "user.slice" / "memory.events").write_text("oom 0\noom_kill 5\n")
    assert faults.oom_kill_count(proc, cg) == 2 + 1 + 5
    (proc / "self" / "cgroup").write_text("4:memory:/box\n3:cpu:/\n")  # cgroup v1
    (cg / "memory" / "box").mkdir(parents=True)
    (cg / "memory" / "box" / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n")
    assert faults.oom_kill_count(proc, cg) == 2 + 7
    assert faults.oom_kill_count(tmp_path / "none", tmp_path / "none") is None
    assert isinstance(faults.oom_kill_count(), (int, type(None)))  # this machine's, whatever it has


def test_disk_full_reason_names_the_checkpoint_and_drops_the_partial_one(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "checkpoint-10").mkdir(parents=True)
    (ckpts / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (ckpts / "checkpoint-15").mkdir()
    (ckpts / "checkpoint-15" / "model.safetensors").write_bytes(b"x")
    e = OSError(errno.ENOSPC, "No space left on device", str(ckpts / "checkpoint-15" / "tokenizer.json"))
    reason, partial = faults.disk_full_reason(e, ckpts)
    assert reason.startswith("no space left on device while saving checkpoint-15") and partial == ckpts / "checkpoint-15"
    assert faults.drop_partial(partial) and (ckpts / "checkpoint-10").exists()
    # from the log only (the daemon), and a write that is not a checkpoint
    assert faults.disk_full_reason(None, ckpts)[0].startswith("no space left on device; free")
    e2 = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "samples.jsonl"))
    assert faults.disk_full_reason(e2, ckpts)[0].startswith("no space left on device while writing samples.jsonl")
    assert faults.disk_full_error(ValueError("x")) is None
