"""Rounds of finetuning: a run that continues from an earlier finished run, and the recall@1 of a
collection's runs over rounds.

A run can start from the model an earlier finished run saved instead of the base model
(``run_training(..., start_from="run-1")``). It keeps the real base model as its ``base_model``
(so the card still says which Hub model it derives from, and Compare still measures against it),
and records where it started in its ``config.json`` (and the store's copy of it)::

    "start_from": {"run": "run-1", "model_dir": ".../runs/run-1/model",
                   "lineage": ["run-1"], "round": 2}

``lineage`` is the chain of runs from the first round to the parent, ``round`` the run's place
in it (a run from the base model is round 1; the base model itself is round 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mmdemo.data.store import Run, Store, StoreError

FINISHED = "finished"


class StartError(ValueError):
    """The run to start from cannot be used; ``str(exc)`` is for people."""

    person_readable = True


@dataclass(frozen=True)
class StartPoint:
    """Where a run starts: an earlier run's saved model, with the real base model behind it."""

    run: str
    model_dir: str
    base_model: str
    lineage: tuple[str, ...]
    """Runs from the first round up to and including ``run``."""

    @property
    def round(self) -> int:
        """The round of a run that starts here (the base model is round 0)."""
        return len(self.lineage) + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "model_dir": self.model_dir,
            "lineage": list(self.lineage),
            "round": self.round,
        }


def run_config(run: Run) -> dict[str, Any]:
    """The run's recorded ``config.json`` (the store's copy); ``{}`` when unreadable."""
    try:
        data = json.loads(run.config_json or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def started_from(run: Run) -> str | None:
    """The run this one started from, or ``None`` (it started from the base model)."""
    start = run_config(run).get("start_from")
    if isinstance(start, dict) and start.get("run"):
        return str(start["run"])
    return None


def lineage(run: Run) -> tuple[str, ...]:
    """The runs before this one in its chain of rounds, first round first (empty: from base)."""
    return config_lineage(run_config(run))


def config_lineage(config: dict[str, Any]) -> tuple[str, ...]:
    """:func:`lineage` from a run's recorded ``config.json``."""
    start = config.get("start_from")
    if isinstance(start, dict) and start.get("run"):
        chain = start.get("lineage")
        if isinstance(chain, list) and chain and chain[-1] == start["run"]:
            return tuple(str(name) for name in chain)
        return (str(start["run"]),)
    return ()


def resolve_start(store: Store, name: str, collection_id: int | None = None) -> StartPoint:
    """The start point of a run continuing from ``name``: a finished run that saved a model.

    With ``collection_id``, the run must have trained on that collection: a run of another
    collection may have trained on this one's eval images and would inflate its metrics.
    """
    from mmdemo.retrieval.compare import run_model_dir

    try:
        run = store.get_run(name)
    except StoreError as exc:
        raise StartError(f"No run named {name!r} to start from.") from exc
    if collection_id is not None and run.collection_id != collection_id:
        raise StartError(
            f"The run {name!r} trained on another collection; start from a run of this one "
            "(its training pairs could be this collection's eval pairs)."
        )
    if run.status != FINISHED:
        raise StartError(f"The run {name!r} is {run.status}; start from a finished run.")
    folder = run_model_dir(run.path)
    if folder is None:
        raise StartError(f"The run {name!r} saved no model to start from.")
    return StartPoint(run.name, str(folder), run.base_model, (*lineage(run), run.name))


def start_choices(store: Store, collection_id: int) -> list[tuple[str, str | None]]:
    """``(label, run name)`` for a "start from" picker: the base model (``None``), then every
    finished run of the collection that saved a model, newest first."""
    from mmdemo.retrieval.compare import run_model_dir

    choices: list[tuple[str, str | None]] = [("Base model", None)]
    for run in store.list_runs(collection_id):
        if run.status == FINISHED and run_model_dir(run.path) is not None:
            parent = started_from(run)
            label = f"{run.name} (round {len(lineage(run)) + 1}" + (
                f", from {parent})" if parent else ")"
            )
            choices.append((label, run.name))
    return choices


@dataclass(frozen=True)
class RoundPoint:
    """One point of the recall@1-over-rounds plot."""

    order: int
    """0 for the base model, then 1, 2, … in the order the runs were made."""
    run: str | None
    """The run's name; ``None`` for the base model."""
    parent: str | None
    """The run it started from (``None``: from the base model, or the base model itself)."""
    round: int
    """Place in its chain of rounds (base 0, a run from base 1, …)."""
    t2i: float | None
    i2t: float | None
    created_at: float | None = None


def _recall(metrics: dict | None, which: str, direction: str) -> float | None:
    value = ((metrics or {}).get(which) or {}).get(direction) or {}
    found = value.get("recall@1") if isinstance(value, dict) else None
    return float(found) if found is not None else None


def round_points(
    store: Store,
    collection_id: int,
    base_model: str | None = None,
    read_metrics: Any = None,
) -> list[RoundPoint]:
    """Eval recall@1 (text→image and image→text) of each finished run of the collection, oldest
    first, after a point for the base model (measured by the newest of those runs).

    ``base_model``: only runs on that base model (runs on another base measure something else);
    ``None``: all. ``read_metrics(run)`` reads a run's metrics (default: the store's copy).
    """
    read = read_metrics or _stored_metrics
    runs = [
        r
        for r in reversed(store.list_runs(collection_id))
        if r.status == FINISHED and (base_model is None or r.base_model == base_model)
    ]
    measured = [(run, read(run) or {}) for run in runs]
    measured = [(run, m) for run, m in measured if m.get("finetuned")]
    if not measured:
        return []
    base_metrics = next((m for _, m in reversed(measured) if m.get("base")), {})
    points = [
        RoundPoint(
            0,
            None,
            None,
            0,
            _recall(base_metrics, "base", "t2i"),
            _recall(base_metrics, "base", "i2t"),
        )
    ]
    for order, (run, metrics) in enumerate(measured, start=1):
        points.append(
            RoundPoint(
                order,
                run.name,
                started_from(run),
                len(lineage(run)) + 1,
                _recall(metrics, "finetuned", "t2i"),
                _recall(metrics, "finetuned", "i2t"),
                run.created_at,
            )
        )
    return points


def _stored_metrics(run: Run) -> dict | None:
    try:
        data = json.loads(run.metrics_json) if run.metrics_json else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
