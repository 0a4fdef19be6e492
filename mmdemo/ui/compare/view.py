"""What the Compare tab shows: its per-session state, the view its handlers return, and the result
galleries with their selection line (shared by the query handlers in
:mod:`mmdemo.ui.compare.handlers` and the labeling handlers in :mod:`mmdemo.ui.compare.labels`).

A view names every output of the tab; a handler fills in what it changes and leaves the rest as
``gr.skip()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.store import StoreError
from mmdemo.retrieval.compare import BASE, LabelEdit, display_path
from mmdemo.retrieval.negatives import suggest_negative_captions
from mmdemo.retrieval.search import Hit
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.ui.common import partial_view
from mmdemo.ui.results import hit_caption


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
    return partial_view(CompareView, **{**fields, "state": state})


def title(side: str, label: str | None) -> str:
    """The heading over a result gallery: ``"### A · Run: name"`` (the label escaped; empty
    without a model)."""
    return f"### {side} · {md(label)}" if label else ""


# -- result galleries and the selection -------------------------------------------------------
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


def galleries(services: Services, state: CompareState) -> dict[str, Any]:
    """Both result galleries, each result marked with its label for the query's pair."""
    labels = _anchor_labels(services, state.anchor)
    return {
        "gallery_a": _gallery(services, state.hits_a, labels),
        "gallery_b": _gallery(services, state.hits_b, labels),
    }


def selected_hit(state: CompareState) -> Hit | None:
    """The result clicked last (``None`` when none is, or it is gone)."""
    if state.selected is None:
        return None
    side, index = state.selected
    hits = state.hits_a if side == "a" else state.hits_b
    return hits[index] if 0 <= index < len(hits) else None


def selection_text(services: Services, state: CompareState) -> str:
    """The line above the label buttons: which pair labels go to and the selected result
    (captions are user text: escaped, whole)."""
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
    hit = selected_hit(state)
    lines = [f"Labels go to pair {anchor.id}: “{md(anchor.caption)}”."]
    if hit is None:
        lines.append("*Click a result to label it.*")
    else:
        side = "A" if state.selected and state.selected[0] == "a" else "B"
        lines.append(
            f"**Selected:** #{hit.rank} under {side}, pair {hit.pair_id} — “{md(hit.caption)}”"
        )
    return "\n\n".join(lines)


def negative_suggestions(services: Services, state: CompareState) -> Any:
    """Hard-negative captions to offer for the query's pair (none without one)."""
    if state.anchor is None:
        return gr.update(choices=[], value=None)
    try:
        caption = services.store.get_pair(state.anchor).caption
    except StoreError:
        return gr.update(choices=[], value=None)
    suggestions = suggest_negative_captions(caption)
    return gr.update(choices=suggestions, value=suggestions[0] if suggestions else None)


def undo_button(state: CompareState) -> Any:
    """The Undo button, shown while there is a label change to take back."""
    edit = state.last_edit
    if edit is None:
        return gr.update(visible=False)
    return gr.update(visible=True, value="↶ Undo last label")
