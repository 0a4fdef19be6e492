"""Labeling on the Compare tab's result galleries: select a result, mark it *hard negative* or
*also correct* for the query's pair, save a hard-negative caption, undo the last change.

Labels attach to the query's pair (``state.anchor``): the pair whose caption is the text query,
or whose image is the image query; a free-text or uploaded query has none. Every write records
its author: the Space login (required there), else the given author, else ``"local"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mmdemo.services import Services
from mmdemo.ui.compare.view import (
    CompareState,
    CompareView,
    galleries,
    negative_suggestions,
    selected_hit,
    selection_text,
    undo_button,
    view,
)
from mmdemo.ui.labeling import (
    LabelOutcome,
    LabelTarget,
    apply_label,
    caption_target,
    undo_label,
)


def _labels_view(services: Services, state: CompareState, message: str = "") -> CompareView:
    return view(
        state,
        **galleries(services, state),
        selection=selection_text(services, state),
        undo=undo_button(state),
        message=message,
    )


def select_hit(services: Services, state: CompareState, side: str, index: int) -> CompareView:
    """A click on a result of gallery ``side`` (``"a"`` or ``"b"``)."""
    hits = state.hits_a if side == "a" else state.hits_b
    if not 0 <= index < len(hits):
        return view(state, message="That result is gone; run the query again.")
    state = dataclasses.replace(state, selected=(side, int(index)))
    return _labels_view(services, state)


def _after_edit(services: Services, state: CompareState, outcome: LabelOutcome) -> CompareView:
    """Show a label change: the galleries with their marks, the selection line and the Undo
    button; only the message when nothing changed."""
    state = dataclasses.replace(state, last_edit=outcome.last_edit)
    if not outcome.saved:
        return view(state, message=outcome.message)
    return _labels_view(services, state, outcome.message)


def _selected_target(services: Services, state: CompareState) -> LabelTarget | str:
    """The selected result's image for the query's pair, or why there is none."""
    hit = selected_hit(state)
    if hit is None:
        return "Click a result first."
    if state.anchor is None:
        return selection_text(services, state)
    return LabelTarget(state.anchor, sha256=hit.image_sha256)


def mark(
    services: Services,
    state: CompareState,
    kind: str,
    author: str | None = None,
    profile: Any = None,
) -> CompareView:
    """Label the selected result *hard negative* or *also correct* for the query's caption.

    The author is the logged-in user (on a Space one is required), else ``author``."""
    target = _selected_target(services, state)
    outcome = apply_label(services, target, kind, state.last_edit, author=author, profile=profile)
    return _after_edit(services, state, outcome)


def add_negative_caption(
    services: Services,
    state: CompareState,
    caption: str | None,
    author: str | None = None,
    profile: Any = None,
) -> CompareView:
    """Save a hard-negative caption for the query's pair (e.g. its attributes swapped)."""
    target = caption_target(state.anchor, caption, selection_text(services, state))
    outcome = apply_label(
        services, target, "negative", state.last_edit, author=author, profile=profile
    )
    if not outcome.saved:
        return _after_edit(services, state, outcome)
    state = dataclasses.replace(state, last_edit=outcome.last_edit)
    return view(
        state,
        **galleries(services, state),
        undo=undo_button(state),
        negative_caption=negative_suggestions(services, state),
        message=outcome.message,
    )


def undo(services: Services, state: CompareState, profile: Any = None) -> CompareView:
    """Take back the last label change (on a Space: logged-in users only)."""
    outcome = undo_label(services, state.last_edit, profile=profile)
    return _after_edit(services, state, outcome)
