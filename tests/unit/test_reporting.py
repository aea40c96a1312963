"""`report_to`: parsed and checked once, at queue time (unknown names and missing packages are
one-line refusals naming the extra to install); the Reporter's text for sample predictions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import add_dataset  # noqa: E402

from engine.errors import VoxtuneError  # noqa: E402
from engine import queue, reporting  # noqa: E402
from engine.runfiles import RunFiles, read_json  # noqa: E402
from engine.store import Store  # noqa: E402
from tui.cli import main  # noqa: E402

BASE = {"model": "whisper-small", "dataset": "tiny", "method": "lora"}


@pytest.mark.parametrize("value, names", [
    (None, []), ("", []), ("none", []), ("tensorboard", ["tensorboard"]), (" TensorBoard , trackio ", ["tensorboard", "trackio"]),
    ("trackio,tensorboard,trackio", ["tensorboard", "trackio"]), (["trackio"], ["trackio"]), ([], []),
])
def test_parse(value, names):
    assert reporting.parse(value) == names


def test_parse_refuses_unknown_sinks():
    with pytest.raises(reporting.ReportingError, match="'wandb' is not one of tensorboard, trackio") as e:
        reporting.parse("tensorboard,wandb")
    assert e.value.field == "report_to"


@pytest.fixture
def qws(ws):
    add_dataset(ws)
    return ws


def test_queue_add_records_report_to_and_clone_keeps_it(qws):
    rid = queue.add(qws, **BASE, report_to="trackio, tensorboard")
    assert read_json(RunFiles(qws.run_dir(rid)).config)["report_to"] == ["tensorboard", "trackio"]
    clone = queue.clone(qws, rid, lr=2e-4)
    assert read_json(RunFiles(qws.run_dir(clone)).config)["report_to"] == ["tensorboard", "trackio"]
    off = queue.clone(qws, rid, report_to="none")
    assert read_json(RunFiles(qws.run_dir(off)).config)["report_to"] == []
    plain = queue.add(qws, **BASE)
    assert read_json(RunFiles(qws.run_dir(plain)).config)["report_to"] == []


def _hide(monkeypatch, package: str) -> None:
    """Make `package` look not installed to the check (it looks packages up with find_spec)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


@pytest.mark.parametrize("sink", ["tensorboard", "trackio"])
def test_a_missing_package_is_a_one_line_refusal_at_queue_add(qws, monkeypatch, capsys, sink):
    _hide(monkeypatch, sink)
    with pytest.raises(VoxtuneError) as e:
        queue.add(qws, **BASE, report_to=sink)
    assert e.value.field == "report_to" and f"pip install 'voxtune[{sink}]'" in str(e.value)
    assert Store(qws).list_runs() == []

    code = main(["--home", str(qws.home), "queue", "add", "--no-start", "--model", "whisper-small", "--dataset", "tiny",
                 "--method", "lora", "--report-to", sink])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"voxtune: report_to: {sink} is not installed; install it with "
                                        f"pip install 'voxtune[{sink}]' (or pip install {sink})"]
    assert Store(qws).list_runs() == []


def test_cli_flag_reaches_the_config(qws, capsys):
    assert main(["--home", str(qws.home), "queue", "add", "--no-start", "--json", "--model", "whisper-small",
                 "--dataset", "tiny", "--method", "lora", "--report-to", "tensorboard"]) == 0
    rid = __import__("json").loads(capsys.readouterr().out)["id"]
    assert read_json(RunFiles(qws.run_dir(rid)).config)["report_to"] == ["tensorboard"]


def test_samples_markdown_keeps_table_cells_intact():
    text = reporting.samples_markdown([{"sample_id": "c1", "reference": "a | b", "prediction": "line\nbreak"},
                                       {"sample_id": "c2", "reference": "", "prediction": None}])
    lines = text.splitlines()
    assert lines[0] == "| clip | reference | prediction |" and len(lines) == 4
    assert lines[2] == "| c1 | a \\| b | line break |"
    assert lines[3] == "| c2 |  | - |"


def test_a_reporter_without_sinks_does_nothing(tmp_path):
    rep = reporting.Reporter([], tmp_path, "r1").start({})
    assert rep.trainer_callbacks() == []
    rep.log_train({"step": 1, "loss": 1.0, "lr": 1e-3})
    rep.log_eval({"step": 1, "wer": 0.5}, [])
    rep.close()
    assert list(tmp_path.iterdir()) == []
