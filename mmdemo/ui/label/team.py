"""Who labels which pair (split out of :mod:`mmdemo.ui.label.handlers`): the annotator (the
Space login), blind mode, the model and the order of the walk, the focus pairs chosen elsewhere
(``shared.label_focus``), the claims that split a team's work on a Space (a pair shown to an
annotator is theirs for :data:`CLAIM_S`, except the overlap share everyone labels), the team's
agreement, and showing the pair the queue picks next.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from mmdemo.data.agreement import agreement
from mmdemo.data.images import image_path
from mmdemo.data.store import Collection, NegativeLabel, Pair, author_key
from mmdemo.hub.publish import on_space
from mmdemo.retrieval.compare import BASE, RUN_PREFIX, display_path, load, resolve_model
from mmdemo.retrieval.label_order import (
    HARDEST,
    RANDOM,
    hardest_first,
    in_overlap,
    next_in_queue,
    positive_ranks,
    shuffled,
)
from mmdemo.retrieval.negatives import Candidate, caption_labels_of, open_suggestions, with_labels
from mmdemo.services import Services
from mmdemo.ui.common import current_collection, warn
from mmdemo.ui.identity import LOCAL_AUTHOR
from mmdemo.ui.label.view import (
    ALL_SPLITS,
    MAX_K,
    LabelState,
    LabelView,
    _drawn,
    _listing,
    _progress,
    _split,
    _suggestions,
    agreement_text,
    caption_labels_text,
    claim_note,
    pair_text,
    selection_html,
    view,
)
from mmdemo.ui.results import FAILURES, image_progress, load_candidates

CLAIM_S = 15 * 60
"""How long a pair shown to an annotator stays theirs (others are offered other pairs)."""
MAX_CLAIM_TRIES = 20


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


def _agreement(services: Services, collection: Collection | None) -> str:
    if collection is None:
        return ""
    return agreement_text(agreement(services.store.labels_for_collection(collection.id)))


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
