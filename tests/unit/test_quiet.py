"""A worker's log keeps real warnings and drops library noise (engine/quiet.py, issue 12):
the records are emitted through the very loggers and warning categories the libraries use,
in a child process, once with the filters and once without (the baseline shows them all)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOISE_SCRIPT = r'''
import logging, sys, warnings
if sys.argv[1] == "quiet":
    from engine.quiet import quiet_worker_logs
    quiet_worker_logs()
else:
    warnings.simplefilter("default")  # the baseline: every warning shown once
from transformers.utils import logging as hf_logging
gen = hf_logging.get_logger("transformers.generation.utils")
for n in range(3):  # what every generate() call of an evaluation logs
    gen.warning("Both `max_new_tokens` (=440) and `max_length`(=448) seem to have been set. `max_new_tokens` "
                "will take precedence. Please refer to the documentation for more information.")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
    "`pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
warnings.warn("old API", DeprecationWarning)
hf_logging.get_logger("transformers.modeling_utils").warning("`foo` is deprecated; use `bar`")
warnings.warn("REAL: a user warning", UserWarning)
gen.warning("REAL: a transformers warning")
logging.getLogger("bitsandbytes.cextension").warning("REAL: a bitsandbytes warning")
logging.getLogger("bitsandbytes.backends.cpu.ops").error("REAL: deprecated but an error")
'''


def run(mode: str) -> str:
    cp = subprocess.run([sys.executable, "-c", NOISE_SCRIPT, mode], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0, cp.stderr
    return cp.stderr


def test_noise_is_dropped_and_real_warnings_kept():
    quiet, loud = run("quiet"), run("loud")
    for text in (quiet, loud):
        assert "REAL: a user warning" in text and "REAL: a transformers warning" in text
        assert "REAL: a bitsandbytes warning" in text and "REAL: deprecated but an error" in text
    # the baseline shows every piece of noise
    assert loud.count("Both `max_new_tokens`") == 3 and "kernels-community" in loud
    assert "is_gradient_checkpointing" in loud and "old API" in loud and "`foo` is deprecated" in loud
    # quiet: the repeated generate notice once, the rest not at all
    assert quiet.count("Both `max_new_tokens`") == 1
    assert "kernels-community" not in quiet and "is_gradient_checkpointing" not in quiet
    assert "old API" not in quiet and "`foo` is deprecated" not in quiet
