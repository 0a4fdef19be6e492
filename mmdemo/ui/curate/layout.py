"""The Curate tab: collections, imports, a paginated gallery and a pair editor.

The layout and the wiring live here; the handlers (plain functions, tested directly) live in
:mod:`mmdemo.ui.curate.handlers`.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from mmdemo.data.store import SPLITS
from mmdemo.hub.publish import on_space
from mmdemo.services import Services
from mmdemo.ui.common import Shared, collection_names, without_trigger
from mmdemo.ui.curate.checks import layout_checks_panel, wire_checks_panel
from mmdemo.ui.curate.handlers import (
    ALL_SPLITS,
    CurateState,
    CurateView,
    ask_delete_collection,
    cancel_delete_collection,
    change_page,
    confirm_delete_collection,
    create_collection,
    delete_pair,
    initial_state,
    on_load,
    open_pair,
    refresh,
    rename_collection,
    render,
    save_caption_on_leave,
    save_pair,
    save_split,
    set_filter,
    switch_collection,
    undo_delete,
)
from mmdemo.ui.curate.importing import (
    REJECTED_COLUMNS,
    SKIPPED_COLUMNS,
    SPLIT_FROM_DATA,
    import_files,
)
from mmdemo.ui.curate.lookalikes import (
    LOOKALIKES_HINT,
    LookalikeState,
    LookalikeView,
    collapse_lookalikes,
    expand_lookalikes,
    find_lookalikes,
    mark_lookalike,
    pair_changed,
    select_lookalike,
    undo_lookalike,
)
from mmdemo.ui.curate.map_panel import layout_map_panel, wire_map_panel
from mmdemo.ui.curate.splits import (
    DEFAULT_EVAL_PERCENT,
    layout_splits_panel,
    wire_splits_panel,
)
from mmdemo.ui.results import is_skip


def as_outputs(view: CurateView) -> tuple:
    """The event outputs for a view: the gallery also gets its highlighted thumbnail.

    The gallery goes out as a component, not ``gr.update``: updates drop ``None`` values, and
    ``selected_index=None`` is what clears a highlight left over from an earlier click.
    """
    state = view.state
    index = state.page_ids.index(state.selected) if state.selected in state.page_ids else None
    return tuple(view._replace(gallery=gr.Gallery(value=view.gallery, selected_index=index)))


def lookalike_outputs(view: LookalikeView) -> tuple:
    """The look-alikes panel's event outputs: the gallery goes out with its highlighted item."""
    values = view._asdict()
    if not is_skip(values["candidates"]):
        values["candidates"] = gr.Gallery(
            value=values["candidates"], selected_index=view.lookalikes.selected
        )
    return tuple(values[name] for name in LookalikeView._fields)


# -- layout and wiring ---------------------------------------------------------------------------
def build_curate(services: Services, shared: Shared) -> None:
    """Lay out the Curate tab inside the current ``gr.Tab`` and wire its events."""
    first = render(services, initial_state(services))
    state = gr.State(first.state)

    with gr.Row(equal_height=True):
        picker = gr.Dropdown(
            choices=collection_names(services),
            value=first.state.collection,
            label="Collection",
            elem_id="mm-picker",
            scale=2,
            min_width=220,
        )
        stats = gr.Markdown(first.stats, elem_id="mm-stats")

    with gr.Accordion("Manage collections", open=False, elem_id="mm-manage"):
        with gr.Row(equal_height=True):
            name_box = gr.Textbox(
                show_label=False,
                container=False,
                placeholder="Name of a new collection, or the new name of this one",
                scale=3,
                elem_id="mm-name",
            )
            create_btn = gr.Button("Create new", scale=1)
            rename_btn = gr.Button("Rename current", scale=1)
            delete_btn = gr.Button("Delete current…", variant="stop", scale=1)
        with gr.Row():
            confirm_btn = gr.Button("Really delete?", variant="stop", visible=False)
            cancel_btn = gr.Button("Cancel", visible=False)

    with gr.Accordion("Import pairs", open=False, elem_id="mm-import"):
        with gr.Row():
            with gr.Column():
                upload = gr.File(
                    label="Upload images, a zip, CSV, JSONL or Parquet",
                    file_count="multiple",
                    type="filepath",
                    height=150,
                )
                captions = gr.Textbox(
                    label="Captions for uploaded images",
                    info="One line for all images, or one line per image in upload order.",
                    lines=2,
                )
            with gr.Column():
                source = gr.Textbox(
                    label="…or a Hub dataset id"
                    + ("" if on_space(services.settings) else " or a path on the server"),
                    placeholder="owner/dataset"
                    + ("" if on_space(services.settings) else "  or  /data/pairs.csv"),
                )
                with gr.Row():
                    caption_col = gr.Textbox(label="Caption column", placeholder="auto")
                    image_col = gr.Textbox(label="Image column", placeholder="auto")
                    import_split = gr.Dropdown(
                        [SPLIT_FROM_DATA, *SPLITS], value=SPLIT_FROM_DATA, label="Split"
                    )
                no_split_eval = gr.Slider(
                    0,
                    50,
                    value=DEFAULT_EVAL_PERCENT,
                    step=1,
                    label="Eval share when the data has no split (%)",
                    elem_id="mm-import-eval",
                )
                import_btn = gr.Button("Import", variant="primary")
        import_summary = gr.Markdown()
        rejected = gr.Dataframe(
            headers=REJECTED_COLUMNS,
            label="Rejected items",
            interactive=False,
            wrap=True,
            visible=False,
            max_height=300,
            elem_id="mm-rejected",
        )
        skipped = gr.Dataframe(
            headers=SKIPPED_COLUMNS,
            label="Skipped duplicates (the image is already a pair)",
            interactive=False,
            wrap=True,
            visible=False,
            max_height=300,
            elem_id="mm-skipped",
        )

    splits_panel = layout_splits_panel(services, first.state)
    map_panel = layout_map_panel(services)
    checks_panel = layout_checks_panel()

    with gr.Row(equal_height=True):
        message = gr.Markdown(elem_id="mm-message")
        undo_btn = gr.Button("Undo delete", size="sm", visible=False, scale=0, min_width=120)

    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                caption_filter = gr.Textbox(
                    label="Filter captions",
                    placeholder='words, or a "quoted phrase"',
                    scale=3,
                    elem_id="mm-filter",
                )
                split_filter = gr.Dropdown(
                    [ALL_SPLITS, *SPLITS], value=ALL_SPLITS, label="Split", scale=1, min_width=120
                )
            gallery = gr.Gallery(
                first.gallery,
                show_label=False,
                columns=6,
                height=640,
                allow_preview=False,
                object_fit="contain",
                buttons=[],
                fit_columns=False,
                elem_id="mm-gallery",
            )
            with gr.Row(equal_height=True):
                prev_btn = gr.Button("← Previous", size="sm", interactive=False, scale=0)
                page_label = gr.Markdown(first.page_label, elem_id="mm-page")
                next_btn = gr.Button("Next →", size="sm", scale=0)
        with gr.Column(scale=2, min_width=300):
            placeholder = gr.Markdown("*Click a thumbnail to see and edit the pair.*")
            with gr.Column(visible=False) as editor:
                image = gr.Image(
                    type="filepath",
                    interactive=False,
                    height=320,
                    show_label=False,
                    buttons=["fullscreen", "download"],
                )
                caption = gr.Textbox(label="Caption", lines=3, elem_id="mm-caption")
                split = gr.Radio(list(SPLITS), label="Split", value="train", elem_id="mm-split")
                with gr.Row():
                    save_btn = gr.Button("Save", variant="primary", elem_id="mm-save")
                    delete_pair_btn = gr.Button("Delete pair", variant="stop")
                labels = gr.Markdown()
                # Collapsed, so the model only runs for the person who asks for look-alikes.
                with gr.Accordion(
                    "Hard negatives for this caption", open=False, elem_id="mm-lookalikes"
                ) as look_accordion:
                    with gr.Row(equal_height=True):
                        look_message = gr.Markdown(LOOKALIKES_HINT, elem_id="mm-look-message")
                        find_btn = gr.Button("Find look-alikes", size="sm", scale=0, min_width=140)
                    look_gallery = gr.Gallery(
                        [],
                        show_label=False,
                        columns=4,
                        height=300,
                        allow_preview=False,
                        object_fit="contain",
                        buttons=[],
                        elem_id="mm-look-gallery",
                    )
                    look_selection = gr.Markdown(elem_id="mm-look-selection")
                    with gr.Row():
                        negative_btn = gr.Button("✗ Hard negative", size="sm", variant="primary")
                        also_btn = gr.Button("+ Also correct", size="sm")
                        look_undo_btn = gr.Button("↶ Undo", size="sm", visible=False)

    components = {
        "state": state,
        "picker": picker,
        "stats": stats,
        "gallery": gallery,
        "page_label": page_label,
        "prev": prev_btn,
        "next": next_btn,
        "confirm": confirm_btn,
        "cancel": cancel_btn,
        "undo": undo_btn,
        "message": message,
        "placeholder": placeholder,
        "editor": editor,
        "image": image,
        "caption": caption,
        "split": split,
        "labels": labels,
    }
    view = [components[name] for name in CurateView._fields]

    def view_except(trigger: str) -> tuple[list, Callable[[CurateView], tuple]]:
        return without_trigger(CurateView._fields, components, as_outputs, trigger)

    wire_splits_panel(services, splits_panel, state, view, as_outputs)
    wire_checks_panel(services, checks_panel, state, view, as_outputs)
    map_click = wire_map_panel(
        services, shared, map_panel, state, view, as_outputs, splits_panel, caption
    )

    def bind(handler):  # noqa: ANN001, ANN202 - handler(services, state, *values)
        return lambda *values: as_outputs(handler(services, *values))

    # Only a person's choice of collection writes the shared one (other tabs read it when they
    # are shown); nothing listens to its changes, so no event chains from here to other tabs.
    switch_outputs = [*view, shared.collection]

    def switched(view_: CurateView) -> tuple:
        return (*as_outputs(view_), view_.state.collection)

    # Handlers that write get the Space login: Gradio fills an argument typed
    # `gr.OAuthProfile | None` itself (None off a Space); it is not an event input.
    def on_create(st: CurateState, text: str, profile: gr.OAuthProfile | None) -> tuple:
        return switched(create_collection(services, st, text, profile))

    def on_rename(st: CurateState, text: str, profile: gr.OAuthProfile | None) -> tuple:
        return switched(rename_collection(services, st, text, profile))

    def on_ask_delete(st: CurateState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(ask_delete_collection(services, st, profile))

    def on_confirm_delete(st: CurateState, profile: gr.OAuthProfile | None) -> tuple:
        return switched(confirm_delete_collection(services, st, profile))

    picker_outputs, without_picker = view_except("picker")

    def on_switch(st: CurateState, name: str | None) -> tuple:
        view_ = switch_collection(services, st, name)
        return (*without_picker(view_), view_.state.collection)

    shared.demo.load(bind(on_load), [state, shared.collection], view)
    shared.tabs["curate"].select(bind(refresh), [state], view)
    picker_event = picker.input(on_switch, [state, picker], [*picker_outputs, shared.collection])
    create_btn.click(on_create, [state, name_box], switch_outputs)
    rename_btn.click(on_rename, [state, name_box], switch_outputs)
    delete_btn.click(on_ask_delete, [state], view)
    cancel_btn.click(bind(cancel_delete_collection), [state], view)
    confirm_btn.click(on_confirm_delete, [state], switch_outputs)

    # No handler ever sets the filters, so `.change` means "the person edited them" (typing,
    # pasting or autofill alike; `.input` misses some of those).
    filter_inputs = [state, caption_filter, split_filter]
    for control in (caption_filter, split_filter):
        control.change(
            bind(set_filter),
            filter_inputs,
            view,
            trigger_mode="always_last",
            show_progress="hidden",
        )
    prev_btn.click(lambda st: as_outputs(change_page(services, st, -1)), [state], view)
    next_btn.click(lambda st: as_outputs(change_page(services, st, +1)), [state], view)

    def on_select(st: CurateState, typed: str, evt: gr.SelectData) -> tuple:
        return as_outputs(open_pair(services, st, int(evt.index), typed))

    # The editor's saves run one at a time, in the order they came: a click that takes the focus
    # from the caption box fires its blur first, and the click's own save must come after it.
    editor_queue = {"concurrency_id": "curate-editor", "concurrency_limit": 1}
    select_event = gallery.select(on_select, [state, caption], view, **editor_queue)

    def on_save(st: CurateState, text: str, value: str, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(save_pair(services, st, text, value, profile))

    split_outputs, without_split = view_except("split")

    def on_split(st: CurateState, text: str, value: str, profile: gr.OAuthProfile | None) -> tuple:
        return without_split(save_split(services, st, text, value, profile))

    def on_leave_caption(st: CurateState, text: str, profile: gr.OAuthProfile | None):  # noqa: ANN202
        return save_caption_on_leave(services, st, text, profile)

    def on_delete_pair(st: CurateState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(delete_pair(services, st, profile))

    def on_undo(st: CurateState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(undo_delete(services, st, profile))

    save_btn.click(on_save, [state, caption, split], view, **editor_queue)
    split.input(on_split, [state, caption, split], split_outputs, **editor_queue)
    caption.blur(
        on_leave_caption, [state, caption], [message], show_progress="hidden", **editor_queue
    )
    delete_event = delete_pair_btn.click(on_delete_pair, [state], view)
    undo_event = undo_btn.click(on_undo, [state], view)

    def on_import(
        st: CurateState,
        files: list[str] | None,
        caption_text: str,
        source_text: str,
        caption_column: str,
        image_column: str,
        split_choice: str,
        no_split_eval_percent: float,
        profile: gr.OAuthProfile | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        outcome = import_files(
            services,
            st,
            files,
            caption_text,
            source_text,
            caption_column,
            image_column,
            split_choice,
            progress=progress,
            profile=profile,
            no_split_eval_percent=no_split_eval_percent,
        )
        table = gr.update(value=outcome.rejected, visible=not outcome.rejected.empty)
        repeats = gr.update(value=outcome.skipped, visible=not outcome.skipped.empty)
        return (outcome.summary, table, repeats, *as_outputs(outcome.view))

    # -- look-alikes of the opened pair: labels for its caption, as in the Label tab -------------
    looks = gr.State(LookalikeState())
    look_parts = {
        "lookalikes": looks,
        "stats": stats,
        "labels": labels,
        "candidates": look_gallery,
        "selection": look_selection,
        "undo": look_undo_btn,
        "message": look_message,
    }
    look_view = [look_parts[name] for name in LookalikeView._fields]

    def on_look_expand(
        st: CurateState, lk: LookalikeState, progress: gr.Progress = gr.Progress()
    ) -> tuple:
        return lookalike_outputs(expand_lookalikes(services, st, lk, progress))

    def on_look_find(
        st: CurateState, lk: LookalikeState, progress: gr.Progress = gr.Progress()
    ) -> tuple:
        return lookalike_outputs(find_lookalikes(services, st, lk, progress))

    def on_look_changed(
        st: CurateState, lk: LookalikeState, progress: gr.Progress = gr.Progress()
    ) -> tuple:
        return lookalike_outputs(pair_changed(services, st, lk, progress))

    def on_look_select(lk: LookalikeState, evt: gr.SelectData) -> tuple:
        return lookalike_outputs(select_lookalike(services, lk, int(evt.index)))

    def on_look_negative(
        st: CurateState, lk: LookalikeState, profile: gr.OAuthProfile | None
    ) -> tuple:
        return lookalike_outputs(mark_lookalike(services, st, lk, "negative", profile))

    def on_look_also(st: CurateState, lk: LookalikeState, profile: gr.OAuthProfile | None) -> tuple:
        return lookalike_outputs(mark_lookalike(services, st, lk, "also-positive", profile))

    def on_look_undo(st: CurateState, lk: LookalikeState, profile: gr.OAuthProfile | None) -> tuple:
        return lookalike_outputs(undo_lookalike(services, st, lk, profile))

    look_accordion.expand(on_look_expand, [state, looks], look_view)
    look_accordion.collapse(
        lambda lk: lookalike_outputs(collapse_lookalikes(services, lk)), [looks], look_view
    )
    find_btn.click(on_look_find, [state, looks], look_view)
    look_gallery.select(on_look_select, [looks], look_view)
    negative_btn.click(on_look_negative, [state, looks], look_view)
    also_btn.click(on_look_also, [state, looks], look_view)
    look_undo_btn.click(on_look_undo, [state, looks], look_view)
    # Whatever may change the opened pair: drop (or, open, reload) the look-alikes after it.
    for event in (select_event, delete_event, undo_event, picker_event, map_click):
        event.then(on_look_changed, [state, looks], look_view)

    import_btn.click(
        on_import,
        [state, upload, captions, source, caption_col, image_col, import_split, no_split_eval],
        [import_summary, rejected, skipped, *view],
        concurrency_id="import",
    )
