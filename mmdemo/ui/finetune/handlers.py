"""The Finetune tab's handlers (the layout and the wiring are in :mod:`mmdemo.ui.finetune.layout`).

Handlers are plain functions ``handler(services, ...)`` that the tests call directly. Start hands a
:class:`~mmdemo.training.run.TrainingJob` to the process-wide job manager and returns at once: the
run
lives in a worker thread, never in a request, so closing or reloading the page does not stop it.
The tab always shows the manager's running job, else its latest one, so every session (and a
reloaded page) re-attaches just by polling. :func:`poll`, called by the app's one timer, reads a
snapshot and returns ``gr.skip()`` for every part that did not change; it also turns Start off
while a run goes (Cancel on) and back on when it ends, on every page.

The knobs live in :mod:`mmdemo.ui.finetune.knobs`, the collection part (summary, eval-split
offer, plan of the next run) in :mod:`mmdemo.ui.finetune.collection`; both are re-exported here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from mmdemo.data.store import StoreError
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.training.jobs import JobBusy, JobSnapshot
from mmdemo.training.run import TrainingError, TrainingJob, detect_precision
from mmdemo.ui.common import partial_view
from mmdemo.ui.finetune.collection import (
    EVAL_SHARE,
    MAKE_SPLIT_LABEL,
    CollectionView,
    PickView,
    SplitView,
    collection_summary,
    collection_view,
    make_eval_split,
    pick_collection,
    plan_line,
    refuse,
    split_offer,
)
from mmdemo.ui.finetune.knobs import (
    LOSS_CHOICES,
    SAMPLER_CHOICES,
    Knobs,
    build_config,
    default_knobs,
    parse_dims,
    uses_mini_batches,
)
from mmdemo.ui.finetune.rounds import rounds_view, start_run
from mmdemo.ui.finetune.view import (
    NO_METRICS,
    format_status,
    loss_frame,
    metrics_frame,
    phase_label,
    progress_html,
    run_label,
    run_metrics,
    run_title,
    runs_frame,
)
from mmdemo.ui.identity import LoginRequired, require_login

__all__ = [
    "EVAL_SHARE",
    "LOSS_CHOICES",
    "MAKE_SPLIT_LABEL",
    "SAMPLER_CHOICES",
    "Action",
    "CollectionView",
    "FinetuneView",
    "Knobs",
    "PickView",
    "SplitView",
    "build_config",
    "cancel_finetune",
    "collection_summary",
    "collection_view",
    "default_knobs",
    "device_markdown",
    "make_eval_split",
    "parse_dims",
    "pick_collection",
    "plan_line",
    "poll",
    "refresh",
    "show_run",
    "split_offer",
    "start_finetune",
    "uses_mini_batches",
]


# -- the tab's fixed texts -------------------------------------------------------------------------
def device_markdown(services: Services) -> str:
    """Where a finetune runs (device, precision) and on which base model."""
    found = detect_precision()
    device = "GPU (CUDA)" if found["device"] == "cuda" else "CPU"
    text = (
        f"Runs on **{device}** in **{found['precision']}** · base model **{services.model.label}**"
    )
    if found["device"] == "cpu" and not services.model.is_tiny:
        text += " · ⚠️ a full-size model trains slowly on a CPU: a GPU is recommended"
    return text


# -- past runs -----------------------------------------------------------------------------------
def show_run(services: Services, name: str | None) -> tuple[str, pd.DataFrame]:
    """The metrics panel for a past run (title, before/after table)."""
    try:
        run = services.store.get_run(str(name or ""))
    except StoreError:
        return f"⚠️ No run named “{md(name)}”.", metrics_frame(None)
    metrics = run_metrics(run)
    title = run_title(run)
    if not metrics:
        title += "\n\n*This run has no metrics.*"
    return title, metrics_frame(metrics)


# -- the live view ---------------------------------------------------------------------------------
class FinetuneView(NamedTuple):
    """Every output the timer updates, in the order of the event outputs."""

    status: Any
    bar: Any
    loss: Any
    metrics_title: Any
    metrics: Any
    runs: Any
    start: Any
    cancel: Any
    plan: Any
    start_from: Any
    """The "Start from" picker's choices (redrawn when a run ends: a new run to start from)."""
    rounds: Any
    """The recall@1-over-runs plot and its list (:mod:`mmdemo.ui.finetune.rounds`)."""
    lineage: Any
    seen: Any


def _keys(snap: JobSnapshot | None) -> dict[str, Any]:
    """What each part of the view was drawn from (compared between ticks)."""
    if snap is None:
        return {"job": None}
    p = snap.progress
    metrics = p.get("metrics") or {}
    job = snap.job_id
    return {
        "job": job,
        "status": [job, snap.state, p.get("updated_at"), snap.cancel_requested, snap.message],
        "loss": [job, len(p.get("loss_history") or [])],
        "metrics": [job, snap.state, [bool(metrics.get(k)) for k in ("base", "finetuned")]],
        "runs": [job, snap.state, p.get("phase"), p.get("run_name")],
        "start": [snap.running],
        "cancel": [snap.running and not snap.cancel_requested],
        "plan": [job, snap.state],
    }


def _job_metrics_panel(services: Services, snap: JobSnapshot) -> tuple[str, pd.DataFrame] | None:
    name = snap.progress.get("run_name")
    if not name:
        return None
    try:
        run = services.store.get_run(name)
    except StoreError:
        return None
    metrics = snap.progress.get("metrics") or run_metrics(run)
    title = run_title(run)
    if snap.running:
        title = f"**Run {run_label(name)}** · {phase_label(snap).lower()}"
        if not (metrics or {}).get("finetuned"):
            title += " · the finetuned column fills in when training ends"
    return title, metrics_frame(metrics)


def poll(
    services: Services,
    seen: dict | None,
    collection: str | None = None,
    knobs: Knobs | None = None,
) -> FinetuneView:
    """The timer's tick: the current job's view, with ``gr.skip()`` for what did not change.

    ``seen`` is what this session drew last (``None``: draw everything). Start is on unless a
    job runs; Cancel is on while one runs and no cancel was asked. Given the tab's
    ``collection`` and ``knobs``, the plan of the next run is redrawn when a job ends (the run
    just measured the speed).
    """
    snap = services.jobs.status()
    now = _keys(snap)
    if seen is not None and seen.get("job") == now["job"] and snap is None:
        return partial_view(FinetuneView, seen=seen)

    def changed(part: str) -> bool:
        return seen is None or seen.get("job") != now["job"] or seen.get(part) != now.get(part)

    skip = gr.skip()
    panel = None
    if snap is not None and changed("metrics"):
        panel = _job_metrics_panel(services, snap)
    if panel is None and seen is None:
        panel = _latest_run_panel(services)
    running = snap is not None and snap.running
    ended = seen is not None and snap is not None and not snap.running and changed("plan")
    rounds = rounds_view(services, collection, None) if ended and collection else None
    return FinetuneView(
        status=format_status(snap) if changed("status") else skip,
        bar=progress_html(snap) if changed("status") else skip,
        loss=loss_frame(snap) if changed("loss") else skip,
        metrics_title=panel[0] if panel else skip,
        metrics=panel[1] if panel else skip,
        runs=runs_frame(services) if changed("runs") else skip,
        start=gr.update(interactive=not running) if changed("start") else skip,
        cancel=(
            gr.update(interactive=running and not snap.cancel_requested)
            if changed("cancel")
            else skip
        ),
        plan=plan_line(services, collection, knobs) if ended and knobs is not None else skip,
        start_from=rounds.start_from if rounds else skip,
        rounds=rounds.plot if rounds else skip,
        lineage=rounds.lineage if rounds else skip,
        seen=now,
    )


def _latest_run_panel(services: Services) -> tuple[str, pd.DataFrame]:
    runs = services.store.list_runs()
    if not runs:
        return NO_METRICS, metrics_frame(None)
    return show_run(services, runs[0].name)


def refresh(services: Services) -> FinetuneView:
    """The whole view, drawn afresh (page load: re-attaches to the running or latest job)."""
    return poll(services, None)


# -- actions ---------------------------------------------------------------------------------------
class Action(NamedTuple):
    """Outputs of Start and Cancel: a message line, then the whole view."""

    message: str
    view: FinetuneView


def start_finetune(
    services: Services,
    collection: str | None,
    knobs: Knobs,
    profile: Any = None,
    start_from: str | None = None,
) -> Action:
    """Check the knobs and start the finetune in the background; returns at once.

    ``start_from``: the "Start from" picker's value (``"base"`` or ``"run:NAME"``): a finished
    run to continue from. When the run ends its collection is encoded with the new model in the
    background (:meth:`Services.after_finetune`).

    A job already running (from any session) gives a message, not a second job. On a Space only
    a logged-in visitor may start one.
    """
    try:
        require_login(profile, services.settings)
        if not collection:
            raise TrainingError("Choose a collection first.")
        if services.store.find_collection(collection) is None:
            raise TrainingError(f"No collection named {collection!r}.")
        config = build_config(knobs, lambda: _embedding_dim(services))
        job = TrainingJob(
            services.store,
            services.settings,
            collection,
            config,
            base_model=services.model.spec,
            gpu=services.gpu,
            start_from=_start_from(services, collection, start_from),
            after=services.after_finetune,
        )
        services.jobs.start(job)
    except LoginRequired as exc:
        return Action(refuse(exc.message), refresh(services))
    except (TrainingError, JobBusy) as exc:
        return Action(refuse(str(exc)), refresh(services))
    return Action(f"Started a finetune on “{md(collection)}”.", refresh(services))


def _start_from(services: Services, collection: str, value: str | None) -> str | None:
    """The run to continue from, checked now (a message at Start, not a failed run)."""
    from mmdemo.training.rounds import StartError, resolve_start

    name = start_run(value)
    if name is None:
        return None
    try:
        found = services.store.find_collection(collection)
        resolve_start(services.store, name, found.id if found else None)
    except StartError as exc:
        raise TrainingError(str(exc)) from exc
    return name


def _embedding_dim(services: Services) -> int | None:
    try:
        return services.models.get(services.model.spec).get_embedding_dimension()
    except Exception as exc:  # noqa: BLE001 - any load failure becomes a message
        raise TrainingError(f"Could not read the base model's size: {exc}") from exc


def cancel_finetune(services: Services, profile: Any = None) -> Action:
    """Ask the running finetune to stop after its current step (the run is kept, cancelled)."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return Action(refuse(exc.message), refresh(services))
    if services.jobs.cancel():
        message = "Cancelling: the run stops after the current step and is kept as cancelled."
    else:
        message = "Nothing is running."
    return Action(message, refresh(services))
