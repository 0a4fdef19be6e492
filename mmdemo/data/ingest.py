"""The one path by which an item (image bytes + caption) enters a collection.

Every importer (folder, zip, CSV/JSONL, Hugging Face dataset, browser upload) builds items and
hands them to :func:`ingest_item`, which validates the caption, stores the image files and records
the pair in one transaction. A failure becomes a per-item :class:`Rejection` in the
:class:`ImportReport`; it never stops the rest of the import or leaves a half-written pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mmdemo.data.images import ImageLimits, ImageRejected, StoredImage, ingest_image_bytes
from mmdemo.data.store import SPLITS, Pair, Store
from mmdemo.settings import Settings
from mmdemo.text import CaptionRejected, clean_caption

__all__ = ["CaptionRejected", "clean_caption", "ImportReport", "ProgressFn", "ingest_item"]

ProgressFn = Callable[[int, int | None, str], None]
"""``progress(done, total_or_None, message)``; importers call it after every item."""


@dataclass(frozen=True)
class Rejection:
    item: str
    reason: str


@dataclass(frozen=True)
class Duplicate:
    """An item skipped because its image is already a pair of the collection."""

    item: str
    pair_id: int
    caption: str
    """The caption of the pair that has the image."""
    in_this_import: bool
    """True when that pair was added earlier in the same import."""


@dataclass
class ImportReport:
    """What an import did. ``as_json()`` is the CLI's last stdout line."""

    collection: str
    added: int = 0
    duplicates: int = 0
    skipped: list[Duplicate] = field(default_factory=list)
    """Which items the ``duplicates`` were, and the pair that already has each image."""
    rejected: list[Rejection] = field(default_factory=list)
    converted: list[tuple[str, str]] = field(default_factory=list)
    added_pair_ids: list[int] = field(default_factory=list)
    negatives_added: int = 0

    def reject(self, item: str, reason: str) -> None:
        self.rejected.append(Rejection(str(item), str(reason)))

    def as_json(self) -> dict:
        return {
            "collection": self.collection,
            "added": self.added,
            "duplicates": self.duplicates,
            "rejected": [{"item": r.item, "reason": r.reason} for r in self.rejected],
            "converted": len(self.converted),
            "negatives_added": self.negatives_added,
        }

    def summary(self) -> str:
        """One sentence for people."""
        parts = [f"Added {self.added} pair{'s' if self.added != 1 else ''}"]
        if self.duplicates:
            within = sum(d.in_this_import for d in self.skipped)
            before = self.duplicates - within
            noun = "duplicate" if self.duplicates == 1 else "duplicates"
            where = []
            if before:
                where.append(f"{before} already in the collection")
            if within:
                where.append(f"{within} repeated within this import")
            parts.append(f"skipped {self.duplicates} {noun} of an image ({', '.join(where)})")
        if self.rejected:
            parts.append(f"rejected {len(self.rejected)}")
        if self.converted:
            parts.append(f"converted {len(self.converted)}")
        if self.negatives_added:
            parts.append(f"restored {self.negatives_added} hard-negative labels")
        return ", ".join(parts) + f" (collection “{self.collection}”)."


def ingest_item(
    store: Store,
    settings: Settings,
    collection_id: int,
    report: ImportReport,
    item_name: str,
    image_bytes: bytes | None,
    caption: object,
    split: str = "train",
    author: str | None = None,
    source: str | None = None,
) -> Pair | None:
    """Validate and add one pair; record the outcome in ``report``. Returns the pair or None."""
    if split not in SPLITS:
        report.reject(item_name, f"unknown split {split!r} (use {', '.join(SPLITS)})")
        return None
    try:
        text = clean_caption(caption, settings.max_caption_chars)
    except CaptionRejected as exc:
        report.reject(item_name, str(exc))
        return None
    if image_bytes is None:
        report.reject(item_name, "image file not found")
        return None
    try:
        stored: StoredImage = ingest_image_bytes(
            image_bytes, settings.images_dir, ImageLimits.from_settings(settings)
        )
    except ImageRejected as exc:
        report.reject(item_name, str(exc))
        return None
    except MemoryError:
        report.reject(item_name, "image too large to decode in memory")
        return None
    pair, added = store.add_pair(collection_id, stored.as_row(), text, split, author, source)
    if added:
        report.added += 1
        report.added_pair_ids.append(pair.id)
        if stored.converted:
            report.converted.append((item_name, stored.converted))
    else:
        report.duplicates += 1
        report.skipped.append(
            Duplicate(item_name, pair.id, pair.caption, pair.id in report.added_pair_ids)
        )
    return pair
