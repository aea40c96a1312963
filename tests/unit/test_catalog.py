"""Catalog lookups: names, aliases, hub ids, local checkpoint folders, close matches."""

from __future__ import annotations

import json
import struct

import pytest

from engine.catalog import (METHODS, MODEL_TYPES, UnknownModel, entry_from_folder, family_for_model_type,
                            get_model, load_catalog, safetensors_counts)

USER_LIST = ["Qwen/Qwen-Audio", "Qwen/Qwen2-Audio-7B-Instruct", "openai/whisper-large-v3", "openai/whisper-medium",
             "openai/whisper-small", "distil-whisper/distil-large-v3", "tsinghua-ee/SALMONN-7B",
             "facebook/seamless-m4t-v2-large", "facebook/w2v-bert-2.0", "mistralai/Voxtral-Mini-3B-2507",
             "mistralai/Voxtral-Small-24B-2507", "openai/whisper-large-v3-turbo", "Qwen/Qwen2.5-Omni-3B",
             "Qwen/Qwen2.5-Omni-7B", "ibm-granite/granite-speech-3.3-2b"]
RECIPES = {"whisper", "ctc", "qwen2_audio", "voxtral", "seamless", "omni", "granite", "qwen_audio", "salmonn",
           # the 2026 families (issue 14)
           "qwen3_asr", "glmasr", "audioflamingo3", "moonshine", "parakeet_ctc", "gemma3n", "parakeet_tdt", "canary"}


def test_every_candidate_is_in_the_catalog_with_its_fields():
    entries = load_catalog()
    assert {e.hub_id for e in entries} >= set(USER_LIST)
    assert len({e.name for e in entries}) == len(entries)
    for e in entries:
        assert e.family in ("seq2seq", "ctc", "audio-llm", "speech-to-text"), e.name
        assert e.recipe in RECIPES, e.name
        assert e.long_audio in ("segment", "multi_item", "native"), e.name
        assert e.window_s > 0 and e.audio_tokens_per_s > 0, e.name
        assert set(e.methods) <= set(METHODS), e.name
        assert e.lora_targets and e.languages and e.licence, e.name
        assert e.params and e.params["total"] > 0, f"{e.name}: no shipped parameter count"
        if not e.trainable:
            assert e.reason, f"{e.name}: untrainable models say why"


def test_untrainable_models_and_their_reasons():
    assert not get_model("salmonn-7b").trainable
    qa = get_model("Qwen/Qwen-Audio")
    assert not qa.trainable and "remote" in qa.reason
    assert get_model("qwen-audio").params["source"] == "published"


@pytest.mark.parametrize("ref,name", [
    ("whisper-small", "whisper-small"),
    ("OPENAI/Whisper-Large-V3", "whisper-large-v3"),
    ("Voxtral-Mini-3B-2507", "voxtral-mini-3b"),
    ("qwen-audio-7b", "qwen-audio"),
    ("  distil-whisper/distil-large-v3 ", "distil-large-v3"),
])
def test_lookup_by_name_hub_id_alias_case_insensitive(ref, name):
    assert get_model(ref).name == name


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModel) as exc:
        get_model("whisper-larg-v3")
    assert "whisper-large-v3" in exc.value.matches
    assert "whisper-large-v3" in str(exc.value)
    with pytest.raises(UnknownModel) as exc:
        get_model("zzzz-nothing")
    assert exc.value.matches == []


def test_family_for_model_type():
    assert family_for_model_type("whisper") == ("seq2seq", "whisper")
    assert family_for_model_type("voxtral") == ("audio-llm", "voxtral")
    with pytest.raises(KeyError, match="supported"):
        family_for_model_type("bert")
    assert len(MODEL_TYPES) >= 8


def _write_safetensors(path, tensors: dict[str, list[int]]) -> None:
    header = {name: {"dtype": "F16", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def test_local_whisper_folder_is_described_from_its_config(tmp_path):
    cfg = {"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"], "d_model": 64,
           "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
           "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "vocab_size": 100, "num_mel_bins": 80}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    _write_safetensors(tmp_path / "model.safetensors", {
        "model.encoder.layers.0.self_attn.q_proj.weight": [64, 64],
        "model.encoder.layers.0.self_attn.q_proj.bias": [64],
        "model.decoder.layers.0.self_attn.v_proj.weight": [64, 64],
        "model.decoder.embed_tokens.weight": [100, 64],
        "model.encoder.conv1.weight": [64, 80, 3],
    })
    e = get_model(str(tmp_path))
    assert (e.family, e.recipe, e.model_class) == ("seq2seq", "whisper", "WhisperForConditionalGeneration")
    assert e.arch["audio"]["hidden"] == 64 and e.arch["text"]["vocab"] == 100
    assert e.local_path == str(tmp_path.resolve())
    p = e.params
    assert p["total"] == 64 * 64 + 64 + 64 * 64 + 100 * 64 + 64 * 80 * 3
    assert p["audio_encoder"] == 64 * 64 + 64 + 64 * 80 * 3
    assert p["quantizable"] == 2 * 64 * 64  # embeddings and convolutions stay 16-bit
    assert p["lora_dims"]["q_proj"]["audio"] == 128 and p["lora_dims"]["v_proj"]["text"] == 128


def test_local_folder_errors_name_the_file(tmp_path):
    with pytest.raises(UnknownModel, match="no config.json"):
        entry_from_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnknownModel, match="config.json.*bert"):
        get_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(UnknownModel, match="not valid JSON"):
        get_model(str(tmp_path))
    assert safetensors_counts(tmp_path) is None


def test_local_copy_without_safetensors_borrows_the_catalog_count(tmp_path):
    cfg = {"model_type": "whisper", "d_model": 768, "encoder_layers": 12, "decoder_layers": 12,
           "encoder_attention_heads": 12, "decoder_attention_heads": 12, "encoder_ffn_dim": 3072,
           "decoder_ffn_dim": 3072, "vocab_size": 51865, "num_mel_bins": 80}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    e = get_model(str(tmp_path))
    assert e.params["total"] == get_model("whisper-small").params["total"]
    assert e.params["source"] == "same architecture as whisper-small"
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, d_model=640)))
    assert get_model(str(tmp_path)).params is None


def test_trainable_flags_agree_with_the_recipes():
    """A model marked trainable has a recipe that trains it; one the recipes refuse is not.
    (Ported from the RECIPES / UNSUPPORTED tables to the registry the recipe modules fill.)"""
    from engine.recipes.registry import family, families

    keys = {f.key for f in families()}
    for e in load_catalog():
        fam = family(e.recipe)  # every catalog recipe is declared by some recipe module
        assert e.family == fam.kind, f"{e.name}: catalog family {e.family!r}, recipe {fam.key} is {fam.kind!r}"
        if e.trainable:
            assert e.recipe in keys and fam.trainable, e.name
        else:
            assert e.reason, e.name
        for t in (e.model_type, *e.model_types):  # the catalog's model_types are the recipe's
            assert not t or t in fam.model_types, (e.name, t)


def test_registry_is_the_only_family_table():
    """Every family is declared once, by the module that builds it; a model_type maps to one
    recipe; an old config.json's recipe key (e.g. `granite`) still resolves."""
    import importlib

    from engine.recipes.registry import families, family, for_model_type

    seen: dict[str, str] = {}
    for f in families():
        module = importlib.import_module(f.module)
        assert callable(getattr(module, "make_recipe", None)), f.module
        for t in f.model_types:
            assert t not in seen, (t, seen.get(t), f.key)
            seen[t] = f.key
    assert for_model_type("qwen3_asr").key == "qwen3_asr" and for_model_type("parakeet_ctc").kind == "ctc"
    assert family("granite").key == "granite" and MODEL_TYPES["granite_speech"] == ("audio-llm", "granite")


def test_model_configs_exist_for_every_2026_model():
    """Each model beyond the seed's 15 ships its real transformers config (the param counts and
    the memory tracer read data/model_configs/<name>.json), with its model_type."""
    from engine.params import config_path

    new = [e for e in load_catalog() if e.hub_id not in USER_LIST]
    assert len(new) >= 10
    for e in new:
        cfg = json.loads(config_path(e.name).read_text())
        assert cfg["model_type"] == e.model_type and e.params["source"] == "computed", e.name


def test_filters_whole_audio_and_output_kind():
    from engine.catalog import matches

    assert not get_model("whisper-small").takes_whole(300) and get_model("voxtral-mini-3b").takes_whole(300)
    assert get_model("qwen2-audio-7b-instruct").takes_whole(300)  # several 30 s items in one prompt
    assert matches(get_model("parakeet-ctc-0.6b"), output="delete")
    assert not matches(get_model("parakeet-ctc-0.6b"), output="rewrite")
    assert matches(get_model("qwen3-asr-0.6b"), takes_whole=300, output="rewrite")
    assert "monotonic" in get_model("parakeet-ctc-0.6b").notes and "monotonic" in get_model("w2v-bert-2.0").notes
