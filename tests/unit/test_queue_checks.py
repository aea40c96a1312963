"""What used to fail only when a run started is refused at `queue add`, naming the option
(issue 13, item 8): a --language the model's family does not know, and a hub model that is
not cached while offline. (NaN/Inf --lr/--epochs at parse: tests/functional/test_cli_errors.py.)"""

from __future__ import annotations

import pytest

from engine import languages, queue
from engine.config import ConfigError
from tests.engine_helpers import add_dataset
from tui.cli import main


def add(ws, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(ws.home), "queue", "add", "--dataset", "tiny", "--method", "lora", "--no-start", *extra])
    return rc, capsys.readouterr().err


def no_runs(ws) -> bool:
    return not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())


def test_unknown_language_is_refused_at_queue_add_naming_the_option(ws, capsys):
    add_dataset(ws, "tiny")
    rc, err = add(ws, capsys, "--model", "whisper-small", "--language", "klingon")
    assert rc == 2 and err.startswith("voxtune: language: 'klingon' is not a language Whisper"), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert no_runs(ws)
    for ok in ("de", "German", "mandarin", "<|fr|>"):
        queue.add(ws, model="whisper-small", dataset="tiny", method="lora", language=ok)


def test_english_only_checkpoint_refuses_another_language(ws, capsys):
    add_dataset(ws, "tiny")
    rc, err = add(ws, capsys, "--model", "distil-large-v3", "--language", "de")
    assert rc == 2 and err.startswith("voxtune: language: distil-large-v3 is an English-only Whisper checkpoint"), err
    queue.add(ws, model="distil-large-v3", dataset="tiny", method="lora", language="english")


def test_families_without_a_language_list_are_not_checked():
    languages.check_language("klingon", recipe="voxtral", model="voxtral-mini-3b", model_ref=None)
    with pytest.raises(ConfigError) as err:
        languages.check_language("xx", recipe="whisper", model="whisper-small", model_ref=None)
    assert err.value.field == "language"


def test_uncached_hub_model_offline_is_refused_at_queue_add(ws, capsys, monkeypatch, tmp_path):
    add_dataset(ws, "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))  # conftest's cache holds the catalog
    rc, err = add(ws, capsys, "--model", "whisper-small")
    assert rc == 2, err
    assert err.startswith("voxtune: model: model 'openai/whisper-small' is not in the Hugging Face cache"), err
    assert "HF_HUB_OFFLINE" in err and "--model /path/to/folder" in err and "Traceback" not in err
    assert no_runs(ws)
