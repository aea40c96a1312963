"""The Slurm executor against a real one-node Slurm cluster on localhost (tests/slurm_cluster.py):
two tiny runs finish, a third is cancelled while it trains, and a run that exceeds its job
memory is killed by Slurm and recorded as an out-of-memory failure with a suggestion.
Skipped, with the reason, where slurmctld/slurmd/munge are not installed (.ci/run installs them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import slurm_cluster  # noqa: E402
from tests.engine_helpers import cleanup, current_step, wait_for, wait_status  # noqa: E402

from engine import daemon, executors, queue  # noqa: E402
from engine.runfiles import RunFiles, read_json  # noqa: E402
from engine.store import Store  # noqa: E402

MISSING = slurm_cluster.missing()
pytestmark = [pytest.mark.functional, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]
FINAL = ("finished", "failed", "cancelled", "interrupted")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_cluster.LocalCluster(tmp_path_factory.mktemp("slurm")) as c:
        print(f"\nslurm cluster up: node {c.node}, {c.cpus} CPUs, {c.mem_mb} MiB")
        yield c
    # torn down: no slurmctld/slurmd/munged and no job process is left


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from tests.tiny_models import make_tiny_whisper

    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


@pytest.fixture
def sws(ws, cluster, tiny_whisper, monkeypatch):
    from tests.tiny_models import make_tiny_dataset

    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))  # the daemon and its sbatch/squeue calls inherit it
    monkeypatch.delenv("VOXTUNE_WORKER_ENTRY", raising=False)
    make_tiny_dataset(ws, "tiny", n=4)
    yield ws
    cleanup(ws)


def tiny_run(ws, model, **kw) -> str:
    opts = dict(model=str(model), dataset="tiny", method="full", max_steps=4, save_every=2, eval_every=4,
                batch_size=2, grad_accum=1, lr=1e-3, warmup_steps=0, max_new_tokens=4, seed=0)
    return queue.add(ws, **{**opts, **kw})


def test_two_runs_finish_and_a_third_is_cancelled_while_it_runs(sws, cluster, tiny_whisper):
    from tui.widgets.run_table import build_rows

    executors.configure(sws, "slurm", gres="", mem_gb=3, cpus_per_task=1, time="15:00")
    first, second = tiny_run(sws, tiny_whisper), tiny_run(sws, tiny_whisper, lr=5e-4)
    daemon.start(sws)
    assert daemon.status(sws)["engine_executor"] == "slurm"
    for rid in (first, second):
        run = wait_status(sws, rid, FINAL, 420)
        print(f"{rid}: {run['status']} (slurm job {run.get('slurm_job_id')}) {run.get('status_reason') or ''}")
        assert run["status"] == "finished", run["status_reason"]
        assert run["slurm_job_id"] and run["pid"] is None and run["metrics"]["wer"] is not None
        files = RunFiles(sws.run_dir(rid))
        assert read_json(files.result)["step"] == 4 and (files.root / "slurm.sbatch").exists()
        log = files.log.read_text()
        assert f"slurm job {run['slurm_job_id']}" in log and "voxtune: step 4/4" in log  # the job's output is log.txt
        job = slurm_cluster.LocalCluster.run(cluster, "scontrol", "show", "job", run["slurm_job_id"]).stdout
        assert "JobState=COMPLETED" in job

    third = tiny_run(sws, tiny_whisper, max_steps=400, save_every=2, eval_every=400)
    wait_for(lambda: current_step(sws, third) >= 1, 300, what="the third run to train on the cluster")
    run = Store(sws).require_run(third)
    assert run["status"] == "running" and run["slurm_started"] and "running on" in run["status_reason"]
    rows = {r.key: r for r in build_rows(Store(sws).list_runs(), {})}
    assert f"slurm job {run['slurm_job_id']}" in rows[third].detail  # the TUI's run list shows the job id
    first_job = Store(sws).require_run(first)["slurm_job_id"]
    assert f"slurm job {first_job}" in " ".join(str(c) for c in rows[first].cells)  # also once it ended
    assert queue.cancel(sws, third) == "running"
    run = wait_status(sws, third, FINAL, 180)
    print(f"{third}: {run['status']} (slurm job {run['slurm_job_id']}) {run['status_reason']}")
    assert run["status"] == "cancelled", run["status_reason"]
    assert current_step(sws, third) < 400
    assert not cluster.run("squeue", "-h").stdout.strip()  # nothing left on the cluster


def test_a_job_killed_for_exceeding_its_memory_is_an_oom_failure_with_a_suggestion(sws, tiny_whisper):
    # 250 MB of host memory: the worker passes it while importing torch, and slurmstepd kills it
    executors.configure(sws, "slurm", gres="", mem_gb=0.25, cpus_per_task=1, time="10:00")
    rid = tiny_run(sws, tiny_whisper, batch_size=4)
    daemon.start(sws)
    run = wait_status(sws, rid, FINAL, 300)
    print(f"{rid}: {run['status']} (slurm job {run['slurm_job_id']}) {run['status_reason']}")
    assert run["status"] == "failed" and run["oom"] is True
    reason = run["status_reason"]
    assert reason.startswith("out of memory") and f"slurm job {run['slurm_job_id']}".lower() in reason.lower()
    assert f"voxtune runs clone {rid} --batch 2 --grad-accum 2" in reason  # the same advice as a local OOM
    assert "exceeded its memory limit" in reason and "--slurm-mem" in reason
    result = read_json(RunFiles(sws.run_dir(rid)).result)
    assert result["oom"] is True and result["signal"] == "SIGKILL"


def test_a_requeued_job_resumes_from_its_last_checkpoint(sws, cluster, tiny_whisper):
    """Preemption with requeue, as Slurm does it: the job is stopped and started again under the
    same id; the worker sees SLURM_RESTART_COUNT and takes the resume path."""
    executors.configure(sws, "slurm", gres="", mem_gb=3, cpus_per_task=1, time="15:00")
    rid = tiny_run(sws, tiny_whisper, max_steps=40, save_every=3, eval_every=40, batch_size=1)
    daemon.start(sws)
    files = RunFiles(sws.run_dir(rid))
    wait_for(lambda: any(files.checkpoints.glob("checkpoint-3")) and current_step(sws, rid) >= 5, 300,
             what="a checkpoint on the cluster")
    job = Store(sws).require_run(rid)["slurm_job_id"]
    assert cluster.run("scontrol", "requeue", job).returncode == 0
    run = wait_status(sws, rid, FINAL, 400)
    print(f"{rid}: {run['status']} (slurm job {job}) {run.get('status_reason') or ''}")
    assert run["status"] == "finished", run["status_reason"]
    assert run["slurm_job_id"] == job and read_json(files.result)["step"] == 40
    log = files.log.read_text()
    assert "Slurm restart 1: resuming from the last checkpoint" in log and "resuming from" in log
    steps = [m["step"] for m in files.iter_metrics("train")]
    back = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[back] > 1  # continued after a checkpoint, not from step 0
