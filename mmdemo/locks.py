"""An exclusive lock between processes (and threads) sharing one ``MMDEMO_HOME``.

Used where several processes may build the same thing at once on a fresh home, e.g. every rank
of ``torchrun -m mmdemo train`` creating the demo collection or the tiny model. POSIX only
(``fcntl.flock``), like the rest of the runtime.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    A second holder, in another process or another thread (each call opens its own file), waits
    until the first leaves. The lock ends with the process too, so a killed holder never leaves
    it taken. The file itself stays: deleting a lock file while others wait on it would race.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
