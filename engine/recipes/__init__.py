"""Recipes: how each architecture (family) meets the shared HF Trainer driver (engine.training).

Three generic recipes cover most of the field -- `seq2seq` (encoder-decoder, via
AutoModelForSpeechSeq2Seq), `ctc` (AutoModelForCTC and siblings) and `audio_llm` (chat models
that hear audio, driven by the processor's chat template) -- plus named exceptions (`whisper`,
`seamless`). Each module declares the families (recipe keys and config.json model_types) it
handles through `engine.recipes.registry`; nothing else lists them.

Recipes import torch/transformers inside functions, so only worker processes build them.
"""

from __future__ import annotations

from engine.recipes.registry import UnknownRecipe, families, family, for_model_type, make


def get_recipe(key: str):
    """The Recipe instance for a catalog recipe key (or an older alias of one)."""
    try:
        return make(key)
    except UnknownRecipe as e:
        raise ValueError(str(e)) from None


__all__ = ["get_recipe", "families", "family", "for_model_type", "UnknownRecipe"]
