"""An exported LoRA adapter folder is accepted as a model (for --eval-only baselines)."""

import json

import pytest

from engine.catalog import UnknownModel, get_model


def test_adapter_folder_is_described_as_its_base(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "openai/whisper-small"}))
    entry = get_model(str(folder))
    assert entry.recipe == "whisper" and entry.family == "seq2seq"
    assert entry.local_path == str(folder.resolve()) and entry.name == str(folder.resolve())
    assert entry.params == get_model("whisper-small").params


def test_adapter_without_base_names_the_file(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(UnknownModel, match="adapter_config.json: no base_model_name_or_path"):
        get_model(str(folder))
