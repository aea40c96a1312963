"""`runs export` refusals that need no model: unknown format, --quantization without ct2, a
family faster-whisper cannot run, CTranslate2 not installed. Each is one VoxtuneError line
naming what to do, and nothing is written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.tiny_models import write_run_config  # noqa: E402

from engine.errors import VoxtuneError  # noqa: E402
from engine.export import ExportError, export_run  # noqa: E402
from tui.cli import main  # noqa: E402


def _run(ws, **overrides) -> str:
    return write_run_config(ws, model_ref="/models/some-model", **overrides).name


def _nothing_written(ws, run_id: str) -> bool:
    return not [p for p in ws.run_dir(run_id).iterdir() if p.name.startswith(("export", ".ct2"))]


@pytest.mark.parametrize("family, recipe", [("audio-llm", "qwen2_audio"), ("ctc", "ctc"),
                                            ("speech-to-text", "seamless")])
def test_ct2_refuses_families_faster_whisper_cannot_run(ws, family, recipe):
    run_id = _run(ws, family=family, recipe=recipe)
    with pytest.raises(ExportError) as e:
        export_run(ws, run_id, format="ct2")
    assert isinstance(e.value, VoxtuneError) and e.value.field == "format"
    assert f"family {family} (recipe {recipe})" in str(e.value) and "--format hf" in str(e.value)
    assert _nothing_written(ws, run_id)


@pytest.mark.parametrize("kwargs, text", [
    ({"format": "ggml"}, "--format 'ggml' is not one of hf, ct2"),
    ({"format": "hf", "quantization": "int8"}, "--quantization applies to --format ct2 only"),
    ({"format": "ct2", "quantization": "int4"}, "--quantization 'int4' is not one of int8,"),
])
def test_bad_format_options(ws, kwargs, text):
    run_id = _run(ws)
    with pytest.raises(ExportError, match=text):
        export_run(ws, run_id, **kwargs)
    assert _nothing_written(ws, run_id)


def test_ct2_without_ctranslate2_names_the_extra(ws, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ctranslate2" else real(n, *a))
    run_id = _run(ws)
    with pytest.raises(ExportError, match=r"pip install 'voxtune\[ct2\]'"):
        export_run(ws, run_id, format="ct2")
    assert _nothing_written(ws, run_id)


def test_cli_refusal_is_one_line(ws, capsys):
    run_id = _run(ws, family="audio-llm", recipe="voxtral")
    assert main(["--home", str(ws.home), "runs", "export", run_id, "--format", "ct2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("voxtune: run ") and "family audio-llm" in err[0]
