"""Guards against degenerate decoding: a piece that loops ("me-me-me-..." until the token
limit) counts as hundreds of wrong words in normalised WER.

Detection follows OpenAI Whisper's transcribe(): a piece whose text compresses too well (zlib
ratio > COMPRESSION_RATIO_THRESHOLD = 2.4, whisper/transcribe.py's default) is a loop; a piece
that used up the token limit is suspect too. The Whisper recipe re-decodes such pieces with
transformers' temperature fallback (`generate(temperature=(0.2, ..., 1.0),
compression_ratio_threshold=..., logprob_threshold=-1.0)`, the same thresholds), and if the text
still loops, `collapse_repeats` keeps two copies of the repeated unit. Every evaluation reports
the counts (`DecodeStats`) in its metrics record. Pure Python, light.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass

COMPRESSION_RATIO_THRESHOLD = 2.4  # OpenAI whisper transcribe() default (text bytes / zlib bytes)
HF_COMPRESSION_RATIO_THRESHOLD = 1.35  # transformers' measure (token-id bytes), its documented common value
LOGPROB_THRESHOLD = -1.0  # average log-probability per token (OpenAI and transformers default)
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)  # OpenAI's schedule after the greedy pass (0.0)
KEEP_REPEATS = 2  # copies of a looping unit that collapse_repeats keeps
_MIN_REPEATS = 4  # a unit repeated this often in a row is a loop

# one to six words (or hyphen-joined pieces), then the same again at least _MIN_REPEATS-1 times
_LOOP = re.compile(r"((?:[^\s-]+[\s-]+){1,6}?)\1{%d,}" % (_MIN_REPEATS - 1))


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression (0.0 for empty text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_loop(text: str, threshold: float = COMPRESSION_RATIO_THRESHOLD) -> bool:
    return compression_ratio(text) > threshold


def collapse_repeats(text: str, keep: int = KEEP_REPEATS) -> str:
    """Runs of >= 4 consecutive copies of a 1-6 word unit (space- or hyphen-joined) -> `keep`
    copies. "me-me-me-me-me-me" -> "me-me-"; ordinary speech (a word said twice) is untouched."""
    out = _LOOP.sub(lambda m: m.group(1) * keep, text + " ")
    return out.strip()


@dataclass
class DecodeStats:
    """Counts over one evaluation's pieces (30 s windows or whole clips)."""

    pieces: int = 0
    fallback: int = 0  # pieces re-decoded with temperature fallback (loop or token limit)
    token_limit: int = 0  # pieces whose greedy decode used up max_new_tokens
    collapsed: int = 0  # pieces still looping after fallback, repeats collapsed

    def add(self, other: "DecodeStats") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def as_record(self) -> dict:
        return {f"decode_{k}": v for k, v in asdict(self).items()}
