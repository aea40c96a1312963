"""One recipe per model family; the shared HF Trainer driver is engine.training.

Recipes import torch/transformers, so only worker processes import this package.
"""

from __future__ import annotations

import importlib

# recipe key (catalog `recipe` field) -> module under engine.recipes
RECIPES = {
    "whisper": "whisper",
    "ctc": "ctc",
    "qwen2_audio": "audio_llm",
    "voxtral": "audio_llm",
    "omni": "audio_llm",
    "granite": "audio_llm",
    "qwen_audio": "audio_llm",
    "seamless": "seamless",
}


def get_recipe(key: str):
    """The Recipe instance for a catalog recipe key."""
    try:
        module = importlib.import_module(f"engine.recipes.{RECIPES[key]}")
    except KeyError:
        raise ValueError(f"no recipe {key!r}; known: {', '.join(sorted(RECIPES))}") from None
    return module.make_recipe(key)
