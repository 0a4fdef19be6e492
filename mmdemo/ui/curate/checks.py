"""Curate's Data checks section: duplicates, leakage between splits, odd captions and images.

"Run checks" runs :func:`mmdemo.retrieval.checks.check_collection` on the open collection (with
the base model's image embeddings unless "hashes only" is ticked) and shows the duplicate groups
(a table, and their thumbnails), the caption issues and the odd images. "Move leaking groups"
puts every duplicate group that spans train and eval/test into one split
(:func:`~mmdemo.retrieval.checks.fix_leakage`), with undo. The handlers are plain functions
``handler(services, state, checks, ...) -> ChecksOutcome`` (tested directly).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from mmdemo.data.images import thumb_path
from mmdemo.data.splits import SplitChange, undo_split_change
from mmdemo.data.store import StoreError
from mmdemo.retrieval.checks import (
    CheckOptions,
    CheckReport,
    check_collection,
    fix_leakage,
    leak_target,
    with_current_splits,
)
from mmdemo.retrieval.compare import display_path
from mmdemo.services import Services
from mmdemo.text import md, shorten
from mmdemo.ui.common import progress_callback, warn
from mmdemo.ui.curate.handlers import CurateState, CurateView, current_collection_of, render
from mmdemo.ui.identity import LoginRequired, require_login
from mmdemo.ui.results import FAILURES

DUPLICATE_COLUMNS = ["Leak", "Pairs", "Splits", "Similarity", "Moves to", "Captions"]
CAPTION_COLUMNS = ["Issue", "Pairs", "Splits", "Captions"]
IMAGE_COLUMNS = ["Issue", "Pair", "Split", "Detail", "Caption"]
MAX_THUMBS = 60
"""Thumbnails shown at most (leaking groups first)."""
CHECKS_HINT = (
    "*Finds copies of one image (re-encoded, resized, lightly cropped), the copies that sit in "
    "train **and** eval/test (they inflate eval metrics), repeated captions, tiny images and "
    "images unlike the rest.*"
)


@dataclass(frozen=True)
class ChecksState:
    """The section of one browser session (its own ``gr.State``)."""

    report: CheckReport | None = None
    last_change: SplitChange | None = None
    """The last move of leaking groups, for undo."""


class ChecksView(NamedTuple):
    """Every output of the section, in the order of the event outputs."""

    checks: ChecksState
    summary: Any
    duplicates: Any
    thumbs: Any
    captions: Any
    images: Any
    fix: Any
    undo: Any


class ChecksOutcome(NamedTuple):
    """A handler's result: the section, and the Curate view when splits changed (else None)."""

    view: ChecksView
    curate: CurateView | None = None


@dataclass
class ChecksPanel:
    """The section's components (from :func:`layout_checks_panel`)."""

    checks: gr.State
    hashes_only: gr.Checkbox
    run: gr.Button
    summary: gr.Markdown
    duplicates: gr.Dataframe
    thumbs: gr.Gallery
    captions: gr.Dataframe
    images: gr.Dataframe
    fix: gr.Button
    undo: gr.Button

    def outputs(self) -> list:
        return [
            self.checks,
            self.summary,
            self.duplicates,
            self.thumbs,
            self.captions,
            self.images,
            self.fix,
            self.undo,
        ]


# -- what the section shows ---------------------------------------------------------------------
def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def duplicate_rows(report: CheckReport) -> list[list[Any]]:
    """One row per duplicate group, leaking groups first (dataframe cells are plain text)."""
    groups = sorted(report.duplicates, key=lambda g: (not g.crosses_splits, g.pair_ids))
    return [
        [
            "⚠ train↔eval/test" if g.crosses_splits else "",
            _join(g.pair_ids),
            _join(g.splits),
            g.similarity,
            leak_target(g.splits) if g.crosses_splits else "",
            " | ".join(shorten(c, 80) for c in g.captions),
        ]
        for g in groups
    ]


def caption_rows(report: CheckReport) -> list[list[Any]]:
    rows = [
        [
            "same caption in several splits",
            _join(g.pair_ids),
            _join(g.splits),
            shorten(g.captions[0], 120),
        ]
        for g in report.identical_captions
    ]
    rows += [
        [
            "near-duplicate captions",
            _join(g.pair_ids),
            _join(g.splits),
            " | ".join(shorten(c, 60) for c in g.captions),
        ]
        for g in report.near_duplicate_captions
    ]
    return rows


def image_rows(report: CheckReport) -> list[list[Any]]:
    rows = [
        ["too small", o.pair_id, o.split, o.detail, shorten(o.caption, 100)]
        for o in report.small_images
    ]
    rows += [
        [
            "unlike the rest",
            o.pair_id,
            o.split,
            f"neighbour similarity {o.score:.3f} (z {o.z:+.1f})",
            shorten(o.caption, 100),
        ]
        for o in report.outliers
    ]
    return rows


def thumbnails(services: Services, report: CheckReport) -> list[tuple[str, str]]:
    """(thumbnail, "#id split: caption") of the duplicate groups' pairs, leaking groups first."""
    groups = sorted(report.duplicates, key=lambda g: (not g.crosses_splits, g.pair_ids))
    items: list[tuple[str, str]] = []
    for number, g in enumerate(groups, 1):
        for pid, sha, split, caption in zip(
            g.pair_ids, g.image_sha256, g.splits, g.captions, strict=True
        ):
            thumb = thumb_path(services.settings.images_dir, sha)
            path = thumb if thumb.exists() else display_path(services.store, services.settings, sha)
            items.append((str(path), f"group {number} · #{pid} {split}: {shorten(caption, 60)}"))
            if len(items) >= MAX_THUMBS:
                return items
    return items


def _fix_button(report: CheckReport | None) -> Any:
    n = len(report.leaks) if report is not None else 0
    if n == 0:
        return gr.update(value="No leaking groups to move", interactive=False)
    return gr.update(
        value=f"Move the {n:,} leaking group{'s' if n != 1 else ''} into one split each",
        interactive=True,
    )


def _undo_button(checks: ChecksState) -> Any:
    change = checks.last_change
    if change is None:
        return gr.update(visible=False)
    return gr.update(visible=True, value=f"↶ Undo move ({change.changed:,} pairs)")


def _summary(report: CheckReport, note: str = "") -> str:
    model = f" · image embeddings of {md(report.model)}" if report.model else " · hashes only"
    leaks = len(report.leaks)
    head = (
        f"⚠ **{leaks:,} duplicate {'group leaks' if leaks == 1 else 'groups leak'} between"
        " train and eval/test.** "
        if leaks
        else "✓ No duplicates across train and eval/test. "
    )
    where = f"“{md(report.collection)}”: "
    return head + where + md(report.summary()) + model + (f"\n\n{note}" if note else "")


def show(services: Services, checks: ChecksState, message: str = "") -> ChecksView:
    """The whole section for ``checks`` (an empty one before the first run)."""
    report = checks.report
    if report is None:
        return ChecksView(
            checks, message or CHECKS_HINT, [], [], [], [], _fix_button(None), _undo_button(checks)
        )
    return ChecksView(
        checks,
        _summary(report, message),
        duplicate_rows(report),
        thumbnails(services, report),
        caption_rows(report),
        image_rows(report),
        _fix_button(report),
        _undo_button(checks),
    )


def _curate(services: Services, state: CurateState, message: str) -> CurateView:
    """The Curate view after splits changed (editor left alone except a stale split)."""
    curate = render(services, state, message, editor=False)
    if curate.state.selected is not None:
        with contextlib.suppress(StoreError):
            curate = curate._replace(split=services.store.get_pair(curate.state.selected).split)
    return curate


# -- handlers ------------------------------------------------------------------------------------
def run_clicked(
    services: Services,
    state: CurateState,
    checks: ChecksState,
    hashes_only: bool = False,
    progress: Callable | None = None,
) -> ChecksOutcome:
    """ "Run checks" on the open collection."""
    _, collection = current_collection_of(services, state)
    if collection is None:
        return ChecksOutcome(show(services, checks, warn("Create a collection first.")))
    options = CheckOptions(use_embeddings=not hashes_only)
    try:
        report = check_collection(
            services,
            collection.name,
            None if hashes_only else "base",
            options,
            progress=progress_callback(progress),
        )
    except (*FAILURES, StoreError, ValueError) as exc:
        return ChecksOutcome(show(services, checks, warn(f"The checks failed: {exc}")))
    return ChecksOutcome(show(services, ChecksState(report=report)))


def _refused(services: Services, checks: ChecksState, profile: Any) -> ChecksOutcome | None:
    try:
        require_login(profile, services.settings)
    except LoginRequired as exc:
        return ChecksOutcome(show(services, checks, warn(exc.message)))
    return None


def fix_clicked(
    services: Services, state: CurateState, checks: ChecksState, profile: Any = None
) -> ChecksOutcome:
    """ "Move leaking groups": each into the split most of its pairs are in (a tie: train)."""
    if (refused := _refused(services, checks, profile)) is not None:
        return refused
    report = checks.report
    _, collection = current_collection_of(services, state)
    if report is None or collection is None or report.collection_id != collection.id:
        return ChecksOutcome(
            show(services, checks, warn("Run the checks on this collection first."))
        )
    report = with_current_splits(services.store, report)
    if not report.leaks:
        checks = dataclasses.replace(checks, report=report)
        return ChecksOutcome(show(services, checks, "No leaking groups left to move."))
    try:
        change = fix_leakage(services.store, report.collection_id, report.leaks)
    except (ValueError, StoreError) as exc:
        return ChecksOutcome(show(services, checks, warn(str(exc))))
    checks = ChecksState(report=with_current_splits(services.store, report), last_change=change)
    message = (
        f"Moved {change.changed:,} pair{'s' if change.changed != 1 else ''} so that no duplicate "
        f"group spans train and eval/test: {change.counts_text()}."
    )
    return ChecksOutcome(show(services, checks, message), _curate(services, state, message))


def undo_clicked(
    services: Services, state: CurateState, checks: ChecksState, profile: Any = None
) -> ChecksOutcome:
    """Put the pairs the last move changed back in their previous splits."""
    if (refused := _refused(services, checks, profile)) is not None:
        return refused
    change = checks.last_change
    if change is None:
        return ChecksOutcome(show(services, checks, warn("Nothing to undo.")))
    undone = undo_split_change(services.store, change)
    report = with_current_splits(services.store, checks.report) if checks.report else None
    checks = ChecksState(report=report)
    message = f"Undid the move: {undone.changed:,} pairs back · {undone.counts_text()}."
    return ChecksOutcome(show(services, checks, message), _curate(services, state, message))


# -- layout and wiring ---------------------------------------------------------------------------
def layout_checks_panel() -> ChecksPanel:
    """Lay out the Data checks accordion where it is called (inside the Curate tab)."""
    checks = gr.State(ChecksState())
    with gr.Accordion("Data checks", open=False, elem_id="mm-checks"):
        with gr.Row(equal_height=True):
            run = gr.Button("Run checks", variant="primary", scale=0, min_width=160)
            hashes_only = gr.Checkbox(
                label="Hashes only (no model)", value=False, scale=0, min_width=200
            )
        summary = gr.Markdown(CHECKS_HINT, elem_id="mm-checks-summary")
        with gr.Row():
            fix = gr.Button(
                "No leaking groups to move",
                interactive=False,
                scale=0,
                min_width=320,
                elem_id="mm-checks-fix",
            )
            undo = gr.Button("↶ Undo move", size="sm", visible=False, scale=0, min_width=200)
        duplicates = gr.Dataframe(
            headers=DUPLICATE_COLUMNS,
            label="Duplicate images (groups of copies)",
            interactive=False,
            wrap=True,
            max_height=300,
            elem_id="mm-checks-duplicates",
        )
        thumbs = gr.Gallery(
            [],
            show_label=False,
            columns=8,
            height=240,
            allow_preview=False,
            object_fit="contain",
            buttons=[],
            elem_id="mm-checks-thumbs",
        )
        captions = gr.Dataframe(
            headers=CAPTION_COLUMNS,
            label="Captions",
            interactive=False,
            wrap=True,
            max_height=260,
            elem_id="mm-checks-captions",
        )
        images = gr.Dataframe(
            headers=IMAGE_COLUMNS,
            label="Images too small or unlike the rest",
            interactive=False,
            wrap=True,
            max_height=260,
            elem_id="mm-checks-images",
        )
    return ChecksPanel(
        checks, hashes_only, run, summary, duplicates, thumbs, captions, images, fix, undo
    )


def wire_checks_panel(
    services: Services,
    panel: ChecksPanel,
    state: gr.State,
    view: list,
    as_outputs: Callable[[CurateView], tuple],
) -> None:
    """Connect the section. A move also refreshes the Curate ``view`` (counts, gallery)."""
    own = panel.outputs()
    moved = [*own, *view]

    def send(outcome: ChecksOutcome) -> tuple:
        curate = outcome.curate
        rest = as_outputs(curate) if curate is not None else tuple(gr.skip() for _ in view)
        return (*outcome.view, *rest)

    def on_run(
        st: CurateState, ck: ChecksState, hashes: bool, progress: gr.Progress = gr.Progress()
    ) -> tuple:
        return tuple(run_clicked(services, st, ck, hashes, progress).view)

    def on_fix(st: CurateState, ck: ChecksState, profile: gr.OAuthProfile | None) -> tuple:
        return send(fix_clicked(services, st, ck, profile))

    def on_undo(st: CurateState, ck: ChecksState, profile: gr.OAuthProfile | None) -> tuple:
        return send(undo_clicked(services, st, ck, profile))

    common = {"api_visibility": "private", "concurrency_id": "checks"}
    panel.run.click(
        on_run,
        [state, panel.checks, panel.hashes_only],
        own,
        show_progress_on=[panel.summary],
        **common,
    )
    panel.fix.click(
        on_fix, [state, panel.checks], moved, show_progress_on=[panel.summary], **common
    )
    panel.undo.click(
        on_undo, [state, panel.checks], moved, show_progress_on=[panel.summary], **common
    )
