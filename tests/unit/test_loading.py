"""Where model files come from, and the message when they cannot come from anywhere."""

import json

import pytest

from engine import loading


def test_local_checkpoint_folder_resolves_to_its_absolute_path(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    src = loading.resolve(str(tmp_path / "ckpt"))
    assert src.ref == str((tmp_path / "ckpt").resolve()) and src.local and src.adapter is None


def test_adapter_folder_resolves_to_its_base_model(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    adapter = tmp_path / "export"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    src = loading.resolve(str(adapter))
    assert src.ref == str(base.resolve()) and src.adapter == str(adapter.resolve())


def test_folder_without_model_files_is_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(loading.ModelNotAvailable, match="neither config.json .* nor adapter_config.json"):
        loading.resolve(str(tmp_path / "empty"))
    with pytest.raises(loading.ModelNotAvailable, match="does not exist"):
        loading.resolve(str(tmp_path / "missing"))


def test_uncached_hub_id_offline_names_hf_hub_offline_and_the_local_folder_option(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))  # conftest seeds the catalog's models
    with pytest.raises(loading.ModelNotAvailable) as err:
        loading.resolve("openai/whisper-small")
    msg = str(err.value)
    assert "'openai/whisper-small' is not in the Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE" in msg and "local folder" in msg and "--model /path/to/folder" in msg


def test_hub_id_online_is_left_to_the_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert loading.resolve("openai/whisper-small").ref == "openai/whisper-small"


def test_from_pretrained_turns_download_errors_into_the_same_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def fails(ref, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    with pytest.raises(loading.ModelNotAvailable, match="HF_HUB_OFFLINE.*transformers said: We couldn't connect"):
        loading.from_pretrained(fails, "openai/whisper-small")
