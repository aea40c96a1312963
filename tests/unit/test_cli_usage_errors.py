"""A usage mistake (unknown choice, missing or unknown option) is one line plus a hint, exit 2,
like every other bad input (issue 13: the bad-input cases of bench_faults.py)."""

from __future__ import annotations

import pytest

from tui.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["queue", "add", "--model", "whisper-small", "--dataset", "demo", "--method", "magic"], "invalid choice: 'magic'"),
    (["queue", "add", "--dataset", "demo"], "--model"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].startswith("voxtune: ") and needle in lines[0], lines
    assert lines[1].startswith("  hint: `voxtune") and "--help" in lines[1]


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["queue", "add", "--help"])
    assert e.value.code == 0 and "usage: voxtune queue add" in capsys.readouterr().out
