"""Encoder-decoder speech-to-text through `AutoModelForSpeechSeq2Seq`: the generic path for
Moonshine, Canary and any other `model_type` a family below declares. Whisper (prefix tokens,
model-timed segmentation) and SeamlessM4T (target-language token) are its named exceptions, in
engine/recipes/whisper.py and engine/recipes/seamless.py.

Training: the feature extractor's inputs (whatever the model's forward takes: log-mel
`input_features` or raw `input_values`, and their mask) and labels = the tokenizer's ids of
the clean text ending in end-of-sequence; decoder inputs are the labels shifted right behind
`decoder_start_token_id`, with a family's decoder prompt (Canary's task tokens) in front and
never scored. Evaluation: greedy `generate`, new tokens decoded.

Long audio: windowed (engine.recipes.windowed): clips up to the family's window are one
example; longer ones are cut at pauses with their slice of the clean text; evaluation joins a
clip's piece predictions. A target longer than the decoder's positions is an error naming the
clip, never a silent cut.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

from engine.recipes.base import Example, Loaded
from engine.recipes.ctc import SAMPLE_RATE, to_model, unwrap
from engine.recipes.registry import Family, register
from engine.recipes.windowed import windowed_examples


@dataclass(frozen=True)
class Seq2SeqRule:
    """window_s: longest piece the model hears (seconds); decoder_prompt: chat-template decoder
    prompt (Canary: language, task, punctuation tokens) given before the answer, never scored."""

    window_s: float = 30.0
    decoder_prompt: bool = False


RULES: dict[str, Seq2SeqRule] = {}


def _family(key: str, model_types: tuple[str, ...], rule: Seq2SeqRule, *, trainable: bool = True,
            reason: str | None = None) -> None:
    register(Family(key=key, kind="seq2seq", module=__name__, model_types=model_types, trainable=trainable,
                    reason=reason))
    RULES[key] = rule


# Moonshine: variable-length input; trained on utterances up to ~30 s (model card), so 30 s pieces.
_family("moonshine", ("moonshine",), Seq2SeqRule(window_s=30.0))
# Canary (FastConformer + Transformer decoder): 40 s training segments (model card); the decoder
# prompt names source/target language and punctuation.
_family("canary", ("canary",), Seq2SeqRule(window_s=40.0, decoder_prompt=True), trainable=False,
        reason="its decoder-prompt path (language, task and punctuation tokens from the processor's chat "
               "template) is written but not verified: no tiny Canary tokenizer can be built offline here yet; "
               "estimates only")


@dataclass
class Seq2SeqRecipe:
    key: str
    rule: Seq2SeqRule
    default_lora_targets: Sequence[str] = ("q_proj", "v_proj")
    long_audio: str = "segment"
    language: str = "en"
    extra_generate: dict = field(default_factory=dict)

    @property
    def window_s(self) -> float:
        return self.rule.window_s

    def configure(self, config: dict) -> None:
        from engine.recipes.audio_llm import _catalog_lora_targets

        self.language = str(config.get("language") or "en")
        self.default_lora_targets = _catalog_lora_targets(config) or self.default_lora_targets

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        import transformers
        from transformers import AutoConfig, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

        from engine.loading import from_pretrained

        config = from_pretrained(AutoConfig, model_ref, trust_remote_code=trust_remote_code)
        cls = getattr(transformers, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES[config.model_type])
        processor = from_pretrained(AutoProcessor, model_ref, trust_remote_code=trust_remote_code)
        model = from_pretrained(cls, model_ref, dtype=dtype, quantization_config=quantization_config,
                                device_map=device_map, trust_remote_code=trust_remote_code)
        tok = processor.tokenizer
        cfg = model.config
        eos = tok.eos_token_id if tok.eos_token_id is not None else cfg.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else (cfg.pad_token_id if cfg.pad_token_id is not None
                                                                     else eos)
        limit = getattr(cfg, "max_target_positions", None) or getattr(cfg, "max_position_embeddings", None) or 448
        return Loaded(model=model, processor=processor,
                      extra={"eos_id": eos, "pad_id": pad, "start_id": cfg.decoder_start_token_id,
                             "max_target_tokens": int(limit)})

    # -- data ------------------------------------------------------------------------------
    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        out = windowed_examples(rows, loaded, window_s=self.window_s, for_training=for_training, model_key=self.key)
        if for_training:
            limit = loaded.extra["max_target_tokens"]
            for ex in out:
                n = len(self._target(ex.text, loaded)) + len(self._prompt_ids(loaded))
                if n > limit:
                    raise ValueError(
                        f"clip {ex.clip_id} (segment {ex.segment}, {ex.start_s:.1f}-{ex.end_s:.1f} s): its transcript "
                        f"is {n} tokens, over the decoder's {limit} positions; split it into shorter clips "
                        "(nothing was truncated)")
        return out

    def _target(self, text: str, loaded: Loaded) -> list[int]:
        """Text ids ending in end-of-sequence, without a leading start token."""
        tok = loaded.processor.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids + [loaded.extra["eos_id"]]

    def _prompt_ids(self, loaded: Loaded) -> list[int]:
        """Decoder prompt after the start token (Canary: its task tokens); [] for most models."""
        if not self.rule.decoder_prompt:
            return []
        p = loaded.processor
        if "prompt_ids" not in loaded.extra:
            prompts = p.apply_transcription_request(audio="x", source_language=self.language, tokenize=False)
            ids = p.tokenizer(prompts[0] if isinstance(prompts, list) else prompts,
                              add_special_tokens=False)["input_ids"]
            start = loaded.extra["start_id"]
            loaded.extra["prompt_ids"] = ids[1:] if ids and ids[0] == start else ids
        return list(loaded.extra["prompt_ids"])

    def _features(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        p = loaded.processor
        fe = getattr(p, "feature_extractor", p)
        out = dict(fe([ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, padding=True,
                      return_attention_mask=True, return_tensors="pt"))
        params = inspect.signature(unwrap(loaded.model).forward).parameters
        if "input_features_mask" in out and "attention_mask" in params and "attention_mask" not in out:
            out["attention_mask"] = out.pop("input_features_mask")
        return {k: v for k, v in out.items() if k in params}

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        import torch

        inputs = self._features(batch, loaded)
        prompt = self._prompt_ids(loaded)
        seqs = [prompt + self._target(ex.text, loaded) for ex in batch]
        width = max(len(s) for s in seqs)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        dec = torch.full((len(batch), width), loaded.extra["pad_id"], dtype=torch.long)
        for i, s in enumerate(seqs):
            labels[i, len(prompt):len(s)] = torch.tensor(s[len(prompt):])  # the prompt is given, not predicted
            dec[i, :len(s)] = torch.tensor([loaded.extra["start_id"]] + s[:-1])
        inputs["decoder_input_ids"] = dec
        inputs["labels"] = labels
        return inputs

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        inputs = to_model(self._features(batch, loaded), model)
        prompt = self._prompt_ids(loaded)
        if prompt:
            dev = next(model.parameters()).device
            inputs["decoder_input_ids"] = torch.tensor([[loaded.extra["start_id"]] + prompt] * len(batch), device=dev)
        limit = loaded.extra["max_target_tokens"] - len(prompt) - 1
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max(1, min(max_new_tokens, limit)), do_sample=False,
                                 num_beams=1, eos_token_id=loaded.extra["eos_id"], pad_token_id=loaded.extra["pad_id"])
        ids = out.sequences if hasattr(out, "sequences") else out
        if prompt:
            ids = ids[:, 1 + len(prompt):]
        return [t.strip() for t in loaded.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def audio_encoder(self, model: Any) -> Any:
        m = unwrap(model)
        return m.get_encoder() if hasattr(m, "get_encoder") else m.model.encoder

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)


def make_recipe(key: str) -> Seq2SeqRecipe:
    from engine.recipes.registry import family

    fam = family(key)
    if fam.key not in RULES:
        raise ValueError(f"engine.recipes.seq2seq has no recipe {key!r}")
    if not fam.trainable:
        raise ValueError(f"{fam.key}: {fam.reason}")
    return Seq2SeqRecipe(key=fam.key, rule=RULES[fam.key])
