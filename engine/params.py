"""Parameter counts computed, not typed: catalog architecture numbers -> transformers config
-> model instantiated on the meta device (no weights, no download, milliseconds).

Heavy module (torch/transformers imported inside functions). Light callers read the shipped
cache data/param_counts.json through `load_counts()`, or run `python -m engine.params`
in a subprocess to recompute.

A count record:
  {"total", "audio_encoder", "decoder", "other",     # split of the trainable class
   "quantizable",      # params in nn.Linear layers bitsandbytes would convert (not lm_head)
   "lora_dims": {suffix: {"audio": sum(in+out), "text": ..., "other": ...}},
   "source": "computed" | "published", "scope_total" (when the published figure covers a
   bigger class, e.g. the whole SeamlessM4Tv2Model), "transformers"}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.runfiles import atomic_write_json

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "param_counts.json"
# One real transformers config per catalog model (`config_class.to_dict()` JSON with
# "model_type"): what parameter counts are computed from, and what the memory tracer traces.
MODEL_CONFIGS = SHIPPED.parent / "model_configs"


def config_path(name: str) -> Path:
    """data/model_configs/<catalog name>.json"""
    return MODEL_CONFIGS / f"{name}.json"


def load_config(name: str):
    """The catalog model's transformers config (None: no file). Sub-configs given as dicts
    are built by the config class itself."""
    path = config_path(name)
    if not path.is_file():
        return None
    from transformers import CONFIG_MAPPING

    data = json.loads(path.read_text(encoding="utf-8"))
    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise NotBuildable(f"{name}: {path.name} has model_type {model_type!r}, unknown to the installed transformers")
    return CONFIG_MAPPING[model_type].from_dict(data)


def part_of(name: str) -> str:
    """audio | text | other for a parameter or module name."""
    bare = name[len("model."):] if name.startswith("model.") else name
    for n in (name, bare):
        if n.startswith(("model.encoder.", "encoder.", "speech_encoder", "wav2vec2_bert")) or "audio_tower" in n:
            return "audio"
        if n.startswith(("model.decoder.", "decoder.", "text_decoder", "lm_head", "proj_out", "shared",
                         "layers.", "embed_tokens", "norm.")) or "language_model" in n:
            return "text"
    return "other"


# -- configs from catalog numbers ---------------------------------------------------------
def _whisper(T, a: dict):
    au, tx = a["audio"], a["text"]
    cfg = T.WhisperConfig(
        d_model=au["hidden"], encoder_layers=au["layers"], encoder_attention_heads=au["heads"],
        encoder_ffn_dim=au["ffn"], num_mel_bins=au["mel_bins"], decoder_layers=tx["layers"],
        decoder_attention_heads=tx["heads"], decoder_ffn_dim=tx["ffn"], vocab_size=tx["vocab"],
    )
    return T.WhisperForConditionalGeneration, cfg, None


def _audio_cfg(au: dict) -> dict:
    return dict(d_model=au["hidden"], encoder_layers=au["layers"], encoder_attention_heads=au["heads"],
                encoder_ffn_dim=au["ffn"], num_mel_bins=au.get("mel_bins", 128))


def _llm_cfg(tx: dict, model_type: str) -> dict:
    out = dict(model_type=model_type, hidden_size=tx["hidden"], num_hidden_layers=tx["layers"],
               num_attention_heads=tx["heads"], num_key_value_heads=tx.get("kv_heads", tx["heads"]),
               intermediate_size=tx["ffn"], vocab_size=tx["vocab"],
               tie_word_embeddings=tx.get("tie_embeddings", False))
    if "head_dim" in tx:
        out["head_dim"] = tx["head_dim"]
    return out


def _qwen2_audio(T, a: dict):
    audio = dict(_audio_cfg(a["audio"]), model_type="qwen2_audio_encoder")
    cfg = T.Qwen2AudioConfig(audio_config=audio, text_config=_llm_cfg(a["text"], "qwen2"))
    cfg.tie_word_embeddings = a["text"].get("tie_embeddings", False)
    return T.Qwen2AudioForConditionalGeneration, cfg, None


def _voxtral(T, a: dict):
    # VoxtralEncoderConfig names its fields like BERT, not Whisper.
    audio = dict(model_type="voxtral_encoder", hidden_size=a["audio"]["hidden"],
                 num_hidden_layers=a["audio"]["layers"], num_attention_heads=a["audio"]["heads"],
                 intermediate_size=a["audio"]["ffn"], num_mel_bins=a["audio"].get("mel_bins", 128))
    cfg = T.VoxtralConfig(audio_config=audio, text_config=_llm_cfg(a["text"], "llama"))
    return T.VoxtralForConditionalGeneration, cfg, None


def _seamless(T, a: dict):
    au, tx = a["audio"], a["text"]
    cfg = T.SeamlessM4Tv2Config(
        hidden_size=au["hidden"], speech_encoder_layers=au["layers"], speech_encoder_attention_heads=au["heads"],
        speech_encoder_intermediate_size=au["ffn"], decoder_layers=tx["layers"], decoder_attention_heads=tx["heads"],
        decoder_ffn_dim=tx["ffn"], encoder_ffn_dim=tx["ffn"], vocab_size=tx["vocab"],
    )
    return T.SeamlessM4Tv2ForSpeechToText, cfg, T.SeamlessM4Tv2Model


def _ctc(T, a: dict):
    au = a["audio"]
    cfg = T.Wav2Vec2BertConfig(hidden_size=au["hidden"], num_hidden_layers=au["layers"],
                               num_attention_heads=au["heads"], intermediate_size=au["ffn"],
                               vocab_size=a["text"]["vocab"])
    return T.Wav2Vec2BertForCTC, cfg, None


def _omni(T, a: dict):
    au, tx, vi = a["audio"], a["text"], a["vision"]
    audio = dict(_audio_cfg(au), output_dim=tx["hidden"])
    vision = dict(depth=vi["depth"], hidden_size=vi["hidden"], intermediate_size=vi["ffn"], num_heads=vi["heads"],
                  out_hidden_size=tx["hidden"])
    text = _llm_cfg(tx, "qwen2_5_omni_text")
    cfg = T.Qwen2_5OmniThinkerConfig(audio_config=audio, vision_config=vision, text_config=text)
    cfg.tie_word_embeddings = tx.get("tie_embeddings", False)
    return T.Qwen2_5OmniThinkerForConditionalGeneration, cfg, None


def _granite(T, a: dict):
    au, pr, tx = a["audio"], a["projector"], a["text"]
    enc = dict(num_layers=au["layers"], hidden_dim=au["hidden"], num_heads=au["heads"],
               feedforward_mult=au["ffn"] // au["hidden"])
    proj = dict(model_type="blip_2_qformer", hidden_size=pr["hidden"], num_hidden_layers=pr["layers"],
                num_attention_heads=pr["heads"], intermediate_size=pr["ffn"], encoder_hidden_size=au["hidden"],
                cross_attention_frequency=1)
    cfg = T.GraniteSpeechConfig(encoder_config=enc, projector_config=proj, text_config=_llm_cfg(tx, "granite"))
    cfg.tie_word_embeddings = tx.get("tie_embeddings", True)
    return T.GraniteSpeechForConditionalGeneration, cfg, None


# The seed catalog's models, built from their `arch` numbers. Used only for an entry without
# data/model_configs/<name>.json; the issue-10 tracer adds those files for these 15 models, after
# which this table goes (a new model needs only its config file, never an entry here).
_LEGACY_BUILDERS = {"whisper": _whisper, "qwen2_audio": _qwen2_audio, "voxtral": _voxtral, "seamless": _seamless,
                    "ctc": _ctc, "omni": _omni, "granite": _granite}


class NotBuildable(Exception):
    """transformers has no class for this model (or the installed version lacks it)."""


def build_meta(entry: dict) -> tuple[Any, Any]:
    """(model on the meta device, bigger 'scope' model or None) for a catalog entry."""
    import torch
    import transformers as T

    if entry.get("local_path"):  # a checkpoint folder: its own config.json, exactly
        try:
            cfg = T.AutoConfig.from_pretrained(entry["local_path"])
            cls = getattr(T, entry["model_class"])
            with torch.device("meta"):
                return cls(cfg), None
        except Exception as e:  # noqa: BLE001 - any failure means "cannot count this way"
            raise NotBuildable(f"{entry['name']}: {type(e).__name__}: {e}") from e
    if config_path(entry["name"]).is_file():
        try:
            cfg = load_config(entry["name"])
            cls = getattr(T, entry["model_class"])
        except AttributeError as e:  # class missing from this transformers version
            raise NotBuildable(f"{entry['name']}: installed transformers {T.__version__} lacks it ({e})") from e
        scope_name = (entry.get("published") or {}).get("scope")
        scope_cls = getattr(T, scope_name, None) if scope_name else None
        try:
            with torch.device("meta"):
                model = cls(cfg)
                scope = scope_cls(cfg) if scope_cls is not None and scope_cls is not cls else None
        except ImportError as e:  # e.g. Gemma 3n's vision tower needs timm (the gemma3n extra)
            raise NotBuildable(f"{entry['name']}: {e}") from e
        return model, scope
    builder = _LEGACY_BUILDERS.get(entry.get("recipe"))
    if builder is None:
        raise NotBuildable(f"{entry['name']}: transformers cannot build recipe {entry.get('recipe')!r}")
    try:
        cls, cfg, scope_cls = builder(T, entry["arch"])
    except AttributeError as e:  # class missing from this transformers version
        raise NotBuildable(f"{entry['name']}: installed transformers {T.__version__} lacks it ({e})") from e
    with torch.device("meta"):
        model = cls(cfg)
        scope = scope_cls(cfg) if scope_cls is not None else None
    return model, scope


def count_model(model) -> dict:
    """Totals and split of an instantiated (meta) model; tied weights counted once."""
    import torch.nn as nn

    parts = {"audio": 0, "text": 0, "other": 0}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        parts[part_of(name)] += p.numel()
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    quantizable = 0
    lora: dict[str, dict[str, int]] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or mod is out_emb:
            continue
        quantizable += mod.weight.numel()
        suffix = name.rsplit(".", 1)[-1]
        slot = lora.setdefault(suffix, {"audio": 0, "text": 0, "other": 0})
        slot[part_of(name)] += mod.in_features + mod.out_features
    return {
        "total": sum(parts.values()),
        "audio_encoder": parts["audio"],
        "decoder": parts["text"],
        "other": parts["other"],
        "quantizable": quantizable,
        "lora_dims": dict(sorted(lora.items())),
        "source": "computed",
    }


def compute(entry: dict) -> dict:
    """Count record for one catalog entry: computed on meta, or its published figures."""
    import transformers

    try:
        model, scope = build_meta(entry)
    except NotBuildable as e:
        pub = entry.get("published") or {}
        if not pub.get("total"):
            raise
        return published_record(entry, note=str(e))
    rec = count_model(model)
    if scope is not None:
        rec["scope_total"] = sum(p.numel() for p in {id(p): p for p in scope.parameters()}.values())
    rec["transformers"] = transformers.__version__
    return rec


def published_record(entry: dict, note: str | None = None) -> dict:
    """For models transformers cannot build: published totals, marked as such."""
    pub = entry["published"]
    total = int(pub["total"])
    audio = int(pub.get("audio_encoder", 0))
    dec = int(pub.get("decoder", total - audio))
    other = int(pub.get("other", total - audio - dec))
    return {"total": total, "audio_encoder": audio, "decoder": dec, "other": other,
            "quantizable": None, "lora_dims": None, "source": "published",
            "note": note or entry.get("reason")}


def compute_all(entries: list[dict]) -> dict:
    import transformers

    models = {}
    for e in entries:
        models[e["name"]] = compute(e)
    return {"transformers": transformers.__version__, "models": models}


def load_counts(path: Path | None = None) -> dict[str, dict]:
    """The shipped cache (light: no torch). Missing file -> empty dict."""
    p = Path(path) if path else SHIPPED
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("models", {})
    except FileNotFoundError:
        return {}


def compute_in_subprocess(entry: dict, timeout: float = 300) -> dict | None:
    """For light callers (CLI, TUI): count one entry (e.g. a local folder without safetensors)
    in a child process, so this process never imports torch. None if it cannot be built."""
    import subprocess

    try:
        from engine.procs import python_module, safe_env

        cp = subprocess.run(python_module("engine.params", "--entry-json", "-"), input=json.dumps(entry),
                            capture_output=True, text=True, timeout=timeout, env=safe_env())
        return json.loads(cp.stdout) if cp.returncode == 0 else None
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.params",
                                 description="Recompute parameter counts on the meta device.")
    ap.add_argument("--write", metavar="PATH", help="write the cache here (data/param_counts.json to refresh the shipped one)")
    ap.add_argument("--model", action="append", help="only these catalog names")
    ap.add_argument("--entry-json", metavar="FILE", help="count one catalog-style entry read from FILE ('-': stdin)")
    args = ap.parse_args(argv)
    if args.entry_json:
        raw = sys.stdin.read() if args.entry_json == "-" else Path(args.entry_json).read_text(encoding="utf-8")
        try:
            rec = compute(json.loads(raw))
        except NotBuildable as e:
            print(str(e), file=sys.stderr)
            return 1
        json.dump(rec, sys.stdout)
        return 0
    from engine.catalog import load_catalog

    entries = [e.to_dict() for e in load_catalog()]
    if args.model:
        entries = [e for e in entries if e["name"] in args.model]
    counts = compute_all(entries)
    if args.write:
        atomic_write_json(Path(args.write), counts)
    else:
        json.dump(counts, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
