"""Everything the user touches: the Textual app (tui.app) and the command line (tui.cli).

Nothing under tui/ may import torch, transformers, peft, bitsandbytes or torchaudio:
the app must start fast over SSH. ML work happens in engine worker processes.
"""
