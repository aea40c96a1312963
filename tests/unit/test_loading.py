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


@pytest.mark.parametrize("method", ["qlora", "lora8"])
def test_kbit_preparation_keeps_frozen_embeddings_and_head_16_bit(tmp_path, method):
    """QLoRA / 8-bit LoRA through the loading path (tiny Whisper, bitsandbytes on CPU): PEFT's
    prepare_model_for_kbit_training upcasts every 16-bit parameter to fp32; the embeddings and
    the LM head must stay in the bf16 compute dtype (a 7B audio LLM's embeddings + head in fp32
    cost +4.3 GiB), only norms go fp32, the quantised Linear weights are untouched, the LoRA
    adapters are fp32 and trainable, and checkpointing + input grads are on."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny_models import make_tiny_whisper

    from engine.recipes import get_recipe

    folder = make_tiny_whisper(tmp_path / "tiny")
    loaded = loading.load_model(get_recipe("whisper"), str(folder), method=method, precision="bf16",
                                lora={"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
                                gradient_checkpointing=True)
    model = loaded.model
    base = model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    assert base.get_output_embeddings().weight.dtype == torch.bfloat16
    assert base.model.encoder.conv1.weight.dtype == torch.bfloat16
    assert base.model.encoder.layer_norm.weight.dtype == torch.float32
    assert base.model.decoder.layers[0].self_attn_layer_norm.weight.dtype == torch.float32
    quant = base.model.decoder.layers[0].fc1.weight
    assert quant.dtype in (torch.uint8, torch.int8), quant.dtype
    adapters = [p for n, p in model.named_parameters() if "lora_" in n]
    assert adapters and all(p.requires_grad and p.dtype == torch.float32 for p in adapters)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert base.is_gradient_checkpointing
    # a training step runs under autocast as the Trainer's does
    feats = torch.randn(1, 80, 3000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_features=feats, labels=torch.tensor([[50257, 10, 11, 50256]])).loss
    loss.backward()
    assert all(p.grad is not None for p in adapters)


def test_ctc_layerdrop_is_off_in_nested_encoder_configs_too():
    """Parakeet keeps LayerDrop (0.1 by default) in `encoder_config`, not at the top: a check
    of the top-level config alone left real Parakeet runs dropping layers at random."""
    from transformers import ParakeetCTCConfig, Wav2Vec2Config

    from engine.recipes.ctc import _no_layerdrop

    parakeet = ParakeetCTCConfig()
    assert parakeet.encoder_config.layerdrop > 0  # the default this guards against
    _no_layerdrop(parakeet)
    assert parakeet.encoder_config.layerdrop == 0.0
    flat = Wav2Vec2Config(layerdrop=0.1)
    _no_layerdrop(flat)
    assert flat.layerdrop == 0.0
