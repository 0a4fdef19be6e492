"""The Compare tab: two models side by side on the same query, their metrics, and labeling.

The layout and the wiring live here; the handlers (plain functions, tested directly) are named
by :mod:`mmdemo.ui.compare.handlers` (labeling the results: :mod:`mmdemo.ui.compare.labels`),
the state and the view they return live in :mod:`mmdemo.ui.compare.view`.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
from gradio.context import get_render_context

from mmdemo.services import Services
from mmdemo.ui.common import Shared, without_trigger
from mmdemo.ui.compare import handlers as h
from mmdemo.ui.compare.handlers import DEFAULT_K, DIRECTIONS
from mmdemo.ui.compare.view import CompareState, CompareView
from mmdemo.ui.results import TABLE_COLUMNS, is_skip


def as_outputs(view: CompareView) -> tuple:
    """The event outputs for a view: result galleries go out as components with their
    highlighted item (``gr.update`` drops ``selected_index=None``, which clears a highlight)."""
    state = view.state
    values = view._asdict()
    for side in ("a", "b"):
        name = f"gallery_{side}"
        if not is_skip(values[name]):
            index = state.selected[1] if state.selected and state.selected[0] == side else None
            values[name] = gr.Gallery(value=values[name], selected_index=index)
    if not is_skip(values["picker"]):
        values["picker"] = gr.Gallery(value=values["picker"], selected_index=None)
    return tuple(values[name] for name in CompareView._fields)


def _results_gallery(elem_id: str) -> gr.Gallery:
    return gr.Gallery(
        show_label=False,
        columns=4,
        height=340,
        allow_preview=False,
        object_fit="contain",
        buttons=[],
        fit_columns=False,
        elem_id=elem_id,
        elem_classes=["mm-results"],
    )


# -- layout and wiring ---------------------------------------------------------------------------
def build_compare(services: Services, shared: Shared) -> None:
    """Lay out the Compare tab inside the current ``gr.Tab`` and wire its events."""
    tab = get_render_context()
    first = h.initial_state(services)
    state = gr.State(first)

    with gr.Row():
        model_a = gr.Dropdown(
            label="Model A (base, a finished run, or type a model folder)",
            allow_custom_value=True,
            elem_id="mm-model-a",
            scale=3,
        )
        model_b = gr.Dropdown(
            label="Model B", allow_custom_value=True, elem_id="mm-model-b", scale=3
        )
        k = gr.Slider(2, 32, value=DEFAULT_K, step=1, label="Results per model", scale=2)
        refresh_btn = gr.Button("↻ Runs", size="sm", scale=0, min_width=70)
    note = gr.Markdown(elem_id="mm-compare-note")

    with gr.Row():
        with gr.Column(scale=5):
            metrics = gr.Markdown(
                "*Open this tab to measure the models.*", elem_id="mm-compare-metrics"
            )
        with gr.Column(scale=6):
            direction = gr.Radio(
                list(DIRECTIONS),
                value=next(iter(DIRECTIONS)),
                label="Eval queries by change in the rank of their positive (click one to run it)",
            )
            table = gr.Dataframe(
                headers=TABLE_COLUMNS,
                interactive=False,
                wrap=True,
                max_height=260,
                column_widths=["11%", "8%", "8%", "63%", "10%"],
                show_label=False,
                elem_id="mm-rank-table",
            )

    with gr.Row(equal_height=True):
        query = gr.Textbox(
            label="Text query",
            placeholder="a red circle above a blue square",
            scale=4,
            elem_id="mm-query",
        )
        search_btn = gr.Button("Search", variant="primary", scale=0, elem_id="mm-search")
        captions = gr.Dropdown(
            label="…or a caption from the collection",
            filterable=True,
            scale=4,
            elem_id="mm-caption-pick",
        )
    with gr.Accordion("Query by image", open=False, elem_id="mm-image-query"), gr.Row():
        upload = gr.Image(
            type="pil",
            label="Upload an image (its results cannot be labeled)",
            sources=["upload", "clipboard"],
            height=190,
            scale=1,
        )
        picker = gr.Gallery(
            label="…or click an image of the collection",
            columns=8,
            height=190,
            allow_preview=False,
            object_fit="contain",
            buttons=[],
            scale=3,
            elem_id="mm-image-picker",
        )
    gr.Markdown(
        "#rank similarity · ✓ ground-truth positive · ✗ labeled hard negative · + labeled also "
        "correct (for the query's caption). Hover a result for its caption; click it to label it.",
        elem_id="mm-compare-legend",
    )

    with gr.Row():
        with gr.Column():
            title_a = gr.Markdown()
            gallery_a = _results_gallery("mm-results-a")
        with gr.Column(visible=False) as column_b:
            title_b = gr.Markdown()
            gallery_b = _results_gallery("mm-results-b")

    with gr.Group():
        message = gr.Markdown(elem_id="mm-compare-message")
        selection = gr.Markdown(
            "*Run a query, then click a result to label it.*", elem_id="mm-selection"
        )
        with gr.Row(equal_height=True):
            negative_btn = gr.Button(
                "✗ Hard negative for this caption", variant="primary", elem_id="mm-mark-negative"
            )
            also_btn = gr.Button("+ Also correct", elem_id="mm-mark-also")
            follow_btn = gr.Button("Search with this image", elem_id="mm-follow")
            undo_btn = gr.Button("↶ Undo last label", visible=False, elem_id="mm-compare-undo")
        with gr.Row(equal_height=True):
            negative_caption = gr.Dropdown(
                label="Hard-negative caption for this pair's image (pick a suggestion or type)",
                allow_custom_value=True,
                scale=4,
                elem_id="mm-negative-caption",
            )
            caption_btn = gr.Button("Save caption negative", scale=1, elem_id="mm-save-caption")

    components = {
        "state": state,
        "model_a": model_a,
        "model_b": model_b,
        "note": note,
        "metrics": metrics,
        "table": table,
        "title_a": title_a,
        "title_b": title_b,
        "gallery_a": gallery_a,
        "gallery_b": gallery_b,
        "column_b": column_b,
        "selection": selection,
        "negative_caption": negative_caption,
        "undo": undo_btn,
        "message": message,
        "captions": captions,
        "picker": picker,
    }
    outputs = [components[name] for name in CompareView._fields]

    def wire(handler: Callable[..., CompareView]) -> Callable[..., tuple]:
        return lambda *values: as_outputs(handler(services, *values))

    # The browser's current collection is read, never written, here: on page load (cheap) and
    # whenever the tab is shown. Each event shows one progress indicator, on what it changes.
    quiet = {"show_progress": "hidden"}
    on_metrics = {"concurrency_id": "compare", "show_progress_on": [metrics]}
    # A query's bar (with what it is encoding) shows on gallery A only: a layout row shows no
    # bar, and both galleries carrying one would show two.
    on_results = {"concurrency_id": "compare", "show_progress_on": [gallery_a]}
    shared.demo.load(wire(h.on_load), [state, shared.collection], outputs, **quiet)

    # Heavy handlers take a gr.Progress: encoding a collection the first time shows a bar.
    def on_open(st: CompareState, name, k_: int, image, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.open_tab(services, st, k_, image, progress, collection=name))

    open_inputs = [state, shared.collection, k, upload]
    if isinstance(tab, gr.Tab):
        tab.select(on_open, open_inputs, outputs, **on_metrics)
    else:  # built outside a tab (e.g. on its own): compute on page load instead
        shared.demo.load(on_open, open_inputs, outputs, **on_metrics)

    def models_event(trigger: str) -> tuple[list, Callable[..., tuple]]:
        """A model picker's outputs without itself, and its handler."""
        picked_outputs, adapt = without_trigger(
            CompareView._fields, components, as_outputs, trigger
        )

        def on_models(st, a, b, k_, image, progress=gr.Progress()) -> tuple:  # noqa: ANN001
            return adapt(h.choose_models(services, st, a, b, k_, image, progress))

        return picked_outputs, on_models

    for name, dropdown in (("model_a", model_a), ("model_b", model_b)):
        picked_outputs, on_models = models_event(name)
        dropdown.input(
            on_models, [state, model_a, model_b, k, upload], picked_outputs, **on_metrics
        )
    refresh_btn.click(wire(h.refresh_models), [state], outputs, **quiet)

    def on_direction(st, label, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.set_direction(services, st, label, progress))

    direction.input(
        on_direction,
        [state, direction],
        outputs,
        concurrency_id="compare",
        show_progress_on=[table],
    )

    def on_text(st, text, k_, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.search_text(services, st, text, k_, progress))

    search_btn.click(on_text, [state, query, k], outputs, **on_results)
    query.submit(on_text, [state, query, k], outputs, **on_results)

    caption_outputs, without_captions = without_trigger(
        CompareView._fields, components, as_outputs, "captions"
    )

    def on_caption(st, pair_id, k_, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return without_captions(h.search_caption(services, st, pair_id, k_, progress))

    captions.input(on_caption, [state, captions, k], caption_outputs, **on_results)

    def on_pick(st, k_, evt: gr.SelectData, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.pick_image(services, st, int(evt.index), k_, progress))

    picker.select(on_pick, [state, k], outputs, **on_results)

    def on_upload(st, image, k_, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.search_upload(services, st, image, k_, progress))

    upload.upload(on_upload, [state, upload, k], outputs, **on_results)

    def on_k(st, k_, image, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.rerun(services, st, k_, image, progress))

    k.release(on_k, [state, k, upload], outputs, **on_results)

    def on_row(st, k_, evt: gr.SelectData, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.pick_row(services, st, evt.row_value, k_, progress))

    table.select(on_row, [state, k], outputs, **on_results)

    def on_select_a(st: CompareState, evt: gr.SelectData) -> tuple:
        return as_outputs(h.select_hit(services, st, "a", int(evt.index)))

    def on_select_b(st: CompareState, evt: gr.SelectData) -> tuple:
        return as_outputs(h.select_hit(services, st, "b", int(evt.index)))

    gallery_a.select(on_select_a, [state], outputs, **quiet)
    gallery_b.select(on_select_b, [state], outputs, **quiet)

    # Every label write gets the Space login (Gradio fills an argument typed
    # `gr.OAuthProfile | None`; None off a Space): required there, and saved as the author.
    def on_negative(st: CompareState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(h.mark(services, st, "negative", profile=profile))

    def on_also(st: CompareState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(h.mark(services, st, "also-positive", profile=profile))

    def on_caption_negative(st: CompareState, text: str, profile: gr.OAuthProfile | None):
        return as_outputs(h.add_negative_caption(services, st, text, profile=profile))

    def on_undo(st: CompareState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(h.undo(services, st, profile))

    labels = {"concurrency_id": "labels", "show_progress": "hidden"}
    negative_btn.click(on_negative, [state], outputs, **labels)
    also_btn.click(on_also, [state], outputs, **labels)
    caption_btn.click(on_caption_negative, [state, negative_caption], outputs, **labels)
    undo_btn.click(on_undo, [state], outputs, **labels)

    def on_follow(st, k_, progress=gr.Progress()) -> tuple:  # noqa: ANN001
        return as_outputs(h.search_selected(services, st, k_, progress))

    follow_btn.click(on_follow, [state, k], outputs, **on_results)
