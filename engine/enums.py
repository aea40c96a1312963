"""voxtune's vocabularies, each defined once.

`str` enums: a member *is* its string, so JSON files, TinyDB records and comparisons with
plain strings keep working ("running" == RunStatus.RUNNING), and `str(member)` is the value.
"""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class RunStatus(_StrEnum):
    """A run's life: queued -> running -> finished | failed | cancelled; `interrupted` when the
    engine died under it (resumable). pueue's TaskStatus/TaskResult, flattened."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


ACTIVE = frozenset({RunStatus.RUNNING})
FINAL = frozenset({RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})


class Method(_StrEnum):
    """How a run trains: every weight, or LoRA adapters on a 16-bit, NF4 (QLoRA) or int8 base."""

    FULL = "full"
    LORA = "lora"
    QLORA = "qlora"
    LORA8 = "lora8"

    @property
    def adapter(self) -> bool:
        return self is not Method.FULL

    @property
    def quantized(self) -> bool:
        return self in (Method.QLORA, Method.LORA8)


class Split(_StrEnum):
    """What an eval-only run scores (`all`: every usable clip)."""

    VALIDATION = "validation"
    TEST = "test"
    ALL = "all"


class Precision(_StrEnum):
    AUTO = "auto"  # bf16 where the GPU supports it, else fp16; fp32 on the CPU
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class Optimizer(_StrEnum):
    ADAMW = "adamw"
    ADAMW8BIT = "adamw8bit"
    ADAFACTOR = "adafactor"


METHODS = Method.values()
