"""Labeling with undo, as the Label tab, Curate's look-alikes panel and the Compare tab all do it:
check that the visitor may write, save the label (or take the last change back) and say what
happened in a line for the person. Each tab keeps the returned edit in its own state and builds
its own view from the outcome.

On a Space a write needs a logged-in visitor (:mod:`mmdemo.ui.identity`); the author recorded is
the login, else the author given, else ``"local"``. A failure is shown as a toast as well.

Messages are Markdown: they name labels by captions (never image hashes), escaped with
:func:`mmdemo.text.md`, so a tab shows them as they are and must not escape them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmdemo.data.store import StoreError
from mmdemo.retrieval.compare import LabelEdit, set_label, undo_edit
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.ui.common import warn
from mmdemo.ui.identity import LoginRequired, label_author, require_login


@dataclass(frozen=True)
class LabelTarget:
    """What a label is for: a pair, and the image (``sha256``) or the caption labeled for it."""

    pair_id: int
    sha256: str | None = None
    caption: str | None = None


@dataclass(frozen=True)
class LabelOutcome:
    """What a label action did, for the tab to keep and show."""

    last_edit: LabelEdit | None
    """The change the Undo button takes back from now on (unchanged when nothing was done)."""
    message: str
    """The line for the person, as Markdown (user text in it escaped; show it as it is); a
    failure has been shown as a toast too."""
    saved: bool = False
    """Whether the labels changed (then the tab redraws what shows them)."""


def caption_target(pair_id: int | None, caption: str | None, no_pair: str) -> LabelTarget | str:
    """A hard-negative caption for the pair, or why there is none (``no_pair`` without a pair)."""
    if pair_id is None:
        return no_pair
    if not (caption or "").strip():
        return "Write a hard-negative caption first."
    return LabelTarget(pair_id, caption=caption)


def apply_label(
    services: Services,
    target: LabelTarget | str,
    kind: str,
    last_edit: LabelEdit | None,
    *,
    author: str | None = None,
    profile: Any = None,
) -> LabelOutcome:
    """Save a ``kind`` label (``"negative"`` or ``"also-positive"``) for ``target``.

    ``target`` is a string when the tab has nothing to label: the reason, shown once the login
    check passed. ``last_edit`` is what the tab could undo so far; it stays when nothing is saved.
    """
    try:
        author = label_author(services.settings, profile, author)
    except LoginRequired as exc:
        return LabelOutcome(last_edit, warn(exc.message))
    if isinstance(target, str):
        return LabelOutcome(last_edit, warn(target))
    try:
        edit = set_label(
            services.store,
            target.pair_id,
            kind,
            sha256=target.sha256,
            caption=target.caption,
            author=author,
        )
    except StoreError as exc:
        return LabelOutcome(last_edit, warn(str(exc)))
    said = edit.describe(services.store, markdown=True)
    return LabelOutcome(edit, f"Saved: {said} (by {md(author)}).", saved=True)


def undo_label(
    services: Services, last_edit: LabelEdit | None, *, profile: Any = None
) -> LabelOutcome:
    """Take ``last_edit`` back. A visitor refused for want of a login keeps it to undo later;
    otherwise it is spent, even when the store could not put the labels back."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return LabelOutcome(last_edit, warn(exc.message))
    if last_edit is None:
        return LabelOutcome(None, warn("Nothing to undo."))
    try:
        undo_edit(services.store, last_edit)
    except StoreError as exc:
        return LabelOutcome(None, warn(str(exc)))
    said = last_edit.describe(services.store, markdown=True)
    if last_edit.written is None:  # the edit was a clear: the label is back
        return LabelOutcome(None, f"Undone: the label is back: {said}.", saved=True)
    return LabelOutcome(None, f"Undone: {said}.", saved=True)
