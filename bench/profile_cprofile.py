"""uvicorn under cProfile, switched by signals: SIGUSR1 starts profiling, SIGUSR2 stops it and
writes $PROFILE_CPROFILE_DIR/cprofile.out. Run by bench/profile_driver.py with uvicorn's args."""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn.main

_profile = cProfile.Profile()


def _start(_signum: int, _frame: FrameType | None) -> None:
    _profile.enable()


def _stop(_signum: int, _frame: FrameType | None) -> None:
    _profile.disable()
    out = Path(os.environ["PROFILE_CPROFILE_DIR"]) / "cprofile.out"
    _profile.dump_stats(str(out.with_suffix(".tmp")))
    out.with_suffix(".tmp").rename(out)
    _profile.clear()


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main.main()
