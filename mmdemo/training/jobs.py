"""A process-wide manager that runs one background job (a finetune) at a time.

A job is a callable ``fn(ctx: JobContext) -> result`` (a finetune is
:class:`mmdemo.training.run.TrainingJob`; the manager knows nothing about training). It runs in a
worker thread of its own, not in a web request, so closing or reloading a browser tab never stops
it; any session re-attaches by job id and polls :meth:`JobManager.status`, which returns a cheap
snapshot (plain data). A second :meth:`JobManager.start` while a job runs raises :class:`JobBusy`,
whichever session asks. :meth:`JobManager.cancel` sets the job's stop event; the job decides where
it can stop (a finetune stops after the current step). An exception ends the job as ``failed``
with a message a person can read; the manager keeps working.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmdemo.data.store import Store
from mmdemo.training.board import JobContext, ProgressBoard
from mmdemo.training.priority import lower_cpu_priority

log = logging.getLogger(__name__)

JOB_STATES = ("running", "finished", "cancelled", "failed")
_FINAL_RESULT_STATES = {"finished", "cancelled", "failed"}


class JobBusy(RuntimeError):
    """A job is already running; ``str(exc)`` says which and what to do."""


@dataclass(frozen=True)
class JobSnapshot:
    """A job's state at one moment (plain data, cheap to poll)."""

    job_id: str
    kind: str
    description: str
    state: str
    started_at: float
    finished_at: float | None
    message: str
    progress: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    cancel_requested: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def elapsed_s(self) -> float:
        return (self.finished_at or time.time()) - self.started_at


@dataclass
class _Job:
    job_id: str
    kind: str
    description: str
    context: JobContext
    started_at: float
    thread: threading.Thread | None = None
    state: str = "running"
    finished_at: float | None = None
    message: str = ""
    result: Any = None
    done: threading.Event = field(default_factory=threading.Event)


def describe_error(exc: BaseException) -> str:
    """A message for people: the text of our own errors, a hint for known failures."""
    text = str(exc).strip()
    lowered = text.lower()
    if "out of memory" in lowered and ("cuda" in lowered or "gpu" in lowered):
        return (
            "The GPU ran out of memory. Lower the batch size, or pick the cached loss, which "
            "processes a large batch in small pieces."
        )
    if getattr(exc, "person_readable", False) or type(exc).__name__ in (
        "TrainingError",
        "ModelLoadError",
        "StoreError",
        "EvaluationError",
    ):
        return text
    return (
        f"The job stopped with an unexpected error ({type(exc).__name__}: {text or 'no details'})."
    )


class JobManager:
    """Runs one job at a time in a worker thread; remembers the last ``keep`` jobs.

    Given a ``store``, it marks runs that a previous process left ``queued``/``running`` as
    ``interrupted`` when created (that process died, so they will never finish).
    """

    def __init__(
        self,
        store: Store | None = None,
        keep: int = 20,
        niceness: int = 0,
    ):
        """``niceness``: the nice value jobs run at, so web requests come first on a busy CPU
        (see :mod:`mmdemo.training.priority`); 0 leaves the thread's priority alone."""
        self._niceness = niceness
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue | None = None
        """Set by :meth:`run_jobs_here`: jobs then run on that thread instead of a new one."""
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._active: str | None = None
        self._keep = max(1, int(keep))
        self.interrupted_at_start = store.mark_interrupted_runs() if store is not None else 0

    # -- starting -------------------------------------------------------------------------------
    def start(
        self,
        fn: Callable[[JobContext], Any],
        *,
        kind: str | None = None,
        description: str | None = None,
    ) -> str:
        """Start ``fn`` in the background and return its job id; :class:`JobBusy` if one runs."""
        kind = kind or getattr(fn, "kind", "job")
        description = description or getattr(fn, "description", "") or kind
        with self._lock:
            if self._active is not None:
                active = self._jobs[self._active]
                started = time.strftime("%H:%M:%S", time.localtime(active.started_at))
                raise JobBusy(
                    f"A {active.kind} job is already running ({active.description}, started "
                    f"{started}). Wait for it to finish or cancel it, then start again."
                )
            job_id = uuid.uuid4().hex[:12]
            context = JobContext(job_id, threading.Event(), ProgressBoard(phase="starting"))
            job = _Job(job_id, kind, description, context, time.time())
            self._jobs[job_id] = job
            self._active = job_id
            self._forget_old()
            if self._queue is not None:
                self._queue.put((job, fn))
                return job_id
            job.thread = threading.Thread(
                target=self._run, args=(job, fn), name=f"mmdemo-job-{job_id}", daemon=True
            )
        job.thread.start()
        return job_id

    def runs_jobs_here(self) -> bool:
        """Whether a thread is in :meth:`run_jobs_here` (new jobs run there)."""
        with self._lock:
            return self._queue is not None

    def run_jobs_here(self, stop: threading.Event | None = None, poll_s: float = 0.5) -> None:
        """Run every job started from now on on the calling thread, until ``stop`` is set.

        The web app calls this on the main thread once the server runs in the background: torch's
        OpenMP runs small CPU ops several times slower from a second thread once the main thread
        has used torch (measured ~3× here), so a CPU finetune trains fastest on the main thread.
        """
        with self._lock:
            self._queue = queue.SimpleQueue()
        try:
            while stop is None or not stop.is_set():
                try:
                    job, fn = self._queue.get(timeout=poll_s)
                except queue.Empty:
                    continue
                self._run(job, fn)
        finally:
            with self._lock:
                self._queue = None

    def _run(self, job: _Job, fn: Callable[[JobContext], Any]) -> None:
        state, message, result = "finished", "", None
        try:
            lower_cpu_priority(self._niceness)
            result = fn(job.context)
            status = getattr(result, "status", None)
            if status in _FINAL_RESULT_STATES:
                state = status
            elif job.context.stop_event.is_set():
                state = "cancelled"
            message = str(getattr(result, "message", "") or "")
        except BaseException as exc:  # noqa: BLE001 - a job's failure must never kill the manager
            log.exception("job %s (%s) failed", job.job_id, job.kind)
            state, message = "failed", describe_error(exc)
        if not message:
            message = {"finished": "Done.", "cancelled": "Cancelled."}.get(state, state)
        with self._lock:
            job.state, job.message, job.result = state, message, result
            job.finished_at = time.time()
            if self._active == job.job_id:
                self._active = None
        job.context.progress.update(phase=state, message=message)
        job.done.set()

    def _forget_old(self) -> None:
        while len(self._jobs) > self._keep:
            oldest = next(iter(self._jobs))
            if oldest == self._active:
                break
            del self._jobs[oldest]

    # -- watching ---------------------------------------------------------------------------------
    def active_job_id(self) -> str | None:
        """The id of the running job, if any."""
        with self._lock:
            return self._active

    def is_busy(self) -> bool:
        return self.active_job_id() is not None

    def status(self, job_id: str | None = None) -> JobSnapshot | None:
        """Snapshot of ``job_id``, or of the running (else the latest) job; ``None`` if unknown."""
        with self._lock:
            if job_id is None:
                job_id = self._active or (next(reversed(self._jobs)) if self._jobs else None)
            job = self._jobs.get(job_id) if job_id else None
            if job is None:
                return None
            fields = (job.state, job.finished_at, job.message, job.result)
        state, finished_at, message, result = fields
        progress = job.context.progress.snapshot()
        return JobSnapshot(
            job_id=job.job_id,
            kind=job.kind,
            description=job.description,
            state=state,
            started_at=job.started_at,
            finished_at=finished_at,
            message=message or str(progress.get("message", "")),
            progress=progress,
            result=result,
            cancel_requested=job.context.stop_event.is_set(),
        )

    def jobs(self) -> list[JobSnapshot]:
        """Snapshots of the remembered jobs, newest first."""
        with self._lock:
            ids = list(reversed(self._jobs))
        return [snap for snap in (self.status(i) for i in ids) if snap is not None]

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot | None:
        """Block until the job ends (or ``timeout``); return its snapshot (CLI and tests)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            job.done.wait(timeout)
        return self.status(job_id)

    # -- stopping ---------------------------------------------------------------------------------
    def cancel(self, job_id: str | None = None) -> bool:
        """Ask the running job (or ``job_id`` if it runs) to stop; ``False`` if nothing runs."""
        with self._lock:
            target = job_id or self._active
            job = self._jobs.get(target) if target else None
            if job is None or job.state != "running":
                return False
            job.context.stop_event.set()
        job.context.progress.update(message="Cancelling: stops after the current step.")
        return True


class BackgroundWork:
    """Low-priority chores (e.g. encoding a collection with a new model), one at a time, in a
    daemon thread of their own at the jobs' nice value, so page requests come first.

    Unlike :class:`JobManager` it shows no progress and refuses nothing: :meth:`start` queues
    the chore behind the ones waiting. A chore's failure is logged and forgotten; :meth:`wait`
    blocks until every chore started so far is done (tests, benches, the CLI).
    """

    def __init__(self, niceness: int = 0):
        self._niceness = niceness
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.done: list[str] = []
        """Names of the chores finished (last 20), for tests and the log."""
        self.failed: list[str] = []

    def start(self, fn: Callable[[], Any], name: str = "chore") -> None:
        """Run ``fn()`` in the background after the chores already waiting."""
        with self._lock:
            self._pending += 1
            self._queue.put((name, fn))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="mmdemo-background", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        lower_cpu_priority(self._niceness)
        while True:
            try:
                name, fn = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                fn()
                outcome = self.done
            except BaseException:  # noqa: BLE001 - a chore never kills the worker
                log.exception("background chore %s failed", name)
                outcome = self.failed
            with self._lock:
                outcome.append(name)
                del outcome[:-20]
                self._pending -= 1
                self._idle.notify_all()

    def busy(self) -> bool:
        """Whether a chore runs or waits."""
        with self._lock:
            return self._pending > 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no chore runs or waits (or ``timeout``); ``True`` when idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)
