"""Curate's embedding map on the page: the accordion's layout and its events.

The handlers are in :mod:`mmdemo.ui.curate.map` (plain functions, tested directly); the canvas
is :mod:`mmdemo.ui.curate.map_canvas`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from mmdemo.data.store import SPLITS
from mmdemo.retrieval.compare import BASE, default_keys, model_options
from mmdemo.retrieval.projection import PCA, UMAP, available_methods
from mmdemo.services import Services
from mmdemo.ui.common import Shared
from mmdemo.ui.curate.handlers import CurateState, CurateView
from mmdemo.ui.curate.map import (
    COLOURINGS,
    HINT,
    K_CHOICES,
    SHOW_EDITOR_JS,
    SPLIT,
    MapState,
    MapView,
    change_options,
    collapse,
    expand,
    move_selection,
    open_in_label,
    open_point,
    pair_card,
    refresh,
    select_points,
)
from mmdemo.ui.curate.map_canvas import map_component
from mmdemo.ui.curate.splits import SplitsPanel, SplitsState


@dataclass
class MapPanel:
    """The map's components (from :func:`layout_map_panel`)."""

    accordion: gr.Accordion
    state: gr.State
    model: gr.Dropdown
    colour: gr.Dropdown
    method: gr.Radio
    k: gr.Dropdown
    status: gr.Markdown
    plot: gr.HTML
    selection: gr.Markdown
    move: gr.Button
    target: gr.Dropdown
    label: gr.Button

    def view(self) -> list:
        """The outputs of a :class:`MapView`, in order."""
        return [
            self.state,
            self.plot,
            self.model,
            self.status,
            self.selection,
            self.move,
            self.label,
        ]


def layout_map_panel(services: Services) -> MapPanel:
    """Lay out the map's accordion where it is called (inside the Curate tab)."""
    state = MapState()
    methods = available_methods()
    with gr.Accordion("Embedding map", open=False, elem_id="mm-map-panel") as accordion:
        with gr.Row(equal_height=True):
            model = gr.Dropdown(
                label="Model", scale=2, min_width=220, elem_id="mm-map-model", **_choices(services)
            )
            colour = gr.Dropdown(
                list(COLOURINGS),
                value=SPLIT,
                label="Colour by",
                scale=1,
                min_width=180,
                elem_id="mm-map-colour",
            )
            k = gr.Dropdown(
                list(K_CHOICES),
                value=state.k,
                label="k (for “gets it wrong”)",
                scale=0,
                min_width=120,
                elem_id="mm-map-k",
            )
            method = gr.Radio(
                [("PCA", PCA), ("UMAP", UMAP)] if UMAP in methods else [("PCA", PCA)],
                value=PCA,
                label="Projection" + ("" if UMAP in methods else " (UMAP: pip install umap-learn)"),
                scale=1,
                min_width=160,
                elem_id="mm-map-method",
            )
        status = gr.Markdown(elem_id="mm-map-status")
        plot = map_component(lambda pid: pair_card(services, pid), elem_id="mm-map")
        with gr.Row(equal_height=True):
            selection = gr.Markdown(HINT, elem_id="mm-map-selection")
            move = gr.Button(
                "Move selected to",
                interactive=False,
                scale=0,
                min_width=230,
                elem_id="mm-map-move",
            )
            target = gr.Dropdown(
                list(SPLITS),
                value="eval",
                show_label=False,
                container=False,
                scale=0,
                min_width=110,
                elem_id="mm-map-target",
            )
            label = gr.Button(
                "Open selected in Label",
                interactive=False,
                scale=0,
                min_width=230,
                elem_id="mm-map-label",
            )
    return MapPanel(
        accordion,
        gr.State(state),
        model,
        colour,
        method,
        k,
        status,
        plot,
        selection,
        move,
        target,
        label,
    )


def _choices(services: Services) -> dict[str, Any]:
    refs = model_options(services.store, services.model)
    return {
        "choices": [(ref.label, ref.key) for ref in refs],
        "value": default_keys(refs)[1] if refs else BASE,
    }


def wire_map_panel(
    services: Services,
    shared: Shared,
    panel: MapPanel,
    state: gr.State,
    view: list,
    as_outputs: Callable[[CurateView], tuple],
    splits_panel: SplitsPanel,
    caption: gr.Textbox,
) -> Any:
    """Connect the map. ``state``/``view``/``as_outputs`` are the Curate tab's, ``caption`` its
    caption box (an unsaved edit is saved before a click opens another pair). Returns the click
    event, which changes the opened pair (the look-alikes panel follows it)."""
    outputs = panel.view()
    private = {"api_visibility": "private"}
    drawing = {**private, "concurrency_id": "curate-map", "show_progress_on": [panel.plot]}

    def on_expand(cs: CurateState, ms: MapState, progress: gr.Progress = gr.Progress()) -> tuple:
        return tuple(expand(services, cs, ms, progress))

    def on_refresh(cs: CurateState, ms: MapState, progress: gr.Progress = gr.Progress()) -> tuple:
        return tuple(refresh(services, cs, ms, progress))

    def on_options(  # noqa: ANN202
        cs: CurateState,
        ms: MapState,
        model: str,
        colour: str,
        method: str,
        k: float,
        progress: gr.Progress = gr.Progress(),
    ):
        view = change_options(services, cs, ms, model, colour, method, k, progress)
        return tuple(v for name, v in zip(MapView._fields, view, strict=True) if name != "model")

    def on_select(cs: CurateState, ms: MapState, evt: gr.EventData) -> tuple:
        data = evt._data if isinstance(evt._data, dict) else {}
        view = select_points(services, cs, ms, data.get("pair_ids"))
        return tuple(v for name, v in zip(MapView._fields, view, strict=True) if name != "plot")

    def on_click(cs: CurateState, typed: str, evt: gr.EventData) -> tuple:
        data = evt._data if isinstance(evt._data, dict) else {}
        return as_outputs(open_point(services, cs, data.get("pair_id"), typed))

    move_outputs = [*view, *splits_panel.outputs(), *outputs]

    def on_move(
        cs: CurateState,
        ms: MapState,
        sp: SplitsState,
        target: str,
        profile: gr.OAuthProfile | None,
    ) -> tuple:
        result = move_selection(services, cs, ms, sp, target, profile)
        return (*as_outputs(result.curate), result.splits, *result.panel, *result.map)

    message = view[CurateView._fields.index("message")]

    def on_label(cs: CurateState, ms: MapState) -> tuple:
        return open_in_label(services, cs, ms)

    panel.accordion.expand(on_expand, [state, panel.state], outputs, **drawing)
    panel.accordion.collapse(
        lambda ms: tuple(collapse(services, ms)), [panel.state], outputs, **private
    )
    options = [panel.model, panel.colour, panel.method, panel.k]
    # The model dropdown is not among their outputs: never written back into the one a person used.
    options_outputs = [c for c in outputs if c is not panel.model]
    for control in options:
        control.input(on_options, [state, panel.state, *options], options_outputs, **drawing)
    # The map follows the Curate tab: shown again, or its collection or counts changed (a
    # switch, an import, a split or label change), an open map that is out of date is redrawn.
    # Only the tab's return shows progress (it may encode a new run's images); the others are
    # quiet, most of them find the map current.
    shared.tabs["curate"].select(
        on_refresh, [state, panel.state], outputs, trigger_mode="always_last", **drawing
    )
    picker = view[CurateView._fields.index("picker")]
    stats = view[CurateView._fields.index("stats")]
    gr.on(
        [picker.change, stats.change],
        on_refresh,
        [state, panel.state],
        outputs,
        trigger_mode="always_last",
        show_progress="hidden",
        concurrency_id="curate-map",
        **private,
    )
    # The canvas already shows the selection it sends: it is not among the outputs.
    select_outputs = [c for c in outputs if c is not panel.plot]
    panel.plot.map_select(
        on_select, [state, panel.state], select_outputs, show_progress="hidden", **private
    )
    click = panel.plot.map_click(
        on_click,
        [state, caption],
        view,
        show_progress="hidden",
        concurrency_id="curate-editor",
        concurrency_limit=1,
        **private,
    )
    # The editor is below the map: bring the opened pair into view (in the page, no request).
    click.then(None, js=SHOW_EDITOR_JS, **private)
    panel.move.click(
        on_move,
        [state, panel.state, splits_panel.splits, panel.target],
        move_outputs,
        concurrency_id="splits",
        show_progress_on=[message],
        **private,
    )
    panel.label.click(
        on_label,
        [state, panel.state],
        [shared.label_focus, message],
        show_progress="hidden",
        **private,
    )
    return click
