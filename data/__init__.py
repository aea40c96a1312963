"""Shipped data: the model catalog, GPU presets and the demo recordings."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
