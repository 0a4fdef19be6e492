"""The Curate tab's state and handlers (the layout is in :mod:`mmdemo.ui.curate.layout`).

Handlers are plain functions ``handler(services, state, *values) -> CurateView``, called directly
by the tests. Every handler returns the whole view: the fields of :class:`CurateView` are the
event outputs, in order, so the wiring cannot drift from the handlers. Handlers that leave the
selected pair alone send ``gr.skip()`` for the editor, so a caption being typed is never
overwritten by an unrelated event (paging, filtering, importing).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.images import image_path, thumb_path
from mmdemo.data.store import SPLITS, Collection, Pair, StoreError
from mmdemo.services import Services
from mmdemo.text import html_text, md
from mmdemo.ui.common import collection_names, default_collection, warn
from mmdemo.ui.identity import LoginRequired, require_login

PAGE_SIZE = 48
ALL_SPLITS = "all"


@dataclass(frozen=True)
class CurateState:
    """What one browser session is looking at (kept in ``gr.State``)."""

    collection: str | None = None
    page: int = 0
    caption_filter: str = ""
    split_filter: str = ALL_SPLITS
    page_ids: tuple[int, ...] = ()
    """Pair ids shown in the gallery, in order: a gallery click gives an index into this."""
    selected: int | None = None
    last_deleted: int | None = None
    """The pair the Undo button brings back."""
    pending_delete: str | None = None
    """A collection whose deletion awaits confirmation."""


class CurateView(NamedTuple):
    """Everything a Curate handler outputs, in the order of the event outputs."""

    state: CurateState
    picker: Any
    stats: str
    gallery: list[tuple[str, str]]  # (thumbnail path, caption); see curate.as_outputs
    page_label: str
    prev: Any
    next: Any
    confirm: Any
    cancel: Any
    undo: Any
    message: str
    placeholder: Any  # editor fields from here on: gr.skip() when the selection is unchanged
    editor: Any
    image: Any
    caption: Any
    split: Any
    labels: Any


EDITOR_FIELDS = ("placeholder", "editor", "image", "caption", "split", "labels")


# -- rendering -----------------------------------------------------------------------------------
def initial_state(services: Services) -> CurateState:
    return CurateState(collection=default_collection(services))


def current_collection_of(
    services: Services, state: CurateState
) -> tuple[CurateState, Collection | None]:
    """The state's collection, falling back to the default one if it disappeared."""
    if state.collection is not None:
        found = services.store.find_collection(state.collection)
        if found is not None:
            return state, found
    name = default_collection(services)
    state = dataclasses.replace(
        state, collection=name, page=0, selected=None, last_deleted=None, pending_delete=None
    )
    return state, services.store.find_collection(name) if name else None


def stats_text(services: Services, collection: Collection | None) -> str:
    if collection is None:
        return "No collection yet: create one under **Manage collections**."
    stats = services.store.collection_stats(collection.id)
    splits = " · ".join(f"{name} {stats.splits.get(name, 0):,}" for name in SPLITS)
    text = (
        f"**{stats.pairs:,} pair{'s' if stats.pairs != 1 else ''}** ({splits}) · "
        f"**{stats.negatives:,} labeled negative{'s' if stats.negatives != 1 else ''}**"
    )
    if stats.caption_negatives:
        n = stats.caption_negatives
        text += f" ({n:,} caption{'s' if n != 1 else ''})"
    if stats.also_positives:
        text += f" · {stats.also_positives:,} also-positive"
    return text


def _thumb(services: Services, pair: Pair) -> str:
    images_dir = services.settings.images_dir
    thumb = thumb_path(images_dir, pair.image_sha256)
    return str(thumb if thumb.exists() else _original(services, pair))


def _original(services: Services, pair: Pair) -> Path:
    info = services.store.image_info(pair.image_sha256)
    ext = info["ext"] if info is not None else "png"
    return image_path(services.settings.images_dir, pair.image_sha256, ext)


def _gallery_caption(pair: Pair) -> str:
    text = pair.caption if len(pair.caption) <= 80 else pair.caption[:79] + "…"
    return text if pair.split == "train" else f"[{pair.split}] {text}"


def labels_text(services: Services, pair: Pair) -> str:
    """The pair's labels as a list naming captions (with a thumbnail of each labeled image)."""
    labels = services.store.labels_for_pair(pair.id)
    if not labels:
        return "No hard-negative labels for this pair yet."
    lines = [f"**Labels ({len(labels)})**"]
    for label in labels:
        kind = "hard negative" if label.kind == "negative" else "also correct"
        if label.negative_caption is not None:
            lines.append(f"- {kind}: caption “{md(label.negative_caption, 200)}”")
            continue
        sha = label.negative_sha256 or ""
        other = services.store.find_pair_by_image(pair.collection_id, sha)
        thumb = thumb_path(services.settings.images_dir, sha)
        picture = (
            f'<img src="/gradio_api/file={html_text(thumb)}" alt="" height="32"'
            ' style="display:inline;vertical-align:middle;margin:0 4px">'
            if thumb.exists()
            else ""
        )
        if other is None:
            lines.append(f"- {kind}: {picture}an image no longer in this collection")
        else:
            lines.append(f"- {kind}: {picture}“{md(other.caption, 200)}” (pair {other.id})")
    return "\n".join(lines)


def _editor(services: Services, state: CurateState) -> dict[str, Any]:
    pair = None
    if state.selected is not None:
        try:
            pair = services.store.get_pair(state.selected)
        except StoreError:
            pair = None
    if pair is None:
        return {
            "placeholder": gr.update(visible=True),
            "editor": gr.update(visible=False),
            "image": None,
            "caption": "",
            "split": "train",
            "labels": "",
        }
    return {
        "placeholder": gr.update(visible=False),
        "editor": gr.update(visible=True),
        "image": str(_original(services, pair)),
        "caption": pair.caption,
        "split": pair.split,
        "labels": labels_text(services, pair),
    }


def refresh(services: Services, state: CurateState) -> CurateView:
    """Re-read the store when a person comes back to the tab: labels made in the Label or
    Compare tab show in the counts. The pair editor keeps what is being typed."""
    return render(services, state, editor=False)


def render(
    services: Services, state: CurateState, message: str = "", *, editor: bool = True
) -> CurateView:
    """Read the store and build the whole view for ``state``.

    ``editor=False`` leaves the pair editor as it is on the page (``gr.skip()``).
    """
    state, collection = current_collection_of(services, state)
    store = services.store
    split = None if state.split_filter in (ALL_SPLITS, "", None) else state.split_filter
    pairs: list[Pair] = []
    total = 0
    pages = 1
    if collection is not None:
        total = store.count_pairs(collection.id, state.caption_filter, split)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        page = min(max(0, state.page), pages - 1)
        pairs, total = store.page_pairs(collection.id, page, PAGE_SIZE, state.caption_filter, split)
        state = dataclasses.replace(state, page=page)
    if state.selected is not None:
        try:
            selected = store.get_pair(state.selected)
        except StoreError:
            selected = None
        if selected is None or collection is None or selected.collection_id != collection.id:
            state = dataclasses.replace(state, selected=None)
    state = dataclasses.replace(state, page_ids=tuple(p.id for p in pairs))

    filtered = bool(state.caption_filter.strip()) or split is not None
    noun = "pair" if total == 1 else "pairs"
    page_label = f"Page {state.page + 1} of {pages} · {total:,} {noun}"
    if filtered:
        page_label += " match the filter"

    pending = state.pending_delete
    confirm_label = "Really delete?"
    if pending is not None and collection is not None:
        n = store.count_pairs(collection.id)
        confirm_label = f"Really delete “{pending}” and its {n:,} pairs?"
    editor_values = (
        _editor(services, state) if editor else {name: gr.skip() for name in EDITOR_FIELDS}
    )
    return CurateView(
        state=state,
        picker=gr.update(choices=collection_names(services), value=state.collection),
        stats=stats_text(services, collection),
        gallery=[(_thumb(services, p), _gallery_caption(p)) for p in pairs],
        page_label=page_label,
        prev=gr.update(interactive=state.page > 0),
        next=gr.update(interactive=state.page < pages - 1),
        confirm=gr.update(visible=pending is not None, value=confirm_label),
        cancel=gr.update(visible=pending is not None),
        undo=gr.update(
            visible=state.last_deleted is not None,
            value=f"Undo delete of pair {state.last_deleted}",
        ),
        message=message,
        **editor_values,
    )


def _fail(services: Services, state: CurateState, exc: Exception, **kw: Any) -> CurateView:
    return render(services, state, warn(str(exc)), **kw)


def _refuse(services: Services, state: CurateState, exc: LoginRequired) -> CurateView:
    """The view after a write refused for want of a login: the store and the editor untouched."""
    return render(services, state, warn(exc.message), editor=False)


# -- collections ---------------------------------------------------------------------------------
def on_load(services: Services, state: CurateState, remembered: str | None) -> CurateView:
    """Page load: reopen the collection this browser last used, and show the store as it is now
    (the page itself may have been built long ago)."""
    if remembered and services.store.find_collection(remembered) is not None:
        state = dataclasses.replace(state, collection=remembered)
    return render(services, state)


def switch_collection(services: Services, state: CurateState, name: str | None) -> CurateView:
    state = CurateState(
        collection=name,
        caption_filter=state.caption_filter,
        split_filter=state.split_filter,
    )
    return render(services, state)


def create_collection(
    services: Services, state: CurateState, name: str, profile: Any = None
) -> CurateView:
    """Create a collection and open it (on a Space: logged-in users only)."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, dataclasses.replace(state, pending_delete=None), exc)
    try:
        created = services.store.create_collection(name)
    except StoreError as exc:
        return _fail(services, dataclasses.replace(state, pending_delete=None), exc, editor=False)
    state = CurateState(
        collection=created.name,
        caption_filter=state.caption_filter,
        split_filter=state.split_filter,
    )
    return render(
        services, state, f"Created “{md(created.name)}”: open **Import pairs** to add images."
    )


def rename_collection(
    services: Services, state: CurateState, new_name: str, profile: Any = None
) -> CurateView:
    state = dataclasses.replace(state, pending_delete=None)
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, state, exc)
    if state.collection is None:
        return render(services, state, warn("There is no collection to rename."), editor=False)
    try:
        renamed = services.store.rename_collection(state.collection, new_name)
    except StoreError as exc:
        return _fail(services, state, exc, editor=False)
    state = dataclasses.replace(state, collection=renamed.name)
    return render(services, state, f"Renamed to “{md(renamed.name)}”.", editor=False)


def ask_delete_collection(
    services: Services, state: CurateState, profile: Any = None
) -> CurateView:
    """First step of deleting a collection: show the confirm button."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, dataclasses.replace(state, pending_delete=None), exc)
    if state.collection is None:
        return render(services, state, warn("There is no collection to delete."), editor=False)
    return render(
        services, dataclasses.replace(state, pending_delete=state.collection), editor=False
    )


def cancel_delete_collection(services: Services, state: CurateState) -> CurateView:
    return render(services, dataclasses.replace(state, pending_delete=None), editor=False)


def confirm_delete_collection(
    services: Services, state: CurateState, profile: Any = None
) -> CurateView:
    """Second step: delete the collection named when the first step was taken."""
    name = state.pending_delete
    state = dataclasses.replace(state, pending_delete=None)
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, state, exc)
    if name is None:
        return render(services, state, editor=False)
    try:
        services.store.delete_collection(name)
    except StoreError as exc:
        return _fail(services, state, exc)
    state = CurateState(caption_filter=state.caption_filter, split_filter=state.split_filter)
    return render(services, state, f"Deleted collection “{md(name)}”.")


# -- gallery -------------------------------------------------------------------------------------
def set_filter(
    services: Services, state: CurateState, caption_filter: str, split_filter: str
) -> CurateView:
    state = dataclasses.replace(
        state,
        caption_filter=caption_filter or "",
        split_filter=split_filter or ALL_SPLITS,
        page=0,
        pending_delete=None,
    )
    return render(services, state, editor=False)


def change_page(services: Services, state: CurateState, delta: int) -> CurateView:
    state = dataclasses.replace(state, page=state.page + delta, pending_delete=None)
    return render(services, state, editor=False)


def open_pair(
    services: Services, state: CurateState, index: int, typed_caption: str | None = None
) -> CurateView:
    """A gallery click: ``index`` is the position of the thumbnail on the current page.

    ``typed_caption`` is what the caption box holds: an unsaved edit of the pair open so far is
    saved first; if it cannot be saved, that pair stays open with its text and the reason.
    """
    state = dataclasses.replace(state, pending_delete=None)
    if not 0 <= index < len(state.page_ids):
        return render(services, state, "That thumbnail is gone; the gallery was refreshed.")
    saved = ""
    if state.page_ids[index] != state.selected:
        try:
            saved = _save_typed_caption(services, state, typed_caption)
        except StoreError as exc:
            return render(
                services, state, warn(f"Pair {state.selected} not saved: {exc}"), editor=False
            )
    return render(services, dataclasses.replace(state, selected=state.page_ids[index]), saved)


def open_pair_by_id(
    services: Services, state: CurateState, pair_id: int, typed_caption: str | None = None
) -> CurateView:
    """Open a pair of the open collection named by id (e.g. a point of the embedding map),
    wherever the gallery is; an unsaved caption edit is saved first, as on a gallery click."""
    state = dataclasses.replace(state, pending_delete=None)
    state, collection = current_collection_of(services, state)
    try:
        pair = services.store.get_pair(pair_id)
    except StoreError:
        pair = None
    if pair is None or collection is None or pair.collection_id != collection.id:
        return render(services, state, warn(f"Pair {pair_id} is not in this collection."))
    saved = ""
    if pair.id != state.selected:
        try:
            saved = _save_typed_caption(services, state, typed_caption)
        except StoreError as exc:
            return render(
                services, state, warn(f"Pair {state.selected} not saved: {exc}"), editor=False
            )
    return render(services, dataclasses.replace(state, selected=pair.id), saved)


# -- the pair editor -----------------------------------------------------------------------------
def _save_typed_caption(services: Services, state: CurateState, typed: str | None) -> str:
    """Save the caption box's text for the open pair when it differs from the stored caption.

    Returns the message to show ("" when there was nothing to save); raises ``StoreError``.
    """
    if state.selected is None or typed is None:
        return ""
    try:
        stored = services.store.get_pair(state.selected)
    except StoreError:
        return ""
    if " ".join(typed.split()) == stored.caption:
        return ""
    pair = services.store.update_pair(stored.id, caption=typed)
    return f"Saved the caption of pair {pair.id}: “{md(pair.caption, 80)}”."


def save_pair(
    services: Services,
    state: CurateState,
    caption: str | None,
    split: str | None,
    profile: Any = None,
) -> CurateView:
    """Write the caption and/or split of the selected pair (``None`` leaves a field as is)."""
    state = dataclasses.replace(state, pending_delete=None)
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, state, exc)
    if state.selected is None:
        return render(services, state, warn("Select a pair first."))
    try:
        pair = services.store.update_pair(state.selected, caption=caption, split=split)
    except StoreError as exc:
        return _fail(services, state, exc, editor=False)
    return render(services, state, f"Saved pair {pair.id}.")


def save_split(
    services: Services,
    state: CurateState,
    typed_caption: str | None,
    split: str | None,
    profile: Any = None,
) -> CurateView:
    """A click on a split: save it together with the caption box's text, and leave both
    fields as the person set them (nothing typed is reverted)."""
    view = save_pair(services, state, typed_caption, split, profile)
    return view._replace(caption=gr.skip(), split=gr.skip())


def save_caption_on_leave(
    services: Services, state: CurateState, typed_caption: str | None, profile: Any = None
) -> str | Any:
    """The caption box lost the focus: save an edit so a click elsewhere never loses it.

    Returns the message for the status line (``gr.skip()`` when nothing changed); writes no
    other output, so it cannot race the click that took the focus away.
    """
    try:
        require_login(profile, services.settings)
        message = _save_typed_caption(services, state, typed_caption)
    except LoginRequired as exc:
        return warn(exc.message)
    except StoreError as exc:
        return warn(f"Pair {state.selected} not saved: {exc}")
    return message or gr.skip()


def delete_pair(services: Services, state: CurateState, profile: Any = None) -> CurateView:
    state = dataclasses.replace(state, pending_delete=None)
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, state, exc)
    if state.selected is None:
        return render(services, state, warn("Select a pair first."))
    try:
        pair = services.store.delete_pair(state.selected)
    except StoreError as exc:
        return _fail(services, state, exc)
    state = dataclasses.replace(state, selected=None, last_deleted=pair.id)
    return render(services, state, f"Deleted pair {pair.id} (“{md(pair.caption, 60)}”).")


def undo_delete(services: Services, state: CurateState, profile: Any = None) -> CurateView:
    state = dataclasses.replace(state, pending_delete=None)
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _refuse(services, state, exc)
    if state.last_deleted is None:
        return render(services, state, warn("Nothing to undo."))
    try:
        pair = services.store.restore_pair(state.last_deleted)
    except StoreError as exc:
        return _fail(services, dataclasses.replace(state, last_deleted=None), exc)
    state = dataclasses.replace(state, selected=pair.id, last_deleted=None)
    return render(services, state, f"Restored pair {pair.id}.")
