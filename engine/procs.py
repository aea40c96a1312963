"""Command lines for voxtune's own Python child processes, safe from module hijacking.

`python -m engine.daemon` puts its working folder first on sys.path, so a folder named
`engine/` (or `torch/`) in the workspace, a run folder or wherever the user typed the
command would be imported instead of voxtune's code -- and run inside the detached daemon.
Every child voxtune starts therefore runs with the working folder off sys.path:
- Python >= 3.11: `python -P -m MODULE` (the documented "safe path" flag), and
  PYTHONSAFEPATH=1 in the child's environment so its own children (torchrun's ranks) are safe too;
- Python 3.10 (no -P): a two-line bootstrap (`BOOTSTRAP`) drops sys.path[0] before runpy runs the
  module. The Slurm job script uses the bootstrap too, since the cluster's Python may be older.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

SAFE_ENV = {"PYTHONSAFEPATH": "1"}
# `python -c BOOTSTRAP MODULE ARG...`: like `python -m MODULE ARG...` without the working folder on sys.path.
BOOTSTRAP = ("import runpy, sys; sys.path[:1] = [] if sys.path and sys.path[0] in ('', '.') else sys.path[:1]; "
             "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def python_module(module: str, *args: str, python: str | None = None, version: tuple[int, int] | None = None) -> list[str]:
    """`python -m module args` for a child process, with the working folder kept off sys.path.
    `python`/`version`: another interpreter than this one (default: sys.executable)."""
    exe = python or sys.executable
    version = version or sys.version_info[:2]
    if tuple(version) >= (3, 11):
        return [exe, "-P", "-m", module, *args]
    return [exe, "-c", BOOTSTRAP, module, *args]


def safe_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child: `base` (default os.environ) with PYTHONSAFEPATH=1 and `extra`."""
    env = dict(os.environ if base is None else base)
    env.update(SAFE_ENV)
    env.update(extra)
    return env
