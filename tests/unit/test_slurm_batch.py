"""The Slurm executor's pure parts: the job script, reading squeue/scontrol, and how each way
a job can end becomes a run ending (no cluster needed; tests/functional/test_slurm.py has one)."""

from __future__ import annotations

import pytest

from engine import executors, slurm
from engine.runfiles import RunFiles, append_jsonl


def files_with(tmp_path, log: str = "", step: int | None = None) -> RunFiles:
    files = RunFiles(tmp_path)
    files.log.write_text(log)
    if step is not None:
        append_jsonl(files.metrics, {"kind": "train", "step": step, "max_steps": 10, "loss": 1.0, "time": 1.0})
    return files


def test_job_script_asks_for_the_runs_gpus_memory_and_time(tmp_path):
    files = RunFiles(tmp_path)
    run = {"id": "r1", "gpus": 2}
    config = {"gpus": 2, "model": "whisper-small", "method": "full", "batch_size": 4}
    script = slurm.job_script(run, config, files, {"kind": "slurm", "partition": "gpu", "time": "2:00:00",
                                                   "extra": ["--constraint=a100"]}, python="/venv/bin/python")
    assert "#SBATCH --gres=gpu:2" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --time=2:00:00" in script and "#SBATCH --requeue" in script
    assert f"#SBATCH --output={files.log}" in script and "#SBATCH --open-mode=append" in script
    assert "#SBATCH --constraint=a100" in script and "#SBATCH --cpus-per-task=8" in script
    assert "export VOXTUNE_NPROC=2" in script
    assert script.rstrip().endswith(f" engine.worker {tmp_path}") and "exec /venv/bin/python -c " in script
    assert "export PYTHONSAFEPATH=1" in script  # not `-m`: the job's folder stays off sys.path (issue 13)
    mem = int(next(line for line in script.splitlines() if "--mem=" in line).split("=")[1].rstrip("M"))
    assert mem >= 2 * 6000  # two processes, each at least the 6 GB base
    every = slurm.job_script({"id": "r2"}, {"gpus": "all"}, files, {"kind": "slurm", "gres": "", "mem_gb": 0.5})
    assert "--exclusive" in every and "--gres" not in every and "VOXTUNE_NPROC=auto" in every
    assert "#SBATCH --mem=500M" in every


def test_settings_are_validated_naming_the_setting(ws):
    with pytest.raises(executors.ExecutorError) as e:
        executors.configure(ws, "slurm", time="soon")
    assert e.value.field == "time"
    with pytest.raises(executors.ExecutorError) as e:
        executors.configure(ws, "slurm", mem_gb=-1)
    assert e.value.field == "mem_gb"
    assert executors.settings(ws) == {"kind": "local"}  # nothing was kept
    conf = executors.configure(ws, "slurm", partition="gpu")
    assert executors.configure(ws, "slurm", time="1:00:00") == dict(conf, time="1:00:00")  # earlier options kept
    assert executors.configure(ws, "local") == {"kind": "local"}


def test_parsing_squeue_and_scontrol():
    assert slurm.parse_squeue("12|RUNNING|None|node3\n13|PENDING|Resources|\n") == {
        "12": {"state": "RUNNING", "reason": "", "nodes": "node3"},
        "13": {"state": "PENDING", "reason": "Resources", "nodes": ""}}
    f = slurm.parse_scontrol("JobId=12 JobName=voxtune-r1 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15 "
                             "TimeLimit=00:10:00 NodeList=node3")
    assert f["JobState"] == "TIMEOUT" and f["ExitCode"] == "0:15" and f["NodeList"] == "node3"
    assert slurm.returncode_of("0:9") == -9 and slurm.returncode_of("3:0") == 3 and slurm.returncode_of(None) is None


@pytest.mark.parametrize("state, status, words", [
    ("TIMEOUT", "failed", ["time limit (00:10:00) reached at step 7", "runs resume r1"]),
    ("NODE_FAIL", "interrupted", ["node node3 failed at step 7", "runs resume r1"]),
    ("PREEMPTED", "interrupted", ["preempted by Slurm at step 7"]),
    ("CANCELLED by 0", "cancelled", ["cancelled outside voxtune"]),
    ("DEADLINE", "failed", ["as DEADLINE"]),
])
def test_slurm_endings_become_run_reasons(tmp_path, state, status, words):
    job = {"state": state, "exit_code": "0:15", "nodes": "node3", "time_limit": "00:10:00"}
    ended = slurm.ended_from({"id": "r1", "slurm_job_id": "12"}, job, files_with(tmp_path, step=7))
    assert ended.status == status and ended.returncode == -15 and not ended.oom
    for w in words:
        assert w in ended.reason


def test_memory_kills_are_ooms_whether_or_not_slurm_says_so(tmp_path):
    ended = slurm.ended_from({"id": "r1", "slurm_job_id": "12"}, {"state": "OUT_OF_MEMORY", "exit_code": "0:125"},
                             files_with(tmp_path))
    assert ended.oom and ended.status == "failed" and "Slurm killed job 12" in ended.reason
    # a cgroup-free cluster: FAILED by SIGKILL, and slurmstepd's words in the job output
    log = ("slurmstepd-vm: error: StepId=12.batch exceeded memory limit (434683904 > 104857600), being killed\n"
           "slurmstepd-vm: error: Exceeded job memory limit\n")
    ended = slurm.ended_from({"id": "r1", "slurm_job_id": "12"}, {"state": "FAILED", "exit_code": "0:9"},
                             files_with(tmp_path, log))
    assert ended.oom and ended.returncode == -9 and "0.4 GB used, 0.1 GB allowed" in ended.detail
    assert "--slurm-mem" in ended.detail


def test_completed_and_failed_jobs_leave_the_ending_to_result_json(tmp_path):
    files = files_with(tmp_path)
    done = slurm.ended_from({"id": "r1", "slurm_job_id": "12"}, {"state": "COMPLETED", "exit_code": "0:0"}, files)
    assert done.status is None and done.returncode == 0
    bad = slurm.ended_from({"id": "r1", "slurm_job_id": "12"}, {"state": "FAILED", "exit_code": "1:0"}, files)
    assert bad.status is None and bad.returncode == 1
