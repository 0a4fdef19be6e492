"""What a running job reports to and what it is given: the progress board and the job context.

Its own module so that the training run, the job manager and the ZeroGPU runner can all import
it without importing each other.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any


class ProgressBoard:
    """Thread-safe status of one job: the job writes fields, pollers read snapshots."""

    def __init__(self, **initial: Any):
        self._lock = threading.Lock()
        self._fields: dict[str, Any] = dict(initial)
        self._series: dict[str, list[Any]] = {}

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._fields.update(fields)
            self._fields["updated_at"] = time.time()

    def append(self, key: str, item: Any, max_len: int = 5000) -> None:
        """Add to a series (e.g. the loss curve); the oldest half is thinned beyond ``max_len``."""
        with self._lock:
            series = self._series.setdefault(key, [])
            series.append(item)
            if len(series) > max_len:
                series[:] = series[: len(series) // 2 : 2] + series[len(series) // 2 :]

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._fields.get(key, default)

    def snapshot(self) -> dict[str, Any]:
        """A copy of every field and series, safe to hand to another thread."""
        with self._lock:
            data = copy.deepcopy(self._fields)
            for key, series in self._series.items():
                data[key] = list(series)
        return data


@dataclass
class JobContext:
    """What a running job gets: its id, a stop event to honour, a board to publish on."""

    job_id: str
    stop_event: threading.Event
    progress: ProgressBoard

    def should_stop(self) -> bool:
        return self.stop_event.is_set()
