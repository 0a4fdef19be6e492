"""The Compare tab's handlers (the layout is in :mod:`mmdemo.ui.compare.layout`): page load,
opening the
tab, choosing the models and the table's direction, and the queries.

Handlers are plain functions ``handler(services, state, *values) -> CompareView``, called directly
by the tests. A view names every output of the tab; a handler fills in what it changes and leaves
the rest as ``gr.skip()``. Heavy work (loading a model, encoding a collection the first time)
reports through ``progress`` (a ``gr.Progress`` in the app).

The pieces live beside this module: the state, the view and the result galleries in
:mod:`~mmdemo.ui.compare.view`, the models and their comparison in
:mod:`~mmdemo.ui.compare.models`, labeling the results in :mod:`~mmdemo.ui.compare.labels`. The
state types and the labeling handlers are re-exported here, so this module names every handler
of the tab.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr

from mmdemo.data.store import Collection, StoreError
from mmdemo.retrieval.compare import BASE, default_keys, display_path, ensure_corpus, rank_changes
from mmdemo.retrieval.search import Hit, ImageQuery, search_collection
from mmdemo.services import Services
from mmdemo.ui.common import current_collection, default_collection, warn

# Re-exported so that this module names every handler of the tab (the app and tests call them).
from mmdemo.ui.compare.labels import add_negative_caption, mark, select_hit, undo  # noqa: F401
from mmdemo.ui.compare.models import (
    comparison,
    empty_table,
    keys_still_valid,
    load_models,
    loaded_key,
    model_dropdowns,
    model_note,
    model_refs,
)
from mmdemo.ui.compare.view import (
    CompareState,
    CompareView,
    galleries,
    negative_suggestions,
    selected_hit,
    selection_text,
    title,
    undo_button,
    view,
)
from mmdemo.ui.results import FAILURES, TABLE_COLUMNS, image_progress, is_skip, table_frame

DIRECTIONS = {"text → image": "text_to_image", "image → text": "image_to_text"}
PICKER_SIZE = 24
CAPTION_CHOICES = 500
DEFAULT_K = 8


# -- page load, tab open, model choice -----------------------------------------------------------
def _with_pickers(
    services: Services, state: CompareState, collection: Collection | None
) -> tuple[CompareState, dict[str, Any]]:
    """Captions to pick and a few images to query with (eval first: those are measured)."""
    if collection is None:
        state = dataclasses.replace(state, picker_ids=())
        return state, {"captions": gr.update(choices=[], value=None), "picker": []}
    store = services.store
    pairs = store.list_pairs(collection.id, split="eval", limit=CAPTION_CHOICES)
    if len(pairs) < CAPTION_CHOICES:
        pairs += store.list_pairs(collection.id, split="train", limit=CAPTION_CHOICES - len(pairs))
    seen: dict[str, int] = {}
    for pair in pairs:
        seen.setdefault(pair.caption, pair.id)
    choices = [(caption, str(pair_id)) for caption, pair_id in seen.items()]
    picks = pairs[:PICKER_SIZE]
    picker = [
        (str(display_path(store, services.settings, p.image_sha256)), p.caption) for p in picks
    ]
    state = dataclasses.replace(state, picker_ids=tuple(p.id for p in picks))
    return state, {"captions": gr.update(choices=choices, value=None), "picker": picker}


def initial_state(services: Services) -> CompareState:
    default_a, default_b = default_keys(model_refs(services))
    return CompareState(
        collection=default_collection(services), model_a=default_a, model_b=default_b
    )


def _changed(shown: CompareView) -> dict[str, Any]:
    """The outputs a view changes (its skips and its state left out), to merge into another."""
    return {
        name: value
        for name, value in shown._asdict().items()
        if name != "state" and not is_skip(value)
    }


def on_load(services: Services, state: CompareState, collection: str | None) -> CompareView:
    """Page load (cheap): follow the browser's current collection (the default when it is gone),
    refresh the model choices; the comparison waits until the tab is shown."""
    found = current_collection(services, collection)
    fresh = dataclasses.replace(initial_state(services), collection=found.name if found else None)
    state, pickers = _with_pickers(services, fresh, found)
    return view(
        state,
        **model_dropdowns(services, state),
        **pickers,
        note=model_note(services, state.model_a == state.model_b),
        gallery_a=[],
        gallery_b=[],
        selection=selection_text(services, state),
        undo=undo_button(state),
    )


def switch_collection(services: Services, state: CompareState, name: str | None) -> CompareView:
    """Another collection is current (picked in Curate): forget the results of the old one."""
    if name == state.collection:
        return view(state)
    state = CompareState(
        collection=name,
        model_a=state.model_a,
        model_b=state.model_b,
        direction=state.direction,
    )
    state, pickers = _with_pickers(services, state, current_collection(services, state.collection))
    return view(
        state,
        **pickers,
        gallery_a=[],
        gallery_b=[],
        table=empty_table(),
        metrics="*Open this tab to compare the models on the new collection.*",
        selection=selection_text(services, state),
        negative_caption=gr.update(choices=[], value=None),
        undo=undo_button(state),
    )


def refresh_models(services: Services, state: CompareState) -> CompareView:
    """Fill the model choices again (a run finished since the page was opened)."""
    state = keys_still_valid(services, state)
    return view(state, **model_dropdowns(services, state))


def open_tab(
    services: Services,
    state: CompareState,
    k: int,
    upload: Any = None,
    progress: Any = None,
    collection: str | None = None,
) -> CompareView:
    """The tab was shown: follow the browser's current ``collection`` (``None``: the state's;
    the default one when it is gone), refresh the run list, and compute the comparison unless
    the shown one is current (same collection, models and pairs); labels made elsewhere show
    on the results."""
    found = current_collection(services, collection or state.collection)
    fields: dict[str, Any] = {}
    name = found.name if found else None
    if name != state.collection:
        switched = switch_collection(services, state, name)
        state, fields = switched.state, _changed(switched)
    state = keys_still_valid(services, state)
    fields.update(model_dropdowns(services, state))
    if found is not None and state.loaded_for == loaded_key(services, state, found):
        if state.hits_a:
            fields.update(galleries(services, state), selection=selection_text(services, state))
        return view(state, **fields)
    if found is not None and "picker" not in fields:  # the pairs changed: fresh pickers
        state, pickers = _with_pickers(services, state, found)
        fields.update(pickers)
    compared = choose_models(services, state, state.model_a, state.model_b, k, upload, progress)
    return view(compared.state, **{**fields, **_changed(compared)})


def choose_models(
    services: Services,
    state: CompareState,
    model_a: str | None,
    model_b: str | None,
    k: int = DEFAULT_K,
    upload: Any = None,
    progress: Any = None,
) -> CompareView:
    """Compare other models: recompute metrics and the table, and rerun the current query."""
    state = dataclasses.replace(
        state, model_a=model_a or BASE, model_b=model_b or BASE, selected=None
    )
    try:
        state, fields = comparison(services, state, progress)
    except FAILURES as exc:
        state = dataclasses.replace(state, loaded_for=None)
        return view(state, message=warn(str(exc)), **model_dropdowns(services, state))
    fields.update(model_dropdowns(services, state))
    if state.query_kind is None:
        return view(state, **fields, gallery_a=[], gallery_b=[])
    rerun = _run(services, state, k, upload, progress)
    return view(rerun.state, **{**fields, **_changed(rerun)})


def set_direction(
    services: Services, state: CompareState, label: str, progress: Any = None
) -> CompareView:
    """Show the table for the other direction (text → image or image → text)."""
    state = dataclasses.replace(state, direction=DIRECTIONS.get(label, "text_to_image"))
    collection = current_collection(services, state.collection)
    if collection is None:
        return view(state)
    try:
        a, b = load_models(services, state, progress)
        if b is None:
            return view(state, table=empty_table())
        rows = rank_changes(services, a, b, collection.id, "eval", state.direction)
    except FAILURES as exc:
        return view(state, message=warn(str(exc)))
    return view(state, table=table_frame(rows))


# -- queries --------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _pair_with_caption(services: Services, collection: Collection, text: str) -> int | None:
    wanted = _norm(text)
    if not wanted:
        return None
    for pair in services.store.list_pairs(collection.id, caption_filter=text.strip()):
        if _norm(pair.caption) == wanted:
            return pair.id
    return None


def _run(
    services: Services, state: CompareState, k: int, upload: Any, progress: Any
) -> CompareView:
    """Search with the state's query under A (and B) and show the results."""
    collection = current_collection(services, state.collection)
    if collection is None:
        return view(state, message=warn("No collection yet: create one in the Curate tab."))
    if state.query_kind == "text":
        query: Any = state.query_text
    elif state.query_kind == "image" and state.query_sha is not None:
        query = ImageQuery(state.query_sha)
    elif state.query_kind == "upload" and upload is not None:
        query = upload
    else:
        return view(state, message=warn("Type a query, pick a caption or an image first."))
    k = max(1, min(int(k or DEFAULT_K), 50))
    try:
        a, b = load_models(services, state, progress)
        found: list[tuple[Hit, ...]] = []
        for loaded in (a, b):
            if loaded is None:
                found.append(())
                continue
            ensure_corpus(
                services,
                loaded,
                collection.id,
                progress=image_progress(progress, f"Encoding images ({loaded.ref.label})"),
            )
            hits = search_collection(
                services.store,
                services.settings,
                services.embeddings,
                loaded.model,
                loaded.fingerprint,
                collection.id,
                query,
                k,
            )
            found.append(tuple(hits))
    except FAILURES as exc:
        return view(state, message=warn(str(exc)))
    state = dataclasses.replace(
        state, collection=collection.name, hits_a=found[0], hits_b=found[1], selected=None
    )
    empty = "" if found[0] else warn(f"“{collection.name}” has no pairs yet: add some in Curate.")
    return view(
        state,
        **galleries(services, state),
        selection=selection_text(services, state),
        negative_caption=negative_suggestions(services, state),
        column_b=gr.update(visible=b is not None),
        title_a=title("A", a.ref.label),
        title_b=title("B", b.ref.label if b else None),
        message=empty,
    )


def search_text(
    services: Services,
    state: CompareState,
    text: str | None,
    k: int = DEFAULT_K,
    progress: Any = None,
) -> CompareView:
    """A typed query; labels attach to the pair whose caption it is, if any."""
    text = (text or "").strip()
    if not text:
        return view(state, message=warn("Type a query first."))
    collection = current_collection(services, state.collection)
    anchor = _pair_with_caption(services, collection, text) if collection else None
    state = dataclasses.replace(
        state, query_kind="text", query_text=text, query_sha=None, anchor=anchor
    )
    return _run(services, state, k, None, progress)


def search_caption(
    services: Services,
    state: CompareState,
    pair_id: str | int | None,
    k: int = DEFAULT_K,
    progress: Any = None,
) -> CompareView:
    """A caption picked from the collection (the picker's value is its pair id)."""
    if pair_id in (None, ""):
        return view(state)
    try:
        pair = services.store.get_pair(int(pair_id))
    except (StoreError, ValueError) as exc:
        return view(state, message=warn(str(exc)))
    state = dataclasses.replace(
        state, query_kind="text", query_text=pair.caption, query_sha=None, anchor=pair.id
    )
    return _run(services, state, k, None, progress)


def search_pair_image(
    services: Services,
    state: CompareState,
    pair_id: int,
    k: int = DEFAULT_K,
    progress: Any = None,
) -> CompareView:
    """Query by the image of a pair of the collection."""
    try:
        pair = services.store.get_pair(int(pair_id))
    except (StoreError, ValueError) as exc:
        return view(state, message=warn(str(exc)))
    state = dataclasses.replace(
        state,
        query_kind="image",
        query_text=pair.caption,
        query_sha=pair.image_sha256,
        anchor=pair.id,
    )
    return _run(services, state, k, None, progress)


def pick_image(
    services: Services, state: CompareState, index: int, k: int = DEFAULT_K, progress: Any = None
) -> CompareView:
    """A click on the image picker: ``index`` into ``state.picker_ids``."""
    ids = state.picker_ids
    if not 0 <= index < len(ids):
        return view(state, message=warn("That image is gone; reopen the tab."))
    return search_pair_image(services, state, ids[index], k, progress)


def search_upload(
    services: Services, state: CompareState, image: Any, k: int = DEFAULT_K, progress: Any = None
) -> CompareView:
    """Query by an uploaded image (PIL); it belongs to no pair, so results cannot be labeled."""
    if image is None:
        return view(state)
    state = dataclasses.replace(
        state, query_kind="upload", query_text="", query_sha=None, anchor=None
    )
    return _run(services, state, k, image, progress)


def search_selected(
    services: Services, state: CompareState, k: int = DEFAULT_K, progress: Any = None
) -> CompareView:
    """Query by the selected result's image (to follow a neighbourhood)."""
    hit = selected_hit(state)
    if hit is None:
        return view(state, message=warn("Click a result first."))
    return search_pair_image(services, state, hit.pair_id, k, progress)


def rerun(
    services: Services, state: CompareState, k: int, upload: Any = None, progress: Any = None
) -> CompareView:
    """Run the current query again (e.g. with another k)."""
    if state.query_kind is None:
        return view(state)
    return _run(services, state, k, upload, progress)


def pick_row(
    services: Services,
    state: CompareState,
    row: list | None,
    k: int = DEFAULT_K,
    progress: Any = None,
) -> CompareView:
    """A click on a row of the per-query table runs that query (its text or its image)."""
    if not row or len(row) < len(TABLE_COLUMNS):
        return view(state)
    try:
        pair_id = int(row[TABLE_COLUMNS.index("pair")])
    except (TypeError, ValueError):
        return view(state)
    if state.direction == "image_to_text":
        return search_pair_image(services, state, pair_id, k, progress)
    return search_caption(services, state, pair_id, k, progress)
