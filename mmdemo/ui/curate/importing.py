"""The Curate tab's import: uploads, a server path or a Hub dataset id into the open collection,
with the tables of rejected and skipped items (the layout is in :mod:`mmdemo.ui.curate.layout`)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from mmdemo.data.importers import IMAGE_EXTENSIONS, ImportFailed, import_source, import_uploads
from mmdemo.data.ingest import ImportReport
from mmdemo.data.splits import split_after_import
from mmdemo.hub.publish import on_space
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.ui.common import progress_callback, warn
from mmdemo.ui.curate.handlers import CurateState, CurateView, render
from mmdemo.ui.identity import LoginRequired, require_login

SPLIT_FROM_DATA = "as in the data"
REJECTED_COLUMNS = ["Item", "Reason"]
SKIPPED_COLUMNS = ["Item", "Same image as", "Where"]
SPACE_SOURCES = "On a Space only uploads and Hub dataset ids can be imported"
_HUB_DATASET = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class ImportOutcome(NamedTuple):
    summary: str
    rejected: pd.DataFrame
    view: CurateView
    skipped: pd.DataFrame = pd.DataFrame(columns=SKIPPED_COLUMNS)
    """Items skipped as duplicates, with the pair that already has each image."""


# -- import --------------------------------------------------------------------------------------
def _caption_values(text: str | None) -> list[str] | str:
    """One line: a caption for every uploaded image; several lines: one per image, in order."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else lines


def _rejected_frame(reports: list[ImportReport], failures: list[tuple[str, str]]) -> pd.DataFrame:
    rows = [(name, reason) for name, reason in failures]
    rows += [(r.item, r.reason) for report in reports for r in report.rejected]
    return pd.DataFrame(rows, columns=REJECTED_COLUMNS)


def _skipped_frame(reports: list[ImportReport]) -> pd.DataFrame:
    rows = [
        (
            d.item,
            f"pair {d.pair_id}: {d.caption if len(d.caption) <= 120 else d.caption[:119] + '…'}",
            "earlier in this import" if d.in_this_import else "already in the collection",
        )
        for report in reports
        for d in report.skipped
    ]
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def hub_dataset_id(text: str) -> str | None:
    """``owner/name`` when ``text`` is a Hub dataset id (``hf://`` or ``datasets/`` may lead).

    ``None`` for anything else, and for an id that also names a path on the server: the
    ``datasets`` library would open that folder instead of the Hub repo.
    """
    name = text.strip().removeprefix("hf://").removeprefix("datasets/")
    if not _HUB_DATASET.fullmatch(name) or {".", ".."} & set(name.split("/")):
        return None
    return None if Path(name).exists() else name


def _space_source(services: Services, source: str | None) -> str | None:
    """The typed source to import: on a Space only a Hub dataset id, never a server path.

    Raises ``ValueError`` with the message to show for anything else on a Space.
    """
    spec = (source or "").strip()
    if not spec or not on_space(services.settings):
        return spec or None
    dataset = hub_dataset_id(spec)
    if dataset is None:
        shown = spec if len(spec) <= 80 else spec[:79] + "…"
        why = "names a path on the server" if Path(spec).exists() else "is not one (owner/name)"
        raise ValueError(f"{SPACE_SOURCES}: “{shown}” {why}.")
    return f"hf://{dataset}"  # the prefix keeps import_source off local paths of that name


def import_files(
    services: Services,
    state: CurateState,
    files: list[str] | None,
    captions: str | None,
    source: str | None,
    caption_column: str | None,
    image_column: str | None,
    split: str | None,
    progress: Any = None,
    profile: Any = None,
    no_split_eval_percent: float | None = None,
) -> ImportOutcome:
    """Import uploaded files and/or a dataset id or server path into the current collection.

    Uploaded images take their captions from ``captions``; other uploads (zip, CSV, JSONL,
    Parquet) and ``source`` go through :func:`mmdemo.data.importers.import_source`. A source that
    fails as a whole is one row of the rejected table; the others still import. On a Space the
    visitor must be logged in (their name is the pairs' author) and ``source`` may only be a
    Hub dataset id: the server's own files are not theirs to import. With the split "as in the
    data", a collection left with no eval and no test pair gets ``no_split_eval_percent`` % of
    its pairs in eval (:func:`mmdemo.data.splits.split_after_import`).
    """
    state = dataclasses.replace(state, pending_delete=None)
    empty = _rejected_frame([], [])
    typed = (source or "").strip()
    try:
        author = require_login(profile, services.settings)
        spec = _space_source(services, typed)
    except (LoginRequired, ValueError) as exc:
        message = exc.message if isinstance(exc, LoginRequired) else str(exc)
        return ImportOutcome(warn(message), empty, render(services, state, editor=False))
    # Never fall back to another collection here: the import would land somewhere unexpected.
    collection = services.store.find_collection(state.collection) if state.collection else None
    if collection is None:
        if state.collection:
            message = warn(f"The collection “{state.collection}” no longer exists.")
        else:
            message = warn("Create a collection first (under Manage collections).")
        return ImportOutcome(message, empty, render(services, state, editor=False))
    paths = [Path(f) for f in files or []]
    images = [p for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS]
    sources: list[tuple[str, str]] = [(p.name, str(p)) for p in paths if p not in images]
    if spec:
        sources.append((typed, spec))
    if not images and not sources:
        message = warn("Choose files to upload, or enter a dataset id or a server path.")
        return ImportOutcome(message, empty, render(services, state, editor=False))

    assign = None if split in (None, "", SPLIT_FROM_DATA) else split
    report_progress = progress_callback(progress)
    reports: list[ImportReport] = []
    failures: list[tuple[str, str]] = []
    store, settings = services.store, services.settings
    for name, spec in sources:
        try:
            reports.append(
                import_source(
                    store,
                    settings,
                    collection.name,
                    spec,
                    caption_column=(caption_column or "").strip() or None,
                    image_column=(image_column or "").strip() or None,
                    split=assign,
                    author=author,
                    progress=report_progress,
                )
            )
        except ImportFailed as exc:
            failures.append((name, f"not imported: {exc}"))
    if images:
        try:
            reports.append(
                import_uploads(
                    store,
                    settings,
                    collection.name,
                    [(p.name, p) for p in images],
                    _caption_values(captions),
                    split=assign or "train",
                    author=author,
                    progress=report_progress,
                )
            )
        except ImportFailed as exc:
            failures.append((f"{len(images)} uploaded images", f"not imported: {exc}"))

    summary = " ".join(md(report.summary()) for report in reports)
    if failures:
        summary = (summary + " " if summary else "") + warn(
            f"{len(failures)} source{'s' if len(failures) != 1 else ''} could not be imported:"
            f" {'; '.join(f'{n}: {r}' for n, r in failures)}"
        )
    if assign is None and no_split_eval_percent:  # data without a split: offer an eval share
        added = sum(report.added for report in reports)
        note = split_after_import(store, collection.id, no_split_eval_percent / 100, added)
        summary = f"{summary} {note}".strip()
    view = render(services, state, editor=False)
    return ImportOutcome(summary, _rejected_frame(reports, failures), view, _skipped_frame(reports))
