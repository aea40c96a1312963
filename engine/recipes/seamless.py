"""SeamlessM4T v2 speech-to-text (`SeamlessM4Tv2ForSpeechToText`): the speech encoder and text
decoder of facebook/seamless-m4t-v2-large, without the text encoder, speech-unit model and
vocoder (they are never loaded), generating in the target language (default `eng`).

Decoder sequence, as generate() builds it: `</s> __eng__ tokens </s>`. Training labels are
therefore `__eng__ tokens </s>` (the model shifts them right behind `</s>`), with no loss on
the language token, which the prompt always supplies.

Default LoRA targets (as in data/catalog.json): `q_proj`, `v_proj` of the text decoder's
attention and `linear_q`, `linear_v` of the speech encoder's (its Conformer names).

Long audio: windowed, like Whisper: clips up to `WINDOW_S` are one example; longer ones are
cut into segments with their slice of the clean text (engine.segment, via
`engine.recipes.windowed`); evaluation joins a clip's segment predictions. The
encoder has no hard cap, but attention is O(T^2), so the window keeps memory bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from engine.recipes.base import Example, Loaded
from engine.recipes.ctc import keep_unquantized, to_model, unwrap
from engine.recipes.registry import Family, register
from engine.recipes.windowed import WindowedFeatureRecipe

register(Family(key="seamless", kind="speech-to-text", module=__name__,
                model_types=("seamless_m4t_v2", "seamless_m4t")))

WINDOW_S = 30.0
DEFAULT_LANG = "eng"


def _lang(language: str | None) -> str:
    """voxtune's config says `en`/`eng`/`english`; Seamless wants its 3-letter code."""
    if not language:
        return DEFAULT_LANG
    lang = language.strip().lower().replace("_", "")
    return {"en": "eng", "english": "eng", "fr": "fra", "de": "deu", "es": "spa", "it": "ita"}.get(lang, lang)


@dataclass
class SeamlessRecipe(WindowedFeatureRecipe):
    key: str = "seamless"
    default_lora_targets: Sequence[str] = ("q_proj", "v_proj", "linear_q", "linear_v")
    long_audio: str = "segment"
    window_s: float = WINDOW_S
    language: str = DEFAULT_LANG

    def configure(self, config: dict) -> None:
        """The run's `language` picks the target language token (default English)."""
        self.language = _lang(config.get("language"))

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        from transformers import SeamlessM4TProcessor, SeamlessM4Tv2ForSpeechToText

        processor = SeamlessM4TProcessor.from_pretrained(model_ref)
        # the tied output head, and the 160-wide feature projection bitsandbytes' CPU 4-bit
        # kernels cannot pack (its input is not a multiple of 64)
        keep_unquantized(quantization_config, ("lm_head", "feature_projection.projection"))
        model = SeamlessM4Tv2ForSpeechToText.from_pretrained(
            model_ref, dtype=dtype, quantization_config=quantization_config, device_map=device_map)
        lang_ids = getattr(model.generation_config, "text_decoder_lang_to_code_id", None) or {}
        if self.language not in lang_ids:
            known = ", ".join(sorted(lang_ids)[:20]) or "none"
            raise ValueError(f"{model_ref}: target language {self.language!r} is not one this model can write "
                             f"(generation_config.text_decoder_lang_to_code_id has: {known}); set `language`")
        return Loaded(model=model, processor=processor, extra={"lang_id": lang_ids[self.language]})

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        import torch

        tok = loaded.processor.tokenizer
        inputs = self._features(batch, loaded)
        seqs = [tok(ex.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for ex in batch]
        width = 1 + max(len(s) for s in seqs)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            labels[i, 1:1 + len(s)] = torch.tensor(s)
        # decoder input: </s> __lang__ tokens (the lang token is given, never predicted)
        dec = torch.full_like(labels, tok.pad_token_id)
        dec[:, 0] = unwrap_config(loaded).decoder_start_token_id
        dec[:, 1] = loaded.extra["lang_id"]
        for i, s in enumerate(seqs):
            dec[i, 2:1 + len(s)] = torch.tensor(s[:-1])
        inputs["decoder_input_ids"] = dec
        inputs["labels"] = labels
        return inputs

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        import torch

        inputs = to_model(self._features(batch, loaded), model)
        with torch.no_grad():
            out = unwrap(model).generate(**inputs, tgt_lang=self.language, max_new_tokens=max_new_tokens,
                                         do_sample=False, num_beams=1)
        ids = out.sequences if hasattr(out, "sequences") else out
        return [t.strip() for t in loaded.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def audio_encoder(self, model: Any) -> Any:
        return unwrap(model).speech_encoder

    def save(self, loaded: Loaded, out_dir: str) -> None:
        loaded.processor.save_pretrained(out_dir)


def unwrap_config(loaded: Loaded):
    return unwrap(loaded.model).config


def make_recipe(key: str) -> SeamlessRecipe:
    if key != "seamless":
        raise ValueError(f"engine.recipes.seamless has no recipe {key!r}")
    return SeamlessRecipe()
