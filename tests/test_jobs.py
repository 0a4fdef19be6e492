"""The job manager: one job at a time, cancel, errors, re-attaching, interrupted runs."""

from __future__ import annotations

import threading
import time

import pytest

from mmdemo.data.store import Store
from mmdemo.training.board import JobContext, ProgressBoard
from mmdemo.training.jobs import JobBusy, JobManager, describe_error

WAIT = 30.0  # generous upper bound for a thread to react; never a performance threshold


def _blocking_job(release: threading.Event, started: threading.Event):
    def job(ctx: JobContext) -> str:
        ctx.progress.update(phase="working", step=1)
        started.set()
        while not release.wait(0.01):
            if ctx.should_stop():
                return "stopped early"
        return "done"

    return job


def test_one_job_at_a_time_and_reattach_by_id():
    manager = JobManager()
    release, started = threading.Event(), threading.Event()
    job_id = manager.start(_blocking_job(release, started), kind="finetune", description="first")
    assert started.wait(WAIT)
    assert manager.is_busy() and manager.active_job_id() == job_id
    with pytest.raises(JobBusy, match="already running.*first"):
        manager.start(lambda ctx: None, kind="finetune")

    snap = manager.status(job_id)  # what a reloaded page sees, from any session
    assert snap.running and snap.progress["phase"] == "working" and snap.progress["step"] == 1
    assert manager.status().job_id == job_id  # no id: the running job

    release.set()
    done = manager.wait(job_id, WAIT)
    assert done.state == "finished" and done.result == "done" and done.finished_at is not None
    assert not manager.is_busy()
    second = manager.start(lambda ctx: 42)  # free again
    assert manager.wait(second, WAIT).result == 42
    assert manager.status(job_id).state == "finished"  # the old job is still remembered
    assert [s.job_id for s in manager.jobs()] == [second, job_id]
    assert manager.status("no-such-job") is None


def test_cancel_sets_the_stop_event_and_ends_cancelled():
    manager = JobManager()
    release, started = threading.Event(), threading.Event()
    job_id = manager.start(_blocking_job(release, started))
    assert started.wait(WAIT)
    assert manager.cancel() is True
    snap = manager.wait(job_id, WAIT)
    assert snap.state == "cancelled" and snap.result == "stopped early"
    assert snap.cancel_requested
    assert manager.cancel() is False  # nothing runs any more


def test_a_result_status_decides_the_final_state():
    class Result:
        status = "failed"
        message = "The collection is empty."

    manager = JobManager()
    snap = manager.wait(manager.start(lambda ctx: Result()), WAIT)
    assert snap.state == "failed" and snap.message == "The collection is empty."


def test_an_error_ends_the_job_with_a_message_and_the_manager_keeps_working():
    from mmdemo.training.run import TrainingError

    manager = JobManager()

    def broken(ctx: JobContext) -> None:
        raise TrainingError("A finetune needs at least 2 pairs.")

    snap = manager.wait(manager.start(broken), WAIT)
    assert snap.state == "failed" and snap.message == "A finetune needs at least 2 pairs."

    def crash(ctx: JobContext) -> None:
        raise KeyError("boom")

    snap = manager.wait(manager.start(crash), WAIT)
    assert snap.state == "failed" and "unexpected error (KeyError" in snap.message
    assert snap.progress["phase"] == "failed"
    assert manager.wait(manager.start(lambda ctx: "ok"), WAIT).state == "finished"


def test_describe_error_explains_out_of_memory():
    message = describe_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "GPU ran out of memory" in message and "batch size" in message


def test_progress_board_snapshots_are_copies():
    board = ProgressBoard(phase="training")
    board.update(metrics={"t2i": {"recall@1": 0.5}})
    for step in range(10):
        board.append("loss_history", {"step": step, "loss": 1.0 / (step + 1)}, max_len=8)
    snap = board.snapshot()
    snap["metrics"]["t2i"]["recall@1"] = 0.0
    snap["loss_history"].clear()
    again = board.snapshot()
    assert again["metrics"]["t2i"]["recall@1"] == 0.5
    assert len(again["loss_history"]) <= 8
    assert again["loss_history"][-1]["step"] == 9  # thinning keeps the newest points
    assert again["phase"] == "training" and "updated_at" in again


def test_runs_left_running_are_marked_interrupted_at_start(store: Store, settings):
    collection = store.create_collection("c")
    store.create_run("left-running", collection.id, "tiny", str(settings.runs_dir / "a"))
    store.update_run("left-running", status="running")
    store.create_run("queued", collection.id, "tiny", str(settings.runs_dir / "b"))
    store.create_run("done", collection.id, "tiny", str(settings.runs_dir / "c"))
    store.update_run("done", status="finished", finished=True)

    manager = JobManager(store)  # what the app does when it starts
    assert manager.interrupted_at_start == 2
    assert store.get_run("left-running").status == "interrupted"
    assert "stopped while this run was in progress" in store.get_run("left-running").message
    assert store.get_run("queued").status == "interrupted"
    assert store.get_run("done").status == "finished"


def test_jobs_run_on_the_thread_that_asked_for_them():
    """The app hands its main thread to the manager: jobs started later run there, one at a time."""
    manager = JobManager()
    stop = threading.Event()
    ran_on: list[str] = []
    release = threading.Event()

    def job(ctx):
        ran_on.append(threading.current_thread().name)
        release.wait(30)
        return "ok"

    host = threading.Thread(target=manager.run_jobs_here, args=(stop, 0.05), name="host")
    host.start()
    while not manager.runs_jobs_here():
        time.sleep(0.01)
    first = manager.start(job)
    with pytest.raises(JobBusy):
        manager.start(job)
    release.set()
    assert manager.wait(first, timeout=30).state == "finished"
    second = manager.start(job)
    assert manager.wait(second, timeout=30).state == "finished"
    stop.set()
    host.join(10)
    assert ran_on == ["host", "host"] and not host.is_alive()
    assert not manager.runs_jobs_here()
