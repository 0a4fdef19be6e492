"""The Finetune tab's collection part: the dropdown, the summary of its splits, the offer to
make an eval split, and the plan of the next run.

The tab reads the browser's current collection (``shared.collection``) when it is shown
(:func:`collection_view`); a person picking one in the tab's dropdown makes it the current
collection (:func:`pick_collection`). The summary and the plan (:func:`plan_line`) are computed
from the store every time they are drawn, never kept, so they cannot go stale.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.store import StoreError
from mmdemo.retrieval.checks import eval_leaks
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.training.run import TrainingError, detect_precision
from mmdemo.training.schedule import estimate
from mmdemo.ui.common import collection_names, current_collection, warn
from mmdemo.ui.finetune.knobs import Knobs, build_config, default_knobs
from mmdemo.ui.finetune.view import plan_markdown
from mmdemo.ui.identity import LoginRequired, require_login

EVAL_SHARE = 0.1
"""The share of pairs the "Make an eval split" button puts in eval."""
MAKE_SPLIT_LABEL = "Make an eval split (10 %)"


def refuse(text: str) -> str:
    """Show ``text`` as a toast and return it, escaped, for a message line."""
    return f"⚠️ {warn(text)}"


class CollectionView(NamedTuple):
    """The collection part of the tab: dropdown, summary, eval-split offer, plan of the run."""

    collection: Any
    summary: str
    make_split: Any
    plan: str


def collection_view(
    services: Services, name: str | None, knobs: Knobs | None = None
) -> CollectionView:
    """The collection part drawn afresh when the tab is shown (or the page loads): the
    dropdown's choices with the browser's current collection (else the default) picked."""
    found = current_collection(services, name)
    value = found.name if found is not None else None
    return CollectionView(
        gr.update(choices=collection_names(services), value=value),
        collection_summary(services, value),
        split_offer(services, value),
        plan_line(services, value, knobs),
    )


class PickView(NamedTuple):
    """What picking a collection in the tab's dropdown changes (last: the browser's current
    collection, written because a person chose it)."""

    summary: str
    make_split: Any
    plan: str
    current: Any


def pick_collection(services: Services, name: str | None, knobs: Knobs | None = None) -> PickView:
    """A person picked ``name`` in the dropdown: its summary and plan, and it becomes this
    browser's current collection (for the other tabs, when they are shown)."""
    exists = bool(name) and services.store.find_collection(str(name)) is not None
    return PickView(
        collection_summary(services, name),
        split_offer(services, name),
        plan_line(services, name, knobs),
        name if exists else gr.skip(),
    )


def _split_counts(services: Services, name: str | None) -> tuple[int, int, int] | None:
    found = services.store.find_collection(name) if name else None
    if found is None:
        return None
    splits = services.store.collection_stats(found.id).splits
    return splits.get("train", 0), splits.get("eval", 0), splits.get("test", 0)


def collection_summary(services: Services, name: str | None) -> str:
    """How much a collection holds for training: its splits and labeled negatives."""
    if not name:
        return "*No collection yet: create one in the Curate tab.*"
    found = services.store.find_collection(name)
    if found is None:
        return f"⚠️ No collection named “{md(name)}”."
    stats = services.store.collection_stats(found.id)
    train, evals = stats.splits.get("train", 0), stats.splits.get("eval", 0)
    text = (
        f"**{train:,}** train pairs · **{evals:,}** eval pairs · {stats.negatives:,} hard negatives"
    )
    if train < 2:
        text += " · ⚠️ a finetune needs at least 2 train pairs"
    elif evals == 0:
        text += " · ⚠️ the eval split is empty, so the finetune cannot be measured"
    else:
        text += leak_warning(services, found.id)
    return text


def leak_warning(services: Services, collection_id: int) -> str:
    """The summary's warning when eval/test holds copies of train images, else ``""``.

    Memoised per version of the collection's pairs, over hashes cached on disk, so it is cheap
    on every view of the tab."""
    try:
        leaks = eval_leaks(services, collection_id)
    except (OSError, ValueError, StoreError):  # an unreadable image: no warning, not a failure
        return ""
    if not leaks:
        return ""
    held = sum(sum(s != "train" for s in g.splits) for g in leaks)
    copies = "pair is a copy" if held == 1 else "pairs are copies"
    groups = f"{len(leaks):,} group{'s' if len(leaks) != 1 else ''}"
    return (
        f" · ⚠️ eval leaks train: {held:,} eval/test {copies} of train images ({groups}), so"
        " eval metrics will look better than they are; Curate → Data checks moves them into"
        " one split"
    )


def split_offer(services: Services, name: str | None) -> Any:
    """The "make an eval split" button: shown when the eval split is empty and there are
    pairs to split."""
    counts = _split_counts(services, name)
    wanted = counts is not None and counts[1] == 0 and counts[0] + counts[2] >= 2
    return gr.update(visible=wanted)


def plan_line(services: Services, name: str | None, knobs: Knobs | None = None) -> str:
    """What a run with ``knobs`` (``None``: the defaults) on ``name`` will be: epochs, steps and
    time, or how many fit in the budget at the measured speed
    (:func:`mmdemo.training.schedule.estimate`)."""
    counts = _split_counts(services, name)
    if counts is None or counts[0] < 2 or counts[1] == 0:
        return ""  # no run can start: the summary says why
    knobs = knobs if knobs is not None else default_knobs(services.model.is_tiny)
    try:
        # Matryoshka changes no step count; leaving it out never loads the model here.
        config = build_config(knobs._replace(matryoshka=False))
    except TrainingError as exc:
        return f"⚠️ {md(exc)}"
    found = services.store.collection(str(name))
    precision = detect_precision()["precision"]
    planned = estimate(
        services.store, services.settings, found.id, config, services.model.spec, precision
    )
    return plan_markdown(planned)


class SplitView(NamedTuple):
    """Outputs of the "make an eval split" button (the plan is redrawn after it)."""

    message: str
    summary: str
    make_split: Any


def make_eval_split(services: Services, name: str | None, profile: Any = None) -> SplitView:
    """Put a random 10 % of the collection's pairs in eval (identical captions or images kept
    in one split, :func:`mmdemo.data.splits.make_splits`); pairs already in test stay there."""
    from mmdemo.data.splits import make_splits

    try:
        require_login(profile, services.settings)
        found = services.store.find_collection(name) if name else None
        if found is None:
            raise TrainingError(
                f"No collection named {name!r}." if name else "Choose a collection first."
            )
        change = make_splits(
            services.store,
            found.id,
            eval_share=EVAL_SHARE,
            test_share=0.0,
            seed=0,
            only_train=True,
        )
        message = f"Made an eval split of “{md(found.name)}”: {md(change.summary())}."
    except LoginRequired as exc:
        message = refuse(exc.message)
    except (TrainingError, StoreError, ValueError) as exc:
        message = refuse(str(exc))
    return SplitView(message, collection_summary(services, name), split_offer(services, name))
