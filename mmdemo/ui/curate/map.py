"""Curate's embedding map: every pair as a point of a model's image-embedding map.

Coloured by split, by label state or by whether the model gets the pair wrong (its own image
not first, or not in the top k, for its caption). Hover shows a pair, a click opens it in the
pair editor, a box or lasso selection can be moved to a split (undone with the Splits panel's
undo) or sent to the Label tab (``shared.label_focus``). The drawing is the small ``gr.HTML``
of :mod:`mmdemo.ui.curate.map_canvas`; the projection is :mod:`mmdemo.retrieval.projection`.

Handlers are plain functions ``handler(services, curate_state, map_state, ...)`` returning a
:class:`MapView` (tested directly); :mod:`mmdemo.ui.curate.map_panel` lays them out and wires
them. The map follows the Curate tab's collection and is only computed while its accordion is
open, so the model runs only for the person who asks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import gradio as gr

from mmdemo.data.images import thumb_path
from mmdemo.data.splits import GROUPING, move_pairs
from mmdemo.data.store import SPLITS, Collection, StoreError
from mmdemo.retrieval.compare import (
    CompareError,
    LoadedModel,
    default_keys,
    load,
    model_options,
    resolve_model,
)
from mmdemo.retrieval.models import ModelLoadError
from mmdemo.retrieval.projection import (
    PCA,
    UMAP,
    ProjectionError,
    available_methods,
    collection_map,
    own_image_ranks,
)
from mmdemo.services import Services
from mmdemo.text import md, shorten
from mmdemo.ui.common import warn
from mmdemo.ui.curate.handlers import (
    CurateState,
    CurateView,
    current_collection_of,
    open_pair_by_id,
    render,
)
from mmdemo.ui.curate.splits import MAX_UNDO, SplitsState, panel_refresh
from mmdemo.ui.identity import LoginRequired, require_login
from mmdemo.ui.results import image_progress, say_progress

SPLIT, LABEL, WRONG = "split", "label", "wrong"
COLOURINGS = (
    ("Split", SPLIT),
    ("Labeled or not", LABEL),
    ("Model gets it wrong", WRONG),
)
COLOURED_BY = {
    SPLIT: "by split",
    LABEL: "by label state",
    WRONG: "by whether the model finds each pair's image for its caption",
}
K_CHOICES = (1, 5, 10)
SPLIT_COLOURS = {"train": "#4c78a8", "eval": "#f58518", "test": "#54a24b"}
GOOD, MIDDLE, BAD, GREY = "#54a24b", "#eeca3b", "#e45756", "#9d9da6"
HINT = "*Drag a box (or a lasso) on the map to select pairs; Shift adds to the selection.*"
CAPTION_CHARS = 300
SHOW_EDITOR_JS = (
    "() => { const box = document.querySelector('#mm-caption');"
    " if (box) box.scrollIntoView({block: 'center', behavior: 'smooth'}); }"
)


@dataclass(frozen=True)
class MapState:
    """One browser session's map (its own ``gr.State``)."""

    open: bool = False
    model: str | None = None
    """A model key (``"base"``, ``"run:NAME"``); ``None``: the newest finished run, else base."""
    colour: str = SPLIT
    method: str = PCA
    k: int = 5
    selected: tuple[int, ...] = ()
    """Pair ids of the selection on the map (of :attr:`collection`)."""
    collection: str | None = None
    """The collection the drawn map shows."""
    shown: str | None = None
    """What the drawn map was made from (:func:`map_key`): equal means the map is current."""


class MapView(NamedTuple):
    """Everything a map handler outputs, in the order of the event outputs."""

    state: MapState
    plot: Any  # the canvas's value: map_payload as JSON (encode), or gr.skip()
    model: Any
    status: Any
    selection: Any
    move: Any
    label: Any


class MoveView(NamedTuple):
    """A move of the selection: the Curate view, the Splits panel (its undo) and the map."""

    curate: CurateView
    splits: SplitsState
    panel: tuple
    """The Splits panel's undo-make, undo-move and move buttons."""
    map: MapView


# -- models -------------------------------------------------------------------------------------
def model_key(services: Services, state: MapState) -> str:
    """The model the map uses: the chosen one while it exists, else the newest finished run."""
    options = model_options(services.store, services.model)
    known = {ref.key for ref in options}
    if state.model in known:
        return state.model
    return default_keys(options)[1]


def model_dropdown(services: Services, state: MapState) -> Any:
    choices = [(ref.label, ref.key) for ref in model_options(services.store, services.model)]
    return gr.update(choices=choices, value=model_key(services, state))


def _load(services: Services, key: str) -> LoadedModel:
    return load(services, resolve_model(services.store, services.model, key))


# -- the payload the canvas draws -----------------------------------------------------------------
def map_key(services: Services, collection: Collection, state: MapState) -> str:
    """What the map depends on (model, options, the collection's pairs, splits and labels)."""
    store = services.store
    parts = (
        collection.name,
        model_key(services, state),
        state.colour,
        state.method,
        state.k,
        store.pairs_signature(collection.id),
        store.count_labeled_pairs(collection.id),
        len(store.labels_for_collection(collection.id)) if state.colour == LABEL else 0,
        state.selected,
    )
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _legend(names: list[str], colours: list[str], codes: list[int]) -> list[dict[str, Any]]:
    return [
        {"name": name, "color": colour, "count": codes.count(k)}
        for k, (name, colour) in enumerate(zip(names, colours, strict=True))
    ]


def colour_codes(
    services: Services,
    model: LoadedModel,
    collection: Collection,
    pair_ids: list[int],
    colour: str,
    k: int,
) -> tuple[list[int], list[dict[str, Any]]]:
    """A colour index per pair and the legend (name, colour, count) for a colouring."""
    store = services.store
    if colour == LABEL:
        labeled = {label.pair_id for label in store.labels_for_collection(collection.id)}
        codes = [0 if pid in labeled else 1 for pid in pair_ids]
        return codes, _legend(["labeled", "not labeled"], [BAD, GREY], codes)
    if colour == WRONG:
        ranks = own_image_ranks(
            store, services.embeddings, model.model, model.fingerprint, collection.id
        )
        k = max(1, int(k))
        codes = [
            0 if ranks.get(pid, 1) == 1 else (1 if ranks.get(pid, 1) <= k else 2)
            for pid in pair_ids
        ]
        if k == 1:
            codes = [min(c, 1) for c in codes]
            return codes, _legend(["right (top 1)", "wrong (not top 1)"], [GOOD, BAD], codes)
        names = ["right (top 1)", f"in top {k}, not first", f"not in top {k}"]
        return codes, _legend(names, [GOOD, MIDDLE, BAD], codes)
    split_of = {p.id: p.split for p in store.list_pairs(collection.id)}
    codes = [SPLITS.index(split_of.get(pid, "train")) for pid in pair_ids]
    return codes, _legend(list(SPLITS), [SPLIT_COLOURS[s] for s in SPLITS], codes)


def map_payload(
    services: Services,
    collection: Collection,
    state: MapState,
    progress: Any = None,
) -> tuple[dict[str, Any], str]:
    """The canvas's value for the collection under the state's model, and a status line."""
    key = model_key(services, state)
    model = _load(services, key)
    embedding_map = collection_map(
        services.store,
        services.embeddings,
        model.model,
        model.fingerprint,
        collection.id,
        state.method,
        image_progress(progress, f"Encoding images ({model.ref.label})"),
    )
    say_progress(progress, "Colouring the map…")
    ids = [int(i) for i in embedding_map.pair_ids.tolist()]
    codes, legend = colour_codes(services, model, collection, ids, state.colour, state.k)
    present = set(ids)
    payload = {
        "collection": collection.name,
        "ids": ids,
        "x": [round(float(v), 4) for v in embedding_map.points[:, 0]],
        "y": [round(float(v), 4) for v in embedding_map.points[:, 1]],
        "c": codes,
        "legend": legend,
        "selected": [i for i in state.selected if i in present],
        "empty": "No pairs in this collection yet." if not ids else "",
    }
    method = "UMAP" if state.method == UMAP else "PCA"
    coloured = COLOURED_BY[state.colour]
    n = len(ids)
    status = (
        f"{n:,} pair{'s' if n != 1 else ''} · {method} of the image embeddings of "
        f"**{md(model.ref.label)}** · coloured {coloured}"
    )
    return payload, status


def encode(payload: dict[str, Any]) -> str:
    """The payload as the canvas's value: a JSON string. (A dict value is deep-proxied and
    compared by Gradio's frontend on every update: 10,000 points took seconds that way.)"""
    return json.dumps(payload, separators=(",", ":"))


# -- what the map shows ---------------------------------------------------------------------------
def selection_text(state: MapState) -> str:
    n = len(state.selected)
    if not n:
        return HINT
    return f"**{n:,} pair{'s' if n != 1 else ''} selected** on the map."


def _buttons(state: MapState) -> tuple[Any, Any]:
    n = len(state.selected)
    noun = f"{n:,} selected" if n else "selected"
    return (
        gr.update(value=f"Move {noun} to", interactive=bool(n)),
        gr.update(value=f"Open {noun} in Label", interactive=bool(n)),
    )


def _view(services: Services, state: MapState, plot: Any, status: Any) -> MapView:
    move, label = _buttons(state)
    return MapView(
        state,
        plot,
        model_dropdown(services, state),
        status,
        selection_text(state),
        move,
        label,
    )


def draw(services: Services, curate: CurateState, state: MapState, progress: Any = None) -> MapView:
    """The map for the Curate tab's collection (``gr.skip()`` for the canvas when the drawn
    one is current); the selection is kept only within one collection."""
    _, collection = current_collection_of(services, curate)
    if collection is None:
        state = dataclasses.replace(state, selected=(), collection=None, shown=None)
        empty = {"ids": [], "empty": "No collection yet: create one under Manage collections."}
        return _view(services, state, encode(empty), "")
    if state.collection != collection.name:
        state = dataclasses.replace(state, selected=(), collection=collection.name)
    shown = map_key(services, collection, state)
    if shown == state.shown:
        return _view(services, state, gr.skip(), gr.skip())
    try:
        payload, status = map_payload(services, collection, state, progress)
    except (CompareError, ModelLoadError, ProjectionError, ValueError) as exc:
        state = dataclasses.replace(state, shown=None)
        return _view(services, state, gr.skip(), warn(f"The map cannot be drawn: {exc}"))
    state = dataclasses.replace(state, shown=shown)
    return _view(services, state, encode(payload), status)


def expand(
    services: Services, curate: CurateState, state: MapState, progress: Any = None
) -> MapView:
    """The accordion was opened: draw the map (or keep the drawn one if it is current)."""
    return draw(services, curate, dataclasses.replace(state, open=True), progress)


def collapse(services: Services, state: MapState) -> MapView:
    """The accordion was closed: nothing is computed until it opens again."""
    state = dataclasses.replace(state, open=False)
    return MapView(state, *(gr.skip(),) * (len(MapView._fields) - 1))


def refresh(
    services: Services, curate: CurateState, state: MapState, progress: Any = None
) -> MapView:
    """The tab was shown or the collection changed: redraw an open map if it is out of date
    (a closed one only refreshes its model choices)."""
    if not state.open:
        return _view(services, state, gr.skip(), gr.skip())
    return draw(services, curate, state, progress)


def change_options(
    services: Services,
    curate: CurateState,
    state: MapState,
    model: str | None,
    colour: str | None,
    method: str | None,
    k: float | None,
    progress: Any = None,
) -> MapView:
    """A person changed the model, the colouring, the projection or k."""
    state = dataclasses.replace(
        state,
        model=model or state.model,
        colour=colour if colour in (SPLIT, LABEL, WRONG) else SPLIT,
        method=method if method in available_methods() else PCA,
        k=int(k) if k else state.k,
    )
    view = draw(services, curate, state, progress)
    return view._replace(model=gr.skip())  # never write back into the dropdown a person used


def select_points(
    services: Services, curate: CurateState, state: MapState, pair_ids: Any
) -> MapView:
    """The canvas sent a selection: keep the ids that are pairs of the map's collection."""
    _, collection = current_collection_of(services, curate)
    ids: list[int] = []
    if collection is not None and isinstance(pair_ids, list | tuple):
        wanted = []
        for value in pair_ids:
            try:
                wanted.append(int(value))
            except (TypeError, ValueError):
                continue
        ids = [p.id for p in services.store.get_pairs(wanted) if p.collection_id == collection.id]
    state = dataclasses.replace(state, selected=tuple(ids))
    if state.shown is not None and collection is not None:
        state = dataclasses.replace(state, shown=map_key(services, collection, state))
    move, label = _buttons(state)
    skip = gr.skip()
    return MapView(state, skip, skip, skip, selection_text(state), move, label)


def open_point(
    services: Services, curate: CurateState, pair_id: Any, typed_caption: str | None
) -> CurateView:
    """A click on a point opens its pair in the editor (as a gallery click would)."""
    try:
        pid = int(pair_id)
    except (TypeError, ValueError):
        return render(services, curate, warn("That point names no pair."), editor=False)
    return open_pair_by_id(services, curate, pid, typed_caption)


def move_selection(
    services: Services,
    curate: CurateState,
    state: MapState,
    splits: SplitsState,
    target: str | None,
    profile: Any = None,
) -> MoveView:
    """Move the selected pairs to ``target``; the Splits panel's undo takes it back."""
    curate = dataclasses.replace(curate, pending_delete=None)

    def done(message: str, splits_: SplitsState = splits, st: MapState = state) -> MoveView:
        view = render(services, curate, message, editor=False)
        selected = view.state.selected
        if selected is not None:  # the open pair's split radio must show its new split
            with contextlib.suppress(StoreError):
                view = view._replace(split=services.store.get_pair(selected).split)
        return MoveView(view, splits_, panel_refresh(services, view.state, splits_), redraw(st))

    def redraw(st: MapState) -> MapView:
        return draw(services, curate, st) if st.open else _view(services, st, gr.skip(), gr.skip())

    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return done(warn(exc.message))
    if target not in SPLITS:
        return done(warn(f"Choose a split: {', '.join(SPLITS)}."))
    if not state.selected:
        return done(warn("Select pairs on the map first (drag a box around them)."))
    try:
        change = move_pairs(services.store, state.selected, target)
    except (ValueError, StoreError) as exc:
        return done(warn(str(exc)))
    n = len(state.selected)
    if not change.changed:
        return done(f"Nothing to move: the {n:,} selected pairs are all in {target} already.")
    splits = SplitsState(undo=(*splits.undo, change)[-MAX_UNDO:])
    message = (
        f"Moved {change.changed:,} of the {n:,} selected pairs to {target}: "
        f"{change.counts_text()}. **Splits** has the undo."
    )
    if change.crossing:
        message = warn(
            f"Moved {change.changed:,} selected pairs to {target}; {change.crossing:,} group"
            f"{'s' if change.crossing != 1 else ''} of {GROUPING} now span two splits (the same "
            f"caption or image in train and eval leaks). {change.counts_text()}."
        )
    return done(message, splits)


def open_in_label(
    services: Services, curate: CurateState, state: MapState
) -> tuple[dict[str, Any] | Any, str]:
    """The value for ``shared.label_focus`` (the selection, to label next) and a message."""
    _, collection = current_collection_of(services, curate)
    if collection is None or not state.selected:
        return gr.skip(), warn("Select pairs on the map first (drag a box around them).")
    focus = {"collection": collection.name, "pair_ids": list(state.selected)}
    n = len(state.selected)
    return focus, (
        f"{n:,} pair{'s' if n != 1 else ''} of “{md(collection.name)}” ready to label: "
        "open the **Label** tab."
    )


def pair_card(services: Services, pair_id: Any) -> dict[str, Any] | None:
    """What a hover shows: the caption (plain text; the canvas sets it as text), the split and
    the thumbnail's URL (served like the gallery's). ``None`` for a pair that is gone."""
    try:
        pair = services.store.get_pair(int(pair_id))
    except (StoreError, TypeError, ValueError):
        return None
    thumb = thumb_path(services.settings.images_dir, pair.image_sha256)
    url = "/gradio_api/file=" + quote(str(thumb), safe="/") if thumb.exists() else None
    return {
        "id": pair.id,
        "caption": shorten(pair.caption, CAPTION_CHARS),
        "meta": f"pair {pair.id} · {pair.split}",
        "thumb": url,
    }
