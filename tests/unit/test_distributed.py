"""The multi-process contract without processes: how many ranks, the launcher's command line,
and how the ranks' endings are folded into result.json."""

from __future__ import annotations

import sys

from engine import distributed
from engine.runfiles import RunFiles, atomic_write_json, read_json


def test_requested_procs_reads_the_daemon_contract():
    assert distributed.requested_procs({}) == 1
    assert distributed.requested_procs({"VOXTUNE_NPROC": "3"}) == 3
    assert distributed.requested_procs({"VOXTUNE_NPROC": "0"}) == 1
    assert distributed.requested_procs({"VOXTUNE_NPROC": "junk"}) == 1


def test_launch_command_is_torchrun_standalone(tmp_path):
    cmd = distributed.launch_command(tmp_path, 2)
    assert cmd[0] == sys.executable and cmd[cmd.index("torch.distributed.run") - 1] == "-m"
    assert cmd[1] == "-P" or sys.version_info < (3, 11)  # the working folder is not on sys.path (issue 13)
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd
    assert cmd[-3:] == ["-m", "engine.rank", str(tmp_path.resolve())]


def test_rank_results_are_folded_into_result_json(tmp_path, monkeypatch):
    files = RunFiles(tmp_path)
    (tmp_path / "ranks").mkdir()
    atomic_write_json(files.result, {"status": "finished", "reason": None, "step": 6, "final_loss": 1.5,
                                     "strategy": "ddp"})
    monkeypatch.setenv("RANK", "1")
    distributed.write_rank_result(files, {"status": "finished", "step": 6, "final_loss": 1.5, "oom": False})
    merged = distributed.merge_rank_results(files, 2, 0)
    assert [(r["rank"], r["status"], r["step"]) for r in merged["ranks"]] == [(0, "finished", 6), (1, "finished", 6)]
    assert merged["world_size"] == 2 and merged["strategy"] == "ddp" and merged["status"] == "finished"
    assert read_json(files.result) == merged


def test_a_lost_or_failed_rank_fails_the_run(tmp_path):
    files = RunFiles(tmp_path)
    atomic_write_json(files.result, {"status": "finished", "reason": None, "step": 6})
    merged = distributed.merge_rank_results(files, 2, 1)
    assert merged["status"] == "failed" and merged["reason"].startswith("rank 1 lost")
    assert merged["ranks"][1]["status"] == "lost"
    files.result.unlink()
    assert distributed.merge_rank_results(files, 2, 1) is None  # the worker writes its own failure then
