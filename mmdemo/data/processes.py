"""Which process owns a run, and whether that process is still alive.

A run records ``host:pid:start`` of the process that created it, so that an app starting up can
tell a run whose process died (mark it interrupted) from one a live CLI ``train`` is running.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks after boot, from ``/proc``), so that a pid the system
    reused never passes for the old process; ``None`` if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of stat(5); 3 precede this slice


def process_owner(pid: int | None = None) -> str:
    """``host:pid:start`` of a process (default: this one), recorded on the runs it creates."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or '?'}"


def is_other_live_process(owner: str | None) -> bool:
    """Whether ``owner`` (from :func:`process_owner`) is a process other than this one that is
    still running on this machine. ``False`` when it cannot tell (no owner, another host)."""
    if not owner or owner == process_owner():
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine sharing the folder, or unreadable: cannot tell
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    return start == "?" or _process_start(pid) == start
