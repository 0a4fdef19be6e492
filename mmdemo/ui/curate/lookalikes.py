"""Curate's look-alikes panel: label hard negatives for the opened pair's caption.

The base model's top candidates for the caption (its own image left out) load lazily, when the
panel is opened or "Find look-alikes" is pressed; a candidate can be marked *hard negative* or
*also correct*, with undo, through the same calls as the Label tab.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.store import StoreError
from mmdemo.retrieval.compare import BASE, LabelEdit
from mmdemo.retrieval.negatives import Candidate
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.ui.common import partial_view, warn
from mmdemo.ui.curate.handlers import CurateState, current_collection_of, labels_text, stats_text
from mmdemo.ui.labeling import LabelOutcome, LabelTarget, apply_label, undo_label
from mmdemo.ui.results import FAILURES, load_candidates

LOOKALIKES_K = 8


@dataclass(frozen=True)
class LookalikeState:
    """The look-alikes panel of one browser session (its own ``gr.State``): the base model's
    top candidates for the opened pair's caption, the one selected and the last label change."""

    pair_id: int | None = None
    """The pair the candidates were found for (``None``: none loaded)."""
    candidates: tuple[Candidate, ...] = ()
    selected: int | None = None
    """Index into ``candidates``."""
    last_edit: LabelEdit | None = None
    opened: bool = False
    """Whether the accordion is open: then opening another pair loads its candidates at once."""


class LookalikeView(NamedTuple):
    """Every output of the look-alikes panel, in the order of the event outputs."""

    lookalikes: LookalikeState
    stats: Any  # the Curate counts line
    labels: Any  # the opened pair's labels
    candidates: Any  # list[(path, caption)] or gr.skip(); see curate.lookalike_outputs
    selection: Any
    undo: Any
    message: Any


LOOKALIKES_HINT = "*Press **Find look-alikes** to see the images the base model confuses with it.*"


def _look(looks: LookalikeState, **fields: Any) -> LookalikeView:
    """A view that changes ``fields`` and leaves every other output as it is."""
    return partial_view(LookalikeView, **{**fields, "lookalikes": looks})


def _look_selection(looks: LookalikeState) -> str:
    if looks.pair_id is None:
        return ""
    if not looks.candidates:
        return "No other images to compare with in this split."
    if looks.selected is None or not 0 <= looks.selected < len(looks.candidates):
        return "*Click a look-alike, then mark it.*"
    c = looks.candidates[looks.selected]
    flag = " — ⚠ scored almost as high as the positive: maybe correct" * c.possible_false_negative
    return f"**Selected [{looks.selected + 1}]:** pair {c.pair_id}, “{md(c.caption, 300)}”{flag}"


def _look_undo(looks: LookalikeState) -> Any:
    return gr.update(visible=looks.last_edit is not None)


def _refreshed(services: Services, state: CurateState) -> dict[str, Any]:
    """The counts line and the opened pair's labels as the store has them now."""
    _, collection = current_collection_of(services, state)
    fields: dict[str, Any] = {"stats": stats_text(services, collection)}
    if state.selected is not None:
        with contextlib.suppress(StoreError):  # the pair is gone: its labels stay as shown
            fields["labels"] = labels_text(services, services.store.get_pair(state.selected))
    return fields


def _cleared(looks: LookalikeState, message: str = "") -> LookalikeView:
    looks = dataclasses.replace(looks, pair_id=None, candidates=(), selected=None)
    return _look(looks, candidates=[], selection="", message=message)


def _load_lookalikes(
    services: Services,
    looks: LookalikeState,
    pair_id: int,
    progress: Any = None,
    message: str = "",
    keep_selection: bool = False,
) -> LookalikeView:
    """Find the base model's top candidates for the pair's caption, its own image left out."""
    try:
        pair, ref, task, gallery = load_candidates(services, BASE, pair_id, LOOKALIKES_K, progress)
    except FAILURES as exc:
        return _look(looks, message=warn(str(exc)))
    candidates = tuple(task.candidates)
    selected = looks.selected if keep_selection and looks.pair_id == pair.id else None
    if selected is not None and selected >= len(candidates):
        selected = None
    looks = dataclasses.replace(looks, pair_id=pair.id, candidates=candidates, selected=selected)
    return _look(
        looks,
        candidates=gallery,
        selection=_look_selection(looks),
        undo=_look_undo(looks),
        message=message or f"Top {len(candidates)} under {md(ref.label)}; ✗ and + mark labels.",
    )


def find_lookalikes(
    services: Services, state: CurateState, looks: LookalikeState, progress: Any = None
) -> LookalikeView:
    """The "Find look-alikes" button: (re)load the candidates for the opened pair."""
    if state.selected is None:
        return _cleared(looks, "Open a pair first.")
    return _load_lookalikes(services, looks, state.selected, progress, keep_selection=True)


def expand_lookalikes(
    services: Services, state: CurateState, looks: LookalikeState, progress: Any = None
) -> LookalikeView:
    """The accordion was opened: load the candidates unless they are there already."""
    looks = dataclasses.replace(looks, opened=True)
    if state.selected is None:
        return _cleared(looks, "Open a pair first.")
    if looks.pair_id == state.selected:
        return _look(looks)
    return _load_lookalikes(services, looks, state.selected, progress)


def collapse_lookalikes(services: Services, looks: LookalikeState) -> LookalikeView:
    """The accordion was closed: nothing loads until it opens again."""
    return _look(dataclasses.replace(looks, opened=False))


def pair_changed(
    services: Services, state: CurateState, looks: LookalikeState, progress: Any = None
) -> LookalikeView:
    """After the editor changed (a pair opened, deleted or restored): candidates for another
    pair are dropped; with the accordion open the new pair's load at once."""
    if looks.pair_id is not None and looks.pair_id == state.selected:
        return _look(looks)
    if state.selected is not None and looks.opened:
        return _load_lookalikes(services, looks, state.selected, progress)
    return _cleared(looks, LOOKALIKES_HINT if state.selected is not None else "")


def select_lookalike(services: Services, looks: LookalikeState, index: int) -> LookalikeView:
    """A click on a candidate."""
    if not 0 <= index < len(looks.candidates):
        return _look(looks, message="There is no such look-alike.")
    looks = dataclasses.replace(looks, selected=int(index))
    return _look(looks, selection=_look_selection(looks))


def _after_edit(
    services: Services, state: CurateState, looks: LookalikeState, outcome: LabelOutcome
) -> LookalikeView:
    """Show a label change: the look-alikes, the counts and the pair's labels again, or only the
    message when nothing changed (the Undo button too when the edit to undo was dropped)."""
    dropped = outcome.last_edit is not looks.last_edit
    looks = dataclasses.replace(looks, last_edit=outcome.last_edit)
    if not outcome.saved:
        undo = _look_undo(looks) if dropped else gr.skip()
        return _look(looks, undo=undo, message=outcome.message)
    if looks.pair_id is None:
        view = _look(looks, undo=_look_undo(looks), message=outcome.message)
    else:
        view = _load_lookalikes(
            services, looks, looks.pair_id, message=outcome.message, keep_selection=True
        )
    return view._replace(**_refreshed(services, state))


def _selected_target(looks: LookalikeState) -> LabelTarget | str:
    """The selected look-alike's image for the pair's caption, or why there is none."""
    if looks.pair_id is None:
        return "Find the look-alikes first."
    if looks.selected is None or not 0 <= looks.selected < len(looks.candidates):
        return "Click a look-alike first."
    return LabelTarget(looks.pair_id, sha256=looks.candidates[looks.selected].image_sha256)


def mark_lookalike(
    services: Services,
    state: CurateState,
    looks: LookalikeState,
    kind: str,
    profile: Any = None,
) -> LookalikeView:
    """Label the selected look-alike *hard negative* (``"negative"``) or *also correct*
    (``"also-positive"``) for the pair's caption (on a Space: logged-in users only)."""
    outcome = apply_label(services, _selected_target(looks), kind, looks.last_edit, profile=profile)
    return _after_edit(services, state, looks, outcome)


def undo_lookalike(
    services: Services,
    state: CurateState,
    looks: LookalikeState,
    profile: Any = None,
) -> LookalikeView:
    """Take back the last label change of this panel (on a Space: logged-in users only)."""
    outcome = undo_label(services, looks.last_edit, profile=profile)
    return _after_edit(services, state, looks, outcome)
