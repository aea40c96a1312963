"""voxtune's core: estimation, state, scheduling and training.

Modules directly in this package stay importable without torch/transformers so the
TUI and CLI start fast; anything that needs the ML stack imports it inside functions
or lives in modules only worker processes load (``engine.worker``, ``engine.recipes``).
"""
