"""The Finetune tab's rounds: the "Start from" picker (the base model or a finished run of the
collection) and eval recall@1 over the collection's runs, one point per run after the base model.

Drawn afresh when the tab is shown, when a person picks a collection in the tab and when a run
ends (the timer's tick, :func:`mmdemo.ui.finetune.handlers.poll`); the domain side is
:mod:`mmdemo.training.rounds`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from mmdemo.retrieval.compare import BASE, RUN_PREFIX
from mmdemo.services import Services
from mmdemo.text import md, shorten
from mmdemo.training.rounds import RoundPoint, round_points, start_choices
from mmdemo.ui.common import current_collection
from mmdemo.ui.finetune.view import run_metrics

ROUNDS_COLUMNS = ["point", "recall@1", "direction", "run", "from"]
"""``point`` is the x axis: ``"<order> · <run name>"`` (``0 · base model`` first), in run order."""
DIRECTIONS = {"t2i": "text → image", "i2t": "image → text"}
COLOURS = {DIRECTIONS["t2i"]: "#2563eb", DIRECTIONS["i2t"]: "#ea580c"}
"""Fixed, and named in the plot's label: the legend does not always draw after an update."""
BASE_POINT = "base model"
NO_ROUNDS = "*Eval recall@1 of each finished run shows here: the base model, then run after run.*"
START_FROM_INFO = "Continue from an earlier finished run of this collection (a new round)."


class RoundsView(NamedTuple):
    """The rounds part of the tab: the picker, the plot and the runs it shows in words."""

    start_from: Any
    plot: Any
    lineage: Any


def point_label(point: RoundPoint) -> str:
    """The x-axis label of a point: its order and run name (shortened), ``0 · base model``."""
    return f"{point.order} · {shorten(point.run, 32) if point.run else BASE_POINT}"


def rounds_frame(points: list[RoundPoint]) -> pd.DataFrame:
    """Two rows per point (text→image and image→text recall@1), typed for ``gr.LinePlot``."""
    rows = []
    for point in points:
        name = point.run or BASE_POINT
        parent = point.parent or ("" if point.run is None else BASE_POINT)
        for key, value in (("t2i", point.t2i), ("i2t", point.i2t)):
            if value is not None:
                rows.append([point_label(point), float(value), DIRECTIONS[key], name, parent])
    frame = pd.DataFrame(rows, columns=ROUNDS_COLUMNS)
    return frame.astype({"point": "object", "recall@1": "float64"})


def rounds_plot(points: list[RoundPoint]) -> Any:
    """The plot's update: the frame, with the x axis in run order (not alphabetical)."""
    return gr.update(value=rounds_frame(points), sort=[point_label(p) for p in points])


def lineage_markdown(points: list[RoundPoint]) -> str:
    """The plotted runs in words, in plot order: name, the run it started from, recall@1."""
    if not points:
        return NO_ROUNDS
    lines = []
    for point in points:
        name = f"<code>{md(point.run)}</code>" if point.run else "base model"
        where = ""
        if point.run is not None:
            parent = f"<code>{md(point.parent)}</code>" if point.parent else "base model"
            where = f" · round {point.round}, from {parent}"
        values = " · ".join(
            f"{DIRECTIONS[key]} {value:.3f}"
            for key, value in (("t2i", point.t2i), ("i2t", point.i2t))
            if value is not None
        )
        lines.append(f"{point.order}. {name}{where} · {values}")
    return "**Eval recall@1 over runs**\n\n" + "\n".join(lines)


def start_update(services: Services, collection_id: int | None, current: str | None) -> Any:
    """The picker: base model (``"base"``), then the collection's finished runs (``"run:NAME"``,
    newest first); keeps the person's pick ``current`` while it is still one of them, else the
    base model (``current=None``: the choices only, the pick left as it is on the page)."""
    found = start_choices(services.store, collection_id) if collection_id is not None else []
    choices = [(label, BASE if run is None else RUN_PREFIX + run) for label, run in found]
    choices = choices or [("Base model", BASE)]
    if current is None:
        return gr.update(choices=choices)
    values = {value for _, value in choices}
    return gr.update(choices=choices, value=current if current in values else BASE)


def start_run(value: str | None) -> str | None:
    """The run to start from for the picker's value (``None``: the base model)."""
    value = (value or "").strip()
    if not value or value == BASE:
        return None
    return value[len(RUN_PREFIX) :] if value.startswith(RUN_PREFIX) else value


def collection_points(services: Services, collection_id: int | None) -> list[RoundPoint]:
    """The plot's points for a collection, on the app's base model."""
    if collection_id is None:
        return []
    return round_points(
        services.store, collection_id, services.model.spec, read_metrics=run_metrics
    )


def rounds_view(services: Services, name: str | None, current: str | None = None) -> RoundsView:
    """The whole rounds part for the collection ``name`` (stale or missing: the default)."""
    found = current_collection(services, name)
    collection_id = found.id if found is not None else None
    points = collection_points(services, collection_id)
    return RoundsView(
        start_update(services, collection_id, current),
        rounds_plot(points),
        lineage_markdown(points),
    )


def build_rounds_plot() -> Any:
    """The recall@1-over-runs plot, laid out where it is called (inside the tab's layout)."""
    plot = gr.LinePlot(
        x=ROUNDS_COLUMNS[0],
        y=ROUNDS_COLUMNS[1],
        color="direction",
        label="Eval recall@1 over runs (0: base model) · blue: text → image · orange: image → text",
        color_map=COLOURS,
        x_title="run, in the order they were made",
        y_title="recall@1",
        tooltip=["run", "from", "direction", "recall@1"],
        y_lim=[0, 1],
        x_label_angle=-20,
        height=320,
        elem_id="mm-ft-rounds",
    )
    return plot


def build_lineage() -> Any:
    """The plotted runs in words (which run each started from), laid out where it is called."""
    return gr.Markdown(NO_ROUNDS, elem_id="mm-ft-rounds-lineage")
