"""A hostile `engine/` package for the module-hijack tests (issue 13, item 2): importing it writes a
marker file, so a test can tell whether a voxtune process ran it instead of voxtune's own code."""

from __future__ import annotations

from pathlib import Path


def plant(folder: Path, marker: Path) -> Path:
    """Create folder/engine/ whose import writes `marker` (and whose submodules do too)."""
    pkg = Path(folder) / "engine"
    pkg.mkdir(parents=True, exist_ok=True)
    code = (f"import os, sys\nopen({str(marker)!r}, 'a').write(f'{{os.getpid()}} {{sys.argv}} from {{__file__}}\\n')\n")
    for name in ("__init__.py", "daemon.py", "worker.py", "params.py", "rank.py", "doctor.py"):
        (pkg / name).write_text(code)
    return pkg
