"""Files uploaded in the browser: images with typed captions, or zips and tables."""

from __future__ import annotations

from pathlib import Path

from mmdemo.data.importers.core import (
    BUNDLE_SUFFIXES,
    Options,
    check_split,
    import_path,
    import_source,
)
from mmdemo.data.importers.errors import ImportFailed, ItemSkipped
from mmdemo.data.importers.files import max_image_file_bytes, read_file_capped
from mmdemo.data.ingest import CaptionRejected, ImportReport, ProgressFn, clean_caption, ingest_item
from mmdemo.data.store import Store
from mmdemo.settings import Settings


def _merge(into: ImportReport, other: ImportReport) -> None:
    into.added += other.added
    into.duplicates += other.duplicates
    into.skipped += other.skipped
    into.rejected += other.rejected
    into.converted += other.converted
    into.added_pair_ids += other.added_pair_ids
    into.negatives_added += other.negatives_added


def _import_bundle(
    store: Store,
    settings: Settings,
    collection: str,
    path: Path,
    kind: str,
    split: str,
    author: str | None,
    progress: ProgressFn | None,
) -> ImportReport:
    if kind == ".parquet":
        return import_source(
            store, settings, collection, Path(path), split=split, author=author, progress=progress
        )
    opts = Options(None, None, split)
    return import_path(store, settings, collection, Path(path), kind, opts, author, progress)


def import_uploads(
    store: Store,
    settings: Settings,
    collection: str,
    files: list[tuple[str, Path]],
    captions: list[str] | str,
    split: str = "train",
    author: str | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import files uploaded in the browser: images with typed captions, or zips and tables.

    ``files`` holds ``(original_name, temp_path)``. ``captions`` is one caption for every image,
    or a list with one per image (or one per file). A ``.zip``, ``.csv``/``.tsv``/``.jsonl`` or
    ``.parquet`` upload is imported as :func:`import_source` would import it.
    """
    if not files:
        raise ImportFailed("no files were uploaded")
    split = check_split(split) or "train"
    kinds = [Path(name).suffix.lower() for name, _ in files]
    positions = [i for i, kind in enumerate(kinds) if kind not in BUNDLE_SUFFIXES]
    if isinstance(captions, str):
        per_image = [captions] * len(positions)
    elif len(captions) == len(files):
        per_image = [captions[i] for i in positions]
    elif len(captions) == len(positions):
        per_image = list(captions)
    else:
        raise ImportFailed(
            f"{len(positions)} images but {len(captions)} captions: give one caption per image,"
            " or one caption for all"
        )
    if not positions and len(files) == 1:  # one bundle: exactly like import_source
        return _import_bundle(
            store, settings, collection, files[0][1], kinds[0], split, author, progress
        )
    coll = store.get_or_create_collection(collection)
    report = ImportReport(coll.name)
    for (name, path), kind in zip(files, kinds, strict=True):
        if kind in BUNDLE_SUFFIXES:
            try:
                sub = _import_bundle(
                    store, settings, coll.name, path, kind, split, author, progress
                )
            except ImportFailed as exc:  # one bad bundle among several uploads
                report.reject(name, str(exc))
            else:
                _merge(report, sub)
    cap = max_image_file_bytes(settings)
    for done, (position, caption) in enumerate(zip(positions, per_image, strict=True), 1):
        name, path = files[position]
        try:
            clean_caption(caption, settings.max_caption_chars)
            data = read_file_capped(Path(path), cap)
        except (ItemSkipped, CaptionRejected) as exc:
            report.reject(name, str(exc))
        else:
            ingest_item(
                store,
                settings,
                coll.id,
                report,
                name,
                data,
                caption,
                split,
                author,
                f"upload:{name}",
            )
        if progress is not None:
            progress(done, len(positions), name)
    return report
