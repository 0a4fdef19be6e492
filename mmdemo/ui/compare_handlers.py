"""The Compare tab's state and handlers (the layout is in :mod:`mmdemo.ui.compare`).

Handlers are plain functions ``handler(services, state, *values) -> CompareView``, called directly
by the tests. A view names every output of the tab; a handler fills in what it changes and leaves
the rest as ``gr.skip()``. Heavy work (loading a model, encoding a collection the first time)
reports through ``progress`` (a ``gr.Progress`` in the app).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from mmdemo.compare import (
    BASE,
    LabelEdit,
    LoadedModel,
    ModelRef,
    binding,
    default_keys,
    display_path,
    ensure_corpus,
    load,
    model_metrics,
    model_options,
    rank_changes,
    resolve_model,
    set_label,
    undo_edit,
)
from mmdemo.negatives import suggest_negative_captions
from mmdemo.retrieval import Hit, ImageQuery, search_collection
from mmdemo.services import Services
from mmdemo.store import Collection, StoreError
from mmdemo.ui.common import current_collection, default_collection, warn
from mmdemo.ui.identity import LoginRequired, label_author, require_login
from mmdemo.ui.results import (
    FAILURES,
    TABLE_COLUMNS,
    hit_caption,
    image_progress,
    is_skip,
    metrics_markdown,
    say_progress,
    table_frame,
)

DIRECTIONS = {"text → image": "text_to_image", "image → text": "image_to_text"}
PICKER_SIZE = 24
CAPTION_CHOICES = 500
DEFAULT_K = 8
NO_RUN_NOTE = (
    "No finished run yet: **train a model in the Finetune tab**, then compare it with the base "
    "model here. Until then you can explore the base model alone."
)
SAME_MODEL_NOTE = "A and B are the same model: pick another one for B to compare."


@dataclass(frozen=True)
class CompareState:
    """What one browser session compares and shows (kept in ``gr.State``)."""

    collection: str | None = None
    model_a: str = BASE
    model_b: str = BASE
    single: bool = True
    """Only model A is shown (no run to compare with, or B is the same model)."""
    loaded_for: tuple | None = None
    """(collection, A, B, pairs signature) the metrics and the table were computed for."""
    direction: str = "text_to_image"
    query_kind: str | None = None
    """``"text"``, ``"image"`` (a stored image) or ``"upload"``."""
    query_text: str = ""
    query_sha: str | None = None
    anchor: int | None = None
    """The pair labels attach to: its caption is the query, or its image is."""
    hits_a: tuple[Hit, ...] = ()
    hits_b: tuple[Hit, ...] = ()
    selected: tuple[str, int] | None = None
    """``("a" | "b", index)`` of the selected result."""
    last_edit: LabelEdit | None = None
    """The label change the Undo button takes back."""
    picker_ids: tuple[int, ...] = ()
    """Pair ids of the image picker, in order: a picker click gives an index into this."""


class CompareView(NamedTuple):
    """Every output of the Compare tab, in the order of the event outputs."""

    state: CompareState
    model_a: Any
    model_b: Any
    note: Any
    metrics: Any
    table: Any
    title_a: Any
    title_b: Any
    gallery_a: Any  # list[(path, caption)], or gr.skip(); see compare.as_outputs
    gallery_b: Any
    column_b: Any
    selection: Any
    negative_caption: Any
    undo: Any
    message: Any
    captions: Any
    picker: Any


def view(state: CompareState, **fields: Any) -> CompareView:
    """A view that changes ``fields`` and leaves every other output as it is."""
    values = {name: gr.skip() for name in CompareView._fields}
    values.update(fields, state=state)
    return CompareView(**values)


# -- models and collection ----------------------------------------------------------------------


def _options(services: Services) -> list[ModelRef]:
    return model_options(services.store, services.model)


def _dropdowns(services: Services, state: CompareState) -> dict[str, Any]:
    choices = [(ref.label, ref.key) for ref in _options(services)]
    known = {key for _, key in choices}
    extra_a = [] if state.model_a in known else [(state.model_a, state.model_a)]
    extra_b = [] if state.model_b in known else [(state.model_b, state.model_b)]
    return {
        "model_a": gr.update(choices=choices + extra_a, value=state.model_a),
        "model_b": gr.update(choices=choices + extra_b, value=state.model_b),
    }


def _keys_still_valid(services: Services, state: CompareState) -> CompareState:
    """Fall back to the defaults for models that are gone (a deleted run), and offer the newest
    run as B when the page was opened before any run had finished (base vs base)."""
    options = _options(services)
    known = {ref.key for ref in options}
    default_a, default_b = default_keys(options)
    model_a, model_b = state.model_a, state.model_b
    if model_a not in known and not _is_folder(model_a):
        model_a = default_a
    if (model_b not in known and not _is_folder(model_b)) or model_a == model_b == BASE:
        model_b = default_b
    return dataclasses.replace(state, model_a=model_a, model_b=model_b)


def _is_folder(key: str) -> bool:
    return bool(key) and Path(key).expanduser().is_dir()


def _load_models(
    services: Services, state: CompareState, progress: Any
) -> tuple[LoadedModel, LoadedModel | None]:
    """Model A and model B (``None`` when B is the same model as A)."""
    store, base = services.store, services.model
    ref_a = resolve_model(store, base, state.model_a)
    say_progress(progress, f"Loading {ref_a.label}…")
    a = load(services, ref_a)
    ref_b = resolve_model(store, base, state.model_b)
    if ref_b.spec == ref_a.spec:
        return a, None
    say_progress(progress, f"Loading {ref_b.label}…")
    b = load(services, ref_b)
    return (a, None) if b.fingerprint == a.fingerprint else (a, b)


def _note(services: Services, single: bool) -> str:
    if not any(ref.run for ref in _options(services)):
        return NO_RUN_NOTE
    return SAME_MODEL_NOTE if single else ""


# -- metrics and the table of per-query changes ----------------------------------------------------
def _empty_table() -> pd.DataFrame:
    return pd.DataFrame([], columns=TABLE_COLUMNS)


def _loaded_key(services: Services, state: CompareState, collection: Collection) -> tuple:
    signature = services.store.pairs_signature(collection.id)
    return (collection.name, state.model_a, state.model_b, signature)


def _comparison(
    services: Services, state: CompareState, progress: Any
) -> tuple[CompareState, dict[str, Any]]:
    """Metrics, the binding probe and the rank table for the state's models and collection."""
    collection = current_collection(services, state.collection)
    if collection is None:
        state = dataclasses.replace(state, collection=None, loaded_for=None)
        return state, {"metrics": "No collection yet: create one in the Curate tab."}
    state = dataclasses.replace(state, collection=collection.name)
    a, b = _load_models(services, state, progress)
    state = dataclasses.replace(state, single=b is None)
    n_eval = services.store.count_pairs(collection.id, split="eval")
    metrics_a = model_metrics(
        services,
        a,
        collection.id,
        "eval",
        image_progress(progress, f"Encoding images ({a.ref.label})"),
    )
    metrics_b = None
    if b is not None:
        metrics_b = model_metrics(
            services,
            b,
            collection.id,
            "eval",
            image_progress(progress, f"Encoding images ({b.ref.label})"),
        )
    say_progress(progress, "Comparing queries…")
    probe = binding(services, a, b or a, collection.id) if n_eval else None
    table = _empty_table()
    if b is not None and n_eval:
        table = table_frame(rank_changes(services, a, b, collection.id, "eval", state.direction))
    fields = {
        "note": _note(services, b is None),
        "metrics": metrics_markdown(
            metrics_a, metrics_b, a.ref.label, b.ref.label if b else None, n_eval, probe
        ),
        "table": gr.update(value=table, visible=b is not None),
        "title_a": f"### A · {a.ref.label}",
        "title_b": f"### B · {b.ref.label}" if b else "",
        "column_b": gr.update(visible=b is not None),
    }
    state = dataclasses.replace(state, loaded_for=_loaded_key(services, state, collection))
    return state, fields


# -- galleries ------------------------------------------------------------------------------------
def _anchor_labels(services: Services, anchor: int | None) -> dict[str, str]:
    if anchor is None:
        return {}
    return {
        lab.negative_sha256: lab.kind
        for lab in services.store.labels_for_pair(anchor)
        if lab.negative_sha256 is not None
    }


def _gallery(services: Services, hits: tuple[Hit, ...], labels: dict[str, str]) -> list:
    store, settings = services.store, services.settings
    return [
        (
            str(display_path(store, settings, h.image_sha256)),
            hit_caption(h, labels.get(h.image_sha256)),
        )
        for h in hits
    ]


def _galleries(services: Services, state: CompareState) -> dict[str, Any]:
    labels = _anchor_labels(services, state.anchor)
    return {
        "gallery_a": _gallery(services, state.hits_a, labels),
        "gallery_b": _gallery(services, state.hits_b, labels),
    }


def _selected_hit(state: CompareState) -> Hit | None:
    if state.selected is None:
        return None
    side, index = state.selected
    hits = state.hits_a if side == "a" else state.hits_b
    return hits[index] if 0 <= index < len(hits) else None


def _selection_text(services: Services, state: CompareState) -> str:
    anchor = None
    if state.anchor is not None:
        try:
            anchor = services.store.get_pair(state.anchor)
        except StoreError:
            anchor = None
    if state.query_kind is None:
        return "*Run a query, then click a result to label it.*"
    if anchor is None:
        return (
            "Labels attach to a pair of the collection: pick one of its captions (or type one "
            "exactly) or one of its images to label results."
        )
    hit = _selected_hit(state)
    lines = [f"Labels go to pair {anchor.id}: “{anchor.caption}”."]
    if hit is None:
        lines.append("*Click a result to label it.*")
    else:
        side = "A" if state.selected and state.selected[0] == "a" else "B"
        lines.append(
            f"**Selected:** #{hit.rank} under {side}, pair {hit.pair_id} — “{hit.caption}”"
        )
    return "\n\n".join(lines)


def _suggestions(services: Services, state: CompareState) -> Any:
    if state.anchor is None:
        return gr.update(choices=[], value=None)
    try:
        caption = services.store.get_pair(state.anchor).caption
    except StoreError:
        return gr.update(choices=[], value=None)
    suggestions = suggest_negative_captions(caption)
    return gr.update(choices=suggestions, value=suggestions[0] if suggestions else None)


def _undo_button(state: CompareState) -> Any:
    edit = state.last_edit
    if edit is None:
        return gr.update(visible=False)
    return gr.update(visible=True, value="↶ Undo last label")


def _labels_view(services: Services, state: CompareState, message: str = "") -> CompareView:
    return view(
        state,
        **_galleries(services, state),
        selection=_selection_text(services, state),
        undo=_undo_button(state),
        message=message,
    )


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
    default_a, default_b = default_keys(_options(services))
    return CompareState(
        collection=default_collection(services), model_a=default_a, model_b=default_b
    )


def on_load(services: Services, state: CompareState, collection: str | None) -> CompareView:
    """Page load (cheap): follow the shared collection, refresh the model choices."""
    fresh = initial_state(services)
    if collection and services.store.find_collection(collection) is not None:
        fresh = dataclasses.replace(fresh, collection=collection)
    state, pickers = _with_pickers(services, fresh, current_collection(services, fresh.collection))
    return view(
        state,
        **_dropdowns(services, state),
        **pickers,
        note=_note(services, state.model_a == state.model_b),
        gallery_a=[],
        gallery_b=[],
        selection=_selection_text(services, state),
        undo=_undo_button(state),
    )


def switch_collection(services: Services, state: CompareState, name: str | None) -> CompareView:
    """The Curate tab opened another collection: forget the results of the old one."""
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
        table=_empty_table(),
        metrics="*Open this tab to compare the models on the new collection.*",
        selection=_selection_text(services, state),
        negative_caption=gr.update(choices=[], value=None),
        undo=_undo_button(state),
    )


def refresh_models(services: Services, state: CompareState) -> CompareView:
    """Fill the model choices again (a run finished since the page was opened)."""
    state = _keys_still_valid(services, state)
    return view(state, **_dropdowns(services, state))


def open_tab(
    services: Services, state: CompareState, k: int, upload: Any = None, progress: Any = None
) -> CompareView:
    """The tab was opened: refresh the run list; compute the comparison unless it is current."""
    state = _keys_still_valid(services, state)
    dropdowns = _dropdowns(services, state)
    collection = current_collection(services, state.collection)
    if collection is not None and state.loaded_for == _loaded_key(services, state, collection):
        return view(state, **dropdowns)
    return choose_models(services, state, state.model_a, state.model_b, k, upload, progress)


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
        state, fields = _comparison(services, state, progress)
    except FAILURES as exc:
        state = dataclasses.replace(state, loaded_for=None)
        return view(state, message=warn(str(exc)), **_dropdowns(services, state))
    fields.update(_dropdowns(services, state))
    if state.query_kind is None:
        return view(state, **fields, gallery_a=[], gallery_b=[])
    rerun = _run(services, state, k, upload, progress)
    merged = {name: value for name, value in rerun._asdict().items() if not is_skip(value)}
    merged.pop("state")
    return view(rerun.state, **{**fields, **merged})


def set_direction(
    services: Services, state: CompareState, label: str, progress: Any = None
) -> CompareView:
    """Show the table for the other direction (text → image or image → text)."""
    state = dataclasses.replace(state, direction=DIRECTIONS.get(label, "text_to_image"))
    collection = current_collection(services, state.collection)
    if collection is None:
        return view(state)
    try:
        a, b = _load_models(services, state, progress)
        if b is None:
            return view(state, table=_empty_table())
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
        a, b = _load_models(services, state, progress)
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
        **_galleries(services, state),
        selection=_selection_text(services, state),
        negative_caption=_suggestions(services, state),
        column_b=gr.update(visible=b is not None),
        title_a=f"### A · {a.ref.label}",
        title_b=f"### B · {b.ref.label}" if b else "",
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
    hit = _selected_hit(state)
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


# -- selecting and labeling ----------------------------------------------------------------------
def select_hit(services: Services, state: CompareState, side: str, index: int) -> CompareView:
    """A click on a result of gallery ``side`` (``"a"`` or ``"b"``)."""
    hits = state.hits_a if side == "a" else state.hits_b
    if not 0 <= index < len(hits):
        return view(state, message="That result is gone; run the query again.")
    state = dataclasses.replace(state, selected=(side, int(index)))
    return _labels_view(services, state)


def _refused(state: CompareState, exc: LoginRequired) -> CompareView:
    """A write refused for want of a login: a toast and the message line, nothing else changes."""
    return view(state, message=warn(exc.message))


def mark(
    services: Services,
    state: CompareState,
    kind: str,
    author: str | None = None,
    profile: Any = None,
) -> CompareView:
    """Label the selected result *hard negative* or *also correct* for the query's caption.

    The author is the logged-in user (on a Space one is required), else ``author``."""
    try:
        author = label_author(services.settings, profile, author)
    except LoginRequired as exc:
        return _refused(state, exc)
    hit = _selected_hit(state)
    if hit is None:
        return view(state, message=warn("Click a result first."))
    if state.anchor is None:
        return view(state, message=warn(_selection_text(services, state)))
    try:
        edit = set_label(services.store, state.anchor, kind, sha256=hit.image_sha256, author=author)
    except StoreError as exc:
        return view(state, message=warn(str(exc)))
    state = dataclasses.replace(state, last_edit=edit)
    return _labels_view(services, state, f"Saved: {edit.describe()} (by {author}).")


def add_negative_caption(
    services: Services,
    state: CompareState,
    caption: str | None,
    author: str | None = None,
    profile: Any = None,
) -> CompareView:
    """Save a hard-negative caption for the query's pair (e.g. its attributes swapped)."""
    try:
        author = label_author(services.settings, profile, author)
    except LoginRequired as exc:
        return _refused(state, exc)
    if state.anchor is None:
        return view(state, message=warn(_selection_text(services, state)))
    if not (caption or "").strip():
        return view(state, message=warn("Write a hard-negative caption first."))
    try:
        edit = set_label(services.store, state.anchor, "negative", caption=caption, author=author)
    except StoreError as exc:
        return view(state, message=warn(str(exc)))
    state = dataclasses.replace(state, last_edit=edit)
    return view(
        state,
        **_galleries(services, state),
        undo=_undo_button(state),
        negative_caption=_suggestions(services, state),
        message=f"Saved: {edit.describe()} (by {author}).",
    )


def undo(services: Services, state: CompareState, profile: Any = None) -> CompareView:
    """Take back the last label change (on a Space: logged-in users only)."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refused(state, exc)
    edit = state.last_edit
    if edit is None:
        return view(state, message=warn("Nothing to undo."))
    try:
        undo_edit(services.store, edit)
    except StoreError as exc:
        return view(dataclasses.replace(state, last_edit=None), message=warn(str(exc)))
    state = dataclasses.replace(state, last_edit=None)
    return _labels_view(services, state, f"Undone: {edit.describe()}.")
