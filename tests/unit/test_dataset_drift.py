"""Data changed under a queued or interrupted run (issue 13, item 5): re-importing a name from
another folder needs --replace, and a run queued on the old manifest does not start or resume on
the new one -- it is refused with both hashes until it is re-queued."""

from __future__ import annotations

import pytest

from data_helpers import make_folder_dataset
from engine import daemon, datasets, queue
from engine.config import RunConfig
from engine.runfiles import RunFiles
from engine.store import Store
from tui.cli import main


@pytest.fixture
def two_sources(tmp_path):
    a = make_folder_dataset(tmp_path / "a", n=10, seconds=1.0)
    b = make_folder_dataset(tmp_path / "b", n=6, seconds=1.0)
    return a, b


def _queue(ws) -> str:
    return queue.add(ws, model="whisper-small", dataset="talks", method="lora", max_steps=5)


def test_reimport_from_another_folder_needs_replace(ws, two_sources, capsys):
    a, b = two_sources
    datasets.import_dataset(ws, a, "talks")
    before = Store(ws).get_dataset("talks")
    assert main(["--home", str(ws.home), "data", "import", str(b), "--name", "talks"]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 2 and str(a) in lines[0] and "--replace" in lines[1], err
    assert Store(ws).get_dataset("talks") == before  # nothing replaced
    datasets.import_dataset(ws, a, "talks")  # the same folder again: an update, no flag needed
    assert main(["--home", str(ws.home), "data", "import", str(b), "--name", "talks", "--replace"]) == 0
    assert Store(ws).get_dataset("talks")["clips_usable"] == 6


def test_a_queued_run_does_not_start_on_replaced_data(ws, two_sources):
    a, b = two_sources
    datasets.import_dataset(ws, a, "talks")
    rid = _queue(ws)
    old = RunConfig.load(RunFiles(ws.run_dir(rid)).config).dataset_manifest_hash
    datasets.import_dataset(ws, b, "talks", replace=True)
    new = Store(ws).get_dataset("talks")["manifest_hash"]
    d = daemon.Daemon(ws)
    d.spawn(Store(ws).get_run(rid), "cpu")
    run = Store(ws).get_run(rid)
    assert rid not in d.children and run["status"] == "failed"
    assert old[:12] in run["status_reason"] and new[:12] in run["status_reason"]
    assert f"voxtune runs retry {rid}" in run["status_reason"]
    again = queue.retry(ws, rid)  # re-queued: the current data, its hash recorded
    assert RunConfig.load(RunFiles(ws.run_dir(again)).config).dataset_manifest_hash == new


def test_an_interrupted_run_does_not_resume_on_changed_data(ws, two_sources, capsys):
    a, b = two_sources
    datasets.import_dataset(ws, a, "talks")
    rid = _queue(ws)
    Store(ws).set_status(rid, "interrupted", "interrupted at step 3")
    old = Store(ws).get_dataset("talks")["manifest_hash"]
    datasets.import_dataset(ws, b, "talks", replace=True)
    new = Store(ws).get_dataset("talks")["manifest_hash"]
    assert main(["--home", str(ws.home), "runs", "resume", rid]) == 2
    err = capsys.readouterr().err
    assert old[:12] in err and new[:12] in err and "runs retry" in err and len(err.strip().splitlines()) == 2
    assert Store(ws).get_run(rid)["status"] == "interrupted"
    datasets.import_dataset(ws, a, "talks", replace=True)  # the same data back: resume is fine
    assert queue.resume(ws, rid) is False
