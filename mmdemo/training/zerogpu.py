"""Run a finetune on a ZeroGPU Space: inside a ``@spaces.GPU`` generator, progress relayed back.

On ZeroGPU the GPU exists only inside a function decorated with ``spaces.GPU``, which the Space
runs in a forked child process for at most ``duration`` seconds. So a finetune there:

- runs in one such call, with a duration taken from the time budget (:func:`gpu_duration`);
- saves the model and writes the run folder and the store *inside* the call (``run_training``
  does both before it returns): a forked child's weights never reach the parent;
- opens its own :class:`~mmdemo.data.store.Store` in the child (a SQLite connection must not cross a
  fork; WAL lets both processes write the same database);
- is a generator that yields progress snapshots (plain data, picklable) every ``poll_s``, which
  the job's worker thread relays to its :class:`~mmdemo.training.board.ProgressBoard`, and finally
  the
  :class:`~mmdemo.training.run.RunResult`;
- learns about a cancel through a flag file, since a ``threading.Event`` does not cross a fork.

Anywhere else (no ``spaces`` package, or not on a Space) :func:`gpu_runner` returns ``None`` and
the job calls ``run_training`` in its thread as usual; that path also serves a regular GPU Space.
The ``spaces`` package is provided by the Space and is not a requirement of this project.
"""

from __future__ import annotations

import importlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmdemo.settings import Settings
from mmdemo.training.board import JobContext, ProgressBoard

MARGIN_S = 180.0
"""Seconds added to the training budget: loading, the two evaluations and saving the model."""
MAX_DURATION_S = 3600
_SERIES = ("loss_history",)


def gpu_duration(config: Any) -> int:
    """Seconds to ask ZeroGPU for: the training time budget plus :data:`MARGIN_S`."""
    from mmdemo.training.run import TrainConfig

    budget = float((config or TrainConfig()).max_minutes) * 60.0
    return int(min(MAX_DURATION_S, budget + MARGIN_S))


def _spaces_module() -> Any | None:
    try:
        return importlib.import_module("spaces")
    except ImportError:
        return None


class _FlagStop:
    """A stop event that also crosses a fork: set when the flag file exists."""

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.Event()

    def is_set(self) -> bool:
        return self._local.is_set() or self.path.exists()

    def set(self) -> None:
        self._local.set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()


def train_in_gpu_call(
    settings: Settings,
    collection: str,
    config: Any,
    run_name: str | None,
    base_model: str | None,
    stop_flag: str,
    poll_s: float = 1.0,
    start_from: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The body of the GPU call: train in a thread of this process and yield its progress.

    Yields ``{"progress": snapshot}`` while training, then ``{"result": RunResult}`` or
    ``{"error": exception}``; everything yielded is picklable.
    """
    from mmdemo.data.store import Store
    from mmdemo.training.run import run_training

    board = ProgressBoard(phase="starting")
    outcome: dict[str, Any] = {}

    def work() -> None:
        store = Store(settings.db_path, settings.max_caption_chars)
        try:
            outcome["result"] = run_training(
                store,
                settings,
                collection,
                config,
                run_name=run_name,
                base_model=base_model,
                status_sink=board,
                stop_event=_FlagStop(Path(stop_flag)),
                start_from=start_from,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which reports it
            outcome["error"] = exc
        finally:
            store.close()

    worker = threading.Thread(target=work, name="mmdemo-gpu-train", daemon=True)
    worker.start()
    last = None
    while worker.is_alive():
        worker.join(poll_s)
        snap = board.snapshot()
        if snap.get("updated_at") != last:
            last = snap.get("updated_at")
            yield {"progress": snap}
    yield {"progress": board.snapshot()}
    yield outcome


def _relay(board: ProgressBoard, snap: dict[str, Any]) -> None:
    """Copy a snapshot from the GPU call onto the job's board (series replaced, not appended)."""
    board.update(**{k: v for k, v in snap.items() if k not in _SERIES and k != "updated_at"})
    for key in _SERIES:
        if key in snap:
            with board._lock:  # noqa: SLF001 - same package; the board has no public replace
                board._series[key] = list(snap[key])  # noqa: SLF001


def gpu_runner(settings: Settings) -> Callable[..., Any] | None:
    """A ``run(job, ctx) -> RunResult`` that trains inside ``@spaces.GPU`` on a Space, else
    ``None`` (no ``spaces`` package, or not on a Space: the thread path is used)."""
    if not getattr(settings, "space_id", None):
        return None
    spaces = _spaces_module()
    if spaces is None:
        return None
    decorated: dict[int, Callable[..., Iterator[dict[str, Any]]]] = {}

    def run(job: Any, ctx: JobContext) -> Any:
        duration = gpu_duration(job.config)
        if duration not in decorated:
            decorated[duration] = spaces.GPU(duration=duration)(train_in_gpu_call)
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        flag = settings.tmp_dir / f"stop-{uuid.uuid4().hex[:12]}"
        ctx.progress.update(phase="waiting for GPU", message=f"Asking ZeroGPU for {duration} s.")
        outcome: dict[str, Any] = {}
        try:
            for item in decorated[duration](
                job.settings,
                job.collection,
                job.config,
                job.run_name,
                job.base_model,
                str(flag),
                start_from=getattr(job, "start_from", None),
            ):
                if "progress" in item:
                    _relay(ctx.progress, item["progress"])
                else:
                    outcome = item
                if ctx.stop_event.is_set() and not flag.exists():
                    flag.touch()
        finally:
            flag.unlink(missing_ok=True)
        if "error" in outcome:
            raise outcome["error"]
        if "result" not in outcome:
            raise RuntimeError("The GPU call ended without a result (time limit reached?).")
        return outcome["result"]

    return run
