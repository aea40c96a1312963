"""`--language` checked at `queue add`, against what the model's family can take.

Whisper's multilingual tokenizer has one `<|code|>` token per language and accepts a code
("de"), a name or alias ("german") or the token itself; English-only checkpoints (.en) take
none. The list is data/whisper_languages.json (transformers' LANGUAGES/TO_LANGUAGE_CODE,
themselves OpenAI's). A local checkpoint's own generation_config.json (lang_to_id,
is_multilingual) wins over the list. Light: JSON only, no transformers import.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.config import ConfigError

LANGUAGES_PATH = Path(__file__).resolve().parents[1] / "data" / "whisper_languages.json"


@lru_cache(maxsize=1)
def whisper_languages() -> tuple[dict[str, str], dict[str, str]]:
    """({code: name}, {name or alias: code}) of Whisper's multilingual tokenizer."""
    data = json.loads(LANGUAGES_PATH.read_text(encoding="utf-8"))
    return data["codes"], data["names"]


def _generation_config(model_ref: str) -> dict:
    path = Path(model_ref) / "generation_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def whisper_code(language: str, model_ref: str | None = None) -> str | None:
    """The language code Whisper would use for `language`, or None if it knows no such language."""
    codes, names = whisper_languages()
    lang = language.strip().lower()
    if lang.startswith("<|") and lang.endswith("|>"):
        lang = lang[2:-2]
    code = lang if lang in codes else names.get(lang)
    own = _generation_config(model_ref).get("lang_to_id") if model_ref else None
    if own:  # the checkpoint's own language tokens decide
        return code if code and f"<|{code}|>" in own else None
    return code


def english_only(model: str, model_ref: str | None, entry: Any) -> bool:
    gen = _generation_config(model_ref) if model_ref else {}
    if "is_multilingual" in gen:
        return not gen["is_multilingual"]
    name = str(model_ref or model)
    return name.rstrip("/").lower().endswith(".en") or str(getattr(entry, "languages", "")).strip().lower() == "en"


def check_language(language: str | None, *, recipe: str | None, model: str, model_ref: str | None,
                   entry: Any = None) -> None:
    """Raise ConfigError (field `language`) when the model's family cannot transcribe in
    `language`. Families without a known list (audio LLMs take the language as prompt text)
    are not checked."""
    if not language or recipe != "whisper":
        return
    if english_only(model, model_ref, entry):
        if whisper_code(language) != "en":
            raise ConfigError(
                f"language: {model} is an English-only Whisper checkpoint; --language {language!r} needs a "
                "multilingual one", field="language", hint="drop --language, or use e.g. --model whisper-small")
        return
    if whisper_code(language, model_ref) is None:
        raise ConfigError(
            f"language: {language!r} is not a language Whisper's tokenizer knows", field="language",
            hint="give a code or name such as en, de, fr, german, mandarin (see data/whisper_languages.json)")
