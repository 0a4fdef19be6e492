"""Run the same Python snippet in several real processes that start their work at one moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mmdemo.settings import PROJECT_ROOT

_PRELUDE = """
import sys, time
from pathlib import Path
_ready, _go = Path(sys.argv[1]), Path(sys.argv[2])
_ready.touch()
while not _go.exists():
    time.sleep(0.005)
"""


def run_at_once(snippet: str, processes: int, folder: Path, timeout: float = 300) -> list[dict]:
    """Start ``processes`` Pythons running ``snippet`` after a common start signal.

    Each process imports what it needs, says it is ready, then waits for the signal, so their
    work begins within milliseconds of each other. ``snippet`` must print one JSON object as its
    last stdout line; returns those objects, one per process. Any non-zero exit fails.
    """
    folder.mkdir(parents=True, exist_ok=True)
    go = folder / "go"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HF_HUB_OFFLINE": "1"}
    children, readies = [], []
    for index in range(processes):
        ready = folder / f"ready-{index}"
        readies.append(ready)
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", _PRELUDE + snippet, str(ready), str(go)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + timeout
    while not all(r.exists() for r in readies):
        if any(c.poll() is not None for c in children) or time.monotonic() > deadline:
            break  # a child died early: its output below says why
        time.sleep(0.01)
    go.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results
