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
