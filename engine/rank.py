"""One training process of a multi-process run: `torchrun ... -m engine.rank RUN_DIR`.

Started by engine.distributed.launch (from the worker), never by hand. It dies with its
launcher, then runs the same entry as a single-process worker (engine.training.run, or
VOXTUNE_WORKER_ENTRY in tests); rank 0 writes the run files, rank r > 0 its own ending only.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from engine import distributed
from engine.runfiles import RunFiles


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: torchrun ... -m engine.rank RUN_DIR", file=sys.stderr)
        return 2
    distributed.die_with_parent()
    from engine.workspace import private_umask
    from engine.worker import _entry

    private_umask()
    run_dir = Path(argv[0]).resolve()
    try:
        return int(_entry()(run_dir) or 0)
    except BaseException as e:  # noqa: BLE001 -- the rank's ending must be on record
        traceback.print_exc()
        if not distributed.is_main():
            distributed.write_rank_result(RunFiles(run_dir), {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:300]})
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
