"""The Label tab's state and handlers (the layout and the keyboard shortcuts are in
:mod:`mmdemo.ui.label.layout`).

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.agreement import Agreement, agreement
from mmdemo.data.images import image_path
from mmdemo.data.store import Collection, NegativeLabel, Pair, StoreError, author_key
from mmdemo.hub.publish import on_space
from mmdemo.retrieval.compare import (
    BASE,
    RUN_PREFIX,
    LabelEdit,
    clear_label,
    display_path,
    load,
    model_options,
    resolve_model,
)
from mmdemo.retrieval.label_order import (
    HARDEST,
    ORDERS,
    RANDOM,
    hardest_first,
    in_overlap,
    next_in_queue,
    positive_ranks,
    shuffled,
)
from mmdemo.retrieval.negatives import (
    Candidate,
    caption_labels_of,
    labeling_progress,
    open_suggestions,
    with_labels,
)
from mmdemo.services import Services
from mmdemo.text import html_text, md
from mmdemo.ui.common import current_collection, default_collection, partial_view, warn
from mmdemo.ui.identity import LOCAL_AUTHOR, LoginRequired, require_login
from mmdemo.ui.labeling import (
    LabelOutcome,
    LabelTarget,
    apply_label,
    caption_target,
    undo_label,
)
from mmdemo.ui.results import FAILURES, candidates_html, image_progress, load_candidates

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
CLAIM_S = 15 * 60
"""How long a pair shown to an annotator stays theirs (others are offered other pairs)."""
MAX_CLAIM_TRIES = 20


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


def annotator_of(services: Services, profile: Any) -> str | None:
    """Who is labeling: the Space login, ``"local"`` off a Space, ``None`` when logged out."""
    username = getattr(profile, "username", None) if profile is not None else None
    if username:
        return str(username)
    return None if on_space(services.settings) else LOCAL_AUTHOR


def _as(services: Services, state: LabelState, profile: Any) -> LabelState:
    """The state acting for the visitor ``profile`` names (the same off a Space)."""
    who = annotator_of(services, profile)
    return state if who == state.annotator else dataclasses.replace(state, annotator=who)


def visible_labels(
    labels: Sequence[NegativeLabel], annotator: str | None, blind: bool
) -> list[NegativeLabel]:
    """The labels the annotator sees: blind, only their own; else everyone's, their own last
    (so where two people labeled one candidate, the mark shown is the annotator's). A label
    without an author is the local annotator's (:func:`mmdemo.data.store.author_key`)."""
    own = [lab for lab in labels if annotator is not None and author_key(lab.author) == annotator]
    if blind:
        return own
    return [lab for lab in labels if lab not in own] + own


def default_model(services: Services, collection: Collection | None) -> str:
    """The newest finished run of the collection that saved a model, else the base model."""
    if collection is None:
        return BASE
    for run in services.store.list_runs(collection.id):
        if run.status != "finished":
            continue
        try:
            return resolve_model(services.store, services.model, RUN_PREFIX + run.name).key
        except FAILURES:
            continue
    return BASE


def pair_order(
    services: Services, state: LabelState, collection: Collection, progress: Any = None
) -> list[int]:
    """The pairs of the state's split in the state's order (hardest first: from the model's
    cached embeddings; the split's images and captions are encoded once)."""
    store = services.store
    split = _split(state)
    if state.order == HARDEST:
        ref = resolve_model(store, services.model, state.model)
        loaded = load(services, ref)
        if services.embeddings is None:
            from mmdemo.retrieval.embeddings import EmbeddingCache

            services.embeddings = EmbeddingCache(services.settings)
        ranks = positive_ranks(
            store,
            services.embeddings,
            loaded.model,
            loaded.fingerprint,
            collection.id,
            split,
            image_progress(progress, f"Ranking the pairs ({ref.label})"),
        )
        return hardest_first(ranks)
    ids = store.matching_pair_ids(collection.id, split=split)
    return shuffled(ids, state.seed) if state.order == RANDOM else ids


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


def _agreement(services: Services, collection: Collection | None) -> str:
    if collection is None:
        return ""
    return agreement_text(agreement(services.store.labels_for_collection(collection.id)))


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


def _take_pick(state: LabelState, picked: Any, shown: Any) -> LabelState | str:
    """The candidate the page showed as selected when the key was pressed (``picked``, an index,
    on the pair ``shown``), or why nothing may be labeled: the pair changed meanwhile (a key
    pressed before the next pair was drawn). ``None``: keep the state's selection."""
    if shown is not None and int(shown) >= 0 and int(shown) != state.pair_id:
        return "The pair changed before that key took effect: nothing was saved. Press it again."
    if picked is not None and 0 <= int(picked) < len(state.candidates):
        return dataclasses.replace(state, selected=int(picked))
    return state


def _original(services: Services, pair: Pair) -> str:
    info = services.store.image_info(pair.image_sha256)
    if info is None:
        return str(display_path(services.store, services.settings, pair.image_sha256))
    return str(image_path(services.settings.images_dir, pair.image_sha256, info["ext"]))


def _next_selection(candidates: tuple[Candidate, ...], after: int | None) -> int | None:
    """The next candidate without a label after ``after`` (none left: stay put)."""
    start = -1 if after is None else after
    for index in range(start + 1, len(candidates)):
        if candidates[index].label is None:
            return index
    return after


# -- rendering a pair ------------------------------------------------------------------------------
def _empty(services: Services, state: LabelState, message: str) -> LabelView:
    state = dataclasses.replace(state, pair_id=None, candidates=(), selected=None)
    state, suggestions = _suggestions(state, [])
    return view(
        state,
        progress=_progress(services, state),
        pair=message,
        positive=None,
        candidates=[],
        listing="",
        selection="",
        negative_caption=suggestions,
        caption_labels="",
        message="",
    )


def show_pair(
    services: Services,
    state: LabelState,
    pair_id: int,
    progress: Any = None,
    message: str = "",
    keep_selection: bool = False,
    claimed: bool = False,
) -> LabelView:
    """Show a pair: its caption, its image and the model's top candidates (every output but
    the model dropdown). On a Space the pair is claimed for the annotator (a claim of theirs
    renewed) unless the queue just ``claimed`` it; when someone else holds it, it shows with a
    note saying so."""
    try:
        pair, ref, task, gallery = load_candidates(
            services, state.model, pair_id, max(1, min(int(state.k), MAX_K)), progress
        )
    except FAILURES as exc:
        return view(state, message=warn(str(exc)))
    holder = None if claimed else _claim(services, state, pair)
    if holder is not None:
        message = " ".join(part for part in (message, claim_note(pair.id, holder)) if part)
    labels = visible_labels(services.store.labels_for_pair(pair.id), state.annotator, state.blind)
    candidates = with_labels(task.candidates, labels)
    caption_labels = caption_labels_of(labels)
    suggested = open_suggestions(pair.caption, caption_labels)
    selected = state.selected if keep_selection else None
    if selected is None or selected >= len(candidates):
        selected = _next_selection(candidates, None)
    state = dataclasses.replace(state, pair_id=pair.id, candidates=candidates, selected=selected)
    state, suggestions = _suggestions(_drawn(state), suggested)
    return view(
        state,
        progress=_progress(services, state),
        pair=pair_text(pair, task.positive_rank, task.positive_score, ref.label),
        positive=_original(services, pair),
        candidates=gallery,
        listing=_listing(state),
        selection=selection_html(state),
        negative_caption=suggestions,
        caption_labels=caption_labels_text(caption_labels),
        message=message,
    )


def _claim(services: Services, state: LabelState, pair: Pair) -> str | None:
    """On a Space, claim the pair for the annotator (or renew their claim, for another
    :data:`CLAIM_S`); who else holds it when that fails (``None``: theirs, an overlap pair
    everyone labels, or off a Space)."""
    if not (state.annotator and on_space(services.settings)):
        return None
    if in_overlap(pair.collection_id, pair.id, services.settings.label_overlap):
        return None
    expiry = time.time() - CLAIM_S
    if services.store.claim_pair(pair.id, state.annotator, expiry):
        return None
    return services.store.claims(pair.collection_id, expiry).get(pair.id) or "another annotator"


def claim_note(pair_id: int, holder: str) -> str:
    """The line saying a pair shown is open for someone else (Markdown, the name escaped)."""
    return (
        f"Pair {pair_id} is open for **{md(holder)}** right now: you can look at it, but they "
        "may be labeling it too."
    )


def _first_or_next(
    services: Services, state: LabelState, after: int | None, progress: Any, message: str = ""
) -> LabelView:
    """The next pair of the annotator's queue after ``after`` (from the start: ``None``),
    claimed for them (see the module docstring), or a line saying why there is none."""
    collection = current_collection(services, state.collection)
    if collection is None:
        return _empty(services, state, "No collection yet: create one in the Curate tab.")
    state = dataclasses.replace(state, collection=collection.name)
    store = services.store
    try:
        order = pair_order(services, state, collection, progress)
    except FAILURES as exc:
        return view(state, message=warn(str(exc)))
    share = services.settings.label_overlap
    expiry = time.time() - CLAIM_S
    # Claims split a team's work on a Space; off one every label is by the same "local".
    claiming = state.annotator is not None and on_space(services.settings)

    def overlap(pair_id: int) -> bool:
        return in_overlap(collection.id, pair_id, share)

    queue = next_in_queue(
        order,
        after,
        state.annotator,
        store.label_authors(collection.id, _split(state)),
        store.claims(collection.id, expiry) if claiming else {},
        overlap,
        state.unlabeled_only,
    )
    for pair_id in queue[:MAX_CLAIM_TRIES]:
        if (
            not claiming
            or overlap(pair_id)
            or store.claim_pair(pair_id, str(state.annotator), expiry)
        ):
            return show_pair(services, state, pair_id, progress, message, claimed=claiming)
    which = "" if state.split == ALL_SPLITS else f" {state.split}"
    text = f"No{which} pairs to show."
    if order and state.unlabeled_only:
        text = (
            f"Every{which} pair has a label or is open for another annotator. Untick *Only "
            "unlabeled pairs* to go through them again."
        )
    return _empty(services, state, text)


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


def _focus_key(focus: Any) -> tuple | None:
    """``shared.label_focus`` as a comparable value: ``(collection, (pair_id, ...))``."""
    if not isinstance(focus, dict) or not focus.get("collection"):
        return None
    try:
        ids = tuple(int(i) for i in focus.get("pair_ids") or ())
    except (TypeError, ValueError):
        return None
    return (str(focus["collection"]), ids) if ids else None


def _take_focus(
    services: Services, state: LabelState, found: Collection | None, focus: Any
) -> LabelState | None:
    """The state labeling the focus pairs first, when ``focus`` is new and names the current
    collection (pairs deleted or elsewhere are left out); else ``None``."""
    key = _focus_key(focus)
    if key is None or key == state.focus_key or found is None or key[0] != found.name:
        return None
    present = {p.id for p in services.store.get_pairs(list(key[1])) if p.collection_id == found.id}
    ids = tuple(dict.fromkeys(i for i in key[1] if i in present))
    return dataclasses.replace(state, focus=ids, focus_key=key)


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
