"""The Finetune tab's handlers (the layout and the wiring are in :mod:`mmdemo.ui.finetune`).

Handlers are plain functions ``handler(services, ...)`` that the tests call directly. Start hands a
:class:`~mmdemo.jobs.TrainingJob` to the process-wide job manager and returns at once: the run
lives in a worker thread, never in a request, so closing or reloading the page does not stop it.
The tab always shows the manager's running job, else its latest one, so every session (and a
reloaded page) re-attaches just by polling. :func:`poll`, called by the app's one timer, reads a
snapshot and returns ``gr.skip()`` for every part that did not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from mmdemo.jobs import JobBusy, JobSnapshot, TrainingJob
from mmdemo.services import Services
from mmdemo.store import StoreError
from mmdemo.training import TrainConfig, TrainingError, default_config, detect_precision
from mmdemo.ui.common import collection_names
from mmdemo.ui.finetune_view import (
    NO_METRICS,
    format_status,
    loss_frame,
    metrics_frame,
    phase_label,
    progress_html,
    run_metrics,
    run_title,
    runs_frame,
)
from mmdemo.ui.identity import LoginRequired, require_login

LOSS_CHOICES = [
    ("MNRL: text → image", "mnrl"),
    ("Symmetric MNRL: text ↔ image", "symmetric"),
    ("Cached MNRL: big batches in small pieces", "cached"),
    ("Cached symmetric MNRL", "cached-symmetric"),
]
SAMPLER_CHOICES = [
    ("auto", "auto"),
    ("no duplicates", "no_duplicates"),
    ("plain (duplicates masked)", "batch_sampler"),
]


# -- knobs -----------------------------------------------------------------------------------------
class Knobs(NamedTuple):
    """The tab's knobs, in the order of the Start button's inputs (``None``: a cleared box)."""

    epochs: float | None
    max_minutes: float | None
    batch_size: float | None
    lr: float | None
    warmup_ratio: float | None
    seed: float | None
    loss: str
    mini_batch_size: float | None
    matryoshka: bool
    matryoshka_dims: str
    use_hard_negatives: bool
    sampler: str
    scale: float | None


def default_knobs(tiny: bool = True) -> Knobs:
    """The knobs' start values: a short finetune tuned for the tiny model, or gentle defaults
    for a pretrained base model (:func:`mmdemo.training.default_config`)."""
    c = default_config(tiny)
    dims = ", ".join(str(d) for d in c.matryoshka_dims)
    return Knobs(
        c.epochs,
        c.max_minutes,
        c.batch_size,
        c.lr,
        c.warmup_ratio,
        c.seed,
        c.loss,
        c.mini_batch_size,
        bool(c.matryoshka_dims),
        dims,
        c.use_hard_negatives,
        c.sampler,
        c.scale,
    )


def _required(value: float | None, what: str) -> float:
    if value is None or value == "":
        raise TrainingError(f"Fill in the {what}.")
    return float(value)


def parse_dims(text: str | None, embedding_dim: Callable[[], int | None] | None) -> tuple:
    """Matryoshka dimensions from ``"512, 256"``; empty: full, ½, ¼ and ⅛ of the model's."""
    parts = [p for p in (text or "").replace(";", ",").replace(" ", ",").split(",") if p]
    if parts:
        try:
            dims = sorted({int(p) for p in parts}, reverse=True)
        except ValueError as exc:
            raise TrainingError(
                "Matryoshka dimensions are whole numbers, e.g. 64, 32, 16."
            ) from exc
        if dims[-1] < 1:
            raise TrainingError("Matryoshka dimensions must be more than 0.")
        return tuple(dims)
    dim = embedding_dim() if embedding_dim is not None else None
    if not dim:
        raise TrainingError("Write the Matryoshka dimensions (the model's size is unknown).")
    return tuple(d for d in (dim, dim // 2, dim // 4, dim // 8) if d >= 1)


def build_config(
    knobs: Knobs, embedding_dim: Callable[[], int | None] | None = None
) -> TrainConfig:
    """A checked :class:`TrainConfig` from the knobs; :class:`TrainingError` says what is wrong.

    ``embedding_dim`` is asked only when Matryoshka is on and no dimensions are written.
    """
    config = TrainConfig(
        epochs=_required(knobs.epochs, "number of epochs"),
        max_minutes=_required(knobs.max_minutes, "time budget"),
        batch_size=int(_required(knobs.batch_size, "batch size")),
        lr=_required(knobs.lr, "learning rate"),
        warmup_ratio=_required(knobs.warmup_ratio, "warm-up"),
        seed=int(_required(knobs.seed, "seed")),
        loss=knobs.loss,
        use_hard_negatives=bool(knobs.use_hard_negatives),
        mini_batch_size=int(_required(knobs.mini_batch_size, "mini-batch size")),
        sampler=knobs.sampler,
        scale=_required(knobs.scale, "scale"),
    )
    if knobs.matryoshka:
        config.matryoshka_dims = parse_dims(knobs.matryoshka_dims, embedding_dim)
    if config.loss.startswith("cached") and config.mini_batch_size < 1:
        raise TrainingError("The mini-batch size must be at least 1.")
    return config.validate()


def uses_mini_batches(loss: str | None) -> bool:
    """Whether the loss splits batches (then the mini-batch size box is shown)."""
    return bool(loss) and str(loss).startswith("cached")


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


def collection_view(services: Services, name: str | None) -> tuple[Any, str]:
    """The collection dropdown (fresh choices, ``name`` picked) and its summary line."""
    names = collection_names(services)
    value = name if name in names else (names[0] if names else None)
    return gr.update(choices=names, value=value), collection_summary(services, value)


def collection_summary(services: Services, name: str | None) -> str:
    """How much a collection holds for training: its splits and labeled negatives."""
    if not name:
        return "*No collection yet: create one in the Curate tab.*"
    found = services.store.find_collection(name)
    if found is None:
        return f"⚠️ No collection named {name!r}."
    stats = services.store.collection_stats(found.id)
    train, evals = stats.splits.get("train", 0), stats.splits.get("eval", 0)
    text = (
        f"**{train:,}** train pairs · **{evals:,}** eval pairs · {stats.negatives:,} hard negatives"
    )
    if train < 2:
        text += " · ⚠️ a finetune needs at least 2 train pairs"
    elif evals == 0:
        text += " · ⚠️ the eval split is empty, so the finetune cannot be measured"
    return text


# -- past runs -----------------------------------------------------------------------------------
def show_run(services: Services, name: str | None) -> tuple[str, pd.DataFrame]:
    """The metrics panel for a past run (title, before/after table)."""
    try:
        run = services.store.get_run(str(name or ""))
    except StoreError:
        return f"⚠️ No run named {name!r}.", metrics_frame(None)
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
    cancel: Any
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
        "cancel": [snap.running and not snap.cancel_requested],
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
        title = f"**Run `{name}`** · {phase_label(snap).lower()}"
        if not (metrics or {}).get("finetuned"):
            title += " · the finetuned column fills in when training ends"
    return title, metrics_frame(metrics)


def poll(services: Services, seen: dict | None) -> FinetuneView:
    """The timer's tick: the current job's view, with ``gr.skip()`` for what did not change.

    ``seen`` is what this session drew last (``None``: draw everything).
    """
    snap = services.jobs.status()
    now = _keys(snap)
    if seen is not None and seen.get("job") == now["job"] and snap is None:
        return FinetuneView(*([gr.skip()] * 7), seen)

    def changed(part: str) -> bool:
        return seen is None or seen.get("job") != now["job"] or seen.get(part) != now.get(part)

    skip = gr.skip()
    panel = None
    if snap is not None and changed("metrics"):
        panel = _job_metrics_panel(services, snap)
    if panel is None and seen is None:
        panel = _latest_run_panel(services)
    running = snap is not None and snap.running and not snap.cancel_requested
    return FinetuneView(
        status=format_status(snap) if changed("status") else skip,
        bar=progress_html(snap) if changed("status") else skip,
        loss=loss_frame(snap) if changed("loss") else skip,
        metrics_title=panel[0] if panel else skip,
        metrics=panel[1] if panel else skip,
        runs=runs_frame(services) if changed("runs") else skip,
        cancel=gr.update(interactive=running) if changed("cancel") else skip,
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
) -> Action:
    """Check the knobs and start the finetune in the background; returns at once.

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
        )
        services.jobs.start(job)
    except LoginRequired as exc:
        return Action(_refuse(exc.message), refresh(services))
    except (TrainingError, JobBusy) as exc:
        return Action(_refuse(str(exc)), refresh(services))
    return Action(f"Started a finetune on **{collection}**.", refresh(services))


def _refuse(text: str) -> str:
    """Show ``text`` as a toast and return it for the message line."""
    gr.Warning(text)
    return f"⚠️ {text}"


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
        return Action(_refuse(exc.message), refresh(services))
    if services.jobs.cancel():
        message = "Cancelling: the run stops after the current step and is kept as cancelled."
    else:
        message = "Nothing is running."
    return Action(message, refresh(services))
