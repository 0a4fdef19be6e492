"""Curate's Splits panel: make random eval/test splits, move the filtered pairs, undo.

The handlers are plain functions ``handler(services, state, splits, *values) -> SplitsView``
(tested directly); :func:`layout_splits_panel` and :func:`wire_splits_panel` put the accordion
on the page and connect it. The work is :mod:`mmdemo.data.splits`; every change refreshes the Curate
counts and gallery (:func:`~mmdemo.ui.curate.handlers.render`) and can be undone. (After an
import that brought no split, :func:`mmdemo.data.splits.split_after_import` does the same in one
step.)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.splits import GROUPING, SplitChange, make_splits, move_pairs, undo_split_change
from mmdemo.data.store import SPLITS, StoreError
from mmdemo.services import Services
from mmdemo.ui.common import warn
from mmdemo.ui.curate.handlers import (
    ALL_SPLITS,
    CurateState,
    CurateView,
    current_collection_of,
    render,
)
from mmdemo.ui.identity import LoginRequired, require_login

DEFAULT_EVAL_PERCENT = 10
MAX_UNDO = 5
"""Bulk changes one session can undo, newest first."""


@dataclass(frozen=True)
class SplitsState:
    """The Splits panel of one browser session (its own ``gr.State``): the changes it can undo."""

    undo: tuple[SplitChange, ...] = ()
    """Newest last."""


class SplitsView(NamedTuple):
    """What a Splits handler outputs: the Curate view plus the panel's own parts."""

    curate: CurateView
    splits: SplitsState
    undo_make: Any
    undo_move: Any
    move: Any


@dataclass
class SplitsPanel:
    """The panel's components (from :func:`layout_splits_panel`)."""

    splits: gr.State
    eval_percent: gr.Slider
    test_percent: gr.Slider
    seed: gr.Number
    make: gr.Button
    undo_make: gr.Button
    move: gr.Button
    target: gr.Dropdown
    undo_move: gr.Button

    def outputs(self) -> list:
        return [self.splits, self.undo_make, self.undo_move, self.move]


# -- what the panel shows ------------------------------------------------------------------------
def _split_filter(state: CurateState) -> str | None:
    return None if state.split_filter in (ALL_SPLITS, "", None) else state.split_filter


def _filtered(state: CurateState) -> bool:
    return bool((state.caption_filter or "").strip()) or _split_filter(state) is not None


def filtered_ids(services: Services, state: CurateState) -> list[int]:
    """The pairs the Curate tab's caption/split filter matches now (all pairs without one)."""
    state, collection = current_collection_of(services, state)
    if collection is None:
        return []
    return services.store.matching_pair_ids(
        collection.id, state.caption_filter, _split_filter(state)
    )


def move_label(services: Services, state: CurateState) -> tuple[str, bool]:
    """The move button's label, saying how many pairs it moves, and whether it can be pressed."""
    state, collection = current_collection_of(services, state)
    n = 0
    if collection is not None:
        n = services.store.count_pairs(collection.id, state.caption_filter, _split_filter(state))
    if n == 0:
        return ("No pairs match the filter" if _filtered(state) else "No pairs to move"), False
    plural = "s" if n != 1 else ""
    if _filtered(state):
        return f"Move the {n:,} filtered pair{plural} to", True
    return f"Move all {n:,} pair{plural} to", True


def move_button(services: Services, state: CurateState) -> Any:
    label, enabled = move_label(services, state)
    return gr.update(value=label, interactive=enabled)


def _undo_buttons(services: Services, state: CurateState, splits: SplitsState) -> tuple[Any, Any]:
    """Undo buttons for the newest change, shown only while its collection is the open one."""
    _, collection = current_collection_of(services, state)
    last = splits.undo[-1] if splits.undo else None
    if last is None or collection is None or last.collection_id != collection.id:
        return gr.update(visible=False), gr.update(visible=False)
    n = last.changed
    moved = f"{n:,} pair{'s' if n != 1 else ''}"
    return (
        gr.update(visible=last.action == "split", value=f"↶ Undo make splits ({moved})"),
        gr.update(visible=last.action == "move", value=f"↶ Undo move ({moved})"),
    )


def panel_refresh(services: Services, state: CurateState, splits: SplitsState) -> tuple:
    """The panel's buttons for the Curate state as it is now (after any Curate action)."""
    undo_make, undo_move = _undo_buttons(services, state, splits)
    return undo_make, undo_move, move_button(services, state)


def _view(services: Services, state: CurateState, splits: SplitsState, message: str) -> SplitsView:
    """The Curate view (editor left alone except a stale split) and the panel, after a change."""
    curate = render(services, state, message, editor=False)
    selected = curate.state.selected
    if selected is not None:
        # The opened pair's split radio must not keep a split a bulk change just replaced:
        # a later Save would write the old split back.
        with contextlib.suppress(StoreError):
            curate = curate._replace(split=services.store.get_pair(selected).split)
    undo_make, undo_move = _undo_buttons(services, curate.state, splits)
    return SplitsView(curate, splits, undo_make, undo_move, move_button(services, curate.state))


def _push(splits: SplitsState, change: SplitChange) -> SplitsState:
    return SplitsState(undo=(*splits.undo, change)[-MAX_UNDO:])


def _fraction(percent: float | None, what: str) -> float:
    try:
        return float(percent or 0) / 100.0
    except (TypeError, ValueError):
        raise ValueError(f"The {what} share must be a number of percent.") from None


# -- handlers ------------------------------------------------------------------------------------
def _refused(
    services: Services, state: CurateState, splits: SplitsState, profile: Any
) -> SplitsView | None:
    """The view for a write refused for want of a login (on a Space), else ``None``."""
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return _view(services, state, splits, warn(exc.message))
    return None


def make_splits_clicked(
    services: Services,
    state: CurateState,
    splits: SplitsState,
    eval_percent: float | None,
    test_percent: float | None,
    seed: float | None,
    profile: Any = None,
) -> SplitsView:
    """ "Make splits": a random eval (and test) share of the open collection, groups kept whole."""
    state = dataclasses.replace(state, pending_delete=None)
    if (refused := _refused(services, state, splits, profile)) is not None:
        return refused
    state, collection = current_collection_of(services, state)
    if collection is None:
        return _view(services, state, splits, warn("Create a collection first."))
    try:
        seed_value = int(seed or 0)
        change = make_splits(
            services.store,
            collection.id,
            eval_share=_fraction(eval_percent, "eval"),
            test_share=_fraction(test_percent, "test"),
            seed=seed_value,
        )
    except (ValueError, StoreError) as exc:
        return _view(services, state, splits, warn(str(exc)))
    if not change.changed:
        message = f"Splits unchanged (seed {seed_value}): {change.summary()}."
        return _view(services, state, splits, message)
    splits = _push(splits, change)
    return _view(services, state, splits, f"Made splits (seed {seed_value}): {change.summary()}.")


def move_filtered_clicked(
    services: Services,
    state: CurateState,
    splits: SplitsState,
    target: str | None,
    profile: Any = None,
) -> SplitsView:
    """ "Move the N filtered pairs to …": every pair the gallery's filter matches, in one go."""
    state = dataclasses.replace(state, pending_delete=None)
    if (refused := _refused(services, state, splits, profile)) is not None:
        return refused
    if target not in SPLITS:
        return _view(services, state, splits, warn(f"Choose a split: {', '.join(SPLITS)}."))
    ids = filtered_ids(services, state)
    if not ids:
        return _view(services, state, splits, warn("No pairs match the filter: nothing to move."))
    try:
        change = move_pairs(services.store, ids, target)
    except (ValueError, StoreError) as exc:
        return _view(services, state, splits, warn(str(exc)))
    which = "filtered pairs" if _filtered(state) else "pairs"
    if not change.changed:
        message = f"Nothing to move: the {len(ids):,} {which} are all in {target} already."
        return _view(services, state, splits, message)
    message = (
        f"Moved {change.changed:,} of the {len(ids):,} {which} to {target}: {change.counts_text()}."
    )
    if change.crossing:
        message = warn(
            f"Moved {change.changed:,} pairs to {target}; {change.crossing:,} group"
            f"{'s' if change.crossing != 1 else ''} of {GROUPING} now span two splits (the "
            "same caption or image in train and eval leaks). "
            f"{change.counts_text()}."
        )
    return _view(services, state, _push(splits, change), message)


def undo_clicked(
    services: Services, state: CurateState, splits: SplitsState, profile: Any = None
) -> SplitsView:
    """Put back the splits the newest bulk change replaced."""
    state = dataclasses.replace(state, pending_delete=None)
    if (refused := _refused(services, state, splits, profile)) is not None:
        return refused
    if not splits.undo:
        return _view(services, state, splits, warn("Nothing to undo."))
    last = splits.undo[-1]
    state, collection = current_collection_of(services, state)
    if collection is None or collection.id != last.collection_id:
        return _view(services, state, splits, warn("That change was made in another collection."))
    undone = undo_split_change(services.store, last)
    rest = SplitsState(undo=splits.undo[:-1])
    what = "make splits" if last.action == "split" else "move"
    n = undone.changed
    message = (
        f"Undid {what}: {n:,} pair{'s' if n != 1 else ''} back in their previous split · "
        f"{undone.counts_text()}."
    )
    return _view(services, state, rest, message)


# -- layout and wiring ---------------------------------------------------------------------------
def layout_splits_panel(services: Services, state: CurateState) -> SplitsPanel:
    """Lay out the Splits accordion where it is called (inside the Curate tab)."""
    splits = gr.State(SplitsState())
    with gr.Accordion("Splits", open=False, elem_id="mm-splits"):
        gr.Markdown(
            "Random eval and test shares of the pairs. Pairs with identical captions or images"
            " always land in the same split, so eval never repeats a training caption."
        )
        with gr.Row(equal_height=True):
            eval_percent = gr.Slider(
                0,
                50,
                value=DEFAULT_EVAL_PERCENT,
                step=1,
                label="Eval share (%)",
                min_width=160,
                elem_id="mm-eval-share",
            )
            test_percent = gr.Slider(
                0,
                50,
                value=0,
                step=1,
                label="Test share (%)",
                min_width=160,
                elem_id="mm-test-share",
            )
            seed = gr.Number(0, precision=0, label="Seed", min_width=80, elem_id="mm-split-seed")
        with gr.Row():
            make = gr.Button(
                "Make splits", variant="primary", scale=0, min_width=160, elem_id="mm-make-splits"
            )
            undo_make = gr.Button(
                "↶ Undo make splits",
                size="sm",
                visible=False,
                scale=0,
                min_width=200,
                elem_id="mm-undo-splits",
            )
        with gr.Row():
            label, enabled = move_label(services, state)
            move = gr.Button(
                label, interactive=enabled, scale=0, min_width=280, elem_id="mm-move-filtered"
            )
            target = gr.Dropdown(
                list(SPLITS),
                value="eval",
                show_label=False,
                container=False,
                scale=0,
                min_width=120,
                elem_id="mm-move-target",
            )
            undo_move = gr.Button(
                "↶ Undo move",
                size="sm",
                visible=False,
                scale=0,
                min_width=200,
                elem_id="mm-undo-move",
            )
    return SplitsPanel(
        splits, eval_percent, test_percent, seed, make, undo_make, move, target, undo_move
    )


def wire_splits_panel(
    services: Services,
    panel: SplitsPanel,
    state: gr.State,
    view: list,
    as_outputs: Callable[[CurateView], tuple],
) -> None:
    """Connect the panel: each action outputs the Curate ``view`` (counts, gallery, message)
    and the panel's buttons. The move button is re-labelled whenever the Curate page label (which
    counts the pairs the filter matches) changes: after filtering, edits, imports, switches."""
    outputs = [*view, *panel.outputs()]

    def send(result: SplitsView) -> tuple:
        return (*as_outputs(result.curate), *result[1:])

    def on_make(
        st: CurateState,
        sp: SplitsState,
        eval_pct: float,
        test_pct: float,
        seed: float,
        profile: gr.OAuthProfile | None,
    ) -> tuple:
        return send(make_splits_clicked(services, st, sp, eval_pct, test_pct, seed, profile))

    def on_move(
        st: CurateState, sp: SplitsState, target: str, profile: gr.OAuthProfile | None
    ) -> tuple:
        return send(move_filtered_clicked(services, st, sp, target, profile))

    def on_undo(st: CurateState, sp: SplitsState, profile: gr.OAuthProfile | None) -> tuple:
        return send(undo_clicked(services, st, sp, profile))

    common = {"api_visibility": "private", "concurrency_id": "splits"}
    panel.make.click(
        on_make,
        [state, panel.splits, panel.eval_percent, panel.test_percent, panel.seed],
        outputs,
        **common,
    )
    panel.move.click(on_move, [state, panel.splits, panel.target], outputs, **common)
    for button in (panel.undo_make, panel.undo_move):
        button.click(on_undo, [state, panel.splits], outputs, **common)
    page_label = view[CurateView._fields.index("page_label")]
    page_label.change(
        lambda st, sp: panel_refresh(services, st, sp),
        [state, panel.splits],
        [panel.undo_make, panel.undo_move, panel.move],
        show_progress="hidden",
        trigger_mode="always_last",
        api_visibility="private",
    )
