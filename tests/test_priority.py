"""Training makes way for web requests: its threads run at a lower CPU priority.

Nice values can only go up without privileges, so each check runs in a fresh interpreter that
plays the app: a "web server" Python thread, and jobs run on the main thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux only")

APP_LIKE = """
import json, os, threading
import torch
from mmdemo.training.jobs import JobManager
from mmdemo.training.priority import native_thread_ids

def nice(thread_id):
    return os.getpriority(os.PRIO_PROCESS, thread_id)

torch.set_num_threads(2)
torch.ones(512, 512) @ torch.ones(512, 512)  # starts torch's OpenMP workers
server_up, server_stop = threading.Event(), threading.Event()
server = threading.Thread(target=lambda: (server_up.set(), server_stop.wait()), daemon=True)
server.start()
server_up.wait()
seen = {}

def job(ctx):
    seen["job_nice"] = nice(threading.get_native_id())
    seen["native_nice"] = sorted({nice(t) for t in native_thread_ids()})
    seen["server_nice"] = nice(server.native_id)
    return "ok"

manager = JobManager(niceness=NICENESS)
stop = threading.Event()

def drive():
    while not manager.runs_jobs_here():
        pass
    job_id = manager.start(job)
    seen["state"] = manager.wait(job_id, 60).state
    stop.set()

threading.Thread(target=drive, daemon=True).start()
manager.run_jobs_here(stop, poll_s=0.01)
seen["native_threads"] = len(native_thread_ids())
print(json.dumps(seen))
"""


def _run_app_like(niceness: int) -> dict:
    code = APP_LIKE.replace("NICENESS", str(niceness))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_jobs_and_torch_workers_run_at_lower_priority_and_the_server_keeps_its_own():
    seen = _run_app_like(niceness=7)
    assert seen["state"] == "finished"
    assert seen["job_nice"] == 7
    assert seen["native_threads"] >= 1  # torch's OpenMP workers exist
    assert seen["native_nice"] == [7]
    assert seen["server_nice"] == 0


def test_zero_leaves_priority_alone():
    seen = _run_app_like(niceness=0)
    assert seen["state"] == "finished"
    assert seen["job_nice"] == 0 and seen["native_nice"] == [0]


def test_lower_cpu_priority_only_raises_and_reports_what_it_changed():
    code = """
import json, os, threading
from mmdemo.training.priority import lower_cpu_priority
me = threading.get_native_id()
first = lower_cpu_priority(5)
again = lower_cpu_priority(5)
lower = lower_cpu_priority(3)  # never lowers a nice value back (that needs privileges)
print(json.dumps({"me": me, "first": first, "again": again, "lower": lower,
                  "nice": os.getpriority(os.PRIO_PROCESS, me)}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["me"] in seen["first"]
    assert seen["again"] == [] and seen["lower"] == []
    assert seen["nice"] == 5
