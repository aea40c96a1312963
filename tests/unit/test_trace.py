"""engine.trace: the traced peak of real training steps on fake tensors (tiny Whisper built
from its config, no weights), its exact terms, the workspace cache and the light CLI path."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest

from engine import trace as tr
from engine.catalog import get_model
from engine.estimator import FitConfig, estimate

GIB = 2**30


def tiny_whisper() -> dict:
    e = copy.deepcopy(get_model("whisper-small").to_dict())
    e["name"] = "tiny-trace-whisper"  # no data/model_configs file: built from these numbers
    e["arch"]["audio"].update(hidden=64, layers=2, heads=2, ffn=128)
    e["arch"]["text"].update(hidden=64, layers=2, heads=2, ffn=128)
    return e


def _params(entry: dict) -> int:
    from engine.params import build_meta

    model, _ = build_meta(entry)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_full_fine_tune_terms_are_exact_byte_counts():
    e = tiny_whisper()
    n = _params(e)
    out = tr.trace(e, asdict(FitConfig(method="full", batch=2)))
    t, held = out["terms"], out["state_gb"]
    assert out["unit"] == "GiB"
    # fp32 weights, fp32 grads, two fp32 AdamW moments per parameter
    assert held["weights"] * GIB == pytest.approx(4 * n, rel=0.005)
    trainable = out["trainable_params"]  # all but Whisper's frozen sinusoidal encoder positions
    assert n - trainable == 1500 * 64
    assert held["gradients"] * GIB == pytest.approx(4 * trainable, rel=1e-4)
    assert held["optimizer"] * GIB == pytest.approx(8 * trainable, rel=1e-4)
    # the peak holds at least the weights and the state, and its split adds up
    assert out["total_gb"] >= held["weights"] + held["optimizer"]
    assert out["total_gb"] == pytest.approx(sum(t.values()), rel=0.01)
    assert out["phases_gb"]["backward"] > 0 and out["phases_gb"]["step"] > 0


def test_activations_grow_with_batch_and_without_checkpointing():
    e = tiny_whisper()
    one = tr.trace(e, asdict(FitConfig(method="lora", batch=1)))["phases_gb"]["backward"]
    four = tr.trace(e, asdict(FitConfig(method="lora", batch=4)))["phases_gb"]["backward"]
    nock = tr.trace(e, asdict(FitConfig(method="lora", batch=4, gradient_checkpointing=False)))["phases_gb"]["backward"]
    assert one < four < nock


def test_quantised_base_is_counted_at_its_size_and_said_so():
    e = tiny_whisper()
    lora = tr.trace(e, asdict(FitConfig(method="lora")))
    q = tr.trace(e, asdict(FitConfig(method="qlora")))
    assert any("NF4" in n for n in q["notes"]) and not lora["notes"]
    # Linear weights count ~0.52 B instead of 2 B; norms go fp32, the embeddings, the LM head and
    # the rest stay 16-bit (engine.loading.prepare_kbit, as training loads them)
    from engine.loading import is_norm
    from engine.params import build_meta
    import torch.nn as nn

    model, _ = build_meta(e)
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and m is not head)
    norms = sum(p.numel() for n, m in model.named_modules() if is_norm(n, m) for p in m.parameters(recurse=False))
    rest = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) - linear - norms
    assert norms and rest > 20 * norms  # the embeddings and head dominate what is not quantised
    adapters = q["trainable_params"]
    expect = linear * tr.NF4_BYTES_PER_PARAM + norms * 4 + rest * 2 + adapters * 4
    assert q["state_gb"]["weights"] * GIB == pytest.approx(expect, rel=0.01)
    # and the peak is of the quantised weights, not of their 16-bit stand-ins while built
    assert q["terms"]["weights"] == pytest.approx(q["state_gb"]["weights"], rel=0.01)
    assert lora["state_gb"]["weights"] * GIB == pytest.approx((linear + norms + rest) * 2 + adapters * 4, rel=0.01)


def test_cache_key_and_round_trip(tmp_path):
    e = tiny_whisper()
    a, b = asdict(FitConfig(method="lora", batch=1)), asdict(FitConfig(method="lora", batch=2))
    assert tr.cache_key(e, a) != tr.cache_key(e, b) and tr.cache_key(e, a) == tr.cache_key(e, dict(a))
    assert tr.cached(tmp_path, e, a) is None
    tr.store(tmp_path, e, a, {"total_gb": 1.5, "terms": {}})
    assert tr.cached(tmp_path, e, a)["total_gb"] == 1.5 and tr.cached(tmp_path, e, b) is None


def test_estimator_reads_a_cached_trace(tmp_path):
    """traced_gb: the cached peak plus the same overhead term the estimate adds."""
    from engine.estimator import overhead_gib, traced_gb

    entry = get_model("whisper-small")
    cfg = FitConfig(method="lora", batch=4)
    assert traced_gb(entry, cfg, tmp_path) is None
    tr.store(tmp_path, entry.to_dict(), asdict(cfg), {"total_gb": 2.0, "terms": {}})
    assert traced_gb(entry, cfg, tmp_path) == pytest.approx(2.0 + overhead_gib(2.0), abs=1e-3)
    assert estimate(entry, cfg).tensors_gb == pytest.approx(estimate(entry, cfg).total_gb - estimate(entry, cfg).overhead_gb)


def test_subprocess_reports_one_line_on_failure():
    e = tiny_whisper()
    e["recipe"] = "no-such-recipe"
    e["name"] = "no-such-model"
    with pytest.raises(tr.TraceFailed) as err:
        tr.trace_in_subprocess(e, asdict(FitConfig(method="lora")), timeout=120)
    assert "\n" not in str(err.value) and str(err.value)


def test_models_screen_and_new_run_form_show_a_cached_trace(tmp_path):
    from tui.screens.models import detail_text
    from tui.screens.new_run import Fit, estimate_text

    entry = get_model("whisper-small")
    cfg = FitConfig(method="lora", batch=4)
    assert "traced" not in detail_text(entry, cfg, 12.0, [], tmp_path).plain
    tr.store(tmp_path, entry.to_dict(), asdict(cfg), {"total_gb": 1.3, "terms": {}})
    text = detail_text(entry, cfg, 12.0, [], tmp_path).plain
    assert "traced" in text and "GiB" in text
    fit = Fit(total_gb=2.4, gpu="RX 7700 XT", gpu_gb=12.0, verdict="fits", max_batch=8, traced_gb=2.43)
    assert "traced 2.4 GiB" in estimate_text(fit).plain


# -- the other families: CTC, generic seq2seq (Moonshine), SeamlessM4T ----------------------------
def tiny_from_config(tmp_path, name: str, **changes) -> dict:
    """Catalog entry `name` built from its shipped config (data/model_configs), shrunk: keys
    of `changes` are top-level or `sub.key` for a sub-config. Built from a local folder."""
    import json

    from engine.params import config_path

    data = json.loads(config_path(name).read_text())
    for key, value in changes.items():
        sub, _, k = key.rpartition(".")
        (data[sub] if sub else data)[k] = value
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(data))
    e = copy.deepcopy(get_model(name).to_dict())
    e["name"] = f"tiny-trace-{name}"
    e["local_path"] = str(folder)
    return e


def tiny_legacy(name: str, audio: dict, text: dict | None = None) -> dict:
    """Catalog entry built from shrunk architecture numbers (engine.params' legacy builders)."""
    e = copy.deepcopy(get_model(name).to_dict())
    e["name"] = f"tiny-trace-{name}"
    e["arch"]["audio"].update(audio)
    if text:
        e["arch"]["text"].update(text)
    return e


def test_feature_shapes_are_the_extractors_own():
    """30 s of 16 kHz audio through each family's feature extractor, as the recipes call it."""
    assert tr.feature_shapes("parakeet_ctc", 30.0, 80)["input_features"][0] == (1, 3001, 80)
    assert tr.feature_shapes("wav2vec2-bert", 30.0)["input_features"][0] == (1, 1499, 160)  # 80 fbank bins, pairs
    assert tr.feature_shapes("moonshine", 30.0)["input_values"][0] == (1, 480000)  # raw samples
    assert tr.feature_shapes("seamless_m4t_v2", 10.0)["input_features"][0] == (1, 499, 160)
    assert {tr.recipe_kind(get_model(n).to_dict()) for n in ("parakeet-ctc-0.6b", "w2v-bert-2.0")} == {"ctc"}
    assert tr.recipe_kind(get_model("moonshine-tiny").to_dict()) == "seq2seq"
    assert tr.recipe_kind(get_model("seamless-m4t-v2-large").to_dict()) == "seamless"
    assert tr.recipe_kind(get_model("canary-1b-v2").to_dict()) is None


def test_ctc_head_is_trained_fully_under_lora_and_never_quantised(tmp_path):
    e = tiny_from_config(tmp_path, "parakeet-ctc-0.6b", **{
        "encoder_config.hidden_size": 64, "encoder_config.num_hidden_layers": 2, "encoder_config.num_attention_heads": 2,
        "encoder_config.num_key_value_heads": 2, "encoder_config.intermediate_size": 128,
        "encoder_config.subsampling_conv_channels": 16})
    lora = tr.trace(e, asdict(FitConfig(method="lora", batch=1, audio_seconds=10)))
    from engine.config import lora_defaults

    head = 64 * 1025 + 1025  # Conv1d(64 -> 1025, kernel 1) + bias: modules_to_save, trained in full
    adapters = lora_defaults("ctc")[0] * (64 + 64) * 2 * 2  # r x (in + out) on q, v of 2 layers
    assert lora["trainable_params"] == head + adapters
    q = tr.trace(e, asdict(FitConfig(method="qlora", batch=1, audio_seconds=10)))
    assert q["trainable_params"] == lora["trainable_params"]
    # the head's weights are 16-bit (not NF4): the quantised base saves only on the encoder's Linear layers
    assert q["state_gb"]["weights"] < lora["state_gb"]["weights"]
    four = tr.trace(e, asdict(FitConfig(method="lora", batch=4, audio_seconds=10)))
    assert four["phases_gb"]["backward"] > lora["phases_gb"]["backward"]


def test_w2v_bert_ctc_traces_from_architecture_numbers():
    e = tiny_legacy("w2v-bert-2.0", dict(hidden=64, layers=2, heads=2, ffn=128))
    out = tr.trace(e, asdict(FitConfig(method="full", batch=2, audio_seconds=5)))
    from engine.params import build_meta

    model, _ = build_meta(e)
    n = sum(p.numel() for p in model.parameters())
    # exact to the result's rounding (4 decimals of GiB)
    assert out["state_gb"]["weights"] == pytest.approx(4 * n / GIB, abs=6e-5)
    assert out["state_gb"]["optimizer"] == pytest.approx(8 * out["trainable_params"] / GIB, abs=6e-5)
    assert out["terms"]["activations"] > 0


def test_moonshine_full_fine_tune_terms_are_exact(tmp_path):
    e = tiny_from_config(tmp_path, "moonshine-base", hidden_size=64, intermediate_size=128,
                         encoder_num_hidden_layers=2, decoder_num_hidden_layers=2, encoder_num_attention_heads=2,
                         decoder_num_attention_heads=2, encoder_num_key_value_heads=2, decoder_num_key_value_heads=2)
    out = tr.trace(e, asdict(FitConfig(method="full", batch=2, audio_seconds=5)))
    n = _params(e)
    assert out["state_gb"]["weights"] == pytest.approx(4 * n / GIB, abs=6e-5)
    assert out["state_gb"]["gradients"] == pytest.approx(4 * out["trainable_params"] / GIB, abs=6e-5)
    assert out["seq"]["text_tokens"] > 0
    lora = tr.trace(e, asdict(FitConfig(method="lora", batch=2, audio_seconds=5)))
    assert lora["trainable_params"] < out["trainable_params"] / 10


def test_seamless_traces_from_architecture_numbers():
    e = tiny_legacy("seamless-m4t-v2-large", dict(hidden=64, layers=2, heads=2, ffn=128),
                    dict(hidden=64, layers=2, heads=2, ffn=128, vocab=1000))
    one = tr.trace(e, asdict(FitConfig(method="lora", batch=1, audio_seconds=5)))
    two = tr.trace(e, asdict(FitConfig(method="lora", batch=2, audio_seconds=5)))
    assert 0 < one["phases_gb"]["backward"] < two["phases_gb"]["backward"]
    assert one["trainable_params"] > 0


def test_a_family_without_a_synthetic_batch_says_so():
    with pytest.raises(NotImplementedError, match="no synthetic batch"):
        tr.synthetic_batch({"name": "x", "recipe": "canary", "family": "seq2seq"}, None, {"batch": 1},
                           {"text_tokens": 4, "encoder_chunks": 1}, None)


TINY_LLM = {"text_config.hidden_size": 64, "text_config.intermediate_size": 128, "text_config.num_hidden_layers": 2,
            "text_config.num_attention_heads": 2, "text_config.num_key_value_heads": 1, "text_config.vocab_size": 1000,
            "audio_config.hidden_size": 64, "audio_config.intermediate_size": 256, "audio_config.num_hidden_layers": 2,
            "audio_config.num_attention_heads": 2, "audio_config.num_key_value_heads": 2}


@pytest.mark.parametrize("name, per_chunk", [("glm-asr-nano-2512", 375), ("audio-flamingo-3", 750)])
def test_generic_audio_llms_hold_their_audio_tokens_in_the_llm_sequence(tmp_path, name, per_chunk):
    """GLM-ASR (4 tower frames grouped before the projector) and Audio Flamingo 3 (pooled
    tower): the LLM sequence holds the processor's audio placeholder count per 30 s window,
    and a 60 s clip (one example, two windows) costs more than a 30 s one."""
    from engine.estimator import PROMPT_TOKENS

    changes = dict(TINY_LLM, **({"text_config.head_dim": 32} if name.startswith("glm") else
                                {"text_config.layer_types": ["full_attention"] * 2}))
    e = tiny_from_config(tmp_path, name, **changes)
    one = tr.trace(e, asdict(FitConfig(method="lora", batch=1, audio_seconds=30)))
    assert one["seq"]["text_tokens"] == per_chunk + PROMPT_TOKENS + one["seq"]["target_tokens"]
    longer = tr.trace(e, asdict(FitConfig(method="lora", batch=1, audio_seconds=60)))
    assert longer["seq"]["encoder_chunks"] == 2
    assert longer["phases_gb"]["backward"] > one["phases_gb"]["backward"]
    full = tr.trace(e, asdict(FitConfig(method="full", batch=1, audio_seconds=30)))
    assert full["state_gb"]["weights"] == pytest.approx(4 * _params(e) / GIB, abs=6e-5)
