"""The Label tab's handlers (the layout and the keyboard shortcuts are in
:mod:`mmdemo.ui.label.layout`; the state, the outputs and the text they show in
:mod:`mmdemo.ui.label.view`; the annotator, the claims, blind mode and the queue in
:mod:`mmdemo.ui.label.team`, the names the layout and the tests use re-exported here).

The tab walks through the pairs of a collection. For each it shows the caption, its own image
and the images the chosen model ranks highest for the caption with the positive left out
(:func:`mmdemo.retrieval.negatives.label_candidates`), as thumbnails and as a numbered list with
every
caption in full; a candidate is marked *hard negative* or *also correct* with one click or key,
or the pair is skipped. Every label is saved at once, with its author, and the last change can
be undone.

Labeling must feel instant, so each handler changes only what its action changes (the tab wires
each event to those outputs only, see :data:`SELECT_OUTPUTS` and :data:`LABEL_OUTPUTS`): the page
shows a selection by itself and the server only records it; a label re-reads the pair's labels
(one query) and redraws the marks, the list and the counts from the state, without ranking,
encoding or loading the model again. Only a new pair (next, previous, go to, other options,
opening the tab) ranks.

Which pair comes next (:mod:`mmdemo.retrieval.label_order`): by default the hardest first,
the pairs whose own image ranks worst for their caption under the chosen model (the newest
finished run of the collection until the person picks another), else in order or shuffled.
Pairs chosen elsewhere (``shared.label_focus``, e.g. a selection on the embedding map) come
first. For a team on a Space each annotator walks their own queue: a pair someone has open is
claimed for :data:`CLAIM_S` and passed over by the others, a labeled pair is done for everyone,
except the overlap share (``MMDEMO_LABEL_OVERLAP``) that everyone labels for agreement. Blind
mode shows only the annotator's own labels. The tab shows the team's agreement
(:mod:`mmdemo.data.agreement`) when it opens.

User text (captions, collection and model names) reaches Markdown through
:func:`mmdemo.text.md` and the list's HTML through :func:`mmdemo.text.html_text`.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import gradio as gr

from mmdemo.data.store import StoreError, author_key
from mmdemo.hub.publish import on_space
from mmdemo.retrieval.compare import BASE, clear_label
from mmdemo.retrieval.label_order import ORDERS
from mmdemo.retrieval.negatives import caption_labels_of, open_suggestions, with_labels
from mmdemo.services import Services
from mmdemo.ui.common import current_collection, default_collection, warn
from mmdemo.ui.identity import LoginRequired, require_login
from mmdemo.ui.label.team import CLAIM_S as CLAIM_S
from mmdemo.ui.label.team import (
    _agreement,
    _as,
    _first_or_next,
    _next_selection,
    _take_focus,
    default_model,
    show_pair,
    visible_labels,
)
from mmdemo.ui.label.view import (
    ALL_SPLITS,
    KINDS,
    NO_PAIR,
    SPLIT_CHOICES,
    LabelState,
    LabelView,
    _drawn,
    _listing,
    _model_dropdown,
    _progress,
    _suggestions,
    _undo_button,
    _undo_changes,
    caption_labels_text,
    selection_html,
    view,
)
from mmdemo.ui.label.view import DEFAULT_K as DEFAULT_K
from mmdemo.ui.label.view import HEADING_CHARS as HEADING_CHARS
from mmdemo.ui.label.view import LABEL_OUTPUTS as LABEL_OUTPUTS
from mmdemo.ui.label.view import LINE_CHARS as LINE_CHARS
from mmdemo.ui.label.view import MAX_K as MAX_K
from mmdemo.ui.label.view import PAIR_OUTPUTS as PAIR_OUTPUTS
from mmdemo.ui.label.view import SELECT_OUTPUTS as SELECT_OUTPUTS
from mmdemo.ui.label.view import agreement_text as agreement_text
from mmdemo.ui.label.view import claim_note as claim_note
from mmdemo.ui.labeling import LabelOutcome, LabelTarget, apply_label, caption_target, undo_label


def _take_pick(state: LabelState, picked: Any, shown: Any) -> LabelState | str:
    """The candidate the page showed as selected when the key was pressed (``picked``, an index,
    on the pair ``shown``), or why nothing may be labeled: the pair changed meanwhile (a key
    pressed before the next pair was drawn). ``None``: keep the state's selection."""
    if shown is not None and int(shown) >= 0 and int(shown) != state.pair_id:
        return "The pair changed before that key took effect: nothing was saved. Press it again."
    if picked is not None and 0 <= int(picked) < len(state.candidates):
        return dataclasses.replace(state, selected=int(picked))
    return state


# -- events ---------------------------------------------------------------------------------------
def initial_state(services: Services) -> LabelState:
    return LabelState(collection=default_collection(services))


def on_load(services: Services, state: LabelState, collection: str | None) -> LabelView:
    """Page load (cheap: one look-up, only the state changes): start on the browser's current
    collection; the pair shows when the tab is opened."""
    del state  # a page load is a new session
    found = current_collection(services, collection)
    name = found.name if found is not None else None
    return view(LabelState(collection=name, seed=secrets.randbelow(2**31)))


def open_tab(
    services: Services,
    state: LabelState,
    collection: str | None = None,
    progress: Any = None,
    focus: Any = None,
    profile: Any = None,
) -> LabelView:
    """The tab was opened: follow the browser's current collection (``collection``, the
    ``shared.collection`` value; a stale name falls back to the default). In another
    collection than before the walk starts over there; otherwise the current pair shows again
    (labels may have changed elsewhere), or the first pair to label.

    ``focus`` is ``shared.label_focus``: pairs chosen elsewhere to label first, in their order,
    when it names this collection (each value is taken once). ``profile`` is the Space login
    (the annotator); until the person picks a model, candidates and the order come from the
    collection's newest finished run."""
    state = _as(services, state, profile)
    found = current_collection(services, collection if collection else state.collection)
    name = found.name if found is not None else None
    if name != state.collection:
        state = dataclasses.replace(
            state, collection=name, pair_id=None, candidates=(), selected=None, history=()
        )
    if state.model_auto:
        state = dataclasses.replace(state, model=default_model(services, found))
    shown = None
    focused = _take_focus(services, state, found, focus)
    if focused is not None:
        state = focused
        if state.focus:
            history = state.history + ((state.pair_id,) if state.pair_id is not None else ())
            state = dataclasses.replace(state, history=history[-50:], selected=None)
            n = len(state.focus)
            said = f"Labeling the {n:,} pair{'s' * (n != 1)} you chose first."
            shown = show_pair(services, state, state.focus[0], progress, said)
    if shown is None and state.pair_id is not None and found is not None:
        try:
            pair = services.store.get_pair(state.pair_id)
        except StoreError:
            pair = None
        if pair is not None and pair.collection_id == found.id:
            shown = show_pair(services, state, pair.id, progress, keep_selection=True)
    if shown is None:
        shown = _first_or_next(services, state, None, progress)
    # Everything is drawn again: the dropdowns, the Undo button and the agreement too.
    st = shown.state
    return shown._replace(
        model=_model_dropdown(services, st),
        undo=_undo_button(st),
        agreement=_agreement(services, found),
        negative_caption=gr.update(
            choices=list(st.suggested), value=st.suggested[0] if st.suggested else None
        ),
    )


def set_options(
    services: Services,
    state: LabelState,
    model: str | None,
    split: str | None,
    unlabeled_only: bool,
    k: int | None = None,
    progress: Any = None,
    order: str | None = None,
    blind: bool | None = None,
    profile: Any = None,
) -> LabelView:
    """Another model, split, k, filter, order or blind mode: show the current pair again if it
    still fits (another order starts from its first pair)."""
    split = split if split in SPLIT_CHOICES else "train"
    order = order if order in ORDERS else state.order
    model = model or BASE
    before = state
    state = dataclasses.replace(
        _as(services, state, profile),
        model=model,
        model_auto=state.model_auto and model == state.model,
        split=split,
        unlabeled_only=bool(unlabeled_only),
        k=int(k or state.k),
        order=order,
        blind=state.blind if blind is None else bool(blind),
    )
    if order != before.order:
        return _first_or_next(services, state, None, progress)
    if state.pair_id is not None:
        try:
            pair = services.store.get_pair(state.pair_id)
        except StoreError:
            pair = None
        if pair is not None and split in (ALL_SPLITS, pair.split):
            return show_pair(services, state, pair.id, progress)
    return _first_or_next(services, state, None, progress)


def next_pair(
    services: Services, state: LabelState, progress: Any = None, profile: Any = None
) -> LabelView:
    """Skip (or go on after labeling): the next pair of the focus, else of the annotator's
    queue, wrapping around."""
    state = _as(services, state, profile)
    history = state.history + ((state.pair_id,) if state.pair_id is not None else ())
    state = dataclasses.replace(state, history=history[-50:], selected=None)
    if state.focus and state.pair_id in state.focus:
        index = state.focus.index(state.pair_id)
        if index + 1 < len(state.focus):
            return show_pair(services, state, state.focus[index + 1], progress)
        state = dataclasses.replace(state, focus=())
        return _first_or_next(services, state, None, progress, "Done with the pairs you chose.")
    return _first_or_next(services, state, state.pair_id, progress)


def previous_pair(services: Services, state: LabelState, progress: Any = None) -> LabelView:
    """Back to the pair shown before."""
    if not state.history:
        return view(state, message=warn("This is the first pair of this session."))
    *rest, last = state.history
    state = dataclasses.replace(state, history=tuple(rest), selected=None)
    return show_pair(services, state, last, progress)


def goto_pair(
    services: Services, state: LabelState, pair_id: str | int | None, progress: Any = None
) -> LabelView:
    """Jump to a pair by its id (the Compare tab shows them)."""
    if pair_id is None or not str(pair_id).strip():
        return view(state, message=warn("Type a pair id first."))
    try:
        pair = services.store.get_pair(int(str(pair_id).strip()))
    except ValueError:
        return view(state, message=warn(f"{pair_id!r} is not a pair id (a whole number)."))
    except StoreError as exc:
        return view(state, message=warn(str(exc)))
    collection = current_collection(services, state.collection)
    if collection is None or pair.collection_id != collection.id:
        return view(state, message=warn(f"Pair {pair.id} is not in this collection."))
    history = state.history + ((state.pair_id,) if state.pair_id is not None else ())
    state = dataclasses.replace(state, history=history[-50:], selected=None)
    return show_pair(services, state, pair.id, progress)


def select(services: Services, state: LabelState, index: int) -> LabelView:
    """Select a candidate (the state only). In the app the page shows a selection by itself
    and sends it with the label that follows (``picked`` of :func:`mark`)."""
    del services  # nothing to read: the candidates are in the state
    if not 0 <= index < len(state.candidates):
        return view(state)
    return view(dataclasses.replace(state, selected=int(index)))


def _after_edit(
    services: Services,
    state: LabelState,
    outcome: LabelOutcome,
    advance: bool = False,
    suggestions: bool = False,
) -> LabelView:
    """Show a label change in place: the pair's labels are read again (one query) and the
    list (with the tiles' marks), the selection and the counts redrawn from the state; nothing
    is ranked or encoded. With ``advance`` the selection moves to the next unlabeled candidate;
    ``suggestions`` refreshes the caption suggestions (a caption label came or went)."""
    before = state
    state = dataclasses.replace(state, last_edit=outcome.last_edit)
    if not outcome.saved:
        return view(state, message=outcome.message, **_undo_changes(before, state))
    if state.pair_id is None:
        return view(
            state,
            progress=_progress(services, state),
            message=outcome.message,
            **_undo_changes(before, state),
        )
    labels = visible_labels(
        services.store.labels_for_pair(state.pair_id), state.annotator, state.blind
    )
    candidates = with_labels(state.candidates, labels)
    selected = _next_selection(candidates, state.selected) if advance else state.selected
    state = _drawn(dataclasses.replace(state, candidates=candidates, selected=selected))
    caption_labels = caption_labels_of(labels)
    fields: dict[str, Any] = _undo_changes(before, state)
    if suggestions:
        try:
            caption = services.store.get_pair(state.pair_id).caption
        except StoreError:
            caption = None
        if caption is not None:
            offered = open_suggestions(caption, caption_labels)
            if tuple(offered) != state.suggested:
                state, fields["negative_caption"] = _suggestions(state, offered)
    return view(
        state,
        progress=_progress(services, state),
        listing=_listing(state),
        selection=selection_html(state),
        caption_labels=caption_labels_text(caption_labels),
        message=outcome.message,
        **fields,
    )


def _selected_target(state: LabelState) -> LabelTarget | str:
    """The selected candidate's image for the pair's caption, or why there is none."""
    if state.pair_id is None:
        return NO_PAIR
    if state.selected is None or not 0 <= state.selected < len(state.candidates):
        return "Select a candidate first (click it or press 1–9)."
    return LabelTarget(state.pair_id, sha256=state.candidates[state.selected].image_sha256)


def mark(
    services: Services,
    state: LabelState,
    kind: str,
    author: str | None = None,
    profile: Any = None,
    picked: Any = None,
    shown: Any = None,
) -> LabelView:
    """Label the selected candidate *hard negative* (``"negative"``) or *also correct*
    (``"also-positive"``) for the pair's caption; the selection moves to the next one.

    The author is the logged-in user (on a Space one is required), else ``author``. The page
    sends the candidate it shows selected (``picked``) on the pair it shows (``shown``), so a
    label always goes to what the person saw (see :func:`_take_pick`)."""
    state = _as(services, state, profile)
    taken = _take_pick(state, picked, shown)
    if isinstance(taken, str):
        return view(state, message=warn(taken))
    state = taken
    target = _selected_target(state)
    outcome = apply_label(services, target, kind, state.last_edit, author=author, profile=profile)
    return _after_edit(services, state, outcome, advance=True)


def clear(
    services: Services,
    state: LabelState,
    profile: Any = None,
    picked: Any = None,
    shown: Any = None,
) -> LabelView:
    """Remove the selected candidate's label (on a Space: logged-in users only); ``picked`` and
    ``shown`` as for :func:`mark`. On a Space only the annotator's own label: when the mark
    shown is someone else's (blind mode off), it stays and the line says whose it is. Off a
    Space there is one person, whose database it is: any label shown may go."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return view(state, message=warn(exc.message))
    state = _as(services, state, profile)
    taken = _take_pick(state, picked, shown)
    if isinstance(taken, str):
        return view(state, message=warn(taken))
    state = taken
    if state.selected is None or not 0 <= state.selected < len(state.candidates):
        return view(state, message=warn("Select a candidate first."))
    candidate = state.candidates[state.selected]
    if candidate.label_id is None:
        return view(state, message=f"[{state.selected + 1}] has no label to clear.")
    try:
        shown_label = services.store.get_label(candidate.label_id)
        if on_space(services.settings) and author_key(shown_label.author) != state.annotator:
            whose = f"{shown_label.author}'s" if shown_label.author else "an unattributed"
            return view(
                state,
                message=warn(
                    f"[{state.selected + 1}] shows {whose} label, not yours: it stays. Mark "
                    "the candidate to add your own label."
                ),
            )
        edit = clear_label(services.store, candidate.label_id)
    except StoreError as exc:
        return view(state, message=warn(str(exc)))
    removed = edit.previous
    was = KINDS.get(removed.kind, removed.kind) if removed is not None else "a label"
    said = edit.describe(services.store, markdown=True, with_kind=False)
    outcome = LabelOutcome(edit, f"Cleared the label of {said} (it was {was}).", saved=True)
    return _after_edit(services, state, outcome)


def add_negative_caption(
    services: Services,
    state: LabelState,
    caption: str | None,
    author: str | None = None,
    profile: Any = None,
) -> LabelView:
    """Save a hard-negative caption for the pair's image (e.g. its attributes swapped)."""
    state = _as(services, state, profile) if profile is not None else state
    target = caption_target(state.pair_id, caption, NO_PAIR)
    outcome = apply_label(
        services, target, "negative", state.last_edit, author=author, profile=profile
    )
    return _after_edit(services, state, outcome, suggestions=True)


def undo(
    services: Services, state: LabelState, progress: Any = None, profile: Any = None
) -> LabelView:
    """Take back the last label change (it may be on an earlier pair)."""
    del progress  # instant: kept for the signature the other tabs' undo handlers share
    outcome = undo_label(services, state.last_edit, profile=profile)
    return _after_edit(services, state, outcome, suggestions=True)
