"""The Label tab's state, its outputs and what they show (split out of
:mod:`mmdemo.ui.label.handlers`): :class:`LabelState`, :class:`LabelView`, which outputs each
action changes, and the text and HTML of the pair, the selection, the caption labels, the
progress line and the team's agreement.

User text (captions, collection, model and annotator names) reaches Markdown through
:func:`mmdemo.text.md` and HTML through :func:`mmdemo.text.html_text`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.agreement import Agreement
from mmdemo.data.store import Collection, Pair
from mmdemo.hub.publish import on_space
from mmdemo.retrieval.compare import BASE, LabelEdit, model_options
from mmdemo.retrieval.label_order import HARDEST
from mmdemo.retrieval.negatives import Candidate, labeling_progress
from mmdemo.services import Services
from mmdemo.text import html_text, md
from mmdemo.ui.common import current_collection, partial_view
from mmdemo.ui.results import candidates_html

NO_PAIR = "There is no pair to label."
ALL_SPLITS = "all"
SPLIT_CHOICES = ("train", "eval", "test", ALL_SPLITS)
DEFAULT_K = 8
MAX_K = 9
"""Keys 1–9 select a candidate."""
HEADING_CHARS = 300
"""The pair's heading shows this much of its caption; the rest folds out below it."""
LINE_CHARS = 300
"""Captions in the selection line and the caption-label line are cut here (the list has all)."""
KINDS = {"negative": "hard negative", "also-positive": "also correct"}


@dataclass(frozen=True)
class LabelState:
    """Where one browser session is in the walk through the pairs (kept in ``gr.State``)."""

    collection: str | None = None
    model: str = BASE
    model_auto: bool = True
    """The model follows the collection's newest finished run until the person picks one."""
    order: str = HARDEST
    """Which pair comes next: one of :data:`mmdemo.retrieval.label_order.ORDERS`."""
    seed: int = 0
    """The session's shuffle for the random order."""
    blind: bool = False
    """Show only the annotator's own labels."""
    annotator: str | None = None
    """Who is labeling (the Space login; ``"local"`` off a Space; ``None`` logged out)."""
    focus: tuple[int, ...] = ()
    """Pairs chosen elsewhere to label first, in order (``shared.label_focus``)."""
    focus_key: tuple | None = None
    """The focus value already taken (so reopening the tab does not start it again)."""
    split: str = "train"
    """Which pairs to walk through: a split, or ``"all"``."""
    unlabeled_only: bool = True
    k: int = DEFAULT_K
    pair_id: int | None = None
    candidates: tuple[Candidate, ...] = ()
    selected: int | None = None
    """Index into ``candidates``."""
    history: tuple[int, ...] = ()
    """Pairs shown before, for "Previous"."""
    last_edit: LabelEdit | None = None
    renders: int = 0
    """How many times the selection line and the list were drawn (each drawing differs)."""
    suggested: tuple[str, ...] = ()
    """The caption suggestions the dropdown offers now (it is sent again only when they change:
    a dropdown update rebuilds the component on the server, which costs more than a label)."""


class LabelView(NamedTuple):
    """Every output of the Label tab, in the order of the event outputs."""

    state: LabelState
    model: Any
    progress: Any
    pair: Any
    positive: Any
    candidates: Any  # list[(path, caption)] or gr.skip(); see label.as_outputs
    listing: Any
    """The numbered list of the candidates (HTML): full captions, scores, flags, labels."""
    selection: Any
    negative_caption: Any
    caption_labels: Any
    undo: Any
    message: Any
    agreement: Any = None
    """The team's agreement (Markdown), drawn when the tab opens."""


SELECT_OUTPUTS = ("state",)
"""What :func:`select` changes. The app sends no selection to the server: the page shows it at
once (the gallery highlights the tile, the page script marks the list's row and writes the
selection line) and sends it with the label that follows."""
LABEL_OUTPUTS = (
    "state",
    "progress",
    "listing",
    "selection",
    "negative_caption",
    "caption_labels",
    "undo",
    "message",
)
"""What a label, a clear, a caption negative or an undo can change: never the pair itself, and
not the gallery either (sending it costs ~10 ms of file checks per tile): the page script puts
the new marks on the tiles from the list (its rows carry the tiles' captions)."""
PAIR_OUTPUTS = tuple(
    name for name in LabelView._fields if name not in ("model", "undo", "agreement")
)
"""What showing another pair changes (the model dropdown is the person's own choice; what can
be undone stays). Every output listed costs even when skipped: Gradio rebuilds a component for
each update, ``gr.skip()`` included."""


def view(state: LabelState, **fields: Any) -> LabelView:
    """A view that changes ``fields`` and leaves every other output as it is."""
    return partial_view(LabelView, **{**fields, "state": state})


def _split(state: LabelState) -> str | None:
    return None if state.split == ALL_SPLITS else state.split


def _n(count: int, word: str) -> str:
    """``"1 pair"``, ``"2 pairs"``."""
    return f"{count:,} {word}{'s' * (count != 1)}"


def agreement_text(found: Agreement) -> str:
    """The team's agreement and per-annotator counts, as Markdown (names escaped)."""
    if not found.annotators:
        return "*No labels yet.*"
    people = " · ".join(
        f"{md(c.author)}: {_n(c.negatives + c.also_positives, 'label')} on {_n(c.pairs, 'pair')} "
        f"({c.negatives:,} ✗, {c.also_positives:,} +)"
        for c in found.annotators
    )
    lines = [f"**Annotators:** {people}"]
    if not found.decisions:
        lines.append(
            "No candidate was labeled by two people yet: set `MMDEMO_LABEL_OVERLAP` (e.g. 0.1) "
            "to have a share of the pairs labeled by everyone."
        )
        return "\n\n".join(lines)
    kappa = "undefined (one kind only)" if found.kappa is None else f"{found.kappa:.2f}"
    lines.append(
        f"**Agreement:** Cohen's κ = **{kappa}** on {_n(found.items, 'candidate')} labeled by "
        f"two or more people ({_n(found.shared_pairs, 'pair')}; {found.agreed:,} of "
        f"{_n(found.decisions, 'decision')} agree)."
    )
    if len(found.raters) > 1:
        lines.append(
            " · ".join(
                f"{md(r.a)}–{md(r.b)}: κ "
                + ("n/a" if r.kappa is None else f"{r.kappa:.2f}")
                + f" on {_n(r.items, 'candidate')}"
                for r in found.raters
            )
        )
    return "\n\n".join(lines)


def _model_dropdown(services: Services, state: LabelState) -> Any:
    choices = [(ref.label, ref.key) for ref in model_options(services.store, services.model)]
    if state.model not in {key for _, key in choices}:
        choices.append((state.model, state.model))
    return gr.update(choices=choices, value=state.model)


def _progress_text(services: Services, state: LabelState, collection: Collection | None) -> str:
    if collection is None:
        return "No collection yet: create one in the Curate tab."
    done, total = labeling_progress(services.store, collection.id, _split(state))
    which = "" if state.split == ALL_SPLITS else f" {state.split}"
    text = f"**{done:,} of {total:,}**{which} pairs labeled in “{md(collection.name)}”"
    if on_space(services.settings) and state.annotator:
        authors = services.store.label_authors(collection.id, _split(state)).values()
        mine = sum(state.annotator in found for found in authors)
        text += f" · labeling as **{md(state.annotator)}** ({mine:,} of them yours)"
    elif on_space(services.settings):
        text += " · log in with your Hugging Face account to label"
    return text


def _progress(services: Services, state: LabelState) -> str:
    return _progress_text(services, state, current_collection(services, state.collection))


def _undo_button(state: LabelState) -> Any:
    return gr.update(visible=state.last_edit is not None)


def selection_html(state: LabelState) -> str:
    """The selected candidate in a line (HTML): its key, pair, caption, flag and label.

    The page script draws the same line from the list's row when a candidate is selected (see
    :data:`mmdemo.ui.label.layout.KEYS_JS`), so both must agree; ``state.renders`` makes each
    drawing
    differ from the one before.
    """
    if state.pair_id is None:
        return ""
    version = f' data-v="{state.renders}"'
    if state.selected is None or not 0 <= state.selected < len(state.candidates):
        return f'<p class="mm-sel"{version}><i>Click a candidate (or press its number).</i></p>'
    c = state.candidates[state.selected]
    flag = " — ⚠ scored almost as high as the positive: maybe correct" * c.possible_false_negative
    label = f" · labeled <b>{KINDS.get(c.label, c.label)}</b>" if c.label else ""
    caption = html_text(c.caption, LINE_CHARS)
    return (
        f'<p class="mm-sel"{version}><b>Selected [{state.selected + 1}]:</b> '
        f"pair {c.pair_id}, “{caption}”{flag}{label}</p>"
    )


def _drawn(state: LabelState) -> LabelState:
    """The state with one more drawing of the selection line and the list."""
    return dataclasses.replace(state, renders=state.renders + 1)


def _listing(state: LabelState) -> str:
    return candidates_html(state.candidates, state.selected, state.pair_id, state.renders)


def pair_text(pair: Pair, rank: int, score: float, model_label: str) -> str:
    """The pair's heading (its caption, cut at :data:`HEADING_CHARS` with the whole text folded
    out below) and how the model ranks its own image."""
    heading = f"### “{md(pair.caption, HEADING_CHARS)}”"
    if len(pair.caption) > HEADING_CHARS:
        heading += (
            f"\n\n<details><summary>Whole caption ({len(pair.caption):,} characters)</summary>"
            f"\n\n{md(pair.caption)}\n\n</details>"
        )
    where = f"#{rank}" if rank > 1 else "#1 (the model gets it)"
    return (
        f"{heading}\n\npair {pair.id} · {md(pair.split)} split · its own image ranks "
        f"**{where}** under {md(model_label)} (similarity {score:.3f}). "
        "Candidates below leave it out."
    )


def caption_labels_text(caption_labels: list[tuple[int, str, str]]) -> str:
    """The hard-negative (or also-correct) captions labeled for the pair."""
    if not caption_labels:
        return ""
    return "**Caption labels:** " + " · ".join(
        f"{KINDS.get(kind, kind)}: “{md(text, LINE_CHARS)}”" for _, kind, text in caption_labels
    )


def _suggestions(before: LabelState, suggested: list[str]) -> tuple[LabelState, Any]:
    """The state offering ``suggested``, and the dropdown's output: new choices when they
    changed, else only the value put back to the first one (a plain value costs nothing)."""
    first = suggested[0] if suggested else None
    if tuple(suggested) == before.suggested:
        return before, first
    after = dataclasses.replace(before, suggested=tuple(suggested))
    return after, gr.update(choices=suggested, value=first)


def _undo_changes(before: LabelState, after: LabelState) -> dict[str, Any]:
    """The Undo button's output when it appears or goes, else nothing (each update rebuilds the
    component on the server)."""
    if (before.last_edit is None) == (after.last_edit is None):
        return {}
    return {"undo": _undo_button(after)}


def claim_note(pair_id: int, holder: str) -> str:
    """The line saying a pair shown is open for someone else (Markdown, the name escaped)."""
    return (
        f"Pair {pair_id} is open for **{md(holder)}** right now: you can look at it, but they "
        "may be labeling it too."
    )
