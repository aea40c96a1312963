"""A worker's log shows real warnings, not library noise that looks like an error.

What is silenced (each seen in the log of a first-hour run, issue 12):

- bitsandbytes' CPU backend: "Failed to load CPU gemm_4bit_forward from kernels-community ...
  pip install kernels" -- an optional speed-up for 4-bit on CPUs with AVX512-BF16; the
  fallback is used and nothing is wrong (bitsandbytes/backends/cpu/ops.py).
- transformers' "Both `max_new_tokens` (=N) and `max_length`(=M) seem to have been set",
  logged by every generate() call of an evaluation (generation/utils.py,
  `_prepare_generated_length`): kept the first time, dropped after.
- deprecation notices: DeprecationWarning, PendingDeprecationWarning and FutureWarning
  (what libraries use for "X is deprecated and will be removed"), and library log records
  saying "deprecated"; they are for the library's callers, not for the user.
- loading progress bars (HF_HUB_DISABLE_PROGRESS_BARS, transformers' tqdm bars): carriage
  returns garble the log tail and they look like output.

Everything else -- an out-of-memory error, a real UserWarning, a model's own warnings -- still
reaches the log. Only the worker calls `quiet_worker_logs()`; the CLI and the TUI never
import the libraries concerned.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# Log records dropped whatever logger emits them.
DROP = (
    re.compile(r"Failed to load CPU gemm_4bit_forward from kernels-community"),
    re.compile(r"\bdeprecat", re.IGNORECASE),
)
# Log records kept the first time only (they repeat on every generate call).
ONCE = (
    re.compile(r"Both `max_new_tokens` \(=\d+\) and `max_length`"),
)
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


class NoiseFilter(logging.Filter):
    """Drops DROP records and repeats of ONCE records; lets everything else through."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True  # an error is never noise
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record: let logging report it
            return True
        if any(p.search(msg) for p in DROP):
            return False
        for p in ONCE:
            if p.search(msg):
                if p.pattern in self.seen:
                    return False
                self.seen.add(p.pattern)
        return True


_FILTER = NoiseFilter()


def _filter_handlers(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def quiet_worker_logs() -> None:
    """Install the filters in this (worker) process; idempotent. Call before importing
    bitsandbytes/transformers (their import-time notices) and again after (transformers adds
    its own handler when first used)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # transformers' warning_advice()
    for category in DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category)
    root = logging.getLogger()
    if not root.handlers:  # library warnings go through a handler we filter, not logging.lastResort
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    _filter_handlers(root)
    try:  # transformers logs through its own handler (propagate=False)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        _filter_handlers(hf_logging.get_logger("transformers"))
    except ImportError:
        pass
