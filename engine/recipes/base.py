"""What a model family must provide to the shared training driver (engine.training).

The driver owns everything common: device and precision, quantisation and LoRA (PEFT),
the HF Trainer loop, checkpoints, cancel requests, evaluation scheduling, metrics and
sample files, peak memory. A recipe owns only what differs between families.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass
class Example:
    """One training/eval item. Long clips become several examples (segments) or one
    example with several audio items, as the family's long-audio strategy says."""

    clip_id: str
    audio: np.ndarray | list[np.ndarray]  # 16 kHz mono float32; a list = several audio items
    text: str  # clean target (a segment's slice of it, for segmented clips)
    segment: int = 0
    start_s: float = 0.0
    end_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Loaded:
    model: Any  # torch.nn.Module (PEFT-wrapped by the driver after load)
    processor: Any  # whatever save_pretrained()/from_pretrained() round-trips for this family
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. CTC vocabulary


class Recipe(Protocol):
    key: str  # catalog recipe key
    default_lora_targets: Sequence[str]
    long_audio: str  # segment | multi_item | native

    def load(self, model_ref: str, *, dtype: Any, quantization_config: Any, device_map: Any,
             trust_remote_code: bool, train_texts: Sequence[str]) -> Loaded:
        """Model + processor from a hub id or local folder (train_texts: CTC builds its vocab)."""

    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        """Manifest rows -> examples, applying this family's long-audio strategy."""

    def collate(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        """Training batch: model inputs with `labels` (-100 where no loss: prompt, padding)."""

    def generate(self, model: Any, loaded: Loaded, batch: Sequence[Example], max_new_tokens: int) -> list[str]:
        """Greedy predictions, one string per example (the driver joins a clip's segments)."""

    def audio_encoder(self, model: Any) -> Any:
        """The audio-encoder submodule, for --freeze-audio-encoder."""

    def save(self, loaded: Loaded, out_dir: str) -> None:
        """Save the processor (and anything else from_pretrained needs) next to weights."""

    # Optional: `configure(self, config: dict) -> None` -- called by the driver with the run's
    # config.json before load(), for family options such as `language` or a prompt.
    # Optional: an Example whose meta has "score_text": False carries no target of its own
    # (a segment of a long eval clip): the driver leaves it out of eval_loss.
