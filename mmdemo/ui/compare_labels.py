"""Labeling on the Compare tab's result galleries: select a result, mark it *hard negative* or
*also correct* for the query's pair, save a hard-negative caption, undo the last change.

Labels attach to the query's pair (``state.anchor``): the pair whose caption is the text query,
or whose image is the image query; a free-text or uploaded query has none. Every write records
its author: the Space login (required there), else the given author, else ``"local"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mmdemo.compare import set_label, undo_edit
from mmdemo.services import Services
from mmdemo.store import StoreError
from mmdemo.ui.common import warn
from mmdemo.ui.compare_view import (
    CompareState,
    CompareView,
    galleries,
    negative_suggestions,
    selected_hit,
    selection_text,
    undo_button,
    view,
)
from mmdemo.ui.identity import LoginRequired, label_author, require_login


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
    hit = selected_hit(state)
    if hit is None:
        return view(state, message=warn("Click a result first."))
    if state.anchor is None:
        return view(state, message=warn(selection_text(services, state)))
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
        return view(state, message=warn(selection_text(services, state)))
    if not (caption or "").strip():
        return view(state, message=warn("Write a hard-negative caption first."))
    try:
        edit = set_label(services.store, state.anchor, "negative", caption=caption, author=author)
    except StoreError as exc:
        return view(state, message=warn(str(exc)))
    state = dataclasses.replace(state, last_edit=edit)
    return view(
        state,
        **galleries(services, state),
        undo=undo_button(state),
        negative_caption=negative_suggestions(services, state),
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
