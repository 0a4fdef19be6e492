"""Keep the web UI responsive while a CPU finetune runs in the same process.

While training runs, torch's OpenMP threads keep every core busy, and a page request waits for a
core. :func:`lower_cpu_priority` raises the nice value of the training thread and of torch's
native worker threads, so the kernel runs a request thread first whenever one is ready; when the
UI is idle, training still gets every core. (A shorter GIL switch interval was measured too and
did not help: see README, Performance.)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

TASKS_DIR = Path("/proc/self/task")


def native_thread_ids() -> set[int]:
    """Kernel ids of this process's threads that Python did not start (torch's OpenMP pool,
    tokenizer pools, ...). Empty where ``/proc`` is missing (not Linux)."""
    try:
        all_ids = {int(entry.name) for entry in TASKS_DIR.iterdir()}
    except OSError:
        return set()
    python_ids = {thread.native_id for thread in threading.enumerate()}
    return all_ids - python_ids


def lower_cpu_priority(niceness: int) -> list[int]:
    """Give the calling thread and the native helper threads at least ``niceness`` (0–19).

    On Linux a nice value belongs to a thread, and threads inherit it from the thread that
    creates them, so OpenMP workers that the caller starts later are covered too. Other Python
    threads (the web server's) keep theirs. The change is one-way: lowering a nice value again
    needs privileges, so call this only on a thread that runs nothing but jobs.
    Returns the thread ids changed; empty when ``niceness`` ≤ 0 or the platform has no per-thread
    priorities.
    """
    if niceness <= 0 or not hasattr(os, "setpriority") or not TASKS_DIR.is_dir():
        return []
    niceness = min(int(niceness), 19)
    changed = []
    for thread_id in {threading.get_native_id(), *native_thread_ids()}:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread_id) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread_id, niceness)
                changed.append(thread_id)
        except OSError:  # the thread ended meanwhile, or the system refuses
            continue
    if changed:
        log.info("training threads run at nice %d: %s", niceness, sorted(changed))
    return sorted(changed)
